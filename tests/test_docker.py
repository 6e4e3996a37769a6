"""`titanbench docker`: the printed `docker run` line, its errors, and (where a Docker engine runs)
the container the launcher creates, inspected without starting it."""

import json
import os
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from titanbench import docker as launcher
from titanbench.cli import main
from titanbench.pins import pins

TEST_BASE_IMAGE = os.environ.get("TITANBENCH_TEST_BASE_IMAGE", "titanbench-test-base:bookworm-minbase")
TOKEN = "hf_testTOKENvalue0123456789"


@pytest.fixture
def no_rdma(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "INFINIBAND", tmp_path / "no-infiniband")


@pytest.fixture
def rdma(tmp_path, monkeypatch):
    devices = tmp_path / "infiniband"
    devices.mkdir()
    (devices / "uverbs0").touch()
    monkeypatch.setattr(launcher, "INFINIBAND", devices)


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["docker", *args], env={"HF_TOKEN": None, **(env or {})})


@pytest.fixture
def assets(tmp_path) -> str:
    """A staged tokenizer directory, as `titanbench assets tokenizer --dest DIR` leaves it."""
    tokenizer = tmp_path / "assets" / "original" / "tokenizer.model"
    tokenizer.parent.mkdir(parents=True)
    tokenizer.write_text("IQ== 0\n")
    return str(tmp_path / "assets")


def printed(*args: str, env: dict[str, str] | None = None) -> list[str]:
    result = invoke("--print", *args, env=env)
    assert result.exit_code == 0, result.output
    return shlex.split(result.output)


def test_print_70b_shows_every_flag_the_benchmark_needs(rdma, tmp_path):
    argv = printed("--model", "70b", "--results", str(tmp_path / "res"), "--sys-ptrace")
    line = " ".join(argv)
    for flag in ("--gpus all", "--ipc=host", "--network=host", "--ulimit memlock=-1", "--ulimit stack=67108864"):
        assert flag in line
    assert f"--device={launcher.INFINIBAND}:/dev/infiniband:rwm" in argv
    assert {"--cap-add=IPC_LOCK", "--cap-add=SYS_PTRACE"} <= set(argv)
    assert f"{tmp_path / 'res'}:/results" in argv
    image = argv.index(launcher.image_reference())
    assert argv[image + 1 :] == ["run", "--model", "70b", "--results", "/results"]


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
    assert f"{assets}:{launcher.TOKENIZER_TARGET}:ro" in argv
    assert f"{cache}:/cache" in argv and "HF_HOME=/cache/huggingface" in argv
    assert argv[-4:] == ["--cache-dir", "/cache/compile", "--nodes", "8"]


def test_token_from_the_environment_is_passed_by_name_only(no_rdma):
    argv = printed("--model", "70b", env={"HF_TOKEN": TOKEN})
    assert argv[argv.index("HF_TOKEN") - 1] == "-e"
    assert TOKEN not in " ".join(argv)


def test_token_file_is_mounted_not_read(no_rdma, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    argv = printed("--hf-token-file", str(token_file), env={"HF_TOKEN": TOKEN})
    assert f"{token_file}:{launcher.TOKEN_TARGET}:ro" in argv
    assert f"HF_TOKEN_PATH={launcher.TOKEN_TARGET}" in argv
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
        client.images = FakeImages({launcher.image_reference(mode) for mode in modes})
        started: list[str] = []
        monkeypatch.setattr(launcher, "connect", lambda: client)
        monkeypatch.setattr(launcher, "run_container", lambda _client, options: started.append(options.image) or 0)
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
    result = invoke("--model", "8b", "--assets", assets)
    assert result.exit_code == 0, result.output
    assert started == [launcher.image_reference(expected)]
    assert result.stderr.strip() == (
        f"titanbench docker: using {launcher.image_reference(expected)} (the {expected} build found here)"
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
    assert started == [args[1] if args[0] == "--image" else launcher.image_reference("source")]
    assert client.images.asked == [] and "using" not in result.output


def test_print_image_without_mode_names_the_build_present_here(engine_with):
    engine_with("release")
    result = invoke("--print-image")
    assert result.exit_code == 0 and result.output.strip() == launcher.image_reference("release")


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
        (["--hf-token-file", "/no/such/file"], "Invalid value for '--hf-token-file'"),
        (["--bogus"], "No such option"),
    ],
)
def test_bad_input_is_a_clear_error(args, message):
    result = invoke("--print", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


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


def check_host_config(attrs: dict, options: launcher.LaunchOptions) -> None:
    host = attrs["HostConfig"]
    assert host["IpcMode"] == "host" and host["NetworkMode"] == "host" and host["Init"] is True
    assert {(u["Name"], u["Soft"], u["Hard"]) for u in host["Ulimits"]} == {
        ("memlock", -1, -1),
        ("stack", 67108864, 67108864),
    }
    assert [(r["Count"], r["Capabilities"]) for r in host["DeviceRequests"]] == [(-1, [["gpu"]])]
    mounts = {m["Target"]: (m["Source"], m.get("ReadOnly", False)) for m in host["Mounts"]}
    assert mounts["/results"] == (str(options.results.resolve()), False)
    assert mounts[launcher.TOKEN_TARGET] == (str(options.hf_token_file.resolve()), True)
    assert f"HF_TOKEN_PATH={launcher.TOKEN_TARGET}" in attrs["Config"]["Env"]
    assert TOKEN not in json.dumps(attrs)


@pytest.mark.docker
def test_created_container_has_the_benchmark_host_config(client, tmp_path):
    results, assets, cache, token_file = (tmp_path / n for n in ("results", "assets", "cache", "token"))
    for directory in (results, assets, cache):
        directory.mkdir()
    token_file.write_text(TOKEN)
    options = launcher.LaunchOptions(
        image=TEST_BASE_IMAGE,
        results=results,
        model="70b",
        assets=assets,
        cache=cache,
        hf_token_file=token_file,
        rdma=True,
        sys_ptrace=True,
    )
    container = launcher.create_container(client, options)
    try:
        container.reload()
        attrs = container.attrs
        assert attrs["State"]["Status"] == "created"
        check_host_config(attrs, options)
        host = attrs["HostConfig"]
        assert set(host["CapAdd"]) == {"IPC_LOCK", "SYS_PTRACE"}
        assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/infiniband"]
        mounts = {m["Target"]: (m["Source"], m.get("ReadOnly", False)) for m in host["Mounts"]}
        assert mounts[launcher.TOKENIZER_TARGET] == (str(assets), True)
        assert mounts["/cache"] == (str(cache), False)
        assert attrs["Config"]["Cmd"] == [
            *("run", "--model", "70b", "--results", "/results"),
            *("--cache-dir", "/cache/compile"),
        ]
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_token_from_the_environment_reaches_the_container_as_a_file(client, tmp_path, monkeypatch, no_rdma, assets):
    seen: dict = {}

    def create_and_inspect(engine, options):
        # Stands in for run_container (starting needs a GPU host): the real create, then inspect.
        container = launcher.create_container(engine, options)
        try:
            container.reload()
            check_host_config(container.attrs, options)
            assert options.hf_token_file.read_text() == TOKEN
            assert oct(options.hf_token_file.stat().st_mode & 0o777) == "0o600"
            seen["token_file"] = options.hf_token_file
        finally:
            container.remove(force=True)
        return 3

    monkeypatch.setattr(launcher, "run_container", create_and_inspect)
    result = invoke(
        "--image", TEST_BASE_IMAGE, "--results", str(tmp_path / "results"), "--assets", assets, env={"HF_TOKEN": TOKEN}
    )
    assert result.exit_code == 3, result.output
    assert TOKEN not in result.output
    assert not seen["token_file"].exists()

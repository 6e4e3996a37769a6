"""Start the benchmark container on this host, through the Docker SDK or as a plain `docker run` line.

One container per node holds all local ranks (async TP needs them in one IPC and PID namespace).
`--device cpu` starts it with no GPU request at all, so an engine without the NVIDIA runtime runs it.
The Hugging Face token never enters the container's configuration: it is bind-mounted as a file
and found through `HF_TOKEN_PATH`, so `docker inspect` cannot show it.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from titanbench.errors import TitanbenchError
from titanbench.pins import pins
from titanbench.redact import redact_argv

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

IMAGE_REPOSITORY = "titanbench"
BUILD_MODES = ("source", "release")
INFINIBAND = Path("/dev/infiniband")
INFINIBAND_TARGET = "/dev/infiniband"
# The NVIDIA driver's device nodes (/dev/nvidia0, ...): the host has GPUs Docker can pass through.
NVIDIA_DEVICE_DIR = Path("/dev")
NVIDIA_GPU_NODES = "nvidia[0-9]*"
DEVICES = ("auto", "cuda", "cpu")

# Paths inside the image (see the Dockerfile).
RESULTS_TARGET = "/results"
CACHE_TARGET = "/cache"
# torchtitan's tomls read `./assets/tokenizer/original/tokenizer.model` from its checkout.
TOKENIZER_TARGET = "/opt/torchtitan/assets/tokenizer"
TOKEN_TARGET = "/run/secrets/hf_token"

MEMLOCK_UNLIMITED = -1
STACK_BYTES = 64 * 1024 * 1024
STOP_GRACE_S = 60


def image_reference(mode: str = "source") -> str:
    """The local tag of the image built from the pins: `titanbench:<torchtitan commit[:8]>-<mode>`."""
    if mode not in BUILD_MODES:
        raise TitanbenchError(f"unknown build mode {mode!r}: expected one of {', '.join(BUILD_MODES)}")
    return f"{IMAGE_REPOSITORY}:{pins()['TORCHTITAN_COMMIT'][:8]}-{mode}"


def local_image(client: DockerClient) -> tuple[str, str]:
    """(image, mode) of the build present on this engine: the source build if there, else the release."""
    docker = _docker_sdk()
    for mode in BUILD_MODES:
        reference = image_reference(mode)
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            continue
        except docker.errors.APIError as error:
            raise TitanbenchError(f"docker could not look up {reference}: {error.explanation}") from error
        return reference, mode
    raise TitanbenchError(
        f"no titanbench image on this host ({' or '.join(map(image_reference, BUILD_MODES))}): build one with "
        "`make image-release` (minutes, approximate pins) or `make image` (exact pins, hours), or pass --image"
    )


def rdma_present() -> bool:
    """True when the host exposes RDMA devices (`INFINIBAND`), which the container then gets with IPC_LOCK."""
    return INFINIBAND.is_dir() and any(INFINIBAND.iterdir())


def nvidia_gpu_nodes() -> list[str]:
    """The host's NVIDIA GPU device nodes; none means the container gets no GPU (`--device auto`)."""
    return sorted(path.name for path in NVIDIA_DEVICE_DIR.glob(NVIDIA_GPU_NODES))


def resolve_device(requested: str) -> tuple[str, str | None]:
    """(cuda or cpu, why auto chose it) for `--device`: auto is cuda when the host has NVIDIA GPU device nodes."""
    if requested != "auto":
        return requested, None
    found = nvidia_gpu_nodes()
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        return "cuda", f"auto: {NVIDIA_DEVICE_DIR / found[0]}{more} on this host"
    return "cpu", f"auto: no {NVIDIA_DEVICE_DIR / NVIDIA_GPU_NODES} on this host"


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class LaunchOptions:
    image: str
    results: Path
    model: str | None = None
    assets: Path | None = None
    cache: Path | None = None
    # A file holding the token; mounted read-only, never read here.
    hf_token_file: Path | None = None
    # `--print` only: the printed line passes HF_TOKEN from the caller's environment, by name.
    hf_token_from_env: bool = False
    rdma: bool = False
    sys_ptrace: bool = False
    # cuda: all GPUs and unlimited memlock (NCCL, RDMA); cpu: neither (gloo pins no memory, and an
    # engine without privileges, rootless or itself in a container, refuses to raise memlock).
    device: str = "cuda"
    # --nodes/--node-rank/--master-addr/--master-port found on the host (the container sees no scheduler).
    placement: tuple[str, ...] = field(default_factory=tuple)
    run_args: tuple[str, ...] = field(default_factory=tuple)

    def mounts(self) -> list[Mount]:
        mounts = [Mount(self.results.resolve(), RESULTS_TARGET)]
        if self.assets is not None:
            mounts.append(Mount(self.assets.resolve(), TOKENIZER_TARGET, read_only=True))
        if self.cache is not None:
            mounts.append(Mount(self.cache.resolve(), CACHE_TARGET))
        if self.hf_token_file is not None:
            mounts.append(Mount(self.hf_token_file.resolve(), TOKEN_TARGET, read_only=True))
        return mounts

    def environment(self) -> dict[str, str]:
        env = {}
        if self.cache is not None:
            env["HF_HOME"] = f"{CACHE_TARGET}/huggingface"
        if self.hf_token_file is not None:
            env["HF_TOKEN_PATH"] = TOKEN_TARGET
        return env

    @property
    def gpus(self) -> bool:
        return self.device == "cuda"

    def ulimits(self) -> list[tuple[str, int]]:
        return ([("memlock", MEMLOCK_UNLIMITED)] if self.gpus else []) + [("stack", STACK_BYTES)]

    def capabilities(self) -> list[str]:
        return (["IPC_LOCK"] if self.rdma else []) + (["SYS_PTRACE"] if self.sys_ptrace else [])

    def devices(self) -> list[str]:
        return [f"{INFINIBAND}:{INFINIBAND_TARGET}:rwm"] if self.rdma else []

    def command(self) -> list[str]:
        command = ["run"]
        if self.model is not None:
            command += ["--model", self.model]
        command += ["--device", self.device, "--results", RESULTS_TARGET]
        if self.cache is not None:
            command += ["--cache-dir", f"{CACHE_TARGET}/compile"]
        return command + list(self.placement) + list(self.run_args)


def docker_run_argv(options: LaunchOptions) -> list[str]:
    """The plain `docker run` equivalent of `create_container` + start."""
    argv = ["docker", "run", "--rm", "--init", *(["--gpus", "all"] if options.gpus else [])]
    argv += ["--ipc=host", "--network=host"]
    for limit, size in options.ulimits():
        argv += ["--ulimit", f"{limit}={size}"]
    argv += [f"--device={device}" for device in options.devices()]
    argv += [f"--cap-add={cap}" for cap in options.capabilities()]
    for mount in options.mounts():
        argv += ["-v", f"{mount.source}:{mount.target}" + (":ro" if mount.read_only else "")]
    for name, value in options.environment().items():
        argv += ["-e", f"{name}={value}"]
    if options.hf_token_from_env and options.hf_token_file is None:
        argv += ["-e", "HF_TOKEN"]
    return [*argv, options.image, *options.command()]


def print_line(options: LaunchOptions) -> str:
    return shlex.join(redact_argv(docker_run_argv(options)))


def _docker_sdk():  # type: ignore[no-untyped-def]
    try:
        import docker
    except ImportError as error:
        raise TitanbenchError(
            "the Docker SDK is not installed: pip install 'titanbench[host]' (or use --print)"
        ) from error
    return docker


def connect() -> DockerClient:
    docker = _docker_sdk()
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise TitanbenchError(f"cannot reach the Docker engine: {error}") from error
    return client


def create_container(client: DockerClient, options: LaunchOptions) -> Container:
    """Create (not start) the benchmark container for `options`."""
    if options.hf_token_from_env:
        raise ValueError("the SDK path takes the token as a file only (hf_token_file)")
    docker = _docker_sdk()
    for mount in options.mounts():
        if not mount.source.exists():
            raise TitanbenchError(f"{mount.source} does not exist (to be mounted at {mount.target})")
    try:
        return client.containers.create(
            options.image,
            command=options.command(),
            init=True,
            ipc_mode="host",
            network_mode="host",
            device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if options.gpus else None,
            ulimits=[docker.types.Ulimit(name=name, soft=value, hard=value) for name, value in options.ulimits()],
            devices=options.devices(),
            cap_add=options.capabilities() or None,
            mounts=[
                docker.types.Mount(
                    target=mount.target, source=str(mount.source), type="bind", read_only=mount.read_only
                )
                for mount in options.mounts()
            ],
            environment=options.environment(),
        )
    except docker.errors.ImageNotFound as error:
        raise TitanbenchError(
            f"image {options.image} not found: build it with `make image` (or `make image-release`), "
            "pull it, or pass --image"
        ) from error
    except docker.errors.APIError as error:
        raise TitanbenchError(f"docker could not create the container: {error.explanation}") from error


def start_error(explanation: str | None) -> str:
    """The engine's reason, plus what to do about the two refusals a host config can meet."""
    reason = " ".join(str(explanation).split())
    if "capabilities: [[gpu]]" in reason:
        return f"{reason} (this engine has no NVIDIA runtime: `--device cpu` runs without GPUs)"
    if "rlimit" in reason:
        return f"{reason} (dockerd may not raise a --ulimit; type 8 is memlock, which GPU runs ask unlimited)"
    return reason


def run_container(client: DockerClient, options: LaunchOptions) -> int:
    """Create and start the container, stream its output here, and return its exit status.

    Ctrl-C stops the container (SIGTERM, then SIGKILL after a grace period) so that
    `titanbench run` inside can mark the running config as interrupted.
    """
    docker = _docker_sdk()
    container = create_container(client, options)
    try:
        try:
            container.start()
        except docker.errors.APIError as error:
            raise TitanbenchError(f"docker could not start the container: {start_error(error.explanation)}") from error
        try:
            for chunk in container.logs(stream=True, follow=True):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        except KeyboardInterrupt:
            container.stop(timeout=STOP_GRACE_S)
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


# An image reference as Docker, pyxis and Kubernetes parse it: [registry[:port]/]path[:tag][@sha256:digest].
_IMAGE_REFERENCE = re.compile(
    r"(?:[A-Za-z0-9]+(?:[.-][A-Za-z0-9]+)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)


def check_image_reference(option: str, value: str) -> str:
    if not _IMAGE_REFERENCE.fullmatch(value):
        raise TitanbenchError(f"{option} {value!r}: not an image reference ([registry/]name[:tag][@sha256:digest])")
    return value


def check_host_path(option: str, path: Path) -> Path:
    """A host path for `-v HOST:TARGET`: a colon in it would split the mount in the wrong place."""
    if ":" in str(path.resolve()):
        raise TitanbenchError(f"{option} {path}: a path with ':' cannot be bind-mounted (docker -v HOST:TARGET)")
    return path

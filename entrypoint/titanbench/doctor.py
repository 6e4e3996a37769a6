"""`titanbench doctor`: check a node before burning GPU hours.

Each check says OK, WARN or FAIL, what it saw, and for every non-OK how to fix it. The hardware
checks take the facts as arguments (`gpu_checks`, `rdma_checks`) so they can be exercised on
recorded tool output and a stand-in NVML; `run_checks` reads the real machine.
"""

import os
import platform
import re
import resource
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from titanbench import envinfo, gpuinfo, nodes, settings, staging
from titanbench.errors import TitanbenchError
from titanbench.pins import pins
from titanbench.spec import POWER_TOLERANCE_W

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Reference:
    """The published hardware, as the published matrices (runs/*.yaml) state it: typed once, there."""

    gpu: str
    gpus_per_node: int
    power_limit_w: float


@cache
def reference() -> Reference:
    from titanbench.spec import resolve_models

    spec = resolve_models("all")[0]
    return Reference(
        gpu=spec.heading.gpu,
        gpus_per_node=int(spec.hardware.get("gpus_per_host", spec.topology.gpus_per_node)),
        power_limit_w=float(spec.hardware["power_limit_w"]),
    )


MIN_COMPUTE_CAPABILITY = (9, 0)
# Symmetric memory (async TP) needs driver >= 535.
MIN_DRIVER_MAJOR = 535
# Docker's default /dev/shm is 64 MiB and crashes NCCL; anything below this is a container default.
MIN_SHM_BYTES = 1 << 30
# Free space: profiler traces, TensorBoard events and logs per run; Inductor/Triton caches per config.
FAIL_FREE_BYTES = 5 << 30
WARN_FREE_BYTES = 20 << 30
HUB_TIMEOUT_S = 10
# Every rank opens its own stream of allenai/c4: from the 8B run's 8 nodes (64 streams) on, the hub's
# rate limit is a real risk (runs of 48 nodes have been answered HTTP 429).
STREAM_WARN_NODES = 8
# Clock event reasons that mean the hardware is slowing down now (bad cooling, power delivery).
HARDWARE_SLOWDOWNS = {"hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown"}
COMPILE_OFF = "turns off torch.compile, which every published config uses and async TP requires"
# (variable, values that hurt, status, why): settings that silently change what is measured.
KNOWN_BAD_ENV = (
    ("NCCL_IB_DISABLE", {"1"}, FAIL, "disables NCCL's InfiniBand and RoCE transport: nodes talk over TCP"),
    ("NCCL_P2P_DISABLE", {"1"}, FAIL, "disables NVLink peer-to-peer between the GPUs of a node"),
    ("NCCL_NET", {"socket"}, FAIL, "forces NCCL onto TCP sockets between nodes"),
    ("NCCL_SHM_DISABLE", {"1"}, WARN, "disables NCCL's shared-memory transport"),
    ("CUDA_LAUNCH_BLOCKING", {"1"}, FAIL, "serialises every CUDA kernel launch"),
    ("TORCH_COMPILE_DISABLE", {"1", "true"}, FAIL, COMPILE_OFF),
    ("TORCHDYNAMO_DISABLE", {"1", "true"}, FAIL, COMPILE_OFF),
    ("PYTORCH_NO_CUDA_MEMORY_CACHING", {"1"}, FAIL, "disables PyTorch's caching allocator"),
    ("NCCL_DEBUG", {"trace"}, WARN, "NCCL trace logging slows communication"),
    (
        "NCCL_ALGO",
        None,
        WARN,
        "overrides NCCL's algorithm choice; the reference's NCCL settings are unpublished (NCCL's defaults assumed)",
    ),
    (
        "NCCL_PROTO",
        None,
        WARN,
        "overrides NCCL's protocol choice; the reference's NCCL settings are unpublished (NCCL's defaults assumed)",
    ),
)
USE_IMAGE = "use the titanbench image (make image), which builds the pinned stack"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


# ---- hardware --------------------------------------------------------------------------------


def gpu_checks(
    facts: gpuinfo.GpuFacts | None,
    reason: str | None,
    expect_gpus: int | None = None,
    visible_devices: str | None = None,
) -> list[Check]:
    """`visible_devices`: CUDA_VISIBLE_DEVICES, which NVML ignores but torchrun's processes obey."""
    if facts is None:
        return [
            Check(
                "gpu.visible",
                FAIL,
                f"no NVIDIA GPU visible ({reason})",
                "run on a GPU node with the NVIDIA driver; in Docker pass --gpus all (NVIDIA Container Toolkit); "
                "under Slurm request --gpus-per-node=8; in Kubernetes request nvidia.com/gpu: 8",
            )
        ]
    gpus = facts.gpus
    names = sorted({g.name for g in gpus})
    checks = [Check("gpu.visible", OK, f"{len(gpus)} GPU(s) via {facts.source}")]
    wanted = expect_gpus or reference().gpus_per_node
    usable = len(gpus)
    if visible_devices is not None:
        usable = min(usable, len([d for d in visible_devices.split(",") if d.strip()]))
    if usable != wanted:
        status = FAIL if expect_gpus else WARN
        needs = "the plan needs" if expect_gpus else "the reference has"
        limited = f" (CUDA_VISIBLE_DEVICES={visible_devices})" if usable != len(gpus) else ""
        checks.append(
            Check(
                "gpu.count",
                status,
                f"{usable} GPU(s) usable{limited}, {needs} {wanted} per node",
                "check CUDA_VISIBLE_DEVICES and the container's --gpus / the job's GPU request",
            )
        )
    else:
        checks.append(Check("gpu.count", OK, f"{usable} per node"))
    if all(reference().gpu in name for name in names):
        checks.append(Check("gpu.model", OK, ", ".join(names)))
    else:
        checks.append(
            Check(
                "gpu.model",
                WARN,
                f"{', '.join(names)}; the reference is {reference().gpu}",
                "numbers from other GPUs are not comparable with the published table; the report flags it",
            )
        )
    old = [g for g in gpus if g.compute_capability and _cc(g.compute_capability) < MIN_COMPUTE_CAPABILITY]
    unknown = [g for g in gpus if not g.compute_capability]
    if old:
        cc = ", ".join(sorted({g.compute_capability or "" for g in old}))
        checks.append(
            Check(
                "gpu.compute_capability",
                FAIL,
                f"compute capability {cc} < 9.0 (float8 and the reference need Hopper)",
                "run on H100/H200-class GPUs (SM 9.0)",
            )
        )
    elif unknown:
        checks.append(Check("gpu.compute_capability", WARN, "not reported by the driver", "update the NVIDIA driver"))
    else:
        checks.append(
            Check("gpu.compute_capability", OK, ", ".join(sorted({g.compute_capability or "" for g in gpus})))
        )
    checks.append(_driver_check(facts))
    checks.append(_nvlink_check(facts))
    checks.append(_power_check(gpus))
    checks.append(_clocks_check(gpus))
    return checks


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _driver_check(facts: gpuinfo.GpuFacts) -> Check:
    driver = facts.driver_version or ""
    detail = f"driver {driver or 'unknown'}, CUDA {facts.cuda_driver_version or 'unknown'}"
    major = driver.split(".")[0]
    if major.isdigit() and int(major) < MIN_DRIVER_MAJOR:
        return Check(
            "gpu.driver", FAIL, f"{detail}; async TP's symmetric memory needs >= {MIN_DRIVER_MAJOR}",
            f"upgrade the NVIDIA driver to {MIN_DRIVER_MAJOR} or newer",
        )  # fmt: skip
    return Check("gpu.driver", OK, detail)


def _nvlink_check(facts: gpuinfo.GpuFacts) -> Check:
    matrix = facts.nvlink
    if len(facts.gpus) < 2:
        return Check("gpu.nvlink", OK, "one GPU: nothing to connect")
    if not matrix:
        return Check("gpu.nvlink", WARN, "topology not readable", "run `nvidia-smi topo -m` and check for NV# cells")
    missing = [f"{i}-{j}" for i, row in enumerate(matrix) for j, linked in enumerate(row) if i < j and linked is False]
    unknown = [f"{i}-{j}" for i, row in enumerate(matrix) for j, linked in enumerate(row) if i != j and linked is None]
    if missing:
        return Check(
            "gpu.nvlink",
            FAIL,
            f"no NVLink between GPU pairs {', '.join(missing)} (the reference is NVLink all-to-all)",
            "use an NVSwitch (SXM) system; check `nvidia-smi nvlink -s` and that nvidia-fabricmanager is running",
        )
    if unknown:
        return Check(
            "gpu.nvlink", WARN, f"NVLink state unknown for {len(unknown) // 2} pair(s)", "check `nvidia-smi topo -m`"
        )
    links = sorted({g.nvlink_links for g in facts.gpus if g.nvlink_links})
    per_gpu = f" ({'/'.join(map(str, links))} links per GPU)" if links else ""
    return Check("gpu.nvlink", OK, f"every pair of {len(facts.gpus)} GPUs over NVLink{per_gpu}")


def _power_check(gpus: list[gpuinfo.Gpu]) -> Check:
    limits = sorted({g.power_limit_w for g in gpus if g.power_limit_w is not None})
    if not limits:
        return Check("gpu.power_limit", WARN, "power limit not reported", "check `nvidia-smi -q -d POWER`")
    shown = "/".join(f"{w:g} W" for w in limits)
    if all(abs(w - reference().power_limit_w) <= POWER_TOLERANCE_W for w in limits):
        return Check("gpu.power_limit", OK, f"{shown} (reference {reference().power_limit_w:g} W)")
    return Check(
        "gpu.power_limit",
        WARN,
        f"{shown}; the reference GPUs were capped at {reference().power_limit_w:g} W (a higher cap may run faster)",
        f"to match the reference: sudo nvidia-smi -pl {reference().power_limit_w:g} (the report records the cap)",
    )


def _clocks_check(gpus: list[gpuinfo.Gpu]) -> Check:
    if all(g.clock_event_reasons is None for g in gpus):
        return Check("gpu.clocks", WARN, "clock event reasons not reported", "check `nvidia-smi -q -d PERFORMANCE`")
    slowed = {g.index: sorted(set(g.clock_event_reasons or ()) & HARDWARE_SLOWDOWNS) for g in gpus}
    slowed = {i: r for i, r in slowed.items() if r}
    if slowed:
        shown = "; ".join(f"GPU{i}: {', '.join(r)}" for i, r in slowed.items())
        return Check(
            "gpu.clocks", FAIL, f"clocks slowed by the hardware now: {shown}",
            "check cooling and power delivery (`nvidia-smi -q -d PERFORMANCE,TEMPERATURE,POWER`) before benchmarking",
        )  # fmt: skip
    capped = [g.index for g in gpus if "sw_power_cap" in (g.clock_event_reasons or ())]
    if capped:
        return Check(
            "gpu.clocks", WARN, f"GPUs {capped} held back by the software power cap right now",
            "expected under load with a 500 W cap; if the GPUs are idle, check other jobs on the node",
        )  # fmt: skip
    clocks = sorted({g.max_sm_clock_mhz for g in gpus if g.max_sm_clock_mhz})
    return Check("gpu.clocks", OK, f"no clock slowdown active (max SM clock {'/'.join(map(str, clocks)) or '?'} MHz)")


def rdma_checks(ports: list[gpuinfo.RdmaPort], reason: str | None) -> list[Check]:
    if not ports:
        return [
            Check(
                "rdma.ports",
                FAIL,
                f"no RDMA device ({reason}); multi-node runs would fall back to TCP",
                "Docker: --device=/dev/infiniband --cap-add=IPC_LOCK and libibverbs1 ibverbs-providers in the image; "
                "Kubernetes: request the RDMA device resource; the host needs the mlx5 driver",
            )
        ]
    active = [p for p in ports if p.state == "ACTIVE"]
    rates = sorted({p.rate for p in active if p.rate})
    summary = f"{len(active)} of {len(ports)} port(s) ACTIVE" + (f" ({', '.join(rates)})" if rates else "")
    if not active:
        return [Check("rdma.ports", FAIL, summary, "bring the ports up: check cables, the subnet manager (`ibstat`)")]
    down = [f"{p.device}/{p.port} {p.state}" for p in ports if p.state != "ACTIVE"]
    if down:
        return [
            Check(
                "rdma.ports", WARN, f"{summary}; not active: {', '.join(down)}",
                "fine if those are storage or management ports; otherwise check cables and `ibstat`",
            )
        ]  # fmt: skip
    return [Check("rdma.ports", OK, summary)]


def _kernel_at_least(release: str, wanted: tuple[int, int]) -> bool:
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match[1]), int(match[2])) >= wanted


def gpudirect_check(
    sys_module: Path = Path("/sys/module"),
    kernel_release: str | None = None,
    nvidia_version: Path = Path("/proc/driver/nvidia/version"),
) -> Check:
    """GPUDirect RDMA (the NIC reads and writes GPU memory) needs nvidia-peermem, or DMA-BUF: NCCL >= 2.13
    uses it without nvidia-peermem on Linux >= 5.12 with NVIDIA's open kernel modules."""
    if (sys_module / "nvidia_peermem").exists():
        return Check("rdma.gpudirect", OK, "nvidia_peermem is loaded")
    release = kernel_release or platform.release()
    driver = nvidia_version.read_text(errors="replace") if nvidia_version.is_file() else ""
    modules = "open" if "Open Kernel Module" in driver else "proprietary" if driver else "unknown"
    if modules == "open" and _kernel_at_least(release, (5, 12)):
        return Check("rdma.gpudirect", OK, f"DMA-BUF: Linux {release} and NVIDIA's open kernel modules")
    return Check(
        "rdma.gpudirect",
        WARN,
        f"no nvidia_peermem and no DMA-BUF path (Linux {release}, {modules} NVIDIA kernel modules): "
        "NCCL's RDMA would copy through host memory",
        "load nvidia-peermem (modprobe nvidia-peermem), or use NVIDIA's open kernel modules on Linux >= 5.12; "
        "each multi-node result.json shows what NCCL used (transport)",
    )


def _rdma_checks() -> list[Check]:
    ports, reason = gpuinfo.rdma_ports()
    return [*rdma_checks(ports, reason), *([gpudirect_check()] if ports else [])]


# ---- container and software -------------------------------------------------------------------


def memlock_check() -> Check:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        return Check("ulimit.memlock", OK, "unlimited")
    return Check(
        "ulimit.memlock",
        FAIL,
        f"ulimit -l is {soft // 1024} KiB; RDMA needs to pin memory (NCCL's IB transport fails or falls back)",
        "Docker: --ulimit memlock=-1; Slurm: memlock unlimited in limits.conf (PropagateResourceLimits); "
        "Kubernetes: LimitMEMLOCK=infinity for the container runtime",
    )


def shm_check(path: Path = Path("/dev/shm")) -> Check:
    try:
        stats = os.statvfs(path)
    except OSError as error:
        return Check("shm", FAIL, f"{path}: {error.strerror}", "mount a tmpfs at /dev/shm (Docker: --ipc=host)")
    size = stats.f_frsize * stats.f_blocks
    if size < MIN_SHM_BYTES:
        return Check(
            "shm",
            FAIL,
            f"{path} is {size / 2**20:.0f} MiB; NCCL needs more (Docker's default 64 MiB crashes it)",
            "Docker: --ipc=host (or --shm-size=64g); Kubernetes: an in-memory emptyDir at /dev/shm",
        )
    return Check("shm", OK, f"{path} is {size / 2**30:.1f} GiB")


def nccl_check() -> Check:
    version, source = envinfo.nccl_version()
    if version is None:
        return Check("nccl", FAIL, f"no NCCL found ({source})", f"install the CUDA build of torch: {USE_IMAGE}")
    return Check("nccl", OK, f"NCCL {version} ({source})")


def env_checks(env: dict[str, str] | None = None) -> list[Check]:
    env = dict(os.environ if env is None else env)
    checks = []
    for name, bad_values, status, why in KNOWN_BAD_ENV:
        value = env.get(name)
        if value is not None and (bad_values is None or value.strip().lower() in bad_values):
            checks.append(Check(f"env.{name}", status, f"{name}={value}: {why}", f"unset {name}"))
    return checks or [Check("env", OK, "no known-bad variable set")]


def pin_checks() -> list[Check]:
    p = pins()
    report = envinfo.pin_report()
    release = report["mode"] == "release"
    checks = []
    torch = report["torch"]
    if torch["git_version"] is None:
        checks.append(Check("pins.torch", FAIL, torch["note"] or "torch is not installed", USE_IMAGE))
    elif torch["match"]:
        checks.append(Check("pins.torch", OK, f"git_version {torch['git_version']} ({report['mode']} pin)"))
    else:
        wanted = (
            f"RELEASE_TORCH_GIT_VERSION {torch['expected_git_version']} (torch {p['RELEASE_TORCH_VERSION']})"
            if release
            else f"TORCH_COMMIT {torch['expected_git_version']}"
        )
        checks.append(
            Check(
                "pins.torch",
                FAIL,
                f"torch {torch['version']} has git_version {torch['git_version']}; the pin is {wanted}",
                f"{USE_IMAGE}; a source build must keep .git so git_version is recorded",
            )
        )
    ao = report["torchao"]
    if ao["version"] is None:
        checks.append(Check("pins.torchao", FAIL, "torchao is not installed (float8 needs it)", USE_IMAGE))
    elif ao["match"]:
        checks.append(Check("pins.torchao", OK, f"torchao {ao['version']} ({ao['commit'] or 'release'})"))
    else:
        seen = f"commit {ao['commit']}" if ao["commit"] else "no commit recorded"
        wanted = f"version {ao['expected']}" if release else f"commit {ao['expected']}"
        checks.append(Check("pins.torchao", FAIL, f"torchao {ao['version']} ({seen}); the pin is {wanted}", USE_IMAGE))
    titan = report["torchtitan"]
    # The commit the image was built from (its TORCHTITAN_COMMIT build arg), when it is not the pin.
    built = os.environ.get(settings.TORCHTITAN_BUILT_COMMIT)
    if titan["match"]:
        checks.append(Check("pins.torchtitan", OK, f"commit {titan['commit']} ({titan['source']})"))
    elif titan["commit"] is not None and titan["commit"] == built:
        checks.append(
            Check(
                "pins.torchtitan",
                WARN,
                f"commit {titan['commit']} ({titan['source']}) is the one this image was built with "
                f"(TORCHTITAN_COMMIT overridden); the pin is {titan['expected_commit']}",
                "rebuild the image without overriding TORCHTITAN_COMMIT to run the pinned torchtitan",
            )
        )
    else:
        seen = f"commit {titan['commit']} ({titan['source']})" if titan["commit"] else titan["source"]
        checks.append(
            Check(
                "pins.torchtitan",
                FAIL,
                f"{seen}; the pin is {titan['expected_commit']}",
                f"{USE_IMAGE}, or point TITANBENCH_TORCHTITAN_DIR at a git checkout of the pinned commit",
            )
        )
    checks.append(configs_check())
    return checks


def configs_check() -> Check:
    """All published configs parse with torchtitan's own ConfigManager (the image's checkout when known)."""
    from titanbench.plan import Locations, Overrides, Rendezvous, build_plan, validate_with_torchtitan
    from titanbench.spec import resolve_models

    checkout = os.environ.get(settings.TORCHTITAN_DIR)
    scratch = Path(tempfile.gettempdir()) / "titanbench-doctor"
    try:
        plans = build_plan(
            resolve_models("all"),
            Overrides(),
            Rendezvous(),
            Locations(run_dir=scratch, cache_root=scratch, torchtitan_dir=Path(checkout or ".")),
        )
        notes = validate_with_torchtitan(plans, torchtitan_dir=Path(checkout) if checkout else None)
    except TitanbenchError as error:
        return Check(
            "pins.configs", FAIL, error.message,
            f"{USE_IMAGE}; torchtitan {pins()['TORCHTITAN_VERSION']} + tyro {pins()['TYRO_VERSION']} parse every flag",
        )  # fmt: skip
    with_toml = sum("parsed with" in note for note in notes)
    return Check("pins.configs", OK, f"{len(plans)} published configs parse ({with_toml} with their toml)")


# ---- assets ----------------------------------------------------------------------------------


def _has_content(path: Path) -> bool:
    try:
        return bool(path.read_bytes().strip())
    except OSError:
        return False


def hf_token_source() -> str | None:
    """Where a Hugging Face token would come from (never the token itself)."""
    for var in (settings.HF_TOKEN_FILE, "HF_TOKEN_PATH"):
        path = os.environ.get(var)
        if path and _has_content(Path(path).expanduser()):
            return f"file named by {var}"
    if os.environ.get("HF_TOKEN"):
        return "HF_TOKEN"
    from huggingface_hub import get_token

    return "huggingface_hub's stored login" if get_token() else None


@dataclass(frozen=True)
class Scale:
    """What the data check needs to know of the plan, per model."""

    model: str
    nodes: int
    gpus_per_node: int
    dp: int


def scheduler_nodes(env: Mapping[str, str]) -> int | None:
    """The node count a scheduler gives this job (Slurm, Kubeflow), if any."""
    name = {nodes.SLURM: "SLURM_NNODES", nodes.KUBEFLOW: "PET_NNODES"}.get(nodes.scheduler(env) or "")
    value = env.get(name, "").strip() if name else ""
    return int(value) if value.isdigit() else None


def plan_scales(model: str, node_count: int | None, env: Mapping[str, str] | None = None) -> list[Scale]:
    """Nodes and data-parallel degree of each model of the plan: `--nodes`, else the scheduler's node
    count, else the published one."""
    from titanbench.plan import Overrides, topology_for
    from titanbench.spec import resolve_models

    count = node_count or scheduler_nodes(os.environ if env is None else env)
    scales = []
    for spec in resolve_models(model):
        topology = topology_for(spec, Overrides(nodes=count))
        scales.append(Scale(spec.model, topology.nodes, topology.gpus_per_node, topology.fsdp))
    return scales


def asset_checks(scales: tuple[Scale, ...] = ()) -> list[Check]:
    # torchtitan reads the tokenizer relative to the checkout `run` starts it in (the image sets the variable).
    workdir = Path(os.environ.get(settings.TORCHTITAN_DIR) or Path.cwd())
    path = staging.tokenizer_path(workdir / staging.DEFAULT_TOKENIZER_DEST)
    fetch = (
        f"titanbench assets tokenizer --dest {workdir / staging.DEFAULT_TOKENIZER_DEST} "
        f"(needs a token with access to {staging.TOKENIZER_REPO})"
    )
    try:
        ranks = staging.verify_tokenizer(path)
        tokenizer = Check("assets.tokenizer", OK, f"{path} loads with tiktoken ({ranks:,} ranks)")
    except TitanbenchError as error:
        tokenizer = Check("assets.tokenizer", FAIL, error.message, fetch)
    source = hf_token_source()
    if source:
        token = Check("assets.hf_token", OK, f"set via {source} (value not shown)")
    elif tokenizer.status == OK:
        token = Check("assets.hf_token", OK, "none, not needed: the tokenizer is staged")
    else:
        token = Check(
            "assets.hf_token", FAIL, "no Hugging Face token, and the gated tokenizer must still be downloaded",
            "export HF_TOKEN=... or pass --hf-token-file to titanbench assets tokenizer",
        )  # fmt: skip
    return [tokenizer, token, dataset_check(scales)]


def dataset_check(scales: tuple[Scale, ...] = ()) -> Check:
    """The C4 data the plan reads: a staged copy (split evenly per rank?), or the hub (reachable; on how
    many nodes?). `scales`: the plan's models, nodes and DP degrees (none: not judged by scale)."""
    local = os.environ.get(settings.DATASET_PATH)
    stage = "titanbench assets c4 --dest DIR, then --dataset-path DIR"
    if local:
        shards = sorted(Path(local).glob("en/c4-train.*.json.gz"))
        if not shards:
            return Check(
                "assets.dataset", FAIL, f"{settings.DATASET_PATH}={local} holds no en/c4-train.*.json.gz", stage
            )
        detail = f"{len(shards)} C4 train shard(s) staged at {local}"
        uneven = staging.uneven_degrees(len(shards), {s.model: s.dp for s in scales})
        if uneven:
            even = staging.even_c4_shards([s.dp for s in scales])
            shown = ", ".join(f"{model} {dp}" for model, dp in uneven.items())
            return Check(
                "assets.dataset", WARN,
                f"{detail}: not a multiple of the data-parallel degree ({shown}), so every rank reads every "
                "shard and keeps one document in DP",
                f"stage a multiple of {even}: titanbench assets c4 --dest {local} --shards {even}",
            )  # fmt: skip
        return Check("assets.dataset", OK, detail)
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    if constants.HF_HUB_OFFLINE:
        return Check(
            "assets.dataset", FAIL, "HF_HUB_OFFLINE is set and no local C4 copy is named (TITANBENCH_DATASET_PATH)",
            f"{stage}; or --dataset c4_test (a deviation)",
        )  # fmt: skip
    url = hf_hub_url(staging.C4_REPO, staging.C4_TRAIN_SHARD.format(0), repo_type="dataset")
    try:
        get_hf_file_metadata(url, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # any failure to reach the hub is the finding itself
        return Check(
            "assets.dataset", FAIL, f"cannot reach {staging.C4_REPO} on {constants.ENDPOINT}: {type(error).__name__}",
            f"allow HTTPS to {constants.ENDPOINT} from every node; or {stage}; or --dataset c4_test (a deviation)",
        )  # fmt: skip
    reachable = f"{staging.C4_REPO} reachable on {constants.ENDPOINT}"
    busiest = max(scales, key=lambda s: s.nodes, default=None)
    if busiest is not None and busiest.nodes >= STREAM_WARN_NODES:
        return Check(
            "assets.dataset", WARN,
            f"{reachable}, but the plan streams it on every rank: {busiest.nodes} nodes x {busiest.gpus_per_node} "
            f"({busiest.model}); the hub rate-limits that many (HTTP 429)",
            f"{stage} (TITANBENCH_DATASET_PATH for doctor); `assets c4`'s default shard count splits evenly",
        )  # fmt: skip
    return Check("assets.dataset", OK, f"{reachable} (streamed by every rank)")


def disk_checks() -> list[Check]:
    """Free space where `run` writes (settings: the results root and the compile caches) and the HF cache."""
    from huggingface_hub import constants

    results = settings.results_root()
    places = {
        "results": results,
        "hf_cache": Path(constants.HF_HOME),
        "compile_cache": settings.cache_root(results),
    }
    checks, seen = [], set()
    for what, path in places.items():
        existing = path.resolve()
        while not existing.exists():
            existing = existing.parent
        device = existing.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        free = shutil.disk_usage(existing).free
        detail = f"{free / 2**30:.0f} GiB free at {existing} ({what})"
        if free < FAIL_FREE_BYTES:
            checks.append(Check(f"disk.{what}", FAIL, detail, f"free space or point {what} elsewhere"))
        elif free < WARN_FREE_BYTES:
            checks.append(Check(f"disk.{what}", WARN, detail, f"free space or point {what} elsewhere"))
        else:
            checks.append(Check(f"disk.{what}", OK, detail))
    return checks


def run_checks(
    *, gpu: bool = True, pins_only: bool = False, expect_gpus: int | None = None, scales: tuple[Scale, ...] = ()
) -> list[Check]:
    """Every check, in the order a person fixes things: hardware, container, software, assets, disk."""
    if pins_only:
        return pin_checks()
    groups: list[Callable[[], list[Check]]] = []
    if gpu:
        groups.append(
            lambda: gpu_checks(
                *gpuinfo.gpu_facts(), expect_gpus=expect_gpus, visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES")
            )
        )
        groups.append(_rdma_checks)
    groups += [
        lambda: [memlock_check(), shm_check(), nccl_check()],
        env_checks,
        pin_checks,
        lambda: asset_checks(scales),
        disk_checks,
    ]
    return [check for group in groups for check in group()]

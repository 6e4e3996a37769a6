"""The single place that turns a matrix spec + topology into torchtitan flags, torchrun argv and env.

Order of torchtitan arguments: `--job.config_file <toml>`, the published flags exactly (with any
override applied in place), then the flags the bundle adds. Every override is a deviation and is
listed per config; every bundle flag and variable carries its reason and changes nothing computed.
"""

import contextlib
import hashlib
import io
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

from titanbench.cpu_trainer import SUBSTITUTIONS, SUBSTITUTIONS_ENV
from titanbench.errors import TitanbenchError
from titanbench.redact import is_url
from titanbench.spec import STEPS_FLAG, TP_DEGREE_FLAG, ConfigSpec, Device, MatrixSpec, Topology, flag_value

DEFAULT_TRAINER = "torchtitan.train"
# torchtitan's own trainer on CPU (titanbench/cpu_trainer.py): its config check and the log evidence apply.
CPU_TRAINER = "titanbench.cpu_trainer"
TORCHTITAN_TRAINERS = (DEFAULT_TRAINER, CPU_TRAINER)
DEFAULT_MASTER_PORT = 29500
DEFAULT_GPU_MEM_GIB = 80.0
Dataset = Literal["c4", "c4_test"]
DATASETS: tuple[Dataset, ...] = get_args(Dataset)
PUBLISHED_DATASET = "c4"
# Bytes per parameter that stay resident however the step runs: fp32 master weights (4),
# fp32 gradients (4) and AdamW's two fp32 moments (8). Activations come on top.
STATE_BYTES_PER_PARAM = 16
GIB = 2**30


@dataclass(frozen=True)
class Overrides:
    """Departures from the published setup (each one a deviation) and the guards' switches."""

    nodes: int | None = None
    gpus_per_node: int | None = None
    tp: int | None = None
    steps: int | None = None
    profiling: bool = True
    dataset: Dataset | None = None
    dataset_path: str | None = None
    allow_fp32: bool = False
    force: bool = False
    gpu_mem_gib: float = DEFAULT_GPU_MEM_GIB
    # A multi-node config whose NCCL fell back to TCP sockets counts as ok, not unverified.
    accept_socket_transport: bool = False
    # Stop a config once its 95% interval is within +-this % of its average (`run --until-stable`).
    until_stable: float | None = None


@dataclass(frozen=True)
class Rendezvous:
    """torchrun static rendezvous: global rank 0 lives on node 0."""

    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT


@dataclass(frozen=True)
class Locations:
    run_dir: Path
    cache_root: Path
    torchtitan_dir: Path
    # Profiler traces go under the run's config folder unless given (`--trace-dir`).
    trace_root: Path | None = None


def trainer_for(device: Device, trainer: str | None) -> str:
    """`--trainer` if given, else torchtitan's trainer (through the CPU launcher on CPU)."""
    return trainer or (CPU_TRAINER if device == "cpu" else DEFAULT_TRAINER)


def uses_nccl_network(device: str, nodes: int) -> bool:
    """Nodes talk through NCCL's network transport: the plan has NCCL log it, the runner checks which."""
    return device == "cuda" and nodes > 1


def runs_torchtitan(trainer: str) -> bool:
    """Whether torchtitan's config check and the log evidence checks apply to this trainer."""
    return trainer in TORCHTITAN_TRAINERS


@dataclass
class ConfigPlan:
    model: str
    config: str
    tp_type: str
    quantization: str
    steps: int
    topology: Topology
    torchtitan_args: list[str]
    bundle_flags: list[dict[str, str]]
    launcher_argv: list[str]
    env: dict[str, str]
    env_reasons: dict[str, str]
    deviations: list[str]
    published_tps: float | None
    workdir: str
    trainer: str
    # Where torchrun's per-rank output files end up. torchrun writes them (--log-dir) into a private
    # directory outside the results tree; the launch puts scrubbed copies here (titanbench.redact).
    rank_log_dir: str = ""
    device: str = "cuda"
    # Non-empty: the config cannot run on this device, and this is why (status `skipped`).
    skip_reason: str = ""
    # Directories the launch creates first (caches the tools expect to exist).
    make_dirs: list[str] = field(default_factory=list)
    accept_socket_transport: bool = False
    fingerprint: str = field(default="")

    @property
    def checks_torchtitan(self) -> bool:
        return runs_torchtitan(self.trainer)

    @property
    def checks_transport(self) -> bool:
        return uses_nccl_network(self.device, self.topology.nodes)

    def to_dict(self) -> dict:
        return {**asdict(self), "topology": self.topology.model_dump()}


def check_device(spec: MatrixSpec, device: Device) -> None:
    if device not in spec.devices:
        raise TitanbenchError(
            f"{spec.model} runs on CUDA GPUs only: at its shapes a CPU would take days per config and prove "
            "nothing about the benchmark (the smoke matrix runs on CPU: --model smoke --device cpu)"
        )


def topology_for(spec: MatrixSpec, overrides: Overrides, device: Device = "cuda") -> Topology:
    """The topology a config runs at: the spec's reference one on `device`, with the overrides applied."""
    reference = spec.reference_topology(device)
    nodes = overrides.nodes or reference.nodes
    gpus_per_node = overrides.gpus_per_node or reference.gpus_per_node
    tp = overrides.tp or reference.tp
    world = nodes * gpus_per_node
    if world % tp:
        raise TitanbenchError(f"{spec.model}: TP degree {tp} does not divide the world size {world}")
    if gpus_per_node % tp:
        raise TitanbenchError(
            f"{spec.model}: TP degree {tp} must divide the GPUs per node ({gpus_per_node}): "
            "a TP group must sit inside one node (async TP uses intra-node symmetric memory)"
        )
    return Topology(nodes=nodes, gpus_per_node=gpus_per_node, tp=tp, fsdp=world // tp)


def check_fidelity(spec: MatrixSpec, topology: Topology, overrides: Overrides) -> None:
    if topology.fsdp == 1 and not overrides.allow_fp32:
        smaller_tp = max(topology.tp // 2, 1)
        raise TitanbenchError(
            f"{spec.model}: FSDP degree 1 ({topology.world} GPUs / TP "
            f"{topology.tp}) trains in fp32 at the pinned torchtitan (bf16 mixed precision is applied "
            f"only through FSDP), which is not comparable: use e.g. --tp {smaller_tp} for FSDP "
            f"{topology.fsdp * topology.tp // smaller_tp}, or pass --allow-fp32"
        )


def state_gib_per_gpu(spec: MatrixSpec, topology: Topology) -> float:
    return spec.params * STATE_BYTES_PER_PARAM / (topology.fsdp * topology.tp) / GIB


def check_memory(spec: MatrixSpec, topology: Topology, overrides: Overrides) -> None:
    need = state_gib_per_gpu(spec, topology)
    if need > overrides.gpu_mem_gib and not overrides.force:
        raise TitanbenchError(
            f"{spec.model}: weights, gradients and AdamW state alone need {need:.1f} GiB per GPU at "
            f"FSDP {topology.fsdp} x TP {topology.tp} (before activations), more than "
            f"{overrides.gpu_mem_gib:g} GiB: add nodes, set --gpu-mem-gib, or pass --force"
        )


def _replace_flag(args: list[str], name: str, value: object) -> list[str]:
    return [f"{name}={value}" if arg.startswith(name + "=") else arg for arg in args]


def _published_args(spec: MatrixSpec, config: ConfigSpec) -> list[str]:
    return [*spec.common_flag_list, f"{STEPS_FLAG}={config.steps}", *config.flag_list]


def _deviations(
    spec: MatrixSpec, config: ConfigSpec, topology: Topology, overrides: Overrides, device: Device
) -> tuple[list[str], list[str]]:
    """(deviations, flags that implement them), applied on top of the published flags."""
    published = spec.reference_topology(device)
    deviations: list[str] = []
    extra: list[str] = []
    for key in ("nodes", "gpus_per_node", "tp", "fsdp"):
        if getattr(topology, key) != getattr(published, key):
            deviations.append(f"{key} {getattr(topology, key)} (published {getattr(published, key)})")
    if topology.fsdp == 1:
        deviations.append("FSDP 1: trains in fp32, not bf16 mixed precision (--allow-fp32)")
    if overrides.steps is not None and overrides.steps != config.steps:
        deviations.append(f"steps {overrides.steps} (published {config.steps})")
    if not overrides.profiling:
        deviations.append("profiler off (published runs profile every 100 steps)")
        extra.append("--profiling.no-enable-profiling")
    if overrides.dataset not in (None, PUBLISHED_DATASET):
        deviations.append(f"dataset {overrides.dataset} (published {PUBLISHED_DATASET}): different data")
        extra.append(f"--training.dataset={overrides.dataset}")
    if overrides.until_stable is not None:
        deviations.append(
            f"stops when the 95% interval is within +-{overrides.until_stable:g}% of the mean (--until-stable), "
            "not at the published step count"
        )
    if device == "cpu":
        deviations += [f"CPU substitution {name}: {SUBSTITUTIONS[name]}" for name in config.cpu.substitutions]
    return deviations, extra


def _bundle_flags(spec: MatrixSpec, config: ConfigSpec, locations: Locations, overrides: Overrides):
    flags = [
        {
            "flag": f"--job.dump_folder={locations.run_dir / spec.model / config.id / 'outputs'}",
            "reason": "each config's profiler traces and TensorBoard events go to its own results folder",
        },
        {
            "flag": "--metrics.disable_color_printing",
            "reason": "plain metric lines in the saved logs (no ANSI colour codes)",
        },
    ]
    if overrides.profiling and locations.trace_root is not None:
        traces = locations.trace_root / locations.run_dir.name / spec.model / config.id
        flags.append(
            {
                # torchtitan joins the dump folder with this path: an absolute one replaces it.
                "flag": f"--profiling.save_traces_folder={traces}",
                "reason": "each rank's profiler traces go where --trace-dir says (e.g. a node-local disk)",
            }
        )
    if overrides.dataset_path:
        flags.append(
            {
                "flag": f"--training.dataset_path={overrides.dataset_path}",
                "reason": "reads the same C4 data from a pre-staged local copy instead of streaming the hub",
            }
        )
    return flags


def _env(spec: MatrixSpec, config: ConfigSpec, locations: Locations, args: list[str], device: Device, nodes: int):
    cache = locations.cache_root / spec.model / config.id
    dataset = flag_value(args, "--training.dataset")
    dataset_path = flag_value(args, "--training.dataset_path")
    # A URL (e.g. a mirror of the hub) is read over the network: only a local copy means offline.
    local_data = bool(dataset_path and not is_url(dataset_path)) or dataset == "c4_test"
    entries = {
        "TORCHINDUCTOR_CACHE_DIR": (
            str(cache / "inductor"),
            "one compile cache per config, kept across runs: a precaution (inductor once reused a vanilla-TP "
            "graph in an async-TP run, torchtitan issue 1185; torch fixed it in PR 153672, before the pin)",
        ),
    }
    if device == "cuda":
        entries["PYTORCH_CUDA_ALLOC_CONF"] = ("expandable_segments:True", "set by torchtitan's own run_train.sh")
        entries["TRITON_CACHE_DIR"] = (str(cache / "triton"), "one Triton cache per config, kept across runs")
    else:
        entries["TMPDIR"] = (
            str(cache / "tmp"),
            "inductor's C++ backend puts precompiled headers under the temp dir, not TORCHINDUCTOR_CACHE_DIR",
        )
        if config.cpu.substitutions:
            entries[SUBSTITUTIONS_ENV] = (
                ",".join(config.cpu.substitutions),
                "the CPU substitutions this config needs (listed as deviations)",
            )
    if uses_nccl_network(device, nodes):
        entries["NCCL_DEBUG"] = (
            "INFO",
            "NCCL logs the network it chose at initialisation (NET/IB or NET/Socket, GPUDirect or not): the "
            "transport is evidence, like async TP; nothing more is logged once training runs",
        )
        entries["NCCL_DEBUG_SUBSYS"] = ("INIT,NET", "only NCCL's initialisation and network lines")
    if local_data:
        entries["HF_HUB_OFFLINE"] = ("1", "the data is local: never touch the hub")
    else:
        entries["HF_HUB_ETAG_TIMEOUT"] = ("60", "every rank streams C4 from the hub: tolerate slow metadata calls")
        entries["HF_HUB_DOWNLOAD_TIMEOUT"] = ("60", "every rank streams C4 from the hub: tolerate slow downloads")
    return {k: v for k, (v, _) in entries.items()}, {k: why for k, (_, why) in entries.items()}


def _fingerprint(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def plan_config(
    spec: MatrixSpec,
    config: ConfigSpec,
    overrides: Overrides,
    rendezvous: Rendezvous,
    locations: Locations,
    trainer: str | None = None,
    device: Device = "cuda",
) -> ConfigPlan:
    check_device(spec, device)
    trainer = trainer_for(device, trainer)
    topology = topology_for(spec, overrides, device)
    check_fidelity(spec, topology, overrides)
    check_memory(spec, topology, overrides)
    steps = overrides.steps or config.steps
    computed = _replace_flag(_published_args(spec, config), TP_DEGREE_FLAG, topology.tp)
    computed = _replace_flag(computed, STEPS_FLAG, steps)
    deviations, deviation_flags = _deviations(spec, config, topology, overrides, device)
    computed += deviation_flags
    bundle = _bundle_flags(spec, config, locations, overrides)
    torchtitan_args = ["--job.config_file", spec.train_config, *computed, *(b["flag"] for b in bundle)]
    env, env_reasons = _env(spec, config, locations, torchtitan_args, device, topology.nodes)
    rank_log_dir = locations.run_dir / spec.model / config.id / "ranks" / f"node{rendezvous.node_rank}"
    launcher_argv = [
        "torchrun",
        "--nnodes", str(topology.nodes),
        "--nproc-per-node", str(topology.gpus_per_node),
        "--node-rank", str(rendezvous.node_rank),
        "--master-addr", rendezvous.master_addr,
        "--master-port", str(rendezvous.master_port),
        "--rdzv-backend", "static",
        # As torchtitan's run_train.sh: the console shows this node's first rank, tagged [rankN].
        "--local-ranks-filter", "0", "--role", "rank", "--tee", "3",
        # Every local rank's output is also kept, for the rank that fails.
        "--log-dir", str(rank_log_dir),
        "-m", trainer,
        *torchtitan_args,
    ]  # fmt: skip
    plan = ConfigPlan(
        model=spec.model,
        config=config.id,
        tp_type=config.tp_type,
        quantization=config.quantization,
        steps=steps,
        topology=topology,
        torchtitan_args=torchtitan_args,
        bundle_flags=bundle,
        launcher_argv=launcher_argv,
        env=env,
        env_reasons=env_reasons,
        deviations=deviations,
        published_tps=config.published_tps,
        workdir=str(locations.torchtitan_dir),
        trainer=trainer,
        rank_log_dir=str(rank_log_dir),
        device=device,
        skip_reason=(config.cpu.skip or "") if device == "cpu" else "",
        make_dirs=[env["TMPDIR"]] if "TMPDIR" in env else [],
        accept_socket_transport=overrides.accept_socket_transport,
    )
    # What every node must agree on: what is computed, not where files go on each node.
    substitutions = env.get(SUBSTITUTIONS_ENV, "")
    plan.fingerprint = _fingerprint(
        [spec.model, config.id, topology.model_dump(), computed, trainer, device, substitutions]
    )
    return plan


def build_plan(
    specs: list[MatrixSpec],
    overrides: Overrides,
    rendezvous: Rendezvous,
    locations: Locations,
    *,
    trainer: str | None = None,
    device: Device = "cuda",
    only: tuple[str, ...] = (),
) -> list[ConfigPlan]:
    """Plans for every config of every spec, in spec order; `only` keeps the named config ids."""
    for config_id in only:
        if not any(c.id == config_id for s in specs for c in s.configs):
            known = ", ".join(sorted({c.id for s in specs for c in s.configs}))
            raise TitanbenchError(f"--only {config_id!r} matches no config (known: {known})")
    return [
        plan_config(spec, config, overrides, rendezvous, locations, trainer, device)
        for spec in specs
        for config in spec.configs
        if not only or config.id in only
    ]


def matrix_fingerprint(plans: list[ConfigPlan]) -> str:
    return _fingerprint([p.fingerprint for p in plans])


def torchtitan_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchtitan") is not None


_BOX = re.compile(r"[\u2500-\u257f]+")


def _tyro_message(output: str) -> str:
    """The first meaningful line of tyro's boxed error, without the box drawing."""
    lines = [_BOX.sub("", line).strip() for line in output.splitlines()]
    lines = [line for line in lines if line and not line.startswith("For full helptext")]
    meaningful = [line for line in lines if line not in ("Unrecognized options", "Parsing error")]
    return " ".join(meaningful[:2]) or "rejected"


def check_with_torchtitan(
    plans: list[ConfigPlan], torchtitan_dir: Path | None, *, required: bool = False, launching: bool = False
) -> list[str]:
    """torchtitan's own parser over every plan when it applies, else one note saying why not.

    A trainer other than torchtitan's skips the check (and the log evidence checks), unless the check
    is `required` (`plan --validate`), which then fails. Before a launch the check is never optional."""
    if not all(plan.checks_torchtitan for plan in plans):
        trainer = plans[0].trainer if plans else "?"
        if required:
            raise TitanbenchError(
                f"--validate: trainer {trainer} is not torchtitan's: its ConfigManager cannot vouch for it"
            )
        return [f"trainer {trainer}: torchtitan's config check and the log evidence checks are skipped"]
    if required or launching or torchtitan_available():
        return validate_with_torchtitan(plans, torchtitan_dir=torchtitan_dir, launching=launching)
    return ["torchtitan is not importable here: flags not checked by its ConfigManager (--validate)"]


def validate_with_torchtitan(
    plans: list[ConfigPlan], *, torchtitan_dir: Path | None = None, launching: bool = False
) -> list[str]:
    """Parse every config's torchtitan arguments with torchtitan's own ConfigManager.

    The train-config toml is included when it exists under `torchtitan_dir` (or the plan's workdir);
    the PyPI wheel ships no tomls, so without a checkout the flags are checked against the
    defaults. Returns one note per plan saying which; raises on the first rejected config.

    `launching` (before torchrun starts): the toml must exist and the tokenizer it names (after the
    flags, as torchtitan resolves it) must be there, or every config of a 256-GPU job would fail
    only after its processes started.
    """
    try:
        from torchtitan.config_manager import ConfigManager
    except ImportError as error:
        raise TitanbenchError(f"--validate needs torchtitan's config parser, which does not import: {error}") from None
    notes = []
    for plan in plans:
        root = Path(torchtitan_dir or plan.workdir)
        args = list(plan.torchtitan_args)
        toml = root / args[1]
        if toml.is_file():
            args[1] = str(toml)
            notes.append(f"{plan.model}/{plan.config}: parsed with {toml}")
        elif launching:
            raise TitanbenchError(
                f"{plan.model}/{plan.config}: no {plan.torchtitan_args[1]} under {root}: --torchtitan-dir "
                "must be a torchtitan checkout at the pin (the image's is $TITANBENCH_TORCHTITAN_DIR; "
                "the PyPI wheel has no train configs)"
            )
        else:
            args = args[2:]
            notes.append(f"{plan.model}/{plan.config}: flags parsed over torchtitan's defaults (no {toml})")
        captured = io.StringIO()
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                job_config = ConfigManager().parse_args(args)
        except SystemExit:
            raise TitanbenchError(
                f"{plan.model}/{plan.config}: torchtitan's ConfigManager rejects the flags: "
                f"{_tyro_message(captured.getvalue())}"
            ) from None
        except Exception as error:
            raise TitanbenchError(f"{plan.model}/{plan.config}: torchtitan's ConfigManager failed: {error}") from None
        finally:
            logging.disable(logging.NOTSET)
        tokenizer = root / job_config.model.tokenizer_path
        if launching and not tokenizer.is_file():
            raise TitanbenchError(
                f"{plan.model}/{plan.config}: no tokenizer at {tokenizer}: stage it first "
                "(`titanbench assets tokenizer --dest DIR` writes DIR/original/tokenizer.model)"
            )
    return notes

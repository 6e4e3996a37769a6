"""Options shared by commands: the matrix, overrides and guards (`plan`, `run`); the averaging (`parse`, `report`).

`RunOptions` is the matrix options as a value: the commands build it from click's arguments, the runner
and the plan read it, and run.json records its JSON form (`request`), which `--resume` reads back.
"""

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from titanbench import settings
from titanbench.errors import TitanbenchError
from titanbench.plan import (
    CPU_TRAINER,
    DATASETS,
    DEFAULT_GPU_MEM_GIB,
    DEFAULT_TRAINER,
    Dataset,
    Locations,
    Overrides,
)
from titanbench.redact import is_url, refuse_url_credentials
from titanbench.spec import DEVICES, MAX_GPUS_PER_NODE, MAX_NODES, MAX_STEPS, Device, MatrixSpec, describe_error
from titanbench.stats import DEFAULT_WARMUP_STEPS

MAX_GPU_MEM_GIB = 100_000
MAX_REPEAT = 100
# `--until-stable PCT`: an interval looser than +-50% of the mean says nothing about an average.
MAX_UNTIL_STABLE_PCT = 50.0


class FiniteFloat(click.FloatRange):
    """A float in [min, max]; nan and inf are refused (nan compares false with every bound)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


MATRIX_OPTIONS = [
    click.option(
        "--model",
        "model",
        default="all",
        show_default=True,
        envvar=settings.MODEL,
        show_envvar=True,
        help="Model id (llama3_8b), alias (8b), 'all' (the published matrices), smoke, or the path of a spec file.",
    ),
    click.option("--nodes", type=click.IntRange(1, MAX_NODES), help="Node count [published: 8 or 32]. Deviation."),
    click.option(
        "--gpus-per-node", type=click.IntRange(1, MAX_GPUS_PER_NODE), help="GPUs per node [published: 8]. Deviation."
    ),
    click.option(
        "--tp", type=click.IntRange(1, MAX_GPUS_PER_NODE), help="Tensor-parallel degree [published: 8]. Deviation."
    ),
    click.option("--steps", type=click.IntRange(1, MAX_STEPS), help="Training steps per config. Deviation."),
    click.option(
        "--no-profiling",
        "no_profiling",
        is_flag=True,
        help="Turn torchtitan's profiler off (published runs profile). Deviation.",
    ),
    click.option(
        "--dataset",
        type=click.Choice(DATASETS),
        help="c4 streams from the hub (published); c4_test is offline, small and looping. Deviation.",
    ),
    click.option(
        "--dataset-path",
        type=click.Path(file_okay=False),
        envvar=settings.DATASET_PATH,
        show_envvar=True,
        help="A pre-staged copy of C4 (see `titanbench assets c4`): same data, read locally.",
    ),
    click.option("--allow-fp32", is_flag=True, help="Allow FSDP degree 1, which trains in fp32 at the pin."),
    click.option(
        "--gpu-mem-gib",
        type=FiniteFloat(1, MAX_GPU_MEM_GIB),
        default=DEFAULT_GPU_MEM_GIB,
        show_default=True,
        help="GPU memory for the memory guard.",
    ),
    click.option("--force", is_flag=True, help="Skip the memory guard."),
    click.option(
        "--accept-socket-transport",
        is_flag=True,
        help="Count a multi-node config whose NCCL fell back to TCP sockets as ok, not unverified (for fabrics "
        "without RDMA; its TPS is not comparable with the published one, and the report shows the network).",
    ),
    click.option(
        "--device",
        type=click.Choice(["auto", *DEVICES]),
        default="auto",
        show_default=True,
        envvar=settings.DEVICE,
        show_envvar=True,
        help="cuda, or cpu for a matrix that supports it (the smoke); auto: cuda when torch sees a GPU, "
        "else cpu where the matrix supports it.",
    ),
    click.option(
        "--trainer",
        envvar=settings.TRAINER,
        show_envvar=True,
        help=f"Python module torchrun runs [default: {DEFAULT_TRAINER}; on CPU {CPU_TRAINER}, which runs it]. "
        "For any other module (a fork, a test trainer) the checks that need torchtitan are skipped; reports say so.",
    ),
    click.option(
        "--torchtitan-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=str(settings.DEFAULT_TORCHTITAN_DIR),
        show_default=True,
        envvar=settings.TORCHTITAN_DIR,
        show_envvar=True,
        help="The torchtitan checkout torchrun runs in (train-config tomls, tokenizer paths are relative to it).",
    ),
    click.option(
        "--results",
        type=click.Path(file_okay=False, path_type=Path),
        default=str(settings.DEFAULT_RESULTS),
        show_default=True,
        envvar=settings.RESULTS,
        show_envvar=True,
        help="Results root; a run lives in RESULTS/RUN_ID.",
    ),
    click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=settings.CACHE_DIR,
        show_envvar=True,
        help="Compile caches, one per config, kept across runs [default: RESULTS/cache].",
    ),
    click.option(
        "--trace-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=settings.TRACE_DIR,
        show_envvar=True,
        help="Where every rank writes its profiler traces (uncompressed JSON at each dump; large at scale, see "
        "docs/clusters.md), as TRACE_DIR/RUN_ID/MODEL/CONFIG, e.g. a node-local disk "
        "[default: the config's folder in the run, outputs/profile_traces].",
    ),
    click.option(
        "--repeat",
        type=click.IntRange(1, MAX_REPEAT),
        default=1,
        show_default=True,
        help="Run each config N times, interleaved across configs (trial 1 of every config, then trial 2, ...); "
        "the report combines the trials and its intervals reflect the spread between them. `plan`'s cost "
        "counts the N trials.",
    ),
    click.option(
        "--until-stable",
        metavar="PCT",
        type=FiniteFloat(0, MAX_UNTIL_STABLE_PCT, min_open=True),
        help="Stop a config once the 95% interval of its average TPS is within +-PCT% of the average (at least "
        "the warm-up and 8 averaged windows), e.g. 1; the report says how many GPU-hours that saved. Deviation.",
    ),
]


AVERAGING_OPTIONS = [
    click.option(
        "--warmup-steps",
        type=click.IntRange(min=0),
        default=DEFAULT_WARMUP_STEPS,
        show_default=True,
        envvar=settings.WARMUP_STEPS,
        show_envvar=True,
        help="Windows ending at or before this step are not averaged.",
    ),
    click.option(
        "--profile-freq",
        type=click.IntRange(min=1),
        envvar=settings.PROFILE_FREQ,
        show_envvar=True,
        help="Treat steps F, 2F, ... as profiler trace dumps besides those the log reports "
        "(the windows ending there and the next ones are not averaged).",
    ),
]


def _apply(options: list[Callable[..., Any]], command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(options):
        command = option(command)
    return command


def matrix_options(command: Callable[..., Any]) -> Callable[..., Any]:
    return _apply(MATRIX_OPTIONS, command)


def averaging_options(command: Callable[..., Any]) -> Callable[..., Any]:
    return _apply(AVERAGING_OPTIONS, command)


def torch_sees_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(requested: str, specs: list[MatrixSpec]) -> Device:
    """`--device auto`: cuda when torch sees a GPU; else cpu if every matrix runs there; else cuda."""
    if requested == "cpu":
        return "cpu"
    # Importing torch takes seconds: ask it only when the answer could be cpu.
    if requested == "cuda" or not all("cpu" in spec.devices for spec in specs) or torch_sees_gpu():
        return "cuda"
    return "cpu"


class RunOptions(BaseModel):
    """The matrix options of `plan` and `run` (named as click names them), plus `run`'s `--only`.

    Bounds are the command line's; a field a run.json lacks takes the command line's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "all"
    nodes: int | None = Field(default=None, ge=1, le=MAX_NODES)
    gpus_per_node: int | None = Field(default=None, ge=1, le=MAX_GPUS_PER_NODE)
    tp: int | None = Field(default=None, ge=1, le=MAX_GPUS_PER_NODE)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    no_profiling: bool = False
    dataset: Dataset | None = None
    dataset_path: str | None = None  # a local path, or a URL (no Path: it would mangle `//`)
    allow_fp32: bool = False
    gpu_mem_gib: float = Field(default=DEFAULT_GPU_MEM_GIB, ge=1, le=MAX_GPU_MEM_GIB, allow_inf_nan=False)
    force: bool = False
    accept_socket_transport: bool = False
    device: Literal["auto", "cuda", "cpu"] = "auto"
    trainer: str | None = None
    torchtitan_dir: Path = settings.DEFAULT_TORCHTITAN_DIR
    results: Path = settings.DEFAULT_RESULTS
    cache_dir: Path | None = None
    trace_dir: Path | None = None
    only: tuple[str, ...] = ()
    # Trials per config, interleaved across configs (`run --repeat`).
    repeat: int = Field(default=1, ge=1, le=MAX_REPEAT)
    # Stop a config once its interval is within +-PCT% of its average (`run --until-stable`); None: never.
    until_stable: float | None = Field(default=None, gt=0, le=MAX_UNTIL_STABLE_PCT, allow_inf_nan=False)

    @classmethod
    def from_click(cls, values: Mapping[str, Any]) -> "RunOptions":
        """From a command's keyword arguments (click has checked each one already)."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as error:
            raise TitanbenchError(describe_error(error)) from None

    def absolute(self) -> "RunOptions":
        """Paths made absolute (a spec file's too), so that run.json means the same from any directory."""
        paths = {
            name: value.resolve()
            for name in ("torchtitan_dir", "results", "cache_dir", "trace_dir")
            if isinstance(value := getattr(self, name), Path)
        }
        model = str(Path(self.model).resolve()) if Path(self.model).is_file() else self.model
        return self.model_copy(update={**paths, "model": model, "dataset_path": _dataset_location(self.dataset_path)})


def _dataset_location(value: str | None) -> str | None:
    """A local path made absolute; a URL kept as given (it is no path), and refused if it holds credentials."""
    if value is None:
        return None
    if is_url(value):
        return refuse_url_credentials("--dataset-path", value)
    return str(Path(value).resolve())


def overrides_from(options: RunOptions) -> Overrides:
    if options.dataset_path and options.dataset == "c4_test":
        raise TitanbenchError("--dataset-path is a copy of c4: it cannot be combined with --dataset c4_test")
    return Overrides(
        nodes=options.nodes,
        gpus_per_node=options.gpus_per_node,
        tp=options.tp,
        steps=options.steps,
        profiling=not options.no_profiling,
        dataset=options.dataset,
        dataset_path=_dataset_location(options.dataset_path),
        allow_fp32=options.allow_fp32,
        force=options.force,
        gpu_mem_gib=options.gpu_mem_gib,
        accept_socket_transport=options.accept_socket_transport,
        until_stable=options.until_stable,
    )


def locations_from(options: RunOptions, run_id: str) -> Locations:
    results = settings.results_root(given=options.results)
    cache = settings.cache_root(results, given=options.cache_dir)
    return Locations(
        run_dir=results / run_id,
        cache_root=cache,
        torchtitan_dir=options.torchtitan_dir.resolve(),
        trace_root=options.trace_dir.resolve() if options.trace_dir else None,
    )

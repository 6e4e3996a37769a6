"""Options shared by commands: the matrix, overrides and guards (`plan`, `run`); the averaging (`parse`, `report`)."""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from titanbench import settings
from titanbench.errors import TitanbenchError
from titanbench.plan import CPU_TRAINER, DATASETS, DEFAULT_GPU_MEM_GIB, DEFAULT_TRAINER, Locations, Overrides
from titanbench.redact import is_url, refuse_url_credentials
from titanbench.spec import DEVICES, MAX_GPUS_PER_NODE, MAX_NODES, MAX_STEPS, Device, MatrixSpec
from titanbench.stats import DEFAULT_WARMUP_STEPS


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
        type=FiniteFloat(1, 100_000),
        default=DEFAULT_GPU_MEM_GIB,
        show_default=True,
        help="GPU memory for the memory guard.",
    ),
    click.option("--force", is_flag=True, help="Skip the memory guard."),
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


def _dataset_location(value: str | Path | None) -> str | None:
    """A local path made absolute; a URL kept as given (it is no path), and refused if it holds credentials."""
    if value is None:
        return None
    if is_url(str(value)):
        return refuse_url_credentials("--dataset-path", str(value))
    return str(Path(value).resolve())


def overrides_from(options: dict[str, Any]) -> Overrides:
    if options["dataset_path"] and options["dataset"] == "c4_test":
        raise TitanbenchError("--dataset-path is a copy of c4: it cannot be combined with --dataset c4_test")
    return Overrides(
        nodes=options["nodes"],
        gpus_per_node=options["gpus_per_node"],
        tp=options["tp"],
        steps=options["steps"],
        profiling=not options["no_profiling"],
        dataset=options["dataset"],
        dataset_path=_dataset_location(options["dataset_path"]),
        allow_fp32=options["allow_fp32"],
        force=options["force"],
        gpu_mem_gib=options["gpu_mem_gib"],
    )


def locations_from(options: dict[str, Any], run_id: str) -> Locations:
    results = settings.results_root(given=Path(options["results"]))
    cache = settings.cache_root(results, given=Path(options["cache_dir"]) if options["cache_dir"] else None)
    return Locations(run_dir=results / run_id, cache_root=cache, torchtitan_dir=options["torchtitan_dir"].resolve())

"""`plan`'s cost estimate: expected wall time and GPU-hours of each config and of the matrix, from the
published TPS.

torchtitan's `tps` is tokens per second per GPU, the TP group sharing one batch, so a step takes
`local batch x seq len / (TP x tps)` seconds: about 27 s for 70B vanilla bf16 (16 x 8192 / (8 x
597.3)). With `--repeat N` every config runs N times: its wall time and GPU-hours are N times one run's.
Compile and start-up are not counted, and a topology other than the published one need not run at the
published per-GPU TPS: an estimate, labelled as one. With `--until-stable` a config may stop sooner: the
estimate is then what the configs cost at most.
"""

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from titanbench.plan import ConfigPlan
from titanbench.spec import SEQ_LEN_FLAGS, MatrixSpec, flag_value

LABEL = "estimate from the published TPS; compile and start-up aside"
BATCH_FLAGS = ("--training.local-batch-size", "--training.local_batch_size")


@dataclass(frozen=True)
class CostEstimate:
    model: str
    config: str
    published_tps: float
    local_batch_size: int
    seq_len: int
    seq_len_source: str
    tp: int
    gpus: int
    steps: int
    step_s: float
    wall_s: float
    gpu_hours: float
    # Runs of the config (`--repeat`): wall time and GPU-hours count all of them.
    repeat: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flag(args: list[str], names: tuple[str, ...]) -> str | None:
    values = [value for name in names if (value := flag_value(args, name)) is not None]
    return values[-1] if values else None


def _toml_training(path: Path) -> dict[str, Any]:
    """The [training] table of a train-config toml; empty when it is absent or unreadable here."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: no toml reader in the standard library
        return {}
    try:
        training = tomllib.loads(path.read_text()).get("training")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return training if isinstance(training, dict) else {}


def seq_len_of(spec: MatrixSpec, args: list[str], torchtitan_dir: Path) -> tuple[int | None, str]:
    """The sequence length a config trains at, and where that number comes from: its flags, else the
    train-config toml in the torchtitan checkout, else the spec's `seq_len` (stated as assumed)."""
    flagged = _flag(args, SEQ_LEN_FLAGS)
    if flagged is not None and flagged.isdigit():
        return int(flagged), "from the flags"
    toml = torchtitan_dir / spec.train_config
    value = _toml_training(toml).get("seq_len")
    if isinstance(value, int) and value > 0:
        return value, f"from {toml}"
    if spec.seq_len:
        return spec.seq_len, f"assumed from the spec: {toml} not found"
    return None, f"unknown: not in the flags, {toml} not found, no seq_len in the spec"


def estimate(plan: ConfigPlan, spec: MatrixSpec, torchtitan_dir: Path, repeat: int = 1) -> CostEstimate | None:
    """None where there is nothing to estimate from: no published TPS, a skipped config, no seq len.
    `repeat`: the runs of the config (`--repeat`)."""
    if not plan.published_tps or plan.skip_reason:
        return None
    seq_len, source = seq_len_of(spec, plan.torchtitan_args, torchtitan_dir)
    if seq_len is None:
        return None
    batch_flag = _flag(plan.torchtitan_args, BATCH_FLAGS)
    batch = int(batch_flag) if batch_flag and batch_flag.isdigit() else spec.heading.local_batch_size
    tp = plan.topology.tp
    gpus = plan.topology.world
    step_s = batch * seq_len / (tp * plan.published_tps)
    wall_s = plan.steps * step_s * repeat
    return CostEstimate(
        model=plan.model,
        config=plan.config,
        published_tps=plan.published_tps,
        local_batch_size=batch,
        seq_len=seq_len,
        seq_len_source=source,
        tp=tp,
        gpus=gpus,
        steps=plan.steps,
        step_s=step_s,
        wall_s=wall_s,
        gpu_hours=wall_s * gpus / 3600,
        repeat=repeat,
    )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def config_line(cost: CostEstimate | None, plan: ConfigPlan) -> str:
    if cost is None:
        why = "skipped" if plan.skip_reason else "no published TPS" if not plan.published_tps else "no seq len"
        return f"cost: no estimate ({why})"
    return (
        f"cost ({LABEL}): {cost.step_s:.1f} s/step [local batch {cost.local_batch_size} x seq len {cost.seq_len} "
        f"({cost.seq_len_source}) / (TP {cost.tp} x {cost.published_tps:g} tps)] x {cost.steps} steps"
        + (f" x {cost.repeat} runs (--repeat)" if cost.repeat > 1 else "")
        + " = "
        f"{duration(cost.wall_s)} wall, {cost.gpu_hours:,.0f} GPU-hours on {cost.gpus} GPUs"
        + ("; with the deviations above the published TPS may not hold" if plan.deviations else "")
    )


def matrix_summary(costs: list[CostEstimate], plans: list[ConfigPlan]) -> dict[str, Any]:
    """Per model and in all: wall time (the configs run one after another) and GPU-hours."""
    models = []
    for model in dict.fromkeys(p.model for p in plans):
        mine = [c for c in costs if c.model == model]
        missing = [p.config for p in plans if p.model == model and not any(c.config == p.config for c in mine)]
        models.append(
            {
                "model": model,
                "wall_s": sum(c.wall_s for c in mine),
                "gpu_hours": sum(c.gpu_hours for c in mine),
                "gpus": max((c.gpus for c in mine), default=None),
                "configs_estimated": len(mine),
                "configs_without_estimate": missing,
            }
        )
    return {
        "label": LABEL,
        "models": models,
        "wall_s": sum(m["wall_s"] for m in models),
        "gpu_hours": sum(m["gpu_hours"] for m in models),
    }


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for model in summary["models"]:
        if not model["configs_estimated"]:
            lines.append(f"cost of {model['model']}: no estimate (no published TPS)")
            continue
        line = (
            f"cost of {model['model']} ({summary['label']}): {duration(model['wall_s'])} wall, "
            f"{model['gpu_hours']:,.0f} GPU-hours on {model['gpus']} GPUs"
        )
        if model["configs_without_estimate"]:
            line += f" (not counted: {', '.join(model['configs_without_estimate'])})"
        lines.append(line)
    if len(summary["models"]) > 1:
        lines.append(
            f"cost in all: {duration(summary['wall_s'])} wall, {summary['gpu_hours']:,.0f} GPU-hours "
            "(the matrices one after another)"
        )
    return lines

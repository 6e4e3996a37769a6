"""Test helper: torchtitan console logs in the exact upstream format, for the report and stand-in trainer tests.

`metrics_message` is torchtitan's metrics line (fields, widths and separators as upstream prints them),
`titan_line` puts any message behind torchtitan's logger prefix.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

START = datetime(2025, 6, 13, 10, 0, 0)
ASYNC_TP_EVIDENCE = "Applied Async Tensor Parallelism to the model"
FLOAT8_EVIDENCE = {
    "tensorwise": "Float8 tensorwise scaled training active",
    "rowwise": "Float8 training active with recipe rowwise",
}


@dataclass(frozen=True)
class Metrics:
    step: int
    tps: int
    loss: float = 8.5
    memory_gib: float = 47.79
    memory_pct: float = 50.30
    tflops: float = 380.35
    mfu: float = 38.46


def metrics_message(m: Metrics) -> str:
    return (
        f"step: {m.step:2}  loss: {m.loss:7.4f}  memory: {m.memory_gib:5.2f}GiB({m.memory_pct:.2f}%)  "
        f"tps: {m.tps:,}  tflops: {m.tflops:,.2f}  mfu: {m.mfu:.2f}%"
    )


def titan_line(message: str, at: datetime = START) -> str:
    return f"[titan] {at:%Y-%m-%d %H:%M:%S},{at.microsecond // 1000:03d} - root - INFO - {message}"


def integer_tps(average: float, count: int) -> list[int]:
    """`count` integer tps values (torchtitan logs rounded integers) whose mean is the closest to `average`."""
    if count == 0:
        return []
    base, extra = divmod(round(Fraction(str(average)) * count), count)
    return [base + 1] * extra + [base] * (count - extra)


def run_log(
    average_tps: float,
    *,
    steps: int,
    log_freq: int = 10,
    profile_freq: int = 100,
    warmup_steps: int = 10,
    async_tp: bool = False,
    float8_recipe: str | None = None,
    distorted_tps: int = 1,
) -> str:
    """A console log of one run whose averaging-method windows average to `average_tps`
    (as closely as integers allow: within 1/(2n) for n windows).

    Windows the method must drop (warm-up, the trace-dump window and the one after it) carry
    `distorted_tps`, so a report that counts any of them is visibly wrong.
    """
    logged = [1, *range(log_freq, steps + 1, log_freq)]
    dumps = set(range(profile_freq, steps + 1, profile_freq))
    dropped = {s for s in logged if s <= warmup_steps} | dumps | {s + log_freq for s in dumps}
    used = [s for s in logged if s not in dropped]
    values = dict(zip(used, integer_tps(average_tps, len(used)), strict=True))
    lines = [titan_line("Starting job: test run")]
    if async_tp:
        lines.append(titan_line(ASYNC_TP_EVIDENCE))
    if float8_recipe:
        lines.append(titan_line(FLOAT8_EVIDENCE[float8_recipe]))
    for index, step in enumerate(logged):
        at = START + timedelta(seconds=index)
        tps = values.get(step, distorted_tps)
        lines.append(titan_line(metrics_message(Metrics(step=step, tps=tps, memory_gib=40 + index / 10)), at))
        if step in dumps:
            lines.append(titan_line(f"Dumping profiler traces at step {step}", at))
    lines.append(titan_line("Training completed"))
    return "\n".join(lines) + "\n"

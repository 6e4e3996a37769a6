"""The averaging method: which metric windows count, and their mean, median and spread.
Pure Python: no torch, matplotlib or docker."""

import bisect
import math
import statistics
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from titanbench import intervals
from titanbench.errors import TitanbenchError
from titanbench.logparse import Evidence, LogScan, Window, scan_file, scan_text

DEFAULT_WARMUP_STEPS = 10

METHOD = (
    "Average TPS is the arithmetic mean of torchtitan's per-GPU tokens/s (`tps`) over its logged windows "
    "(each metrics line covers the steps since the previous one; when several ranks print the same step, "
    f"the first line counts). Dropped: every window ending at or before step {DEFAULT_WARMUP_STEPS} "
    "(`--warmup-steps`; step 1 includes model initialisation and compilation); the window ending at each "
    "step where the log says a profiler trace was dumped, and the next logged window, both slowed by the "
    "profiler (`--profile-freq F` also treats steps F, 2F, ... as dumps; by default only the log's own "
    "`Dumping profiler traces` lines count); and any window without a tps value. The median and the sample "
    "standard deviation of the same windows are reported alongside."
)


@dataclass(frozen=True)
class Summary:
    windows: list[Window]
    used_steps: list[int]
    avg_tps: float | None
    median_tps: float | None
    stdev_tps: float | None
    n: int
    # step -> why that window is not averaged; absent for used windows.
    dropped: dict[int, str] = field(default_factory=dict)
    evidence: Evidence | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": [_window_dict(window) for window in self.windows],
            "used_steps": list(self.used_steps),
            "avg_tps": self.avg_tps,
            "median_tps": self.median_tps,
            "stdev_tps": self.stdev_tps,
            "n": self.n,
        }


def _finite(value: float | None) -> float | None:
    # JSON has no NaN: a nan loss is reported as null.
    return value if value is not None and math.isfinite(value) else None


def _window_dict(window: Window) -> dict[str, Any]:
    return {
        "step": window.step,
        "tps": window.tps,
        "loss": _finite(window.loss),
        "memory_gib": window.memory_gib,
        "memory_pct": window.memory_pct,
        "tflops": window.tflops,
        "mfu": window.mfu,
        "grad_norm": _finite(window.grad_norm),
    }


def drop_reasons(
    windows: Sequence[Window],
    *,
    warmup_steps: int = DEFAULT_WARMUP_STEPS,
    profile_freq: int | None = None,
    dump_steps: Iterable[int] = (),
) -> dict[int, str]:
    """step -> reason, for every window the method leaves out. `windows` must be sorted by step."""
    steps = [window.step for window in windows]
    dumps = set(dump_steps)
    if profile_freq and steps:
        dumps.update(range(profile_freq, steps[-1] + 1, profile_freq))
    profiled: dict[int, str] = {}
    for dump in sorted(dumps):
        # The window holding the dump step, then the next one (it pays for writing the trace);
        # ascending, so that "dumped here" wins over "after an earlier dump".
        index = bisect.bisect_left(steps, dump)
        if index < len(steps):
            profiled[steps[index]] = f"profiler: trace dumped at step {dump}"
        if index + 1 < len(steps):
            profiled[steps[index + 1]] = f"profiler: first window after the trace dump at step {dump}"
    reasons = {}
    for window in windows:
        if window.step <= warmup_steps:
            reasons[window.step] = f"warm-up (step <= {warmup_steps})"
        elif window.step in profiled:
            reasons[window.step] = profiled[window.step]
        elif window.tps is None:
            reasons[window.step] = "no tps in this line"
    return reasons


def summarize(
    windows: Sequence[Window],
    *,
    warmup_steps: int = DEFAULT_WARMUP_STEPS,
    profile_freq: int | None = None,
    dump_steps: Iterable[int] = (),
    log_evidence: Evidence | None = None,
) -> Summary:
    ordered = sorted(windows, key=lambda window: window.step)
    reasons = drop_reasons(ordered, warmup_steps=warmup_steps, profile_freq=profile_freq, dump_steps=dump_steps)
    used = [window for window in ordered if window.step not in reasons]
    tps = [window.tps for window in used if window.tps is not None]
    return Summary(
        windows=ordered,
        used_steps=[window.step for window in used],
        avg_tps=statistics.fmean(tps) if tps else None,
        median_tps=statistics.median(tps) if tps else None,
        stdev_tps=statistics.stdev(tps) if len(tps) >= 2 else None,
        n=len(tps),
        dropped=reasons,
        evidence=log_evidence,
    )


def window_estimate(summary: Summary) -> intervals.Estimate | None:
    """The batch-means estimate of one run's average TPS, over its used windows (None under the minimum)."""
    used = set(summary.used_steps)
    return intervals.batch_means([w.tps for w in summary.windows if w.step in used and w.tps is not None])


def _summarize_scan(scan: LogScan, source: str, warmup_steps: int, profile_freq: int | None) -> Summary:
    windows = scan.windows()
    if not windows:
        raise TitanbenchError(
            f"{source}: no torchtitan metric lines (expected lines like 'step: 10  loss: ...  tps: ...')"
        )
    return summarize(
        windows,
        warmup_steps=warmup_steps,
        profile_freq=profile_freq,
        dump_steps=scan.dumps,
        log_evidence=scan.evidence(),
    )


def summarize_log(text: str, *, warmup_steps: int = DEFAULT_WARMUP_STEPS, profile_freq: int | None = None) -> Summary:
    return _summarize_scan(scan_text(text), "log", warmup_steps, profile_freq)


def summarize_file(
    path: str | Path, *, warmup_steps: int = DEFAULT_WARMUP_STEPS, profile_freq: int | None = None
) -> Summary:
    """Streams the log (memory grows with its metrics lines, not its size); a crashed rank's torn
    multi-byte character is replaced, never hiding the metric lines."""
    path = Path(path)
    try:
        scan = scan_file(path)
    except FileNotFoundError:
        raise TitanbenchError(f"{path}: no such log file") from None
    except IsADirectoryError:
        raise TitanbenchError(f"{path}: is a directory, not a log file") from None
    except OSError as error:
        raise TitanbenchError(f"{path}: cannot read: {error.strerror or error}") from None
    if not scan.has_text:
        raise TitanbenchError(f"{path}: the log file is empty")
    return _summarize_scan(scan, str(path), warmup_steps, profile_freq)


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:{spec}}{suffix}"


def render_text(summary: Summary) -> str:
    """The windows as a table (each marked used, or why not), then the averages and the method."""
    header = ("step", "tps", "loss", "memory", "tflops", "mfu", "used")
    rows = [header]
    for window in summary.windows:
        memory = _cell(window.memory_gib, ".2f", " GiB")
        if window.memory_pct is not None:
            memory += f" ({window.memory_pct:.2f}%)"
        rows.append(
            (
                str(window.step),
                _cell(window.tps, ",.0f"),
                _cell(window.loss, ".4f"),
                memory,
                _cell(window.tflops, ",.2f"),
                _cell(window.mfu, ".2f", "%"),
                "yes" if window.step not in summary.dropped else f"no: {summary.dropped[window.step]}",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column in (0, len(header) - 1) else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines += [
        "",
        f"windows used: {summary.n} of {len(summary.windows)}"
        + (f" (steps {', '.join(map(str, summary.used_steps))})" if summary.used_steps else ""),
        f"average tps:  {_cell(summary.avg_tps, ',.1f')}",
        f"median tps:   {_cell(summary.median_tps, ',.1f')}",
        f"stdev tps:    {_cell(summary.stdev_tps, ',.1f')}",
    ]
    if summary.evidence is not None:
        lines.append(
            f"log evidence: async TP {'applied' if summary.evidence.async_tp else 'not seen'}, "
            f"float8 {summary.evidence.float8_recipe or 'not seen'}"
        )
    lines += ["", textwrap.fill(f"Method: {METHOD}", width=100)]
    return "\n".join(lines) + "\n"

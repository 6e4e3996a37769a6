"""`run --until-stable PCT`: stop a config once its average TPS is known to +-PCT%.

The rule is the report's own: node 0's driver feeds the console log to a `LogScan` as it comes and, at
each new metrics window, averages the windows so far by the default method (`stats.summarize`: warm-up
and profiler-dump windows dropped) and takes their batch-means 95% interval (`stats.window_estimate`).
Once that interval exists (at least `intervals.MIN_WINDOWS` used windows) and its half-width is at most
PCT% of the average, before the planned step, the config is stopped. A profiler dump is announced
after its window's metrics line, so that window counts until the next one is logged, as in the
report of a log that ends there.

The seconds per step are measured from when the metrics lines reach the driver, over the used
windows (compile and start-up are behind them), for the report's estimate of the GPU-hours saved.
"""

import time
from dataclasses import asdict, dataclass

from titanbench.logparse import LogScan
from titanbench.stats import summarize, window_estimate


@dataclass(frozen=True)
class StoppedEarly:
    """Where and why a config was stopped early; what result.json records as `stopped_early`."""

    at_step: int  # the step whose window brought the interval within the bound
    planned_steps: int
    half_width_pct: float  # the interval's half-width then, in % of the average
    step_s: float  # measured seconds per step, over the used windows
    gpus: int  # processes the config ran on (GPUs; CPU processes on CPU)

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


def half_width_pct(scan: LogScan) -> float | None:
    """The 95% interval's half-width in % of the average, by the default averaging (None: no interval yet)."""
    estimate = window_estimate(summarize(scan.windows(), dump_steps=scan.dumps))
    if estimate is None or estimate.mean <= 0:
        return None
    low, high = estimate.interval()
    return (high - low) / 2 / estimate.mean * 100


class UntilStable:
    """Watches one config's console log, line by line (`launch`'s watch): `stop` says why to stop it, once
    the rule holds."""

    def __init__(self, pct: float, planned_steps: int, gpus: int) -> None:
        self.pct = pct
        self.planned_steps = planned_steps
        self.gpus = gpus
        self.scan = LogScan()
        self.arrived: dict[int, float] = {}  # step -> when its metrics line reached the driver
        self.decision: StoppedEarly | None = None

    def feed(self, line: str) -> None:
        if self.decision is not None:
            return
        self.scan.add(line)
        # Steps are only ever added to the scan: a new window is a longer scan.
        if len(self.scan.kept) == len(self.arrived):
            return
        now = time.monotonic()
        self.arrived.update({step: now for step in self.scan.kept if step not in self.arrived})
        step = max(self.scan.kept)
        if step >= self.planned_steps:
            return
        width = half_width_pct(self.scan)
        if width is not None and width <= self.pct:
            self.decision = StoppedEarly(
                at_step=step,
                planned_steps=self.planned_steps,
                half_width_pct=round(width, 4),
                step_s=self._step_seconds(step),
                gpus=self.gpus,
            )

    def _step_seconds(self, step: int) -> float:
        """From the first used window's line to `step`'s (at least 8 used windows: two distinct steps)."""
        first = summarize(self.scan.windows(), dump_steps=self.scan.dumps).used_steps[0]
        return (self.arrived[step] - self.arrived[first]) / (step - first)

    @property
    def stop(self) -> str:
        decision = self.decision
        if decision is None:
            return ""
        return (
            f"stopped at step {decision.at_step} of {decision.planned_steps}: the 95% interval is within "
            f"+-{decision.half_width_pct:.2f}% of the average (--until-stable {self.pct:g})"
        )

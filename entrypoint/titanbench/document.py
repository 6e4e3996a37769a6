"""The report's document: what `report.collect` builds from a run directory and `results.json` holds.

The markdown, the charts and `titanbench compare` read it through these types; `results.json` is its
JSON form (a public contract: keys and values stay as they are), and validating that JSON gives the
document back, so a report can be re-rendered later.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from titanbench import intervals
from titanbench.spec import Topology

# A config's status when the run directory has no folder for it, or when its numbers cannot be read.
MISSING = "missing"
NO_DATA = "no data"
# Where a model's topology comes from: the plans in run.json, else the spec's published one.
TopologySource = Literal["run.json", "published"]


class _Entry(BaseModel):
    # results.json is a public document: exactly these keys, in this order.
    model_config = ConfigDict(extra="forbid")


class EvidenceEntry(_Entry):
    """What the log itself says the config ran (`logparse.Evidence`)."""

    async_tp: bool
    float8_recipe: str | None


class WindowEntry(_Entry):
    """One logged metrics window (`stats.Summary.to_dict()`'s `windows`)."""

    step: int
    tps: float | None
    loss: float | None
    memory_gib: float | None
    memory_pct: float | None
    tflops: float | None
    mfu: float | None
    grad_norm: float | None


class SummaryEntry(_Entry):
    """A config's averaging (`stats.Summary.to_dict()`)."""

    windows: list[WindowEntry]
    used_steps: list[int]
    avg_tps: float | None
    median_tps: float | None
    stdev_tps: float | None
    n: int


def _absent(value: Any) -> bool:
    return value is None


# Keys that only some runs have (configs run several times, `run --repeat`; runs stopped early, `run
# --until-stable`): left out otherwise, so that the document of a run without them keeps its keys.
def _when_set() -> Any:
    return Field(default=None, exclude_if=_absent)


class IntervalEntry(_Entry):
    """The estimate behind a 95% interval (`intervals.Estimate.to_dict()`): batch means over one run's
    windows, or, for a config run several times, over its trials' averages (`trials` set, no batches)."""

    method: str
    se: float
    # Whole batches (or trials) minus one: kept an integer, as the estimate has it.
    df: int | float
    batches: int | None = _when_set()
    batch_size: int | None = _when_set()
    trials: int | None = _when_set()


class StoppedEarlyEntry(_Entry):
    """A run `run --until-stable` stopped once its 95% interval was within the bound, and what that saved."""

    at_step: int
    planned_steps: int
    half_width_pct: float
    # The last step its log reached (the trainer may log a window more while it stops).
    last_step: int
    step_s: float | None
    gpus: int | None
    # An estimate (see UntilStableEntry.method); None where the run recorded no step time or GPU count.
    gpu_hours_saved: float | None


class UntilStableEntry(_Entry):
    """The run's `--until-stable`: its bound, the runs it stopped, and the GPU-hours saved in all (an estimate)."""

    pct: float | None
    runs_stopped: int
    gpu_hours_saved: float
    method: str


class TrialEntry(_Entry):
    """One trial of a config run several times: its own average, by the same method, and its verdict."""

    trial: int
    status: str
    detail: str | None
    log: str
    measured_tps: float | None
    # The trial's own batch-means interval (None under its minimum of windows).
    measured_tps_ci95: list[float] | None
    windows_used: int
    stdev_tps: float | None
    started_at: str | None
    stopped_early: StoppedEarlyEntry | None = _when_set()


class ConfigEntry(_Entry):
    """One config of a model: its measured numbers next to the published one, and why any is missing."""

    config: str
    tp_type: str | None = None
    quantization: str | None = None
    status: str = MISSING
    detail: str | None = None
    measured_tps: float | None = None
    # 95% interval of the average (titanbench.intervals); `interval` holds its batch-means estimate,
    # `interval_note` why there is none.
    measured_tps_ci95: list[float] | None = None
    interval: IntervalEntry | None = None
    interval_note: str | None = None
    published_tps: float | None = None
    ratio: float | None = None
    speedup: float | None = None
    speedup_unverified: bool | None = None
    # Async configs only: 95% interval of the speedup, and whether it holds 1.00 (no significant speedup).
    speedup_ci95: list[float] | None = None
    speedup_interval_holds_1: bool | None = None
    mfu: float | None = None
    peak_memory_gib: float | None = None
    planned: bool = False
    deviations: list[str] | None = None
    trainer: str | None = None
    evidence_checked: bool | None = None
    evidence: EvidenceEntry | None = None
    # Multi-node GPU configs: the network NCCL used, per node rank whose log node 0 read (result.json).
    transport: dict[str, str] | None = None
    summary: SummaryEntry | None = None
    # Configs run several times only: each trial, and the standard deviation between the trials' averages.
    # `summary` is then the last counted trial's (the step chart draws it).
    trials: list[TrialEntry] | None = _when_set()
    trials_stdev_tps: float | None = _when_set()
    # Stopped by `run --until-stable` (a config run once), and the GPU-hours saved over its runs (an estimate).
    stopped_early: StoppedEarlyEntry | None = _when_set()
    gpu_hours_saved: float | None = _when_set()

    def estimate(self) -> intervals.Estimate | None:
        """The estimate recorded for this config (None without an interval)."""
        if self.measured_tps is None or self.interval is None:
            return None
        if self.interval.trials is not None:
            trials = self.interval.trials
            return intervals.Estimate(
                mean=self.measured_tps,
                se=self.interval.se,
                df=self.interval.df,
                n=trials,
                batches=trials,
                batch_size=1,
                method=intervals.TRIAL_MEANS,
            )
        return intervals.Estimate(
            mean=self.measured_tps,
            se=self.interval.se,
            df=self.interval.df,
            n=self.summary.n if self.summary else 0,
            batches=self.interval.batches or 0,
            batch_size=self.interval.batch_size or 0,
        )


class EnvironmentRow(_Entry):
    """This run's hardware next to the published; `differs` is None where it cannot tell."""

    item: str
    measured: str | int | float | None
    published: str | int | float | None
    differs: bool | None


class ModelEntry(_Entry):
    model: str
    known: bool
    heading: str
    topology: Topology | None
    topology_source: TopologySource | None
    deviations_recorded: bool
    environment: list[EnvironmentRow]
    configs: list[ConfigEntry]


class Averaging(_Entry):
    warmup_steps: int
    profile_freq: int | None
    method: str
    interval_method: str


class PinCheck(_Entry):
    """Installed vs pinned, for one component of the stack."""

    component: str
    pinned: str | None
    installed: str | None
    match: bool | None


class ReportDocument(_Entry):
    """What `results.json` holds."""

    run_dir: str
    published_source: str
    averaging: Averaging
    models: list[ModelEntry]
    environment_recorded: bool
    build_mode: str | None
    pins: dict[str, str]
    pins_source: str
    pin_checks: list[PinCheck]
    until_stable: UntilStableEntry | None = _when_set()

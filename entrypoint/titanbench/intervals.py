"""95% intervals for an average TPS and for a ratio of two averages (a speedup, run B over run A).

Successive metric windows of one run are not independent (clocks and temperature drift, the data
changes), so the standard error of their mean is estimated by non-overlapping batch means: the used
windows, in step order, are cut into `b = max(4, floor(sqrt(n)))` consecutive batches of `m = n // b`
windows (the first `n - b*m` windows, those nearest the warm-up, are left out of the batches only);
the variance of the mean is `m * var(batch means) / n`, and the interval is Student-t with `b - 1`
degrees of freedom around the mean of all used windows. Under 8 windows (4 batches of 2) there is
no interval: fewer batches cannot tell noise from drift, and a number would be invented precision.

A config run several times (`run --repeat N`) is averaged over its trials instead: the mean of the
N trial averages, its standard error the sample standard deviation of the trial averages over
sqrt(N), Student-t with N - 1 degrees of freedom. That interval reflects run-to-run variation
(placement, clocks, the cluster's other jobs), which windows within one run cannot show. With one
counted trial the batch-means interval of that trial stands.

A ratio of two averages from independent runs takes the delta method on the log scale:
`var(log r) = (se_a / mean_a)^2 + (se_b / mean_b)^2`, Student-t with Welch-Satterthwaite degrees of
freedom, `r * exp(+-t * sd)`. Deterministic: no resampling, so a report re-renders identically.

Why not a block bootstrap: with the 8-16 windows a published run logs, percentile block-bootstrap
intervals are far too narrow (measured in the README). The coverage of this method on simulated
AR(1) series is checked in tests/test_intervals.py.

Pure Python apart from the Student-t quantile, which comes from scipy and is imported only here,
when an interval is computed (`titanbench parse` and `--help` never load it).
"""

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95
MIN_BATCHES = 4
MIN_BATCH_SIZE = 2
MIN_WINDOWS = MIN_BATCHES * MIN_BATCH_SIZE

METHOD = (
    "95% intervals: successive windows of one run are autocorrelated (drift), so the standard error of "
    "the average is estimated by non-overlapping batch means: the n used windows, in step order, form "
    "b = max(4, floor(sqrt(n))) consecutive batches of m = n // b windows (the first n - b*m windows "
    "are left out of the batches only), the variance of the average is m x var(batch means) / n, and "
    "the interval is Student-t with b - 1 degrees of freedom around the average of all used windows. "
    f"Configs with fewer than {MIN_WINDOWS} used windows get no interval. A speedup (async over the "
    "vanilla config of the same quantization, two independent runs) gets the delta method on the log "
    "scale: var(log speedup) = (se_async / avg_async)^2 + (se_vanilla / avg_vanilla)^2, Student-t with "
    "Welch-Satterthwaite degrees of freedom; a speedup whose interval holds 1.00 is flagged. "
    "Deterministic (no resampling)."
)
TRIAL_MEANS = "trial means"
TRIALS_METHOD = (
    "Configs run several times (`run --repeat N`): the average is the mean of the trial averages (each "
    "trial averaged as above), the spread is the sample standard deviation between the trial averages, and "
    "the 95% interval is Student-t with N - 1 degrees of freedom, mean +- t x stdev / sqrt(N), from the trial "
    "averages only (it reflects the variation between runs, not only between windows); a config with a single "
    "counted trial keeps that trial's batch-means interval. Speedups and `compare` take the same delta "
    "method with these trial-level standard errors."
)


@dataclass(frozen=True)
class Estimate:
    """An average with its batch-means standard error; `df` is the Student-t degrees of freedom."""

    mean: float
    se: float
    df: float
    n: int
    batches: int
    batch_size: int
    method: str = "batch means"

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        half = t_quantile(self.df, 0.5 + level / 2) * self.se if self.se else 0.0
        return self.mean - half, self.mean + half

    def to_dict(self) -> dict[str, str | float | int]:
        if self.method == TRIAL_MEANS:
            return {"method": self.method, "se": self.se, "df": self.df, "trials": self.n}
        return {
            "method": "batch means",
            "se": self.se,
            "df": self.df,
            "batches": self.batches,
            "batch_size": self.batch_size,
        }


def t_quantile(df: float, p: float) -> float:
    """The Student-t quantile (scipy's, imported here only)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def no_interval_reason(n: int) -> str | None:
    """Why `n` used windows get no interval (None when they do)."""
    if n >= MIN_WINDOWS:
        return None
    return (
        f"no 95% interval: {n} window{'s' if n != 1 else ''} used, at least {MIN_WINDOWS} needed "
        f"({MIN_BATCHES} batches of {MIN_BATCH_SIZE})"
    )


def batch_means(values: Sequence[float]) -> Estimate | None:
    """The batch-means estimate of the mean of `values` (in step order); None under MIN_WINDOWS."""
    n = len(values)
    if n < MIN_WINDOWS:
        return None
    batches = max(MIN_BATCHES, math.isqrt(n))
    size = n // batches
    tail = values[n - batches * size :]
    means = [statistics.fmean(tail[i * size : (i + 1) * size]) for i in range(batches)]
    se = math.sqrt(size * statistics.variance(means) / n)
    return Estimate(mean=statistics.fmean(values), se=se, df=batches - 1, n=n, batches=batches, batch_size=size)


def trial_means(means: Sequence[float]) -> Estimate | None:
    """The estimate of a config's average over its trials' averages (t, N - 1 df); None under 2 trials."""
    n = len(means)
    if n < 2:
        return None
    se = statistics.stdev(means) / math.sqrt(n)
    return Estimate(mean=statistics.fmean(means), se=se, df=n - 1, n=n, batches=n, batch_size=1, method=TRIAL_MEANS)


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    estimate = batch_means(values)
    return estimate.interval(level) if estimate else None


def ratio_interval(numerator: Estimate, denominator: Estimate, level: float = LEVEL) -> tuple[float, float]:
    """Interval of numerator.mean / denominator.mean, the two from independent runs (log-scale delta method)."""
    ratio = numerator.mean / denominator.mean
    rel = [(numerator.se / numerator.mean, numerator.df), (denominator.se / denominator.mean, denominator.df)]
    variance = sum(r * r for r, _ in rel)
    if variance == 0:
        return ratio, ratio
    # Welch-Satterthwaite; a term with zero variance adds nothing to either sum.
    df = variance**2 / sum(r**4 / d for r, d in rel if r)
    half = t_quantile(df, 0.5 + level / 2) * math.sqrt(variance)
    return ratio * math.exp(-half), ratio * math.exp(half)


def holds(interval: Sequence[float] | None, value: float) -> bool:
    return interval is not None and interval[0] <= value <= interval[1]

"""The 95% intervals: their coverage on simulated autocorrelated runs, and their edge cases.

The simulated runs are AR(1) series around a known mean, as many windows as a published run logs
(8 for 100 steps, 16 for 200 steps at log_freq 10). The correlation 0.3 is above every lag-1
autocorrelation of the real torchtitan logs in tests/data/logs (-0.13 to 0.26); a naive standard
error fails at it (checked below), so the scenario does test the handling of autocorrelation.
"""

import math
import statistics

import numpy as np
import pytest

from titanbench import intervals
from titanbench.intervals import MIN_WINDOWS, batch_means, mean_interval, no_interval_reason, ratio_interval

SIMULATIONS = 1000
TARGET = (0.92, 0.98)  # 95% +- 3%


def ar1_runs(rng: np.random.Generator, count: int, n: int, phi: float, mean: float, sd: float) -> np.ndarray:
    """`count` stationary AR(1) series of `n` windows with the given mean and marginal sd."""
    noise = np.empty((count, n))
    noise[:, 0] = rng.standard_normal(count)
    for t in range(1, n):
        noise[:, t] = phi * noise[:, t - 1] + math.sqrt(1 - phi**2) * rng.standard_normal(count)
    return mean + sd * noise


def coverage(runs: np.ndarray, mean: float) -> float:
    hits = 0
    for run in runs:
        interval = mean_interval(run.tolist())
        assert interval is not None
        hits += interval[0] <= mean <= interval[1]
    return hits / len(runs)


@pytest.mark.parametrize(("n", "phi"), [(16, 0.3), (8, 0.2), (16, 0.0)])
def test_mean_interval_covers_the_true_mean_95_percent(n, phi):
    runs = ar1_runs(np.random.default_rng(20250613 + n), SIMULATIONS, n, phi, mean=597.3, sd=6.0)
    assert TARGET[0] <= coverage(runs, 597.3) <= TARGET[1]


def test_a_naive_standard_error_fails_the_same_scenario():
    """The coverage test above would catch a method that ignores the autocorrelation."""
    runs = ar1_runs(np.random.default_rng(20250614), SIMULATIONS, 16, 0.3, mean=597.3, sd=6.0)
    quantile = intervals.t_quantile(15, 0.975)
    hits = 0
    for run in runs:
        half = quantile * statistics.stdev(run.tolist()) / math.sqrt(len(run))
        hits += abs(statistics.fmean(run.tolist()) - 597.3) <= half
    assert hits / SIMULATIONS < TARGET[0]


@pytest.mark.parametrize("n", [8, 16])
def test_speedup_interval_covers_the_true_ratio_95_percent(n):
    rng = np.random.default_rng(20250615 + n)
    vanilla = ar1_runs(rng, SIMULATIONS, n, 0.3, mean=597.3, sd=6.0)
    async_tp = ar1_runs(rng, SIMULATIONS, n, 0.3, mean=652.4, sd=6.5)
    truth = 652.4 / 597.3
    hits = 0
    for a, b in zip(vanilla, async_tp, strict=True):
        low, high = ratio_interval(batch_means(b.tolist()), batch_means(a.tolist()))
        hits += low <= truth <= high
    assert TARGET[0] <= hits / SIMULATIONS <= TARGET[1]


def test_too_few_windows_get_no_interval_and_a_reason():
    values = [600.0 + i for i in range(MIN_WINDOWS - 1)]
    assert batch_means(values) is None and mean_interval(values) is None
    assert no_interval_reason(2) == "no 95% interval: 2 windows used, at least 8 needed (4 batches of 2)"
    assert no_interval_reason(MIN_WINDOWS) is None
    assert mean_interval([600.0 + i for i in range(MIN_WINDOWS)]) is not None


def test_batches_and_the_interval_by_hand():
    # 9 windows: 4 batches of 2 from the last 8; the mean is still that of all 9.
    values = [100.0, 1.0, 3.0, 5.0, 7.0, 2.0, 4.0, 6.0, 8.0]
    estimate = batch_means(values)
    assert (estimate.batches, estimate.batch_size, estimate.df, estimate.n) == (4, 2, 3, 9)
    assert estimate.mean == pytest.approx(statistics.fmean(values))
    batch = [2.0, 6.0, 3.0, 7.0]
    se = math.sqrt(2 * statistics.variance(batch) / 9)
    assert estimate.se == pytest.approx(se)
    low, high = estimate.interval()
    assert intervals.t_quantile(3, 0.975) == pytest.approx(3.182446, abs=1e-6)
    assert (low, high) == pytest.approx((estimate.mean - 3.182446 * se, estimate.mean + 3.182446 * se))


def test_more_windows_more_batches():
    estimate = batch_means([float(i % 7) for i in range(100)])
    assert (estimate.batches, estimate.batch_size, estimate.df) == (10, 10, 9)


def test_constant_windows_give_a_point_interval():
    assert mean_interval([4378.0] * 8) == (4378.0, 4378.0)
    same = batch_means([4378.0] * 8)
    assert ratio_interval(same, same) == (1.0, 1.0)


def test_ratio_interval_with_one_exact_side_uses_the_other_sides_spread():
    exact = batch_means([600.0] * 8)
    noisy = batch_means([640.0, 650.0, 660.0, 645.0, 655.0, 650.0, 648.0, 652.0])
    low, high = ratio_interval(noisy, exact)
    rel_low, rel_high = noisy.interval()
    # With the denominator exact, the log-scale interval is the numerator's own t interval, up to the log.
    assert low < noisy.mean / 600 < high
    assert low == pytest.approx(rel_low / 600, rel=2e-3) and high == pytest.approx(rel_high / 600, rel=2e-3)


def test_the_trial_interval_is_students_t_over_the_trial_averages():
    means = [600.0, 612.0, 594.0, 606.0]
    estimate = intervals.trial_means(means)
    assert estimate is not None
    # mean 603, sample stdev sqrt(180 / 3), se stdev / 2; t(0.975, 3 df) = 3.182446305284263.
    se = math.sqrt(60) / 2
    assert (estimate.mean, estimate.se, estimate.df) == (603.0, pytest.approx(se), 3)
    low, high = estimate.interval()
    assert (low, high) == (pytest.approx(603 - 3.182446305284263 * se), pytest.approx(603 + 3.182446305284263 * se))
    assert estimate.to_dict() == {"method": "trial means", "se": pytest.approx(se), "df": 3, "trials": 4}
    assert intervals.trial_means([600.0]) is None and intervals.trial_means([]) is None

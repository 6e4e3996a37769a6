"""The `run --until-stable` rule on known windows: the report's averaging and interval, applied as the log comes."""

import random

import pytest

from logfactory import Metrics, metrics_message, titan_line
from titanbench import stable
from titanbench.intervals import batch_means
from titanbench.stable import UntilStable

STEPS = [1, *range(10, 301, 10)]


def line(step: int, tps: int) -> str:
    return titan_line(metrics_message(Metrics(step=step, tps=tps)))


def steady(step: int) -> int:
    return 5000 + (step * 37) % 7 - 3


def noisy(step: int) -> int:
    return round(random.Random(step).uniform(2500, 7500))


def feed(watch: UntilStable, tps, steps=STEPS, extra: dict[int, str] | None = None) -> int | None:
    """Feed the windows in order (and `extra` lines after a step's); the step the watch asked to stop at."""
    for step in steps:
        watch.feed(line(step, tps(step)))
        if step in (extra or {}):
            watch.feed(extra[step])
        if watch.stop:
            return step
    return None


def test_steady_windows_stop_at_the_first_step_with_eight_averaged_windows():
    watch = UntilStable(1.0, planned_steps=300, gpus=8)
    # Windows 1 and 10 are the warm-up; 20, 30, ..., 90 are the 8 the interval needs.
    assert feed(watch, steady) == 90
    assert watch.decision is not None
    assert (watch.decision.at_step, watch.decision.planned_steps, watch.decision.gpus) == (90, 300, 8)
    estimate = batch_means([steady(s) for s in range(20, 91, 10)])
    assert estimate is not None
    low, high = estimate.interval()
    assert watch.decision.half_width_pct == pytest.approx((high - low) / 2 / estimate.mean * 100, abs=1e-4)
    assert watch.stop == (
        f"stopped at step 90 of 300: the 95% interval is within +-{watch.decision.half_width_pct:.2f}% of the "
        "average (--until-stable 1)"
    )


def test_a_bound_tighter_than_the_interval_waits_for_more_windows():
    estimate = batch_means([steady(s) for s in range(20, 91, 10)])
    assert estimate is not None
    at_90 = (estimate.interval()[1] - estimate.mean) / estimate.mean * 100
    watch = UntilStable(at_90 / 2, planned_steps=300, gpus=8)
    stopped = feed(watch, steady)
    assert stopped is not None and stopped > 90
    assert watch.decision is not None and watch.decision.half_width_pct <= at_90 / 2


def test_noisy_windows_never_stop():
    watch = UntilStable(1.0, planned_steps=1000, gpus=8)
    assert feed(watch, noisy) is None and watch.decision is None


def test_the_warm_up_never_counts():
    # Wild warm-up windows change nothing: steady from step 20 stops at 90 all the same.
    watch = UntilStable(1.0, planned_steps=300, gpus=8)
    assert feed(watch, lambda step: 100 if step <= 10 else steady(step)) == 90


def test_profiler_dump_windows_are_dropped_as_the_report_drops_them():
    # The dump at step 50 drops the windows ending at 50 and 60: the 8th averaged window is step 110.
    watch = UntilStable(1.0, planned_steps=300, gpus=8)
    dumps = {50: titan_line("Dumping profiler traces at step 50")}
    assert feed(watch, lambda step: 100 if step in (50, 60) else steady(step), extra=dumps) == 110


def test_a_config_that_is_stable_only_at_its_planned_step_is_not_stopped():
    watch = UntilStable(1.0, planned_steps=90, gpus=8)
    assert feed(watch, steady, steps=[1, *range(10, 91, 10)]) is None


def test_other_lines_and_repeated_steps_do_not_move_the_rule():
    watch = UntilStable(1.0, planned_steps=300, gpus=8)
    for step in [1, *range(10, 81, 10)]:
        watch.feed(line(step, steady(step)))
        watch.feed(line(step, 1))  # another rank's copy of the step: the first counts
        watch.feed(titan_line("some other log line"))
    assert not watch.stop
    watch.feed(line(90, steady(90)))
    assert watch.decision is not None and watch.decision.at_step == 90


def test_seconds_per_step_are_measured_over_the_averaged_windows(monkeypatch):
    # Compile makes step 1 slow; from then on 2 s a step, as the lines reach the driver.
    clock = {1: 100.0, **{step: 100.0 + 2.0 * step for step in range(10, 301, 10)}}
    now = [0.0]
    monkeypatch.setattr(stable.time, "monotonic", lambda: now[0])
    watch = UntilStable(1.0, planned_steps=300, gpus=8)
    for step in STEPS:
        now[0] = clock[step]
        watch.feed(line(step, steady(step)))
        if watch.stop:
            break
    assert watch.decision is not None and watch.decision.step_s == pytest.approx(2.0)
    assert watch.decision.to_dict() == {
        "at_step": 90,
        "planned_steps": 300,
        "half_width_pct": watch.decision.half_width_pct,
        "step_s": pytest.approx(2.0),
        "gpus": 8,
    }

"""titanbench.stats: which windows the averaging method keeps, and the numbers it reports."""

import json
import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from titanbench.errors import TitanbenchError
from titanbench.logparse import Evidence, Window
from titanbench.stats import (
    DEFAULT_WARMUP_STEPS,
    METHOD,
    drop_reasons,
    render_text,
    summarize,
    summarize_file,
    summarize_log,
)

LOGS = Path(__file__).parent / "data" / "logs"


def windows(*pairs: tuple[int, float | None]) -> list[Window]:
    return [Window(step, tps, 1.0, 1.0, 1.0, 1.0, 1.0, None) for step, tps in pairs]


def every_10(last: int, tps: float = 100.0) -> list[Window]:
    return windows((1, tps), *((step, tps) for step in range(10, last + 1, 10)))


def test_warmup_windows_are_dropped_inclusive() -> None:
    summary = summarize(windows((1, 5.0), (10, 50.0), (11, 100.0), (20, 200.0)))
    assert summary.used_steps == [11, 20]
    assert summary.avg_tps == 150.0
    assert summarize(windows((1, 5.0), (10, 50.0), (20, 200.0)), warmup_steps=0).used_steps == [1, 10, 20]


def test_mean_median_and_sample_stdev() -> None:
    summary = summarize(windows((20, 100.0), (30, 200.0), (40, 400.0)))
    assert summary.n == 3
    assert summary.avg_tps == pytest.approx(700 / 3)
    assert summary.median_tps == 200.0
    # Sample (n - 1) standard deviation: sqrt(((-400/3)^2 + (-100/3)^2 + (500/3)^2) / 2).
    assert summary.stdev_tps == pytest.approx(math.sqrt(70000 / 3))


def test_dump_step_and_the_next_window_are_dropped() -> None:
    summary = summarize(every_10(100), dump_steps=[50])
    assert summary.used_steps == [20, 30, 40, 70, 80, 90, 100]
    assert summary.dropped[50] == "profiler: trace dumped at step 50"
    assert summary.dropped[60] == "profiler: first window after the trace dump at step 50"


def test_profile_freq_forces_every_multiple() -> None:
    # The published runs: 100 steps, log_freq 10, profile_freq 100.
    assert summarize(every_10(100), profile_freq=100).used_steps == [20, 30, 40, 50, 60, 70, 80, 90]
    assert summarize(every_10(200), profile_freq=100).used_steps == [
        20,
        30,
        40,
        50,
        60,
        70,
        80,
        90,
        120,
        130,
        140,
        150,
        160,
        170,
        180,
        190,
    ]
    # Forced dumps add to those the log reports.
    assert summarize(every_10(100), profile_freq=100, dump_steps=[40]).used_steps == [20, 30, 60, 70, 80, 90]


def test_a_dump_between_windows_drops_the_window_holding_it_and_the_next() -> None:
    assert summarize(every_10(60), dump_steps=[35]).used_steps == [20, 30, 60]


def test_a_later_dump_reason_wins_over_after_an_earlier_dump() -> None:
    reasons = drop_reasons(every_10(50), dump_steps=[20, 30])
    assert reasons[30] == "profiler: trace dumped at step 30"
    assert reasons[40] == "profiler: first window after the trace dump at step 30"


def test_windows_without_tps_are_not_used() -> None:
    summary = summarize(windows((20, 100.0), (30, None), (40, 300.0)))
    assert summary.used_steps == [20, 40]
    assert summary.n == 2
    assert summary.avg_tps == 200.0
    assert summary.dropped == {30: "no tps in this line"}


def test_nothing_left_after_filtering() -> None:
    summary = summarize(every_10(20), profile_freq=20)
    assert (summary.used_steps, summary.n) == ([], 0)
    assert (summary.avg_tps, summary.median_tps, summary.stdev_tps) == (None, None, None)


def test_one_window_has_no_stdev() -> None:
    summary = summarize(windows((20, 123.0)))
    assert (summary.n, summary.avg_tps, summary.median_tps, summary.stdev_tps) == (1, 123.0, 123.0, None)


def test_windows_are_sorted_by_step() -> None:
    assert [w.step for w in summarize(windows((30, 1.0), (20, 2.0))).windows] == [20, 30]


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Window], int, int | None, list[int]]:
    steps = sorted(draw(st.lists(st.integers(1, 500), min_size=1, max_size=40, unique=True)))
    tps = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False))
    ws = [Window(step, draw(tps), None, None, None, None, None, None) for step in steps]
    warmup = draw(st.integers(0, 50))
    freq = draw(st.one_of(st.none(), st.integers(1, 200)))
    dumps = draw(st.lists(st.integers(1, 600), max_size=5))
    return ws, warmup, freq, dumps


@given(cases())
@settings(max_examples=300)
def test_method_invariants(case: tuple[list[Window], int, int | None, list[int]]) -> None:
    ws, warmup, freq, dumps = case
    summary = summarize(ws, warmup_steps=warmup, profile_freq=freq, dump_steps=dumps)
    steps = [w.step for w in ws]
    all_dumps = set(dumps) | (set(range(freq, steps[-1] + 1, freq)) if freq else set())
    distorted = set()
    for dump in all_dumps:
        later = [step for step in steps if step >= dump]
        distorted.update(later[:2])
    by_step = {w.step: w for w in ws}
    expected_used = [s for s in steps if s > warmup and s not in distorted and by_step[s].tps is not None]
    assert summary.used_steps == expected_used
    assert set(summary.dropped) == set(steps) - set(expected_used)
    values = [by_step[s].tps for s in expected_used]
    assert summary.n == len(values)
    if values:
        assert summary.avg_tps == pytest.approx(statistics.fmean(values))
        assert min(values) <= summary.median_tps <= max(values)
    else:
        assert summary.avg_tps is None and summary.median_tps is None
    assert (summary.stdev_tps is None) == (len(values) < 2)


# --- from logs ------------------------------------------------------------------------------------


def test_summary_of_a_real_log_with_a_trace_dump() -> None:
    summary = summarize_file(LOGS / "torchtitan_pr1287_profiler_dump.log")
    assert summary.used_steps == [220, 230, 240, 250]
    assert summary.avg_tps == 5865.75
    assert summary.median_tps == 5866.0
    assert summary.evidence == Evidence(async_tp=False, float8_recipe=None)
    # Warm-up past the dump, and a profile frequency that leaves nothing.
    assert summarize_file(LOGS / "torchtitan_pr1287_profiler_dump.log", warmup_steps=225).used_steps == [
        230,
        240,
        250,
    ]
    empty = summarize_file(LOGS / "torchtitan_pr1287_profiler_dump.log", profile_freq=20)
    assert (empty.n, empty.avg_tps) == (0, None)


def test_summary_of_the_published_format_skips_step_1_and_10() -> None:
    summary = summarize_log((LOGS / "torchao_pretraining_bf16.log").read_text())
    assert summary.used_steps == [20, 30, 40]
    assert summary.avg_tps == pytest.approx((6321 + 6300 + 6291) / 3)


def test_to_dict_is_strict_json_with_the_documented_keys() -> None:
    summary = summarize_file(LOGS / "derived_colour_glued_ranks.log")
    data = json.loads(json.dumps(summary.to_dict(), allow_nan=False))
    assert list(data) == ["windows", "used_steps", "avg_tps", "median_tps", "stdev_tps", "n"]
    assert set(data["windows"][0]) == {
        "step",
        "tps",
        "loss",
        "memory_gib",
        "memory_pct",
        "tflops",
        "mfu",
        "grad_norm",
    }
    assert data["windows"][5] == {
        "step": 250,
        "tps": 5862.0,
        "loss": None,
        "memory_gib": 49.66,
        "memory_pct": 52.28,
        "tflops": 339.48,
        "mfu": 34.33,
        "grad_norm": None,
    }
    assert data["used_steps"] == [220, 230, 240, 250]


def test_log_without_metric_lines_is_an_error() -> None:
    with pytest.raises(TitanbenchError, match="no torchtitan metric lines"):
        summarize_log("[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - Training starts at step 1\n")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("  \n")
    no_metrics = tmp_path / "no_metrics.log"
    no_metrics.write_text("torchrun: error: something failed\n")
    not_a_dir = tmp_path / "file.log"
    not_a_dir.write_text("x")
    cases = {
        tmp_path / "missing.log": "no such log file",
        empty: "empty",
        tmp_path: "is a directory",
        no_metrics: "no torchtitan metric lines",
        not_a_dir / "child.log": "cannot read",
    }
    for path, message in cases.items():
        with pytest.raises(TitanbenchError) as error:
            summarize_file(path)
        assert str(path) in error.value.message and message in error.value.message


def test_undecodable_bytes_do_not_hide_metric_lines(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_bytes(b"\xff\xfe torn\n" + (LOGS / "torchao_pretraining_bf16.log").read_bytes())
    assert summarize_file(log).used_steps == [20, 30, 40]


def test_method_states_the_defaults() -> None:
    assert DEFAULT_WARMUP_STEPS == 10
    assert "step 10" in METHOD and "--profile-freq" in METHOD and "arithmetic mean" in METHOD
    assert "Dumping profiler traces" in METHOD and "median" in METHOD and "standard deviation" in METHOD


def test_render_text_marks_each_window() -> None:
    text = render_text(summarize_file(LOGS / "derived_colour_glued_ranks.log"))
    rows = {line.split()[0]: line for line in text.splitlines() if line[:3].isdigit()}
    assert rows["200"].endswith("no: profiler: trace dumped at step 200")
    assert rows["210"].endswith("no: profiler: first window after the trace dump at step 200")
    assert rows["220"].endswith("yes") and "5,868" in rows["220"] and "49.66 GiB (52.28%)" in rows["220"]
    assert " nan " in rows["250"]
    assert "windows used: 4 of 6 (steps 220, 230, 240, 250)" in text
    assert "average tps:  5,865.8" in text
    assert "Method: Average TPS" in text

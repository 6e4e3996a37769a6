"""`titanbench compare`: two run directories (logs in the upstream format) through the real report
reader, the real intervals and the real CLI."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from logfactory import Metrics, metrics_message, titan_line
from titanbench.cli import main
from titanbench.comparison import compare_runs, render_markdown
from titanbench.intervals import batch_means, ratio_interval
from titanbench.plan import Locations, Overrides, Rendezvous, build_plan
from titanbench.spec import load_spec

CONFIG_KEYS = {"model", "config", "a_tps", "b_tps", "ratio", "ratio_ci95", "significant"}
BASE = [600, 604, 597, 601, 606, 598, 603, 599, 602, 596, 600, 605]


def windows_log(values: list[float], *, async_tp: bool = False) -> str:
    """A log whose used windows (steps 20, 30, ...) carry exactly `values`."""
    lines = [titan_line("Starting job")]
    if async_tp:
        lines.append(titan_line("Applied Async Tensor Parallelism to the model"))
    for step, tps in [(1, 1), (10, 1), *((20 + 10 * i, v) for i, v in enumerate(values))]:
        lines.append(titan_line(metrics_message(Metrics(step=step, tps=tps))))
    return "\n".join(lines) + "\n"


def write_run(run_dir: Path, configs: dict[str, list[float]], model: str = "llama3_8b") -> Path:
    for config_id, values in configs.items():
        folder = run_dir / model / config_id
        folder.mkdir(parents=True)
        (folder / "train.log").write_text(windows_log(values, async_tp=config_id.startswith("async")))
    return run_dir


def shifted(values: list[float], by: float) -> list[float]:
    return [v + by for v in reversed(values)]


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = write_run(tmp_path / "a", {"vanilla-bf16": BASE, "async-bf16": shifted(BASE, 60)})
    # B: vanilla 5% faster (significant), async within noise of A's (not significant).
    b = write_run(tmp_path / "b", {"vanilla-bf16": shifted(BASE, 30), "async-bf16": [v + 61 for v in BASE]})
    return a, b


def test_json_has_the_documented_shape_and_numbers(runs):
    a, b = runs
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    rows = {row["config"]: row for row in doc["configs"]}
    assert all(set(row) == CONFIG_KEYS for row in doc["configs"])
    # The matrix's four other configs are in neither run: left out.
    assert sorted(rows) == ["async-bf16", "vanilla-bf16"]
    vanilla = rows["vanilla-bf16"]
    assert vanilla["model"] == "llama3_8b"
    assert vanilla["a_tps"] == pytest.approx(sum(BASE) / len(BASE))
    assert vanilla["ratio"] == pytest.approx(vanilla["b_tps"] / vanilla["a_tps"])
    expected = ratio_interval(batch_means(shifted(BASE, 30)), batch_means(BASE))
    assert vanilla["ratio_ci95"] == pytest.approx(list(expected))
    assert vanilla["ratio_ci95"][0] > 1 and vanilla["significant"] is True
    same = rows["async-bf16"]
    assert same["ratio_ci95"][0] < 1 < same["ratio_ci95"][1] and same["significant"] is False


def test_speedups_side_by_side(runs):
    doc = compare_runs(*runs)
    (speedup,) = doc.speedups
    assert speedup.config == "async-bf16"
    assert speedup.a_speedup == pytest.approx((sum(BASE) / 12 + 60) / (sum(BASE) / 12))
    assert speedup.b_speedup == pytest.approx((sum(BASE) / 12 + 61) / (sum(BASE) / 12 + 30))
    assert speedup.a_speedup_ci95 is not None and speedup.b_speedup_ci95 is not None
    markdown = render_markdown(doc)
    assert "| Config | A speedup over vanilla | B speedup over vanilla |" in markdown
    assert f"| async-bf16 | {speedup.a_speedup:.2f} [" in markdown


def test_markdown_table(runs):
    a, b = runs
    result = CliRunner().invoke(main, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "# titanbench compare: A = a, B = b"
    assert "| Config | A TPS | B TPS | B / A [95% interval] | Significant at 5% |" in lines
    row = next(line for line in lines if line.startswith("| vanilla-bf16 |"))
    assert row.endswith("| **yes** |")
    assert next(line for line in lines if line.startswith("| async-bf16 |")).endswith("| no |")
    # Logs alone record no topology: it says it cannot tell.
    assert "Note: llama3_8b: topology not recorded in A and B (no run.json): cannot tell if they differ." in lines


def test_different_topologies_are_compared_and_said(tmp_path, runs):
    a, b = runs
    spec = load_spec("8b")
    for run_dir, overrides in ((a, Overrides()), (b, Overrides(nodes=1, tp=4))):
        locations = Locations(run_dir=run_dir, cache_root=tmp_path / "cache", torchtitan_dir=tmp_path)
        plans = build_plan([spec], overrides, Rendezvous(), locations, only=("vanilla-bf16", "async-bf16"))
        (run_dir / "run.json").write_text(json.dumps({"configs": [p.to_dict() for p in plans]}))
    doc = compare_runs(a, b)
    (topology,) = doc.topologies
    assert topology.differs is True
    assert topology.a is not None and topology.b is not None
    assert topology.a.tp == 8 and topology.b.tp == 4
    assert doc.notes == [
        "llama3_8b: the runs' topologies differ (A: 64 GPUs (8 x 8), FSDP 8 x TP 8; B: 8 GPUs (1 x 8), FSDP 2 x TP 4): "
        "per-GPU TPS of different topologies is not the same measurement"
    ]
    assert all(row.ratio is not None for row in doc.configs)
    same = compare_runs(a, a)
    assert same.topologies[0].differs is False and same.notes == []


def test_a_config_in_one_run_only_or_without_an_interval(tmp_path):
    a = write_run(tmp_path / "a", {"vanilla-bf16": BASE, "async-bf16": BASE[:4]})
    b = write_run(tmp_path / "b", {"async-bf16": BASE})
    rows = {row.config: row for row in compare_runs(a, b).configs}
    assert rows["vanilla-bf16"].b_tps is None and rows["vanilla-bf16"].ratio is None
    assert rows["vanilla-bf16"].significant is None
    # A's async has 4 windows: a ratio, but no interval, so no verdict.
    assert rows["async-bf16"].ratio is not None and rows["async-bf16"].ratio_ci95 is None
    assert rows["async-bf16"].significant is None
    markdown = render_markdown(compare_runs(a, b))
    assert next(line for line in markdown.splitlines() if line.startswith("| async-bf16 |")).endswith("| cannot tell |")


def test_out_writes_the_file(runs, tmp_path):
    out = tmp_path / "cmp" / "compare.json"
    result = CliRunner().invoke(main, ["compare", *map(str, runs), "--format", "json", "--out", str(out)])
    assert result.exit_code == 0 and result.output == ""
    assert json.loads(out.read_text())["configs"]


def test_a_bad_run_dir_is_one_error_line(runs, tmp_path):
    result = CliRunner().invoke(main, ["compare", str(runs[0]), str(tmp_path / "absent")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "no such run directory" in result.output


def test_a_config_run_several_times_compares_by_its_combined_average_and_trial_interval(tmp_path):
    from titanbench.intervals import trial_means

    a = write_run(tmp_path / "a", {"vanilla-bf16": BASE})
    trials = [BASE, shifted(BASE, 12), shifted(BASE, 30)]
    folder = tmp_path / "b" / "llama3_8b" / "vanilla-bf16"
    folder.mkdir(parents=True)
    for number, values in enumerate(trials, start=1):
        (folder / f"train.trial{number}.log").write_text(windows_log(values))
    (row,) = compare_runs(a, tmp_path / "b").configs
    means = [sum(values) / len(values) for values in trials]
    assert row.b_tps == pytest.approx(sum(means) / 3)
    expected = ratio_interval(trial_means(means), batch_means(BASE))
    assert row.ratio_ci95 == pytest.approx(list(expected))

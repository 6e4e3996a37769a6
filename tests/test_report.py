"""`titanbench report`: run directories (logs written in the exact upstream format) rendered next to
the published table, through the real parser, the real averaging method and the real CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from logfactory import Metrics, metrics_message, run_log, titan_line
from titanbench.cli import main
from titanbench.document import ConfigEntry, ReportDocument
from titanbench.intervals import METHOD as INTERVAL_METHOD
from titanbench.intervals import no_interval_reason
from titanbench.pins import pins
from titanbench.plan import Locations, Overrides, Rendezvous, build_plan
from titanbench.report import collect, render_json, render_markdown, write_all
from titanbench.spec import MatrixSpec, load_spec
from titanbench.stats import METHOD

# The published speedup column (facts doc), per quantization: bf16, float8 tensorwise, float8 rowwise.
PUBLISHED_SPEEDUPS = {"llama3_70b": ["1.09", "1.16", "1.04"], "llama3_8b": ["1.10", "1.10", "1.06"]}
HEADINGS = {
    "llama3_70b": "#### Llama3 70b on 256 H100s with FSDP=32, TP=8, torch.compile, full AC, local batch size 16",
    "llama3_8b": "#### Llama3 8b on 64 H100s with FSDP=8, TP=8, torch.compile, per op SAC, local batch size 12",
}
TITLES = {"llama3_70b": "Llama3 70b", "llama3_8b": "Llama3 8b"}
QUANT_LABELS = ["None (bfloat16)", "float8 tensorwise", "float8 rowwise"]


def config_log(spec: MatrixSpec, config_id: str, tps: float | None = None, **kwargs) -> str:
    config = spec.config(config_id)
    recipe = None if config.quantization == "bf16" else config.quantization.removeprefix("float8_")
    options = {"steps": config.steps, "async_tp": config.tp_type == "async", "float8_recipe": recipe, **kwargs}
    return run_log(config.published_tps if tps is None else tps, **options)


def write_matrix(run_dir: Path, model: str, *, skip: tuple[str, ...] = (), **kwargs) -> MatrixSpec:
    spec = load_spec(model)
    for config in spec.configs:
        if config.id in skip:
            continue
        folder = run_dir / spec.model / config.id
        folder.mkdir(parents=True)
        (folder / "train.log").write_text(config_log(spec, config.id, **kwargs))
    return spec


def section(markdown: str, model: str) -> str:
    start = markdown.index(f"#### {TITLES.get(model, model)}")
    end = markdown.find("\n#### ", start + 1)
    return markdown[start : end if end != -1 else len(markdown)]


def table(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the first markdown table whose header starts with `header_start`."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


INTERVAL = re.compile(r" \[[^\]]*\]")


def published_shape(markdown: str, model: str, *, intervals: bool = False) -> list[list[str]]:
    """The published-shape table's rows; the cells' `[low, high]` intervals removed unless `intervals`."""
    rows = table(
        section(markdown, model), "| TP type | Quantization | Average TPS | Speedup over vanilla TP baseline |"
    )
    return rows if intervals else [[INTERVAL.sub("", cell) for cell in row] for row in rows]


def comparison(markdown: str, model: str) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in table(section(markdown, model), "| Config |")}


def by_config(doc: dict, model: str) -> dict[str, dict]:
    """A results.json's configs of `model`, by id."""
    entry = next(m for m in doc["models"] if m["model"] == model)
    return {c["config"]: c for c in entry["configs"]}


def entries(doc: ReportDocument, model: str) -> dict[str, ConfigEntry]:
    """A collected document's configs of `model`, by id."""
    entry = next(m for m in doc.models if m.model == model)
    return {c.config: c for c in entry.configs}


@pytest.fixture
def published_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    for model in PUBLISHED_SPEEDUPS:
        write_matrix(run_dir, model)
    return run_dir


def test_logfactory_writes_the_facts_doc_example_line():
    metrics = Metrics(step=10, tps=6567, loss=9.9184, memory_gib=47.79, memory_pct=50.30, tflops=380.35, mfu=38.46)
    assert metrics_message(metrics) == (
        "step: 10  loss:  9.9184  memory: 47.79GiB(50.30%)  tps: 6,567  tflops: 380.35  mfu: 38.46%"
    )
    assert titan_line("x").startswith("[titan] 2025-06-13 10:00:00,000 - root - INFO - x")


@pytest.mark.parametrize("model", sorted(PUBLISHED_SPEEDUPS))
def test_published_numbers_reproduce_the_published_table(published_run, model):
    spec = load_spec(model)
    doc = collect(published_run)
    markdown = render_markdown(doc)

    assert HEADINGS[model] in markdown.splitlines()
    expected = []
    for quantization, label, speedup in zip(
        ("bf16", "float8_tensorwise", "float8_rowwise"), QUANT_LABELS, PUBLISHED_SPEEDUPS[model], strict=True
    ):
        for tp_type, tp_label, shown in (("vanilla", "Vanilla TP", "1.00"), ("async", "Async TP", speedup)):
            config = next(c for c in spec.configs if (c.tp_type, c.quantization) == (tp_type, quantization))
            expected.append([tp_label, label, f"{config.published_tps:.1f}", shown])
    assert published_shape(markdown, model) == expected

    rows = comparison(markdown, model)
    assert sorted(rows) == sorted(c.id for c in spec.configs)
    for config in spec.configs:
        measured, published, ratio, *_, status = rows[config.id]
        assert (measured, float(published), ratio, status) == (
            f"{config.published_tps:.1f}",
            config.published_tps,
            "1.00",
            "ok",
        )
        entry = entries(doc, spec.model)[config.id]
        assert entry.ratio == pytest.approx(1.0, abs=1e-4)


def test_dropped_windows_do_not_count(tmp_path):
    """The warm-up and profiler windows carry 1 tps: averaging them in would move every number."""
    run_dir = tmp_path / "run"
    spec = write_matrix(run_dir, "70b")
    config = entries(collect(run_dir), spec.model)["vanilla-bf16"]
    assert 100 not in config.summary.used_steps and 110 not in config.summary.used_steps
    assert config.summary.n == 16
    assert config.peak_memory_gib == max(w.memory_gib for w in config.summary.windows)
    assert config.mfu == pytest.approx(38.46)


def test_comparison_columns(tmp_path):
    run_dir = tmp_path / "run"
    spec = write_matrix(run_dir, "8b")
    doc = collect(run_dir)
    entry = entries(doc, spec.model)["async-bf16"]
    *_, stdev, windows, mfu, memory, status = comparison(render_markdown(doc), spec.model)["async-bf16"]
    assert windows == str(entry.summary.n) == "8"
    assert stdev == f"{entry.summary.stdev_tps:.1f}"
    assert mfu == "38.46%"
    assert memory == f"{entry.peak_memory_gib:.2f} GiB"
    assert status == "ok"


def test_missing_failed_and_unverified_configs(tmp_path):
    run_dir = tmp_path / "run"
    spec = write_matrix(run_dir, "70b", skip=("async-bf16",))
    failed = run_dir / spec.model / "vanilla-float8_rowwise"
    (failed / "result.json").write_text(json.dumps({"status": "failed", "returncode": 1, "reason": ""}))
    unverified = run_dir / spec.model / "async-float8_tensorwise"
    (unverified / "result.json").write_text(json.dumps({"status": "unverified", "reason": "no async TP line"}))

    doc = collect(run_dir)
    markdown = render_markdown(doc)
    rows = {(r[0], r[1]): r[2:] for r in published_shape(markdown, spec.model)}
    assert rows[("Async TP", "None (bfloat16)")] == ["missing", "n/a"]
    assert rows[("Vanilla TP", "float8 rowwise")] == ["failed", "n/a"]
    assert rows[("Async TP", "float8 rowwise")] == ["624.8", "n/a"]
    assert rows[("Async TP", "float8 tensorwise")] == ["942.4 (unverified)", "1.16 (unverified)"]

    compared = comparison(markdown, spec.model)
    assert compared["async-bf16"][0] == "n/a" and compared["async-bf16"][-1].startswith("missing")
    assert compared["vanilla-float8_rowwise"][-1] == "failed: exit code 1"
    assert compared["async-float8_tensorwise"][-1] == "unverified: no async TP line"
    assert entries(doc, spec.model)["vanilla-float8_rowwise"].measured_tps is None


def test_a_speedup_over_an_unverified_baseline_says_so(tmp_path):
    run_dir = tmp_path / "run"
    spec = write_matrix(run_dir, "70b")
    baseline = run_dir / spec.model / "vanilla-bf16"
    (baseline / "result.json").write_text(
        json.dumps({"status": "unverified", "reason": "async TP line in a vanilla log"})
    )
    rows = {(r[0], r[1]): r[2:] for r in published_shape(render_markdown(collect(run_dir)), spec.model)}
    assert rows[("Async TP", "None (bfloat16)")] == ["652.4", "1.09 (unverified)"]
    assert rows[("Async TP", "float8 tensorwise")] == ["942.4", "1.16"]


def test_logs_alone_must_show_what_the_config_claims(tmp_path):
    run_dir = tmp_path / "run"
    spec = load_spec("8b")
    for config_id, kwargs in (("async-bf16", {"async_tp": False}), ("vanilla-float8_rowwise", {})):
        folder = run_dir / spec.model / config_id
        folder.mkdir(parents=True)
        (folder / "train.log").write_text(config_log(spec, config_id, **kwargs))
    configs = entries(collect(run_dir), spec.model)
    assert configs["async-bf16"].status == "unverified"
    assert "Async Tensor Parallelism" in configs["async-bf16"].detail
    assert configs["async-bf16"].measured_tps == pytest.approx(4809.4, abs=0.05)
    assert configs["vanilla-float8_rowwise"].status == "ok"
    assert configs["vanilla-bf16"].status == "missing"


@pytest.mark.parametrize("content", ["", "[titan] 2025-06-13 10:00:00,000 - root - INFO - Starting job\n"])
def test_a_bad_log_among_good_ones_shows_no_data(tmp_path, content):
    run_dir = tmp_path / "run"
    spec = write_matrix(run_dir, "8b")
    (run_dir / spec.model / "async-bf16" / "train.log").write_text(content)
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    rows = {(r[0], r[1]): r[2:] for r in published_shape(result.output, spec.model)}
    assert rows[("Async TP", "None (bfloat16)")] == ["no data", "n/a"]
    assert rows[("Vanilla TP", "None (bfloat16)")] == ["4378.0", "1.00"]
    assert comparison(result.output, spec.model)["async-bf16"][-1].startswith("no data: ")


def test_a_log_too_short_for_the_method_shows_no_data(tmp_path):
    run_dir = tmp_path / "run"
    spec = load_spec("8b")
    folder = run_dir / spec.model / "vanilla-bf16"
    folder.mkdir(parents=True)
    (folder / "train.log").write_text(config_log(spec, "vanilla-bf16", steps=10))
    entry = entries(collect(run_dir), spec.model)["vanilla-bf16"]
    assert (entry.status, entry.measured_tps) == ("no data", None)
    assert "warm-up" in entry.detail


def test_unknown_model_is_reported_with_measured_numbers_only(tmp_path):
    run_dir = tmp_path / "run"
    for config_id, tps in (("vanilla-bf16", 1000), ("async-bf16", 1250)):
        folder = run_dir / "mymodel" / config_id
        folder.mkdir(parents=True)
        (folder / "train.log").write_text(run_log(tps, steps=50, async_tp=config_id.startswith("async")))
    doc = collect(run_dir)
    markdown = render_markdown(doc)
    assert "#### mymodel (no published reference)" in markdown
    assert [m.model for m in doc.models] == ["mymodel"]
    rows = {(r[0], r[1]): r[2:] for r in table(markdown, "| TP type |")}
    assert rows == {
        ("Vanilla TP", "None (bfloat16)"): ["1000.0", "1.00"],
        ("Async TP", "None (bfloat16)"): ["1250.0", "1.25"],
    }
    # Nothing published: no published columns, and the report does not open with a source it lacks.
    assert "Published TPS" not in markdown and "| Measured / published |" not in markdown
    assert "No published numbers for this matrix: measured numbers and speedups only." in markdown
    row = comparison(markdown, "mymodel")["async-bf16"]
    assert (row[0], len(row)) == ("1250.0", 6)  # measured, stdev, windows, MFU, memory, status


def test_run_json_gives_measured_topology_deviations_and_environment(tmp_path):
    run_dir = tmp_path / "run"
    spec = write_matrix(run_dir, "8b", skip=("async-float8_rowwise",))
    plans = build_plan(
        [spec],
        Overrides(nodes=2, tp=4),
        Rendezvous(),
        Locations(run_dir=run_dir, cache_root=tmp_path / "cache", torchtitan_dir=tmp_path / "torchtitan"),
    )
    gpus = [{"index": i, "name": "NVIDIA H200", "power_limit_w": 700.0} for i in range(8)]
    nvlink = [[None if i == j else True for j in range(8)] for i in range(8)]
    ports = [{"device": f"mlx5_{i}", "port": 1, "state": "ACTIVE", "rate": "200 Gb/sec (4X HDR)"} for i in range(8)]
    manifest = {
        "schema": "titanbench.env/1",
        "gpu": {"gpus": gpus, "nvlink": nvlink},
        "rdma": ports,
        "pins": {"mode": "release", "torch": {"expected_git_version": "def", "git_version": "abc", "match": False}},
    }
    (run_dir / "run.json").write_text(json.dumps({"configs": [p.to_dict() for p in plans], "environment": manifest}))

    doc = collect(run_dir)
    markdown = render_markdown(doc)
    assert "#### Llama3 8b on 16 H200s with FSDP=4, TP=4, torch.compile, per op SAC, local batch size 12" in markdown
    configs = entries(doc, spec.model)
    assert configs["vanilla-bf16"].deviations == plans[0].deviations
    assert any("tp 4 (published 8)" in line for line in plans[0].deviations)
    assert f"- vanilla-bf16: {'; '.join(plans[0].deviations)}" in markdown
    assert configs["async-float8_rowwise"].status == "missing"

    environment = {row[0]: row[1:] for row in table(section(markdown, spec.model), "|  | This run |")}
    assert environment["GPU"] == ["NVIDIA H200", "H100, 96 GB HBM2e, 2.4 TB/s", "**differs**"]
    assert environment["GPUs"] == ["16", "64", "**differs**"]
    assert environment["Power limit (W)"] == ["700", "500", "**differs**"]
    assert environment["Intra-node"][0] == "NVLink between all 8 GPUs" and environment["Intra-node"][2] == "same"
    assert environment["Inter-node"][0].startswith("8 active RDMA port(s) of 8, 200 Gb/sec")
    assert environment["Inter-node"][2] == "**differs**"
    assert "approximate pins" in markdown
    assert "| torch | def | abc | **no** |" in markdown


def test_deviations_none_and_pins_recorded_in_run_json(tmp_path):
    run_dir = tmp_path / "run"
    spec = write_matrix(run_dir, "8b")
    plans = build_plan(
        [spec], Overrides(), Rendezvous(), Locations(run_dir=run_dir, cache_root=tmp_path, torchtitan_dir=tmp_path)
    )
    recorded = {"TORCHTITAN_COMMIT": "0" * 40}
    (run_dir / "run.json").write_text(json.dumps({"configs": [p.to_dict() for p in plans], "pins": recorded}))
    doc = collect(run_dir)
    markdown = render_markdown(doc)
    assert all(c.deviations == [] for c in doc.models[0].configs)
    assert "- vanilla-bf16: none" in markdown
    assert doc.pins == recorded and f"| TORCHTITAN_COMMIT | {'0' * 40} |" in markdown


def test_report_carries_pins_and_the_method_actually_used(published_run):
    markdown = render_markdown(collect(published_run, warmup_steps=30, profile_freq=50))
    assert METHOD in markdown
    assert "This report: warm-up steps 30, profiler dumps at steps 50, 100, ..." in markdown
    assert f"| TORCH_COMMIT | {pins()['TORCH_COMMIT']} |" in markdown
    assert "CI_TORCH_VERSION" not in markdown, "the CPU torch of CI is not a pin of the benchmark"
    assert "Pins (not titanbench's image: what was installed is below)" in markdown


def test_averaging_options_change_the_windows(published_run):
    default = entries(collect(published_run), "llama3_8b")["vanilla-bf16"].summary
    late = entries(collect(published_run, warmup_steps=50, profile_freq=30), "llama3_8b")["vanilla-bf16"].summary
    assert default.used_steps == [20, 30, 40, 50, 60, 70, 80, 90]
    # profile-freq 30 adds dumps at 30, 60, 90: their windows and the next ones go too.
    assert late.used_steps == [80]


def test_write_all_writes_the_three_files_and_re_renders_from_json(published_run):
    doc = write_all(published_run)
    saved = (published_run / "results.json").read_text()
    assert saved == render_json(doc)
    # results.json alone gives the document back, and the same markdown.
    assert ReportDocument.model_validate_json(saved) == doc
    assert (published_run / "RESULTS.md").read_text() == render_markdown(ReportDocument.model_validate_json(saved))
    assert (published_run / "RESULTS.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (published_run / "RESULTS-steps.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # The report's own files are not mistaken for results on the next run.
    assert write_all(published_run) == doc


def test_json_document_shape(published_run):
    result = CliRunner().invoke(main, ["report", str(published_run), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert {"models", "pins", "averaging", "build_mode", "pin_checks"} <= doc.keys()
    assert doc["averaging"]["method"] == METHOD
    config = by_config(doc, "llama3_70b")["async-float8_tensorwise"]
    assert round(config["speedup"], 2) == 1.16 and config["published_tps"] == 942.4
    assert {"status", "measured_tps", "ratio", "deviations", "summary", "mfu", "peak_memory_gib"} <= config.keys()
    assert {"avg_tps", "median_tps", "stdev_tps", "n", "used_steps", "windows"} <= config["summary"].keys()


def test_cli_out_writes_report_and_chart_next_to_it(published_run, tmp_path):
    out = tmp_path / "out" / "report.md"
    result = CliRunner().invoke(main, ["report", str(published_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert out.read_text() == render_markdown(collect(published_run))
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert (out.parent / "report-steps.png").read_bytes().startswith(b"\x89PNG")


def test_cli_plot_without_out_prints_and_writes_the_chart(published_run, tmp_path):
    chart = tmp_path / "chart.png"
    result = CliRunner().invoke(main, ["report", str(published_run), "--plot", str(chart), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["models"]
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "chart-steps.png").read_bytes().startswith(b"\x89PNG")


def test_cli_out_must_not_be_overwritten_by_a_chart(published_run, tmp_path):
    out = tmp_path / "chart-steps.png"
    result = CliRunner().invoke(
        main, ["report", str(published_run), "--out", str(out), "--plot", str(tmp_path / "chart.png")]
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: --out {out} and the step charts {out} are the same file")
    assert not out.exists()


def test_cli_without_out_or_plot_writes_no_chart(published_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in published_run.iterdir())
    result = CliRunner().invoke(main, ["report", str(published_run)])
    assert result.exit_code == 0
    assert not list(tmp_path.rglob("*.png"))
    assert sorted(p.name for p in published_run.iterdir()) == before


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "absent", "no such run directory"),
        (lambda tmp: tmp, "no results in it"),
        (lambda tmp: (tmp / "file.txt", (tmp / "file.txt").write_text("x"))[0], "no such run directory"),
    ],
    ids=["missing", "empty", "a-file"],
)
def test_bad_run_dir_is_one_error_line(tmp_path, make, message):
    result = CliRunner().invoke(main, ["report", str(make(tmp_path))])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert message in result.output
    assert "Traceback" not in result.output


def test_unreadable_run_json_is_one_error_line(published_run):
    (published_run / "run.json").write_text("{not json")
    result = CliRunner().invoke(main, ["report", str(published_run)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "run.json" in result.output


def test_json_report_imports_no_heavy_module(published_run):
    code = (
        "import sys\n"
        "from titanbench.cli import main\n"
        f"main(['report', {str(published_run)!r}, '--format', 'json'], standalone_mode=False)\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'docker') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["models"]


def test_unknown_model_heading_carries_its_recorded_topology(tmp_path):
    run_dir = tmp_path / "run"
    folder = run_dir / "mymodel" / "vanilla-bf16"
    folder.mkdir(parents=True)
    (folder / "train.log").write_text(run_log(1000, steps=50))
    plan = {
        "model": "mymodel",
        "config": "vanilla-bf16",
        "topology": {"nodes": 2, "gpus_per_node": 2, "tp": 2, "fsdp": 2},
    }
    (run_dir / "run.json").write_text(json.dumps({"configs": [plan]}))
    markdown = render_markdown(collect(run_dir))
    assert "#### mymodel on 4 GPUs with FSDP=2, TP=2 (no published reference)" in markdown.splitlines()
    assert "- vanilla-bf16: not recorded" in markdown.splitlines()


def test_real_manifest_of_a_machine_without_gpus_renders(tmp_path):
    """The manifest `titanbench env --json` writes on this CPU machine: unknowns are said, not flagged."""
    from titanbench.envinfo import manifest

    run_dir = tmp_path / "run"
    write_matrix(run_dir, "8b")
    environment = manifest()
    (run_dir / "run.json").write_text(json.dumps({"environment": environment}))
    doc = collect(run_dir)
    rows = {row.item: row for row in doc.models[0].environment}
    if environment["gpu"] is None:
        assert rows["GPU"].measured == f"unknown: {environment['unavailable']['gpu']}"
        assert rows["GPU"].differs is None
    assert [c.component for c in doc.pin_checks] == ["torch", "torchao", "torchtitan"]
    assert doc.pin_checks[0].pinned in (pins()["TORCH_COMMIT"], pins()["RELEASE_TORCH_GIT_VERSION"])
    assert "Installed in the run's environment:" in render_markdown(doc)


def test_a_user_spec_named_by_the_run_request_supplies_the_heading(tmp_path):
    spec_file = tmp_path / "mine.yaml"
    spec_file.write_text(
        "model: mine\ntitle: My matrix\nparams: 1.0e9\ntrain_config: mine.toml\n"
        "topology: {nodes: 2, gpus_per_node: 4, tp: 2, fsdp: 4}\n"
        "heading: {gpu: H200, activation_checkpointing: mine AC, local_batch_size: 2}\n"
        "common_flags: --parallelism.tensor_parallel_degree=2\n"
        "configs:\n  - {id: vanilla-bf16, tp_type: vanilla, quantization: bf16, steps: 50, published_tps: 1000}\n"
    )
    run_dir = tmp_path / "run"
    folder = run_dir / "mine" / "vanilla-bf16"
    folder.mkdir(parents=True)
    (folder / "train.log").write_text(run_log(990, steps=50))
    (run_dir / "run.json").write_text(json.dumps({"request": {"model": str(spec_file)}}))
    doc = collect(run_dir)
    markdown = render_markdown(doc)
    assert "#### My matrix on 8 H200s with FSDP=4, TP=2, mine AC, local batch size 2" in markdown.splitlines()
    assert entries(doc, "mine")["vanilla-bf16"].ratio == pytest.approx(0.99)
    spec_file.unlink()
    assert collect(run_dir).models[0].heading == "mine (no published reference)"


# run.json edited by hand or written by something else: one clear line, never a traceback.
BASELINE = {"model": "llama3_8b", "config": "vanilla-bf16"}
MALFORMED_RUN_JSON = [
    ({"configs": [{**BASELINE, "topology": {"nodes": 1}}]}, "configs.0.topology"),
    ({"configs": [{**BASELINE, "published_tps": "fast"}]}, "configs.0.published_tps"),
    ({"configs": [{"model": "llama3_8b", "config": 2}]}, "configs.0.config"),
    ({"request": ["--model", "8b"]}, "request"),
    ({"pins": {"TORCH_COMMIT": 38}}, "pins.TORCH_COMMIT"),
]


@pytest.mark.parametrize(("content", "where"), MALFORMED_RUN_JSON)
def test_malformed_run_json_is_one_error_line(tmp_path, content, where):
    run_dir = tmp_path / "run"
    write_matrix(run_dir, "8b")
    (run_dir / "run.json").write_text(json.dumps(content))
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {run_dir / 'run.json'}: {where}")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize(("watts", "differs"), [(500.0, False), (499.0, False), (504.5, False), (700.0, True)])
def test_power_limit_compared_with_the_reference_within_doctors_tolerance(tmp_path, watts, differs):
    run_dir = tmp_path / "run"
    write_matrix(run_dir, "8b")
    gpus = [{"index": i, "name": "NVIDIA H100 80GB HBM3", "power_limit_w": watts} for i in range(8)]
    (run_dir / "run.json").write_text(json.dumps({"environment": {"gpu": {"gpus": gpus}}}))
    (model,) = collect(run_dir).models
    (power,) = [row for row in model.environment if row.item == "Power limit (W)"]
    assert power.differs is differs


@pytest.mark.parametrize(
    ("name", "mib", "shown", "differs"),
    [("NVIDIA H100 80GB HBM3", 81559, "79.6 GiB", True), ("NVIDIA H100 96GB HBM2e", 97871, "95.6 GiB", False)],
)
def test_an_80_gb_h100_is_visibly_not_the_references_96_gb_h100(tmp_path, name, mib, shown, differs):
    run_dir = tmp_path / "run"
    write_matrix(run_dir, "70b")
    gpus = [{"index": i, "name": name, "memory_total_mib": mib, "power_limit_w": 500.0} for i in range(8)]
    (run_dir / "run.json").write_text(json.dumps({"environment": {"gpu": {"gpus": gpus}}}))
    (model,) = collect(run_dir).models
    rows = {row.item: row for row in model.environment}
    assert (rows["GPU"].differs, rows["GPU memory"].measured, rows["GPU memory"].published) == (False, shown, "96 GB")
    assert rows["GPU memory"].differs is differs
    assert ("| GPU memory | " + shown + " | 96 GB | **differs** |" in render_markdown(collect(run_dir))) is differs


def test_the_merged_table_shape_has_one_row_per_quantization(published_run):
    markdown = render_markdown(collect(published_run), table="merged")
    rows = table(
        section(markdown, "llama3_70b"),
        "| Quantization | Vanilla TP tokens/sec | Async TP tokens/sec | Async TP speedup |",
    )
    assert [[INTERVAL.sub("", cell) for cell in row] for row in rows] == [
        ["None (bfloat16)", "597.3", "652.4", "1.09"],
        ["float8 tensorwise", "809.8", "942.4", "1.16"],
        ["float8 rowwise", "599.6", "624.8", "1.04"],
    ]
    assert "| TP type | Quantization |" not in markdown
    cli = CliRunner().invoke(main, ["report", str(published_run), "--table", "merged"])
    assert cli.exit_code == 0 and cli.output == markdown


def test_each_configs_network_comes_from_its_result(tmp_path):
    run_dir = tmp_path / "run"
    write_matrix(run_dir, "8b")
    ib = {"networks": ["IB"], "gpudirect": True, "description": "IB, GPUDirect RDMA"}
    sockets = {"networks": ["Socket"], "gpudirect": False, "description": "Socket, no GPUDirect RDMA"}
    for config, nodes in (("vanilla-bf16", {"0": ib, "1": ib}), ("async-bf16", {"0": ib, "1": sockets})):
        result = {"status": "ok", "transport": nodes}
        (run_dir / "llama3_8b" / config / "result.json").write_text(json.dumps(result))
    doc = collect(run_dir)
    assert entries(doc, "llama3_8b")["async-bf16"].transport == {"0": "IB, GPUDirect RDMA", "1": sockets["description"]}
    markdown = render_markdown(doc)
    rows = table(section(markdown, "llama3_8b"), "| Config |")
    assert "| Network (NCCL) | Status |" in markdown
    network = {row[0]: row[-2] for row in rows}
    assert network["vanilla-bf16"] == "IB, GPUDirect RDMA"
    assert network["async-bf16"] == "node 0: IB, GPUDirect RDMA; node 1: Socket, no GPUDirect RDMA"
    assert network["vanilla-float8_tensorwise"] == ""


# ---- 95% intervals (issue 14) ---------------------------------------------------------------------


def windows_log(values: list[float], *, async_tp: bool = False) -> str:
    """A log whose used windows (steps 20, 30, ...) carry exactly `values`; warm-up windows carry 1 tps."""
    lines = [titan_line("Starting job: test run")]
    if async_tp:
        lines.append(titan_line("Applied Async Tensor Parallelism to the model"))
    for step, tps in [(1, 1), (10, 1), *((20 + 10 * i, v) for i, v in enumerate(values))]:
        lines.append(titan_line(metrics_message(Metrics(step=step, tps=tps))))
    return "\n".join(lines) + "\n"


def write_bf16_pair(run_dir: Path, vanilla: list[float], async_values: list[float], model: str = "mymodel") -> None:
    for config_id, values in (("vanilla-bf16", vanilla), ("async-bf16", async_values)):
        folder = run_dir / model / config_id
        folder.mkdir(parents=True)
        (folder / "train.log").write_text(windows_log(values, async_tp=config_id.startswith("async")))


VANILLA = [600, 604, 597, 601, 606, 598, 603, 599, 602, 596, 600, 605]
FASTER = [v + 50 for v in VANILLA[::-1]]
SAME = [v + 1 for v in VANILLA[::-1]]


def test_json_carries_the_tps_and_speedup_intervals(tmp_path):
    from titanbench.intervals import batch_means, ratio_interval

    run_dir = tmp_path / "run"
    write_bf16_pair(run_dir, VANILLA, FASTER)
    doc = json.loads(CliRunner().invoke(main, ["report", str(run_dir), "--format", "json"]).output)
    configs = by_config(doc, "mymodel")
    vanilla, faster = configs["vanilla-bf16"], configs["async-bf16"]
    assert vanilla["measured_tps_ci95"] == pytest.approx(list(batch_means(VANILLA).interval()))
    assert faster["measured_tps_ci95"] == pytest.approx(list(batch_means(FASTER).interval()))
    low, high = vanilla["measured_tps_ci95"]
    assert low < vanilla["measured_tps"] < high
    assert faster["speedup_ci95"] == pytest.approx(list(ratio_interval(batch_means(FASTER), batch_means(VANILLA))))
    assert faster["speedup_ci95"][0] > 1 and faster["speedup_interval_holds_1"] is False
    # The vanilla row is the baseline itself: no speedup interval.
    assert vanilla["speedup_ci95"] is None and vanilla["speedup"] == 1.0
    assert vanilla["interval"] == {"method": "batch means", "se": pytest.approx(batch_means(VANILLA).se), "df": 3,
                                   "batches": 4, "batch_size": 3}  # fmt: skip
    assert doc["averaging"]["interval_method"] == INTERVAL_METHOD


def test_markdown_shows_intervals_compactly_and_flags_a_speedup_that_may_be_none(tmp_path):
    run_dir = tmp_path / "run"
    write_bf16_pair(run_dir, VANILLA, SAME)
    doc = collect(run_dir)
    markdown = render_markdown(doc)
    configs = entries(doc, "mymodel")
    rows = {(r[0], r[1]): r[2:] for r in published_shape(markdown, "mymodel", intervals=True)}
    low, high = configs["vanilla-bf16"].measured_tps_ci95
    assert rows[("Vanilla TP", "None (bfloat16)")] == [
        f"{configs['vanilla-bf16'].measured_tps:.1f} [{low:.1f}, {high:.1f}]",
        "1.00",
    ]
    same = configs["async-bf16"]
    assert same.speedup_interval_holds_1 is True
    s_low, s_high = same.speedup_ci95
    assert rows[("Async TP", "None (bfloat16)")][1] == (
        f"{same.speedup:.2f} [{s_low:.2f}, {s_high:.2f}] (interval holds 1.00)"
    )
    assert "Brackets: 95% intervals" in markdown
    assert INTERVAL_METHOD in markdown


def test_a_clear_speedup_is_not_flagged(tmp_path):
    run_dir = tmp_path / "run"
    write_bf16_pair(run_dir, VANILLA, FASTER)
    rows = {(r[0], r[1]): r[2:] for r in published_shape(render_markdown(collect(run_dir)), "mymodel", intervals=True)}
    assert re.fullmatch(r"1\.08 \[1\.\d\d, 1\.\d\d\]", rows[("Async TP", "None (bfloat16)")][1])


def test_too_few_windows_give_no_interval_and_say_why(tmp_path):
    run_dir = tmp_path / "run"
    write_bf16_pair(run_dir, VANILLA[:3], FASTER)
    doc = collect(run_dir)
    configs = entries(doc, "mymodel")
    assert configs["vanilla-bf16"].measured_tps_ci95 is None
    assert configs["vanilla-bf16"].interval_note == no_interval_reason(3)
    assert configs["async-bf16"].measured_tps_ci95 is not None
    assert configs["async-bf16"].speedup is not None and configs["async-bf16"].speedup_ci95 is None
    markdown = render_markdown(doc)
    rows = {(r[0], r[1]): r[2:] for r in published_shape(markdown, "mymodel", intervals=True)}
    assert rows[("Vanilla TP", "None (bfloat16)")][0] == f"{configs['vanilla-bf16'].measured_tps:.1f}"
    assert f"- vanilla-bf16: {no_interval_reason(3)}" in markdown.splitlines()
    assert "- async-bf16: no speedup interval (its vanilla baseline has none)" in markdown.splitlines()


def test_a_speedup_divides_measured_by_measured_never_by_a_published_number(tmp_path):
    """Measured differs from published on both sides: async 600 over vanilla 500 is 1.20 (dividing by the
    published vanilla 597.3 would give 1.00, by the published async 652.4 the wrong ratio again)."""
    spec = load_spec("70b")
    run_dir = tmp_path / "run"
    measured = {"vanilla-bf16": 500.0, "async-bf16": 600.0}
    for config_id, tps in measured.items():
        folder = run_dir / spec.model / config_id
        folder.mkdir(parents=True)
        (folder / "train.log").write_text(config_log(spec, config_id, tps))
    configs = {c.config: c for c in collect(run_dir).models[0].configs}
    assert configs["async-bf16"].speedup == pytest.approx(600.0 / 500.0)
    assert configs["async-bf16"].ratio == pytest.approx(600.0 / 652.4)


# ---- trials (`run --repeat`, issue 14) -------------------------------------------------------------


def write_trials(run_dir: Path, config_id: str, trials: list[list[float]], model: str = "mymodel") -> Path:
    folder = run_dir / model / config_id
    folder.mkdir(parents=True)
    for number, values in enumerate(trials, start=1):
        (folder / f"train.trial{number}.log").write_text(windows_log(values, async_tp=config_id.startswith("async")))
    return folder


def test_trials_combine_into_the_mean_of_their_averages_with_an_interval_from_the_trials(tmp_path):
    from titanbench.intervals import batch_means, ratio_interval, trial_means

    run_dir = tmp_path / "run"
    vanilla = [VANILLA, [v - 20 for v in VANILLA], [v + 10 for v in VANILLA]]
    faster = [FASTER, [v + 30 for v in FASTER]]
    write_trials(run_dir, "vanilla-bf16", vanilla)
    write_trials(run_dir, "async-bf16", faster)
    doc = collect(run_dir)
    configs = entries(doc, "mymodel")
    base, quick = configs["vanilla-bf16"], configs["async-bf16"]
    means = [sum(t) / len(t) for t in vanilla]
    assert [t.measured_tps for t in base.trials or []] == pytest.approx(means)
    assert [t.log for t in base.trials or []] == ["train.trial1.log", "train.trial2.log", "train.trial3.log"]
    assert base.trials and base.trials[1].measured_tps_ci95 == pytest.approx(list(batch_means(vanilla[1]).interval()))
    assert base.measured_tps == pytest.approx(sum(means) / 3)
    assert base.trials_stdev_tps == pytest.approx(15.275252316519467)  # stdev of the offsets 0, -20, +10
    assert base.measured_tps_ci95 == pytest.approx(list(trial_means(means).interval()))
    assert base.interval is not None and (base.interval.trials, base.interval.df) == (3, 2)
    fast_means = [sum(t) / len(t) for t in faster]
    assert quick.speedup_ci95 == pytest.approx(list(ratio_interval(trial_means(fast_means), trial_means(means))))

    markdown = render_markdown(doc)
    assert "Brackets: 95% intervals (from the trial averages for configs run several times" in markdown
    line = next(x for x in markdown.splitlines() if x.startswith("- vanilla-bf16 (3 trials"))
    assert line.startswith(
        "- vanilla-bf16 (3 trials, between-trial stdev 15.3): trial 1 600.9 [599.8, 602.0]; trial 2 580.9 ["
    )
    assert line.endswith("; trial 3 610.9 [609.8, 612.0]")
    rows = {r[0]: r for r in table(section(markdown, "mymodel"), "| Config |")}
    assert rows["vanilla-bf16"][2:4] == ["15.3 (between trials)", "12 + 12 + 12"]
    assert "Configs run several times (`run --repeat N`)" in doc.averaging.interval_method
    saved = render_json(doc)
    assert json.loads(saved)["models"][0]["configs"][0]["interval"]["method"] == "trial means"
    assert ReportDocument.model_validate_json(saved) == doc


def test_a_config_with_one_counted_trial_keeps_its_batch_means_interval(tmp_path):
    from titanbench.intervals import batch_means

    run_dir = tmp_path / "run"
    folder = write_trials(run_dir, "vanilla-bf16", [VANILLA, VANILLA])
    # A failed trial: the config is not ok, so no combined number (each trial is still listed).
    trials = [{"trial": 1, "status": "ok", "log": "train.trial1.log"},
              {"trial": 2, "status": "failed", "reason": "exit code 1", "log": "train.trial2.log"}]  # fmt: skip
    (folder / "result.json").write_text(json.dumps({"status": "failed", "repeat": 2, "trials": trials}))
    config = entries(collect(run_dir), "mymodel")["vanilla-bf16"]
    assert (config.status, config.measured_tps) == ("failed", None)
    assert [t.status for t in config.trials or []] == ["ok", "failed"]
    trials[1] = {**trials[1], "status": "unverified", "reason": "no evidence"}
    (folder / "result.json").write_text(json.dumps({"status": "unverified", "repeat": 2, "trials": trials}))
    # Trial 2 unverified (it would count) but its log holds no window: only trial 1 is left to average.
    (folder / "train.trial2.log").write_text("no metrics here\n")
    config = entries(collect(run_dir), "mymodel")["vanilla-bf16"]
    assert [t.status for t in config.trials or []] == ["ok", "no data"]
    assert config.measured_tps == pytest.approx(sum(VANILLA) / len(VANILLA))
    assert config.measured_tps_ci95 == pytest.approx(list(batch_means(VANILLA).interval()))
    assert config.trials_stdev_tps is None and config.interval and config.interval.method == "batch means"


def test_a_run_without_repeats_has_no_trial_keys(tmp_path):
    run_dir = tmp_path / "run"
    write_bf16_pair(run_dir, VANILLA, FASTER)
    doc = json.loads(render_json(collect(run_dir)))
    for config in doc["models"][0]["configs"]:
        assert not {"trials", "trials_stdev_tps"} & config.keys()
        assert config["interval"].keys() == {"method", "se", "df", "batches", "batch_size"}
    assert "Trials (" not in render_markdown(collect(run_dir))
    assert "until_stable" not in doc
    assert not {"stopped_early", "gpu_hours_saved"} & doc["models"][0]["configs"][0].keys()


# ---- runs stopped early (`run --until-stable`, issue 14) --------------------------------------------


def test_runs_stopped_early_say_where_and_the_gpu_hours_saved_per_config_and_in_all(tmp_path):
    run_dir = tmp_path / "run"
    write_bf16_pair(run_dir, VANILLA, FASTER)  # windows to step 130
    once = {"at_step": 120, "planned_steps": 1000, "half_width_pct": 0.4, "step_s": 9.0, "gpus": 64}
    record = {"status": "ok", "last_step": 130, "stopped_early": once}
    (run_dir / "mymodel" / "vanilla-bf16" / "result.json").write_text(json.dumps(record))
    folder = write_trials(run_dir, "vanilla-bf16", [VANILLA, VANILLA], model="other")
    twice = {"at_step": 120, "planned_steps": 200, "half_width_pct": 0.9, "step_s": 3.0, "gpus": 8}
    trials = [{"trial": 1, "status": "ok", "log": "train.trial1.log"},
              {"trial": 2, "status": "ok", "log": "train.trial2.log", "stopped_early": twice}]  # fmt: skip
    (folder / "result.json").write_text(json.dumps({"status": "ok", "repeat": 2, "trials": trials}))
    doc = collect(run_dir)
    single, repeated = entries(doc, "mymodel")["vanilla-bf16"], entries(doc, "other")["vanilla-bf16"]
    # Saved: the steps after the last one logged (130), at the measured seconds per step, on the run's GPUs.
    assert single.stopped_early is not None and single.stopped_early.last_step == 130
    assert single.gpu_hours_saved == pytest.approx((1000 - 130) * 9.0 * 64 / 3600)
    assert entries(doc, "mymodel")["async-bf16"].stopped_early is None
    assert repeated.trials and repeated.trials[0].stopped_early is None and repeated.stopped_early is None
    assert repeated.gpu_hours_saved == pytest.approx((200 - 130) * 3.0 * 8 / 3600)
    assert doc.until_stable is not None
    assert (doc.until_stable.pct, doc.until_stable.runs_stopped) == (None, 2)
    assert doc.until_stable.gpu_hours_saved == pytest.approx(139.2 + 70 * 3.0 * 8 / 3600)
    assert "an estimate" in doc.until_stable.method

    markdown = render_markdown(doc)
    assert (
        "- vanilla-bf16: at step 120 of 1000 (95% interval within +-0.40% of the average; last step logged 130), "
        "about 139.2 GPU-hours saved (estimate)"
    ) in section(markdown, "mymodel")
    assert "- vanilla-bf16 trial 2: at step 120 of 200 (95% interval within +-0.90%" in section(markdown, "other")
    assert "### Stopped early (`--until-stable`)\n\n2 run(s) stopped before their planned step: about 139.7" in markdown
    saved = render_json(doc)
    assert json.loads(saved)["until_stable"]["runs_stopped"] == 2
    assert ReportDocument.model_validate_json(saved) == doc

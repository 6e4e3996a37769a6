"""The smoke matrix with the real torchtitan trainer: `titanbench run --model smoke --device cpu`.

The project's main end-to-end test: torchtitan's own `torchtitan.train` at the pin (through
`titanbench.cpu_trainer`), real torchrun, gloo, compile, profiler dumps, float8 and async TP with
their CPU substitutions, then the report, checked as a user would. It runs in the smoke venv
(`make smoke-env`: the benchmark era's torch 2.8 / torchao 0.12 and the image's lock, ~7 GB), not in
the dev venv, and takes minutes (one run, shared by every test here).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from titanbench import report
from titanbench.stats import summarize_file

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parent.parent
SMOKE_VENV = Path(os.environ.get("TITANBENCH_SMOKE_VENV", REPO / ".venv-smoke"))
SMOKE_TIMEOUT = 2400
RUNS = {"vanilla-bf16", "async-bf16", "vanilla-float8_tensorwise", "async-float8_tensorwise"}
ROWWISE = {"vanilla-float8_rowwise", "async-float8_rowwise"}


@pytest.fixture(scope="module")
def smoke_bin() -> Path:
    if not (SMOKE_VENV / "bin" / "titanbench").is_file():
        pytest.skip(f"no smoke venv at {SMOKE_VENV}: `make smoke-env` builds it")
    return SMOKE_VENV / "bin"


@pytest.fixture(scope="module")
def torchtitan_dir(smoke_bin) -> Path:
    """The checkout the smoke venv has torchtitan from (editable): where the trainer runs."""
    code = "import pathlib, torchtitan; print(pathlib.Path(torchtitan.__file__).parent.parent)"
    done = subprocess.run([smoke_bin / "python", "-c", code], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def smoke_run(smoke_bin, torchtitan_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    scratch = root / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    argv = [smoke_bin / "titanbench", "run", "--model", "smoke", "--device", "cpu"]
    argv += ["--torchtitan-dir", str(torchtitan_dir), "--results", str(root / "results"), "--run-id", "smoke"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=SMOKE_TIMEOUT, check=False)
    return done.returncode, done.stdout + done.stderr, root / "results" / "smoke", scratch


def result(run_dir: Path, config: str) -> dict:
    return json.loads((run_dir / "smoke" / config / "result.json").read_text())


def test_the_smoke_venv_is_consistent(smoke_bin):
    """The image's lock plus torchtitan's tree at the pin: every requirement met (the tomli class of defect)."""
    done = subprocess.run([smoke_bin / "pip", "check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_four_configs_train_ok_with_their_evidence_and_rowwise_is_skipped(smoke_run):
    code, output, run_dir, _ = smoke_run
    assert code == 0, output[-5000:]
    for config in RUNS:
        assert result(run_dir, config)["status"] == "ok", (config, result(run_dir, config))
        assert result(run_dir, config)["evidence_checked"] is True
    for config in ROWWISE:
        skipped = result(run_dir, config)
        assert skipped["status"] == "skipped" and "row-wise float8 has no CPU path" in skipped["reason"]
        assert not (run_dir / "smoke" / config / "train.log").exists()
    assert "Traceback" not in output


def test_the_report_shows_the_evidence_and_the_skipped_configs(smoke_run):
    _, _, run_dir, _ = smoke_run
    doc = json.loads((run_dir / report.RESULTS_JSON).read_text())
    configs = {c["config"]: c for c in doc["models"][0]["configs"]}
    for config in RUNS:
        tp_type, quantization = config.split("-")
        assert configs[config]["evidence"] == {
            "async_tp": tp_type == "async",
            "float8_recipe": "tensorwise" if quantization != "bf16" else None,
        }
        assert configs[config]["measured_tps"] > 0
    assert (
        configs["async-bf16"]["speedup"]
        == configs["async-bf16"]["measured_tps"] / configs["vanilla-bf16"]["measured_tps"]
    )
    markdown = (run_dir / report.RESULTS_MD).read_text()
    assert "Llama3 debug model (smoke) on 4 CPU processes (gloo) with FSDP=2, TP=2" in markdown
    assert "No published numbers for this matrix" in markdown
    assert "skipped: not run on cpu: row-wise float8 has no CPU path" in markdown
    assert "CPU substitution symm-mem-reference-ops" in markdown
    assert (run_dir / report.RESULTS_PNG).read_bytes().startswith(b"\x89PNG")


def test_the_report_numbers_are_what_parse_reads_from_the_same_logs(smoke_run):
    _, _, run_dir, _ = smoke_run
    doc = json.loads((run_dir / report.RESULTS_JSON).read_text())
    configs = {c["config"]: c for c in doc["models"][0]["configs"]}
    for config in RUNS:
        parsed = summarize_file(run_dir / "smoke" / config / "train.log")
        assert parsed.n >= 1, config
        assert configs[config]["measured_tps"] == parsed.avg_tps
        assert configs[config]["summary"]["used_steps"] == parsed.used_steps


def test_the_profiler_dumps_the_log_reports_are_not_averaged(smoke_run):
    _, _, run_dir, _ = smoke_run
    parsed = summarize_file(run_dir / "smoke" / "vanilla-bf16" / "train.log")
    assert parsed.dropped[20].startswith("profiler: trace dumped at step 20")
    assert parsed.dropped[25].startswith("profiler: first window after")
    assert (run_dir / "smoke" / "vanilla-bf16" / "outputs" / "profile_trace" / "iteration_20").is_dir()


def test_compile_writes_only_into_each_configs_own_cache(smoke_run):
    _, _, run_dir, scratch = smoke_run
    assert not list(scratch.glob("torchinductor_*")), "inductor wrote outside the per-config caches"
    cache = run_dir.parent / "cache" / "smoke"
    for config in RUNS:
        assert any((cache / config / "inductor").iterdir())
        assert (cache / config / "tmp").is_dir()

"""`titanbench parse` through click: JSON and text output, options, env fallbacks, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from titanbench.cli import main
from titanbench.stats import summarize_file

LOGS = Path(__file__).parent / "data" / "logs"
DUMP_LOG = LOGS / "torchtitan_pr1287_profiler_dump.log"


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["parse", *args], env=env)


def test_json_output() -> None:
    result = invoke(str(DUMP_LOG), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == summarize_file(DUMP_LOG).to_dict()
    assert data["used_steps"] == [220, 230, 240, 250]
    assert data["avg_tps"] == 5865.75
    assert data["n"] == 4
    assert data["windows"][1] == {
        "step": 210,
        "tps": 5593.0,
        "loss": 6.0388,
        "memory_gib": 49.66,
        "memory_pct": 52.28,
        "tflops": 323.92,
        "mfu": 32.75,
        "grad_norm": None,
    }


def test_missing_fields_are_null() -> None:
    data = json.loads(invoke(str(LOGS / "torchtitan_pr153_wps.log"), "--json").output)
    assert {(w["tflops"], w["mfu"]) for w in data["windows"]} == {(None, None)}


def test_text_output() -> None:
    result = invoke(str(DUMP_LOG))
    assert result.exit_code == 0, result.output
    assert "no: profiler: trace dumped at step 200" in result.output
    assert "average tps:  5,865.8" in result.output
    assert "Method:" in result.output


def test_warmup_and_profile_freq_options() -> None:
    late = json.loads(invoke(str(DUMP_LOG), "--json", "--warmup-steps", "235").output)
    assert late["used_steps"] == [240, 250]
    forced = json.loads(invoke(str(DUMP_LOG), "--json", "--profile-freq", "40").output)
    # Dumps at 200 (logged) and 240 (forced): 200, 210, 240, 250 are dropped.
    assert forced["used_steps"] == [220, 230]
    nothing = json.loads(invoke(str(DUMP_LOG), "--json", "--profile-freq", "20").output)
    assert (nothing["n"], nothing["avg_tps"], nothing["median_tps"], nothing["stdev_tps"]) == (0, None, None, None)


def test_env_var_fallbacks() -> None:
    env = {"TITANBENCH_WARMUP_STEPS": "235", "TITANBENCH_PROFILE_FREQ": "250"}
    assert json.loads(invoke(str(DUMP_LOG), "--json", env=env).output)["used_steps"] == [240]


def test_help_has_an_example_and_the_env_vars() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Example:" in result.output and "titanbench parse train.log --json" in result.output
    assert "TITANBENCH_WARMUP_STEPS" in result.output and "TITANBENCH_PROFILE_FREQ" in result.output


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    (tmp / "empty.log").write_text("")
    (tmp / "no_metrics.log").write_text("[rank0]:[titan] 2025-06-13 10:00:00,000 - root - INFO - Training starts\n")
    return {
        "no such log file": tmp / "missing.log",
        "empty": tmp / "empty.log",
        "no torchtitan metric lines": tmp / "no_metrics.log",
        "is a directory": tmp,
    }


@pytest.mark.parametrize("message", ["no such log file", "empty", "no torchtitan metric lines", "is a directory"])
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_bad_input_is_one_error_line(tmp_path: Path, message: str, json_flag: list[str]) -> None:
    path = _bad_inputs(tmp_path)[message]
    result = invoke(str(path), *json_flag)
    assert result.exit_code == 1
    assert result.output.splitlines() == [result.output.strip()]
    assert result.output.startswith("Error: ") and message in result.output and str(path) in result.output
    assert "Traceback" not in result.output


def test_parse_imports_no_torch_matplotlib_or_docker() -> None:
    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from titanbench.cli import main\n"
        f"result = CliRunner().invoke(main, ['parse', {str(DUMP_LOG)!r}, '--json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(json.dumps(sorted(m for m in ('torch', 'matplotlib', 'docker') if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []

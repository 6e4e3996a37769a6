"""`titanbench plan` through click: JSON shape, one-line errors, torchtitan's real parser."""

import json

import pytest
import yaml
from click.testing import CliRunner

from titanbench.cli import main
from titanbench.paths import runs_dir

REQUIRED_KEYS = {
    "model", "config", "tp_type", "quantization", "steps", "topology",
    "torchtitan_args", "launcher_argv", "env", "deviations", "published_tps",
}  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(main, ["plan", *args], catch_exceptions=False)


def test_json_lists_twelve_configs_with_the_documented_keys():
    result = invoke("--model", "all", "--format", "json", "--trainer", "tests.stand_in_trainer")
    assert result.exit_code == 0, result.output
    configs = json.loads(result.stdout)["configs"]
    assert len(configs) == 12
    for entry in configs:
        assert entry.keys() >= REQUIRED_KEYS
        assert set(entry["topology"]) == {"nodes", "gpus_per_node", "tp", "fsdp"}
        assert "--job.config_file" in entry["torchtitan_args"]
        assert entry["published_tps"] > 0


def test_text_shows_deviations_and_the_command():
    result = invoke("--model", "8b", "--nodes", "1", "--tp", "4", "--trainer", "tests.stand_in_trainer")
    assert result.exit_code == 0, result.output
    assert "deviations: nodes 1 (published 8); tp 4 (published 8); fsdp 2 (published 8)" in result.stdout
    assert "torchrun --nnodes 1 --nproc-per-node 8" in result.stdout
    assert "--parallelism.tensor_parallel_degree=4" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "405b"], "Error: unknown model '405b'"),
        (["--model", "8b", "--nodes", "1"], "Error: llama3_8b: FSDP degree 1"),
        (["--model", "70b", "--nodes", "1", "--tp", "4"], "Error: llama3_70b: weights, gradients and AdamW state"),
        (["--model", "8b", "--dataset", "c4_test", "--dataset-path", "/data/c4"], "Error: --dataset-path is a copy"),
        (["--model", "8b", "--device", "cpu"], "Error: llama3_8b runs on CUDA GPUs only"),
        # Asked to validate, it must not exit 0 having skipped the validation.
        (["--model", "8b", "--trainer", "my_fork.train", "--validate"], "Error: --validate: trainer my_fork.train"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message):
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.output.startswith(message)
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_malformed_spec_file_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: llama\nconfigs: [\n")
    result = invoke("--model", str(path))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}: malformed YAML")


@pytest.mark.torchtitan
def test_torchtitans_own_parser_accepts_all_twelve_configs():
    pytest.importorskip("torchtitan.config_manager")
    result = invoke("--model", "all", "--validate", "--format", "json")
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert len(notes) == 12 and all("parsed" in n for n in notes)


@pytest.mark.torchtitan
def test_torchtitans_parser_rejects_an_unknown_flag(tmp_path):
    pytest.importorskip("torchtitan.config_manager")
    data = yaml.safe_load((runs_dir() / "llama3_8b.yaml").read_text())
    data["configs"][0]["flags"] = "--training.no_such_flag=1"
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    result = invoke("--model", str(path), "--validate")
    assert result.exit_code == 1
    assert result.output.startswith("Error: llama3_8b/vanilla-bf16: torchtitan's ConfigManager rejects the flags")
    assert "Unrecognized options: --training.no-such-flag=1" in result.output
    assert result.output.count("\n") == 1


@pytest.mark.torchtitan
def test_torchtitans_parser_rejects_a_bad_override(tmp_path):
    pytest.importorskip("torchtitan.config_manager")
    data = yaml.safe_load((runs_dir() / "llama3_8b.yaml").read_text())
    data["common_flags"] += " --training.compile=True"
    path = tmp_path / "typed-bool.yaml"
    path.write_text(yaml.safe_dump(data))
    result = invoke("--model", str(path), "--validate")
    assert result.exit_code == 1
    assert "rejects the flags" in result.output


def test_a_token_in_the_environment_never_reaches_the_plan(tmp_path):
    token = "hf_planSecretValue123456"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    env = {"HF_TOKEN": token, "WANDB_API_KEY": token, "HF_TOKEN_PATH": str(token_file)}
    for fmt in ("text", "json"):
        result = CliRunner().invoke(
            main, ["plan", "--model", "all", "--format", fmt, "--trainer", "tests.stand_in_trainer"], env=env
        )
        assert result.exit_code == 0, result.output
        assert token not in result.output

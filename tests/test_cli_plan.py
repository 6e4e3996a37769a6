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


# ---- the cost estimate (issue 14) ------------------------------------------------------------------

STUB = ("--trainer", "tests.stand_in_trainer")


def test_text_prints_each_configs_cost_and_the_matrix_cost():
    result = invoke("--model", "70b", *STUB, "--torchtitan-dir", "/nonexistent")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    costs = [line for line in lines if line.startswith("cost (estimate from the published TPS")]
    assert len(costs) == 6
    # 16 x 8192 / (8 x 597.3) = 27.4 s; 200 steps = 1.5 h; x 256 GPUs = 390 GPU-hours.
    assert costs[0].startswith("cost (estimate from the published TPS; compile and start-up aside): 27.4 s/step ")
    assert (
        "assumed from the spec: /nonexistent/torchtitan/models/llama3/train_configs/llama3_70b.toml not found"
        in costs[0]
    )
    assert costs[0].endswith("x 200 steps = 1.5 h wall, 390 GPU-hours on 256 GPUs")
    assert lines[-1] == (
        "cost of llama3_70b (estimate from the published TPS; compile and start-up aside): "
        "5.8 h wall, 1,484 GPU-hours on 256 GPUs"
    )


def test_json_carries_the_estimates():
    result = invoke("--model", "all", "--format", "json", *STUB)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    first = next(c for c in doc["configs"] if (c["model"], c["config"]) == ("llama3_8b", "vanilla-bf16"))
    assert first["estimate"]["step_s"] == pytest.approx(12 * 8192 / (8 * 4378))
    assert first["estimate"]["gpu_hours"] == pytest.approx(100 * first["estimate"]["step_s"] * 64 / 3600)
    models = {m["model"]: m for m in doc["estimate"]["models"]}
    assert models["llama3_70b"]["wall_s"] / 3600 == pytest.approx(5.8, abs=0.05)
    assert models["llama3_70b"]["gpu_hours"] == pytest.approx(models["llama3_70b"]["wall_s"] * 256 / 3600)
    assert doc["estimate"]["gpu_hours"] == pytest.approx(sum(m["gpu_hours"] for m in models.values()))
    assert "estimate" in doc["estimate"]["label"]


def test_seq_len_is_read_from_the_train_config_toml_when_present(tmp_path):
    toml = tmp_path / "torchtitan" / "models" / "llama3" / "train_configs" / "llama3_70b.toml"
    toml.parent.mkdir(parents=True)
    toml.write_text("[training]\nlocal_batch_size = 8\nseq_len = 4096\n")
    result = invoke("--model", "70b", "--format", "json", *STUB, "--torchtitan-dir", str(tmp_path))
    cost = json.loads(result.stdout)["configs"][0]["estimate"]
    # The toml's seq_len; the local batch size is still the flags' 16.
    assert (cost["seq_len"], cost["local_batch_size"]) == (4096, 16)
    assert cost["seq_len_source"] == f"from {toml}"
    assert cost["step_s"] == pytest.approx(16 * 4096 / (8 * 597.3))


def user_spec(tmp_path, seq_len_key: str, flags: str = "") -> str:
    path = tmp_path / "mine.yaml"
    path.write_text(
        f"model: mine\ntitle: Mine\nparams: 1.0e9\ntrain_config: mine.toml\n{seq_len_key}"
        "topology: {nodes: 1, gpus_per_node: 8, tp: 2, fsdp: 4}\n"
        "heading: {gpu: H100, activation_checkpointing: none, local_batch_size: 4}\n"
        f"common_flags: --parallelism.tensor_parallel_degree=2 --training.local-batch-size=4 {flags}\n"
        "configs:\n  - {id: vanilla-bf16, tp_type: vanilla, quantization: bf16, steps: 50, published_tps: 1000}\n"
    )
    return str(path)


def test_seq_len_set_by_the_flags_wins(tmp_path):
    spec = user_spec(tmp_path, "seq_len: 2048\n", "--training.seq_len=2048")
    result = invoke("--model", spec, "--format", "json", *STUB, "--torchtitan-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)["configs"][0]["estimate"]
    assert (cost["seq_len"], cost["seq_len_source"]) == (2048, "from the flags")
    assert cost["step_s"] == pytest.approx(4 * 2048 / (2 * 1000))


def test_a_spec_seq_len_that_contradicts_the_flags_is_one_error_line(tmp_path):
    result = invoke("--model", user_spec(tmp_path, "seq_len: 8192\n", "--training.seq_len=2048"), *STUB)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "seq_len is 8192 but vanilla-bf16's flags run --training.seq_len=2048" in result.output


def test_no_seq_len_anywhere_gives_no_estimate(tmp_path):
    result = invoke("--model", user_spec(tmp_path, ""), *STUB, "--torchtitan-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "cost: no estimate (no seq len)" in result.stdout.splitlines()


def test_the_smoke_has_no_published_tps_so_no_estimate():
    result = invoke("--model", "smoke", "--device", "cpu", "--format", "json", *STUB)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert all(c["estimate"] is None for c in doc["configs"])
    assert doc["estimate"]["models"][0]["configs_estimated"] == 0
    text = invoke("--model", "smoke", "--device", "cpu", *STUB).stdout.splitlines()
    assert text[-1] == "cost of smoke: no estimate (no published TPS)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # nan compares false with every bound: it would switch the memory guard off.
        (["--gpu-mem-gib", "nan"], "Invalid value for '--gpu-mem-gib': 'nan' is not a finite number"),
        (["--gpu-mem-gib", "inf"], "Invalid value for '--gpu-mem-gib'"),
        (["--nodes", "99999999999999999999"], "Invalid value for '--nodes'"),
        (["--steps", "1000000000000"], "Invalid value for '--steps'"),
    ],
)
def test_values_outside_any_real_run_are_refused_where_they_enter(args, message):
    result = invoke("--model", "8b", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_dataset_url_stays_a_url_and_one_with_credentials_is_refused_without_showing_them():
    """Planted: credentials in a URL given to --dataset-path (made an absolute local path before)."""
    result = invoke("--model", "8b", "--format", "json", "--dataset-path", "hf://datasets/allenai/c4")
    assert result.exit_code == 0, result.output
    flags = json.loads(result.stdout)["configs"][0]["torchtitan_args"]
    assert "--training.dataset_path=hf://datasets/allenai/c4" in flags
    refused = invoke("--model", "8b", "--dataset-path", "https://bob:pa55w0rd@data.example/c4")
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert refused.output.startswith("Error: --dataset-path https://***@data.example/c4: a URL with credentials")
    assert "pa55w0rd" not in refused.output


def test_accepting_socket_transport_reaches_every_plan_and_the_nccl_logging_stays():
    accepted = CliRunner().invoke(main, ["plan", "--model", "70b", "--accept-socket-transport", "--format", "json"])
    default = CliRunner().invoke(main, ["plan", "--model", "70b", "--format", "json"])
    assert accepted.exit_code == 0 and default.exit_code == 0, accepted.output
    for output, accepts in ((accepted.output, True), (default.output, False)):
        configs = json.loads(output)["configs"]
        assert [c["accept_socket_transport"] for c in configs] == [accepts] * 6
        assert all(c["env"]["NCCL_DEBUG"] == "INFO" for c in configs)


def test_repeat_multiplies_each_configs_and_the_matrix_cost():
    once = json.loads(invoke("--model", "70b", "--format", "json", *STUB).stdout)
    thrice = json.loads(invoke("--model", "70b", "--format", "json", "--repeat", "3", *STUB).stdout)
    for single, repeated in zip(once["configs"], thrice["configs"], strict=True):
        one, three = single["estimate"], repeated["estimate"]
        assert (one["repeat"], three["repeat"], three["step_s"]) == (1, 3, one["step_s"])
        assert (three["wall_s"], three["gpu_hours"]) == pytest.approx((3 * one["wall_s"], 3 * one["gpu_hours"]))
    assert thrice["estimate"]["gpu_hours"] == pytest.approx(3 * once["estimate"]["gpu_hours"])
    lines = invoke("--model", "70b", "--repeat", "3", *STUB, "--torchtitan-dir", "/nonexistent").stdout.splitlines()
    cost = next(line for line in lines if line.startswith("cost (estimate"))
    assert cost.endswith("x 200 steps x 3 runs (--repeat) = 4.6 h wall, 1,170 GPU-hours on 256 GPUs")
    assert lines[-1].endswith("17.4 h wall, 4,453 GPU-hours on 256 GPUs")


def test_until_stable_is_a_deviation_of_every_config_and_its_cost_is_the_most():
    result = invoke("--model", "70b", "--until-stable", "1.5", *STUB)
    assert result.exit_code == 0, result.output
    deviation = (
        "stops when the 95% interval is within +-1.5% of the mean (--until-stable), not at the published step count"
    )
    assert result.stdout.count(f"deviations: {deviation}") == 6
    assert result.stdout.splitlines()[-1] == "--until-stable 1.5: a config may stop sooner; these costs are the most"
    doc = json.loads(invoke("--model", "70b", "--until-stable", "1.5", "--format", "json", *STUB).stdout)
    assert all(c["deviations"] == [deviation] for c in doc["configs"])


@pytest.mark.parametrize("value", ["0", "-1", "50.5", "nan", "inf"])
def test_an_until_stable_bound_outside_0_to_50_percent_is_one_error_line(value):
    result = invoke("--model", "8b", "--until-stable", value)
    assert result.exit_code == 2 and "Invalid value for '--until-stable'" in result.output
    assert "Traceback" not in result.output

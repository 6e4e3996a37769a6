import json
import os
import subprocess
import sys

import pynvml
import pytest
from click.testing import CliRunner

from conftest import skip_on_this_hardware
from fake_hub import serving
from fake_nvml import IBV, FakeNvml, all_pairs, h100, nvml_8x_h100, sample_runner
from titanbench import doctor, gpuinfo, staging
from titanbench.cli import main
from titanbench.doctor import FAIL, OK, WARN
from titanbench.pins import pins
from tokenizer_files import write_tiktoken_file

TOKEN = "hf_" + "Dr4" * 12
FILE_TOKEN = "file-token-" + "z3" * 10


def by_name(checks):
    return {c.name: c for c in checks}


def statuses(checks):
    return {c.name: c.status for c in checks}


@pytest.fixture
def clean_hf(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in (
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "TITANBENCH_HF_TOKEN_FILE",
        "TITANBENCH_DATASET_PATH",
        "TITANBENCH_TORCHTITAN_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def test_every_non_ok_check_has_a_fix():
    checks = [
        *doctor.gpu_checks(None, "NVML: no driver"),
        *doctor.gpu_checks(gpuinfo.read_nvidia_smi(sample_runner()), None, expect_gpus=16),
        *doctor.rdma_checks(gpuinfo.parse_ibv_devinfo(IBV.read_text()), None),
        *doctor.rdma_checks([], "none"),
        *doctor.env_checks({"NCCL_IB_DISABLE": "1", "NCCL_ALGO": "Ring"}),
    ]
    assert {c.status for c in checks} == {OK, WARN, FAIL}
    assert all(c.fix for c in checks if c.status != OK)


def test_no_gpu_is_one_clear_fail():
    [check] = doctor.gpu_checks(None, "NVML: NVML Shared Library Not Found; nvidia-smi: not found on PATH")
    assert (check.name, check.status) == ("gpu.visible", FAIL)
    assert "nvidia-smi: not found on PATH" in check.detail
    assert "--gpus all" in check.fix


def test_recorded_8x_h100_at_700w_warns_only_on_power():
    checks = doctor.gpu_checks(gpuinfo.read_nvidia_smi(sample_runner()), None)
    assert statuses(checks) == {
        "gpu.visible": OK,
        "gpu.count": OK,
        "gpu.model": OK,
        "gpu.compute_capability": OK,
        "gpu.driver": OK,
        "gpu.nvlink": OK,
        "gpu.power_limit": WARN,
        "gpu.clocks": OK,
    }
    power = by_name(checks)["gpu.power_limit"]
    assert "700 W" in power.detail and "500 W" in power.detail
    assert "nvidia-smi -pl 500" in power.fix
    assert "18 links per GPU" in by_name(checks)["gpu.nvlink"].detail


def test_nvml_node_matching_the_reference_is_all_ok():
    checks = doctor.gpu_checks(gpuinfo.read_nvml(nvml_8x_h100()), None, expect_gpus=8)
    assert {c.status for c in checks} == {OK}


@pytest.mark.parametrize(("visible", "status"), [(None, OK), ("0,1,2,3,4,5,6,7", OK), ("0,1,2,3", FAIL)])
def test_gpu_count_obeys_cuda_visible_devices(visible, status):
    # NVML lists every GPU of the node; torchrun's processes see only CUDA_VISIBLE_DEVICES.
    check = by_name(doctor.gpu_checks(gpuinfo.read_nvml(nvml_8x_h100()), None, 8, visible))["gpu.count"]
    assert check.status == status
    if status == FAIL:
        assert check.detail.startswith("4 GPU(s) usable (CUDA_VISIBLE_DEVICES=0,1,2,3), the plan needs 8")


def test_missing_nvlink_pair_fails_and_names_it():
    nvml = FakeNvml([h100(i) for i in range(4)], all_pairs(4) - {frozenset((1, 2))})
    nvlink = by_name(doctor.gpu_checks(gpuinfo.read_nvml(nvml), None))["gpu.nvlink"]
    assert nvlink.status == FAIL
    assert "1-2" in nvlink.detail and "0-1" not in nvlink.detail


def test_hardware_slowdown_fails_software_power_cap_warns():
    gpus = [h100(i) for i in range(8)]
    gpus[3]["reasons"] = pynvml.nvmlClocksEventReasonHwThermalSlowdown
    clocks = by_name(doctor.gpu_checks(gpuinfo.read_nvml(FakeNvml(gpus, all_pairs(8))), None))["gpu.clocks"]
    assert clocks.status == FAIL and "GPU3: hw_thermal_slowdown" in clocks.detail
    capped = nvml_8x_h100(reasons=pynvml.nvmlClocksEventReasonSwPowerCap)
    assert by_name(doctor.gpu_checks(gpuinfo.read_nvml(capped), None))["gpu.clocks"].status == WARN


def test_older_gpus_and_drivers_fail():
    nvml = FakeNvml([h100(i, name="NVIDIA A100-SXM4-80GB", cc=(8, 0)) for i in range(8)], all_pairs(8), driver="525.60")
    checks = by_name(doctor.gpu_checks(gpuinfo.read_nvml(nvml), None))
    assert checks["gpu.compute_capability"].status == FAIL
    assert checks["gpu.model"].status == WARN
    assert checks["gpu.driver"].status == FAIL


def test_gpu_count_fails_against_the_plan_and_warns_against_the_reference():
    four = FakeNvml([h100(i) for i in range(4)], all_pairs(4))
    assert by_name(doctor.gpu_checks(gpuinfo.read_nvml(four), None, expect_gpus=8))["gpu.count"].status == FAIL
    assert by_name(doctor.gpu_checks(gpuinfo.read_nvml(four), None))["gpu.count"].status == WARN


def test_rdma_recorded_ports():
    [check] = doctor.rdma_checks(gpuinfo.parse_ibv_devinfo(IBV.read_text()), None)
    assert check.status == WARN
    assert "8 of 9 port(s) ACTIVE" in check.detail and "mlx5_8/1 DOWN" in check.detail
    [check] = doctor.rdma_checks([], "no devices under /sys/class/infiniband")
    assert check.status == FAIL and "/dev/infiniband" in check.fix
    down = [gpuinfo.RdmaPort("mlx5_0", 1, "DOWN")]
    assert doctor.rdma_checks(down, None)[0].status == FAIL


def test_known_bad_variables():
    checks = by_name(doctor.env_checks({"NCCL_IB_DISABLE": "1", "TORCH_COMPILE_DISABLE": "1", "NCCL_PROTO": "LL"}))
    assert checks["env.NCCL_IB_DISABLE"].status == FAIL
    assert checks["env.TORCH_COMPILE_DISABLE"].status == FAIL
    assert checks["env.NCCL_PROTO"].status == WARN
    assert statuses(doctor.env_checks({"NCCL_IB_DISABLE": "0"})) == {"env": OK}


def test_memlock_below_unlimited_fails():
    code = (
        "import resource; from titanbench.doctor import memlock_check;"
        "resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]));"
        "c = memlock_check(); print(c.status, c.detail)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("FAIL ulimit -l is 64 KiB")


def test_missing_shm_fails(tmp_path):
    check = doctor.shm_check(tmp_path / "no-shm")
    assert check.status == FAIL and "--ipc=host" in check.fix


def test_tokenizer_and_token_checks(clean_hf, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TITANBENCH_DATASET_PATH", str(tmp_path))
    missing = by_name(doctor.asset_checks())
    assert missing["assets.tokenizer"].status == FAIL
    assert "titanbench assets tokenizer" in missing["assets.tokenizer"].fix
    assert missing["assets.hf_token"].status == FAIL

    write_tiktoken_file(tmp_path / staging.DEFAULT_TOKENIZER_DEST / staging.TOKENIZER_FILE, staging.LLAMA3_BASE_RANKS)
    staged = by_name(doctor.asset_checks())
    assert staged["assets.tokenizer"].status == OK and "128,000 ranks" in staged["assets.tokenizer"].detail
    assert staged["assets.hf_token"].status == OK and "not needed" in staged["assets.hf_token"].detail

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    token = by_name(doctor.asset_checks())["assets.hf_token"]
    assert token.detail == "set via HF_TOKEN (value not shown)"


def test_tokenizer_is_looked_for_in_the_torchtitan_checkout(clean_hf, monkeypatch, tmp_path):
    checkout = tmp_path / "torchtitan"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TITANBENCH_DATASET_PATH", str(tmp_path))
    monkeypatch.setenv("TITANBENCH_TORCHTITAN_DIR", str(checkout))
    write_tiktoken_file(tmp_path / staging.DEFAULT_TOKENIZER_DEST / staging.TOKENIZER_FILE, staging.LLAMA3_BASE_RANKS)
    elsewhere = by_name(doctor.asset_checks())["assets.tokenizer"]
    assert elsewhere.status == FAIL, "a tokenizer beside the checkout is not the one torchtitan reads"
    assert f"--dest {checkout / staging.DEFAULT_TOKENIZER_DEST}" in elsewhere.fix
    write_tiktoken_file(checkout / staging.DEFAULT_TOKENIZER_DEST / staging.TOKENIZER_FILE, staging.LLAMA3_BASE_RANKS)
    assert by_name(doctor.asset_checks())["assets.tokenizer"].status == OK


def test_dataset_local_copy(clean_hf, monkeypatch, tmp_path):
    monkeypatch.setenv("TITANBENCH_DATASET_PATH", str(tmp_path))
    assert doctor.dataset_check().status == FAIL
    shard = tmp_path / staging.C4_TRAIN_SHARD.format(0)
    shard.parent.mkdir()
    shard.write_bytes(b"x")
    check = doctor.dataset_check()
    assert check.status == OK and "1 C4 train shard" in check.detail


def test_a_staged_copy_that_does_not_split_evenly_over_the_dp_ranks_warns(clean_hf, monkeypatch, tmp_path):
    monkeypatch.setenv("TITANBENCH_DATASET_PATH", str(tmp_path))
    (tmp_path / "en").mkdir()
    for index in range(12):
        (tmp_path / staging.C4_TRAIN_SHARD.format(index)).write_bytes(b"x")
    published = tuple(doctor.plan_scales("all", None, {}))
    assert {(s.model, s.dp) for s in published} == {("llama3_8b", 8), ("llama3_70b", 32)}
    uneven = doctor.dataset_check(published)
    assert uneven.status == WARN and "every rank reads every shard" in uneven.detail
    assert "llama3_8b 8" in uneven.detail and "--shards 32" in uneven.fix
    for index in range(12, 16):
        (tmp_path / staging.C4_TRAIN_SHARD.format(index)).write_bytes(b"x")
    assert doctor.dataset_check(tuple(doctor.plan_scales("8b", None, {}))).status == OK  # 16 = 2 x 8
    assert doctor.dataset_check(published).status == WARN  # but not a multiple of 70B's 32


def test_the_plan_scale_comes_from_nodes_then_the_scheduler_then_the_publication():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NNODES": "2"}
    assert [(s.nodes, s.dp) for s in doctor.plan_scales("8b", None, slurm)] == [(2, 2)]
    assert [(s.nodes, s.dp) for s in doctor.plan_scales("8b", 4, slurm)] == [(4, 4)]
    assert [(s.nodes, s.dp) for s in doctor.plan_scales("8b", None, {"PET_NNODES": "3"})] == [(3, 3)]
    assert [(s.nodes, s.dp) for s in doctor.plan_scales("70b", None, {})] == [(32, 32)]


def test_an_unknown_model_is_one_error_line():
    result = CliRunner().invoke(main, ["doctor", "--no-gpu", "--model", "nope"])
    assert result.exit_code == 1 and "unknown model 'nope'" in result.output and "Traceback" not in result.output


def dataset_check_in_a_fresh_process(tmp_path, scales: str = "()", **env: str) -> str:
    """`dataset_check()` where huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE at import, as in real use."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TITANBENCH_"))}
    code = (
        "from titanbench.doctor import dataset_check, plan_scales;"
        f"c = dataset_check({scales}); print(c.status, c.detail)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**base, "HF_HOME": str(tmp_path), **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_dataset_on_the_hub_reachable_or_not(tmp_path):
    shard = staging.C4_TRAIN_SHARD.format(0)
    with serving() as hub:
        missing = dataset_check_in_a_fresh_process(tmp_path, HF_ENDPOINT=hub.url)
        assert missing.startswith(f"FAIL cannot reach {staging.C4_REPO} on {hub.url}")
        hub.files[f"datasets/{staging.C4_REPO}/{shard}"] = b"shard"
        reachable = dataset_check_in_a_fresh_process(tmp_path, HF_ENDPOINT=hub.url)
        assert reachable == f"OK {staging.C4_REPO} reachable on {hub.url} (streamed by every rank)"
        assert ("HEAD", f"/datasets/{staging.C4_REPO}/resolve/main/{shard}") in {(m, p) for m, p, _ in hub.requests}
        seen = len(hub.requests)
        offline = dataset_check_in_a_fresh_process(tmp_path, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="1")
        assert offline.startswith("FAIL HF_HUB_OFFLINE is set")
        assert len(hub.requests) == seen
        many = "tuple(plan_scales('8b', None, {}))"
        streaming = dataset_check_in_a_fresh_process(tmp_path, scales=many, HF_ENDPOINT=hub.url)
        assert streaming.startswith(f"WARN {staging.C4_REPO} reachable on {hub.url}, but the plan streams it on")
        assert "8 nodes x 8 (llama3_8b)" in streaming
        one = "tuple(plan_scales('8b', 1, {}))"
        assert dataset_check_in_a_fresh_process(tmp_path, scales=one, HF_ENDPOINT=hub.url).startswith("OK")


@pytest.fixture
def secrets_set(clean_hf, monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(FILE_TOKEN + "\n")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("TITANBENCH_HF_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("TITANBENCH_DATASET_PATH", str(tmp_path / "no-data"))  # never reach for the real hub
    monkeypatch.setenv("NCCL_ALGO", f"Ring {TOKEN}")  # a secret inside a value doctor prints
    monkeypatch.chdir(tmp_path)


def test_doctor_on_this_machine_fails_clearly_without_traceback_or_secrets(secrets_set):
    result = CliRunner().invoke(main, ["doctor"])
    if "OK    gpu.visible" in result.output:
        skip_on_this_hardware("this machine has GPUs")
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "FAIL  gpu.visible" in result.output
    assert "fix: " in result.output
    assert result.output.strip().splitlines()[-1].startswith("doctor: ")
    assert "NCCL_ALGO=Ring ***" in result.output
    assert TOKEN not in result.output and FILE_TOKEN not in result.output


def test_doctor_json_is_valid_and_hides_secrets(secrets_set):
    result = CliRunner().invoke(main, ["doctor", "--json", "--no-gpu"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    names = [c["name"] for c in report["checks"]]
    assert not any(name.startswith(("gpu.", "rdma.")) for name in names)
    assert "assets.hf_token" in names
    assert "env.NCCL_ALGO" in names
    assert TOKEN not in result.output and FILE_TOKEN not in result.output


@pytest.mark.torchtitan
def test_pins_mode_runs_only_the_pin_checks(monkeypatch):
    pytest.importorskip("torchtitan.config_manager")
    monkeypatch.delenv("TITANBENCH_BUILD_MODE", raising=False)
    result = CliRunner().invoke(main, ["doctor", "--pins", "--no-gpu", "--json"])
    report = json.loads(result.output)
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"pins.torch", "pins.torchao", "pins.torchtitan", "pins.configs"}
    assert checks["pins.configs"]["status"] == OK
    assert checks["pins.configs"]["detail"].startswith("12 published configs parse")
    import torch

    if torch.version.git_version != pins()["TORCH_COMMIT"]:
        assert checks["pins.torch"]["status"] == FAIL
        assert pins()["TORCH_COMMIT"] in checks["pins.torch"]["detail"]
        assert result.exit_code == 1


def test_help_has_an_example():
    result = CliRunner().invoke(main, ["doctor", "--help"])
    assert "titanbench doctor --pins --no-gpu" in result.output
    assert "TITANBENCH_EXPECT_GPUS" in result.output


def test_a_torchtitan_commit_the_image_was_built_with_warns_and_any_other_fails(monkeypatch, tmp_path):
    """An image built with TORCHTITAN_COMMIT overridden (CI's test bundle) records that commit: its
    checkout passes the self-check with a WARN naming the pin; a checkout of any other commit FAILs."""
    checkout = tmp_path / "torchtitan"
    checkout.mkdir()
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setenv("TITANBENCH_TORCHTITAN_DIR", str(checkout))
    monkeypatch.setattr(doctor, "configs_check", lambda: doctor.Check("pins.configs", OK, "stubbed"))

    monkeypatch.setenv("TITANBENCH_TORCHTITAN_BUILT_COMMIT", head)
    built = by_name(doctor.pin_checks())["pins.torchtitan"]
    assert built.status == WARN
    assert head in built.detail and pins()["TORCHTITAN_COMMIT"] in built.detail and built.fix

    monkeypatch.setenv("TITANBENCH_TORCHTITAN_BUILT_COMMIT", "0" * 40)
    other = by_name(doctor.pin_checks())["pins.torchtitan"]
    assert other.status == FAIL and pins()["TORCHTITAN_COMMIT"] in other.detail


def test_a_node_that_passes_is_pointed_at_the_smoke_preflight_and_one_that_fails_is_not(monkeypatch):
    from titanbench.commands import doctor as command
    from titanbench.doctor import Check

    monkeypatch.setattr(command, "run_checks", lambda **_: [Check("gpu.visible", "OK", "8 x H100", "")])
    passed = CliRunner().invoke(main, ["doctor"])
    assert passed.exit_code == 0 and "next: `titanbench run --model smoke`" in passed.output
    monkeypatch.setattr(command, "run_checks", lambda **_: [Check("gpu.visible", "FAIL", "none", "install")])
    assert "--model smoke" not in CliRunner().invoke(main, ["doctor"]).output


def test_free_disk_is_checked_where_run_writes_results(monkeypatch, tmp_path):
    """doctor and run read the same setting (TITANBENCH_RESULTS), not two names for one idea."""
    monkeypatch.setenv("TITANBENCH_RESULTS", str(tmp_path / "results"))
    results = next(c for c in doctor.disk_checks() if c.name == "disk.results")
    assert results.detail.endswith(f"free at {tmp_path} (results)")


def test_the_reference_hardware_comes_from_the_published_specs():
    from titanbench.spec import load_spec

    spec = load_spec("70b")
    assert doctor.reference() == doctor.Reference(
        spec.heading.gpu, spec.hardware["gpus_per_host"], spec.hardware["power_limit_w"]
    )


NVIDIA_OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.133.20  Release Build\n"
NVIDIA_PROPRIETARY = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.133.20  Release Build\n"


@pytest.mark.parametrize(
    ("peermem", "kernel", "driver", "status", "detail"),
    [
        (True, "4.18.0-553.el8", NVIDIA_PROPRIETARY, doctor.OK, "nvidia_peermem is loaded"),
        (False, "5.15.0-105-generic", NVIDIA_OPEN, doctor.OK, "DMA-BUF: Linux 5.15.0-105-generic"),
        (False, "5.15.0-105-generic", NVIDIA_PROPRIETARY, doctor.WARN, "proprietary NVIDIA kernel modules"),
        (False, "5.4.0-150-generic", NVIDIA_OPEN, doctor.WARN, "no nvidia_peermem and no DMA-BUF path"),
        (False, "6.8.0", None, doctor.WARN, "unknown NVIDIA kernel modules"),
    ],
)
def test_gpudirect_needs_peermem_or_dma_buf(tmp_path, peermem, kernel, driver, status, detail):
    modules = tmp_path / "module"
    (modules / "nvidia_peermem" if peermem else modules).mkdir(parents=True)
    version = tmp_path / "version"
    if driver:
        version.write_text(driver)
    check = doctor.gpudirect_check(modules, kernel, version)
    assert (check.status, check.name) == (status, "rdma.gpudirect")
    assert detail in check.detail
    assert bool(check.fix) == (status != doctor.OK)

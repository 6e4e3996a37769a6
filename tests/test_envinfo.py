import importlib.metadata
import json
import subprocess

import pytest
from click.testing import CliRunner

from conftest import skip_on_this_hardware
from fake_dists import install_fake_dist
from titanbench import envinfo
from titanbench.cli import main
from titanbench.pins import pins

TOKEN = "hf_" + "Ev5" * 12
FILE_TOKEN = "file-token-" + "q7" * 10


@pytest.fixture
def clean_hf(monkeypatch, tmp_path):
    """No Hugging Face login of the developer's machine leaks into a test."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HF_TOKEN_PATH", "TITANBENCH_HF_TOKEN_FILE", "TITANBENCH_BUILD_MODE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def site(monkeypatch, tmp_path):
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_manifest_is_json_and_every_missing_section_says_why(clean_hf):
    m = envinfo.manifest()
    json.loads(json.dumps(m))
    assert m["schema"] == envinfo.SCHEMA
    assert m["host"]["python"]
    for section in ("gpu", "rdma", "nccl"):
        assert (m[section] is None) == (section in m["unavailable"]), section
    assert m["pins"]["torchtitan"]["expected_commit"] == pins()["TORCHTITAN_COMMIT"]


def test_environment_keeps_secret_names_masks_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("WANDB_API_KEY", "w" * 40)
    monkeypatch.setenv("NCCL_IB_HCA", "mlx5")
    monkeypatch.setenv("TITANBENCH_UNRELATED_EDITOR", "vim")
    monkeypatch.setenv("EDITOR", "vim")
    env = envinfo.environment()
    assert env["HF_TOKEN"] == "***"
    assert env["WANDB_API_KEY"] == "***"
    assert env["NCCL_IB_HCA"] == "mlx5"
    assert "EDITOR" not in env


@pytest.mark.parametrize("args", [["env", "--json"], ["env"]])
def test_env_command_never_prints_a_token(args, clean_hf, monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(FILE_TOKEN + "\n")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("TITANBENCH_HF_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("TITANBENCH_NOTE", f"copied {TOKEN} and {FILE_TOKEN}")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    assert FILE_TOKEN not in result.output
    if "--json" in args:
        assert json.loads(result.output)["env"]["HF_TOKEN"] == "***"
    else:
        assert "HF_TOKEN=***" in result.output


def test_job_identity_from_slurm_and_kubernetes(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NODEID", "3")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("JOBSET_NAME", "titanbench-8b")
    monkeypatch.setenv("PET_NODE_RANK", "3")
    job = envinfo.job()
    assert job["slurm"] == {"SLURM_JOB_ID": "4242", "SLURM_NODEID": "3"}
    assert job["kubernetes"]["JOBSET_NAME"] == "titanbench-8b"
    assert job["kubernetes"]["PET_NODE_RANK"] == "3"


def test_no_job_identity_outside_a_scheduler(monkeypatch):
    for name in [*envinfo.SLURM_IDENTITY, "KUBERNETES_SERVICE_HOST"]:
        monkeypatch.delenv(name, raising=False)
    assert envinfo.job() is None


def test_container_records_the_image_it_was_built_as(monkeypatch):
    monkeypatch.setenv("TITANBENCH_IMAGE", "titanbench:source-abc")
    monkeypatch.setenv("TITANBENCH_BUILD_MODE", "source")
    inside = envinfo.container()
    assert inside["image"] == {"TITANBENCH_IMAGE": "titanbench:source-abc", "TITANBENCH_BUILD_MODE": "source"}


def test_packages_in_pip_freeze_form_with_vcs_commit_and_no_url_password(site):
    install_fake_dist(
        site,
        "fakevcspkg",
        "1.0",
        {"url": "https://ci:hunter2secret@git.example.com/x.git", "vcs_info": {"vcs": "git", "commit_id": "ab" * 20}},
    )
    lines = envinfo.packages()
    assert f"click=={importlib.metadata.version('click')}" in lines
    assert f"fakevcspkg @ git+https://ci:***@git.example.com/x.git@{'ab' * 20}" in lines
    assert not any("hunter2secret" in line for line in lines)


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_torchtitan_commit_from_the_checkout(monkeypatch, tmp_path):
    git("init", "-q", cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x", cwd=tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    monkeypatch.setenv("TITANBENCH_TORCHTITAN_DIR", str(tmp_path))
    assert envinfo.torchtitan_commit() == (head, f"git checkout {tmp_path}")
    report = envinfo.pin_report()["torchtitan"]
    assert report["commit"] == head
    assert report["match"] is False


def test_torchtitan_dir_that_is_not_a_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("TITANBENCH_TORCHTITAN_DIR", str(tmp_path))
    commit, source = envinfo.torchtitan_commit()
    assert commit is None
    assert "is not a git checkout" in source


def test_torchao_pinned_commit_from_direct_url_matches(site, monkeypatch):
    monkeypatch.delenv("TITANBENCH_BUILD_MODE", raising=False)
    commit = pins()["TORCHAO_COMMIT"]
    install_fake_dist(
        site,
        "torchao",
        pins()["TORCHAO_VERSION"],
        {"url": pins()["TORCHAO_REPO"], "vcs_info": {"vcs": "git", "commit_id": commit}},
    )
    report = envinfo.pin_report()["torchao"]
    assert (report["commit"], report["match"]) == (commit, True)


def test_torchao_short_sha_in_local_version_matches(site, monkeypatch):
    monkeypatch.delenv("TITANBENCH_BUILD_MODE", raising=False)
    install_fake_dist(site, "torchao", f"{pins()['TORCHAO_VERSION']}+git{pins()['TORCHAO_COMMIT'][:7]}")
    assert envinfo.pin_report()["torchao"]["match"] is True


def test_torchao_other_commit_differs(site, monkeypatch):
    monkeypatch.delenv("TITANBENCH_BUILD_MODE", raising=False)
    install_fake_dist(site, "torchao", "0.0.1+git0000000")
    assert envinfo.pin_report()["torchao"]["match"] is False


def test_release_mode_compares_released_versions(site, monkeypatch):
    monkeypatch.setenv("TITANBENCH_BUILD_MODE", "release")
    install_fake_dist(site, "torchao", pins()["RELEASE_TORCHAO_VERSION"])
    report = envinfo.pin_report()
    assert report["mode"] == "release"
    assert report["torchao"]["match"] is True
    assert report["torch"]["expected_git_version"] == pins()["RELEASE_TORCH_GIT_VERSION"]


def test_nccl_version_from_the_nccl_wheel_when_torch_has_no_cuda(site):
    import torch

    if torch.version.cuda:
        skip_on_this_hardware("a CUDA torch reports its own NCCL")
    install_fake_dist(site, "nvidia-nccl-cu12", "2.21.5")
    assert envinfo.nccl_version() == ("2.21.5", "pip package nvidia-nccl-cu12")

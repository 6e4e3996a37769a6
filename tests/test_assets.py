import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fake_hub import FakeHub, serving
from titanbench import staging
from titanbench.cli import main
from tokenizer_files import write_tiktoken_file

TOKEN = "hf_" + "Tk9" * 12
REPO = staging.TOKENIZER_REPO
TITANBENCH = str(Path(sys.executable).parent / "titanbench")


@pytest.fixture
def hub():
    with serving() as fake:
        yield fake


@pytest.fixture(scope="module")
def llama_tokenizer(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return write_tiktoken_file(path, staging.LLAMA3_BASE_RANKS).read_bytes()


def run_cli(args: list[str], hub: FakeHub, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The installed `titanbench` in a fresh process, so HF_ENDPOINT is read as huggingface_hub reads it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    base.update(HF_ENDPOINT=hub.url, HF_HOME=str(cwd / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1", **env)
    return subprocess.run([TITANBENCH, *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=120)


def assert_token_nowhere(token: str, result: subprocess.CompletedProcess, root: Path):
    assert token not in result.stdout + result.stderr
    for path in root.rglob("*"):
        if path.is_file() and path.name != "token":
            assert token.encode() not in path.read_bytes(), path


def test_downloads_verifies_and_keeps_the_tokenizer(hub, tmp_path, llama_tokenizer):
    hub.files[f"{REPO}/{staging.TOKENIZER_FILE}"] = llama_tokenizer
    first = run_cli(["assets", "tokenizer"], hub, tmp_path, HF_TOKEN=TOKEN)
    assert first.returncode == 0, first.stderr
    target = tmp_path / "assets" / "tokenizer" / "original" / "tokenizer.model"
    assert target.read_bytes() == llama_tokenizer
    assert "downloaded and verified" in first.stdout
    assert f"Bearer {TOKEN}" in {auth for _, _, auth in hub.requests}
    assert_token_nowhere(TOKEN, first, tmp_path)
    assert [p.name for p in target.parent.parent.parent.iterdir()] == ["tokenizer"]  # no temp folder left

    seen = len(hub.requests)
    second = run_cli(["assets", "tokenizer"], hub, tmp_path, HF_TOKEN=TOKEN)
    assert second.returncode == 0, second.stderr
    assert "already present and valid, kept" in second.stdout
    assert len(hub.requests) == seen


def test_invalid_file_in_place_is_replaced(hub, tmp_path, llama_tokenizer):
    hub.files[f"{REPO}/{staging.TOKENIZER_FILE}"] = llama_tokenizer
    target = write_tiktoken_file(tmp_path / "tok" / staging.TOKENIZER_FILE, 256)
    result = run_cli(["assets", "tokenizer", "--dest", "tok"], hub, tmp_path, HF_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == llama_tokenizer


def test_401_says_access_must_be_requested(hub, tmp_path):
    hub.refuse["gated/llama"] = 401
    result = run_cli(["assets", "tokenizer", "--repo", "gated/llama"], hub, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "HTTP 401" in lines[0]
    assert "request access on the model page" in lines[0]
    assert f"{hub.url}/gated/llama" in lines[0]
    assert "no token was given" in lines[0]


def test_403_with_a_token_file_blames_the_token_and_hides_it(hub, tmp_path):
    hub.refuse["gated/llama"] = 403
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = run_cli(
        ["assets", "tokenizer", "--repo", "gated/llama", "--hf-token-file", str(token_file)], hub, tmp_path
    )
    assert result.returncode == 1
    assert "HTTP 403" in result.stderr and "the token was refused" in result.stderr
    assert f"Bearer {TOKEN}" in {auth for _, _, auth in hub.requests}
    assert_token_nowhere(TOKEN, result, tmp_path)


def test_404_is_one_clear_line(hub, tmp_path):
    result = run_cli(["assets", "tokenizer", "--repo", "someone/empty"], hub, tmp_path, HF_TOKEN=TOKEN)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: someone/empty: {staging.TOKENIZER_FILE} not found (HTTP 404) at {hub.url}/someone/empty: "
        "check the repo id and file name."
    ]


def test_wrong_rank_count_fails_and_leaves_nothing(hub, tmp_path):
    small = write_tiktoken_file(tmp_path / "small.model", 1000).read_bytes()
    hub.files[f"{REPO}/{staging.TOKENIZER_FILE}"] = small
    result = run_cli(["assets", "tokenizer", "--dest", "out"], hub, tmp_path, HF_TOKEN=TOKEN)
    assert result.returncode == 1
    assert "1,000 base ranks, expected 128,000" in result.stderr
    assert not (tmp_path / "out" / staging.TOKENIZER_FILE).exists()


def c4_shard(name: str) -> bytes:
    # mtime=0: the same bytes on every call (gzip otherwise stamps the current second).
    return gzip.compress(
        json.dumps({"text": f"text of {name}", "timestamp": "t", "url": "u"}).encode() + b"\n", mtime=0
    )


def test_c4_stages_shards_once(hub, tmp_path):
    wanted = staging.c4_files(2)
    assert "en/c4-train.00001-of-01024.json.gz" in wanted
    for name in wanted:
        hub.files[f"datasets/{staging.C4_REPO}/{name}"] = c4_shard(name)
    first = run_cli(["assets", "c4", "--dest", "c4", "--shards", "2"], hub, tmp_path)
    assert first.returncode == 0, first.stderr
    for name in wanted:
        assert (tmp_path / "c4" / name).read_bytes() == c4_shard(name)
    seen = len(hub.requests)
    second = run_cli(["assets", "c4", "--dest", "c4", "--shards", "2"], hub, tmp_path)
    assert second.returncode == 0
    assert second.stdout.count("present, kept") == len(wanted)
    assert len(hub.requests) == seen


@pytest.mark.torchtitan
def test_staged_c4_loads_the_way_torchtitan_reads_dataset_path(hub, tmp_path):
    pytest.importorskip("datasets")  # installed with torchtitan
    for name in staging.c4_files(2):
        hub.files[f"datasets/{staging.C4_REPO}/{name}"] = c4_shard(name)
    assert run_cli(["assets", "c4", "--dest", "c4", "--shards", "2"], hub, tmp_path).returncode == 0
    # torchtitan's c4 loader with --training.dataset_path, offline as on a cluster.
    code = (
        "import sys; from datasets import load_dataset;"
        "ds = load_dataset(sys.argv[1], name='en', split='train', streaming=True);"
        "print(sorted(row['text'] for row in ds))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c4")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(f"text of {staging.C4_TRAIN_SHARD.format(i)}" for i in range(2)))


def c4_shard_of(name: str, documents: int) -> bytes:
    lines = [json.dumps({"text": f"{name} #{i}", "timestamp": "t", "url": "u"}) for i in range(documents)]
    return gzip.compress("\n".join(lines).encode() + b"\n", mtime=0)


@pytest.mark.torchtitan
@pytest.mark.parametrize(("shards", "own_files"), [(4, True), (3, False)])
def test_staged_c4_splits_by_file_only_when_the_shard_count_is_a_multiple_of_dp(hub, tmp_path, shards, own_files):
    """What `assets c4` and the docs say, checked with the function torchtitan calls at the pin."""
    pytest.importorskip("datasets")
    for name in staging.c4_files(shards):
        hub.files[f"datasets/{staging.C4_REPO}/{name}"] = c4_shard_of(name, 2)
    staged = run_cli(["assets", "c4", "--dest", "c4", "--shards", str(shards)], hub, tmp_path)
    assert staged.returncode == 0, staged.stderr
    code = (
        "import json, sys; from datasets import load_dataset; from datasets.distributed import split_dataset_by_node;"
        "ds = load_dataset(sys.argv[1], name='en', split='train', streaming=True);"
        "print(json.dumps([[row['text'].split(' #')[0] for row in split_dataset_by_node(ds, r, 2)] for r in (0, 1)]))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c4")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    per_rank = [set(files) for files in json.loads(done.stdout)]
    assert sum(map(len, per_rank)) == shards if own_files else all(len(files) == shards for files in per_rank)


def test_the_default_shard_count_splits_evenly_for_every_published_model():
    degrees = staging.published_dp_degrees()
    assert set(degrees) == {"llama3_8b", "llama3_70b"} and all(d > 1 for d in degrees.values())
    assert staging.uneven_degrees(staging.default_c4_shards(), degrees) == {}
    assert staging.default_c4_shards() == min(n for n in range(1, 1025) if not staging.uneven_degrees(n, degrees))
    help_text = CliRunner().invoke(main, ["assets", "c4", "--help"]).output
    assert "multiple of the data-parallel degree" in " ".join(help_text.split())


def test_an_uneven_shard_count_is_staged_with_a_note(hub, tmp_path):
    for name in staging.c4_files(staging.default_c4_shards()):
        hub.files[f"datasets/{staging.C4_REPO}/{name}"] = c4_shard(name)
    result = run_cli(["assets", "c4", "--dest", "c4", "--shards", "12"], hub, tmp_path)
    assert result.returncode == 0, result.stderr
    # 12 = 8 x 1.5 and 32 x 0.375: neither published degree divides it.
    assert "12 shard(s) is not a multiple of the published data-parallel degree (llama3_70b 32, llama3_8b 8)" in (
        result.stderr
    )
    assert f"--shards {staging.default_c4_shards()}" in result.stderr
    even = run_cli(["assets", "c4", "--dest", "c4", "--shards", str(staging.default_c4_shards())], hub, tmp_path)
    assert even.returncode == 0 and "note:" not in even.stderr


def test_verify_rejects_a_file_that_is_not_tiktoken(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_text("this is not base64 and no rank\n")
    with pytest.raises(staging.TitanbenchError, match="not a tiktoken BPE file"):
        staging.verify_tokenizer(path)


def test_verify_sees_a_replaced_file_despite_tiktokens_path_cache(tmp_path):
    path = write_tiktoken_file(tmp_path / "tokenizer.model", 300)
    assert staging.verify_tokenizer(path, expected_ranks=300) == 300
    write_tiktoken_file(path, 400)
    assert staging.verify_tokenizer(path, expected_ranks=400) == 400


def test_missing_token_file_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["assets", "tokenizer", "--hf-token-file", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: --hf-token-file {tmp_path / 'nope'}: No such file or directory"
    ]


def test_shards_out_of_range_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["assets", "c4", "--dest", str(tmp_path), "--shards", "0"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_help_shows_examples_and_envvar():
    result = CliRunner().invoke(main, ["assets", "tokenizer", "--help"])
    assert "titanbench assets tokenizer" in result.output
    assert "TITANBENCH_HF_TOKEN_FILE" in result.output

import pytest

from titanbench.errors import TitanbenchError
from titanbench.redact import (
    MASK,
    is_secret_name,
    known_secrets,
    redact_argv,
    redact_env,
    redact_value,
    refuse_url_credentials,
    scrub,
    scrub_tree,
)

TOKEN = "hf_" + "Zq8" * 12


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "WANDB_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "GITHUB_TOKEN",
        "DB_PASSWORD",
        "MYSQL_PWD_PASSWD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "OPENAI_APIKEY",
        "ssh_private_key",
        "hfToken",
        "API-KEY",
    ],
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("part", ["KEY", "PASS", "AUTH", "COOKIE", "SIGNATURE"])
def test_every_secret_part_makes_a_name_secret_as_a_whole_word_only(part):
    """Each word of the by-part rule, in a name where only that word can match (listed here, not imported:
    dropping one from the rule must fail this test)."""
    assert is_secret_name(f"MY_{part}_VALUE") and is_secret_name(f"{part.lower()}-header")
    assert not is_secret_name(f"MY_{part}ING_VALUE")


@pytest.mark.parametrize(
    "name", ["NCCL_IB_HCA", "PATH", "PWD", "HF_HOME", "CUDA_VISIBLE_DEVICES", "TORCHINDUCTOR_CACHE_DIR", "MONKEY"]
)
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_redact_env_keeps_names_and_masks_values():
    env = {"HF_TOKEN": TOKEN, "WANDB_API_KEY": "w" * 40, "EMPTY_TOKEN": "", "NCCL_DEBUG": "INFO"}
    assert redact_env(env) == {"HF_TOKEN": MASK, "WANDB_API_KEY": MASK, "EMPTY_TOKEN": "", "NCCL_DEBUG": "INFO"}


def test_redact_env_masks_secrets_hidden_in_ordinary_values():
    env = {
        "PIP_INDEX_URL": "https://builder:s3cr3tpass@pypi.example.com/simple",
        "SOME_NOTE": f"token is {TOKEN}",
    }
    redacted = redact_env(env)
    assert redacted["PIP_INDEX_URL"] == f"https://builder:{MASK}@pypi.example.com/simple"
    assert TOKEN not in redacted["SOME_NOTE"]


def test_scrub_replaces_env_and_token_file_values(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789\n")
    monkeypatch.setenv("MY_SERVICE_SECRET", "env-secret-abcdef")
    monkeypatch.setenv("TITANBENCH_HF_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    text = "a env-secret-abcdef b file-token-0123456789 c"
    assert scrub(text) == f"a {MASK} b {MASK} c"


def test_scrub_reads_hf_token_path_too(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("path-token-987654321")
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    assert "path-token-987654321" in known_secrets()
    assert scrub("x path-token-987654321 y") == f"x {MASK} y"


def test_scrub_ignores_short_flag_values(monkeypatch):
    monkeypatch.setenv("SOME_TOKEN_ENABLED", "1")
    assert scrub("step 1 of 10") == "step 1 of 10"


def test_scrub_with_explicit_secrets_masks_longest_first():
    assert scrub("abcdef-123456 abcdef", ["abcdef", "abcdef-123456"]) == f"{MASK} {MASK}"


def test_scrub_masks_hf_shaped_tokens_without_being_told():
    assert TOKEN not in scrub(f"Authorization: Bearer {TOKEN}", [])


def test_a_token_file_that_is_not_utf8_crashes_nothing(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from titanbench.cli import main

    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff\xfe binary")
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert scrub("plain text") == "plain text"
    result = CliRunner().invoke(main, ["env", "--json"])
    assert result.exit_code == 0, result.exception


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # A token as a URL's user (git's https://TOKEN@host form).
        ("git clone https://ghp_16charactersOrMore1@github.com/org/repo", "https://***@github.com/org/repo"),
        # A secret-named variable with a value too short for value-based scrubbing.
        ("export SHORT_PASSWORD=abc12", "export SHORT_PASSWORD=***"),
    ],
)
def test_what_escaped_masking_before(text, masked):
    assert redact_value(text).endswith(masked)


def test_a_variable_naming_where_a_secret_is_keeps_its_value():
    assert redact_value("-e HF_TOKEN_PATH=/run/secrets/hf_token SSL_KEY_FILE=/etc/k") == (
        "-e HF_TOKEN_PATH=/run/secrets/hf_token SSL_KEY_FILE=/etc/k"
    )


def test_flags_and_plain_urls_are_left_alone():
    text = "--model.tokenizer_path=./assets/tokenizer https://user@host/x NCCL_IB_HCA=mlx5_0 ssh://git@github.com"
    assert redact_value(text) == text


# Credential formats of detect-secrets' catalogue, planted under innocent names (values made up, right shape).
CATALOGUED = {
    "github": "ghp_" + "aB3dE5gH7jK9mN1pQ3rS5tU7wX9yZ1bC3dE5",
    "aws-access-key-id": "AKIA" + "QWERTYUIOPASDFGH",
    "slack": "xoxb-123456789012-1234567890123-" + "abcdefghijklmnopqrstuvwx",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "gitlab": "glpat-" + "xYz12AbC34dEf56GhI78",
    "stripe": "sk_live_" + "0123456789abcdefABCDEFgh",
    "pypi": "pypi-AgEIcHlwaS5vcmc" + "A1b2" * 18,
}


@pytest.mark.parametrize("name", sorted(CATALOGUED))
def test_catalogued_credential_formats_are_masked_whatever_their_name(name):
    secret = CATALOGUED[name]
    for text in (f"note={secret}", f"value {secret} seen", f'{{"arg": "{secret}"}}'):
        assert secret not in redact_value(text), text
    assert secret not in scrub(f"printed {secret}\n", [])


def test_a_basic_auth_url_is_masked_by_the_catalogue_too():
    # A password with characters the own URL rule stops at (`/`): the catalogue's rule catches what it can.
    assert "pa55word" not in redact_value("git clone https://bob:pa55word@git.example/x.git")


@pytest.mark.parametrize(
    "text",
    [
        "commit 3f786850e387550fdab836ed7e6dc881de23001b fingerprint 1f3a9c0d5e7b2a41",
        "master 10.1.2.3:29500 step: 10  loss:  7.1234  tps: 6,567  mfu: 38.12%",
        "--job.dump_folder=/results/r/llama3_8b/async-bf16/outputs ACCESS_MODE=rw",
        "sha256:5b0b9f3c1f0a4a1c8b6a2d6f3b8c7e9d0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    ],
)
def test_the_catalogue_leaves_hashes_addresses_and_metrics_alone(text):
    assert redact_value(text) == text


def test_redact_argv_masks_every_word_after_the_double_dash_too(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_SECRET", "env-secret-abcdef")
    argv = ["titanbench", "run", "--", "--run-id", "env-secret-abcdef", "SHORT_PASSWORD=abc12", CATALOGUED["github"]]
    assert redact_argv(argv) == ["titanbench", "run", "--", "--run-id", MASK, f"SHORT_PASSWORD={MASK}", MASK]


@pytest.mark.parametrize(
    "url", ["https://user:pa55@host/c4", "https://hf_abcdefghijklmnop@host/c4", "s3://key@bucket/c4"]
)
def test_a_url_with_credentials_is_refused_in_one_line_without_them(url):
    with pytest.raises(TitanbenchError) as refused:
        refuse_url_credentials("--dataset-path", url)
    assert refused.value.message.startswith(f"--dataset-path {url.split('://')[0]}://***@")
    assert "pa55" not in refused.value.message and "abcdefghijklmnop" not in refused.value.message
    assert "\n" not in refused.value.message


def test_a_url_without_credentials_and_a_path_pass():
    assert refuse_url_credentials("--dataset-path", "hf://datasets/allenai/c4") == "hf://datasets/allenai/c4"
    assert refuse_url_credentials("--dataset-path", "/data/c4@2025") == "/data/c4@2025"


def test_scrub_tree_rewrites_only_files_holding_a_secret_and_keeps_binary_bytes(tmp_path):
    secret = "s3cr3t-value-123"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "trace.json").write_text(f'{{"a": "{secret}"}}')
    (tmp_path / "events.bin").write_bytes(b"\x00\xff" + secret.encode() + b"\x80")
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing here\n")
    before = clean.stat().st_mtime_ns
    scrub_tree(tmp_path, [secret])
    assert (tmp_path / "sub" / "trace.json").read_text() == '{"a": "***"}'
    assert (tmp_path / "events.bin").read_bytes() == b"\x00\xff***\x80"
    assert clean.stat().st_mtime_ns == before


def test_scrub_tree_looks_for_known_values_in_large_files_too(tmp_path, monkeypatch):
    from titanbench import redact

    monkeypatch.setattr(redact, "SHAPE_SCAN_BYTES", 64)
    big = tmp_path / "trace.json"
    big.write_text("x" * 100 + " s3cr3t-value-123 " + CATALOGUED["github"])
    scrub_tree(tmp_path, ["s3cr3t-value-123"])
    # Once a known value makes the file rewritten, the whole of it is scrubbed, shapes included.
    assert big.read_text() == "x" * 100 + " *** ***"

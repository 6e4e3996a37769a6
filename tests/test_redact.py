import pytest

from titanbench.redact import MASK, is_secret_name, known_secrets, redact_env, redact_value, scrub

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


def test_flags_and_plain_urls_are_left_alone():
    text = "--model.tokenizer_path=./assets/tokenizer https://user@host/x NCCL_IB_HCA=mlx5_0 ssh://git@github.com"
    assert redact_value(text) == text

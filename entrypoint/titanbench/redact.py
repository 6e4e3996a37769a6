"""Keep secrets out of everything titanbench prints or writes.

Names stay visible (a reader sees that `HF_TOKEN` was set); values are masked. `scrub` is the last
line of defence for free text: it replaces every known secret value wherever it appears.
"""

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from titanbench import settings

MASK = "***"
# Files holding the Hugging Face token: titanbench's own variable, then huggingface_hub's.
TOKEN_FILE_VARS = (settings.HF_TOKEN_FILE, "HF_TOKEN_PATH")
# Values shorter than this are flags ("1", "true"), not credentials; replacing them in free text
# would garble every number in the output.
MIN_SECRET_LENGTH = 6

_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "APIKEY", "PRIVATE")
_SECRET_PARTS = {"KEY", "PASS", "AUTH", "COOKIE", "SIGNATURE"}
# Credentials inside URLs: scheme://user:password@host, and scheme://TOKEN@host (a token as the user).
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):([^@\s/]+)@")
_URL_TOKEN_USER = re.compile(r"(?<=://)([^/\s:@]{16,})@")
# `NAME=value` with a secret-like environment-variable NAME, whatever the value's length (a short
# password is still one). Upper case only: lower-case flags such as `--model.tokenizer_path=` are paths.
_SECRET_ASSIGNMENT = re.compile(r"(?<![\w.-])([A-Z_][A-Z0-9_]*)=([^\s'\"]+)")
# Hugging Face user access tokens, masked even when they sit under an innocent name.
_HF_TOKEN_SHAPE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")


def is_secret_name(name: str) -> bool:
    """True for token/key/secret/password/credential-like names: HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY."""
    upper = name.upper()
    squashed = re.sub(r"[^A-Z0-9]", "", upper)
    if any(word in squashed for word in _SECRET_WORDS):
        return True
    return any(part in _SECRET_PARTS for part in re.split(r"[^A-Z0-9]+", upper))


def redact_value(value: str) -> str:
    """A non-secret value with any embedded URL password or HF-token-shaped string masked."""
    value = _URL_PASSWORD.sub(rf"\1:{MASK}@", value)
    value = _URL_TOKEN_USER.sub(f"{MASK}@", value)
    value = _SECRET_ASSIGNMENT.sub(lambda m: f"{m[1]}={MASK}" if is_secret_name(m[1]) else m[0], value)
    return _HF_TOKEN_SHAPE.sub(MASK, value)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """The same names; secret-like names get their (non-empty) value masked, others lose embedded secrets."""
    return {
        name: (MASK if value else "") if is_secret_name(name) else redact_value(value) for name, value in env.items()
    }


def known_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """Secret values in `env` (default os.environ), the token file's content and huggingface_hub's stored token."""
    env = os.environ if env is None else env
    found = {value.strip() for name, value in env.items() if is_secret_name(name)}
    for var in TOKEN_FILE_VARS:
        if env.get(var):
            # Unreadable or not UTF-8: not a token this process could have used, and no reason to crash.
            with contextlib.suppress(OSError, ValueError):
                found.add(Path(env[var]).expanduser().read_text().strip())
    try:
        from huggingface_hub import get_token

        found.add((get_token() or "").strip())
    except Exception:  # a broken token store must never stop a report from being written
        pass
    return sorted((s for s in found if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every known secret value replaced by `***` (longest first, so no fragment survives)."""
    values = known_secrets() if secrets is None else [s for s in secrets if s]
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return redact_value(text)

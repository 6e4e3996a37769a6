"""Keep secrets out of everything titanbench prints or writes.

Names stay visible (a reader sees that `HF_TOKEN` was set); values are masked. `scrub` is the last
line of defence for free text: it replaces every known secret value wherever it appears, and every
string shaped like a credential of a known service (detect-secrets' catalogue of formats).

torchrun's per-rank logs never sit in the results tree in clear: torchrun writes them into a private
directory of this user outside it (`private_rank_logs`), and only scrubbed copies reach `ranks/`. A
driver killed before copying leaves that directory behind, locked until its torchrun has gone; the
next launch by the same user on the node scrubs and copies what it holds, then removes it
(`recover_rank_logs`).
"""

import contextlib
import fcntl
import functools
import json
import mmap
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from titanbench import settings
from titanbench.atomic import write_bytes, write_json
from titanbench.errors import TitanbenchError

MASK = "***"
# Files holding the Hugging Face token: titanbench's own variable, then huggingface_hub's.
TOKEN_FILE_VARS = (settings.HF_TOKEN_FILE, "HF_TOKEN_PATH")
# Values shorter than this are flags ("1", "true"), not credentials; replacing them in free text
# would garble every number in the output.
MIN_SECRET_LENGTH = 6
# Files in the results tree larger than this are searched for known secret values only (see scrub_tree).
SHAPE_SCAN_BYTES = 16 * 2**20

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
# Names that say where a secret is, not what it is (HF_TOKEN_PATH=/run/secrets/hf_token): kept in `NAME=value`.
_LOCATION_SUFFIXES = ("_PATH", "_FILE", "_DIR")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# detect-secrets' format detectors (module, class) whose patterns mask. Left out: its entropy and
# keyword heuristics (they would mask commit hashes and fingerprints), Artifactory's (it matches
# plain words such as APDEVELOPMENT), Cloudant/IBM/SoftLayer's (keyword guesses), public IP
# addresses (not secrets), and private keys (it matches the BEGIN line only, not the key).
CATALOGUE = (
    ("aws", "AWSKeyDetector"),
    ("azure_storage_key", "AzureStorageKeyDetector"),
    ("basic_auth", "BasicAuthDetector"),
    ("discord", "DiscordBotTokenDetector"),
    ("github_token", "GitHubTokenDetector"),
    ("gitlab_token", "GitLabTokenDetector"),
    ("jwt", "JwtTokenDetector"),
    ("mailchimp", "MailchimpDetector"),
    ("npm", "NpmDetector"),
    ("openai", "OpenAIDetector"),
    ("pypi_token", "PypiTokenDetector"),
    ("sendgrid", "SendGridDetector"),
    ("slack", "SlackDetector"),
    ("square_oauth", "SquareOAuthDetector"),
    ("stripe", "StripeDetector"),
    ("telegram_token", "TelegramBotTokenDetector"),
    ("twilio", "TwilioKeyDetector"),
)


@functools.cache
def catalogue_patterns() -> tuple[re.Pattern[str], ...]:
    """The credential formats of CATALOGUE (imported on first use: detect-secrets pulls in requests)."""
    import importlib

    patterns: list[re.Pattern[str]] = []
    for module, name in CATALOGUE:
        detector = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), name)
        patterns += detector.denylist
    return tuple(patterns)


def is_secret_name(name: str) -> bool:
    """True for token/key/secret/password/credential-like names: HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY."""
    upper = name.upper()
    squashed = re.sub(r"[^A-Z0-9]", "", upper)
    if any(word in squashed for word in _SECRET_WORDS):
        return True
    return any(part in _SECRET_PARTS for part in re.split(r"[^A-Z0-9]+", upper))


def _holds_a_secret(name: str) -> bool:
    return is_secret_name(name) and not name.endswith(_LOCATION_SUFFIXES)


def redact_value(value: str) -> str:
    """`value` with URL credentials, secret-named assignments and credential-shaped strings masked."""
    value = _URL_PASSWORD.sub(rf"\1:{MASK}@", value)
    value = _URL_TOKEN_USER.sub(f"{MASK}@", value)
    value = _SECRET_ASSIGNMENT.sub(lambda m: f"{m[1]}={MASK}" if _holds_a_secret(m[1]) else m[0], value)
    value = _HF_TOKEN_SHAPE.sub(MASK, value)
    for pattern in catalogue_patterns():
        value = pattern.sub(MASK, value)
    return value


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """The same names; secret-like names get their (non-empty) value masked, others lose embedded secrets."""
    return {
        name: (MASK if value else "") if is_secret_name(name) else redact_value(value) for name, value in env.items()
    }


def known_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """Secret values in `env` (default os.environ), the token file's content and huggingface_hub's stored token."""
    env = os.environ if env is None else env
    found = {value.strip() for name, value in env.items() if _holds_a_secret(name)}
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


def redact_argv(argv: Sequence[str], secrets: Iterable[str] | None = None) -> list[str]:
    """A command line to print or write into a file, every word scrubbed (arguments after `--` too)."""
    values = known_secrets() if secrets is None else list(secrets)
    return [scrub(word, values) for word in argv]


def is_url(value: str) -> bool:
    return bool(_URL_SCHEME.match(value))


def refuse_url_credentials(option: str, value: str) -> str:
    """`value` unchanged, unless it is a URL carrying credentials: those would be recorded in run.json
    and passed on every torchrun command line, so they are refused (one line, the URL masked)."""
    if is_url(value) and "@" in urlsplit(value).netloc:
        raise TitanbenchError(
            f"{option} {redact_value(_mask_user_info(value))}: a URL with credentials would be recorded "
            "with the run; give it without them and pass the token in the environment (HF_TOKEN)"
        )
    return value


def _mask_user_info(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{MASK}@{parts.netloc.rsplit('@', 1)[1]}").geturl()


def _as_bytes(pattern: re.Pattern[str]) -> re.Pattern[bytes]:
    return re.compile(pattern.pattern.encode(), pattern.flags & ~re.UNICODE)


@functools.cache
def _byte_shapes() -> tuple[re.Pattern[bytes], ...]:
    mine = (_URL_PASSWORD, _URL_TOKEN_USER, _SECRET_ASSIGNMENT, _HF_TOKEN_SHAPE)
    return tuple(_as_bytes(p) for p in (*mine, *catalogue_patterns()))


def _may_hold_secret(path: Path, secrets: Sequence[str]) -> bool:
    """A scan of the file in place (mapped, not read: profiler traces run to hundreds of MB). Known secret
    values are looked for everywhere; credential shapes only in files up to SHAPE_SCAN_BYTES (a regex scan
    runs at a few MB/s, too slow for gigabytes of traces after every config)."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if not size:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if any(data.find(secret.encode()) >= 0 for secret in secrets):
                return True
            return size <= SHAPE_SCAN_BYTES and any(pattern.search(data) for pattern in _byte_shapes())


def _scrubbed_bytes(data: bytes, secrets: Sequence[str]) -> bytes:
    # surrogateescape: bytes that are not UTF-8 (a binary event file) come back unchanged.
    return scrub(data.decode("utf-8", "surrogateescape"), secrets).encode("utf-8", "surrogateescape")


def _files(root: Path) -> Iterator[Path]:
    return (path for path in sorted(root.rglob("*")) if path.is_file() and not path.is_symlink())


def scrub_tree(root: Path, secrets: Sequence[str]) -> None:
    """Rewrite (atomically) every file under `root` that holds a secret, with the secret masked: any known
    secret value; a credential shape (scrub) in files up to SHAPE_SCAN_BYTES."""
    if not root.is_dir():
        return
    for path in _files(root):
        if _may_hold_secret(path, secrets):
            data = path.read_bytes()
            cleaned = _scrubbed_bytes(data, secrets)
            if cleaned != data:
                write_bytes(path, cleaned)


def copy_scrubbed(source: Path, destination: Path, secrets: Sequence[str]) -> None:
    """Every file under `source` written (atomically, scrubbed) to the same place under `destination`."""
    for path in _files(source):
        write_bytes(destination / path.relative_to(source), _scrubbed_bytes(path.read_bytes(), secrets))


def _private_root() -> Path:
    """This user's directory for rank logs in the making, outside the results tree: 0700, owned by us."""
    root = Path(tempfile.gettempdir()) / f"titanbench-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise TitanbenchError(f"{root} is not a directory of this user: remove it, or point TMPDIR elsewhere")
    if stat.S_IMODE(info.st_mode) != 0o700:
        root.chmod(0o700)
    return root


_STAGED_PREFIX = "ranks-"
_WHERE = "where.json"
_LOCK = "lock"
_LOGS = "logs"


@dataclass(frozen=True)
class PrivateRankLogs:
    """Where torchrun writes its rank logs (`logs`), and the lock its holders keep while they run."""

    logs: Path
    lock_fd: int


@contextlib.contextmanager
def private_rank_logs(ranks: Path, outputs: Path | None, secrets: Sequence[str]) -> Iterator[PrivateRankLogs]:
    """A private directory for torchrun's `--log-dir`; when the block ends, however it ends, scrubbed
    copies of its files go to `ranks`, `outputs` (the trainer's dump folder) is scrubbed in place,
    and the directory is removed. Pass `lock_fd` on to torchrun: while it lives, no later launch
    takes the directory for a dead driver's leftovers."""
    # Made under a dot name and renamed once locked and labelled: recovery never sees a half-made one.
    making = Path(tempfile.mkdtemp(prefix=".new-", dir=_private_root()))
    fd = os.open(making / _LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        write_json(making / _WHERE, {"ranks": str(ranks), "outputs": str(outputs) if outputs else None})
        (making / _LOGS).mkdir()
        staged = making.with_name(_STAGED_PREFIX + making.name.removeprefix(".new-"))
        making.rename(staged)
        try:
            yield PrivateRankLogs(staged / _LOGS, fd)
        finally:
            _deliver(staged, secrets)
    finally:
        os.close(fd)


def _deliver(staged: Path, secrets: Sequence[str]) -> None:
    """Scrubbed copies of a staged directory's logs into its results folder (if that is still there), its
    dump folder scrubbed, then the directory removed. A write that fails leaves it for a later launch."""
    try:
        where = json.loads((staged / _WHERE).read_text())
        ranks, outputs = Path(where["ranks"]), where["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        ranks, outputs = None, None  # unlabelled: nothing says where it belongs
    # ranks/node<R> of a config folder: a run directory deleted since is not made again.
    if ranks is not None and ranks.parent.parent.is_dir():
        copy_scrubbed(staged / _LOGS, ranks, secrets)
    if outputs:
        scrub_tree(Path(outputs), secrets)
    shutil.rmtree(staged, ignore_errors=True)


def recover_rank_logs(secrets: Sequence[str]) -> None:
    """Deliver what killed drivers left in this user's private directory (those whose torchrun has ended)."""
    for staged in sorted(_private_root().glob(_STAGED_PREFIX + "*")):
        try:
            fd = os.open(staged / _LOCK, os.O_RDWR)
        except OSError:
            continue  # gone meanwhile: another launch delivered it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its driver or torchrun still runs
        try:
            # An unwritable results folder of an old run must not stop this one: it is tried again next time.
            with contextlib.suppress(OSError):
                if staged.is_dir():
                    _deliver(staged, secrets)
        finally:
            os.close(fd)

"""Stage what a run reads from the Hugging Face hub: the Llama 3.1 tokenizer and C4 (en) shards.

Downloads go through huggingface_hub (so HF_ENDPOINT, HF_HUB_OFFLINE and its timeouts apply), land in
a temporary folder next to the destination, are verified, then moved into place: the final path
holds a good file or nothing. A file already in place is kept.
"""

import hashlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import constants, get_token, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from titanbench.atomic import write_text
from titanbench.errors import TitanbenchError
from titanbench.redact import known_secrets, scrub

TOKENIZER_REPO = "meta-llama/Meta-Llama-3.1-8B"
TOKENIZER_FILE = "original/tokenizer.model"
# torchtitan's tomls read `./assets/tokenizer/original/tokenizer.model` relative to the working dir.
DEFAULT_TOKENIZER_DEST = Path("assets/tokenizer")
# Llama 3's tiktoken file holds 128,000 BPE ranks; its 256 special tokens (<|begin_of_text|>, ...)
# are added in code by the tokenizer, not stored in the file.
LLAMA3_BASE_RANKS = 128_000

C4_REPO = "allenai/c4"
C4_TRAIN_SHARD = "en/c4-train.{:05d}-of-01024.json.gz"
C4_TRAIN_SHARDS = 1024
# torchtitan reads a local C4 with `load_dataset(<dir>, name="en", split="train")`: the folder needs a
# dataset card declaring the `en` config, and every split the config names must match a file.
C4_VALIDATION_SHARD = "en/c4-validation.00000-of-00008.json.gz"
C4_CARD = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/c4-train.*-of-01024.json.gz
  - split: validation
    path: en/c4-validation.*-of-00008.json.gz
---
Partial local copy of allenai/c4 (en), staged by `titanbench assets c4`.
"""


def published_dp_degrees() -> dict[str, int]:
    """Each published model's data-parallel degree (its FSDP degree: nodes x GPUs / TP, runs/*.yaml)."""
    from titanbench.spec import resolve_models

    return {spec.model: spec.topology.fsdp for spec in resolve_models("all")}


def even_c4_shards(degrees: list[int]) -> int:
    """The fewest C4 shards that split evenly over each of these data-parallel degrees.

    torchtitan splits the data with `datasets.distributed.split_dataset_by_node`: a streamed copy whose
    shard (file) count is a multiple of the DP degree gives each rank its own files; any other count
    makes every rank read every file and keep one document in DP."""
    return math.lcm(*degrees)


def default_c4_shards() -> int:
    return even_c4_shards(list(published_dp_degrees().values()))


def uneven_degrees(shards: int, degrees: dict[str, int]) -> dict[str, int]:
    """The degrees (by model) that `shards` does not split evenly."""
    return {model: degree for model, degree in degrees.items() if shards % degree}


def tokenizer_path(dest: Path) -> Path:
    return dest / TOKENIZER_FILE


def verify_tokenizer(path: Path, expected_ranks: int = LLAMA3_BASE_RANKS) -> int:
    """Load `path` as tiktoken does and check its rank count; returns the count."""
    from tiktoken.load import load_tiktoken_bpe

    try:
        data = path.read_bytes()
    except OSError as error:
        raise TitanbenchError(f"tokenizer {path}: {error.strerror or error}") from None
    try:
        # tiktoken caches files by path; the hash makes it drop a stale copy of an earlier file.
        ranks = load_tiktoken_bpe(str(path), expected_hash=hashlib.sha256(data).hexdigest())
    except ValueError as error:
        raise TitanbenchError(f"tokenizer {path}: not a tiktoken BPE file ({error})") from None
    if len(ranks) != expected_ranks:
        raise TitanbenchError(
            f"tokenizer {path}: {len(ranks):,} base ranks, expected {expected_ranks:,} (Llama 3.1's tokenizer)"
        )
    return len(ranks)


def resolve_token(token_file: Path | None) -> str | None:
    """The token from `token_file`, else HF_TOKEN, else huggingface_hub's stored login."""
    if token_file is not None:
        try:
            token = token_file.expanduser().read_text().strip()
        except OSError as error:
            raise TitanbenchError(f"--hf-token-file {token_file}: {error.strerror or error}") from None
        if not token:
            raise TitanbenchError(f"--hf-token-file {token_file}: the file is empty")
        return token
    return os.environ.get("HF_TOKEN") or get_token()


def _http_status(error: BaseException) -> int | None:
    """The HTTP status behind a huggingface_hub error, which often wraps it in a `LocalEntryNotFoundError`."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, HfHubHTTPError) and seen.response is not None:
            return seen.response.status_code
        seen = seen.__cause__ or seen.__context__
    return None


def _explain(error: Exception, repo: str, filename: str, repo_type: str, token: str | None) -> str:
    page = f"{constants.ENDPOINT}/{'datasets/' if repo_type == 'dataset' else ''}{repo}"
    status = _http_status(error)
    if status in (401, 403):
        hint = "the token was refused" if token else "no token was given (set HF_TOKEN or --hf-token-file)"
        return (
            f"{repo}: access denied (HTTP {status}): {hint}. The repo is gated: request access on the model "
            f"page {page} as the token's user, wait for the grant, then check the token has read access."
        )
    if status == 404:
        return f"{repo}: {filename} not found (HTTP 404) at {page}: check the repo id and file name."
    if status is not None:
        return f"{repo}: downloading {filename} failed with HTTP {status}: {error}"
    if isinstance(error, OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        return (
            f"{repo}: HF_HUB_OFFLINE is set, so {filename} cannot be downloaded; unset it or stage the file elsewhere."
        )
    return f"{repo}: cannot download {filename} from {constants.ENDPOINT}: {error}"


def download(repo: str, filename: str, local_dir: Path, *, token: str | None, repo_type: str = "model") -> Path:
    """One file from the hub into `local_dir` (huggingface_hub's own layout); errors become one clear line."""
    try:
        return Path(
            hf_hub_download(repo_id=repo, filename=filename, repo_type=repo_type, local_dir=local_dir, token=token)
        )
    except Exception as error:  # huggingface_hub raises many types; each becomes one line, never a traceback
        message = _explain(error, repo, filename, repo_type, token)
        raise TitanbenchError(scrub(message, [*known_secrets(), *([token] if token else [])])) from None


def fetch_tokenizer(dest: Path, *, repo: str = TOKENIZER_REPO, token: str | None = None) -> tuple[Path, bool]:
    """(path, downloaded): a valid file already at `dest` is kept; otherwise download, verify, move into place."""
    target = tokenizer_path(dest)
    if target.is_file():
        try:
            verify_tokenizer(target)
            return target, False
        except TitanbenchError:
            pass  # a broken or foreign file: replaced below, only by one that verifies
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        fetched = download(repo, TOKENIZER_FILE, Path(tmp), token=token)
        verify_tokenizer(fetched)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, target)
    return target, True


def c4_files(shards: int) -> list[str]:
    """The files fetched from the hub for `shards` train shards (the card is written locally)."""
    if not 1 <= shards <= C4_TRAIN_SHARDS:
        raise TitanbenchError(f"--shards must be between 1 and {C4_TRAIN_SHARDS}, got {shards}")
    return [C4_VALIDATION_SHARD, *(C4_TRAIN_SHARD.format(i) for i in range(shards))]


def fetch_c4(
    dest: Path, shards: int, *, token: str | None = None, progress: Callable[[str, bool], None] | None = None
) -> list[Path]:
    """The C4 (en) files under `dest` in the repo's layout (for `--dataset-path`); files present are kept."""
    files = c4_files(shards)
    card = dest / "README.md"
    if not (card.is_file() and card.read_text() == C4_CARD):
        write_text(card, C4_CARD)
    paths = [card]
    for filename in files:
        path = dest / filename
        fetched = not (path.is_file() and path.stat().st_size > 0)
        if fetched:
            download(C4_REPO, filename, dest, token=token, repo_type="dataset")
        if progress:
            progress(filename, fetched)
        paths.append(path)
    return paths

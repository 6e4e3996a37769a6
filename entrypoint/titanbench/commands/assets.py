from pathlib import Path

import click

from titanbench import settings, staging
from titanbench.redact import known_secrets, scrub


@click.group()
def assets() -> None:
    """Stage the tokenizer and the C4 data for offline clusters.

    \b
    Examples:
      HF_TOKEN=hf_... titanbench assets tokenizer
      titanbench assets c4 --dest /shared/c4 --shards 8
    """


@assets.command()
@click.option(
    "--dest", type=click.Path(file_okay=False, path_type=Path), default=staging.DEFAULT_TOKENIZER_DEST,
    show_default=True, help=f"Folder that receives {staging.TOKENIZER_FILE} (torchtitan reads ./assets/tokenizer).",
)  # fmt: skip
@click.option(
    "--hf-token-file", type=click.Path(dir_okay=False, path_type=Path), envvar=settings.HF_TOKEN_FILE,
    show_envvar=True, help="File holding the Hugging Face token; default: HF_TOKEN, then huggingface_hub's login.",
)  # fmt: skip
@click.option("--repo", default=staging.TOKENIZER_REPO, show_default=True, help="Gated Llama 3.1 repo to read.")
def tokenizer(dest: Path, hf_token_file: Path | None, repo: str) -> None:
    """Download and verify the Llama 3.1 tokenizer (gated: request access on the model page first).

    Verified with tiktoken (128,000 base ranks); a valid file already in place is kept.

    \b
    Examples:
      HF_TOKEN=hf_... titanbench assets tokenizer
      titanbench assets tokenizer --hf-token-file ~/.hf_token --dest /shared/assets/tokenizer
    """
    token = staging.resolve_token(hf_token_file)
    path, downloaded = staging.fetch_tokenizer(dest, repo=repo, token=token)
    verb = "downloaded and verified" if downloaded else "already present and valid, kept"
    click.echo(scrub(f"{path}: {verb}", [*known_secrets(), *([token] if token else [])]))


@assets.command()
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), required=True, help="Shared folder.")
@click.option(
    "--shards", type=click.IntRange(1, staging.C4_TRAIN_SHARDS), default=staging.default_c4_shards,
    show_default="the fewest that split evenly over every published data-parallel degree",
    help="C4 (en) train shards to stage, from 00000 (each ~320 MB, ~356k documents). Ranks get their own "
    "shards only when the count is a multiple of the data-parallel degree; otherwise every rank reads them all.",
)  # fmt: skip
@click.option(
    "--hf-token-file", type=click.Path(dir_okay=False, path_type=Path), envvar=settings.HF_TOKEN_FILE,
    show_envvar=True, help="File holding a Hugging Face token (optional: raises the hub's rate limits).",
)  # fmt: skip
def c4(dest: Path, shards: int, hf_token_file: Path | None) -> None:
    """Pre-stage C4 (en) shards of allenai/c4 for `--dataset-path DIR`; files present are kept.

    torchtitan splits the copy per data-parallel rank by whole shards only when the shard count is a
    multiple of the DP degree (published: nodes x GPUs / TP); otherwise every rank reads every shard
    and keeps one document in DP. The default count is a multiple of both published degrees.

    \b
    Example:
      titanbench assets c4 --dest /shared/c4
      titanbench plan --model 8b --dataset-path /shared/c4
    """
    token = staging.resolve_token(hf_token_file)
    secrets = [*known_secrets(), *([token] if token else [])]

    def progress(filename: str, fetched: bool) -> None:
        click.echo(scrub(f"{dest / filename}: {'downloaded' if fetched else 'present, kept'}", secrets))

    staging.fetch_c4(dest, shards, token=token, progress=progress)
    uneven = staging.uneven_degrees(shards, staging.published_dp_degrees())
    if uneven:
        shown = ", ".join(f"{model} {degree}" for model, degree in uneven.items())
        click.echo(
            f"note: {shards} shard(s) is not a multiple of the published data-parallel degree ({shown}): there "
            f"every rank reads all {shards} and keeps one document in DP; --shards {staging.default_c4_shards()} "
            "splits evenly for every published model",
            err=True,
        )

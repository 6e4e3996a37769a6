"""`titanbench parse`: one torchtitan log -> its metric windows and the averages."""

import json
from pathlib import Path

import click

from titanbench.options import averaging_options
from titanbench.stats import render_text, summarize_file


@click.command()
@click.argument("log", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of the table.")
@averaging_options
def parse(log: Path, as_json: bool, warmup_steps: int, profile_freq: int | None) -> None:
    """Parse the metric lines of a torchtitan log LOG and average its tokens/s per GPU.

    Handles ANSI colours, logger and torchrun prefixes, records glued onto one line, one copy
    per rank (the first counts), logs with or without tflops/mfu/grad_norm, and old `wps` logs.

    \b
    Example:
      titanbench parse results/<run-id>/llama3_8b/async-bf16/train.log
      titanbench parse train.log --json --warmup-steps 20 --profile-freq 100
    """
    summary = summarize_file(log, warmup_steps=warmup_steps, profile_freq=profile_freq)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(render_text(summary), nl=False)

from pathlib import Path

import click

from titanbench.atomic import write_text
from titanbench.comparison import compare_runs, render_json, render_markdown
from titanbench.options import averaging_options


@click.command()
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the comparison here, not to stdout."
)
@averaging_options
def compare(run_a: Path, run_b: Path, fmt: str, out: Path | None, warmup_steps: int, profile_freq: int | None) -> None:
    """Compare two run directories: per model and config, A's and B's TPS, B / A with a 95% interval
    and whether the difference is significant at 5%, and the speedups side by side.

    Reads each run as `titanbench report` does (logs alone work), with the same averaging. Runs of
    different topologies are compared too; the output says so.

    \b
    Examples:
      titanbench compare results/exact-pins results/release
      titanbench compare results/2025-06 results/2025-07 --format json --out compare.json
    """
    doc = compare_runs(run_a, run_b, warmup_steps=warmup_steps, profile_freq=profile_freq)
    text = render_markdown(doc) if fmt == "markdown" else render_json(doc)
    if out is None:
        click.echo(text, nl=False)
    else:
        write_text(out, text)

from pathlib import Path

import click

from titanbench.atomic import write_text
from titanbench.errors import TitanbenchError
from titanbench.options import averaging_options
from titanbench.report import (
    TABLE_SHAPES,
    collect,
    render_json,
    render_markdown,
    steps_chart_path,
    write_png,
    write_steps_png,
)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here, not to stdout.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option(
    "--table",
    type=click.Choice(list(TABLE_SHAPES)),
    default="draft",
    show_default=True,
    help="The published table's shape: the PR draft's (TP type, quantization, average TPS, speedup; one row per "
    "config) or the merged benchmark file's (quantization, vanilla TPS, async TPS, speedup).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the PNG chart here [default with --out: next to it, same name, .png]; the per-config "
    "step charts go next to it (NAME-steps.png).",
)
@averaging_options
def report(
    run_dir: Path,
    out: Path | None,
    fmt: str,
    table: str,
    plot: Path | None,
    warmup_steps: int,
    profile_freq: int | None,
) -> None:
    """Render a run directory next to the published table.

    Reads RUN_DIR/<model>/<config>/train.log (plus result.json and RUN_DIR/run.json when
    present), so logs from your own torchtitan runs work too. Prints the published-shape
    table, measured vs published TPS, deviations, pins, environment and the averaging method.

    \b
    Examples:
      titanbench report results/20250613T100000Z
      titanbench report results/RUN --out RESULTS.md        # also RESULTS.png, RESULTS-steps.png
      titanbench report results/RUN --format json --profile-freq 100
      titanbench report results/RUN --table merged          # the merged benchmark file's table shape
    """
    chart = plot or (out.with_suffix(".png") if out else None)
    if chart is not None and out is not None:
        for name, path in (("the chart", chart), ("the step charts", steps_chart_path(chart))):
            if path.resolve() == out.resolve():
                raise TitanbenchError(f"--out {out} and {name} {path} are the same file: pick another --plot")
    doc = collect(run_dir, warmup_steps=warmup_steps, profile_freq=profile_freq)
    text = render_markdown(doc, table) if fmt == "markdown" else render_json(doc)
    if out is None:
        click.echo(text, nl=False)
    else:
        write_text(out, text)
    if chart is not None:
        write_png(doc, chart)
        write_steps_png(doc, steps_chart_path(chart))

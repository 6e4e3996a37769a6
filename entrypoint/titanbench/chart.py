"""The report's charts. RESULTS.png: per model, measured vanilla vs async TP per quantization, their 95%
intervals as error bars, published values marked. RESULTS-steps.png: per config, TPS per logged window
over the run (the windows averaged and those dropped drawn differently), the average and its interval
as a band.

Drawn from the results document alone. matplotlib is imported here only, and without pyplot:
a bare `Figure` renders through Agg with no global backend state.
"""

import io
import textwrap
from typing import Any

from titanbench.document import ConfigEntry, ModelEntry, ReportDocument
from titanbench.spec import QUANTIZATION_LABELS, TP_LABELS

COLOURS = {"vanilla": "#ff7f0e", "async": "#1f77b4"}
PUBLISHED_COLOUR = "#d62728"
INTERVAL_COLOUR = "#9467bd"
DROPPED_COLOUR = "#8c564b"
BAR_WIDTH = 0.38


def _panel(ax: Any, model: ModelEntry) -> None:
    by_label = {(c.tp_type, c.quantization): c for c in model.configs}
    quantizations = [q for q in QUANTIZATION_LABELS if any((t, q) in by_label for t in TP_LABELS)]
    ax.set_title("\n".join(textwrap.wrap(model.heading, 60)), fontsize=9)
    ax.set_ylabel("tokens/s per GPU")
    if not quantizations:
        ax.text(0.5, 0.5, "no TP x quantization configs", ha="center", va="center", transform=ax.transAxes)
        return
    labelled: set[str] = set()
    tallest = 0.0
    for position, quantization in enumerate(quantizations):
        for offset, tp_type in ((-BAR_WIDTH / 2, "vanilla"), (BAR_WIDTH / 2, "async")):
            config = by_label.get((tp_type, quantization))
            if config is None:
                continue
            x = position + offset
            measured = config.measured_tps
            if measured is None:
                ax.text(x, 0, config.status, rotation=90, ha="center", va="bottom", fontsize=8)
            else:
                label = f"{TP_LABELS[tp_type]} (measured)"
                ax.bar(x, measured, BAR_WIDTH, color=COLOURS[tp_type], label=None if label in labelled else label)
                labelled.add(label)
                tallest = max(tallest, measured)
                interval = config.measured_tps_ci95
                if interval:
                    ax.errorbar(
                        x,
                        measured,
                        yerr=[[measured - interval[0]], [interval[1] - measured]],
                        fmt="none",
                        ecolor=INTERVAL_COLOUR,
                        elinewidth=2,
                        capsize=6,
                        capthick=2,
                        label=None if "95% interval" in labelled else "95% interval",
                    )
                    labelled.add("95% interval")
                    tallest = max(tallest, interval[1])
                if tp_type == "async" and config.speedup is not None:
                    top = max([measured, *(interval or [])])
                    ax.annotate(f"x{config.speedup:.2f}", (x, top), ha="center", va="bottom", fontsize=8)
            if config.published_tps:
                ax.hlines(
                    config.published_tps,
                    x - BAR_WIDTH / 2,
                    x + BAR_WIDTH / 2,
                    colors=PUBLISHED_COLOUR,
                    linewidths=2,
                    label=None if "published" in labelled else "published",
                )
                labelled.add("published")
                tallest = max(tallest, config.published_tps)
    ax.set_xticks(range(len(quantizations)), [QUANTIZATION_LABELS[q] for q in quantizations])
    # Headroom above the tallest bar for the speedup labels and the legend.
    ax.set_ylim(0, (tallest or 1) * 1.3)
    if labelled:  # nothing measured or published: a legend would be empty (and matplotlib warns)
        ax.legend(fontsize=8, loc="upper left", ncols=3)


def render_png(doc: ReportDocument) -> bytes:
    from matplotlib.figure import Figure

    models = doc.models
    figure = Figure(figsize=(6.5 * len(models), 4.8), dpi=100, layout="constrained")
    for ax, model in zip(figure.subplots(1, len(models), squeeze=False)[0], models, strict=True):
        _panel(ax, model)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _step_panel(ax: Any, config: ConfigEntry) -> None:
    ax.set_title(config.config, fontsize=9)
    ax.tick_params(labelsize=7)
    summary = config.summary
    windows = [(w.step, w.tps) for w in (summary.windows if summary else []) if w.tps is not None]
    if summary is None or not windows:
        ax.text(0.5, 0.5, config.status, ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    colour = COLOURS.get(config.tp_type or "", COLOURS["async"])
    used_steps = set(summary.used_steps)
    used = [(step, tps) for step, tps in windows if step in used_steps]
    dropped = [(step, tps) for step, tps in windows if step not in used_steps]
    interval = config.measured_tps_ci95
    average = config.measured_tps
    # The scale follows the windows averaged: a warm-up window at a few tps would flatten them all.
    focus = [tps for _, tps in used] + (list(interval) if interval else []) or [tps for _, tps in windows]
    low, high = min(focus), max(focus)
    pad = max((high - low) * 0.25, abs(high) * 0.01, 1e-9)
    bottom, top = low - pad, high + pad
    ax.set_ylim(bottom, top)
    if interval and average is not None:
        ax.axhspan(interval[0], interval[1], color=colour, alpha=0.2, linewidth=0, label="95% interval")
    if average is not None:
        ax.axhline(average, color=colour, linewidth=1.2, label=f"average {average:,.1f}")
    if used:
        ax.plot(*zip(*used, strict=True), "o", color=colour, markersize=4, label="averaged")
    if dropped:
        # Off-scale dropped windows sit on the edge, as triangles pointing where they are.
        inside = [(s, t) for s, t in dropped if bottom <= t <= top]
        below = [(s, bottom) for s, t in dropped if t < bottom]
        above = [(s, top) for s, t in dropped if t > top]
        kwargs = {"color": DROPPED_COLOUR, "markersize": 5, "clip_on": False}
        if inside:
            ax.plot(*zip(*inside, strict=True), "x", label="dropped", **kwargs)
        if below:
            ax.plot(*zip(*below, strict=True), "v", label=None if inside else "dropped (off scale)", **kwargs)
        if above:
            ax.plot(*zip(*above, strict=True), "^", label=None if inside or below else "dropped (off scale)", **kwargs)
    ax.set_xlabel("step", fontsize=7)
    ax.legend(fontsize=6, loc="best")


STEP_COLUMNS = 2


def render_steps_png(doc: ReportDocument) -> bytes:
    """One small panel per config (vanilla | async side by side, as the specs list them), one block per model."""
    from matplotlib.figure import Figure

    models = [model for model in doc.models if model.configs]
    rows = [-(-len(model.configs) // STEP_COLUMNS) for model in models] or [1]
    figure = Figure(figsize=(4.2 * STEP_COLUMNS, 2.3 * sum(rows) + 0.5 * len(rows)), dpi=100, layout="constrained")
    if not models:
        figure.text(0.5, 0.5, "no configs", ha="center", va="center")
    blocks: Any = figure.subfigures(len(models), 1, height_ratios=rows, squeeze=False)[:, 0] if models else []
    for block, model, count in zip(blocks, models, rows, strict=False):
        block.suptitle("\n".join(textwrap.wrap(model.heading, 90)), fontsize=9)
        axes = block.subplots(count, STEP_COLUMNS, squeeze=False).flatten()
        for ax, config in zip(axes, model.configs, strict=False):
            _step_panel(ax, config)
            ax.set_ylabel("tokens/s per GPU", fontsize=7)
        for ax in axes[len(model.configs) :]:
            ax.set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

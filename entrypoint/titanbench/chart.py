"""The report's chart: per model, measured vanilla vs async TP per quantization, published values marked.

Drawn from the results document alone. matplotlib is imported here only, and without pyplot:
a bare `Figure` renders through Agg with no global backend state.
"""

import io
import textwrap
from typing import Any

from titanbench.report import QUANTIZATION_LABELS, TP_LABELS

COLOURS = {"vanilla": "#ff7f0e", "async": "#1f77b4"}
PUBLISHED_COLOUR = "#d62728"
BAR_WIDTH = 0.38


def _panel(ax: Any, model: dict[str, Any]) -> None:
    by_label = {(c["tp_type"], c["quantization"]): c for c in model["configs"]}
    quantizations = [q for q in QUANTIZATION_LABELS if any((t, q) in by_label for t in TP_LABELS)]
    ax.set_title("\n".join(textwrap.wrap(model["heading"], 60)), fontsize=9)
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
            measured = config["measured_tps"]
            if measured is None:
                ax.text(x, 0, config["status"], rotation=90, ha="center", va="bottom", fontsize=8)
            else:
                label = f"{TP_LABELS[tp_type]} (measured)"
                ax.bar(x, measured, BAR_WIDTH, color=COLOURS[tp_type], label=None if label in labelled else label)
                labelled.add(label)
                tallest = max(tallest, measured)
                if tp_type == "async" and config["speedup"] is not None:
                    ax.annotate(f"x{config['speedup']:.2f}", (x, measured), ha="center", va="bottom", fontsize=8)
            if config["published_tps"]:
                ax.hlines(
                    config["published_tps"],
                    x - BAR_WIDTH / 2,
                    x + BAR_WIDTH / 2,
                    colors=PUBLISHED_COLOUR,
                    linewidths=2,
                    label=None if "published" in labelled else "published",
                )
                labelled.add("published")
                tallest = max(tallest, config["published_tps"])
    ax.set_xticks(range(len(quantizations)), [QUANTIZATION_LABELS[q] for q in quantizations])
    # Headroom above the tallest bar for the speedup labels and the legend.
    ax.set_ylim(0, (tallest or 1) * 1.3)
    if labelled:  # nothing measured or published: a legend would be empty (and matplotlib warns)
        ax.legend(fontsize=8, loc="upper left", ncols=3)


def render_png(doc: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    models = doc["models"]
    figure = Figure(figsize=(6.5 * len(models), 4.8), dpi=100, layout="constrained")
    for ax, model in zip(figure.subplots(1, len(models), squeeze=False)[0], models, strict=True):
        _panel(ax, model)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

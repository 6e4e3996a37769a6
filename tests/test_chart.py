"""The report's PNG chart: a real PNG that matplotlib drew from the document's numbers (not pixel-exact)."""

import io
from pathlib import Path

import numpy as np
import pytest

from logfactory import ASYNC_TP_EVIDENCE, Metrics, metrics_message, run_log, titan_line
from titanbench.chart import (
    COLOURS,
    DROPPED_COLOUR,
    INTERVAL_COLOUR,
    PUBLISHED_COLOUR,
    render_png,
    render_steps_png,
)
from titanbench.report import collect
from titanbench.spec import load_spec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def pixels_of(image: np.ndarray, colour: str) -> int:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return int(np.all(np.abs(image[..., :3] - rgb) < 0.02, axis=-1).sum())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    spec = load_spec("70b")
    for config in spec.configs:
        folder = tmp_path / spec.model / config.id
        folder.mkdir(parents=True)
        recipe = None if config.quantization == "bf16" else config.quantization.removeprefix("float8_")
        log = run_log(
            config.published_tps, steps=config.steps, async_tp=config.tp_type == "async", float8_recipe=recipe
        )
        (folder / "train.log").write_text(log)
    return tmp_path


def test_chart_is_a_png_with_bars_and_published_marks(run_dir):
    png = render_png(collect(run_dir))
    assert png.startswith(PNG_SIGNATURE)
    image = decode(png)
    height, width = image.shape[:2]
    assert height >= 300 and width >= 500
    # Both bar colours and the published marks are drawn, in substantial areas.
    assert pixels_of(image, COLOURS["vanilla"]) > 1000
    assert pixels_of(image, COLOURS["async"]) > 1000
    assert pixels_of(image, PUBLISHED_COLOUR) > 50


def test_chart_has_one_panel_per_model(run_dir):
    spec = load_spec("8b")
    folder = run_dir / spec.model / "vanilla-bf16"
    folder.mkdir(parents=True)
    (folder / "train.log").write_text(run_log(4378, steps=100))
    doc = collect(run_dir)
    one = decode(render_png(doc.model_copy(update={"models": doc.models[:1]})))
    two = decode(render_png(collect(run_dir)))
    assert two.shape[1] > 1.8 * one.shape[1]


def test_configs_without_numbers_draw_no_bars(run_dir):
    doc = collect(run_dir)
    for config in doc.models[0].configs:
        config.measured_tps, config.speedup, config.status = None, None, "failed"
    image = decode(render_png(doc))
    assert pixels_of(image, COLOURS["async"]) == 0 and pixels_of(image, COLOURS["vanilla"]) == 0
    assert pixels_of(image, PUBLISHED_COLOUR) > 50


# ---- intervals and the step charts (issue 14) ------------------------------------------------------


def noisy(run_dir: Path) -> Path:
    """The 70B matrix with async-bf16's eight windows spread +-6 tps: an interval visible at chart scale."""
    log = run_dir / "llama3_70b" / "async-bf16" / "train.log"
    values = [658, 646, 655, 649, 660, 644, 652, 656]
    lines = [titan_line(ASYNC_TP_EVIDENCE)]
    for step, tps in [(1, 1), (10, 1), *((20 + 10 * i, v) for i, v in enumerate(values))]:
        lines.append(titan_line(metrics_message(Metrics(step=step, tps=tps))))
    log.write_text("\n".join(lines) + "\n")
    return run_dir


def test_main_chart_draws_the_intervals_as_error_bars(run_dir):
    doc = collect(noisy(run_dir))
    assert doc.models[0].configs[1].measured_tps_ci95 is not None
    with_bars = pixels_of(decode(render_png(doc)), INTERVAL_COLOUR)
    for config in doc.models[0].configs:
        config.measured_tps_ci95 = None
    assert with_bars > 20
    assert pixels_of(decode(render_png(doc)), INTERVAL_COLOUR) == 0


def test_step_charts_show_used_and_dropped_windows_and_the_band(run_dir):
    doc = collect(noisy(run_dir))
    png = render_steps_png(doc)
    assert png.startswith(PNG_SIGNATURE)
    image = decode(png)
    assert pixels_of(image, COLOURS["vanilla"]) > 100 and pixels_of(image, COLOURS["async"]) > 100
    assert pixels_of(image, DROPPED_COLOUR) > 20
    # The band: the async colour at 20% over white.
    band = "#" + "".join(f"{round(255 - 0.2 * (255 - int(COLOURS['async'][i : i + 2], 16))):02x}" for i in (1, 3, 5))
    assert pixels_of(image, band) > 1000
    # Every window averaged: nothing is drawn as dropped.
    for config in doc.models[0].configs:
        if config.summary:
            config.summary.used_steps = [w.step for w in config.summary.windows]
    assert pixels_of(decode(render_steps_png(doc)), DROPPED_COLOUR) == 0


def test_step_charts_have_one_panel_per_config(run_dir):
    doc = collect(run_dir)
    six = decode(render_steps_png(doc))
    two = decode(
        render_steps_png(
            doc.model_copy(update={"models": [doc.models[0].model_copy(update={"configs": doc.models[0].configs[:2]})]})
        )
    )
    assert six.shape[1] == two.shape[1]
    assert six.shape[0] > 2.5 * two.shape[0]
    # A config without windows still gets its panel, with its status.
    first = doc.models[0].configs[0]
    first.summary, first.measured_tps, first.measured_tps_ci95, first.status = None, None, None, "missing"
    assert decode(render_steps_png(doc)).shape == six.shape


def test_a_config_whose_windows_were_all_dropped_still_gets_its_panel(run_dir):
    """An interrupted run: only the warm-up window was logged (the runner reports at the end of `run`)."""
    doc = collect(run_dir)
    config = doc.models[0].configs[0]
    assert config.summary is not None
    config.summary.used_steps = []
    config.measured_tps, config.measured_tps_ci95, config.status = None, None, "interrupted"
    image = decode(render_steps_png(doc))
    assert pixels_of(image, DROPPED_COLOUR) > 20

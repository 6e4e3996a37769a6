"""The report's PNG chart: a real PNG that matplotlib drew from the document's numbers (not pixel-exact)."""

import io
from pathlib import Path

import numpy as np
import pytest

from logfactory import run_log
from titanbench.chart import COLOURS, PUBLISHED_COLOUR, render_png
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
    one = decode(render_png({**collect(run_dir), "models": collect(run_dir)["models"][:1]}))
    two = decode(render_png(collect(run_dir)))
    assert two.shape[1] > 1.8 * one.shape[1]


def test_configs_without_numbers_draw_no_bars(run_dir):
    doc = collect(run_dir)
    for config in doc["models"][0]["configs"]:
        config.update(measured_tps=None, speedup=None, status="failed")
    image = decode(render_png(doc))
    assert pixels_of(image, COLOURS["async"]) == 0 and pixels_of(image, COLOURS["vanilla"]) == 0
    assert pixels_of(image, PUBLISHED_COLOUR) > 50

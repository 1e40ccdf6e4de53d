"""The figures say what their outlines are, keep the title and legend off the panels, and
the per-image overlays reach an offline W&B run's own files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image
from scipy.ndimage import binary_erosion, generate_binary_structure

from src.evaluation.figures import (
    GROUND_TRUTH_COLOUR,
    PREDICTION_COLOUR,
    overlay_strip,
    overview_figure,
)
from src.evaluation.wandb_report import log_results

SIZE = 32


def _panel() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.repeat(((yy + xx) * 3).astype(np.uint8)[..., None], 3, axis=2)
    gt = (yy - 14) ** 2 + (xx - 14) ** 2 < 36
    mask = (yy - 17) ** 2 + (xx - 17) ** 2 < 49
    cam_map = np.exp(-((yy - 15) ** 2 + (xx - 15) ** 2) / 40.0)
    return image, gt, cam_map, mask


def _row(image_id: str) -> dict:
    return {
        "id": image_id,
        "group": "abnormal",
        "score": 0.9,
        "pointing": 1.0,
        "mass_in_gt": 0.4,
        "dice": 0.7,
        "hd95": 3.0,
        "pred_area": 150,
        "gt_area": 110,
    }


def _rgb(colour: str) -> list[int]:
    return [round(255 * c) for c in to_rgb(colour)]


def test_overlay_strip_panels_and_outline_colours():
    image, gt, cam_map, mask = _panel()
    strip = overlay_strip(image, gt, cam_map, mask, gap=2)
    assert strip.shape == (SIZE, 4 * SIZE + 3 * 2, 3) and strip.dtype == np.uint8
    panels = [strip[:, k * (SIZE + 2) : k * (SIZE + 2) + SIZE] for k in range(4)]
    assert (strip[:, SIZE : SIZE + 2] == 255).all()  # white gaps between panels
    np.testing.assert_array_equal(panels[0], image)  # the input, untouched
    red, cyan = _rgb(GROUND_TRUTH_COLOUR), _rgb(PREDICTION_COLOUR)
    gt_border = gt & ~binary_erosion(gt, generate_binary_structure(2, 1))
    mask_border = mask & ~binary_erosion(mask, generate_binary_structure(2, 1))
    for k in (1, 2, 3):  # the ground truth's border, and only it, is red on the other panels
        np.testing.assert_array_equal((panels[k] == red).all(-1), gt_border)
    # The mask panel: the prediction white, its border cyan (red wins where they cross).
    np.testing.assert_array_equal((panels[3] == cyan).all(-1), mask_border & ~gt_border)
    rest = ~mask_border & ~gt_border
    assert (panels[3][rest & mask] == 255).all() and (panels[3][rest & ~mask] == 0).all()


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("rows", [1, 3])
def test_overview_names_its_outlines_and_keeps_title_and_legend_off_the_panels(rows):
    ids = [f"case{k}/s0{k}" for k in range(rows)]
    fig = overview_figure(ids, lambda _: _panel(), {i: _row(i) for i in ids}, title="T")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0]
    handles = zip(legend.texts, legend.legend_handles, strict=True)
    labels = {text.get_text(): line for text, line in handles}
    assert to_rgb(labels["ground-truth tumour"].get_color()) == to_rgb(GROUND_TRUTH_COLOUR)
    assert to_rgb(labels["predicted mask"].get_color()) == to_rgb(PREDICTION_COLOUR)
    # The outlines drawn use exactly the legend's colours: red on every panel, cyan on the
    # input and mask panels.
    for r in range(rows):
        axes = fig.axes[3 * r : 3 * r + 3]
        colours = [
            {tuple(np.round(c.get_edgecolor()[0][:3], 3)) for c in ax.collections} for ax in axes
        ]
        red, cyan = tuple(map(float, to_rgb("red"))), tuple(map(float, to_rgb("cyan")))
        assert colours == [{red, cyan}, {red}, {red, cyan}]
    boxes = [fig._suptitle.get_window_extent(renderer), legend.get_window_extent(renderer)]
    assert not _overlaps(*boxes)
    for ax in fig.axes:
        panel = [ax.get_window_extent(renderer), ax.title.get_window_extent(renderer)]
        assert not any(_overlaps(a, b) for a in boxes for b in panel)
    fig.clf()


def test_tall_images_stand_side_by_side_and_the_legend_names_the_target():
    ids = [f"test/2000{k}" for k in range(4)]
    image, gt, cam_map, mask = _panel()
    tall = tuple(np.repeat(a, 3, axis=0) for a in (image, gt, cam_map, mask))
    fig = overview_figure(ids, lambda _: tall, {i: _row(i) for i in ids}, target="defect")
    fig.canvas.draw()
    # One column per image: the input, map and mask panels of an image share an x position.
    lefts = [round(ax.get_position().x0, 3) for ax in fig.axes]
    assert len(set(lefts)) == 4 and all(lefts.count(x) == 3 for x in set(lefts))
    texts = [t.get_text() for t in fig.legends[0].texts]
    assert texts[0] == "ground-truth defect"
    assert all("tumour" not in ax.get_title() for ax in fig.axes)
    fig.clf()


def test_offline_wandb_table_references_overlay_images_in_the_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    rows = [
        {"id": f"BraTS2021_0000{k}/s07{k}", "group": "abnormal", "dice": k / 4} for k in range(4)
    ]
    overlays = {row["id"]: overlay_strip(*_panel()) + k for k, row in enumerate(rows[:2])}
    summary = {"groups": {"all": {"n": 4}}, "headline": {"dice": {"mean": 0.375, "std": 0.28}}}
    run = wandb.init(project="test", dir=str(tmp_path))
    try:
        log_results(run, summary, rows, overlays, figures=[])
    finally:
        run.finish()
    files = next((tmp_path / "wandb").glob("offline-run-*")) / "files"
    table = json.loads(next(files.rglob("per_image*.table.json")).read_text())
    column = table["columns"].index("overlay_file")
    named = {row[0]: row[column] for row in table["data"]}
    assert [named[r["id"]] is None for r in rows] == [False, False, True, True]
    for image_id, overlay in overlays.items():
        with Image.open(files / named[image_id]) as png:
            np.testing.assert_array_equal(np.asarray(png), overlay)  # lossless, exactly it

"""The figures say what their outlines are, keep the title and legend off the panels, and
the per-image overlays reach an offline W&B run's own files; a multi-class (VOC) run's
overview shows its class masks in the VOC colours with the names of the classes in them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image
from scipy.ndimage import binary_erosion, generate_binary_structure

from src.data.voc import VOC_CLASSES, VOID, voc_palette
from src.evaluation import publish as publishing
from src.evaluation.figures import (
    GROUND_TRUTH_COLOUR,
    PREDICTION_COLOUR,
    VOID_NAME,
    overlay_strip,
    overview_figure,
)
from src.evaluation.image_result import binary_result, class_map_id, multilabel_result
from src.evaluation.map_store import MapWriter
from src.evaluation.masks import voc_mask
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.summary import build_summary
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


#: Index -> name of a small multi-class task; "bus" (4) is in no mask below.
NAMES = ["background", "cat", "dog", "car", "bus"]


def _class_panel() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image, its ground truth (cat, dog, a void band round the cat) and a prediction
    with cat, a car the ground truth does not have, and no dog."""
    image, _, _, _ = _panel()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    gt = np.zeros((SIZE, SIZE), np.uint8)
    gt[4:12, 4:12] = VOID
    gt[5:11, 5:11] = 1
    gt[20:28, 18:30] = 2
    pred = np.zeros((SIZE, SIZE), np.int64)
    pred[6:12, 6:12] = 1
    pred[(yy - 24) ** 2 + (xx - 8) ** 2 < 16] = 3
    return image, gt, pred


def test_class_overview_paints_the_masks_in_the_voc_colours_and_names_their_classes():
    ids = ["2007_000001", "2007_000002"]
    rows = {i: {**_row(i), "pixel_accuracy": 0.8} for i in ids}
    fig = overview_figure(ids, lambda _: _class_panel(), rows, title="T", classes=NAMES)
    fig.canvas.draw()
    image, gt, pred = _class_panel()
    palette = np.asarray(voc_palette(), np.uint8).reshape(256, 3)
    assert not fig.legends  # no outline legend: the rows name their own classes
    assert len(fig.axes) == 3 * len(ids)
    for r in range(len(ids)):
        shown = [np.asarray(ax.images[0].get_array()) for ax in fig.axes[3 * r : 3 * r + 3]]
        np.testing.assert_array_equal(shown[0], image)
        for mask, picture in ((gt, shown[1]), (pred, shown[2])):
            for value in np.unique(mask):  # every pixel in its class's colour
                assert (picture[mask == value] == palette[value]).all()
        void = tuple(palette[VOID])
        assert (shown[1][gt == VOID] == void).all()
        # Void stands apart from background and every class in the masks.
        assert void not in {tuple(palette[k]) for k in range(len(NAMES))}
        legend = fig.axes[3 * r + 2].get_legend()
        names = [t.get_text() for t in legend.texts]
        assert names == ["background", "cat", "dog", "car", VOID_NAME]  # not bus
        for name, patch in zip(names, legend.get_patches(), strict=True):
            value = VOID if name == VOID_NAME else NAMES.index(name)
            np.testing.assert_allclose(patch.get_facecolor()[:3], palette[value] / 255)
    fig.clf()


def test_class_overview_legend_has_no_void_without_void_pixels():
    image, gt, pred = _class_panel()
    gt[gt == VOID] = 0
    rows = {"a": {**_row("a"), "pixel_accuracy": 0.8}}
    fig = overview_figure(["a"], lambda _: (image, gt, pred), rows, classes=NAMES)
    assert [t.get_text() for t in fig.axes[2].get_legend().texts] == NAMES[:4]
    fig.clf()


class _Images(torch.utils.data.Dataset):
    """A test split held in memory, as the evaluation's datasets give their items."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items
        self.ids = [item["id"] for item in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def _class_maps() -> np.ndarray:
    """A cat map peaking on the cat and a dog map on the dog of `_class_panel`."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.stack(
        [np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 30.0) for y, x in ((8, 8), (24, 24))]
    )


def _split(task: str, tmp_path: Path) -> tuple[list, _Images, Path]:
    """Three images of a binary or a multi-label (VOC) task: their results, the dataset and
    the maps file, as an evaluation leaves them for publishing."""
    image, gt, pred = _class_panel()
    _, _, cam_map, _ = _panel()
    maps_path = tmp_path / "cam_maps.npz"
    results, items = [], []
    with MapWriter(maps_path) as writer:
        for k in range(3):
            image_id = f"im{k}"
            tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
            if task == "binary":
                mask = gt == 1
                writer.add(image_id, cam_map)
                results.append(binary_result(image_id, mask, cam_map > 0.5, cam_map, 1, 0.9, 99.0))
                items.append(
                    {
                        "id": image_id,
                        "image": tensor,
                        "mask": torch.from_numpy(mask),
                        "label": torch.ones(1),
                    }
                )
            else:
                classes = [0, 1]  # cat and dog (0-based among the 20 VOC classes)
                for c, own in zip(classes, _class_maps(), strict=True):
                    writer.add(class_map_id(image_id, c), own)
                results.append(multilabel_result(image_id, gt, pred, classes, 0.5))
                items.append({"id": image_id, "image": tensor, "mask": torch.from_numpy(gt)})
    return results, _Images(items), maps_path


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_publish_writes_the_overview_of_binary_and_multilabel_runs(task, tmp_path, monkeypatch):
    shown = {}

    def save_overview(ids, panel_of, rows_by_id, path, **options):
        shown.update(options, panels=[panel_of(i) for i in ids])
        real_save_overview(ids, panel_of, rows_by_id, path, **options)

    real_save_overview = publishing.save_overview
    monkeypatch.setattr(publishing, "save_overview", save_overview)
    settings = EvalSettings(tmp_path, "test", task, 99.0, None, 0, figure_images=2)
    method = Method(name="gradcam", mask="otsu" if task == "binary" else "voc")
    results, dataset, maps_path = _split(task, tmp_path)
    summary = build_summary(results, settings, method, {})
    publishing.publish(results, summary, settings, method, dataset, maps_path, None)
    with Image.open(tmp_path / "overview.png") as png:
        assert png.size[0] > 0
    assert len(shown["panels"]) == 2
    if task == "binary":  # the outlined figure, as before, and its histogram
        assert shown.get("classes") is None and len(shown["panels"][0]) == 4
        assert (tmp_path / "dice_histogram.png").is_file()
    else:  # the class masks: the ground truth as stored, the VOC rule on the saved maps
        assert shown["classes"] == ["background", *VOC_CLASSES]
        image, gt, pred = shown["panels"][0]
        np.testing.assert_array_equal(gt, _class_panel()[1])
        expected = voc_mask(_class_maps().astype(np.float16).astype(np.float32), [0, 1])
        np.testing.assert_array_equal(pred, expected)
        assert set(np.unique(pred)) == {0, 1, 2}
        assert not (tmp_path / "dice_histogram.png").exists()

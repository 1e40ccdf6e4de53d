"""Figures people would rather look at than read: image / ground truth / CAM / mask, or for
multi-class tasks (VOC) image / ground-truth classes / predicted classes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from src.data.atomic import atomic_path  # noqa: E402
from src.data.voc import VOID, voc_palette  # noqa: E402

# (image (H,W,3) uint8, ground truth (H,W) bool, CAM map (H,W) float, mask (H,W) bool)
Panel = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# (image (H,W,3) uint8, ground truth (H,W) class indices with VOID, prediction (H,W) indices)
ClassPanel = tuple[np.ndarray, np.ndarray, np.ndarray]


#: One colour per outline, the same in every panel, the W&B overlays and the legend.
GROUND_TRUTH_COLOUR = "red"
PREDICTION_COLOUR = "cyan"
#: Images at least this much taller than wide (KSDD2's strips) are shown side by side.
TALL = 1.5
#: Class masks are drawn in the VOC colour map: 0 (background) black, void (255) light grey.
PALETTE = np.asarray(voc_palette(), np.uint8).reshape(256, 3)
VOID_NAME = "void (not scored)"


def overview_legend(target: str = "tumour") -> dict[str, str]:
    """The outline colours and what they mark (`target`: what the ground truth outlines)."""
    return {GROUND_TRUTH_COLOUR: f"ground-truth {target}", PREDICTION_COLOUR: "predicted mask"}


def class_colours(labels: np.ndarray) -> np.ndarray:
    """A class-index mask (0 = background, 1.. = classes, 255 = void) as uint8 RGB."""
    return PALETTE[np.asarray(labels, dtype=np.int64)]


def class_legend(gt: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict[str, tuple]:
    """The names of the class indices found in the ground truth or the prediction, ascending
    (`classes[k]` names index k, background included), then void when the ground truth has
    any; each with its colour in the class masks (RGB in 0..1)."""
    present = np.union1d(np.unique(gt), np.unique(pred))
    legend = {classes[int(k)]: tuple(PALETTE[k] / 255) for k in present if k != VOID}
    if (gt == VOID).any():
        legend[VOID_NAME] = tuple(PALETTE[VOID] / 255)
    return legend


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Lay out, write atomically (a temporary name, then renamed) and close a figure.

    A figure made with a layout engine (``layout="constrained"``) keeps it: tight_layout
    would ignore its suptitle and figure legend and let them overlap the panels."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def _border(region: np.ndarray) -> np.ndarray:
    """The pixels of `region` with a 4-neighbour outside it (the image edge counts as outside)."""
    padded = np.pad(region, 1)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return region & ~inside


def _rgb(colour: str) -> np.ndarray:
    return np.asarray(to_rgb(colour)) * 255


def overlay_strip(
    image: np.ndarray, gt: np.ndarray, cam_map: np.ndarray, mask: np.ndarray, gap: int = 2
) -> np.ndarray:
    """One image's overview row as a single uint8 RGB picture, for tables that hold images
    (W&B): the input | the ground truth outlined | the jet-coloured map over the input with
    the ground truth outlined | the predicted mask (white) with its own outline and the
    ground truth's. Outline colours as in `overview.png`; panels `gap` white pixels apart."""
    ground_truth, predicted = _border(gt.astype(bool)), _border(mask.astype(bool))
    heat = plt.get_cmap("jet")(np.clip(cam_map, 0, 1))[..., :3] * 255
    panels = [image.astype(np.float32) for _ in range(2)]
    panels.append(0.5 * panels[0] + 0.5 * heat)
    panels.append(np.repeat(mask.astype(np.float32)[..., None] * 255, 3, axis=2))
    panels[3][predicted] = _rgb(PREDICTION_COLOUR)
    for panel in panels[1:]:
        panel[ground_truth] = _rgb(GROUND_TRUTH_COLOUR)
    spacer = np.full((image.shape[0], gap, 3), 255, np.float32)
    row = [part for panel in panels for part in (panel, spacer)][:-1]
    return np.concatenate(row, axis=1).round().astype(np.uint8)


def pick_examples(rows: Sequence[dict[str, Any]], count: int, metric: str = "dice") -> list[str]:
    """Ids spread from best to worst `metric` among abnormal images (normal ones if none)."""
    pool = [r for r in rows if r["group"] == "abnormal"] or list(rows)
    ranked = sorted(pool, key=lambda r: (-r[metric], r["id"]))
    if len(ranked) <= count:
        return [r["id"] for r in ranked]
    positions = np.linspace(0, len(ranked) - 1, count).round().astype(int)
    return [ranked[p]["id"] for p in positions]


def _outline(ax: Any, region: np.ndarray, colour: str) -> None:
    if region.any() and not region.all():
        ax.contour(region, levels=[0.5], colors=colour, linewidths=1.0)


def _verdict(value: Any, yes: str, no: str) -> str:
    return "" if value is None or value != value else (yes if value else no)


def overview_figure(
    ids: Sequence[str],
    panel_of: Callable[[str], Panel] | Callable[[str], ClassPanel],
    rows_by_id: dict[str, dict[str, Any]],
    title: str = "",
    map_label: str = "CAM",
    target: str = "tumour",
    classes: Sequence[str] | None = None,
) -> Any:
    """One row per image: the input, the CAM (or the map named `map_label`) and the mask;
    images much taller than wide (KSDD2's 232 x 640 strips) get one column each instead, so
    that they stand side by side at a readable size. `target` names what the ground truth
    outlines (tumour, defect). Every panel outlines the ground truth in red; the input and mask panels also
    outline the predicted mask in cyan, so where the map points and where the mask spills can
    be read at a glance. The map panel marks the map's maximum (x) and gives the classifier's
    score, the pointing-game verdict and the map's mass inside the tumour; the mask panel its
    Dice and HD95. A legend below the panels names the outlines (constrained layout keeps it
    and the title off the panels).

    With `classes` (the names of the class indices, background first: a multi-class task such
    as VOC) `panel_of` gives `ClassPanel`s and the panels are the input, the ground-truth
    class mask and the predicted class mask, both in the VOC colour map (void light grey);
    a legend beside each row names the classes in its masks."""
    height, width = panel_of(ids[0])[0].shape[:2]
    tall = height >= TALL * width
    if tall:
        side = min(2.4, 14 / len(ids))  # one column per image, at most 14 inches wide
        size = (side * len(ids) + 0.4, 3 * side * height / width + 1.6)
        fig = plt.figure(figsize=size, layout="constrained")
        axes = fig.subplots(3, len(ids), squeeze=False).T  # axes[image, panel]
    else:
        wide = 8 if classes is None else 9.5  # room for the class legend beside each row
        fig = plt.figure(figsize=(wide, 2.7 * len(ids) + 0.8), layout="constrained")
        axes = fig.subplots(len(ids), 3, squeeze=False)
    for r, image_id in enumerate(ids):
        row = rows_by_id[image_id]
        if classes is None:
            _binary_row(axes[r], panel_of(image_id), image_id, row, map_label, target, tall)
        else:
            _class_row(axes[r], panel_of(image_id), image_id, row, classes, tall)
        for ax in axes[r]:
            ax.axis("off")
    if classes is None:
        legend = overview_legend(target).items()
        handles = [Line2D([], [], color=c, lw=2, label=text) for c, text in legend]
        handles.append(
            Line2D([], [], color="black", marker="x", lw=0, mew=2, label="the map's maximum")
        )
        fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _binary_row(
    axes: Sequence[Any],
    panel: Panel,
    image_id: str,
    row: dict[str, Any],
    map_label: str,
    target: str,
    tall: bool,
) -> None:
    """One image of a binary task: input / map / mask, outlined (`overview_figure`)."""
    image, gt, cam_map, mask = panel
    pointing = _verdict(row.get("pointing"), f"max in {target}", "max outside")
    mass = row.get("mass_in_gt")
    mass_text = "" if mass is None or mass != mass else f", {mass:.0%} of mass in {target}"
    separator = "\n" if tall else ", "
    titles = [
        f"{image_id} ({row['group']})",
        f"{map_label}: score {row['score']:.2f}\n{pointing}{separator}{mass_text[2:]}"
        if mass_text
        else f"{map_label}: score {row['score']:.2f}\n{pointing}",
        f"mask: Dice {row['dice']:.2f}{separator}HD95 {row['hd95']:.1f}\n"
        f"{int(row['pred_area'])} px predicted{separator}{int(row['gt_area'])} px {target}",
    ]
    for c, label in enumerate(titles):
        ax = axes[c]
        if c == 1:
            ax.imshow(image)
            ax.imshow(cam_map, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if cam_map.max() > cam_map.min():
                y, x = np.unravel_index(int(np.argmax(cam_map)), cam_map.shape)
                ax.plot(x, y, marker="x", color="white", markersize=8, mew=2)
        else:
            if c == 0:
                ax.imshow(image)
            else:
                ax.imshow(mask, cmap="gray", vmin=0, vmax=1)
            _outline(ax, mask, PREDICTION_COLOUR)
        _outline(ax, gt, GROUND_TRUTH_COLOUR)
        ax.set_title(label, fontsize=7)


def _class_row(
    axes: Sequence[Any],
    panel: ClassPanel,
    image_id: str,
    row: dict[str, Any],
    classes: Sequence[str],
    tall: bool,
) -> None:
    """One image of a multi-class task: input / ground-truth classes / predicted classes,
    with a legend of the classes shown (`overview_figure`)."""
    image, gt, pred = panel
    accuracy = row.get("pixel_accuracy")
    scored = "" if accuracy is None or accuracy != accuracy else f"pixel accuracy {accuracy:.2f}"
    titles = [
        f"{image_id} ({row['group']})\nscore {row['score']:.2f}",
        f"ground truth\n{int(row['gt_area'])} px of objects",
        f"prediction: {scored}\n{int(row['pred_area'])} px of objects",
    ]
    pictures = (image, class_colours(gt), class_colours(pred))
    for ax, picture, label in zip(axes, pictures, titles, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(label, fontsize=7)
    handles = [
        Patch(facecolor=colour, edgecolor="0.5", label=name)
        for name, colour in class_legend(gt, pred, classes).items()
    ]
    where = (
        {"loc": "upper center", "bbox_to_anchor": (0.5, -0.02)}
        if tall
        else {"loc": "center left", "bbox_to_anchor": (1.02, 0.5)}
    )
    axes[2].legend(handles=handles, fontsize=7, frameon=False, **where)


def save_overview(
    ids: Sequence[str],
    panel_of: Callable[[str], Panel] | Callable[[str], ClassPanel],
    rows_by_id: dict[str, dict[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    map_label: str = "CAM",
    target: str = "tumour",
    classes: Sequence[str] | None = None,
) -> None:
    """`overview_figure` written to `path` (nothing when there are no images)."""
    if ids:
        figure = overview_figure(ids, panel_of, rows_by_id, title, map_label, target, classes)
        save_figure(figure, path)


def save_histogram(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, metric: str = "dice", title: str = ""
) -> None:
    """Distribution of a per-image metric, one bar colour per group (abnormal / normal)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, 1, 21)
    for group, colour in (("abnormal", "tab:red"), ("normal", "tab:blue")):
        values = [r[metric] for r in rows if r["group"] == group]
        if values:
            ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{group} (n={len(values)})")
    ax.set_xlabel(metric)
    ax.set_ylabel("images")
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)

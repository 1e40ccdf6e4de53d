"""Figures people would rather look at than read: image / ground truth / CAM / mask."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# (image (H,W,3) uint8, ground truth (H,W) bool, CAM map (H,W) float, mask (H,W) bool)
Panel = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Lay out, write atomically (a temporary name, then renamed) and close a figure."""
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def overlay_rgb(image: np.ndarray, cam_map: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Image blended with the jet-coloured CAM, the predicted mask's border in white (uint8)."""
    heat = plt.get_cmap("jet")(np.clip(cam_map, 0, 1))[..., :3] * 255
    blend = 0.5 * image.astype(np.float32) + 0.5 * heat
    border = mask & ~np.pad(mask, 1)[2:, 1:-1] | mask & ~np.pad(mask, 1)[:-2, 1:-1]
    border |= mask & ~np.pad(mask, 1)[1:-1, 2:] | mask & ~np.pad(mask, 1)[1:-1, :-2]
    blend[border] = 255
    return blend.round().astype(np.uint8)


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


def save_overview(
    ids: Sequence[str],
    panel_of: Callable[[str], Panel],
    rows_by_id: dict[str, dict[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    map_label: str = "CAM",
) -> None:
    """One row per image: the input, the CAM (or the map named `map_label`) and the mask, each with the ground-truth tumour
    outlined in red, so where the map points and where the mask spills can be read at a
    glance. The CAM panel marks the map's maximum (x) and gives the classifier's score, the
    pointing-game verdict and the map's mass inside the tumour; the mask panel its Dice and
    HD95."""
    if not ids:
        return
    fig, axes = plt.subplots(len(ids), 3, figsize=(8, 2.7 * len(ids)), squeeze=False)
    for r, image_id in enumerate(ids):
        image, gt, cam_map, mask = panel_of(image_id)
        row = rows_by_id[image_id]
        pointing = _verdict(row.get("pointing"), "max in tumour", "max outside")
        mass = row.get("mass_in_gt")
        mass_text = "" if mass is None or mass != mass else f", {mass:.0%} of mass in tumour"
        titles = [
            f"{image_id} ({row['group']})",
            f"{map_label}: score {row['score']:.2f}\n{pointing}{mass_text}",
            f"mask: Dice {row['dice']:.2f}, HD95 {row['hd95']:.1f}\n"
            f"{int(row['pred_area'])} px predicted, {int(row['gt_area'])} px tumour",
        ]
        for c, label in enumerate(titles):
            ax = axes[r, c]
            if c == 0:
                ax.imshow(image)
            elif c == 1:
                ax.imshow(image)
                ax.imshow(cam_map, cmap="jet", alpha=0.5, vmin=0, vmax=1)
                if cam_map.max() > cam_map.min():
                    y, x = np.unravel_index(int(np.argmax(cam_map)), cam_map.shape)
                    ax.plot(x, y, marker="x", color="white", markersize=8, mew=2)
            else:
                ax.imshow(mask, cmap="gray", vmin=0, vmax=1)
            _outline(ax, gt, "red")
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    legend = "red line: ground-truth tumour; x: the map's maximum"
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=9)
    save_figure(fig, path)


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

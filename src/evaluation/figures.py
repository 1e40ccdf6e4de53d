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


def save_overview(
    ids: Sequence[str],
    panel_of: Callable[[str], Panel],
    rows_by_id: dict[str, dict[str, Any]],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """One row per image: input, ground truth, CAM overlay, predicted mask (with its Dice)."""
    if not ids:
        return
    fig, axes = plt.subplots(len(ids), 4, figsize=(10, 2.6 * len(ids)), squeeze=False)
    for r, image_id in enumerate(ids):
        image, gt, cam_map, mask = panel_of(image_id)
        row = rows_by_id[image_id]
        panels = [
            (image, None, image_id),
            (gt, "gray", f"ground truth ({row['group']})"),
            (cam_map, "jet", f"CAM (score {row['score']:.2f})"),
            (mask, "gray", f"mask: Dice {row['dice']:.2f}, HD95 {row['hd95']:.1f}"),
        ]
        for c, (data, cmap, label) in enumerate(panels):
            ax = axes[r, c]
            if c == 2:
                ax.imshow(image)
                ax.imshow(data, cmap=cmap, alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(data, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
            if c in (1, 3):
                ax.contour(
                    gt if c == 3 else mask,
                    levels=[0.5],
                    colors="r" if c == 3 else "c",
                    linewidths=0.8,
                )
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
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

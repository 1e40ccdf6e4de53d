"""A figure of a few tumour slices of a generated BraTS set and a kaggle_3m set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experiments.heldout.common import MANIFEST


def _brats_rows(root: Path, n: int) -> list[tuple[str, list[np.ndarray], np.ndarray]]:
    import nibabel as nib

    cases = json.loads((root / MANIFEST).read_text())["cases"]
    tumour = [c for c, info in cases.items() if info["tumour"]]
    # Different kinds and places first, then the rest in order.
    picked: list[str] = []
    seen: set[tuple[str, str]] = set()
    for case in tumour:
        key = (cases[case]["kind"], cases[case]["place"])
        if key not in seen and cases[case]["slices_over_1pct"] > 0:
            picked.append(case)
            seen.add(key)
    rows = []
    for case in picked[:n]:
        seg = np.asanyarray(nib.load(str(root / case / f"{case}_seg.nii.gz")).dataobj)
        z = int(np.argmax((seg > 0).sum((0, 1))))
        images = []
        for m in ("t1", "t1ce", "t2", "flair"):
            v = np.asanyarray(nib.load(str(root / case / f"{case}_{m}.nii.gz")).dataobj)
            v = v.astype(np.float32)
            images.append((v[:, :, z] - v.min()) / max(float(v.max() - v.min()), 1.0))
        info = cases[case]
        title = f"{case} z={z}: {info['kind']}, {info['place']}"
        rows.append((title, [im.T for im in images], seg[:, :, z].T))
    return rows


def _kaggle_rows(root: Path, n: int) -> list[tuple[str, list[np.ndarray], np.ndarray]]:
    import tifffile

    base = root / "kaggle_3m"
    rows = []
    for folder in sorted(p for p in base.iterdir() if p.name.startswith("TCGA_"))[:n]:
        masks = {}
        for path in folder.glob("*_mask.tif"):
            masks[int(path.name.split("_")[-2])] = tifffile.imread(path)
        count = sum(bool(m.any()) for m in masks.values())
        k = max(masks, key=lambda i: int(masks[i].sum()))
        image = tifffile.imread(folder / f"{folder.name}_{k}.tif")
        channels = [image[..., c] / 255.0 for c in range(3)]
        title = f"{folder.name} slice {k}/{len(masks)} ({count} with tumour)"
        rows.append((title, [*channels, image / 255.0], (masks[k] > 0).astype(np.uint8) * 2))
    return rows


def draw_preview(png: str | Path, brats: str | Path, kaggle3m: str | Path, n: int = 4) -> None:
    """Save ``png``: ``n`` BraTS tumour cases (T1, T1ce, T2, FLAIR, seg) at the slice with
    the most tumour, and ``n`` kaggle_3m patients (pre, FLAIR, post, the stored RGB, mask)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(["black", "tab:red", "tab:green", "black", "yellow"])
    rows = [("brats", *r) for r in _brats_rows(Path(brats), n)]
    rows += [("kaggle", *r) for r in _kaggle_rows(Path(kaggle3m), n)]
    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3.1 * len(rows)))
    for i, (kind, title, images, mask) in enumerate(rows):
        names = (
            ["T1", "T1ce", "T2", "FLAIR"] if kind == "brats" else ["pre", "FLAIR", "post", "RGB"]
        )
        for j, (name, image) in enumerate(zip(names, images, strict=True)):
            axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_title(f"{name}" if j else f"{title}\n{name}", fontsize=8, loc="left")
        axes[i, 4].imshow(mask, cmap=colours, vmin=0, vmax=4, interpolation="nearest")
        axes[i, 4].set_title(
            "seg (1 red, 2 green, 4 yellow)" if kind == "brats" else "mask", fontsize=8
        )
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)

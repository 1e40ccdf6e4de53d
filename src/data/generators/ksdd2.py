"""Synthetic KSDD2 in its real layout (docs/data.md).

``<root>/{train,test}/NNNNN.png`` (RGB, about 230x630, sizes vary) with ``NNNNN_GT.png``
(0/255, all zero for defect-free images).

What makes the task learnable and not trivial, as on the real surfaces:
- **Surfaces** differ from image to image: a tinted base tone, a bundled scikit-image
  texture at low contrast, brushing streaks along one axis, uneven lighting and sensor noise.
- **Nuisances that are not defects** occur on defect-free and defective images alike, so
  "something differs" is not the label: broad smooth stains (larger and softer than any
  defect), faint machining lines that run the full length of the part, and dust specks
  smaller than the smallest defect.
- **Defects** are sharp-edged and local: bent scratches a few pixels wide, pits and spots,
  irregular dents and patches; darker or brighter than the surface; one per defective image,
  now and then two or three.
- **Ground truth** is drawn as KolektorSDD2's annotators drew it: a smooth outline a few
  pixels outside the visible defect, holes filled, so a thin scratch is a band around it.

The sizes and counts follow the published statistics of the real annotations (the 394
annotated regions of KolektorSDD2 at dataset-ninja.com, ``stats/object_sizes.json``):
regions 21 / 35 / 61 / 99 / 151 px high and 21 / 33 / 58 / 96 / 133 px wide (10th / 25th
/ 50th / 75th / 90th percentiles), 395 / 930 / 1865 / 4337 / 8516 px in area, filling 0.4 to
0.8 of their bounding box; 324 of the 356 defective images hold one region, 26 two, 6 three.
``DEFECT_KINDS``, ``DEFECT_COUNTS`` and ``ANNOTATION_MARGIN`` are set to reproduce them
(docs/data.md, "The KSDD2 demo"); the appearance (contrast, tone) is not published and is
as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import ellipse, line

from src.data.atomic import atomic_directory
from src.data.generators.textures import TEXTURES, bundled_image, random_crop

#: The two files of one image: the picture and its ground truth.
GT_PAIR = (".png", "_GT.png")
#: Base tones of the surfaces (RGB in [0, 1]): grey steel, a greenish and a brownish coating.
TONES = np.array([[0.55, 0.56, 0.57], [0.45, 0.52, 0.46], [0.55, 0.5, 0.44], [0.4, 0.42, 0.45]])
#: Odds of the defect kinds: with the sizes in :func:`draw_defect` and the annotation margin
#: they give region sizes like KolektorSDD2's (module docstring).
DEFECT_KINDS = {"scratch": 0.35, "pit": 0.2, "dent": 0.45}
#: Defects per defective image and their odds: KolektorSDD2 has 324, 26 and 6 of 356.
DEFECT_COUNTS = {1: 0.91, 2: 0.07, 3: 0.02}
#: Range (px) of the gap between a defect and its annotated outline.
ANNOTATION_MARGIN = (3.0, 10.0)


def metal_surface(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 grey level around 0.5: texture, brushing streaks and uneven lighting."""
    texture = random_crop(bundled_image(TEXTURES[rng.integers(len(TEXTURES))]), shape, rng)
    t = texture[..., 0].astype(np.float32) / 255
    surface = 0.5 + rng.uniform(0.05, 0.2) * (t - t.mean())
    along = int(rng.integers(2))  # brushing runs along the part's length or across it
    streaks = rng.standard_normal(shape[1 - along]).astype(np.float32)
    streaks = ndimage.gaussian_filter1d(streaks, rng.uniform(0.5, 2.0))
    surface += rng.uniform(0.01, 0.05) * (streaks[None, :] if along == 0 else streaks[:, None])
    yy, xx = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j].astype(np.float32)
    surface += rng.uniform(-0.12, 0.12) * yy + rng.uniform(-0.06, 0.06) * xx
    surface -= rng.uniform(0.0, 0.15) * (xx**2)  # darker towards the part's edges
    return surface


def add_nuisances(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stains, full-length machining lines and dust specks: visible, but not defects."""
    h, w = surface.shape
    out = surface.copy()
    for _ in range(int(rng.poisson(0.8))):  # broad soft stains
        blob = np.zeros((h, w), np.float32)
        rr, cc = ellipse(
            rng.uniform(0, h),
            rng.uniform(0, w),
            rng.uniform(25, 80),
            rng.uniform(15, 50),
            shape=(h, w),
            rotation=rng.uniform(0, np.pi),
        )
        blob[rr, cc] = 1.0
        blob = ndimage.gaussian_filter(blob, rng.uniform(8, 16))
        out += rng.choice([-1, 1]) * rng.uniform(0.05, 0.12) * blob / max(blob.max(), 1e-6)
    for _ in range(int(rng.poisson(0.7))):  # machining lines: the whole length, faint
        x = int(rng.integers(0, w))
        out[:, x : x + int(rng.integers(1, 3))] += rng.choice([-1, 1]) * rng.uniform(0.03, 0.07)
    specks = rng.random((h, w)) < rng.uniform(0.0, 3e-4)  # single-pixel dust
    out[specks] += rng.choice([-1, 1]) * rng.uniform(0.1, 0.2)
    return out


def draw_defect(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Boolean footprint of one defect (what is visible): a bent scratch, a pit or an
    irregular dent or patch, from a few pixels to most of the width across."""
    h, w = shape
    mask = np.zeros(shape, bool)
    y, x = rng.uniform(0.08, 0.92) * h, rng.uniform(0.12, 0.88) * w
    kind = rng.choice(list(DEFECT_KINDS), p=list(DEFECT_KINDS.values()))
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        for _ in range(int(rng.integers(1, 5))):
            step = rng.uniform(15, 70)
            angle += rng.uniform(-0.6, 0.6)
            y2 = float(np.clip(y + step * np.sin(angle), 0, h - 1))
            x2 = float(np.clip(x + step * np.cos(angle), 0, w - 1))
            rr, cc = line(int(y), int(x), int(y2), int(x2))
            mask[rr, cc] = True
            y, x = y2, x2
        return ndimage.binary_dilation(mask, iterations=int(rng.integers(3, 9)))
    if kind == "pit":
        rr, cc = ellipse(
            y,
            x,
            rng.uniform(5, 30),
            rng.uniform(5, 30),
            shape=shape,
            rotation=rng.uniform(0, np.pi),
        )
        mask[rr, cc] = True
        return mask
    # dent or patch: a thresholded patch of smoothed noise, irregular but compact
    size = min(int(rng.integers(20, 230)), h, w)  # small test images hold it too
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 6)
    yy, xx = np.mgrid[:size, :size]
    falloff = 1 - np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    patch = (noise / noise.std() + 2.5 * falloff) > 1.8
    top, left = int(np.clip(y - size / 2, 0, h - size)), int(np.clip(x - size / 2, 0, w - size))
    mask[top : top + size, left : left + size] = patch
    return mask


def annotate(footprint: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The annotated region of one defect: its footprint grown by a margin drawn from
    ``ANNOTATION_MARGIN``, the outline smoothed as a hand-drawn polygon is, holes filled.

    Why not the footprint itself: KolektorSDD2's regions are compact (they fill 0.4 to 0.8
    of their bounding box, also around thin scratches) and larger than the visible defect;
    the score of a CAM's mask depends on that size (docs/demo.md, "The KSDD2 demo").
    """
    margin = rng.uniform(*ANNOTATION_MARGIN)
    region = ndimage.distance_transform_edt(~footprint) <= margin
    smooth = ndimage.gaussian_filter(region.astype(np.float32), margin / 2) > 0.5
    return ndimage.binary_fill_holes(smooth | footprint)


def defective(surface: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The surface with one defect (now and then two or three), and their annotated regions."""
    gt = np.zeros(surface.shape, bool)
    out = surface.copy()
    count = rng.choice(list(DEFECT_COUNTS), p=list(DEFECT_COUNTS.values()))
    for _ in range(int(count)):
        footprint = draw_defect(surface.shape, rng)
        edge = ndimage.gaussian_filter(footprint.astype(np.float32), rng.uniform(0.3, 0.9))
        out += rng.choice([-1, 1], p=[0.65, 0.35]) * rng.uniform(0.15, 0.35) * edge
        gt |= annotate(footprint, rng)
    return out, gt


def to_rgb(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB: the grey level times a tinted base tone, plus sensor noise."""
    tone = TONES[rng.integers(len(TONES))] * rng.uniform(0.9, 1.1, 3)
    rgb = surface[..., None] * tone / 0.5
    rgb += rng.uniform(0.005, 0.02) * rng.standard_normal(rgb.shape)
    return np.clip(rgb * 255, 0, 255).round().astype(np.uint8)


def generate_ksdd2(
    root: str | Path,
    n_train: int = 24,
    n_test: int = 12,
    seed: int = 0,
    defect_fraction: float = 0.3,
    size: tuple[int, int] = (630, 230),
    overwrite: bool = False,
    marker: tuple[str, dict] | None = None,
) -> dict[str, list[str]]:
    """Write the two folders; ``size`` = nominal (height, width), each image varies by a few
    pixels. Returns the image stems per folder; images at ``defect_fraction`` have a defect.
    ``marker`` = (file name, content): a JSON provenance file written at the root with the
    data, plus a ``files`` list, inside the same atomic rename."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[str]] = {}
    with atomic_directory(root, overwrite=overwrite) as tmp:
        for folder, count, first in (("train", n_train, 10000), ("test", n_test, 20000)):
            (tmp / folder).mkdir()
            written[folder] = []
            for i in range(count):
                shape = (size[0] + int(rng.integers(-6, 7)), size[1] + int(rng.integers(-4, 5)))
                surface = add_nuisances(metal_surface(shape, rng), rng)
                gt = np.zeros(shape, bool)
                if rng.random() < defect_fraction:
                    surface, gt = defective(surface, rng)
                stem = f"{first + i:05d}"
                # Fast zlib level: a noisy surface barely compresses, level 6 took 3x as long.
                Image.fromarray(to_rgb(surface, rng)).save(
                    tmp / folder / f"{stem}.png", compress_level=1
                )
                Image.fromarray((gt * 255).astype(np.uint8)).save(tmp / folder / f"{stem}_GT.png")
                written[folder].append(stem)
        if marker is not None:
            name, content = marker
            files = [f"{d}/{s}{end}" for d, ss in written.items() for s in ss for end in GT_PAIR]
            (tmp / name).write_text(json.dumps({**content, "files": files}, indent=1))
    return written

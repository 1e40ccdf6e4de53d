"""Synthetic KSDD2 in its real layout (docs/data.md).

``<root>/{train,test}/NNNNN.png`` (RGB, about 230x630, sizes vary) with ``NNNNN_GT.png``
(0/255, all zero for defect-free images). Surfaces are low-contrast crops of scikit-image's
bundled textures with brushing streaks and uneven lighting; defects are thin scratches or
small pits, darker or brighter than the surface.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import disk, line

from src.data.atomic import atomic_directory
from src.data.generators.textures import TEXTURES, bundled_image, random_crop


def metal_surface(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 in [0, 1]: a brushed-metal-like surface."""
    texture = random_crop(bundled_image(TEXTURES[rng.integers(len(TEXTURES))]), shape, rng)
    t = texture[..., 0].astype(np.float32) / 255
    surface = 0.5 + 0.25 * (t - t.mean()) * rng.uniform(0.5, 1.0)
    surface += 0.04 * rng.standard_normal(shape[1]).astype(np.float32)[None, :]  # streaks
    ramp = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None]
    surface += rng.uniform(-0.1, 0.1) * ramp + rng.uniform(-0.08, 0.08)
    return np.clip(surface, 0, 1)


def draw_defect(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one defect: a thin bent scratch (70 %) or a small pit."""
    mask = np.zeros(shape, bool)
    h, w = shape
    if rng.random() < 0.7:
        y, x = rng.uniform(0.1, 0.9) * h, rng.uniform(0.15, 0.85) * w
        angle = rng.uniform(0, np.pi)
        for _ in range(int(rng.integers(2, 5))):
            step = rng.uniform(10, 40)
            angle += rng.uniform(-0.5, 0.5)
            y2 = float(np.clip(y + step * np.sin(angle), 0, h - 1))
            x2 = float(np.clip(x + step * np.cos(angle), 0, w - 1))
            rr, cc = line(int(y), int(x), int(y2), int(x2))
            mask[rr, cc] = True
            y, x = y2, x2
        width = int(rng.integers(0, 2))
        return ndimage.binary_dilation(mask, iterations=width) if width else mask
    rr, cc = disk(
        (rng.uniform(0.1, 0.9) * h, rng.uniform(0.15, 0.85) * w), rng.uniform(3, 9), shape=shape
    )
    mask[rr, cc] = True
    return mask


def generate_ksdd2(
    root: str | Path,
    n_train: int = 24,
    n_test: int = 12,
    seed: int = 0,
    defect_fraction: float = 0.3,
    size: tuple[int, int] = (630, 230),
    overwrite: bool = False,
) -> dict[str, list[str]]:
    """Write the two folders; ``size`` = nominal (height, width), each image varies by a few
    pixels. Returns the image stems per folder; images at ``defect_fraction`` have a defect."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[str]] = {}
    with atomic_directory(root, overwrite=overwrite) as tmp:
        for folder, count, first in (("train", n_train, 10000), ("test", n_test, 20000)):
            (tmp / folder).mkdir()
            written[folder] = []
            for i in range(count):
                shape = (size[0] + int(rng.integers(-6, 7)), size[1] + int(rng.integers(-4, 5)))
                surface = metal_surface(shape, rng)
                gt = np.zeros(shape, bool)
                if rng.random() < defect_fraction:
                    gt = draw_defect(shape, rng)
                    soft = ndimage.gaussian_filter(gt.astype(np.float32), 0.7)
                    surface = np.clip(
                        surface + rng.choice([-1, 1]) * rng.uniform(0.2, 0.35) * soft, 0, 1
                    )
                tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.03, 0.03, 3)
                rgb = np.clip(surface[..., None] * tint * 255, 0, 255).round().astype(np.uint8)
                stem = f"{first + i:05d}"
                Image.fromarray(rgb).save(tmp / folder / f"{stem}.png")
                Image.fromarray((gt * 255).astype(np.uint8)).save(tmp / folder / f"{stem}_GT.png")
                written[folder].append(stem)
    return written

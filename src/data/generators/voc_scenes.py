"""Synthetic PASCAL VOC 2012 scenes for the VOC demo, in the real ``VOCdevkit/VOC2012`` layout.

``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs with the VOC colour map:
0 background, 1..20 the classes, 255 void), ``Annotations/<id>.xml`` (one ``<object>`` per
visible object, with its box), ``ImageSets/Segmentation/{train,val,trainval}.txt`` and
``ImageSets/Main/{train,val,trainval}.txt`` plus the per-class ``<class>_<split>.txt`` lists
(``1`` / ``-1``), as the real devkit has them.

What makes the task learnable and not trivial (the VOC properties the demo keeps):
- **20 classes**, each a shape family x a colour family x a surface pattern (5 shapes: ellipse,
  box, triangle, star, cross; 4 hue families; 5 patterns: smooth, stripes, dots, checks,
  grain). The three are assigned as a Latin square, so any two classes differ in at least
  two of them: neither the colour, nor the shape, nor the pattern alone names the class.
- **Within-class variation**: size (a quarter to three quarters of the image side), aspect,
  rotation, wobbly outlines, hue / saturation / brightness jitter, pattern scale and angle,
  shading.
- **Scenes**: one to three objects (the same class twice now and then, as VOC's people),
  objects occlude each other and are cut by the image border (each keeps at least a third of
  itself in view), image sizes vary.
- **Cluttered backgrounds** that are not objects: crops of the photographs and textures
  bundled with scikit-image under a random tint, and distractor shapes from the same shape
  and pattern families in colours no class has (greys, purple, cyan, brown).
- **Void** (255) in a band 2 px wide (one on each side) along every object outline, as the
  real masks' 5 px band at VOC's ~500 px, and sensor noise, blur and JPEG compression.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon

from src.data.atomic import atomic_directory
from src.data.generators.textures import PHOTOS, TEXTURES, bundled_image, random_crop
from src.data.generators.voc import _annotation, voc_palette
from src.data.voc import VOC_CLASSES, VOID

SHAPES = ("ellipse", "box", "triangle", "star", "cross")
#: Hue families of the classes (HSV hue in [0, 1)): red, yellow, green, blue.
HUES = (0.0, 0.15, 0.33, 0.62)
PATTERNS = ("smooth", "stripes", "dots", "checks", "grain")
#: Hues of the distractors, which no class has: purple, cyan, brown (and greys: saturation 0).
DISTRACTOR_HUES = (0.8, 0.5, 0.07)


def class_look(cls: int) -> tuple[str, float, str]:
    """(shape, hue, pattern) of class index ``cls`` (0..19): a Latin square over the three."""
    shape, colour = cls % len(SHAPES), cls // len(SHAPES)
    return SHAPES[shape], HUES[colour], PATTERNS[(shape + colour) % len(PATTERNS)]


def _outline(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(N, 2) polygon (y, x) of a shape of unit radius centred at 0, before rotation."""
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = 1 + 0.06 * np.sin(int(rng.integers(2, 5)) * t + rng.uniform(0, 6))
        return np.stack([rng.uniform(0.5, 0.9) * r * np.sin(t), r * np.cos(t)], 1)
    if kind == "box":
        a = rng.uniform(0.55, 0.95)
        pts = np.array([[-a, -1], [-a, 1], [a, 1], [a, -1]], float) * 0.8
        return pts + rng.normal(0, 0.04, pts.shape)
    if kind == "triangle":
        t = np.pi / 2 + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.normal(0, 0.12, 3)
        return np.stack([np.sin(t), np.cos(t)], 1) * rng.uniform(0.85, 1.0, (3, 1))
    if kind == "star":
        k = int(rng.integers(5, 8))
        t = np.linspace(0, 2 * np.pi, 2 * k, endpoint=False)
        r = np.where(np.arange(2 * k) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        return np.stack([r * np.sin(t), r * np.cos(t)], 1)
    # cross: a plus sign, arms of one width
    w = rng.uniform(0.25, 0.4)
    pts = [(-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
    pts += [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1)]
    return np.array(pts, float) * 0.95


def shape_mask(
    kind: str, shape: tuple[int, int], centre: tuple[float, float], radius: float,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """Boolean footprint of one shape of the family ``kind``: rotated, scaled to ``radius``."""
    pts = _outline(kind, rng) * radius
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T + np.asarray(centre)
    mask = np.zeros(shape, bool)
    rr, cc = polygon(pts[:, 0], pts[:, 1], shape)
    mask[rr, cc] = True
    return mask


def pattern(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) float in [0, 1]: the surface pattern ``kind`` at a random scale and angle."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    period = rng.uniform(5, 9)
    phase = rng.uniform(0, 2 * np.pi, 2)
    if kind == "stripes":
        return (np.sin(2 * np.pi * u / period + phase[0]) > 0).astype(np.float32)
    if kind == "dots":
        s = np.sin(2 * np.pi * u / period + phase[0]) * np.sin(2 * np.pi * v / period + phase[1])
        return (s > 0.45).astype(np.float32)
    if kind == "checks":
        s = np.sin(np.pi * u / period + phase[0]) * np.sin(np.pi * v / period + phase[1])
        return (s > 0).astype(np.float32)
    if kind == "grain":
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(0.8, 1.5))
        return (noise > 0).astype(np.float32)
    # smooth: a soft shading only
    g = u / max(shape) + 0.3 * np.sin(v / max(shape) * np.pi)
    return ((g - g.min()) / max(float(np.ptp(g)), 1e-6)).astype(np.float32)


def paint(hue: float, sat: float, kind: str, shape: tuple[int, int], rng: np.random.Generator):
    """(H, W, 3) float RGB: the pattern between a light and a dark shade of one colour."""
    value = rng.uniform(0.65, 0.95)
    light = np.array(colorsys.hsv_to_rgb(hue % 1, sat, value), np.float32)
    dark = np.array(colorsys.hsv_to_rgb(hue % 1, min(1.0, sat * 1.1), value * 0.5), np.float32)
    t = pattern(kind, shape, rng)[..., None]
    if kind == "smooth":  # shading, not a pattern: a narrower range
        t = 0.3 + 0.5 * t
    return light * (1 - t) + dark * t


def background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float: a tinted photo or texture crop, with distractor shapes on it."""
    source = PHOTOS if rng.random() < 0.7 else TEXTURES
    image = random_crop(bundled_image(source[rng.integers(len(source))]), shape, rng)
    image = image.astype(np.float32) / 255
    if rng.random() < 0.5:
        image = image[:, ::-1]
    tint = rng.uniform(0.75, 1.15, 3).astype(np.float32)
    image = np.clip(image * tint * rng.uniform(0.7, 1.1), 0, 1)
    for _ in range(int(rng.integers(0, 4))):
        radius = rng.uniform(0.08, 0.25) * min(shape)
        centre = (rng.uniform(0, shape[0]), rng.uniform(0, shape[1]))
        region = shape_mask(SHAPES[rng.integers(len(SHAPES))], shape, centre, radius, rng)
        if rng.random() < 0.5:
            hue, sat = rng.uniform(0, 1), rng.uniform(0.0, 0.15)  # greys
        else:
            hue = DISTRACTOR_HUES[rng.integers(len(DISTRACTOR_HUES))] + rng.normal(0, 0.02)
            sat = rng.uniform(0.4, 0.8)
        image[region] = paint(hue, sat, PATTERNS[rng.integers(len(PATTERNS))], shape, rng)[region]
    return image


def render_scene(
    rng: np.random.Generator, size: tuple[int, int] = (128, 168)
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, tuple]]]:
    """One scene: uint8 RGB, the class-index mask (255 = void) and the visible objects
    ``(class name, (ymin, xmin, ymax, xmax))``. Image sides are drawn from ``size``."""
    shape = (int(rng.integers(size[0], size[1] + 1)), int(rng.integers(size[0], size[1] + 1)))
    image = background(shape, rng)
    labels = np.zeros(shape, np.uint8)
    n_objects = int(rng.choice([1, 1, 1, 2, 2, 3]))
    placed: list[tuple[int, np.ndarray]] = []
    for k in range(n_objects):
        if k and rng.random() < 0.15:
            cls = placed[-1][0] if placed else int(rng.integers(len(VOC_CLASSES)))
        else:
            cls = int(rng.integers(len(VOC_CLASSES)))
        kind, hue, look = class_look(cls)
        for _ in range(10):  # a place where this and every earlier object stay in view
            radius = rng.uniform(0.15, 0.38) * min(shape)
            centre = (rng.uniform(0.1, 0.9) * shape[0], rng.uniform(0.1, 0.9) * shape[1])
            region = shape_mask(kind, shape, centre, radius, rng)
            full = np.pi * radius**2 * 0.5  # about the smallest unclipped area of a shape
            if region.sum() < max(0.35 * full, 60):
                continue
            if all((own & ~region).sum() >= 0.35 * own.sum() for _, own in placed):
                break
        else:
            continue
        colours = paint(hue + rng.normal(0, 0.02), rng.uniform(0.55, 0.95), look, shape, rng)
        # Shading across the object: light from one side.
        ys, xs = np.nonzero(region)
        light = rng.uniform(-1, 1, 2)
        ramp = (ys - ys.mean()) * light[0] + (xs - xs.mean()) * light[1]
        shade = 1 + 0.25 * ramp / max(float(np.abs(ramp).max()), 1.0)
        alpha = ndimage.gaussian_filter(region.astype(np.float32), 0.6)[..., None]
        painted = image.copy()
        painted[ys, xs] = np.clip(colours[ys, xs] * shade[:, None], 0, 1)
        image = image * (1 - alpha) + painted * alpha
        placed = [(c, own & ~region) for c, own in placed] + [(cls, region)]
        labels[region] = cls + 1
    void = np.zeros(shape, bool)
    objects = []
    for cls, own in placed:
        if not own.any():
            continue
        void |= ndimage.binary_dilation(own, iterations=1) & ~ndimage.binary_erosion(
            own, iterations=1
        )
        ys, xs = np.nonzero(own)
        objects.append((VOC_CLASSES[cls], (ys.min(), xs.min(), ys.max(), xs.max())))
    labels[void] = VOID
    # Camera: uneven light, a little blur and sensor noise.
    yy, xx = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j].astype(np.float32)
    image = image * (1 + rng.uniform(-0.15, 0.15) * yy + rng.uniform(-0.15, 0.15) * xx)[..., None]
    sigma = rng.uniform(0, 0.7)
    if sigma > 0.3:
        image = ndimage.gaussian_filter(image, (sigma, sigma, 0))
    image = image + rng.normal(0, rng.uniform(0.005, 0.03), image.shape)
    rgb = np.clip(image * 255, 0, 255).round().astype(np.uint8)
    return rgb, labels, objects


def _id_list(ids: list[str]) -> str:
    return "".join(f"{i}\n" for i in ids)


def generate_voc_scenes(
    root: str | Path,
    n_train: int = 24,
    n_val: int = 12,
    seed: int = 0,
    size: tuple[int, int] = (128, 168),
    overwrite: bool = False,
    marker: tuple[str, dict] | None = None,
) -> dict[str, list[str]]:
    """Write ``<root>/VOCdevkit/VOC2012`` with ``n_train`` + ``n_val`` scenes (sides drawn from
    ``size``); returns the ids per list. ``marker`` = (file name, content): a JSON provenance
    file written at the root with the data, plus a ``files`` list, in the same atomic rename."""
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    ids = [f"{2008 + i % 4}_{i:06d}" for i in range(n_train + n_val)]
    lists = {"train": ids[:n_train], "val": ids[n_train:]}
    files: list[str] = []
    with atomic_directory(root, overwrite=overwrite) as tmp:
        voc = tmp / "VOCdevkit" / "VOC2012"
        subs = ("JPEGImages", "Annotations", "SegmentationClass")
        for sub in (*subs, "ImageSets/Segmentation", "ImageSets/Main"):
            (voc / sub).mkdir(parents=True)
        present: dict[str, set[str]] = {}
        for image_id in ids:
            rgb, labels, objects = render_scene(rng, tuple(size))
            jpeg = voc / "JPEGImages" / f"{image_id}.jpg"
            Image.fromarray(rgb).save(jpeg, quality=int(rng.integers(75, 96)))
            (voc / "Annotations" / f"{image_id}.xml").write_text(
                _annotation(image_id, rgb.shape[:2], objects)
            )
            mask = Image.frombytes("P", labels.shape[::-1], labels.tobytes())
            mask.putpalette(palette)
            mask.save(voc / "SegmentationClass" / f"{image_id}.png")
            present[image_id] = {name for name, _ in objects}
            files += [
                f"VOCdevkit/VOC2012/{s}/{image_id}{e}"
                for s, e in zip(subs, (".jpg", ".xml", ".png"), strict=True)
            ]
        lists["trainval"] = lists["train"] + lists["val"]
        for split in ("train", "val", "trainval"):
            for sets in ("Segmentation", "Main"):
                (voc / "ImageSets" / sets / f"{split}.txt").write_text(_id_list(lists[split]))
                files.append(f"VOCdevkit/VOC2012/ImageSets/{sets}/{split}.txt")
            for name in VOC_CLASSES:
                rows = "".join(
                    f"{i} {' 1' if name in present[i] else '-1'}\n" for i in lists[split]
                )
                (voc / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text(rows)
        if marker is not None:
            name, content = marker
            (tmp / name).write_text(json.dumps({**content, "files": files}, indent=1))
    return lists

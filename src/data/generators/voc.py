"""Synthetic PASCAL VOC 2012 in the real ``VOCdevkit/VOC2012`` layout (docs/data.md).

Objects (one colour, shape family and texture per class) are pasted on crops of the natural
photographs bundled with scikit-image. Masks are palette PNGs with the VOC colour map,
class indices and a void (255) band along every object outline, as in the real masks; XML
annotations list the objects; ``ImageSets/Segmentation/{train,val,trainval}.txt`` hold the
lists, plus ``train_aug.txt`` with extra mask-less images when ``n_aug`` > 0 (the SBD list).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import ellipse, polygon

from src.data.atomic import atomic_directory
from src.data.generators.textures import PHOTOS, TEXTURES, bundled_image, random_crop
from src.data.voc import VOC_CLASSES, VOID, voc_palette


def _object_mask(shape: tuple[int, int], cls: int, rng: np.random.Generator) -> np.ndarray:
    """Region of one object: ellipses for even classes, random star polygons for odd ones."""
    h, w = shape
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    ry, rx = rng.uniform(0.12, 0.3) * h, rng.uniform(0.12, 0.3) * w
    mask = np.zeros(shape, bool)
    if cls % 2 == 0:
        rr, cc = ellipse(cy, cx, ry, rx, shape=shape, rotation=rng.uniform(0, np.pi))
    else:
        k = 5 + cls % 4
        angles = np.sort(rng.uniform(0, 2 * np.pi, 2 * k))
        radius = np.where(np.arange(2 * k) % 2 == 0, 1.0, rng.uniform(0.45, 0.7))
        rr, cc = polygon(
            cy + ry * radius * np.sin(angles), cx + rx * radius * np.cos(angles), shape
        )
    mask[rr, cc] = True
    return mask


def _object_pixels(shape: tuple[int, int], cls: int, rng: np.random.Generator) -> np.ndarray:
    """Class-coloured texture (float RGB in [0, 1])."""
    hue = np.array(voc_palette()[3 * (cls + 1) : 3 * (cls + 2)], np.float32) / 255
    texture = random_crop(bundled_image(TEXTURES[cls % len(TEXTURES)]), shape, rng)
    t = texture[..., :1].astype(np.float32) / 255
    return np.clip(0.25 + 0.65 * hue * (0.6 + 0.8 * t), 0, 1)


def _annotation(image_id: str, shape: tuple[int, int], objects: list[tuple[str, tuple]]) -> str:
    rows = [
        "<annotation>",
        "  <folder>VOC2012</folder>",
        f"  <filename>{image_id}.jpg</filename>",
        f"  <size><width>{shape[1]}</width><height>{shape[0]}</height><depth>3</depth></size>",
        "  <segmented>1</segmented>",
    ]
    for name, (y0, x0, y1, x1) in objects:
        rows += [
            "  <object>",
            f"    <name>{escape(name)}</name>",
            "    <pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>",
            f"    <bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax>"
            f"<ymax>{y1 + 1}</ymax></bndbox>",
            "  </object>",
        ]
    return "\n".join(rows + ["</annotation>"]) + "\n"


def _render_image(
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, tuple]]]:
    shape = (int(rng.integers(200, 280)), int(rng.integers(240, 340)))
    background = random_crop(bundled_image(PHOTOS[rng.integers(len(PHOTOS))]), shape, rng)
    image = background.astype(np.float32) / 255
    labels = np.zeros(shape, np.uint8)
    void = np.zeros(shape, bool)
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(len(VOC_CLASSES)))
        region = _object_mask(shape, cls, rng)
        image[region] = _object_pixels(shape, cls, rng)[region]
        labels[region] = cls + 1
        void |= region ^ ndimage.binary_erosion(region, iterations=int(rng.integers(2, 4)))
        ys, xs = np.nonzero(region)
        objects.append((VOC_CLASSES[cls], (ys.min(), xs.min(), ys.max(), xs.max())))
    labels[void] = VOID
    rgb = np.clip(image * 255, 0, 255).round().astype(np.uint8)
    return rgb, labels, objects


def generate_voc(
    root: str | Path,
    n_train: int = 16,
    n_val: int = 8,
    n_aug: int = 0,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, list[str]]:
    """Write ``<root>/VOCdevkit/VOC2012``; returns the image ids per list (train, val, aug).

    Objects can occlude earlier ones, so an XML may name a class that is hidden; real VOC
    has the same property. ``n_aug`` images get a JPEG and XML but no mask.
    """
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    ids = [f"{2007 + i % 6}_{i:06d}" for i in range(n_train + n_val + n_aug)]
    lists = {
        "train": ids[:n_train],
        "val": ids[n_train : n_train + n_val],
        "aug": ids[n_train + n_val :],
    }
    with atomic_directory(root, overwrite=overwrite) as tmp:
        voc = tmp / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        for image_id in ids:
            rgb, labels, objects = _render_image(rng)
            Image.fromarray(rgb).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
            (voc / "Annotations" / f"{image_id}.xml").write_text(
                _annotation(image_id, rgb.shape[:2], objects)
            )
            if image_id not in lists["aug"]:
                mask = Image.frombytes("P", labels.shape[::-1], labels.tobytes())
                mask.putpalette(palette)
                mask.save(voc / "SegmentationClass" / f"{image_id}.png")
        sets = voc / "ImageSets" / "Segmentation"
        (sets / "train.txt").write_text("".join(f"{i}\n" for i in lists["train"]))
        (sets / "val.txt").write_text("".join(f"{i}\n" for i in lists["val"]))
        (sets / "trainval.txt").write_text("".join(f"{i}\n" for i in lists["train"] + lists["val"]))
        if n_aug:
            aug = lists["train"] + lists["aug"]
            (sets / "train_aug.txt").write_text("".join(f"{i}\n" for i in aug))
    return lists

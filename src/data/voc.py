"""PASCAL VOC 2012 reader and DataModule (docs/data.md).

``VOCdevkit/VOC2012/{JPEGImages,Annotations,SegmentationClass,ImageSets/Segmentation}``;
``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012``.
Labels: multi-hot over the 20 classes (standard order) from the XML ``<object><name>``.
Masks: palette PNGs read as indices (0 = background, 1..20 = classes, 255 = void).
Splits: the official ``val`` list is our test split; our val is a seeded ``val_fraction`` of
the training list, which is ``train`` or the SBD-augmented ``train_aug``
(``ImageSets/Segmentation/train_aug.txt``). Images without a mask (the SBD extras, unless
``SegmentationClassAug/`` provides one) get an all-void mask; every test image needs one.
VOC images differ in size, so ``image_size=None`` needs ``batch_size=1``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from src.data.base import DataModuleArguments, FileDataModule
from src.data.errors import DataFormatError
from src.data.imageio import image_hw, read_image
from src.data.splits import Split, carve_val
from src.data.transforms import as_size

if TYPE_CHECKING:
    from typing_extensions import Unpack

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip
VOID = 255


def voc_palette() -> list[int]:
    """The VOC colour map (index bits spread over the high bits of R, G, B), 256 x RGB."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def read_object_names(path: Path) -> list[str]:
    """Class names of the ``<object>`` entries of a VOC annotation (parts are ignored)."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise DataFormatError(path, f"cannot parse annotation XML ({exc})") from exc
    names = [(obj.findtext("name") or "").strip() for obj in tree.getroot().findall("object")]
    unknown = sorted({n for n in names if n not in VOC_CLASSES})
    if unknown:
        raise DataFormatError(path, f"unknown object names {unknown}")
    return names


def multi_hot(names: Sequence[str]) -> list[float]:
    """20-long 0/1 vector of the classes present, in the standard VOC order."""
    present = set(names)
    return [float(c in present) for c in VOC_CLASSES]


def read_index_mask(path: Path) -> np.ndarray:
    """A class-index mask (palette PNG as indices, or a grey index PNG as in SBD's
    ``SegmentationClassAug``); values must be 0..20 or 255."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise ValueError(f"expected a palette or grey index PNG, got mode {img.mode}")
            mask = np.asarray(img)
    except Exception as exc:
        raise DataFormatError(path, f"cannot decode mask ({type(exc).__name__}: {exc})") from exc
    values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    bad = [int(v) for v in values if v > len(VOC_CLASSES) and v != VOID]
    if bad:
        raise DataFormatError(path, f"mask values {bad[:5]} are neither classes 0..20 nor void 255")
    return mask


def read_id_list(path: Path) -> list[str]:
    """Image ids of a VOC ``ImageSets`` list (first word of every non-empty line)."""
    if not path.is_file():
        raise DataFormatError(path, "missing image list")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


class VOCDataModule(FileDataModule):
    """VOC 2012 multi-label classification with segmentation masks for evaluation.

    ``**shared``: :class:`DataModuleArguments` (batch size 32 unless given).
    """

    num_classes = len(VOC_CLASSES)
    task = "multilabel"
    eval_metrics = "confusion"  # mIoU over background + 20 classes, precision, recall, micro-F1
    class_names = VOC_CLASSES
    default_batch_size = 32

    def __init__(
        self,
        root: str | Path,
        image_size: int | Sequence[int] | None = 320,
        train_list: str = "train",
        val_fraction: float = 0.1,
        **shared: Unpack[DataModuleArguments],
    ) -> None:
        super().__init__(root, (1 - val_fraction, val_fraction, 0), **shared)
        if train_list not in ("train", "train_aug"):
            raise ValueError(f"train_list must be 'train' or 'train_aug', got {train_list!r}")
        self.train_list = train_list
        self.val_fraction = float(val_fraction)
        self.image_size = as_size(image_size)  # type: ignore[arg-type]
        self._lists: dict[str, list[str]] = {}

    def _voc_dir(self) -> Path:
        for candidate in (self.root / "VOCdevkit" / "VOC2012", self.root / "VOC2012", self.root):
            if (candidate / "JPEGImages").is_dir():
                return candidate
        raise DataFormatError(self.root, "no VOC2012 folder with JPEGImages/ (VOCdevkit layout)")

    def _scan(self) -> list[str]:
        voc = self._voc_dir()
        annotations = voc / "Annotations"
        if not annotations.is_dir():  # else every image would fail on its own XML file
            raise DataFormatError(annotations, "missing folder (the image labels are read from it)")
        sets = voc / "ImageSets" / "Segmentation"
        self._lists = {
            "train": read_id_list(sets / f"{self.train_list}.txt"),
            "test": read_id_list(sets / "val.txt"),
        }
        needs_mask = set(self._lists["test"])
        ids = sorted(set(self._lists["train"]) | needs_mask)
        for image_id in ids:
            row = self._guard(
                image_id, lambda i=image_id: self._scan_image(voc, i, i in needs_mask)
            )
            if row is not None:
                self._entries[image_id] = [row]
        return [i for i in ids if i in self._entries]

    @staticmethod
    def _scan_image(voc: Path, image_id: str, needs_mask: bool) -> tuple[str, object, list[float]]:
        image = voc / "JPEGImages" / f"{image_id}.jpg"
        if not image.is_file():
            raise DataFormatError(image, "missing image listed in ImageSets/Segmentation")
        labels = multi_hot(read_object_names(voc / "Annotations" / f"{image_id}.xml"))
        mask = next(
            (
                p
                for p in (
                    voc / "SegmentationClass" / f"{image_id}.png",
                    voc / "SegmentationClassAug" / f"{image_id}.png",
                )
                if p.is_file()
            ),
            None,
        )
        if mask is None and needs_mask:
            raise DataFormatError(voc / "SegmentationClass" / f"{image_id}.png", "missing mask")
        if mask is not None:
            shape = read_index_mask(mask).shape
            if shape != image_hw(image):
                raise DataFormatError(mask, f"mask shape {shape} differs from image {image.name}")
        return image_id, (image, mask), labels

    def _official_split(self, groups: list[str]) -> Split:
        usable = set(groups)
        test = [i for i in self._lists["test"] if i in usable]
        train = [i for i in self._lists["train"] if i in usable and i not in set(test)]
        return carve_val(train, test, self.val_fraction, self.split_seed)

    def _load(self, record: object) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = record  # type: ignore[misc]
        image = read_image(image_path, "RGB")
        if mask_path is None:
            return image, np.full(image.shape[:2], VOID, np.uint8)
        return image, read_index_mask(mask_path)

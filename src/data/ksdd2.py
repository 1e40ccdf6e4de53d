"""KSDD2 reader and DataModule (docs/data.md).

``<root>/{train,test}/NNNNN.png`` with ``NNNNN_GT.png`` (0/255; every image has one).
Images (~230x630, sizes vary) are resized to ``image_size`` = (640, 232) (height, width) by
default; label = GT non-empty; the mask is GT > 0. The official test folder is our test
split; val is a seeded ``val_fraction`` of the train folder. Item ids are ``train/NNNNN``.
"""

from __future__ import annotations

import re
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

FOLDERS = ("train", "test")
_IMAGE = re.compile(r"^(\d+)\.png$")


class KSDD2DataModule(FileDataModule):
    """KSDD2 surface images, binary defect label, defect mask.

    ``**shared``: :class:`DataModuleArguments` (batch size 32 unless given).
    """

    num_classes = 1
    task = "binary"
    eval_metrics = "confusion"  # the second paper's columns: mIoU, precision, recall, micro-F1
    eval_miou = "foreground"  # the paper's KSDD2 mIoU is the defect-class IoU
    eval_label_gate = True  # Otsu masks of the defect map only on images labelled defective
    class_names = ["defect"]
    default_batch_size = 32

    def __init__(
        self,
        root: str | Path,
        image_size: int | Sequence[int] | None = (640, 232),
        val_fraction: float = 0.1,
        **shared: Unpack[DataModuleArguments],
    ) -> None:
        super().__init__(root, (1 - val_fraction, val_fraction, 0), **shared)
        self.val_fraction = float(val_fraction)
        self.image_size = as_size(image_size)  # type: ignore[arg-type]

    def _scan(self) -> list[str]:
        for folder in FOLDERS:
            if not (self.root / folder).is_dir():
                raise DataFormatError(
                    self.root / folder, "missing KSDD2 folder (expected train/ and test/)"
                )
        groups = []
        for folder in FOLDERS:
            path = self.root / folder
            for image in sorted(p for p in path.iterdir() if _IMAGE.match(p.name)):
                group = f"{folder}/{image.stem}"
                row = self._guard(
                    group, lambda image=image, group=group: self._scan_image(image, group)
                )
                if row is not None:
                    self._entries[group] = [row]
                    groups.append(group)
        return groups

    @staticmethod
    def _scan_image(image: Path, group: str) -> tuple[str, object, list[float]]:
        gt_path = image.with_name(f"{image.stem}_GT.png")
        if not gt_path.is_file():
            raise DataFormatError(gt_path, f"missing ground-truth file of {image.name}")
        gt = read_image(gt_path, "L")
        size = image_hw(image)
        if gt.shape != size:
            raise DataFormatError(gt_path, f"GT shape {gt.shape} differs from image {size}")
        return group, (image, gt_path), [float(gt.any())]

    def _official_split(self, groups: list[str]) -> Split:
        train = [g for g in groups if g.startswith("train/")]
        test = [g for g in groups if g.startswith("test/")]
        return carve_val(train, test, self.val_fraction, self.split_seed)

    def _load(self, record: object) -> tuple[np.ndarray, np.ndarray]:
        image_path, gt_path = record  # type: ignore[misc]
        return read_image(image_path, "RGB"), (read_image(gt_path, "L") > 0).astype(np.uint8)

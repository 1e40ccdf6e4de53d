"""The result of one evaluated image: one row of `per_image.csv` plus its pixel counts.

A typed record rather than a dict, so the split-level confusion counts travel beside the
CSV columns without a hidden key, and the CSV's columns and formatting live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src.data.voc import VOC_CLASSES, VOID
from src.evaluation.metrics import (
    ConfusionMatrix,
    binary_metrics,
    group_of,
    localisation_metrics,
    scored_ground_truth,
)

NUM_VOC_LABELS = len(VOC_CLASSES) + 1  # background + the 20 classes
#: The identity columns every row starts with, in `per_image.csv` order.
IDENTITY = ("id", "group", "label", "score", "gt_area", "pred_area")


@dataclass(frozen=True)
class ImageResult:
    """One image's identity, group, classifier output and metrics, and its pixel confusion.

    `label` is the binary label (int) or the label's classes joined by spaces (multi-label).
    `metrics` holds the metric columns in CSV order. `confusion` is the image's pixel
    confusion matrix: the split's is the merge of all of them (docs/metrics.md); it is not a
    CSV column.
    """

    id: str
    group: str
    label: int | str
    score: float
    gt_area: int
    pred_area: int
    metrics: Mapping[str, float]
    confusion: ConfusionMatrix = field(repr=False, compare=False)
    #: A multi-label classifier's probability of every class (for the split's mAP); else None.
    probs: tuple[float, ...] | None = field(default=None, repr=False, compare=False)

    def as_row(self) -> dict[str, Any]:
        """The CSV columns as values, in order: what summaries, figures and W&B tables read."""
        identity = (self.id, self.group, self.label, self.score, self.gt_area, self.pred_area)
        return {**dict(zip(IDENTITY, identity, strict=True)), **self.metrics}

    def csv_row(self) -> dict[str, Any]:
        """`as_row` as `per_image.csv` writes it: floats with 6 significant digits."""
        return {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in self.as_row().items()}


def gated_mask(mask: np.ndarray, label: int, label_gate: bool) -> np.ndarray:
    """The mask an image is scored with. With `label_gate`, an image whose image-level label
    is negative gets an empty mask: in weakly-supervised segmentation the label is given, and
    a class's map is only read where the label names the class (VOC's rule, docs/masks.md).
    Otsu always splits a map in two, so without the gate every clean KSDD2 surface would be
    scored with a mask covering a large share of it."""
    if label_gate and not label:
        return np.zeros_like(mask, dtype=bool)
    return mask


def binary_result(
    image_id: str,
    gt: np.ndarray,
    mask: np.ndarray,
    cam_map: np.ndarray,
    label: int,
    score: float,
    empty_hd95: float | None,
    normal_area_max: float | None = None,
    label_gate: bool = False,
    faithfulness: Mapping[str, float] | None = None,
) -> ImageResult:
    """The result of one image of a binary task: the mask's metrics, the map's
    threshold-free localisation (pointing game, mass in the GT) and, when measured, the map's
    `faithfulness` columns (they need the network, so the caller brings them).

    Metrics and group are taken against `scored_ground_truth(gt, normal_area_max)`;
    `gt_area` stays the true tumour area, so a small tumour scored as normal can be seen.
    `label_gate`: the mask passes through `gated_mask` (empty where the label is negative)."""
    mask = gated_mask(mask, label, label_gate)
    scored = scored_ground_truth(gt, normal_area_max)
    return ImageResult(
        id=image_id,
        group=group_of(scored),
        label=int(label),
        score=float(score),
        gt_area=int(gt.sum()),
        pred_area=int(mask.sum()),
        metrics={
            **binary_metrics(mask, scored, empty_hd95=empty_hd95),
            **localisation_metrics(cam_map, scored),
            **(faithfulness or {}),
        },
        # Pixel counts for the split-level confusion matrix (KSDD2's columns).
        confusion=ConfusionMatrix(2, ignore_index=None).update(mask, scored),
    )


def multilabel_result(
    image_id: str,
    gt: np.ndarray,
    pred: np.ndarray,
    classes: list[int],
    score: float,
    probs: Sequence[float] | None = None,
) -> ImageResult:
    """The result of one image of a multi-label task (VOC): label maps with 255 = void.
    `probs`: the classifier's probability of every class, when known (the split's mAP)."""
    valid = gt != VOID
    foreground = valid & (gt > 0)
    accuracy = float((pred[valid] == gt[valid]).mean()) if valid.any() else 1.0
    return ImageResult(
        id=image_id,
        group=group_of(foreground),
        label=" ".join(str(c) for c in classes),
        score=float(score),
        gt_area=int(foreground.sum()),
        pred_area=int((pred > 0).sum()),
        metrics={"pixel_accuracy": accuracy},
        confusion=ConfusionMatrix(NUM_VOC_LABELS).update(pred, gt),
        probs=None if probs is None else tuple(float(p) for p in probs),
    )


def class_map_id(image_id: str, class_index: int) -> str:
    """Key of one class's map of a multi-label image in the maps file."""
    return f"{image_id}@{class_index}"

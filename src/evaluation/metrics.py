"""Segmentation metrics (docs/metrics.md): per-image binary metrics, group summaries, split-level
confusion matrices.

This module is the one place that defines the metric edge cases:

- Binary masks (BraTS, TCGA-LGG; foreground = tumour): :func:`binary_metrics`.
- Groups ``abnormal`` (GT non-empty, the paper's tables), ``normal`` and ``all``:
  :func:`group_of` and :func:`summarize`.
- VOC / KSDD2 (one confusion matrix over the whole split): :class:`ConfusionMatrix`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

GROUPS = ("abnormal", "normal", "all")
AUTHORS_EMPTY_HD95 = 373.12866
"""The Cfd-CAM authors' HD95 when exactly one mask is empty: the diagonal of a BraTS volume,
``sqrt(240^2 + 240^2 + 155^2)`` (docs/metrics.md)."""


def _as_bool(mask: Any) -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool, copy=False)


def _check_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_bool(pred), _as_bool(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} does not match gt shape {gt.shape}")
    if pred.ndim == 0 or pred.size == 0:
        raise ValueError(f"pred/gt: expected non-empty arrays, got shape {pred.shape}")
    return pred, gt


def surface_distances(
    source: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Distances from each surface pixel of ``source`` to the nearest surface pixel of
    ``target``; both masks must be non-empty. In pixels (spacing 1), or in the unit of
    ``spacing`` (one value per axis: the voxel size of a stacked volume).

    The surface is the mask minus its erosion by the connectivity-1 cross (pixels outside the
    image count as background), exactly as medpy's ``__surface_distances``.
    """
    cross = generate_binary_structure(source.ndim, 1)
    source_surface = source ^ binary_erosion(source, structure=cross, iterations=1)
    target_surface = target ^ binary_erosion(target, structure=cross, iterations=1)
    return distance_transform_edt(~target_surface, sampling=spacing)[source_surface]


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the union of both directed surface-distance sets (medpy ``hd95``).

    MONAI's ``compute_hausdorff_distance(percentile=95)`` instead takes the larger of the two
    directed 95th percentiles, which can differ; this framework follows medpy (docs/metrics.md names
    it
    first). Both masks must be non-empty; ``spacing`` as :func:`surface_distances` (medpy's
    ``voxelspacing``).
    """
    both = np.concatenate(
        [surface_distances(pred, gt, spacing), surface_distances(gt, pred, spacing)]
    )
    return float(np.percentile(both, 95))


def binary_metrics(
    pred: Any, gt: Any, *, empty_hd95: float | None = AUTHORS_EMPTY_HD95
) -> dict[str, float]:
    """Dice, IoU, precision, recall and HD95 of one binary mask pair (docs/metrics.md).

    Definitions with P = pred, G = gt: Dice ``2|P.G| / (|P| + |G|)``, IoU ``|P.G| / |P+G|``,
    precision ``|P.G| / |P|``, recall ``|P.G| / |G|``, HD95 as :func:`hd95` (pixels).

    Empty cases (documented conventions):

    - both empty: Dice 1, IoU 1, precision 1, recall 1, HD95 0 (perfect agreement; docs/metrics.md
      for Dice/IoU/HD95, precision/recall follow the same logic);
    - exactly one empty: Dice 0, IoU 0, precision 0, recall 0 (one of the two is 0/0, set to
      0 like Dice: a missed or a hallucinated object has no overlap), HD95 = ``empty_hd95``
      (default the authors' 373.12866), or the image diagonal ``sqrt(sum(shape^2))`` when
      ``empty_hd95`` is None.
    """
    pred, gt = _check_pair(pred, gt)
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    if n_pred == 0 and n_gt == 0:
        return {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0}
    if n_pred == 0 or n_gt == 0:
        diagonal = math.sqrt(sum(side * side for side in pred.shape))
        missing = diagonal if empty_hd95 is None else float(empty_hd95)
        return {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 0.0, "hd95": missing}
    overlap = int(np.logical_and(pred, gt).sum())
    return {
        "dice": 2.0 * overlap / (n_pred + n_gt),
        "iou": overlap / (n_pred + n_gt - overlap),
        "precision": overlap / n_pred,
        "recall": overlap / n_gt,
        "hd95": hd95(pred, gt),
    }


def localisation_metrics(cam_map: Any, gt: Any) -> dict[str, float]:
    """Threshold-free localisation of one map against its ground truth.

    ``pointing``: 1 if the map's maximum (the first maximal pixel in raster order, as
    ``argmax``) lies inside the ground truth, else 0 (the pointing game of Zhang et al.,
    ECCV 2016, without tolerance). ``mass_in_gt``: the share of the map's total (non-negative)
    mass that falls inside the ground truth, in [0, 1].

    They judge the map before any mask is made, so a good map under a bad threshold or CRF
    shows up as high values here and a low Dice. Both are NaN when the ground truth is empty
    (there is nothing to point at) and 0 for a constant map (it points nowhere), so a group
    mean covers exactly its tumour images.
    """
    values = np.clip(np.asarray(cam_map, dtype=np.float64), 0, None)
    truth = _as_bool(gt)
    if values.shape != truth.shape:
        raise ValueError(f"map shape {values.shape} does not match gt shape {truth.shape}")
    if not truth.any():
        return {"pointing": math.nan, "mass_in_gt": math.nan}
    total = values.sum()
    if total == 0 or values.max() == values.min():
        return {"pointing": 0.0, "mass_in_gt": 0.0}
    return {
        "pointing": float(truth.flat[int(values.argmax())]),
        "mass_in_gt": float(values[truth].sum() / total),
    }


def group_of(gt_mask: Any) -> str:
    """``abnormal`` if the ground-truth mask has any foreground pixel, else ``normal``
    (docs/metrics.md)."""
    return "abnormal" if _as_bool(gt_mask).any() else "normal"


def scored_as_normal(gt_area: Any, image_area: int, normal_area_max: float | None) -> Any:
    """Whether a ground truth of ``gt_area`` foreground pixels (a number or an array of them)
    is scored as a normal image: empty, or with ``normal_area_max`` set, covering at most that
    share of the ``image_area`` pixels.

    The share is an option because the Cfd-CAM authors' code files every slice whose tumour
    covers at most 1 % of it under ``normal`` and scores it against an all-zero mask
    (``normal_area_max=0.01``); the default (None) keeps docs/metrics.md's rule, empty ground truth.
    """
    if normal_area_max is None:
        return np.asarray(gt_area) == 0
    return np.asarray(gt_area) <= normal_area_max * image_area


def scored_ground_truth(gt: Any, normal_area_max: float | None) -> np.ndarray:
    """The mask a prediction is scored against: ``gt``, or an empty mask when the image is
    scored as normal (:func:`scored_as_normal`); the group then follows from it."""
    truth = _as_bool(gt)
    if truth.any() and scored_as_normal(int(truth.sum()), truth.size, normal_area_max):
        return np.zeros_like(truth)
    return truth


def summarize(rows: Iterable[dict[str, Any]], metrics: Sequence[str]) -> dict[str, dict]:
    """Mean and population std (ddof=0) of each metric per group (docs/metrics.md).

    ``rows`` are per-image dicts with a ``group`` key (``abnormal``/``normal``, see
    :func:`group_of`) and one float per metric. Returns
    ``{group: {"n": count, "<metric>_mean": float, "<metric>_std": float}}`` for the groups
    ``abnormal``, ``normal`` and ``all``; an empty group has ``n = 0`` and NaN statistics.
    A NaN value (a metric undefined for that image, e.g. the pointing game on a normal
    slice) is left out of its metric's mean and std; a metric undefined on every image of a
    group gets NaN statistics.
    """
    values: dict[str, dict[str, list[float]]] = {g: {m: [] for m in metrics} for g in GROUPS}
    counts = dict.fromkeys(GROUPS, 0)
    for index, row in enumerate(rows):
        group = row.get("group")
        if group not in ("abnormal", "normal"):
            raise ValueError(f"row {index}: group must be 'abnormal' or 'normal', got {group!r}")
        missing = [m for m in metrics if m not in row]
        if missing:
            raise ValueError(f"row {index}: missing metrics {missing}")
        for target in (group, "all"):
            counts[target] += 1
            for metric in metrics:
                values[target][metric].append(float(row[metric]))
    summary: dict[str, dict] = {}
    for group in GROUPS:
        stats: dict[str, float | int] = {"n": counts[group]}
        for metric in metrics:
            data = np.asarray(values[group][metric], dtype=np.float64)
            data = data[~np.isnan(data)]
            stats[f"{metric}_mean"] = float(data.mean()) if data.size else math.nan
            stats[f"{metric}_std"] = float(data.std(ddof=0)) if data.size else math.nan
        summary[group] = stats
    return summary


class ConfusionMatrix:
    """Pixel confusion matrix over a whole split (docs/metrics.md: VOC with 21 classes and 255
    ignored;
    KSDD2 binary = 2 classes). ``matrix[g, p]`` counts pixels of true class g predicted as p.

    Shards are additive: ``merge`` (in place) or ``+`` combine matrices from several processes.

    Conventions:

    - IoU of class c = ``M[c,c] / (row_c + col_c - M[c,c])``; a class absent from both
      prediction and ground truth over the split has no IoU (NaN) and is left out of the mean.
    - ``miou(include_background=False)`` averages the foreground classes only. The second
      paper's KSDD2 "mIoU" equals the defect-class IoU: its Table 4 satisfies
      ``IoU = 1 / (1/P + 1/R - 1)`` with its own precision and recall to 0.01 %.
    - Precision, recall and F1 concern the foreground classes (all but ``background``):
      ``average="micro"`` (default, the paper's "Micro-F1") sums TP, FP and FN over them,
      where a pixel of true class a predicted as foreground class b != a is an FP of b and
      (when a is foreground) an FN of a; ``average="macro"`` averages per-class values over
      the present foreground classes. For binary KSDD2 both equal the defect class's values
      (Table 4 of the paper has ``F1 = 2PR / (P + R)`` exactly). The paper's VOC Table 3 has
      F1 below ``2PR / (P + R)`` in every row, which split-level micro averaging cannot give;
      its VOC columns look like per-class (or per-image) averages, hence ``macro`` is offered
      too. A zero denominator gives 0 when the foreground occurs at all in the split, NaN
      when it never occurs.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, background: int = 0):
        """An all-zero matrix of `num_classes` classes; gt pixels of `ignore_index` are skipped."""
        if num_classes < 2:
            raise ValueError(f"ConfusionMatrix: num_classes must be >= 2, got {num_classes}")
        if not 0 <= background < num_classes:
            raise ValueError(f"ConfusionMatrix: background {background} not in [0, {num_classes})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.background = background
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, gt: Any) -> ConfusionMatrix:
        """Add one prediction / ground-truth label map pair (any matching shapes)."""
        pred = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
        gt = np.asarray(gt.detach().cpu() if hasattr(gt, "detach") else gt)
        if pred.shape != gt.shape:
            raise ValueError(f"pred shape {pred.shape} does not match gt shape {gt.shape}")
        pred, gt = pred.astype(np.int64).ravel(), gt.astype(np.int64).ravel()
        valid = gt != self.ignore_index if self.ignore_index is not None else slice(None)
        pred, gt = pred[valid], gt[valid]
        for name, labels in (("pred", pred), ("gt", gt)):
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(
                    f"{name}: labels must be in [0, {self.num_classes}) (or the ignore index "
                    f"{self.ignore_index} in gt), got range [{labels.min()}, {labels.max()}]"
                )
        counts = np.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)
        return self

    def _check_compatible(self, other: ConfusionMatrix) -> None:
        mine = (self.num_classes, self.ignore_index, self.background)
        theirs = (other.num_classes, other.ignore_index, other.background)
        if mine != theirs:
            raise ValueError(
                f"cannot merge ConfusionMatrix (num_classes, ignore_index, background) "
                f"{mine} with {theirs}"
            )

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another shard's counts into this one (in place)."""
        self._check_compatible(other)
        self.matrix += other.matrix
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """A new matrix with both shards' counts (neither is changed)."""
        total = ConfusionMatrix(self.num_classes, self.ignore_index, self.background)
        return total.merge(self).merge(other)

    def _foreground(self) -> np.ndarray:
        return np.arange(self.num_classes) != self.background

    def per_class_iou(self) -> np.ndarray:
        """IoU of each class; NaN for classes absent from both prediction and ground truth."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self, include_background: bool = True) -> float:
        """Mean IoU over the present classes (foreground only if ``include_background`` is
        False); NaN if no class is present."""
        iou = self.per_class_iou()
        if not include_background:
            iou = iou[self._foreground()]
        present = iou[~np.isnan(iou)]
        return float(present.mean()) if present.size else math.nan

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per foreground class: TP, FP, FN."""
        foreground = self._foreground()
        tp = np.diag(self.matrix)[foreground]
        fp = self.matrix.sum(0)[foreground] - tp
        fn = self.matrix.sum(1)[foreground] - tp
        return tp, fp, fn

    def _score(self, average: str, numerator, denominator) -> float:
        """Shared micro/macro reduction of a ratio built from per-class TP/FP/FN."""
        tp, fp, fn = self._counts()
        present = (tp + fp + fn) > 0
        if not present.any():
            return math.nan
        num, den = numerator(tp, fp, fn), denominator(tp, fp, fn)
        if average == "micro":
            total = den.sum()
            return float(num.sum() / total) if total > 0 else 0.0
        if average == "macro":
            num, den = num[present].astype(np.float64), den[present]
            ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            return float(ratio.mean())
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")

    def precision(self, average: str = "micro") -> float:
        """Foreground precision, TP / (TP + FP), micro- or macro-averaged (see the class)."""
        return self._score(average, lambda tp, fp, fn: tp, lambda tp, fp, fn: tp + fp)

    def recall(self, average: str = "micro") -> float:
        """Foreground recall, TP / (TP + FN), micro- or macro-averaged (see the class)."""
        return self._score(average, lambda tp, fp, fn: tp, lambda tp, fp, fn: tp + fn)

    def f1(self, average: str = "micro") -> float:
        """Foreground F1, 2TP / (2TP + FP + FN), micro- or macro-averaged (see the class)."""
        return self._score(average, lambda tp, fp, fn: 2 * tp, lambda tp, fp, fn: 2 * tp + fp + fn)

    def as_dict(self) -> dict[str, Any]:
        """All split-level numbers; the paper's columns are miou (VOC) or miou_foreground
        (KSDD2), precision, recall and f1."""
        iou = self.per_class_iou()
        return {
            "miou": self.miou(),
            "miou_foreground": self.miou(include_background=False),
            "precision": self.precision(),
            "recall": self.recall(),
            "f1": self.f1(),
            "precision_macro": self.precision("macro"),
            "recall_macro": self.recall("macro"),
            "f1_macro": self.f1("macro"),
            "per_class_iou": [None if math.isnan(v) else float(v) for v in iou],
        }

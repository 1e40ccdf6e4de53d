"""Per-case metrics of volume datasets (BraTS, TCGA-LGG; docs/metrics.md): each case's Dice
and HD95 from its stacked slice masks, written to `per_case.csv`.

The papers score slices, but a tumour is a 3-D object: one case with many small slices
weighs as much as its number of slices in a per-slice mean, and a per-slice HD95 cannot see
a prediction that jumps between neighbouring slices. A case is scored only when every one of
its slices in the split was evaluated (`eval.limit` leaves some cases partial); until then its
masks are kept bit-packed, and dropped as soon as the case is scored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src.evaluation.metrics import hd95

#: The per_case.csv columns, in order.
CASE_COLUMNS = ("case", "slices", "gt_voxels", "pred_voxels", "dice", "hd95")
Spacing = tuple[float, float, float]


def case_of(image_id: str) -> str:
    """The case of a slice id `<case>/<slice>` (BraTS `<case>/s<z>`, TCGA-LGG
    `<patient>/s<n>`)."""
    return image_id.rsplit("/", 1)[0]


def slice_order(image_id: str) -> tuple[int, str]:
    """Sort key of a case's slices: the slice number (the last digits of the id), so `s1000`
    follows `s999` whatever the zero padding."""
    digits = re.search(r"(\d+)\D*$", image_id.rsplit("/", 1)[-1])
    return (int(digits.group(1)) if digits else -1, image_id)


@dataclass(frozen=True)
class Volumes:
    """The cases of an evaluated split: how many slices each has in the split (all of them
    must be evaluated for the case to be scored) and its voxel spacing (slice, row, column)
    in `unit` (`mm`, or `voxels` when the files give no spacing)."""

    slices: Mapping[str, int]
    spacing: Mapping[str, Spacing]
    unit: str

    def __post_init__(self) -> None:
        """Every case needs its spacing."""
        missing = sorted(set(self.slices) - set(self.spacing))
        if missing:
            raise ValueError(f"no voxel spacing for cases {missing[:5]}")


def case_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], empty_hd95: float | None
) -> dict[str, float]:
    """Dice and HD95 of one stacked (S, H, W) mask pair; HD95 as the per-image one (medpy's
    `hd95`) with the voxel spacing. Empty rules as per image: both empty -> Dice 1, HD95 0;
    one empty -> Dice 0, HD95 = `empty_hd95` or, when None, the volume's diagonal
    `sqrt(sum((n_i * spacing_i)^2))` in the spacing's unit."""
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    if n_pred == 0 and n_gt == 0:
        return {"dice": 1.0, "hd95": 0.0}
    if n_pred == 0 or n_gt == 0:
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing, strict=True)))
        return {"dice": 0.0, "hd95": diagonal if empty_hd95 is None else float(empty_hd95)}
    overlap = int(np.logical_and(pred, gt).sum())
    return {"dice": 2.0 * overlap / (n_pred + n_gt), "hd95": hd95(pred, gt, spacing)}


@dataclass(frozen=True)
class CaseResult:
    """One case's row of per_case.csv."""

    case: str
    slices: int
    gt_voxels: int
    pred_voxels: int
    dice: float
    hd95: float

    def csv_row(self) -> dict[str, Any]:
        """The columns as per_case.csv writes them: floats with 6 significant digits."""
        values = (self.case, self.slices, self.gt_voxels, self.pred_voxels, self.dice, self.hd95)
        return {
            k: f"{v:.6g}" if isinstance(v, float) else v
            for k, v in zip(CASE_COLUMNS, values, strict=True)
        }


@dataclass
class CaseStacker:
    """Collects the scored masks slice by slice and scores each case once all its slices are
    in. A slice seen twice (a distributed sampler repeats a few) counts once.

    `partial` holds the cases still waiting for slices, each slice as its shape and the
    bit-packed prediction and ground truth (1 bit per pixel); `done` the scored cases."""

    volumes: Volumes
    empty_hd95: float | None
    partial: dict[str, dict[str, tuple[tuple[int, ...], np.ndarray, np.ndarray]]] = field(
        default_factory=dict
    )
    done: dict[str, CaseResult] = field(default_factory=dict)

    def add(self, image_id: str, pred: np.ndarray, gt: np.ndarray) -> None:
        """One evaluated slice: the mask it was scored with and its ground truth."""
        pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
        packed = (pred.shape, np.packbits(pred.ravel()), np.packbits(gt.ravel()))
        self._add_packed(image_id, packed)

    def _add_packed(
        self, image_id: str, packed: tuple[tuple[int, ...], np.ndarray, np.ndarray]
    ) -> None:
        case = case_of(image_id)
        if case in self.done or case not in self.volumes.slices:
            return
        slices = self.partial.setdefault(case, {})
        slices.setdefault(image_id, packed)
        if len(slices) == self.volumes.slices[case]:
            self.done[case] = self._score(case, self.partial.pop(case))

    def merge(self, other: CaseStacker) -> None:
        """Take in another process's cases: its scored ones, and its slices of the cases
        neither has finished (a case's slices are spread over the processes)."""
        for case, result in other.done.items():
            self.done.setdefault(case, result)
            self.partial.pop(case, None)
        for slices in other.partial.values():
            for image_id, packed in slices.items():
                self._add_packed(image_id, packed)

    def _score(
        self, case: str, slices: dict[str, tuple[tuple[int, ...], np.ndarray, np.ndarray]]
    ) -> CaseResult:
        ids = sorted(slices, key=slice_order)
        shapes = {slices[i][0] for i in ids}
        if len(shapes) != 1:
            raise ValueError(f"case {case}: slices of different shapes {sorted(shapes)}")
        shape = shapes.pop()
        size = int(np.prod(shape))

        def stacked(part: int) -> np.ndarray:
            planes = [np.unpackbits(slices[i][part], count=size) for i in ids]
            return np.stack(planes).reshape(len(ids), *shape).astype(bool)

        pred, gt = stacked(1), stacked(2)
        found = case_metrics(pred, gt, self.volumes.spacing[case], self.empty_hd95)
        return CaseResult(case, len(ids), int(gt.sum()), int(pred.sum()), **found)

    def summary(self) -> dict[str, Any]:
        """`summary.json`'s `per_case`: the means and population stds over the scored cases,
        how many were complete and how many were left out (partly evaluated)."""
        results = list(self.done.values())
        stats: dict[str, Any] = {
            "complete_cases": len(results),
            "partial_cases_left_out": len(self.partial),
            "hd95_unit": self.volumes.unit,
        }
        for metric in ("dice", "hd95"):
            values = np.array([getattr(r, metric) for r in results], dtype=np.float64)
            stats[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
            stats[f"{metric}_std"] = float(values.std(ddof=0)) if values.size else math.nan
        return stats

    def rows(self) -> list[CaseResult]:
        """The scored cases, sorted by case."""
        return [self.done[case] for case in sorted(self.done)]

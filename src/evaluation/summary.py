"""`summary.json` of an evaluation: group statistics, the split's confusion matrix, the
conventions they follow and the headline numbers a paper's table reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from src.data.voc import VOC_CLASSES
from src.evaluation.faithfulness import FAITHFULNESS
from src.evaluation.image_result import ImageResult
from src.evaluation.metrics import ConfusionMatrix, summarize
from src.evaluation.reports import finite
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.volumes import CaseStacker

#: The mask metrics of a binary task, in summary and headline order.
MASK_METRICS = ("dice", "iou", "hd95", "precision", "recall")
#: Threshold-free: how well the map itself points at the ground truth (no mask involved).
LOCALISATION = ("pointing", "mass_in_gt")
#: What the VOC rule is called in `summary.json`'s `mask`.
VOC_RULE = "voc (highest map above its own Otsu threshold)"


def split_confusion(results: Sequence[ImageResult]) -> ConfusionMatrix:
    """One confusion matrix over the split: the merge of the per-image ones (docs/metrics.md)."""
    first = results[0].confusion
    total = ConfusionMatrix(first.num_classes, first.ignore_index, first.background)
    for result in results:
        total.merge(result.confusion)
    return total


def summarized_metrics(settings: EvalSettings) -> list[str]:
    """The per-image columns the groups summarise: mask and localisation metrics of a binary
    task (and the faithfulness columns when measured), pixel accuracy of a multi-label one."""
    if not settings.binary:
        return ["pixel_accuracy"]
    faithful = FAITHFULNESS if settings.faithfulness is not None else ()
    return [*MASK_METRICS, *LOCALISATION, *faithful]


def headline_of(
    groups: dict[str, Any], confusion: dict[str, Any], settings: EvalSettings
) -> dict[str, dict[str, float | None]]:
    """The numbers a paper's table reports: per-image mean ± std over the abnormal images
    (Cfd-CAM, `metrics: per_image`) or split-level confusion-matrix values (LT-Grad-CAM's VOC
    and KSDD2 columns, `metrics: confusion`; no std)."""
    if settings.headline_metrics == "per_image":
        return {
            metric: {
                "mean": groups["abnormal"][f"{metric}_mean"],
                "std": groups["abnormal"][f"{metric}_std"],
            }
            for metric in (*MASK_METRICS, *LOCALISATION)
        }
    miou = "miou_foreground" if settings.miou == "foreground" else "miou"
    return {
        "miou": {"mean": confusion[miou], "std": None},
        **{m: {"mean": confusion[m], "std": None} for m in ("precision", "recall", "f1")},
    }


def conventions(settings: EvalSettings) -> dict[str, str]:
    """How the numbers were taken, in words, so a summary can be read on its own."""
    empty_hd95 = settings.empty_hd95 if settings.empty_hd95 is not None else "image diagonal"
    normal = "empty"
    if settings.normal_area_max is not None:
        normal = f"empty or tumour <= {settings.normal_area_max:g} of the image (scored as empty)"
    gate = "; images labelled negative are scored with an empty mask" if settings.label_gate else ""
    faithful = {}
    if settings.faithfulness is not None:
        faithful = {"faithfulness": settings.faithfulness.describe()}
    per_case = {}
    if settings.volumes is not None:
        per_case = {
            "per_case": "cases with every slice of the split evaluated; slices stacked in "
            "slice order; the masks as scored against the true ground truth (normal_area_max "
            f"not applied); HD95 in {settings.volumes.unit} (medpy, voxel spacing); both "
            f"empty: Dice 1, HD95 0; one empty: Dice 0, HD95 "
            f"{settings.empty_hd95 if settings.empty_hd95 is not None else 'volume diagonal'}"
        }
    return {
        "groups": f"abnormal = ground truth non-empty; normal = {normal}; all = both{gate}",
        "std": "population (ddof=0)",
        "empty_cases": "both empty: Dice 1, IoU 1, HD95 0; one empty: Dice 0, IoU 0, "
        f"HD95 {empty_hd95}",
        "confusion": "one pixel confusion matrix over the split (255 ignored); precision, "
        "recall and f1 micro-averaged over the foreground classes",
        **faithful,
        **per_case,
    }


def classifier_ap(results: Sequence[ImageResult], class_names: Sequence[str]) -> dict[str, Any]:
    """A multi-label classifier's average precision per class over the evaluated images (from
    `probs` and the image labels; sklearn's non-interpolated AP) and their mean over the
    classes with a positive image (`map`, None if no image has `probs`)."""
    from sklearn.metrics import average_precision_score

    scored = [r for r in results if r.probs is not None]
    if not scored:
        return {"map": None, "ap": {}, "images": 0}
    probs = np.array([r.probs for r in scored], np.float64)
    labels = np.zeros(probs.shape, bool)
    for row, result in enumerate(scored):
        for c in str(result.label).split():
            labels[row, int(c)] = True
    ap = {
        name: float(average_precision_score(labels[:, k], probs[:, k]))
        if labels[:, k].any()
        else None
        for k, name in enumerate(class_names)
    }
    found = [v for v in ap.values() if v is not None]
    return {"map": float(np.mean(found)) if found else None, "ap": ap, "images": len(scored)}


def build_summary(
    results: Sequence[ImageResult],
    settings: EvalSettings,
    method: Method,
    info: dict[str, Any],
    cases: CaseStacker | None = None,
) -> dict[str, Any]:
    """The content of `summary.json`; `info` (what produced the maps: layers, options,
    checkpoint) goes in as it is, after the method's name. `cases` (volume datasets) adds the
    per-case means under `per_case`."""
    rows = [result.as_row() for result in results]
    groups = finite(summarize(rows, summarized_metrics(settings)))  # empty group: NaN -> None
    confusion = finite(split_confusion(results).as_dict())
    return {
        "method": method.name,
        **info,
        "mask": method.describe() if settings.binary else VOC_RULE,
        "split": settings.split,
        "conventions": conventions(settings),
        "groups": groups,
        "confusion": confusion,
        "headline_metrics": settings.headline_metrics,
        "headline": headline_of(groups, confusion, settings),
        **({"per_case": finite(cases.summary())} if cases is not None else {}),
        **({"classifier": classifier_ap(results, VOC_CLASSES)} if not settings.binary else {}),
    }

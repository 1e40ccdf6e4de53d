"""`stage=masks`: masks and metrics again from a finished run's saved maps, with this run's
mask and scoring options; no network runs.

A finished run folder holds `cam_maps.npz`, `per_image.csv` (labels and scores, and for a
multi-label run the classes each image was mapped for) and `summary.json` (what made the maps).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from src.evaluation.faithfulness import FAITHFULNESS
from src.evaluation.image_result import (
    ImageResult,
    binary_result,
    class_map_id,
    gated_mask,
    multilabel_result,
)
from src.evaluation.items import item_index, truncated_uint8_rgb
from src.evaluation.map_store import MAPS_FILE, MapArchive, label_class_maps, read_maps
from src.evaluation.masks import voc_mask
from src.evaluation.publish import publish
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.summary import build_summary
from src.evaluation.volumes import CaseStacker

log = logging.getLogger(__name__)

#: The files of the source run that re-masking reads.
SOURCE_FILES = (MAPS_FILE, "per_image.csv", "summary.json")


def remask(
    settings: EvalSettings, method: Method, dataset: Dataset, source_dir: str | Path
) -> dict[str, Any]:
    """Re-mask the maps of the run in `source_dir` with `method`'s rule and `settings`'
    scoring options, write the results into `settings.output_dir` and return the summary.

    Multi-label runs (VOC: one map per class in the image label) are re-masked with the VOC
    rule, which has no options: that reproduces the evaluation's masks and split metrics.
    Nothing is logged to W&B: no Trainer (and so no W&B run) exists in this stage."""
    source = Path(source_dir)
    for name in SOURCE_FILES:
        if not (source / name).is_file():
            raise FileNotFoundError(
                f"stage=masks needs {name} of a finished run: {source / name} is missing"
            )
    maps_path = source / MAPS_FILE
    previous = read_previous_rows(source / "per_image.csv")
    index = item_index(dataset)
    unknown = sorted(set(previous) - set(index))
    if unknown:
        raise KeyError(f"{source}: images {unknown[:5]} are not in the configured dataset")
    cases = None
    if settings.binary:
        results, cases = remask_binary(settings, method, dataset, index, maps_path, previous)
    else:
        log.info("Multi-label maps: the VOC rule makes the masks (cam.mask is not used)")
        results = remask_multilabel(dataset, index, maps_path, previous)
    summary = build_summary(results, settings, method, source_info(source), cases)
    publish(results, summary, settings, method, dataset, maps_path, None, cases)
    return summary


def read_previous_rows(path: Path) -> dict[str, dict[str, str]]:
    """The source run's per_image.csv rows by image id, as text."""
    with open(path) as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def source_info(source: Path) -> dict[str, Any]:
    """What made the maps, from the source run's summary. No checkpoint: no network runs
    here; the source run's summary names the one that made the maps."""
    summary = json.loads((source / "summary.json").read_text())
    info = {key: summary.get(key) for key in ("target_layers", "cam_options")}
    info["maps_from"] = str(source / MAPS_FILE)
    return info


def remask_binary(
    settings: EvalSettings,
    method: Method,
    dataset: Dataset,
    index: dict[str, int],
    maps_path: Path,
    previous: dict[str, dict[str, str]],
) -> tuple[list[ImageResult], CaseStacker | None]:
    """One map per image through `method`'s rule; label and score come from the source run,
    and so do the faithfulness columns (they depend on the map and the network, not on the
    mask) when `settings.faithfulness` says the source run measured them. The new masks are
    stacked per case when the images are slices of volumes (`settings.volumes`)."""
    results = []
    cases = None
    if settings.volumes is not None:
        cases = CaseStacker(settings.volumes, settings.empty_hd95)
    with method.mask_maker(settings.mask_workers) as mask_maker:
        pending = []
        for image_id, cam_map in read_maps(maps_path):
            if image_id not in previous:
                raise KeyError(f"{maps_path}: image {image_id!r} is not in per_image.csv")
            item = dataset[index[image_id]]
            mask_maker.submit(truncated_uint8_rgb(item["image"][None]), cam_map[None])
            pending.append((image_id, item["mask"].numpy().astype(bool), cam_map))
        for (image_id, gt, cam_map), masks in zip(pending, mask_maker.results(), strict=True):
            old = previous[image_id]
            label = int(old["label"])
            if cases is not None:
                cases.add(image_id, gated_mask(masks[0], label, settings.label_gate), gt)
            faithful = None
            if settings.faithfulness is not None:
                faithful = {name: float(old[name]) for name in FAITHFULNESS}
            results.append(
                binary_result(
                    image_id,
                    gt,
                    masks[0],
                    cam_map,
                    label,
                    float(old["score"]),
                    settings.empty_hd95,
                    settings.normal_area_max,
                    settings.label_gate,
                    faithful,
                )
            )
    return results, cases


def remask_multilabel(
    dataset: Dataset,
    index: dict[str, int],
    maps_path: Path,
    previous: dict[str, dict[str, str]],
) -> list[ImageResult]:
    """Per image, the VOC rule on the maps of the classes per_image.csv lists for it, in the
    listed (ascending) order: the rule breaks ties towards the first class, so the order must
    be the evaluation's.

    Driven by per_image.csv rather than by the maps file: an image without a label class has
    a row but no map (all background)."""
    results = []
    used: set[str] = set()
    with MapArchive(maps_path) as maps:
        for image_id, old in previous.items():
            classes = [int(c) for c in old["label"].split()]
            item = dataset[index[image_id]]
            own = label_class_maps(maps, image_id, classes, item["image"].shape[-2:])
            used.update(class_map_id(image_id, c) for c in classes)
            pred = voc_mask(own, classes)
            score = float(old["score"])
            results.append(multilabel_result(image_id, item["mask"].numpy(), pred, classes, score))
        extra = sorted(set(maps.ids()) - used)
    if extra:
        raise KeyError(f"{maps_path}: maps {extra[:5]} belong to no class in per_image.csv")
    return results

"""One evaluation: run the CAM test loop, then write per_image.csv, summary.json, the maps and
a figure into the run folder, and print the results table."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset

from src.evaluation.cam_module import (
    CAMEvaluationModule,
    class_map_id,
    image_row,
    multiclass_row,
    to_uint8_rgb,
)
from src.evaluation.figures import (
    Panel,
    overlay_strip,
    pick_examples,
    save_histogram,
    save_overview,
)
from src.evaluation.map_store import MapArchive, load_map, merge_shards, read_maps
from src.evaluation.masks import MaskMaker, voc_mask
from src.evaluation.metrics import ConfusionMatrix, scored_ground_truth, summarize
from src.evaluation.reports import (
    finite,
    format_headline,
    format_table,
    write_json,
    write_per_image_csv,
)
from src.evaluation.wandb_report import log_results
from src.pipeline.trainer import active_wandb_run, build_trainer

log = logging.getLogger(__name__)

METRICS = ("dice", "iou", "hd95", "precision", "recall")
#: Threshold-free: how well the map itself points at the ground truth (no mask involved).
LOCALISATION = ("pointing", "mass_in_gt")
MAPS_FILE = "cam_maps.npz"


@dataclass(frozen=True)
class Method:
    """What made the maps and the rule that turns them into masks (`summary.json`'s `method`
    and `mask`): a CAM method with its `cam.mask`, or the supervised U-Net with a threshold."""

    name: str
    mask: str
    threshold: float | None = None
    map_label: str = "CAM"  # what the overview figure calls the map

    @classmethod
    def of_cam(cls, cfg: DictConfig) -> Method:
        return cls(cfg.cam.name, cfg.cam.mask, cfg.cam.get("threshold"))

    def mask_maker(self, workers: int) -> MaskMaker:
        options = {} if self.threshold is None else {"threshold": self.threshold}
        return MaskMaker(method=self.mask, workers=workers, **options)

    def describe(self) -> str:
        return f"threshold {self.threshold}" if self.mask == "threshold" else self.mask


#: Builds the test-loop module from the mask maker and the maps file it streams to.
ModuleFactory = Callable[[MaskMaker, Path], CAMEvaluationModule]


def _item_index(dataset: Dataset) -> dict[str, int]:
    """Position of each image id in the dataset (a Subset maps through its indices)."""
    if isinstance(dataset, Subset):
        inner = _item_index(dataset.dataset)
        wanted = {position: i for i, position in enumerate(dataset.indices)}
        return {image_id: wanted[pos] for image_id, pos in inner.items() if pos in wanted}
    ids = getattr(dataset, "ids", None)
    if ids is None:
        ids = [dataset[i]["id"] for i in range(len(dataset))]
    return {image_id: i for i, image_id in enumerate(ids)}


def cam_module_factory(
    cfg: DictConfig, net: torch.nn.Module, target_layers: list[str], options: dict[str, Any]
) -> ModuleFactory:
    """The CAM test loop of `cfg.cam` on the classifier `net`."""

    def build(mask_maker: MaskMaker, maps_path: Path) -> CAMEvaluationModule:
        return CAMEvaluationModule(
            net,
            cfg.cam.name,
            target_layers,
            options,
            mask_maker,
            maps_path,
            empty_hd95=cfg.eval.empty_hd95,
            normal_area_max=cfg.eval.get("normal_area_max"),
        )

    return build


def evaluate(
    cfg: DictConfig,
    build_module: ModuleFactory,
    loader: DataLoader,
    method: Method,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Run the test loop over `loader` and write the results of the run; `info` goes into
    `summary.json` as it is (what produced the maps: layers, options, checkpoint)."""
    output_dir = Path(cfg.paths.output_dir)
    maps_path = output_dir / MAPS_FILE
    with method.mask_maker(cfg.eval.mask_workers) as mask_maker:
        module = build_module(mask_maker, maps_path)
        trainer = build_trainer(cfg, "eval", inference_mode=False)
        try:
            trainer.test(module, dataloaders=loader, verbose=False)
        finally:
            module.close_maps(complete=False)  # no-op after a complete loop
    rows = module.rows
    if trainer.world_size > 1:
        rows = gather_rows(rows)
        if trainer.is_global_zero:
            merge_shards(maps_path, trainer.world_size)
        trainer.strategy.barrier("eval-merged")
        if not trainer.is_global_zero:
            return {}
    return write_results(cfg, rows, loader.dataset, maps_path, method, info)


def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All processes' rows, each image once (a distributed sampler repeats a few images so
    that every process gets the same number)."""
    import torch.distributed as dist

    shards: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, rows)
    unique: dict[str, dict[str, Any]] = {}
    for shard in shards:
        for row in shard or []:
            unique.setdefault(row["id"], row)
    return list(unique.values())


def remask(cfg: DictConfig, dataset: Dataset, source_dir: str | Path) -> dict[str, Any]:
    """`stage=masks`: masks and metrics again from a finished run's saved maps, with this
    run's mask and scoring options (`cam.mask`, `cam.threshold`, `eval.empty_hd95`,
    `eval.normal_area_max`); no network runs.

    Multi-label runs (VOC: one map per class in the image label) are re-masked with the VOC
    rule, which has no options: that reproduces the evaluation's masks and split metrics."""
    source = Path(source_dir)
    maps_path = source / MAPS_FILE
    for needed in (maps_path, source / "per_image.csv", source / "summary.json"):
        if not needed.is_file():
            raise FileNotFoundError(
                f"stage=masks needs {needed.name} of a finished run: {needed} is missing"
            )
    with open(source / "per_image.csv") as handle:
        previous = {row["id"]: row for row in csv.DictReader(handle)}
    index = _item_index(dataset)
    unknown = sorted(set(previous) - set(index))
    if unknown:
        raise KeyError(f"{source}: images {unknown[:5]} are not in the configured dataset")
    method = Method.of_cam(cfg)
    if _is_multilabel(dataset):
        log.info("Multi-label maps: the VOC rule makes the masks (cam.mask is not used)")
        rows = _remask_multilabel(dataset, index, maps_path, previous)
    else:
        rows = _remask_binary(cfg, method, dataset, index, maps_path, previous)
    # No checkpoint: no network runs here; the source run's summary names the one that made
    # the maps.
    info = json.loads((source / "summary.json").read_text())
    info = {key: info.get(key) for key in ("target_layers", "cam_options")}
    info["maps_from"] = str(maps_path)
    return write_results(cfg, rows, dataset, maps_path, method, info)


def _is_multilabel(dataset: Dataset) -> bool:
    """One label column per class (VOC): the evaluation's switch, which has one logit per
    label column and makes per-class maps when there is more than one."""
    labels = np.asarray(dataset.labels)
    return labels.reshape(len(labels), -1).shape[1] > 1


def _remask_binary(
    cfg: DictConfig,
    method: Method,
    dataset: Dataset,
    index: dict[str, int],
    maps_path: Path,
    previous: dict[str, dict[str, str]],
) -> list[dict[str, Any]]:
    """One map per image through `cam.mask`; label and score come from the source run."""
    rows = []
    with method.mask_maker(cfg.eval.mask_workers) as mask_maker:
        ids = []
        for image_id, cam_map in read_maps(maps_path):
            if image_id not in previous:
                raise KeyError(f"{maps_path}: image {image_id!r} is not in per_image.csv")
            item = dataset[index[image_id]]
            mask_maker.submit(to_uint8_rgb(item["image"][None]), cam_map[None])
            ids.append((image_id, item["mask"].numpy().astype(bool), cam_map))
        for (image_id, gt, cam_map), masks in zip(ids, mask_maker.results(), strict=True):
            old = previous[image_id]
            rows.append(
                image_row(
                    image_id,
                    gt,
                    masks[0],
                    cam_map,
                    int(old["label"]),
                    float(old["score"]),
                    cfg.eval.empty_hd95,
                    cfg.eval.get("normal_area_max"),
                )
            )
    return rows


def _remask_multilabel(
    dataset: Dataset,
    index: dict[str, int],
    maps_path: Path,
    previous: dict[str, dict[str, str]],
) -> list[dict[str, Any]]:
    """Per image, the VOC rule on the maps of the classes per_image.csv lists for it, in the
    listed (ascending) order: the rule breaks ties towards the first class, so the order must
    be the evaluation's.

    Driven by per_image.csv rather than by the maps file: an image without a label class has
    a row but no map (all background)."""
    rows = []
    used: set[str] = set()
    with MapArchive(maps_path) as maps:
        for image_id, old in previous.items():
            classes = [int(c) for c in old["label"].split()]
            keys = [class_map_id(image_id, c) for c in classes]
            missing = [key for key in keys if key not in maps]
            if missing:
                raise KeyError(f"{maps_path}: no map for {missing[:5]} (classes in per_image.csv)")
            item = dataset[index[image_id]]
            own = np.zeros((len(keys), *item["image"].shape[-2:]), np.float32)
            for k, key in enumerate(keys):
                own[k] = maps[key]
            used.update(keys)
            gt = item["mask"].numpy()
            rows.append(
                multiclass_row(image_id, gt, voc_mask(own, classes), classes, float(old["score"]))
            )
        extra = sorted(set(maps.ids()) - used)
    if extra:
        raise KeyError(f"{maps_path}: maps {extra[:5]} belong to no class in per_image.csv")
    return rows


def split_confusion(rows: list[dict[str, Any]]) -> ConfusionMatrix:
    """One confusion matrix over the split: the sum of the per-image ones (docs/metrics.md)."""
    first = rows[0]["_confusion"]
    total = ConfusionMatrix(len(first), ignore_index=None)
    for row in rows:
        total.matrix += row["_confusion"]
    return total


def headline_of(
    groups: dict[str, Any], confusion: dict[str, Any], evaluation: dict[str, Any]
) -> dict[str, dict[str, float | None]]:
    """The numbers a paper's table reports: per-image mean ± std over the abnormal images
    (Cfd-CAM, `metrics: per_image`) or split-level confusion-matrix values (LT-Grad-CAM's VOC
    and KSDD2 columns, `metrics: confusion`; no std)."""
    if evaluation["metrics"] == "per_image":
        return {
            metric: {
                "mean": groups["abnormal"][f"{metric}_mean"],
                "std": groups["abnormal"][f"{metric}_std"],
            }
            for metric in (*METRICS, *LOCALISATION)
        }
    miou = "miou_foreground" if evaluation.get("miou") == "foreground" else "miou"
    return {
        "miou": {"mean": confusion[miou], "std": None},
        **{m: {"mean": confusion[m], "std": None} for m in ("precision", "recall", "f1")},
    }


def write_results(
    cfg: DictConfig,
    rows: list[dict[str, Any]],
    dataset: Dataset,
    maps_path: Path,
    method: Method,
    info: dict[str, Any],
) -> dict[str, Any]:
    """per_image.csv, summary.json, overview.png and the printed table."""
    output_dir = Path(cfg.paths.output_dir)
    per_image = "dice" in rows[0]
    data = get_class(cfg.data._target_)  # eval.metrics/miou: null = the dataset's convention
    evaluation = {k: cfg.eval.get(k) or getattr(data, f"eval_{k}") for k in ("metrics", "miou")}
    if evaluation["metrics"] == "per_image" and not per_image:
        raise ValueError("eval.metrics=per_image needs a binary (one-logit) task")
    metrics = [*METRICS, *LOCALISATION] if per_image else ["pixel_accuracy"]
    groups = finite(summarize(rows, metrics))  # an empty group's NaN -> None
    confusion = finite(split_confusion(rows).as_dict())
    empty_hd95 = cfg.eval.empty_hd95 if cfg.eval.empty_hd95 is not None else "image diagonal"
    normal_area_max = cfg.eval.get("normal_area_max")
    normal = "empty"
    if normal_area_max is not None:
        normal = f"empty or tumour <= {normal_area_max:g} of the image (scored as empty)"
    summary = {
        "method": method.name,
        **info,
        "mask": method.describe()
        if per_image
        else "voc (highest map above its own Otsu threshold)",
        "split": cfg.eval.split,
        "conventions": {
            "groups": f"abnormal = ground truth non-empty; normal = {normal}; all = both",
            "std": "population (ddof=0)",
            "empty_cases": "both empty: Dice 1, IoU 1, HD95 0; one empty: Dice 0, IoU 0, "
            f"HD95 {empty_hd95}",
            "confusion": "one pixel confusion matrix over the split (255 ignored); precision, "
            "recall and f1 micro-averaged over the foreground classes",
        },
        "groups": groups,
        "confusion": confusion,
        "headline_metrics": evaluation["metrics"],
        "headline": headline_of(groups, confusion, evaluation),
    }
    write_per_image_csv(rows, output_dir / "per_image.csv")
    write_json(summary, output_dir / "summary.json")
    figure = output_dir / "overview.png"
    histogram = output_dir / "dice_histogram.png"
    panels = {}
    if per_image:
        panels = _write_figure(cfg, method, rows, dataset, maps_path, figure)
        save_histogram(rows, histogram, title=f"{method.name}: per-image Dice ({cfg.eval.split})")
    run = active_wandb_run()
    if run is not None:
        overlays = {image_id: overlay_strip(*panel) for image_id, panel in panels.items()}
        log_results(
            run,
            summary,
            [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows],
            overlays,
            [figure, histogram],
            files=[output_dir / "summary.json", output_dir / "per_image.csv"],
        )
    title = f"{method.name} on the {cfg.eval.split} split ({output_dir})"
    if per_image:
        columns = ("dice", "iou", "hd95", *LOCALISATION)
        print("\n" + format_table(groups, columns, title=title))
    print("\n" + format_headline(summary["headline"], summary["headline_metrics"]) + "\n")
    log.info("Results written to %s", output_dir)
    return summary


def _write_figure(
    cfg: DictConfig,
    method: Method,
    rows: list[dict[str, Any]],
    dataset: Dataset,
    maps_path: Path,
    path: Path,
) -> dict[str, Panel]:
    """The overview figure; returns the panels it shows, by image id."""
    ids = pick_examples(rows, cfg.eval.figure_images)
    index = _item_index(dataset)
    mask_maker = method.mask_maker(workers=0)
    panels: dict[str, Panel] = {}
    for image_id in ids:
        item = dataset[index[image_id]]
        image = to_uint8_rgb(item["image"][None])[0]
        cam_map = load_map(maps_path, image_id)
        mask = np.asarray(mask_maker(image[None], cam_map[None])[0], dtype=bool)
        # The ground truth the metrics in the titles were taken against.
        gt = scored_ground_truth(item["mask"].numpy(), cfg.eval.get("normal_area_max"))
        panels[image_id] = (image, gt, cam_map, mask)
    save_overview(
        ids,
        panels.__getitem__,
        {r["id"]: r for r in rows},
        path,
        title=f"{method.name}: best to worst Dice on the {cfg.eval.split} split",
        map_label=method.map_label,
    )
    return panels

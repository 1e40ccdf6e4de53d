"""One evaluation: run the CAM test loop, then write per_image.csv, summary.json, the maps and
a figure into the run folder, and print the results table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from src.evaluation.cam_module import CAMEvaluationModule, to_uint8_rgb
from src.evaluation.figures import pick_examples, save_overview
from src.evaluation.map_store import load_map
from src.evaluation.masks import MaskMaker
from src.evaluation.metrics import summarize
from src.evaluation.reports import format_table, write_json, write_per_image_csv
from src.pipeline.trainer import build_trainer

log = logging.getLogger(__name__)

METRICS = ("dice", "iou", "hd95", "precision", "recall")
MAPS_FILE = "cam_maps.npz"


def _mask_maker(cfg: DictConfig, workers: int) -> MaskMaker:
    threshold = cfg.cam.get("threshold")
    options = {} if threshold is None else {"threshold": threshold}
    return MaskMaker(method=cfg.cam.mask, workers=workers, **options)


def _item_index(loader: DataLoader) -> dict[str, int]:
    """Position of each image id in the loader's dataset, for fetching figure panels."""
    dataset = loader.dataset
    ids = getattr(dataset, "ids", None)
    if ids is None:
        ids = [dataset[i]["id"] for i in range(len(dataset))]
    return {image_id: i for i, image_id in enumerate(ids)}


def evaluate(
    cfg: DictConfig,
    net: torch.nn.Module,
    loader: DataLoader,
    target_layers: list[str],
    options: dict[str, Any],
    checkpoint: str,
) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    maps_path = output_dir / MAPS_FILE
    with _mask_maker(cfg, cfg.eval.mask_workers) as mask_maker:
        module = CAMEvaluationModule(
            net, cfg.cam.name, target_layers, options, mask_maker, maps_path,
            empty_hd95=cfg.eval.empty_hd95,
        )
        trainer = build_trainer(cfg, "eval", inference_mode=False)
        try:
            trainer.test(module, dataloaders=loader, verbose=False)
        finally:
            module.close_maps(complete=False)  # no-op after a complete loop
    rows = module.rows
    summary = {
        "method": cfg.cam.name,
        "target_layers": target_layers,
        "cam_options": options,
        "mask": cfg.cam.mask,
        "split": cfg.eval.split,
        "checkpoint": checkpoint,
        "conventions": {
            "groups": "abnormal = ground truth non-empty; normal = empty; all = both",
            "std": "population (ddof=0)",
            "empty_cases": "both empty: Dice 1, IoU 1, HD95 0; one empty: Dice 0, IoU 0, "
            f"HD95 {cfg.eval.empty_hd95 if cfg.eval.empty_hd95 is not None else 'image diagonal'}",
        },
        "groups": summarize(rows, list(METRICS)),
    }
    # The papers' tables report the abnormal (tumour) images; sweeps and recipes read this.
    summary["headline_group"] = "abnormal"
    summary["headline"] = {
        metric: {"mean": summary["groups"]["abnormal"][f"{metric}_mean"],
                 "std": summary["groups"]["abnormal"][f"{metric}_std"]}
        for metric in METRICS
    }
    write_per_image_csv(rows, output_dir / "per_image.csv")
    write_json(summary, output_dir / "summary.json")
    _write_figure(cfg, rows, loader, maps_path, output_dir / "overview.png")
    table = format_table(summary["groups"], ("dice", "iou", "hd95"),
                         title=f"{cfg.cam.name} on {cfg.eval.split} split ({output_dir})")
    print("\n" + table + "\n")
    log.info("Results written to %s", output_dir)
    return summary


def _write_figure(cfg: DictConfig, rows: list[dict[str, Any]], loader: DataLoader,
                  maps_path: Path, path: Path) -> None:
    ids = pick_examples(rows, cfg.eval.figure_images)
    if not ids:
        return
    index = _item_index(loader)
    dataset = loader.dataset
    mask_maker = _mask_maker(cfg, workers=0)

    def panel_of(image_id: str):
        item = dataset[index[image_id]]
        image = to_uint8_rgb(item["image"][None])[0]
        cam_map = load_map(maps_path, image_id)
        mask = mask_maker(image[None], cam_map[None])[0]
        return image, item["mask"].numpy().astype(bool), cam_map, np.asarray(mask, dtype=bool)

    save_overview(ids, panel_of, {r["id"]: r for r in rows}, path,
                  title=f"{cfg.cam.name}: best to worst Dice on the {cfg.eval.split} split")

"""`method=supervised`: train the U-Net on the pixel masks, then score it like a CAM method.

Same DataModule, split, store, Trainer, test loop and result files as the CAM pipeline: only
the network and its training differ, so a table can put the supervised ceiling on the same
row layout as the CAM methods (docs/supervised.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.data.errors import DataFormatError
from src.data.voc import VOID
from src.evaluation.evaluate import evaluate
from src.evaluation.masks import MaskMaker
from src.evaluation.settings import Method
from src.pipeline.config import ConfigError
from src.pipeline.eval_inputs import eval_loader, evaluation_settings
from src.pipeline.store import ModelStore, load_weights
from src.pipeline.trainer import PipelineLoggers, build_trainer
from src.pipeline.training import BestCheckpoint, fit_and_store
from src.segmentation.evaluation import METHOD, SegmenterEvaluationModule

STAGE = "segmenter"
#: The supervised path has no SupCon stage and no saved CAM maps to re-mask.
STAGES = ("all", "finetune", "eval")
#: The U-Net keeps the weights of its best validation Dice.
SEGMENTER_BEST = BestCheckpoint("segmenter_checkpoint")


def check_supervised_config(cfg: DictConfig) -> None:
    """Start-up checks that need only the config."""
    if cfg.stage not in STAGES:
        raise ConfigError(
            "stage",
            f"method=supervised runs stage all, finetune (train the U-Net) or eval, "
            f"not {cfg.stage!r}",
        )


def require_binary_task(datamodule: pl.LightningDataModule) -> None:
    """The U-Net has one output channel: object vs background (no VOC classes)."""
    if datamodule.task != "binary":
        raise ConfigError(
            "method",
            f"method=supervised trains a binary (object vs background) segmenter; "
            f"{type(datamodule).__name__} is a {datamodule.task} task",
        )


def require_pixel_labels(datamodule: pl.LightningDataModule, split: str = "train") -> None:
    """Refuse a split the U-Net cannot learn from, before any training: it must hold at least
    one mask with a foreground pixel. A classification-only dataset (labels, no masks) would
    otherwise train a network that predicts nothing."""
    dataset = datamodule.dataset(split)

    def labelled(mask: torch.Tensor) -> bool:
        return bool(((mask > 0) & (mask != VOID)).any())

    masks = getattr(dataset, "masks", None)
    if masks is not None:
        found = labelled(masks)
    else:
        # Files read on access: look at positive-label images until one has a foreground.
        positives = torch.nonzero(torch.as_tensor(dataset.labels).flatten(1).amax(1) > 0.5)
        found = any(labelled(dataset[int(i)]["mask"]) for i in positives.flatten())
    if not found:
        raise DataFormatError(
            getattr(datamodule, "root", split),
            f"method=supervised needs pixel masks, but no image of the {split} split has a "
            "non-empty one (a classification-only dataset?)",
        )


def patch_size(datamodule: pl.LightningDataModule, split: str) -> tuple[int, ...]:
    """The image size the U-Net's topology is derived from (every item has the same size)."""
    dataset = datamodule.dataset(split)
    if len(dataset) == 0:
        raise DataFormatError(getattr(datamodule, "root", split), f"the {split} split is empty")
    return tuple(dataset[0]["image"].shape[1:])


def build_segmenter(cfg: DictConfig, size: tuple[int, ...]) -> torch.nn.Module:
    """The configured U-Net (`segmenter.net`, a partial) for images of `size`."""
    return instantiate(cfg.segmenter.net)(patch_size=size)


def segmenter_stage(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> Path:
    """The stored U-Net of this data/segmenter config, trained on the training masks if no
    job has (once, however many jobs ask at once; `ModelStore.train_once`); keeps the weights
    of the best validation Dice."""
    require_binary_task(datamodule)
    return store.train_once(cfg, STAGE, lambda: _train_segmenter(cfg, datamodule, store, loggers))


def _train_segmenter(
    cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore, loggers: PipelineLoggers
) -> Path:
    """Train and store the U-Net, once the training split is known to hold pixel labels;
    returns the path of its weights."""
    require_pixel_labels(datamodule)

    def segmenter() -> pl.LightningModule:
        net = build_segmenter(cfg, patch_size(datamodule, "train"))
        return instantiate(cfg.segmenter.module, net=net)

    return fit_and_store(cfg, STAGE, segmenter, SEGMENTER_BEST, datamodule, store, loggers)


def supervised_eval_stage(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> dict[str, Any]:
    """The U-Net's probability maps of the evaluation images -> masks (> 0.5) -> metrics,
    written like a CAM run's results, on the images and with the settings a CAM run of this
    config would use (`eval_inputs`), so both methods score the same slices."""
    ckpt = cfg.get("ckpt") or store.lookup(cfg, STAGE)
    if ckpt is None:
        raise ConfigError(
            "ckpt",
            f"no trained U-Net in {store.root} for this data/segmenter config: run "
            "method=supervised with stage=all (or stage=finetune) first, or give its weights "
            "with ckpt=/path",
        )
    return score_segmenter(cfg, datamodule, ckpt, METHOD, loggers)


def score_segmenter(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    ckpt: str | Path,
    method: str,
    loggers: PipelineLoggers,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the U-Net weights `ckpt` on the evaluation images (a CAM run's, `eval_inputs`):
    probability maps -> masks (> `segmenter.module.threshold`) -> metrics and result files.
    `method` names what trained it in `summary.json`; `info` adds to its description there."""
    datamodule.setup("test")
    settings = evaluation_settings(cfg, datamodule)
    require_binary_task(datamodule)
    net = build_segmenter(cfg, patch_size(datamodule, cfg.eval.split))
    load_weights(net, ckpt)
    threshold = float(cfg.segmenter.module.threshold)

    def build(mask_maker: MaskMaker, maps_path: Path) -> SegmenterEvaluationModule:
        return SegmenterEvaluationModule(
            net,
            mask_maker,
            maps_path,
            settings.empty_hd95,
            settings.normal_area_max,
            settings.volumes,
            method=method,
        )

    info = {"network": type(net.unet).__name__, "checkpoint": str(ckpt), **(info or {})}
    loader = eval_loader(cfg, datamodule)
    trainer = build_trainer(cfg, "eval", loggers, inference_mode=False)
    scored = Method(method, "threshold", threshold, map_label="U-Net probability")
    return evaluate(trainer, build, loader, scored, settings, info, loggers.wandb_run())

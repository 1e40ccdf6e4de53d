"""The stages of a run: pretrain (SupCon) -> finetune (classifier) -> eval (CAMs -> masks -> metrics).

Each stage can run alone (`stage=pretrain|finetune|eval`); `stage=all` runs them in order.
Trained networks go to the model store keyed by their config, so a later run with the same
data/backbone/training config (e.g. every job of a CAM sweep) loads them instead of training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, Subset

from src.pipeline.config import (
    ConfigError,
    cam_options,
    cam_target_layers,
    check_paths,
    validate_config,
)
from src.pipeline.console import quiet_console
from src.pipeline.store import ModelStore, load_state_dict, load_weights, save_from_rank_zero
from src.pipeline.supervised import (
    check_supervised_config,
    segmenter_stage,
    supervised_eval_stage,
)
from src.pipeline.trainer import finish_loggers
from src.pipeline.training import checkpoint_dir, fit

log = logging.getLogger(__name__)


def datamodule_arguments(data: DictConfig) -> dict[str, Any]:
    """The DataModule's arguments, `_target_` included: the whole `data` node, resolved.

    Raises ConfigError for a `data` node of a run made before the node became a plain
    DataModule config (`stage=masks` on an old run folder): its `evaluation` entry is now
    `eval.metrics`/`eval.miou`, its `demo` entry belongs to `src.data.demo.DemoBraTSDataModule`.
    """
    arguments = OmegaConf.to_container(data, resolve=True)
    assert isinstance(arguments, dict)
    demo_target = "src.data.demo.DemoBraTSDataModule"
    if "evaluation" in arguments or ("demo" in arguments and arguments["_target_"] != demo_target):
        raise ConfigError(
            "data",
            "a data config of an older run (with data.evaluation or data.demo on "
            f"{arguments['_target_']}): set eval.metrics/eval.miou instead of data.evaluation, "
            f"and _target_: {demo_target} for generated data, in that run's config.yaml",
        )
    return arguments


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """Instantiate the `data` group, writing its split.json to the run folder, and prepare it.

    `prepare_data` runs here rather than inside the first fit (where Lightning would call it):
    a generated dataset (data=demo) must exist before the model store fingerprints `data.root`
    and before the eval stage reads it."""
    datamodule = instantiate(
        datamodule_arguments(cfg.data), output_dir=str(cfg.paths.output_dir), _convert_="all"
    )
    datamodule.prepare_data()
    return datamodule


def build_net(cfg: DictConfig, num_classes: int) -> torch.nn.Module:
    """The `backbone.net` network with `num_classes` outputs (0: the encoder, no head)."""
    return instantiate(cfg.backbone.net, num_classes=num_classes)


def pretrain_stage(
    cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore
) -> Path | None:
    """SupCon pretraining of the encoder; returns the stored encoder weights (None if disabled)."""
    if not cfg.pretrain.get("enabled", True):
        return None
    explicit = cfg.pretrain.get("ckpt")
    if explicit:
        return Path(explicit)
    return store.train_once(cfg, "pretrain", lambda: _pretrain(cfg, datamodule, store))


def _pretrain(cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore) -> Path:
    """Train the SupCon encoder and store its weights; returns their path."""
    pl.seed_everything(cfg.seed, workers=True)
    encoder = build_net(cfg, datamodule.num_classes).remove_head()
    module = instantiate(cfg.pretrain.module, encoder=encoder)
    datamodule.batch_size = cfg.pretrain.batch_size
    trainer, _ = fit(cfg, "pretrain", module, datamodule, cfg.pretrain.epochs)
    return save_from_rank_zero(trainer, store, cfg, "pretrain", module.encoder.state_dict)


def finetune_stage(cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore) -> Path:
    """Fine-tune the whole classifier (once per training key, however many jobs ask at once);
    keeps the best-validation-AUC weights."""
    return store.train_once(cfg, "finetune", lambda: _finetune(cfg, datamodule, store))


def _finetune(cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore) -> Path:
    """Train the classifier (from the SupCon encoder, if enabled) and store the weights of its
    best checkpoint (`callbacks.classifier_checkpoint`); returns their path."""
    encoder_path = (
        pretrain_stage(cfg, datamodule, store) if cfg.pretrain.get("enabled", True) else None
    )
    pl.seed_everything(cfg.seed, workers=True)
    net = build_net(cfg, datamodule.num_classes)
    if encoder_path is not None:
        from src.models.classifier import load_encoder_weights

        load_encoder_weights(net, encoder_path)
    module = instantiate(
        cfg.finetune.module, net=net, task=datamodule.task, num_classes=datamodule.num_classes
    )
    datamodule.batch_size = cfg.finetune.batch_size
    checkpoints = instantiate(
        cfg.callbacks.classifier_checkpoint, dirpath=checkpoint_dir(cfg, "finetune")
    )
    trainer, last = fit(cfg, "finetune", module, datamodule, cfg.finetune.epochs, checkpoints)
    best = checkpoints.best_model_path or last.best_model_path
    best_auc = checkpoints.best_model_score
    log.info(
        "Best validation AUC %s (%s)", None if best_auc is None else f"{float(best_auc):.4f}", best
    )
    extra = {"best_val_auc": None if best_auc is None else float(best_auc), "checkpoint": best}
    return save_from_rank_zero(
        trainer, store, cfg, "finetune", lambda: load_state_dict(best), extra=extra
    )


def _spread(indices: np.ndarray, count: int) -> list[int]:
    """`count` of `indices`, evenly spaced (the split is ordered by case and slice)."""
    if count >= len(indices):
        return indices.tolist()
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(int)].tolist()


def positive_share(limit: int, positive_fraction: float) -> int:
    """How many of `limit` images come from the positive-label ones: the rounded share, but
    at least one of each kind when the fraction asks for both, so that a small limit still
    has a `normal` group (`eval.limit=4` with 0.86 would otherwise round to four tumours)."""
    wanted = int(round(limit * positive_fraction))
    if limit >= 2 and 0 < positive_fraction < 1:
        wanted = min(max(wanted, 1), limit - 1)
    return wanted


def eval_subset(
    labels: np.ndarray,
    limit: int,
    positive_fraction: float | None,
    normal: np.ndarray | None = None,
) -> list[int]:
    """Indices of at most `limit` images, evenly spaced; with `positive_fraction`, that share
    of them (`positive_share`) comes from the positive-label images (the papers' tables are
    about tumours) and the rest from the others.

    `normal` (optional, bool per image): the images the evaluation scores as normal. The rest
    is then drawn from them rather than from all negative-label images, so that it lands in
    the `normal` group (a BraTS slice with a tumour of at most 1 % of its area is labelled
    negative but scored as `abnormal`). When one pool is too small the other fills the
    limit."""
    everything = np.arange(len(labels))
    if positive_fraction is None:
        return _spread(everything, limit)
    positive = everything[labels.reshape(len(labels), -1).max(1) > 0.5]
    rest = np.setdiff1d(everything, positive)
    if normal is not None:
        rest = rest[normal[rest]]
    n_rest = min(limit - positive_share(limit, positive_fraction), len(rest))
    n_positive = min(limit - n_rest, len(positive))
    n_rest = min(limit - n_positive, len(rest))
    return sorted(_spread(positive, n_positive) + _spread(rest, n_rest))


def eval_indices(
    dataset: Dataset,
    limit: int,
    positive_fraction: float | None,
    normal_area_max: float | None = None,
) -> list[int]:
    """`eval_subset` of a dataset; in-memory slices (BraTS) also say which
    images the evaluation scores as normal (`eval.normal_area_max`)."""
    from src.evaluation.metrics import scored_as_normal

    masks = getattr(dataset, "masks", None)
    normal = None
    if masks is not None:
        areas = (masks.flatten(1) > 0).sum(1).numpy()
        normal = scored_as_normal(areas, masks[0].numel() if len(masks) else 0, normal_area_max)
    return eval_subset(np.asarray(dataset.labels), limit, positive_fraction, normal)


def eval_loader(cfg: DictConfig, datamodule: pl.LightningDataModule) -> DataLoader:
    """The evaluation images (`eval.split`, `eval.limit`, `eval.positive_fraction`): the same
    for every method on the same data, so their rows compare the same slices."""
    loader = datamodule.eval_dataloader(cfg.eval.split, batch_size=cfg.eval.batch_size)
    dataset = loader.dataset
    if len(dataset) == 0:
        raise RuntimeError(f"The {cfg.eval.split} split is empty: nothing to evaluate")
    limit = cfg.eval.get("limit")
    if limit is not None and limit < len(dataset):
        indices = eval_indices(
            dataset,
            limit,
            cfg.eval.get("positive_fraction"),
            cfg.eval.get("normal_area_max"),
        )
        loader = DataLoader(
            Subset(dataset, indices),
            batch_size=cfg.eval.batch_size,
            shuffle=False,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
        )
    return loader


def eval_stage(
    cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore
) -> dict[str, Any]:
    """CAMs of the evaluation split -> masks -> metrics, result files and figure."""
    from src.evaluation.run_eval import Method, cam_module_factory, evaluate

    ckpt = cfg.get("ckpt") or store.lookup(cfg, "finetune")
    if ckpt is None:
        raise FileNotFoundError(
            "No trained classifier for this data/backbone/training config: run with stage=all "
            "(or stage=finetune) first, or give one with ckpt=/path/to/weights"
        )
    net = build_net(cfg, datamodule.num_classes)
    load_weights(net, ckpt)
    target_layers = cam_target_layers(net.cam_stages, cfg.cam.layers)
    modules = dict(net.named_modules())
    missing = [name for name in target_layers if name not in modules]
    if missing:
        raise ConfigError(
            "backbone.cam_stages",
            f"the {cfg.backbone.net.arch} network has no module named {missing}; "
            f"stage-like modules are e.g. {[n for n in modules if n.count('.') == 0][:8]}",
        )
    datamodule.setup("test")
    loader = eval_loader(cfg, datamodule)
    options = cam_options(cfg.cam)
    info = {"target_layers": target_layers, "cam_options": options, "checkpoint": str(ckpt)}
    build = cam_module_factory(cfg, net, target_layers, options)
    return evaluate(cfg, build, loader, Method.of_cam(cfg), info)


def with_source_run(cfg: DictConfig) -> DictConfig:
    """For `stage=masks`: the data, split and method are those of the run whose maps are read;
    only the mask and metric options come from this run's config."""
    source_config = Path(cfg.maps_from) / "config.yaml"
    if not source_config.is_file():
        raise ConfigError("maps_from", f"{source_config} not found (not a finished run folder?)")
    source = OmegaConf.load(source_config)
    if source.get("method", "cam") != "cam":
        raise ConfigError(
            "maps_from",
            f"{cfg.maps_from} is a method={source.method} run: stage=masks re-masks CAMs only",
        )
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.data = source.data
        cfg.eval.split = source.eval.split
        cfg.cam.name = source.cam.name
    return cfg


def masks_stage(cfg: DictConfig, datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """Masks and metrics again from the maps a finished run saved (`maps_from=<run dir>`)."""
    from src.evaluation.run_eval import remask

    datamodule.setup("test")
    return remask(cfg, datamodule.dataset(cfg.eval.split), cfg.maps_from)


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured stage(s); returns the evaluation summary (empty if no eval ran)."""
    quiet_console()
    validate_config(cfg)
    if cfg.method == "supervised":
        check_supervised_config(cfg)
    if cfg.stage == "masks":
        cfg = with_source_run(cfg)
    check_paths(cfg)
    if cfg.get("threads"):
        # On a busy CPU fewer intra-op threads than cores can be much faster (benchmarks/).
        torch.set_num_threads(int(cfg.threads))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    store = ModelStore(cfg.paths.model_store)
    datamodule = build_datamodule(cfg)
    try:
        if cfg.method == "supervised":
            summary = _run_supervised(cfg, datamodule, store)
        else:
            summary = _run_weakly_supervised(cfg, datamodule, store)
    finally:
        finish_loggers()
    # Written last, so a failed run never replaces the config of results already in the folder
    # (Hydra keeps its own copy of every attempt in .hydra/).
    if rank_zero_only.rank == 0:
        tmp = output_dir / ".config.yaml.partial"
        OmegaConf.save(cfg, tmp, resolve=True)
        tmp.replace(output_dir / "config.yaml")
    return summary


def _run_weakly_supervised(
    cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore
) -> dict[str, Any]:
    """`method=cam`: the stages `cfg.stage` names; returns the evaluation summary (or {})."""
    summary: dict[str, Any] = {}
    if cfg.stage == "pretrain":
        pretrain_stage(cfg, datamodule, store)
    if cfg.stage in ("all", "finetune"):
        finetune_stage(cfg, datamodule, store)
    if cfg.stage in ("all", "eval"):
        summary = eval_stage(cfg, datamodule, store)
    if cfg.stage == "masks":
        summary = masks_stage(cfg, datamodule)
    return summary


def _run_supervised(
    cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore
) -> dict[str, Any]:
    """`method=supervised`: train (or reuse) the U-Net, then score it on the CAM rows' images."""
    if cfg.stage in ("all", "finetune"):
        segmenter_stage(cfg, datamodule, store)
    if cfg.stage in ("all", "eval"):
        datamodule.setup("test")
        return supervised_eval_stage(cfg, datamodule, store, eval_loader)
    return {}

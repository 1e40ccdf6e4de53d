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

from src.data.atomic import atomic_write_text
from src.evaluation.cam_module import CAMEvaluationModule
from src.evaluation.evaluate import ModuleFactory, evaluate
from src.evaluation.masks import MaskMaker
from src.evaluation.metrics import scored_as_normal
from src.evaluation.remask import remask
from src.evaluation.settings import EvalSettings, Method
from src.models.classifier import load_encoder_weights
from src.pipeline.config import (
    ConfigError,
    cam_options,
    cam_target_layers,
    check_paths,
    validate_config,
)
from src.pipeline.console import quiet_console
from src.pipeline.resume import FINISHED_MARKER, LAST_CHECKPOINT
from src.pipeline.store import ModelStore, load_state_dict, load_weights, save_from_rank_zero
from src.pipeline.supervised import (
    check_supervised_config,
    segmenter_stage,
    supervised_eval_stage,
)
from src.pipeline.trainer import PipelineLoggers, build_trainer
from src.pipeline.training import checkpoint_dir, fit

log = logging.getLogger(__name__)

DEMO_TARGET = "src.data.demo.DemoBraTSDataModule"


def datamodule_arguments(data: DictConfig) -> dict[str, Any]:
    """The DataModule's arguments, `_target_` included: the whole `data` node, resolved.

    Raises ConfigError for a `data` node in the form of older runs (`upgrade_data_config`
    converts those that stage=masks reads): its `evaluation` entry is now
    `eval.metrics`/`eval.miou`, its `demo` entry belongs to `src.data.demo.DemoBraTSDataModule`.
    """
    arguments = OmegaConf.to_container(data, resolve=True)
    assert isinstance(arguments, dict)
    generated = str(arguments["_target_"]).startswith("src.data.demo.")
    if "evaluation" in arguments or ("demo" in arguments and not generated):
        raise ConfigError(
            "data",
            "a data config of an older run (with data.evaluation or data.demo on "
            f"{arguments['_target_']}): set eval.metrics/eval.miou instead of data.evaluation, "
            f"and _target_: {DEMO_TARGET} for generated data, in that run's config.yaml",
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
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> Path | None:
    """SupCon pretraining of the encoder; returns the stored encoder weights (None if disabled)."""
    if not cfg.pretrain.get("enabled", True):
        return None
    explicit = cfg.pretrain.get("ckpt")
    if explicit:
        return Path(explicit)
    return store.train_once(cfg, "pretrain", lambda: _pretrain(cfg, datamodule, store, loggers))


def _pretrain(
    cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore, loggers: PipelineLoggers
) -> Path:
    """Train the SupCon encoder and store its weights; returns their path."""
    pl.seed_everything(cfg.seed, workers=True)
    encoder = build_net(cfg, datamodule.num_classes).remove_head()
    module = instantiate(cfg.pretrain.module, encoder=encoder)
    datamodule.batch_size = cfg.pretrain.batch_size
    trainer, _ = fit(cfg, "pretrain", module, datamodule, cfg.pretrain.epochs, loggers=loggers)
    return save_from_rank_zero(trainer, store, cfg, "pretrain", module.encoder.state_dict)


def finetune_stage(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> Path:
    """Fine-tune the whole classifier (once per training key, however many jobs ask at once);
    keeps the best-validation-AUC weights."""
    return store.train_once(cfg, "finetune", lambda: _finetune(cfg, datamodule, store, loggers))


def _finetune(
    cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore, loggers: PipelineLoggers
) -> Path:
    """Train the classifier (from the SupCon encoder, if enabled) and store the weights of its
    best checkpoint (`callbacks.classifier_checkpoint`); returns their path."""
    encoder_path = (
        pretrain_stage(cfg, datamodule, store, loggers)
        if cfg.pretrain.get("enabled", True)
        else None
    )
    pl.seed_everything(cfg.seed, workers=True)
    net = build_net(cfg, datamodule.num_classes)
    if encoder_path is not None:
        load_encoder_weights(net, encoder_path)
    module = instantiate(
        cfg.finetune.module, net=net, task=datamodule.task, num_classes=datamodule.num_classes
    )
    datamodule.batch_size = cfg.finetune.batch_size
    checkpoints = instantiate(
        cfg.callbacks.classifier_checkpoint, dirpath=checkpoint_dir(cfg, "finetune")
    )
    trainer, last = fit(
        cfg, "finetune", module, datamodule, cfg.finetune.epochs, checkpoints, loggers=loggers
    )
    best = checkpoints.best_model_path or last.best_model_path
    score = checkpoints.best_model_score
    score = None if score is None else float(score)
    # The rule is the config's (callbacks.classifier_checkpoint): validation AUC by default.
    log.info(
        "Best %s %s (%s)", checkpoints.monitor, None if score is None else f"{score:.4f}", best
    )
    extra = {"monitor": checkpoints.monitor, "best_score": score, "checkpoint": best}
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


def evaluation_settings(cfg: DictConfig, datamodule: pl.LightningDataModule) -> EvalSettings:
    """Everything the evaluation reads from the config, in one place: the `eval` group, the
    headline convention (`eval.metrics`/`eval.miou`, null = the DataModule's own) and the
    DataModule's task."""
    return EvalSettings(
        output_dir=Path(cfg.paths.output_dir),
        split=cfg.eval.split,
        task=datamodule.task,
        empty_hd95=cfg.eval.empty_hd95,
        normal_area_max=cfg.eval.get("normal_area_max"),
        mask_workers=cfg.eval.mask_workers,
        figure_images=cfg.eval.figure_images,
        metrics=cfg.eval.get("metrics") or datamodule.eval_metrics,
        miou=cfg.eval.get("miou") or datamodule.eval_miou,
        label_gate=_or_default(cfg.eval.get("label_gate"), datamodule.eval_label_gate),
    )


def _or_default(value: Any, default: Any) -> Any:
    """A config value, or the DataModule's convention where the config says null."""
    return default if value is None else value


def cam_method(cfg: DictConfig) -> Method:
    """The CAM method of `cfg.cam` and its mask rule (`cam.mask`, `cam.threshold`)."""
    return Method(cfg.cam.name, cfg.cam.mask, cfg.cam.get("threshold"))


def cam_module_factory(
    cfg: DictConfig,
    net: torch.nn.Module,
    target_layers: list[str],
    options: dict[str, Any],
    settings: EvalSettings,
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
            task=settings.task,
            empty_hd95=settings.empty_hd95,
            normal_area_max=settings.normal_area_max,
            label_gate=settings.label_gate,
        )

    return build


def eval_stage(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> dict[str, Any]:
    """CAMs of the evaluation split -> masks -> metrics, result files and figure."""
    ckpt = cfg.get("ckpt") or store.lookup(cfg, "finetune")
    if ckpt is None:
        raise ConfigError(
            "ckpt",
            f"no trained classifier in {store.root} for this data/backbone/training config "
            f"({cfg.backbone.net.arch}, norm={cfg.backbone.net.get('norm')}): run with "
            "stage=all (or stage=finetune) first, or give one with ckpt=/path/to/weights",
        )
    net = build_net(cfg, datamodule.num_classes)
    load_weights(net, ckpt)
    target_layers = cam_target_layers(net.cam_stages, cfg.cam.layers)
    modules = dict(net.named_modules())
    missing = [name for name in target_layers if name not in modules]
    if missing:
        # The start-up check tests `cam.layers` against the architecture's stage names; this
        # guards a built network whose modules differ from them.
        raise ConfigError(
            "cam.layers",
            f"the {cfg.backbone.net.arch} network has no module named {missing}; "
            f"its CAM stages are {list(net.cam_stages)}",
        )
    datamodule.setup("test")
    loader = eval_loader(cfg, datamodule)
    options = cam_options(cfg.cam)
    info = {"target_layers": target_layers, "cam_options": options, "checkpoint": str(ckpt)}
    settings = evaluation_settings(cfg, datamodule)
    build = cam_module_factory(cfg, net, target_layers, options, settings)
    trainer = build_trainer(cfg, "eval", loggers, inference_mode=False)
    return evaluate(
        trainer, build, loader, cam_method(cfg), settings, info, wandb_run=loggers.wandb_run()
    )


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
        cfg.data = upgrade_data_config(source.data, cfg.eval)
        cfg.eval.split = source.eval.split
        cfg.cam.name = source.cam.name
    return cfg


def upgrade_data_config(data: DictConfig, evaluation: DictConfig) -> DictConfig:
    """The `data` node of a run saved before the data nodes became plain DataModule calls,
    in today's form (newer nodes come back unchanged).

    Then, `data.evaluation` held the headline convention (now `eval.metrics`/`eval.miou`,
    filled into `evaluation` where this run leaves them null) and the demo was a
    BraTSDataModule node with a `demo` entry (now `src.data.demo.DemoBraTSDataModule`)."""
    data = data.copy()
    with open_dict(data), open_dict(evaluation):
        for key, value in (data.pop("evaluation", None) or {}).items():
            if evaluation.get(key) is None:
                evaluation[key] = value
        if data.get("demo") and data.get("_target_") == "src.data.brats.BraTSDataModule":
            data._target_ = DEMO_TARGET
        data.pop("output_dir", None)  # the pipeline passes it
    return data


def masks_stage(cfg: DictConfig, datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """Masks and metrics again from the maps a finished run saved (`maps_from=<run dir>`),
    with this run's mask (`cam.mask`, `cam.threshold`) and scoring options (`eval`)."""
    datamodule.setup("test")
    settings = evaluation_settings(cfg, datamodule)
    dataset = datamodule.dataset(cfg.eval.split)
    return remask(settings, cam_method(cfg), dataset, cfg.maps_from)


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
    loggers = PipelineLoggers(cfg)
    try:
        if cfg.method == "supervised":
            summary = _run_supervised(cfg, datamodule, store, loggers)
        else:
            summary = _run_weakly_supervised(cfg, datamodule, store, loggers)
    finally:
        loggers.finish()
    # Written last, so a failed run never replaces the config of results already in the folder
    # (Hydra keeps its own copy of every attempt in .hydra/).
    if rank_zero_only.rank == 0:
        atomic_write_text(output_dir / FINISHED_MARKER, OmegaConf.to_yaml(cfg, resolve=True))
        if not cfg.keep_last_checkpoint:
            drop_last_checkpoints(output_dir)
        if summary:
            log.info("Results written to %s", output_dir)
    return summary


def drop_last_checkpoints(output_dir: Path) -> None:
    """Delete the `last.ckpt` of every stage of a completed run: only `resume=` reads it,
    and a complete run is not resumed (the stored weights and the best checkpoint stay).
    Deleted after `config.yaml` is written, so a run stopped in between still counts as
    complete rather than as one whose training must start over."""
    for path in sorted((output_dir / "checkpoints").glob(f"*/{LAST_CHECKPOINT}.ckpt")):
        path.unlink()
        log.info("Deleted %s (keep_last_checkpoint=false)", path)


def _run_weakly_supervised(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> dict[str, Any]:
    """`method=cam`: the stages `cfg.stage` names; returns the evaluation summary (or {})."""
    summary: dict[str, Any] = {}
    if cfg.stage == "pretrain":
        pretrain_stage(cfg, datamodule, store, loggers)
    if cfg.stage in ("all", "finetune"):
        finetune_stage(cfg, datamodule, store, loggers)
    if cfg.stage in ("all", "eval"):
        summary = eval_stage(cfg, datamodule, store, loggers)
    if cfg.stage == "masks":
        summary = masks_stage(cfg, datamodule)
    return summary


def _run_supervised(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> dict[str, Any]:
    """`method=supervised`: train (or reuse) the U-Net, then score it on the CAM rows' images
    (the evaluation's settings and loader come from here: `supervised.py` cannot import this
    module, which imports it)."""
    if cfg.stage in ("all", "finetune"):
        segmenter_stage(cfg, datamodule, store, loggers)
    if cfg.stage in ("all", "eval"):
        datamodule.setup("test")
        settings = evaluation_settings(cfg, datamodule)
        return supervised_eval_stage(cfg, datamodule, store, eval_loader, settings, loggers)
    return {}

"""The stages of a run: pretrain (SupCon) -> finetune (classifier) -> eval (CAMs -> masks -> metrics).

`method=supervised` and `method=selftrain` train a U-Net instead (on pixel labels, or on the
pseudo-masks the classifier's CAMs make of training slices) and score it the same way.

Each stage can run alone (`stage=pretrain|finetune|eval`); `stage=all` runs them in order.
Trained networks go to the model store keyed by their config, so a later run with the same
data/backbone/training config (e.g. every job of a CAM sweep) loads them instead of training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from src.data.atomic import atomic_write_text
from src.evaluation.evaluate import evaluate
from src.evaluation.remask import remask
from src.models.classifier import load_encoder_weights
from src.pipeline.config import (
    ConfigError,
    cam_options,
    cam_target_layers,
    check_paths,
    validate_config,
)
from src.pipeline.console import quiet_console
from src.pipeline.eval_inputs import (
    cam_method,
    cam_module_factory,
    eval_loader,
    evaluation_settings,
)
from src.pipeline.resume import FINISHED_MARKER, LAST_CHECKPOINT
from src.pipeline.selftrain import (
    check_selftrain_config,
    selftrain_eval_stage,
    selftrain_stage,
)
from src.pipeline.store import ModelStore, load_weights
from src.pipeline.supervised import (
    check_supervised_config,
    segmenter_stage,
    supervised_eval_stage,
)
from src.pipeline.trainer import PipelineLoggers, build_trainer
from src.pipeline.training import BestCheckpoint, fit_and_store
from src.pipeline.upgrades import check_data_arguments, upgrade_data_config

log = logging.getLogger(__name__)

#: The classifier keeps the weights of its best validation AUC.
CLASSIFIER_BEST = BestCheckpoint("classifier_checkpoint")


def datamodule_arguments(data: DictConfig) -> dict[str, Any]:
    """The DataModule's arguments, `_target_` included: the whole `data` node, resolved.

    Raises ConfigError for a `data` node in the form of older runs (`check_data_arguments`)."""
    arguments = OmegaConf.to_container(data, resolve=True)
    assert isinstance(arguments, dict)
    check_data_arguments(arguments)
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
    return store.train_once(
        cfg,
        "pretrain",
        lambda: fit_and_store(
            cfg,
            "pretrain",
            lambda: _supcon_module(cfg, datamodule),
            lambda module: module.encoder.state_dict(),
            datamodule,
            store,
            loggers,
        ),
    )


def _supcon_module(cfg: DictConfig, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """The SupCon module around a fresh encoder (the backbone without its head)."""
    encoder = build_net(cfg, datamodule.num_classes).remove_head()
    return instantiate(cfg.pretrain.module, encoder=encoder)


def finetune_stage(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> Path:
    """Fine-tune the whole classifier (once per training key, however many jobs ask at once);
    keeps the best-validation-AUC weights (`callbacks.classifier_checkpoint`)."""
    return store.train_once(cfg, "finetune", lambda: _finetune(cfg, datamodule, store, loggers))


def _finetune(
    cfg: DictConfig, datamodule: pl.LightningDataModule, store: ModelStore, loggers: PipelineLoggers
) -> Path:
    """Train the classifier (from the SupCon encoder, if enabled) and store it; returns the
    path of its weights. The encoder comes first, before `fit_and_store` seeds: the
    classifier's initial weights then do not depend on whether SupCon trained in this job."""
    encoder_path = (
        pretrain_stage(cfg, datamodule, store, loggers)
        if cfg.pretrain.get("enabled", True)
        else None
    )

    def classifier() -> pl.LightningModule:
        net = build_net(cfg, datamodule.num_classes)
        if encoder_path is not None:
            load_encoder_weights(net, encoder_path)
        return instantiate(
            cfg.finetune.module, net=net, task=datamodule.task, num_classes=datamodule.num_classes
        )

    return fit_and_store(cfg, "finetune", classifier, CLASSIFIER_BEST, datamodule, store, loggers)


def load_classifier(
    cfg: DictConfig, datamodule: pl.LightningDataModule, ckpt: str | Path
) -> tuple[torch.nn.Module, list[str]]:
    """The classifier with the weights `ckpt`, and the layers its CAMs hook (`cam.layers`)."""
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
    return net, target_layers


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
    net, target_layers = load_classifier(cfg, datamodule, ckpt)
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
    only the mask and metric options come from this run's config. So do the faithfulness
    settings: no network runs here, its columns are the source run's (`remask_binary`)."""
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
        cfg.eval.faithfulness = bool(source.eval.get("faithfulness", False))
        for key in ("faithfulness_steps", "faithfulness_baseline", "faithfulness_chunk"):
            cfg.eval[key] = source.eval.get(key, cfg.eval[key])
    return cfg


def masks_stage(cfg: DictConfig, datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """Masks and metrics again from the maps a finished run saved (`maps_from=<run dir>`),
    with this run's mask (`cam.mask`, `cam.threshold`) and scoring options (`eval`)."""
    datamodule.setup("test")
    settings = evaluation_settings(cfg, datamodule)
    dataset = datamodule.dataset(cfg.eval.split)
    return remask(settings, cam_method(cfg), dataset, cfg.maps_from)


def start_up_checks(cfg: DictConfig) -> DictConfig:
    """Every check a run makes before it starts any work; returns the config the run uses
    (with `stage=masks`, the source run's, `with_source_run`)."""
    validate_config(cfg)
    if cfg.method == "supervised":
        check_supervised_config(cfg)
    if cfg.method == "selftrain":
        check_selftrain_config(cfg)
    if cfg.stage == "masks":
        cfg = with_source_run(cfg)
    check_paths(cfg)
    return cfg


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured stage(s); returns the evaluation summary (empty if no eval ran)."""
    quiet_console()
    cfg = start_up_checks(cfg)
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
        elif cfg.method == "selftrain":
            summary = _run_selftrain(cfg, datamodule, store, loggers)
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
    """`method=supervised`: train (or reuse) the U-Net, then score it on the CAM rows' images."""
    if cfg.stage in ("all", "finetune"):
        segmenter_stage(cfg, datamodule, store, loggers)
    if cfg.stage in ("all", "eval"):
        return supervised_eval_stage(cfg, datamodule, store, loggers)
    return {}


def _run_selftrain(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
) -> dict[str, Any]:
    """`method=selftrain`: the classifier (trained or reused), its CAMs of training slices ->
    pseudo-masks -> the U-Net (each reused when stored), then scored like the supervised one."""
    if cfg.stage in ("all", "finetune"):
        classifier = finetune_stage(cfg, datamodule, store, loggers)
        selftrain_stage(
            cfg,
            datamodule,
            store,
            loggers,
            classifier,
            lambda: load_classifier(cfg, datamodule, classifier),
        )
    if cfg.stage in ("all", "eval"):
        classifier = store.lookup(cfg, "finetune")
        return selftrain_eval_stage(cfg, datamodule, store, loggers, classifier)
    return {}

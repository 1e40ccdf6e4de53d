"""Fitting one training stage: its checkpoint folder, `last.ckpt` after every epoch, the
random streams in the checkpoints, continuing from them when the run resumes, and storing
the weights it produced in the model store (`fit_and_store`, shared by the classifier's
stages and the supervised U-Net)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from src.pipeline.randomness import RandomState
from src.pipeline.resume import LAST_CHECKPOINT, record_training_key, resume_checkpoint
from src.pipeline.store import ModelStore, load_state_dict, save_from_rank_zero
from src.pipeline.trainer import PipelineLoggers, build_trainer
from src.validation import check_patience

log = logging.getLogger(__name__)


def checkpoint_dir(cfg: DictConfig, stage: str) -> Path:
    """`<run>/checkpoints/<stage>`, absolute: Lightning restores a ModelCheckpoint's best
    score only into the folder it was saved from."""
    return Path(cfg.paths.output_dir).expanduser().resolve() / "checkpoints" / stage


class StageBanner(pl.Callback):
    """Say what a stage will cost before its first step: epochs x steps per epoch and the
    batch size (the progress bar then gives the remaining time of each epoch). A resumed run
    says which epoch it continues from."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the banner once (rank 0), when the loaders and the epoch count are known."""
        if not trainer.is_global_zero:
            return
        steps = trainer.num_training_batches
        epochs = trainer.max_epochs
        loader = trainer.train_dataloader
        batch = getattr(loader, "batch_size", None)
        resumed = f", resuming at epoch {trainer.current_epoch}" if trainer.current_epoch else ""
        log.info(
            "%s: %s epochs x %s steps of batch %s = %s steps%s",
            self.stage,
            epochs,
            steps,
            batch if batch is not None else "?",
            epochs * steps if isinstance(steps, int) and epochs and epochs > 0 else "?",
            resumed,
        )


class ChannelsLast(pl.Callback):
    """Train in the channels-last (NHWC) memory format (`trainer.channels_last`), which tensor
    cores prefer. The network's 4-D parameters are converted at the fit's setup, before the
    optimiser is built and the network moved to its device (both keep the format); a
    convolution with channels-last weights gives channels-last outputs whatever the input's
    format (cuDNN and oneDNN follow the weight), so batches need no conversion. At teardown
    the parameters go back to the default format, so the stored weights and the CAMs see
    ordinary tensors."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Convert the network's 4-D parameters (before the optimiser takes them)."""
        pl_module.to(memory_format=torch.channels_last)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Back to the default format when the fit ends."""
        pl_module.to(memory_format=torch.contiguous_format)


def fit(
    cfg: DictConfig,
    stage: str,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    max_epochs: int,
    best: ModelCheckpoint | None = None,
    *,
    loggers: PipelineLoggers,
    stop: EarlyStopping | None = None,
) -> tuple[pl.Trainer, ModelCheckpoint]:
    """Train `stage`, continuing from its last checkpoint when the run resumes (`resume=`).

    Returns the trainer and the callback that keeps `last.ckpt`: a checkpoint of every epoch's
    end, its own callback because `save_last=True` on a monitoring one (`best`) writes it only
    in epochs that improve the monitored value. `loggers` are the pipeline's (one W&B run for
    all stages)."""
    folder = checkpoint_dir(cfg, stage)
    ckpt_path = resume_checkpoint(cfg, stage, folder)
    last = ModelCheckpoint(dirpath=folder, filename=LAST_CHECKPOINT, enable_version_counter=False)
    callbacks = [*([best] if best else []), *([stop] if stop else []), last]
    callbacks += [RandomState(), StageBanner(stage)]
    if cfg.trainer.get("channels_last"):
        callbacks.append(ChannelsLast())
    trainer = build_trainer(cfg, stage, loggers, max_epochs=max_epochs, callbacks=callbacks)
    if trainer.is_global_zero:
        record_training_key(cfg, stage, folder)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, last


def early_stop(patience: object, best: ModelCheckpoint, field: str) -> EarlyStopping | None:
    """The early stop of a stage that keeps its best checkpoint: it watches the same score in
    the same direction, so training ends once `patience` epochs in a row have not improved
    on the checkpoint it keeps (the epoch budget then only caps it, and its learning-rate
    schedule still spans the whole budget). `None` trains every epoch. Why a stop and not a
    fixed count: a few cases from one source learn in a few epochs, a harder set needs
    several times as many (docs/training.md)."""
    if check_patience(field, patience, monitor=best.monitor) is None:
        return None
    return EarlyStopping(monitor=best.monitor, mode=best.mode, patience=patience, verbose=True)


@dataclass(frozen=True)
class BestCheckpoint:
    """A stage that stores the weights of its best validation epoch rather than its last:
    the callback config that picks it (`callbacks.<callback>`; its `monitor` names the score
    in the log and in the store entry's info.json)."""

    callback: str


#: Which weights a stage stores: its best checkpoint, or those `keep(module)` returns after
#: the last epoch (the SupCon encoder, whose loss has no validation score to pick by).
Keep = BestCheckpoint | Callable[[pl.LightningModule], dict[str, torch.Tensor]]


def fit_and_store(
    cfg: DictConfig,
    stage: str,
    build: Callable[[], pl.LightningModule],
    keep: Keep,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
    settings: str | None = None,
) -> Path:
    """Train `stage` and store its weights under this config's key; returns their path.

    Seeds, builds the LightningModule with `build()` (after seeding, so its initial weights
    follow `cfg.seed`), trains it with the batch size and epochs of `cfg.<settings>` (default:
    the stage's own node, `cfg.<stage>`) and stores what `keep` says. Meant to run inside
    `ModelStore.train_once`, which decides whether this job trains at all."""
    pl.seed_everything(cfg.seed, workers=True)
    module = build()
    node = cfg[settings or stage]
    datamodule.batch_size = node.batch_size
    if not isinstance(keep, BestCheckpoint):
        trainer, _ = fit(cfg, stage, module, datamodule, node.epochs, loggers=loggers)
        return save_from_rank_zero(trainer, store, cfg, stage, lambda: keep(module))
    # The best epoch's file holds its weights only: nothing but the store reads it, and
    # resuming restores the optimiser from last.ckpt. With the optimiser's moments it was 3x
    # the weights (1.6 GB for VGG16 with its ImageNet head).
    checkpoints = instantiate(
        cfg.callbacks[keep.callback], dirpath=checkpoint_dir(cfg, stage), save_weights_only=True
    )
    stop = early_stop(node.get("patience"), checkpoints, f"{settings or stage}.patience")
    trainer, last = fit(
        cfg, stage, module, datamodule, node.epochs, checkpoints, loggers=loggers, stop=stop
    )
    best = checkpoints.best_model_path or last.best_model_path
    score = checkpoints.best_model_score
    score = None if score is None else float(score)
    monitor = checkpoints.monitor
    if monitor is None:  # callbacks.<callback>.monitor=null: the checkpoint of the last epoch
        log.info("Kept the last epoch, no score monitored (%s)", best)
    else:
        log.info("Best %s %s (%s)", monitor, None if score is None else f"{score:.4f}", best)
    extra = {"monitor": monitor, "best_score": score, "checkpoint": best}
    if stop is not None:
        extra["epochs_trained"] = trainer.current_epoch
    return save_from_rank_zero(
        trainer, store, cfg, stage, lambda: load_state_dict(best), extra=extra
    )

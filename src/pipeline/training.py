"""Fitting one training stage: its checkpoint folder, `last.ckpt` after every epoch, the
random streams in the checkpoints, and continuing from them when the run resumes."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from src.pipeline.randomness import RandomState
from src.pipeline.resume import LAST_CHECKPOINT, record_training_key, resume_checkpoint
from src.pipeline.trainer import PipelineLoggers, build_trainer


def checkpoint_dir(cfg: DictConfig, stage: str) -> Path:
    """`<run>/checkpoints/<stage>`, absolute: Lightning restores a ModelCheckpoint's best
    score only into the folder it was saved from."""
    return Path(cfg.paths.output_dir).expanduser().resolve() / "checkpoints" / stage


def fit(
    cfg: DictConfig,
    stage: str,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    max_epochs: int,
    best: ModelCheckpoint | None = None,
    *,
    loggers: PipelineLoggers,
) -> tuple[pl.Trainer, ModelCheckpoint]:
    """Train `stage`, continuing from its last checkpoint when the run resumes (`resume=`).

    Returns the trainer and the callback that keeps `last.ckpt`: a checkpoint of every epoch's
    end, its own callback because `save_last=True` on a monitoring one (`best`) writes it only
    in epochs that improve the monitored value. `loggers` are the pipeline's (one W&B run for
    all stages)."""
    folder = checkpoint_dir(cfg, stage)
    ckpt_path = resume_checkpoint(cfg, stage, folder)
    last = ModelCheckpoint(dirpath=folder, filename=LAST_CHECKPOINT, enable_version_counter=False)
    callbacks = [*([best] if best else []), last, RandomState()]
    trainer = build_trainer(cfg, stage, loggers, max_epochs=max_epochs, callbacks=callbacks)
    if trainer.is_global_zero:
        record_training_key(cfg, stage, folder)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, last

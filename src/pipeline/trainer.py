"""Lightning Trainers and loggers for the stages, built from the `trainer` and `logger` groups."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger

_WANDB_LOGGERS: dict[str, Logger] = {}


def build_loggers(cfg: DictConfig, stage: str) -> list[Logger]:
    """One logger per entry of the `logger` group.

    CSV logs go to `<run>/csv/<stage>/`. W&B is one run for the whole pipeline (all stages log
    to it) and stays offline unless the environment sets WANDB_MODE=online.
    """
    loggers: list[Logger] = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None:
            continue
        target = logger_cfg.get("_target_", "")
        if target.endswith("WandbLogger"):
            key = str(cfg.paths.output_dir)
            if key not in _WANDB_LOGGERS:
                overrides: dict[str, Any] = {}
                if logger_cfg.get("offline") is None:
                    overrides["offline"] = os.environ.get("WANDB_MODE", "offline") != "online"
                overrides.update(_wandb_names(logger_cfg))
                Path(logger_cfg.save_dir).mkdir(parents=True, exist_ok=True)
                wandb_logger = instantiate(logger_cfg, **overrides)
                wandb_logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
                _WANDB_LOGGERS[key] = wandb_logger
            loggers.append(_WANDB_LOGGERS[key])
        elif target.endswith("CSVLogger"):
            loggers.append(instantiate(logger_cfg, version=stage))
        else:
            raise ValueError(f"logger.{name}: unsupported logger {target!r}")
    return loggers


def active_wandb_run() -> Any | None:
    """The W&B run of this pipeline, if `logger=wandb` (None otherwise)."""
    for wandb_logger in _WANDB_LOGGERS.values():
        return wandb_logger.experiment
    return None


def _wandb_names(logger_cfg: DictConfig) -> dict[str, str]:
    """Multirun jobs are separate W&B runs grouped by their sweep; names default to the
    job's overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    names: dict[str, str] = {}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        if logger_cfg.get("group") is None:
            names["group"] = Path(hydra_cfg.sweep.dir).name
        if logger_cfg.get("name") is None:
            names["name"] = hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"
    return names


def finish_loggers() -> None:
    """Close the run-wide W&B run (each process at the end of a pipeline)."""
    for wandb_logger in _WANDB_LOGGERS.values():
        wandb_logger.experiment.finish()
    _WANDB_LOGGERS.clear()


def build_trainer(cfg: DictConfig, stage: str, **overrides: Any) -> pl.Trainer:
    """The `trainer` group's Trainer with this stage's arguments: its loggers, its folder
    `<run>/<stage>` and `overrides` (max_epochs, callbacks, ...), which win.

    The per-stage arguments are passed to a partial of the node rather than merged into the
    config, so the callback and logger objects reach the Trainer themselves, not copies."""
    overrides.setdefault("logger", build_loggers(cfg, stage) or False)
    overrides.setdefault("default_root_dir", str(Path(cfg.paths.output_dir) / stage))
    return instantiate(cfg.trainer, _partial_=True, _convert_="all")(**overrides)

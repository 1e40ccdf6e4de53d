"""Lightning Trainers and loggers for the stages, built from the `trainer` and `logger` groups."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers.logger import DummyExperiment

#: Keys of the `trainer` node that the pipeline applies itself (not Trainer arguments).
PIPELINE_KEYS = ("channels_last",)


class PipelineLoggers:
    """The loggers of one pipeline run, owned by `run_pipeline` and closed in its `finally`.

    CSV logs go to `<run>/csv/<stage>/`, a new logger per stage. W&B is one run for the whole
    pipeline: made by the first stage that builds a Trainer, then shared by every later stage
    and handed to the evaluation for its results (so no module-level registry is needed). It
    stays offline unless the environment sets WANDB_MODE=online.
    """

    def __init__(self, cfg: DictConfig) -> None:
        """No logger is made yet: the first Trainer's stage makes the W&B run."""
        self._cfg = cfg
        self._wandb: Logger | None = None

    def for_stage(self, stage: str) -> list[Logger]:
        """One logger per entry of the `logger` group, for the Trainer of `stage`."""
        loggers: list[Logger] = []
        for name, logger_cfg in (self._cfg.get("logger") or {}).items():
            if logger_cfg is None:
                continue
            target = logger_cfg.get("_target_", "")
            if target.endswith("WandbLogger"):
                loggers.append(self._wandb_logger(logger_cfg))
            elif target.endswith("CSVLogger"):
                loggers.append(instantiate(logger_cfg, version=stage))
            else:
                raise ValueError(f"logger.{name}: unsupported logger {target!r}")
        return loggers

    def _wandb_logger(self, logger_cfg: DictConfig) -> Logger:
        """The run-wide W&B logger, made (with the hyperparameters logged once) on first use."""
        if self._wandb is None:
            overrides: dict[str, Any] = {}
            if logger_cfg.get("offline") is None:
                overrides["offline"] = os.environ.get("WANDB_MODE", "offline") != "online"
            overrides.update(_wandb_names(logger_cfg))
            Path(logger_cfg.save_dir).mkdir(parents=True, exist_ok=True)
            self._wandb = instantiate(logger_cfg, **overrides)
            self._wandb.log_hyperparams(OmegaConf.to_container(self._cfg, resolve=True))
        return self._wandb

    def wandb_run(self) -> Any | None:
        """The W&B run of this pipeline once a stage has started it (None otherwise)."""
        return None if self._wandb is None else self._wandb.experiment

    def finish(self) -> None:
        """Close the run-wide W&B run and wait until its files are complete (each process at
        the end of a pipeline, before it reports its results as written).

        `run.finish()` returns once the W&B service has the run's last record, but the
        service writes the run log (`run-*.wandb`) on its own: read right after, an offline
        run's log held only its 7-byte header. `wandb.teardown()` waits for the service to
        exit, which closes the file; the next run in this process starts a new service."""
        if self._wandb is None:
            return
        experiment = self._wandb.experiment
        self._wandb = None
        if isinstance(experiment, DummyExperiment):  # DDP ranks other than 0 have no run
            return
        import wandb  # only pipelines with a W&B logger get here

        experiment.finish()
        wandb.teardown()


def _wandb_names(logger_cfg: DictConfig) -> dict[str, str]:
    """Multirun jobs are separate W&B runs grouped by their sweep; names default to the
    job's overrides."""
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


def build_trainer(
    cfg: DictConfig, stage: str, loggers: PipelineLoggers, **overrides: Any
) -> pl.Trainer:
    """The `trainer` group's Trainer with this stage's arguments: its `loggers`, its folder
    `<run>/<stage>` and `overrides` (max_epochs, callbacks, ...), which win.

    The per-stage arguments are passed to a partial of the node rather than merged into the
    config, so the callback and logger objects reach the Trainer themselves, not copies."""
    overrides.setdefault("logger", loggers.for_stage(stage) or False)
    overrides.setdefault("default_root_dir", str(Path(cfg.paths.output_dir) / stage))
    return instantiate(trainer_node(cfg), _partial_=True, _convert_="all")(**overrides)


def trainer_node(cfg: DictConfig) -> DictConfig:
    """The `trainer` node as a Trainer call: without the keys the pipeline applies itself
    (`PIPELINE_KEYS`)."""
    arguments = OmegaConf.to_container(cfg.trainer, resolve=True)
    return OmegaConf.create({k: v for k, v in arguments.items() if k not in PIPELINE_KEYS})

"""The cluster configs: SLURM launcher defaults and the SLURM DDP trainer's sizes."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from src.pipeline.compose import CONF_DIR


def _hydra_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_gives_every_task_a_gpu_of_its_node():
    cfg = _hydra_config("hydra/launcher=slurm", "hydra.launcher.tasks_per_node=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 4
    assert launcher.partition is None  # the cluster's default
    assert launcher.array_parallelism > 1 and launcher.timeout_min > 0
    assert launcher.name == "wsss"


def test_local_launcher_is_submitits_local_executor():
    cfg = _hydra_config("hydra/launcher=local")
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 0


@pytest.mark.parametrize(
    ("env", "devices", "nodes"),
    [({}, 1, 1), ({"SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NUM_NODES": "2"}, 4, 2)],
)
def test_slurm_trainer_takes_its_sizes_from_the_allocation(
    monkeypatch, make_config, env, devices, nodes
):
    for name in ("SLURM_NTASKS_PER_NODE", "SLURM_JOB_NUM_NODES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    trainer = OmegaConf.to_container(make_config("trainer=slurm").trainer, resolve=True)
    assert (trainer["devices"], trainer["num_nodes"]) == (devices, nodes)
    assert trainer["strategy"] == "ddp" and trainer["accelerator"] == "gpu"

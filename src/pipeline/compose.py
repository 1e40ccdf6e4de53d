"""The config `python -m src.run <overrides>` would run, composed in-process.

Used by the experiment recipes and the tests: Hydra's runtime values are filled in so that the
`hydra:` resolver (run folder, working directory) works outside `@hydra.main`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from src.pipeline.resolvers import register_resolvers

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(
    overrides: Sequence[str], output_dir: str | Path, cwd: str | Path | None = None
) -> DictConfig:
    """The composed config with the run folder `output_dir` and working directory `cwd`
    (default: the run folder)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(cwd if cwd is not None else output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg

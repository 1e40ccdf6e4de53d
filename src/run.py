"""Hydra entry point: `python -m src.run [group=option ...] [key=value ...]`.

Thin on purpose: composition happens here, the work in `src.pipeline.stages.run_pipeline`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from src.pipeline.config import ConfigError
from src.pipeline.stages import run_pipeline

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    try:
        return run_pipeline(cfg)
    except ConfigError as err:
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()

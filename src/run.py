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
from src.pipeline.resume import resumed_arguments
from src.pipeline.stages import run_pipeline

log = logging.getLogger(__name__)

#: Printed after a demo evaluation: the paper's Table 1 rows on the same classifier.
DEMO_NEXT = (
    "Next: the paper's Table 1 baselines (Grad-CAM, ScoreCAM, LayerCAM) on this classifier and "
    "these slices, beside Cfd-CAM and the paper's FLAIR numbers (~10 min on 2 cores):\n"
    "  .venv/bin/python experiments/run_recipe.py demo_table1\n"
    "  -> experiments/results/demo_table1.md\n"
)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    try:
        summary = run_pipeline(cfg)
    except ConfigError as err:
        log.error("%s", err)
        sys.exit(2)
    if summary and cfg.data.get("demo") and cfg.method == "cam" and cfg.stage in ("all", "eval"):
        print(DEMO_NEXT)
    return summary


if __name__ == "__main__":
    try:
        # `resume=<run>`: that run's own overrides and folder, before Hydra composes.
        sys.argv[1:] = resumed_arguments(sys.argv[1:])
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    main()

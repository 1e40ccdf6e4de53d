"""Hydra entry point: `python -m src.run [group=option ...] [key=value ...]`.

Thin on purpose: composition happens here, the work in `src.pipeline.stages.run_pipeline`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.pipeline import interrupts
from src.pipeline.config import ConfigError
from src.pipeline.overrides import cam_options_as_upserts
from src.pipeline.resolvers import register_resolvers
from src.pipeline.resume import RunComplete, resumed_arguments
from src.pipeline.stages import run_pipeline
from src.pipeline.user_errors import (
    EXIT_STATUS,
    USER_ERRORS,
    clean_up_failed_start,
    full_error_wanted,
    report,
)

#: Printed after a demo evaluation, by the demo's DataModule: the paper's rows on the same
#: classifier.
DEMO_NEXT = {
    "src.data.demo.DemoBraTSDataModule": (
        "Next: the paper's Table 1 baselines (Grad-CAM, ScoreCAM, LayerCAM) on this classifier "
        "and these slices, the U-Net self-trained on Cfd-CAM's masks and the supervised U-Net "
        "ceiling, beside Cfd-CAM and the paper's FLAIR numbers (29 min on a shared 2-core CPU "
        "before the self-trained row, which took 15 min alone; experiments/results/"
        "demo_table1.csv):\n"
        "  .venv/bin/python experiments/run_recipe.py demo_table1\n"
        "  -> experiments/results/demo_table1.md\n"
    ),
    "src.data.demo.DemoTCGADataModule": (
        "Next: the paper's Table 1 rows for TCGA-LGG (Grad-CAM, ScoreCAM, LayerCAM, Cfd-CAM) on "
        "this classifier and these slices, and the supervised U-Net ceiling:\n"
        "  .venv/bin/python experiments/run_recipe.py cfdcam_table1 --demo --only 'tcga-lgg-*'\n"
        "  -> experiments/results/demo/cfdcam_table1.md\n"
    ),
    "src.data.demo.DemoVOCDataModule": (
        "Next: the LT-Grad-CAM paper's VOC Tables 1-3 (Grad-CAM per stage and fused, gradient "
        "truncation, the comparison) on this classifier and this test split (3 min on a shared "
        "2-core CPU):\n"
        "  .venv/bin/python experiments/run_recipe.py ltgrad_table1 ltgrad_table2 ltgrad_table3 "
        "--demo\n"
        "  -> experiments/results/demo/ltgrad_table1.md, ltgrad_table2.md, ltgrad_table3.md\n"
    ),
    "src.data.demo.DemoKSDD2DataModule": (
        "Next: the LT-Grad-CAM paper's Table 4 rows (Grad-CAM++, Grad-CAM, FullGrad, Layer-CAM, "
        "LTGrad-CAM) on this classifier and this test split, and the delta sweeps of its "
        "Fig. 4 (test) and Fig. 5 (train) with the delta chosen on train:\n"
        "  .venv/bin/python experiments/run_recipe.py ltgrad_table4 --demo\n"
        "  .venv/bin/python experiments/run_recipe.py ltgrad_fig4 --demo\n"
        "  .venv/bin/python experiments/run_recipe.py ltgrad_delta_select --demo\n"
        "  -> experiments/results/demo/ltgrad_table4.md, ltgrad_fig4.md, ltgrad_fig5.md\n"
    ),
}

register_resolvers()
# Set when Hydra hands over a composed config: a failure before that is Hydra rejecting the
# command line (an unknown group option, a misspelt key), which is a user error too.
_composed = False


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Run the pipeline on Hydra's composed config; a user error ends the run with one line
    on stderr, exit status 2 and no run folder left behind (``src.pipeline.user_errors``)."""
    global _composed
    _composed = True
    interrupts.install()
    try:
        summary = run_pipeline(cfg)
    except (KeyboardInterrupt, SystemExit):
        if not interrupts.stopped_by_signal():
            raise
        print(interrupts.resume_hint(Path(HydraConfig.get().runtime.output_dir)), file=sys.stderr)
        sys.exit(interrupts.exit_status())
    except USER_ERRORS as err:
        if full_error_wanted():
            raise
        report(err)
        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        resumed = bool(cfg.get("resume"))
        clean_up_failed_start(run_dir, run_dir.parent if multirun else None, resumed)
        sys.exit(EXIT_STATUS)
    demo_next = DEMO_NEXT.get(cfg.data.get("_target_", ""))
    if summary and demo_next and cfg.data.get("demo") and cfg.method == "cam":
        if cfg.stage in ("all", "eval"):
            print(demo_next)
    return summary


if __name__ == "__main__":
    try:
        sys.argv[1:] = cam_options_as_upserts(sys.argv[1:])
        # `resume=<run>`: that run's own overrides and folder, before Hydra composes.
        sys.argv[1:] = resumed_arguments(sys.argv[1:])
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(EXIT_STATUS)
    except RunComplete as done:
        print(done)
        sys.exit(0)
    try:
        main()
    except SystemExit as end:
        # Hydra prints its composition errors and exits with 1, like the program's own errors.
        if end.code == 1 and not _composed:
            sys.exit(EXIT_STATUS)
        raise

"""The cheapest recipe end to end on generated data: a three-delta LTGrad-CAM sweep on a
small generated KSDD2 (demo mode), through the real pipeline, table and delta plot."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from experiments.engine import run_recipe
from experiments.recipes import RECIPES

pytestmark = pytest.mark.slow


def test_demo_delta_sweep_writes_its_table_and_plot(settings, tmp_path):
    demo = dataclasses.replace(
        settings,
        demo=True,
        plumbing=True,
        vgg_weights=None,
        only=("ltgrad-cam-delta-0", "ltgrad-cam-delta-40", "ltgrad-cam-delta-80"),
        # ResNet-18 (4 stages) instead of the demo's VGG16: the same engine, ~10x cheaper.
        extra=(*settings.extra, "backbone=resnet18", "cam.layers=4", "eval.limit=4"),
    )
    recipe = RECIPES["ltgrad_fig4"]
    outcomes, written = run_recipe(recipe, demo)

    ran = {key: o for key, o in outcomes.items() if o.status == "done"}
    assert set(ran) == {"ltgrad-cam-delta-0", "ltgrad-cam-delta-40", "ltgrad-cam-delta-80"}
    # The table shows each job's split-level mIoU (percent) as its summary.json has it.
    table = (tmp_path / "results" / "plumbing" / "ltgrad_fig4.md").read_text()
    assert table.startswith("# LT-Grad-CAM, Fig. 4") and "PLUMBING run on generated data" in table
    for delta in (0, 40, 80):
        run_dir = Path(ran[f"ltgrad-cam-delta-{delta}"].run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["split"] == "test" and summary["cam_options"]["delta"] == delta
        miou = summary["headline"]["miou"]["mean"]
        assert 0 <= miou <= 1
        assert f"| {delta} | {100 * miou:.2f} | not run | not run |" in table
    with open(tmp_path / "results" / "plumbing" / "ltgrad_fig4.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "done"]
    assert len(rows) == 3
    plot = tmp_path / "results" / "plumbing" / "ltgrad_fig4_sweep" / "sweep_miou_vs_delta.png"
    assert plot in written and plot.read_bytes()[:4] == b"\x89PNG"
    # Generated data in the real KSDD2 layout, outside the results folder.
    assert (demo.demo_data_dir / "ksdd2" / "test").is_dir()
    # The classifier was trained once and shared by the three jobs.
    assert len(list((tmp_path / ".cache" / "classifiers").glob("finetune-*"))) == 1

"""The tables render in the papers' layouts, ours beside the paper's numbers (golden strings)."""

from __future__ import annotations

import csv
import io

import pytest

from experiments.recipes import RECIPES
from experiments.tables import Outcome, aggregate_seeds, render_csv, render_markdown


def _lt(miou, precision, recall, f1):
    values = {"miou": miou, "precision": precision, "recall": recall, "f1": f1}
    return {k: {"mean": v, "std": None} for k, v in values.items()}


def _cfd(dice, iou, hd95):
    return {
        "dice": dict(zip(("mean", "std"), dice, strict=True)),
        "iou": dict(zip(("mean", "std"), iou, strict=True)),
        "hd95": dict(zip(("mean", "std"), hd95, strict=True)),
    }


GOLDEN_LT_TABLE2 = """\
# LT-Grad-CAM, Table 2: gradient truncation on Grad-CAM and FullGrad (PASCAL VOC 2012)

- fixture
- values in %; one confusion matrix over the split; precision, recall and F1 micro-averaged over the foreground classes
- FullGrad uses every conv bias (target layers ignored), as the paper

| Method | mIoU (ours) | mIoU (paper) | Precision (ours) | Precision (paper) | Recall (ours) | Recall (paper) | Micro-F1 (ours) | Micro-F1 (paper) |
|---|---|---|---|---|---|---|---|---|
| Grad-CAM++ | 20.34 | 20.32 | 50.00 | 47.75 | 25.00 | 27.43 | 33.33 | 33.06 |
| Grad-CAM | failed: RuntimeError: out of / memory | 25.31 | failed | 40.93 | failed | 42.02 | failed | 39.5 |
| LTGrad-CAM(l=1, δ=0) | not run: no data root for voc | 26.23 | not run | 42.46 | not run | 44.1 | not run | 40.59 |
| FullGrad | n/a | 28.2 | 100.00 | 48.72 | 0.00 | 42.52 | 0.00 | 42.84 |
| LTFullGrad(δ=0) | not run | 28.11 | not run | 48.01 | not run | 42.9 | not run | 42.77 |
"""


def test_percent_layout_golden():
    recipe = RECIPES["ltgrad_table2"]
    outcomes = {
        "grad-campp": Outcome("done", _lt(0.2034, 0.5, 0.25, 1 / 3)),
        "grad-cam": Outcome("failed", reason="RuntimeError: out of | memory\n"),
        "ltgrad-cam-l-1-delta-0": Outcome("not run", reason="no data root for voc"),
        "fullgrad": Outcome("done", _lt(float("nan"), 1.0, 0.0, 0.0)),
    }
    assert render_markdown(recipe, outcomes, "fixture") == GOLDEN_LT_TABLE2


GOLDEN_STAGES = """\
| block | S1 | S2 | S3 | S4 | S5 | S3+S4+S5 | S1+S2+S3+S4+S5 |
|---|---|---|---|---|---|---|---|
| mIoU (ours) | 9.87 | not run | not run | not run | 25.31 | not run | not run |
| mIoU (paper) | 10.13 | 10.87 | 11.68 | 14.03 | 25.31 | 22.84 | 21.57 |
"""


def test_stage_layout_is_the_papers_transposed_table():
    recipe = RECIPES["ltgrad_table1"]
    outcomes = {
        "s1": Outcome("done", _lt(0.0987, 0, 0, 0)),
        "s5": Outcome("done", _lt(0.2531, 0, 0, 0)),
    }
    text = render_markdown(recipe, outcomes)
    assert text.endswith(GOLDEN_STAGES)


GOLDEN_CFD_T1 = """\
| BraTS T1 | WSSS | Grad-CAM (2016) | 0.101 ± 0.092 | 0.107 ± 0.090 | 0.058 ± 0.050 | 0.059 ± 0.055 | 120.500 ± 22.125 | 121.816 ± 22.963 |
| BraTS T1 | WSSS | ScoreCAM (2020) | not run | 0.296 ± 0.128 | not run | 0.181 ± 0.089 | not run | 60.302 ± 14.110 |
| BraTS T1 | WSSS | LayerCAM (2021) | not run | 0.571 ± 0.170 | not run | 0.419 ± 0.161 | not run | 23.335 ± 27.369 |
| BraTS T1 | WSSS | Swin-MIL (2022) | not reproduced | 0.477 ± 0.170 | not reproduced | 0.330 ± 0.147 | not reproduced | 46.468 ± 30.408 |
| BraTS T1 | WSSS | Cfd-CAM (ours) | 0.580 ± 0.170 | 0.575 ± 0.169 | 0.430 ± 0.140 | 0.427 ± 0.143 | 23.000 ± 20.000 | 23.859 ± 20.243 |
| BraTS T1 | UL | C&F (2020), UL | not reproduced | 0.200 ± 0.082 | not reproduced | 0.113 ± 0.051 | not reproduced | 79.187 ± 14.304 |
| BraTS T1 | FSL | C&F (2020), FSL | not reproduced | 0.572 ± 0.196 | not reproduced | 0.426 ± 0.187 | not reproduced | 29.027 ± 20.881 |
| BraTS T1 | FSL | Opt. U-net (2021) | not run | 0.836 ± 0.062 | not run | 0.723 ± 0.090 | not run | 11.730 ± 10.345 |
"""


def test_mean_std_layout_keeps_every_row_of_the_paper():
    recipe = RECIPES["cfdcam_table1"]
    outcomes = {
        "brats-t1-grad-cam-2016": Outcome(
            "done", _cfd((0.1012, 0.0921), (0.058, 0.05), (120.5, 22.125))
        ),
        "brats-t1-cfd-cam-ours": Outcome("done", _cfd((0.58, 0.17), (0.43, 0.14), (23.0, 20.0))),
    }
    text = render_markdown(recipe, outcomes, "fixture")
    header = (
        "| Dataset | Type | Method | Dice ↑ (ours) | Dice ↑ (paper) | IoU ↑ (ours) | "
        "IoU ↑ (paper) | HD95 ↓ (ours) | HD95 ↓ (paper) |"
    )
    assert header in text
    assert GOLDEN_CFD_T1 in text
    assert text.count("\n| ") == 1 + 5 * 8  # header + 8 paper rows per dataset


def test_sweep_layout_pivots_methods_by_delta():
    recipe = RECIPES["ltgrad_fig5"]
    outcomes = {
        "ltgrad-cam-delta-0": Outcome("done", _lt(0.3, 0, 0, 0)),
        "ltfullgrad-delta-90": Outcome("failed", reason="boom"),
    }
    lines = render_markdown(recipe, outcomes).splitlines()
    assert "| δ | LTGrad-CAM mIoU | LTLayer-CAM mIoU | LTFullGrad mIoU |" in lines
    assert "| 0 | 30.00 | not run | not run |" in lines
    assert "| 90 | not run | not run | failed: boom |" in lines
    assert sum(line.startswith("| ") for line in lines) == 11


def test_csv_is_long_format_with_raw_fractions():
    recipe = RECIPES["ltgrad_table2"]
    outcomes = {
        "grad-campp": Outcome("done", _lt(0.2034, 0.5, 0.25, 0.3), run_dir="/r", seconds=2.04)
    }
    rows = list(csv.DictReader(io.StringIO(render_csv(recipe, outcomes))))
    assert len(rows) == 5 * 4
    first = rows[0]
    assert (first["method"], first["metric"], first["ours_mean"], first["paper_mean"]) == (
        "Grad-CAM++",
        "miou",
        "0.2034",
        "20.32",
    )
    assert (first["status"], first["seconds"], first["run_dir"]) == ("done", "2.0", "/r")
    assert rows[4]["status"] == "not run" and rows[4]["ours_mean"] == ""
    cfd = list(csv.DictReader(io.StringIO(render_csv(RECIPES["cfdcam_table1"], {}))))
    swin = next(r for r in cfd if r["method"] == "Swin-MIL (2022)" and r["metric"] == "dice")
    assert (swin["status"], swin["paper_mean"], swin["paper_std"]) == (
        "not reproduced",
        "0.477",
        "0.17",
    )


def test_seeds_aggregate_to_mean_and_population_std():
    recipe = RECIPES["cfdcam_table2"]
    seeds = [
        (42, Outcome("done", _cfd((0.5, 0.2), (0.4, 0.1), (10.0, 1.0)), run_dir="/r", seconds=2)),
        (43, Outcome("done", _cfd((0.7, 0.1), (0.6, 0.1), (float("nan"), 1.0)), seconds=3)),
        (44, Outcome("failed", reason="boom", log="/r/seed2/recipe_job.log")),
    ]
    outcome = aggregate_seeds(seeds)
    assert (outcome.status, outcome.reason, outcome.run_dir, outcome.seconds) == (
        "done",
        "seed 44 failed: boom",
        "/r",
        5,
    )
    assert outcome.headline["dice"] == {
        "mean": pytest.approx(0.6),
        "std": pytest.approx(0.1),
        "n": 2,
    }
    assert outcome.headline["hd95"] == {"mean": 10.0, "std": 0.0, "n": 1}
    outcomes = {"brats-t1-cfd-cam-ss": outcome}
    text = render_markdown(recipe, outcomes)
    assert (
        "| BraTS T1 | Cfd-CAM (ss) | 0.600 ± 0.100 (2/3 seeds) | 0.406 ± 0.152 | "
        "0.500 ± 0.100 (2/3 seeds) | 0.266 ± 0.121 | 10.000 ± 0.000 (1/3 seeds) |"
    ) in text
    assert "- `brats-t1-cfd-cam-ss, seed 44`: /r/seed2/recipe_job.log" in text
    rows = list(csv.DictReader(io.StringIO(render_csv(recipe, outcomes, seeds=3))))
    dice = [r for r in rows if r["method"] == "Cfd-CAM (ss)" and r["group"] == "BraTS T1"]
    dice = [r for r in dice if r["metric"] == "dice"]
    assert [
        (r["seed"], r["n_seeds"], r["ours_mean"], r["ours_std"], r["status"]) for r in dice
    ] == [
        ("all", "2", "0.6", dice[0]["ours_std"], "done"),
        ("42", "", "0.5", "0.2", "done"),
        ("43", "", "0.7", "0.1", "done"),
        ("44", "", "", "", "failed"),
    ]
    assert float(dice[0]["ours_std"]) == pytest.approx(0.1)
    other = [r for r in rows if r["group"] == "TCGA-LGG" and r["metric"] == "dice"]
    assert [(r["seed"], r["n_seeds"], r["status"]) for r in other] == [("all", "0", "not run")] * 2


def test_no_finished_seed_is_failed_or_not_run():
    failed = aggregate_seeds([(42, Outcome("failed", reason="x")), (43, Outcome("not run"))])
    assert (failed.status, failed.headline, failed.reason) == (
        "failed",
        None,
        "seed 42 failed: x; seed 43 not run",
    )
    assert aggregate_seeds([(42, Outcome("not run"))]).status == "not run"

"""The recipe registry covers every table and figure of the two papers, row for row."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.paper_numbers import CFD_DATASETS, PAPER
from experiments.recipes import DATASETS, LAYOUTS, RECIPES

CONF_EXPERIMENT = Path(__file__).resolve().parents[2] / "conf" / "experiment"
EXPECTED = {
    "cfdcam_table1",
    "cfdcam_table2",
    "ltgrad_table1",
    "ltgrad_table2",
    "ltgrad_table3",
    "ltgrad_table4",
    "ltgrad_fig4",
    "ltgrad_fig5",
    "demo_table1",
}


def test_every_table_and_figure_has_a_recipe_and_a_config():
    assert set(RECIPES) == EXPECTED
    for name, recipe in RECIPES.items():
        if recipe.experiment is not None:
            assert (CONF_EXPERIMENT / f"{recipe.experiment}.yaml").is_file(), name
        assert recipe.layout in LAYOUTS
        assert recipe.primary in DATASETS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rows_are_unique_and_match_the_paper_numbers(name):
    recipe = RECIPES[name]
    keys = [row.key for row in recipe.rows]
    assert len(keys) == len(set(keys)), "run folders would collide"
    labels = {(row.group, row.method) for row in recipe.rows}
    assert set(PAPER[name]) <= labels, "paper numbers without a row"
    if recipe.layout != "sweep":
        assert labels == set(PAPER[name]), "a row without the paper's numbers"
    for row in recipe.jobs():
        assert row.dataset in DATASETS
        methods = ("cam=", "method=supervised", "method=selftrain")
        assert any(o.startswith(methods) for o in row.overrides), row.key


def test_cfdcam_table1_reproduces_the_cam_rows_and_the_supervised_ceiling():
    recipe = RECIPES["cfdcam_table1"]
    per_dataset = {d: [r for r in recipe.rows if r.group == d] for d in CFD_DATASETS}
    for dataset, rows in per_dataset.items():
        assert [r.method for r in rows if r.reproduced] == [
            "Grad-CAM (2016)",
            "ScoreCAM (2020)",
            "LayerCAM (2021)",
            "Cfd-CAM (ours)",
            "Opt. U-net (2021)",
        ]
        assert {r.method for r in rows if not r.reproduced} == {
            "Swin-MIL (2022)",
            "C&F (2020), UL",
            "C&F (2020), FSL",
        }
        unet = next(r for r in rows if r.method == "Opt. U-net (2021)")
        assert (unet.kind, unet.overrides[-1]) == ("FSL", "method=supervised")
        expected = ("data=tcga_lgg",) if dataset == "TCGA-LGG" else None
        for row in rows:
            if row.reproduced and expected:
                assert row.overrides[0] == expected[0]
    modalities = {r.overrides[0] for r in recipe.jobs() if r.dataset == "brats"}
    assert modalities == {"modality=t1", "modality=t1ce", "modality=t2", "modality=flair"}


def test_paper_values_are_typed_in_as_printed():
    t1 = PAPER["cfdcam_table1"]
    assert t1[("BraTS T2-FLAIR", "Cfd-CAM (ours)")]["dice"] == (0.733, 0.126)
    assert t1[("TCGA-LGG", "LayerCAM (2021)")]["hd95"] == (69.696, 42.493)
    assert PAPER["cfdcam_table2"][("BraTS T2", "Cfd-CAM (ms)")]["dice"] == (0.646, 0.142)
    assert PAPER["ltgrad_table1"][("", "S5")]["miou"] == 25.31
    assert PAPER["ltgrad_table4"][("", "LTGrad-CAM(l=5, δ=20)")] == {
        "miou": 35.37,
        "precision": 40.88,
        "recall": 72.42,
        "f1": 52.26,
    }
    # Rows shared by the VOC tables carry the same numbers.
    for method in ("Grad-CAM++", "Grad-CAM", "FullGrad"):
        assert PAPER["ltgrad_table2"][("", method)] == PAPER["ltgrad_table3"][("", method)]


def test_sweeps_cover_delta_0_to_90_for_three_methods():
    for name, split in (("ltgrad_fig4", "test"), ("ltgrad_fig5", "train")):
        recipe = RECIPES[name]
        assert split in recipe.title
        cams = {(r.overrides[0], r.overrides[1]) for r in recipe.rows}
        assert cams == {
            (f"cam={cam}", f"cam.options.delta={d}")
            for cam in ("ltgradcam", "ltlayercam", "ltfullgrad")
            for d in range(0, 100, 10)
        }
        assert all(r.demo for r in recipe.rows)  # the KSDD2 demo runs the whole sweep


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_names_a_reference_row_of_each_group(name):
    """The paired comparison needs the reference in every group of reproduced rows, and a
    headline (the first metric) where higher is better: "the reference wins" is Δ > 0."""
    recipe = RECIPES[name]
    groups = {row.group for row in recipe.jobs()}
    referenced = {row.group for row in recipe.jobs() if row.method == recipe.reference}
    assert referenced == groups
    assert "↓" not in recipe.metrics[0][1] and recipe.metrics[0][0] != "hd95"

"""The paired comparison against a recipe's reference row, on hand-made run folders: per-seed
differences and wins, and per image the Wilcoxon p-value and the bootstrap interval, checked
against scipy called directly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from experiments.paired import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    compare,
    render_paired,
)
from experiments.recipes import DEMO_GROUP, RECIPES
from experiments.tables import DONE, FAILED, Outcome, aggregate_seeds

IMAGES = [f"img{i}" for i in range(8)]


def _run(folder: Path, dice: list[float], kind: str = "per_image") -> Outcome:
    """A run folder with per_image.csv (the abnormal images `IMAGES` with `dice`, plus a
    normal image that the headline leaves out) and summary.json; its outcome."""
    folder.mkdir(parents=True)
    with (folder / "per_image.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "group", "label", "score", "gt_area", "pred_area", "dice"])
        for image, value in zip(IMAGES, dice, strict=True):
            writer.writerow([image, "abnormal", 1, 0.9, 10, 10, f"{value:.6g}"])
        writer.writerow(["normal0", "normal", 0, 0.1, 0, 0, "1"])
    mean = float(np.mean(dice))
    headline = {"dice": {"mean": mean, "std": float(np.std(dice))}}
    summary = {"headline": headline, "headline_metrics": kind}
    (folder / "summary.json").write_text(json.dumps(summary))
    return Outcome(DONE, headline, run_dir=str(folder))


REF = {
    42: [0.8, 0.7, 0.9, 0.6, 0.75, 0.85, 0.5, 0.65],
    43: [0.7, 0.7, 0.8, 0.6, 0.7, 0.8, 0.6, 0.6],
}
GRAD = {
    42: [0.5, 0.7, 0.6, 0.7, 0.55, 0.4, 0.45, 0.6],
    43: [0.8, 0.6, 0.9, 0.5, 0.7, 0.9, 0.7, 0.7],
}


def test_paired_numbers_match_scipy(tmp_path):
    recipe = RECIPES["demo_table1"]
    ref_key = next(r.key for r in recipe.rows if r.method == "Cfd-CAM (ours)")
    grad_key = next(r.key for r in recipe.rows if r.method == "Grad-CAM (2016)")
    score_key = next(r.key for r in recipe.rows if r.method == "ScoreCAM (2020)")
    outcomes = {
        ref_key: aggregate_seeds(
            [(s, _run(tmp_path / "ref" / str(s), REF[s])) for s in (42, 43)]
            + [(44, Outcome(DONE, {"dice": {"mean": 0.9, "std": 0.1}}, run_dir="unused"))]
        ),
        grad_key: aggregate_seeds(
            [(s, _run(tmp_path / "grad" / str(s), GRAD[s])) for s in (42, 43)]
            + [(44, Outcome(FAILED, reason="boom"))]
        ),
    }
    by_method = {p.row.method: p for p in compare(recipe, outcomes)}
    grad = by_method["Grad-CAM (2016)"]
    seed_diffs = [np.mean(REF[s]) - np.mean(GRAD[s]) for s in (42, 43)]
    assert grad.seed_differences == pytest.approx(seed_diffs)  # seed 44: only one finished
    assert grad.reference_wins == 1  # seed 42 yes (0.15), seed 43 no (-0.0375)
    expected_images = (np.subtract(REF[42], GRAD[42]) + np.subtract(REF[43], GRAD[43])) / 2
    np.testing.assert_allclose(grad.image_differences, expected_images)
    assert by_method["ScoreCAM (2020)"].seed_differences == ()  # never ran
    assert score_key not in outcomes

    p_value = stats.wilcoxon(expected_images).pvalue
    interval = stats.bootstrap(
        (expected_images,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    ).confidence_interval
    text = render_paired(recipe, outcomes, "fixture")
    mean, low = np.mean(seed_diffs), min(seed_diffs)
    line = (
        f"| {DEMO_GROUP} | Grad-CAM (2016) | Cfd-CAM (ours) | 2 | {mean:.3f} | {low:.3f} | 1/2 "
        f"| 8 | {p_value:.3g} | [{interval.low:.3f}, {interval.high:.3f}] |"
    )
    assert line in text.splitlines()
    assert f"| {DEMO_GROUP} | ScoreCAM (2020) | Cfd-CAM (ours) | 0 | – |" in text
    assert "Cfd-CAM (ours) | Cfd-CAM (ours)" not in text  # the reference is not compared
    assert text.startswith("# Cfd-CAM, Table 1 rows on the `make run` demo classifier: paired")


def test_split_level_headlines_pair_per_seed_only(tmp_path):
    recipe = RECIPES["ltgrad_table4"]
    outcomes = {}
    for key, values in (("ltgrad-cam-l-5-delta-20", (0.6, 0.5)), ("grad-cam", (0.4, 0.55))):
        seeds = []
        for seed, value in zip((42, 43), values, strict=True):
            folder = tmp_path / key / str(seed)
            folder.mkdir(parents=True)
            headline = {"miou": {"mean": value, "std": None}}
            summary = {"headline": headline, "headline_metrics": "confusion"}
            (folder / "summary.json").write_text(json.dumps(summary))
            seeds.append((seed, Outcome(DONE, headline, run_dir=str(folder))))
        outcomes[key] = aggregate_seeds(seeds)
    text = render_paired(recipe, outcomes)
    assert (
        "| Grad-CAM | LTGrad-CAM(l=5, δ=20) | 2 | 7.50 | -5.00 | 1/2 | split-level | – | – |"
        in (text)
    )
    assert "per-image pairing is not defined: per-seed pairing only" in text


def test_nothing_to_pair_writes_nothing():
    assert render_paired(RECIPES["ltgrad_table4"], {}) is None


def test_a_run_folder_deleted_since_it_finished_drops_the_per_image_pairing(tmp_path, caplog):
    """A reused run's folder removed while the recipe ran: the per-seed pairing stays, the
    per-image one is skipped with a warning naming the file, and the table is still written."""
    recipe = RECIPES["demo_table1"]
    ref_key = next(r.key for r in recipe.rows if r.method == "Cfd-CAM (ours)")
    grad_key = next(r.key for r in recipe.rows if r.method == "Grad-CAM (2016)")
    outcomes = {
        ref_key: aggregate_seeds([(42, _run(tmp_path / "ref", REF[42]))]),
        grad_key: aggregate_seeds([(42, _run(tmp_path / "grad", GRAD[42]))]),
    }
    (tmp_path / "grad" / "per_image.csv").unlink()
    grad = {p.row.method: p for p in compare(recipe, outcomes)}["Grad-CAM (2016)"]
    assert grad.seed_differences == pytest.approx([np.mean(REF[42]) - np.mean(GRAD[42])])
    assert grad.image_differences is None
    assert "per_image.csv" in caplog.text
    assert render_paired(recipe, outcomes, "fixture") is not None

"""δ chosen on the train split, reported on the test split (run_pipeline replaced by a fake
whose train mIoU peaks at δ = 30 and whose test numbers tell the split apart)."""

from __future__ import annotations

import dataclasses

import pytest

import src.pipeline.stages as stages
from experiments.recipes import RECIPES
from experiments.select_delta import best_deltas, row_delta, run_selection
from experiments.tables import DONE, Outcome
from tests.helpers.fake_runs import finished_run


@pytest.fixture
def fake_pipeline(monkeypatch):
    calls: list[tuple[str, int]] = []

    def run(cfg):
        calls.append((cfg.eval.split, cfg.cam.options.delta))
        peak = 1 - abs(cfg.cam.options.delta - 30) / 100  # train: best at delta 30
        value = peak if cfg.eval.split == "train" else 0.123
        return finished_run(cfg, value)

    monkeypatch.setattr(stages, "run_pipeline", run)
    return calls


@pytest.mark.slow
def test_selection_runs_the_train_sweep_then_the_chosen_delta_on_test(settings, fake_pipeline):
    only = dataclasses.replace(settings, only=("ltgrad-cam-*",))
    outcomes, written = run_selection(only)
    train = [delta for split, delta in fake_pipeline if split == "train"]
    assert sorted(train) == list(range(0, 100, 10))
    assert [call for call in fake_pipeline if call[0] == "test"] == [("test", 30)]
    table = (settings.results_dir / "ltgrad_delta_select.md").read_text()
    assert "| LTGrad-CAM | 30 | 100.00 | 12.30 |" in table
    csv_text = (settings.results_dir / "ltgrad_delta_select.csv").read_text()
    assert "LTGrad-CAM,30,1.0,0.123" in csv_text


def _done(value: float) -> Outcome:
    return Outcome(DONE, {"miou": {"mean": value, "std": None}})


def test_ties_go_to_the_smaller_delta_and_failed_rows_are_skipped():
    recipe = RECIPES["ltgrad_fig5"]
    rows = {(row.group, row_delta(row)): row for row in recipe.jobs()}
    outcomes = {
        rows["LTGrad-CAM", 50].key: _done(0.6),
        rows["LTGrad-CAM", 20].key: _done(0.6),
        rows["LTGrad-CAM", 10].key: _done(0.5),
        rows["LTFullGrad", 40].key: Outcome("failed", reason="crash"),
        rows["LTFullGrad", 70].key: _done(0.2),
    }
    chosen = best_deltas(recipe, outcomes)
    assert {m: (row_delta(r), v) for m, (r, v) in chosen.items()} == {
        "LTGrad-CAM": (20, 0.6),
        "LTFullGrad": (70, 0.2),
    }

"""`--seeds N`: every row once per seed in its own folder with its own `seed`, tables of the
mean ± std over seeds, seed 0 = the one-seed run (reused, tables byte-identical), the seed
noise of a sweep and its banded plot (run_pipeline replaced by a fake whose mIoU is set by
the seed and δ)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

import src.pipeline.stages as stages
from experiments.engine import plan, run_recipe
from experiments.recipes import RECIPES
from experiments.run_recipe import build_parser, settings_for
from experiments.select_delta import best_deltas, row_delta
from experiments.tables import DONE, Outcome, aggregate_seeds
from src.evaluation.sweep_report import collect, seed_points
from tests.helpers.fake_runs import finished_run


@pytest.fixture
def fake_pipeline(monkeypatch):
    """mIoU = (seed - 40) / 10 - delta / 1000: 0.2, 0.3, 0.4 for seeds 42, 43, 44 at δ=0."""
    calls: list[tuple[str, int]] = []

    def run(cfg):
        calls.append((cfg.paths.output_dir, cfg.seed))
        delta = cfg.cam.options.get("delta") or 0
        return finished_run(cfg, (cfg.seed - 40) / 10 - delta / 1000)

    monkeypatch.setattr(stages, "run_pipeline", run)
    return calls


def test_cli_seeds_default_to_one():
    args = build_parser().parse_args(["ltgrad_table2"])
    assert settings_for(args, "voc").seeds == 1
    args = build_parser().parse_args(["demo_table1", "--seeds", "3"])
    assert settings_for(args, "brats").seeds == 3


def test_each_seed_has_its_folder_and_seed_override(settings):
    jobs, _ = plan(RECIPES["ltgrad_table2"], dataclasses.replace(settings, seeds=3))
    grad_cam = [job for job in jobs if job.row.key == "grad-cam"]
    root = settings.runs_dir / "ltgrad_table2" / "grad-cam"
    assert [job.run_dir for job in grad_cam] == [root, root / "seed1", root / "seed2"]
    assert [job.seed for job in grad_cam] == [42, 43, 44]  # the config's seed + k
    one_seed, _ = plan(RECIPES["ltgrad_table2"], settings)
    # Seed 0 is the one-seed job (same overrides, same folder): its result is reused.
    assert grad_cam[0].overrides == one_seed[1].overrides
    assert grad_cam[0].run_dir == one_seed[1].run_dir
    assert not any(o.startswith("seed=") for o in grad_cam[0].overrides)
    assert grad_cam[1].overrides[-1] == "seed=43" and grad_cam[2].overrides[-1] == "seed=44"
    # The base is read from the composed config: an extra override moves it.
    moved = dataclasses.replace(settings, seeds=2, extra=(*settings.extra, "seed=7"))
    jobs, _ = plan(RECIPES["ltgrad_table2"], moved)
    assert [job.seed for job in jobs if job.row.key == "grad-cam"] == [7, 8]


def test_seeds_train_apart_and_one_seed_tables_stay_the_same(settings, fake_pipeline):
    recipe = RECIPES["ltgrad_table2"]
    one = dataclasses.replace(settings, only=("grad-cam", "fullgrad"))
    run_recipe(recipe, one)
    run_recipe(recipe, one)  # reused: the CSV says so, as it will below
    markdown = (settings.results_dir / "ltgrad_table2.md").read_bytes()
    table_csv = (settings.results_dir / "ltgrad_table2.csv").read_bytes()
    assert {seed for _, seed in fake_pipeline} == {42}

    fake_pipeline.clear()
    outcomes, written = run_recipe(recipe, dataclasses.replace(one, seeds=3))
    # Seed 0 is reused; seeds 1 and 2 of both rows run in their own folders.
    assert sorted(seed for _, seed in fake_pipeline) == [43, 43, 44, 44]
    assert len({folder for folder, _ in fake_pipeline}) == 4
    recorded = json.loads(
        (settings.runs_dir / "ltgrad_table2" / "grad-cam" / "seed2" / "job.json").read_text()
    )
    assert recorded["overrides"][-1] == "seed=44"
    stats = outcomes["grad-cam"].headline["miou"]
    assert stats["mean"] == pytest.approx(0.3) and stats["n"] == 3
    assert stats["std"] == pytest.approx(math.sqrt(0.02 / 3))  # population std of .2 .3 .4
    # Its tables have their own names: the one-seed tables are left as they were.
    assert written[0] == settings.results_dir / "ltgrad_table2_seeds3.md"
    assert (settings.results_dir / "ltgrad_table2.md").read_bytes() == markdown
    table = written[0].read_text()
    assert "| Grad-CAM | 30.00 ± 8.16 | 25.31 | n/a |" in table
    assert "3 seeds per row" in table and "population std" in table
    assert "| LTGrad-CAM(l=1, δ=0) | not run | 26.23 |" in table
    lines = written[1].read_text().splitlines()
    assert lines[0].endswith(",log,seed,n_seeds")
    grad_cam = [line for line in lines if ",Grad-CAM,miou," in line]
    assert len(grad_cam) == 4  # the aggregate, then one line per seed
    assert grad_cam[0].endswith(",all,3") and ",0.3," in grad_cam[0]
    assert [line.split(",")[-2] for line in grad_cam[1:]] == ["42", "43", "44"]

    # Back to one seed: nothing runs, the tables are byte for byte the first ones.
    fake_pipeline.clear()
    run_recipe(recipe, one)
    assert not fake_pipeline
    assert (settings.results_dir / "ltgrad_table2.md").read_bytes() == markdown
    assert (settings.results_dir / "ltgrad_table2.csv").read_bytes() == table_csv


def test_launched_seeds_run_in_their_folders(settings, fake_pipeline):
    recipe = RECIPES["ltgrad_fig4"]
    launched = dataclasses.replace(
        settings, only=("ltgrad-cam-delta-0",), launcher="basic", seeds=2
    )
    outcomes, _ = run_recipe(recipe, launched)
    root = settings.runs_dir / "ltgrad_fig4" / "ltgrad-cam-delta-0"
    assert sorted(folder for folder, _ in fake_pipeline) == [str(root), str(root / "seed1")]
    assert [o.status for _, o in outcomes["ltgrad-cam-delta-0"].seeds] == [DONE, DONE]


def test_sweep_states_the_seed_noise_and_plots_bands(settings, fake_pipeline):
    recipe = RECIPES["ltgrad_fig4"]
    seeds = dataclasses.replace(
        settings, only=("ltgrad-cam-delta-0", "ltgrad-cam-delta-10"), seeds=3
    )
    _, written = run_recipe(recipe, seeds)
    lines = written[0].read_text().splitlines()
    assert "| 0 | 30.00 ± 8.16 | not run | not run |" in lines
    assert "| 10 | 29.00 ± 8.16 | not run | not run |" in lines
    # The noise (8.16 at each δ) dwarfs the change over δ (1 point).
    assert "| seed std (mean over δ) | 8.16 | – | – |" in lines
    assert "| range over δ (max − min of the mean) | 1.00 | – | – |" in lines
    plot = settings.results_dir / "ltgrad_fig4_seeds3_sweep" / "sweep_miou_vs_delta.png"
    assert plot in written and plot.stat().st_size > 0
    rows = collect(settings.runs_dir / "ltgrad_fig4")
    points = seed_points(rows, "miou")
    assert [(p["delta"], p["seeds"]) for p in points] == [(0, 3), (10, 3)]
    assert points[1]["miou_mean"] == pytest.approx(0.29)
    assert points[1]["miou_std"] == pytest.approx(math.sqrt(0.02 / 3))
    report = (settings.results_dir / "ltgrad_fig4_seeds3_sweep" / "sweep_report.md").read_text()
    assert "| method | delta | seed | miou | f1 | job |" in report
    assert "| ltgradcam | 10 | 44 | 0.3900 | 0.3900 | ltgrad-cam-delta-10/seed2 |" in report


def test_seed_points_leave_jobs_that_are_not_seeds_alone():
    rows = [
        {"delta": 0, "seed": 42, "miou_mean": 0.2},
        {"delta": 0, "seed": 42, "miou_mean": 0.4},  # same seed: another option, not a seed
    ]
    assert seed_points(rows, "miou") is None
    assert seed_points(rows[:1], "miou") is None


def _done(value: float) -> Outcome:
    return Outcome(DONE, {"miou": {"mean": value, "std": None}})


def test_delta_is_chosen_on_the_mean_train_curve():
    recipe = RECIPES["ltgrad_fig5"]
    rows = {(row.group, row_delta(row)): row for row in recipe.jobs()}
    # Seed 42 alone would choose δ=10; the mean over the seeds is higher at δ=20.
    outcomes = {
        rows["LTGrad-CAM", 10].key: aggregate_seeds([(42, _done(0.6)), (43, _done(0.2))]),
        rows["LTGrad-CAM", 20].key: aggregate_seeds([(42, _done(0.5)), (43, _done(0.5))]),
    }
    chosen = best_deltas(recipe, outcomes)
    assert row_delta(chosen["LTGrad-CAM"][0]) == 20
    assert chosen["LTGrad-CAM"][1] == pytest.approx(0.5)

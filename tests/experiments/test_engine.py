"""The engine runs each row through run_pipeline, survives a failing row, reuses finished
jobs and writes the tables (run_pipeline replaced by a fake that writes real result files)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from omegaconf import OmegaConf

import src.pipeline.stages as stages
from experiments.engine import compose_job_config, run_recipe
from experiments.recipes import RECIPES
from src.pipeline.store import fingerprint
from src.pipeline.upgrades import composed_before
from tests.helpers.fake_runs import finished_run


@pytest.fixture
def fake_pipeline(monkeypatch):
    """run_pipeline stand-in: mIoU = (100 - delta) / 200 per job; ltfullgrad at delta 90 fails."""
    calls: list[str] = []

    def run(cfg):
        calls.append(f"{cfg.cam.name}@{cfg.cam.options.delta}")
        if cfg.cam.name == "ltfullgrad" and cfg.cam.options.delta == 90:
            raise RuntimeError("simulated crash")
        value = (100 - cfg.cam.options.delta) / 200
        return finished_run(cfg, value)

    monkeypatch.setattr(stages, "run_pipeline", run)
    return calls


@pytest.mark.slow
def test_failed_row_is_reported_and_finished_rows_are_reused(settings, fake_pipeline):
    recipe = RECIPES["ltgrad_fig4"]
    only = dataclasses.replace(settings, only=("ltfullgrad-*",))
    outcomes, written = run_recipe(recipe, only)
    assert len(fake_pipeline) == 10
    assert outcomes["ltfullgrad-delta-90"].status == "failed"
    assert "simulated crash" in outcomes["ltfullgrad-delta-90"].reason
    assert outcomes["ltfullgrad-delta-20"].headline["miou"]["mean"] == pytest.approx(0.4)
    assert outcomes["ltgrad-cam-delta-0"].status == "not run"

    table = (settings.results_dir / "ltgrad_fig4.md").read_text()
    assert "| 20 | not run | not run | 40.00 |" in table
    assert "| 90 | not run | not run | failed: RuntimeError: simulated crash |" in table
    plot = settings.results_dir / "ltgrad_fig4_sweep" / "sweep_miou_vs_delta.png"
    assert plot in written and plot.stat().st_size > 0
    report = (settings.results_dir / "ltgrad_fig4_sweep" / "sweep_report.csv").read_text()
    assert report.count("ltfullgrad,") == 9

    # Second call: the nine finished jobs are reused, the failed one and the new one run.
    fake_pipeline.clear()
    more = dataclasses.replace(settings, only=("ltfullgrad-*", "ltgrad-cam-delta-0"))
    outcomes, _ = run_recipe(recipe, more)
    assert sorted(fake_pipeline) == ["ltfullgrad@90", "ltgradcam@0"]
    assert outcomes["ltfullgrad-delta-20"].reason == "reused"
    assert outcomes["ltgrad-cam-delta-0"].headline["miou"]["mean"] == pytest.approx(0.5)

    # --rerun repeats the selected rows; the table keeps the other finished rows.
    fake_pipeline.clear()
    again = dataclasses.replace(settings, only=("ltfullgrad-delta-20",), rerun=True)
    outcomes, _ = run_recipe(recipe, again)
    assert fake_pipeline == ["ltfullgrad@20"]
    assert outcomes["ltfullgrad-delta-10"].reason == "reused"
    assert outcomes["ltgrad-cam-delta-0"].status == "done"

    # Changed overrides (another extra option) invalidate the finished jobs.
    fake_pipeline.clear()
    changed = dataclasses.replace(settings, extra=(*settings.extra, "eval.batch_size=3"))
    run_recipe(recipe, dataclasses.replace(changed, only=("ltgrad-cam-delta-10",)))
    assert fake_pipeline == ["ltgradcam@10"]


def test_demo_tables_do_not_overwrite_real_results(settings, fake_pipeline):
    recipe = RECIPES["ltgrad_table2"]
    demo = dataclasses.replace(settings, demo=True, plumbing=True, only=("fullgrad",))
    # No demo data is generated for rows that do not run; the fake never reads data.
    outcomes, written = run_recipe(recipe, dataclasses.replace(demo, only=("none",)))
    assert not fake_pipeline
    assert written == [
        settings.results_dir / "plumbing" / "ltgrad_table2.md",
        settings.results_dir / "plumbing" / "ltgrad_table2.csv",
    ]
    assert "PLUMBING run on generated data" in written[0].read_text()
    assert not (settings.results_dir / "ltgrad_table2.md").exists()
    assert {(o.status, o.reason) for o in outcomes.values()} == {("not run", "")}


def test_dry_run_prints_commands_and_runs_nothing(settings, fake_pipeline, capsys):
    outcomes, written = run_recipe(RECIPES["ltgrad_table1"], settings, dry_run=True)
    assert not fake_pipeline and not written
    printed = capsys.readouterr().out
    assert printed.count("python -m src.run experiment=ltgrad_table1") == 7
    assert "'cam.layers=[features.4]'" in printed


def test_a_finished_job_whose_config_files_changed_runs_again(settings, fake_pipeline, monkeypatch):
    """Same overrides, another composed config (a budget edited in an experiment file): the
    old result must not stand in for the new config; an old record without a digest neither."""
    import experiments.engine as engine

    recipe = RECIPES["ltgrad_table2"]
    one = dataclasses.replace(settings, only=("ltfullgrad-delta-0",))
    run_recipe(recipe, one)
    assert run_recipe(recipe, one)[0]["ltfullgrad-delta-0"].reason == "reused"

    compose = engine.compose_config

    def edited(*args, **kwargs):
        cfg = compose(*args, **kwargs)
        cfg.finetune.epochs = cfg.finetune.epochs + 1  # as if the file said so
        return cfg

    monkeypatch.setattr(engine, "compose_config", edited)
    fake_pipeline.clear()
    assert run_recipe(recipe, one)[0]["ltfullgrad-delta-0"].reason == ""
    assert fake_pipeline == ["ltfullgrad@0"]
    monkeypatch.setattr(engine, "compose_config", compose)
    job_file = settings.runs_dir / "ltgrad_table2" / "ltfullgrad-delta-0" / "job.json"
    record = json.loads(job_file.read_text())
    del record["config"]
    job_file.write_text(json.dumps(record))
    fake_pipeline.clear()
    run_recipe(recipe, one)
    assert fake_pipeline == ["ltfullgrad@0"]


def test_a_job_another_recipe_finished_with_the_same_config_is_not_run_again(settings, monkeypatch):
    """Table 2's multi-scale Cfd-CAM row is Table 1's Cfd-CAM row under another task name:
    it shows that run's result; the single-scale row, a different config, runs."""
    calls: list[tuple[str, tuple]] = []

    def run(cfg):
        calls.append((cfg.task_name, tuple(cfg.cam.options.scales)))
        return finished_run(cfg, 0.5)

    monkeypatch.setattr(stages, "run_pipeline", run)
    table1, table2 = RECIPES["cfdcam_table1"], RECIPES["cfdcam_table2"]
    run_recipe(table1, dataclasses.replace(settings, only=("brats-t2-flair-cfd-cam-ours",)))
    assert calls == [("cfdcam_table1", (1, 2))]

    calls.clear()
    outcomes, _ = run_recipe(
        table2, dataclasses.replace(settings, only=("brats-t2-flair-cfd-cam-*",))
    )
    assert calls == [("cfdcam_table2", (1,))]
    multi = outcomes["brats-t2-flair-cfd-cam-ms"]
    assert multi.reason == "reused from cfdcam_table1/brats-t2-flair-cfd-cam-ours"
    assert multi.run_dir == str(settings.runs_dir / "cfdcam_table1" / "brats-t2-flair-cfd-cam-ours")
    assert outcomes["brats-t2-flair-cfd-cam-ss"].reason == ""


def test_a_record_from_before_result_digests_gains_one_when_reused(settings, monkeypatch):
    """A finished Table 1 row whose `job.json` predates result digests is reused by Table 1
    itself and then by Table 2's identical row, instead of Table 2 evaluating it again."""
    calls: list[str] = []

    def run(cfg):
        calls.append(cfg.task_name)
        return finished_run(cfg, 0.5)

    monkeypatch.setattr(stages, "run_pipeline", run)
    table1, table2 = RECIPES["cfdcam_table1"], RECIPES["cfdcam_table2"]
    run_recipe(table1, dataclasses.replace(settings, only=("brats-t2-flair-cfd-cam-ours",)))
    job_file = settings.runs_dir / "cfdcam_table1" / "brats-t2-flair-cfd-cam-ours" / "job.json"
    record = json.loads(job_file.read_text())
    digest = record.pop("result")
    job_file.write_text(json.dumps(record))

    outcomes, _ = run_recipe(
        table1, dataclasses.replace(settings, only=("brats-t2-flair-cfd-cam-ours",))
    )
    assert outcomes["brats-t2-flair-cfd-cam-ours"].reason == "reused"
    assert json.loads(job_file.read_text())["result"] == digest

    outcomes, _ = run_recipe(
        table2, dataclasses.replace(settings, only=("brats-t2-flair-cfd-cam-ms",))
    )
    assert calls == ["cfdcam_table1"]
    assert outcomes["brats-t2-flair-cfd-cam-ms"].reason.startswith("reused from cfdcam_table1")


def test_a_record_from_before_an_added_option_is_reused_and_gains_todays_digests(
    settings, monkeypatch
):
    """A row finished before the config files gained `trainer.channels_last` (at false),
    `data.persistent_workers: null` (false before) and the later additions recorded the
    digests of the config of its day; it is reused, not run again, and its record then holds
    today's digests."""
    calls: list[str] = []

    def run(cfg):
        calls.append(cfg.task_name)
        return finished_run(cfg, 0.5)

    monkeypatch.setattr(stages, "run_pipeline", run)
    table1 = dataclasses.replace(settings, only=("brats-t2-flair-cfd-cam-ours",))
    run_recipe(RECIPES["cfdcam_table1"], table1)
    run_dir = settings.runs_dir / "cfdcam_table1" / "brats-t2-flair-cfd-cam-ours"
    record = json.loads((run_dir / "job.json").read_text())
    cfg = compose_job_config(record["overrides"], run_dir, settings.project_root)
    today = OmegaConf.to_container(cfg, resolve=False)
    before = composed_before(today)[-2]  # all but the oldest change taken back
    assert "channels_last" not in before["trainer"] and today["trainer"]["channels_last"] is False
    assert before["data"]["persistent_workers"] is False
    old = {**record, "config": fingerprint(before), "result": "from an older version"}
    (run_dir / "job.json").write_text(json.dumps(old))

    outcomes, _ = run_recipe(RECIPES["cfdcam_table1"], table1)
    assert calls == ["cfdcam_table1"]
    assert outcomes["brats-t2-flair-cfd-cam-ours"].reason == "reused"
    assert json.loads((run_dir / "job.json").read_text()) == record


def test_an_added_option_set_by_hand_is_not_taken_back():
    """Only an added option at the value it was added at counts as absent: channels_last
    true, persistent workers false or 0 (not None) keep the config apart from older ones."""
    today = {
        "trainer": {"channels_last": True, "precision": "32-true"},
        "data": {"persistent_workers": 0},
        "selftrain": {"source": "cam", "limit": 24, "positive_fraction": 0.5},
    }
    for form in composed_before(today):
        assert form == today
    default = {"trainer": {"channels_last": False}, "data": {"persistent_workers": None}}
    assert composed_before(default)[-1] == {"trainer": {}, "data": {"persistent_workers": False}}
    assert default["trainer"] == {"channels_last": False}  # the input is left as it was


def test_zeros_padding_counts_as_the_config_before_it_existed():
    """`backbone.net.padding_mode` was added at `zeros`: a finished job's digest, taken
    without it, is still known; `reflect` keeps the job apart."""
    today = {"backbone": {"net": {"arch": "vgg16", "padding_mode": "zeros"}}}
    assert composed_before(today)[0] == {"backbone": {"net": {"arch": "vgg16"}}}
    reflect = {"backbone": {"net": {"arch": "vgg16", "padding_mode": "reflect"}}}
    assert all(form == reflect for form in composed_before(reflect))


def test_an_early_stop_that_is_off_counts_as_the_config_before_it_existed():
    """`finetune.patience` was added at null: a finished job's digest, taken without it, is
    still known; a patience set (the demo's 2) keeps the job apart from the older ones."""
    today = {"finetune": {"epochs": 3, "patience": None}}
    assert {"finetune": {"epochs": 3}} in composed_before(today)
    stopped = {"finetune": {"epochs": 10, "patience": 2}}
    assert all(form == stopped for form in composed_before(stopped))

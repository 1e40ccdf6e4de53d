"""Rows handed to a Hydra launcher: run folders, failures with their logs, `--collect`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import src.pipeline.stages as stages
from experiments.engine import collect_recipe, run_recipe
from experiments.launch import FAILED_FILE, collect, launch
from experiments.recipes import RECIPES
from experiments.run_recipe import main
from tests.helpers.fake_runs import finished_run


@pytest.fixture
def fake_pipeline(monkeypatch):
    """run_pipeline stand-in (in this process: the basic launcher runs jobs here): mIoU =
    (100 - delta) / 200; delta 90 fails."""
    calls: list[str] = []

    def run(cfg):
        calls.append(f"{cfg.cam.name}@{cfg.cam.options.delta}")
        if cfg.cam.options.delta == 90:
            raise RuntimeError("simulated crash")
        value = (100 - cfg.cam.options.delta) / 200
        return finished_run(cfg, value)

    monkeypatch.setattr(stages, "run_pipeline", run)
    return calls


def test_launched_rows_are_collected_with_failures_and_logs(settings, fake_pipeline):
    recipe = RECIPES["ltgrad_fig4"]
    only = dataclasses.replace(
        settings, only=("ltfullgrad-delta-80", "ltfullgrad-delta-90"), launcher="basic"
    )
    outcomes, written = run_recipe(recipe, only)
    assert sorted(fake_pipeline) == ["ltfullgrad@80", "ltfullgrad@90"]
    done, failed = outcomes["ltfullgrad-delta-80"], outcomes["ltfullgrad-delta-90"]
    assert done.status == "done" and done.headline["miou"]["mean"] == pytest.approx(0.1)
    assert Path(done.run_dir) == settings.runs_dir / "ltgrad_fig4" / "ltfullgrad-delta-80"
    assert failed.status == "failed" and "RuntimeError: simulated crash" in failed.reason
    assert Path(failed.log).is_file() and "simulated crash" in Path(failed.log).read_text()
    table = written[0].read_text()
    assert f"- `ltfullgrad-delta-90`: {failed.log}" in table
    assert outcomes["ltgrad-cam-delta-0"].status == "not run"

    # --collect afterwards reads the same outcomes from the run folders, running nothing.
    fake_pipeline.clear()
    collected, _ = collect_recipe(recipe, only)
    assert not fake_pipeline
    assert collected["ltfullgrad-delta-80"].headline == done.headline
    assert collected["ltfullgrad-delta-90"].reason == failed.reason
    # A launched job's record matches its overrides: the in-process engine reuses it.
    in_process = dataclasses.replace(only, launcher=None)
    again, _ = run_recipe(recipe, in_process)
    assert again["ltfullgrad-delta-80"].reason == "reused"
    assert fake_pipeline == ["ltfullgrad@90"]
    # Nothing left to launch: the launcher is not started, the table still written.
    fake_pipeline.clear()
    done_only = dataclasses.replace(only, only=("ltfullgrad-delta-80",))
    reused, written = run_recipe(recipe, done_only)
    assert not fake_pipeline and reused["ltfullgrad-delta-80"].reason == "reused"
    assert written[0].is_file()


def test_a_job_that_left_only_its_log_is_failed_and_one_never_started_is_not_run(
    settings, fake_pipeline
):
    from experiments.engine import plan

    jobs, _ = plan(RECIPES["ltgrad_fig4"], settings)
    killed, pending = jobs[0], jobs[1]
    killed.run_dir.mkdir(parents=True)
    (killed.run_dir / "recipe_job.log").write_text("epoch 3 ...")
    outcomes = collect([killed, pending])
    assert outcomes[killed.row.key].status == "failed"
    assert "killed or is still running" in outcomes[killed.row.key].reason
    assert outcomes[pending.row.key].status == "not run"
    assert not (killed.run_dir / FAILED_FILE).exists()


def test_unknown_launcher_and_misplaced_run_folders_are_refused(settings, tmp_path):
    from experiments.engine import plan

    jobs, _ = plan(RECIPES["ltgrad_fig4"], settings)
    with pytest.raises(ValueError, match="unknown launcher 'pbs'"):
        launch(jobs[:1], tmp_path, "pbs")
    with pytest.raises(ValueError, match="not in"):
        launch(jobs[:1], tmp_path / "elsewhere", "basic")


def test_launcher_options_need_a_launcher(capsys):
    with pytest.raises(SystemExit):
        main(["ltgrad_fig4", "--launcher-option", "partition=gpu"])
    assert "--launcher-option needs --launcher" in capsys.readouterr().err


@pytest.mark.slow
def test_submitit_local_runs_rows_in_processes_of_their_own(settings):
    """The real launcher path: pickled task, child processes importing this checkout. The
    settings name a VGG16 weights file that does not exist, so each job fails at once."""
    recipe = RECIPES["ltgrad_fig4"]
    local = dataclasses.replace(
        settings,
        only=("ltgrad-cam-delta-0", "ltgrad-cam-delta-10"),
        launcher="submitit_local",
        launcher_options=("timeout_min=10",),
    )
    outcomes, _ = run_recipe(recipe, local)
    for key in local.only:
        outcome = outcomes[key]
        assert outcome.status == "failed", outcome
        assert "weights file not found" in outcome.reason and "vgg16.pth" in outcome.reason
        assert Path(outcome.log).is_file()
    submitit = settings.runs_dir / "ltgrad_fig4" / ".submitit"
    assert len([p for p in submitit.iterdir() if p.name.isdigit()]) == 2  # a folder per job

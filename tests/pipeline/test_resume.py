"""`resume=<run>`: the command line that finishes a run, and the checks before Lightning resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.pipeline.config import ConfigError
from src.pipeline.resume import (
    KEY_FILE,
    RunComplete,
    record_training_key,
    resume_checkpoint,
    resumed_arguments,
)
from tests.helpers.files import snapshot
from tests.helpers.processes import REPO, TIMEOUT

STARTED_WITH = ["reuse_classifier=false", "finetune.epochs=4", "cam=gradcam"]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run folder as Hydra leaves it, started with STARTED_WITH."""
    folder = tmp_path / "outputs" / "run"
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(STARTED_WITH), folder / ".hydra" / "overrides.yaml")
    return folder


def test_without_resume_the_command_line_is_unchanged():
    arguments = ["--multirun", "cam=gradcam", "cam.options.delta=0,10", "resume=null"]
    assert resumed_arguments(arguments) == arguments


def test_the_run_settings_and_folder_are_restored(run):
    assert resumed_arguments([f"resume={run}"]) == [
        *STARTED_WITH,
        f"resume={run}",
        f"hydra.run.dir={run}",
    ]


def test_a_relative_folder_is_made_absolute(run, monkeypatch):
    monkeypatch.chdir(run.parent.parent)
    arguments = resumed_arguments(["resume=outputs/run"])
    assert arguments[-2:] == [f"resume={run}", f"hydra.run.dir={run}"]


def test_repeated_and_new_settings_are_kept_and_flags_pass_through(run):
    arguments = resumed_arguments(
        ["--cfg", "job", "threads=1", "cam=gradcam", f"resume={run}", "finetune.epochs=4"]
    )
    assert arguments == [
        "--cfg",
        "job",
        *STARTED_WITH,
        "threads=1",
        f"resume={run}",
        f"hydra.run.dir={run}",
    ]


@pytest.mark.parametrize(
    "contradiction",
    ["cam=cfdcam", "finetune.epochs=5", "reuse_classifier=true", "+finetune.epochs=3"],
)
def test_a_changed_setting_is_refused_naming_both_values(run, contradiction):
    key, value = contradiction.lstrip("+").split("=")
    before = next(s for s in STARTED_WITH if s.startswith(f"{key}="))
    with pytest.raises(ConfigError) as err:
        resumed_arguments([f"resume={run}", contradiction])
    message = str(err.value)
    assert "'resume'" in message and before in message and contradiction in message
    assert "\n" not in message


def test_the_same_value_spelt_otherwise_is_no_contradiction(run):
    arguments = resumed_arguments([f"resume={run}", "cam='gradcam'", "+finetune.epochs=4"])
    assert arguments == [*STARTED_WITH, f"resume={run}", f"hydra.run.dir={run}"]


def test_a_resumed_resume_keeps_its_folder(run):
    """Hydra saves the merged overrides, `resume` included: resuming again still works."""
    first = resumed_arguments([f"resume={run}"])
    saved = [a for a in first if not a.startswith("hydra.")]
    OmegaConf.save(OmegaConf.create(saved), run / ".hydra" / "overrides.yaml")
    assert resumed_arguments([f"resume={run}"]) == first


def test_lightning_ddp_children_get_the_same_command(run):
    """Lightning restarts DDP ranks with the parent's arguments plus a quoted run folder."""
    first = resumed_arguments([f"resume={run}"])
    saved = [a for a in first if not a.startswith("hydra.")]
    OmegaConf.save(OmegaConf.create(saved), run / ".hydra" / "overrides.yaml")
    child = [*first, f'hydra.run.dir="{run}"', "hydra.job.name=train_ddp_process_1"]
    assert resumed_arguments(child) == [
        *first[:-2],
        "hydra.job.name=train_ddp_process_1",
        *first[-2:],
    ]


def test_another_run_folder_or_multirun_is_refused(run, tmp_path):
    with pytest.raises(ConfigError, match="hydra.run.dir="):
        resumed_arguments([f"resume={run}", f"hydra.run.dir={tmp_path / 'elsewhere'}"])
    with pytest.raises(ConfigError, match="multirun"):
        resumed_arguments([f"resume={run}", "-m"])


def test_a_folder_that_is_no_run_is_named(tmp_path, run):
    with pytest.raises(ConfigError, match="missing.*not a folder"):
        resumed_arguments([f"resume={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match=r"\.hydra/overrides\.yaml not found"):
        resumed_arguments([f"resume={tmp_path}"])
    (run / ".hydra" / "overrides.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match="not a list of overrides"):
        resumed_arguments([f"resume={run}"])


def test_a_finished_run_is_said_complete_and_left_alone(run):
    """A finished run is not re-evaluated: that rewrote its results and dropped its logs."""
    (run / "config.yaml").write_text("stage: all\n")
    (run / "csv" / "finetune").mkdir(parents=True)
    (run / "csv" / "finetune" / "metrics.csv").write_text("epoch\n0\n")
    before = snapshot(run)
    with pytest.raises(RunComplete, match="is complete"):
        resumed_arguments([f"resume={run}"])
    result = subprocess.run(
        [sys.executable, "-m", "src.run", f"resume={run}"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "is complete" in result.stdout and "nothing changed" in result.stdout
    assert snapshot(run) == before


# --- inside the run: which checkpoint Lightning continues from -------------------------------


@pytest.fixture
def stage_folder(make_config, tmp_path):
    """A run folder whose finetune stage was interrupted: last.ckpt and the recorded key."""
    out = tmp_path / "run"
    checkpoints = out / "checkpoints" / "finetune"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    data = ["data=brats", f"data.root={tmp_path / 'data'}"]
    record_training_key(make_config(*data, output_dir=out), "finetune", checkpoints)
    return {"out": out, "checkpoints": checkpoints, "data": data}


def test_the_last_checkpoint_of_the_same_training_is_resumed(make_config, stage_folder):
    out, checkpoints = stage_folder["out"], stage_folder["checkpoints"]
    cfg = make_config(*stage_folder["data"], f"resume={out}", "threads=1", output_dir=out)
    assert resume_checkpoint(cfg, "finetune", checkpoints) == str(checkpoints / "last.ckpt")
    assert resume_checkpoint(cfg, "pretrain", out / "checkpoints" / "pretrain") is None
    cfg = make_config(*stage_folder["data"], output_dir=out)
    assert resume_checkpoint(cfg, "finetune", checkpoints) is None


def test_a_checkpoint_of_other_training_settings_is_refused(make_config, stage_folder):
    out, checkpoints = stage_folder["out"], stage_folder["checkpoints"]
    cfg = make_config(*stage_folder["data"], f"resume={out}", "finetune.epochs=7", output_dir=out)
    with pytest.raises(ConfigError, match=r"finetune\.epochs.*key\.json"):
        resume_checkpoint(cfg, "finetune", checkpoints)
    recorded = json.loads((checkpoints / KEY_FILE).read_text())
    assert recorded["finetune"]["epochs"] == 10


def test_a_resume_must_write_into_the_resumed_folder(make_config, stage_folder, tmp_path):
    cfg = make_config(
        *stage_folder["data"], f"resume={stage_folder['out']}", output_dir=tmp_path / "new"
    )
    with pytest.raises(ConfigError, match="its own folder"):
        resume_checkpoint(cfg, "finetune", stage_folder["checkpoints"])


def test_a_run_from_before_cam_options_is_not_resumed(tmp_path):
    """Its saved `++cam.delta=20` would no longer reach the CAM: say so, naming the new key."""
    folder = tmp_path / "old"
    (folder / ".hydra").mkdir(parents=True)
    saved = OmegaConf.create(["cam=ltgradcam", "++cam.delta=20"])
    OmegaConf.save(saved, folder / ".hydra" / "overrides.yaml")
    with pytest.raises(ConfigError, match=r"predates cam\.options.*cam\.options\.delta") as info:
        resumed_arguments([f"resume={folder}"])
    assert info.value.field == "resume" and "++cam.delta=20" in str(info.value)

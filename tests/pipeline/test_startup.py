"""What a start-up does before any work: CAM overrides, run-folder names, user errors
(one line, exit 2, nothing left behind), a quiet console."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from src.cams import check_options
from src.cams.base import OptionError
from src.data.generators.brats import generate_brats
from src.evaluation.publish import print_results
from src.evaluation.settings import EvalSettings, Method
from src.models.checkpoints import CheckpointError
from src.pipeline.compose import CONF_DIR
from src.pipeline.config import ConfigError
from src.pipeline.console import quiet_console
from src.pipeline.overrides import cam_options_as_upserts
from src.pipeline.resolvers import MAX_NAME, launch_dir, path_safe, register_resolvers
from src.pipeline.store import load_state_dict, load_weights
from src.pipeline.user_errors import (
    USER_ERRORS,
    clean_up_failed_start,
    remove_if_disposable,
    report,
)
from tests.helpers.processes import REPO, TIMEOUT


def test_cam_options_become_upserts_and_nothing_else_changes():
    given = [
        *("cam=gradcam", "cam.options.delta=20", "+cam.x=1", "data.root=/d", "-m"),
        "cam.options.scales=[1,2]",
    ]
    assert cam_options_as_upserts(given) == [
        "cam=gradcam",
        "++cam.options.delta=20",
        "+cam.x=1",
        "data.root=/d",
        "-m",
        "++cam.options.scales=[1,2]",
    ]


def test_engine_validator_names_the_option():
    assert check_options("ltgradcam")["delta"] == 0  # defaults filled in
    with pytest.raises(OptionError) as info:
        check_options("cfdcam", delta=30)
    assert info.value.option == "delta" and "'scales'" in str(info.value)
    with pytest.raises(OptionError) as info:
        check_options("ltlayercam", delta=120)
    assert info.value.option == "delta"
    with pytest.raises(ValueError, match="gradcamm"):
        check_options("gradcamm")


def test_job_folder_names_need_no_quoting():
    name = path_safe("++cam.options.delta-10_cam-ltgradcam_cam.scales-[1,2]_data.root-/a b/c")
    assert name == "cam.options.delta-10_cam-ltgradcam_cam.scales-_1_2__data.root-_a_b_c"
    assert len(path_safe("x" * 500)) == MAX_NAME
    assert path_safe("") == ""


def test_launch_dir_works_before_hydra_sets_its_config(tmp_path, monkeypatch):
    GlobalHydra.instance().clear()
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    monkeypatch.chdir(tmp_path)
    assert not HydraConfig.initialized()
    assert launch_dir() == str(tmp_path)


def test_only_a_failed_starts_leftovers_are_removed(tmp_path):
    sweep = tmp_path / "sweep"
    job = sweep / "0_cam-gradcam"
    (job / ".hydra").mkdir(parents=True)
    (job / "run.log").write_text("")
    (job / "split.json").write_text("{}")
    (job / "checkpoints" / "pretrain").mkdir(parents=True)  # a stage started, read bad data
    (job / "checkpoints" / "pretrain" / "key.json").write_text("{}")
    (sweep / "multirun.yaml").write_text("")
    kept = sweep / "1_cam-cam"
    (kept / ".hydra").mkdir(parents=True)
    (kept / "summary.json").write_text("{}")
    clean_up_failed_start(job, sweep)
    assert not job.exists() and sweep.exists(), "the sweep holds a finished job"
    assert not remove_if_disposable(kept) and kept.exists()
    (kept / "summary.json").unlink()
    clean_up_failed_start(kept, sweep)
    assert not sweep.exists()
    assert not remove_if_disposable(tmp_path / "missing")
    trained = tmp_path / "trained"
    (trained / "checkpoints" / "finetune").mkdir(parents=True)
    (trained / "checkpoints" / "finetune" / "last.ckpt").write_text("")
    assert not remove_if_disposable(trained)
    resumed = tmp_path / "resumed"
    (resumed / ".hydra").mkdir(parents=True)
    clean_up_failed_start(resumed, None, resumed=True)
    assert resumed.exists(), "a resumed run's folder existed before the failed start"


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("epochs: 3\n")
    with pytest.raises(CheckpointError, match=r"notes\.txt: not a PyTorch checkpoint"):
        load_state_dict(text)
    truncated = tmp_path / "cut.ckpt"
    torch.save({"w": torch.zeros(3)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt: corrupt"):
        load_state_dict(truncated)


def test_store_weights_problems_are_one_checkpoint_user_error(tmp_path, capsys):
    """Missing, corrupt and wrong-shape files raise the one CheckpointError, naming the file,
    which the start-up reports as a one-line user error."""
    net = torch.nn.Linear(3, 2)
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(4, 3), "bias": torch.zeros(4)}, wrong)
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"\x80\x02garbage")
    cases = [
        (tmp_path / "gone.pt", r"gone\.pt: weights file not found"),
        (corrupt, r"bad\.pt: corrupt"),
        (wrong, r"wrong\.pt: weights do not match the network: shape \(2\): \['bias"),
    ]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message) as err:
            load_weights(net, path)
        assert err.value.path == path and isinstance(err.value, USER_ERRORS)
        report(err.value)
        line = capsys.readouterr().err
        assert line.startswith(f"Error (checkpoint): {path}: ") and line.count("\n") == 1


def test_lightning_tips_and_the_known_warning_are_dropped_others_kept(caplog):
    quiet_console()
    quiet_console()  # idempotent
    tip_logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="pytorch_lightning.utilities.rank_zero"):
        tip_logger.info("\N{ELECTRIC LIGHT BULB} Tip: For seamless cloud logging, try litlogger")
        tip_logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    with warnings.catch_warnings(record=True) as caught:
        quiet_console()  # inside the block: catch_warnings restores the filters after it
        warnings.warn_explicit(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...",
            FutureWarning,
            "_pytree.py",
            21,
            module="pytorch_lightning.utilities._pytree",
        )
        warnings.warn_explicit(
            "something else is deprecated", FutureWarning, "x.py", 1, module="pytorch_lightning.x"
        )
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def _run(*overrides: str, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    command = [sys.executable, "-m", "src.run", *overrides]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["cam.options.delta=120"],
            r"'cam.options.delta': unknown option\(s\) \['delta'\] for CAM method 'cfdcam'",
        ),
        (["data=brats", "data.root=/nonexistent"], "'data.root': /nonexistent is not a folder"),
        (["data.image_size=7"], "'data.image_size': 7 is too small .* at least 33 px"),
        (["threads=0"], "'threads': must be a number of CPU threads >= 1"),
        (["threads=-1"], "'threads': must be a number of CPU threads >= 1"),
    ],
)
def test_user_error_is_one_line_exit_2_and_leaves_no_run_folder(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    result = _run(*overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "HYDRA_FULL_ERROR=1" in lines[0]
    assert not run_dir.exists()


def test_full_error_keeps_the_traceback(tmp_path):
    result = _run("cam.options.delta=120", f"hydra.run.dir={tmp_path / 'run'}", full_error=True)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_a_key_hydra_rejects_is_a_user_error_too(tmp_path):
    result = _run("data.image_sze=64", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "image_sze" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argument", ["cam.delta=20", "++cam.scales=[1,2]", "cam.autocast_dtype=null"]
)
def test_an_option_outside_cam_options_is_refused_with_its_new_key(argument):
    key, value = argument.lstrip("+").split("=", 1)
    name = key.removeprefix("cam.")
    with pytest.raises(ConfigError, match=rf"'{key}'.*use cam\.options\.{name}={re.escape(value)}"):
        cam_options_as_upserts(["cam=ltgradcam", argument])


def test_an_old_flat_cam_option_on_the_command_line_is_one_line_exit_2(tmp_path):
    result = _run("cam=ltgradcam", "cam.delta=20", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "Error: Invalid config value for 'cam.delta': build_cam options live under "
        "cam.options: use cam.options.delta=20"
    ]
    assert not (tmp_path / "run").exists()


def _small_brats(tmp_path: Path) -> tuple[Path, list[str]]:
    """A 4-case BraTS folder and the overrides that run on it with this test's own slice
    cache and model store (empty: nothing is stored yet)."""
    data = tmp_path / "BraTS2021"
    generate_brats(data, n_cases=4, seed=1, shape=(48, 48, 8), normal_cases=0)
    return data, [
        "data=brats",
        f"data.root={data}",
        f"data.cache_dir={tmp_path / 'slices'}",
        f"paths.model_store={tmp_path / 'classifiers'}",
        "data.image_size=null",
    ]


def test_eval_without_a_stored_classifier_is_one_line_exit_2(tmp_path):
    _, overrides = _small_brats(tmp_path)
    run_dir = tmp_path / "run"
    result = _run("stage=eval", "backbone=vgg16_bn", *overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'ckpt': no trained classifier" in lines[0], result.stderr
    assert "vgg16" in lines[0]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("overrides", "ending"),
    [(["stage=masks", "maps_from=/r", "cam.mask=otsu"], "_masks-otsu"), ([], "")],
)
def test_a_mask_only_run_names_its_mask_rule_in_its_folder(tmp_path, overrides, ending):
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    name = Path(cfg.hydra.run.dir).name
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d" + ending, name), name
    GlobalHydra.instance().clear()


def test_the_results_heading_names_the_mask_rule(capsys, tmp_path):
    settings = EvalSettings(tmp_path, "test", "binary", None, None, 0, 0)
    summary = {"groups": {}, "headline": {}, "headline_metrics": "per_image"}
    print_results(summary, settings, Method("gradcam", "otsu"))
    assert "gradcam, otsu masks, on the test split" in capsys.readouterr().out


def test_help_names_the_main_keys_and_every_group_option():
    result = subprocess.run(
        [sys.executable, "-m", "src.run", "--help"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert len(text.splitlines()) < 50, "the help is a page, not the config dump"
    for key in ("data=", "modality=", "backbone=", "cam=", "cam.options.", "stage=", "method="):
        assert key in text, key
    for key in ("seed=", "threads=", "resume=", "eval.", "README.md"):
        assert key in text, key
    for group in ("data", "backbone", "cam"):
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        listed = re.search(rf"\b{group}=([\w|]+)", re.sub(r"\|\n\s*", "|", text))
        assert listed, group
        named = sorted(listed.group(1).split("|"))
        assert named == options, (group, named)


def test_a_truncated_volume_found_in_training_leaves_no_run_folder(tmp_path):
    """The data are read once the first stage has recorded its training key: that
    key.json alone must not keep the failed run's folder."""
    data, overrides = _small_brats(tmp_path)
    flair = sorted(data.glob("*/*_flair.nii.gz"))[0]
    flair.write_bytes(flair.read_bytes()[:300])
    run_dir = tmp_path / "run"
    result = _run(
        *overrides,
        *("pretrain.epochs=1", "pretrain.batch_size=8", "finetune.epochs=1", "threads=1"),
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Error (data)" in result.stderr and flair.name in result.stderr
    assert not run_dir.exists()

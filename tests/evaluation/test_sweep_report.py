"""The sweep table renders split-level metrics, whose std is null (VOC/KSDD2); the plots say
which images they are over and keep shares on [0, 1]."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from src.evaluation.sweep_report import collect, delta_figure, to_markdown
from tests.helpers.processes import REPO


def test_markdown_renders_metrics_without_std():
    rows = [
        {
            "job": "0_delta=0",
            "method": "ltgradcam",
            "delta": 0,
            "data": "ksdd2",
            "modality": None,
            "miou_mean": 0.3537,
            "miou_std": None,
            "dice_mean": 0.5,
            "dice_std": 0.25,
        },
    ]
    table = to_markdown(rows).splitlines()
    assert table[0] == "| method | delta | miou | dice | job |"
    assert table[2] == "| ltgradcam | 0 | 0.3537 | 0.500 ± 0.250 | 0_delta=0 |"


def _job(folder, delta, dice, hd95, n=12, old_format=False):
    """A finished job folder as src.run writes it (only what the report reads); `old_format`:
    as written before the build_cam options moved under `cam.options` (flat `cam.delta`)."""
    folder.mkdir(parents=True)
    cam = f"delta: {delta}" if old_format else f"options: {{delta: {delta}, scales: [1]}}"
    (folder / "config.yaml").write_text(
        f"cam: {{name: ltgradcam, {cam}}}\ndata: {{root: /d/BraTS2021, modality: flair}}\n"
    )
    summary = {
        "split": "test",
        "headline_metrics": "per_image",
        "groups": {"abnormal": {"n": n}, "normal": {"n": 3}, "all": {"n": n + 3}},
        "headline": {"dice": {"mean": dice, "std": 0.0}, "hd95": {"mean": hd95, "std": 2.0}},
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_plots_say_which_images_and_keep_shares_on_a_fixed_axis(tmp_path):
    """A constant Dice of 1.0 is drawn on [0, 1] (not 0.96-1.04), HD95 from 0; titles name
    the group the headline is over and its size."""
    for k, delta in enumerate((0, 20, 40)):
        _job(tmp_path / str(k), delta, dice=1.0, hd95=10.0 + k)
    rows = collect(tmp_path)
    assert [(r["group"], r["images"], r["split"]) for r in rows] == [("abnormal", 12, "test")] * 3
    dice = delta_figure(rows, "dice").axes[0]
    assert dice.get_ylim() == (-0.02, 1.02)
    assert dice.get_title() == "dice over the abnormal images (n=12 per job), test split"
    hd95 = delta_figure(rows, "hd95").axes[0]
    assert hd95.get_ylim()[0] == 0 and hd95.get_ylim()[1] == pytest.approx(14.0 * 1.05)
    _job(tmp_path / "3", 60, dice=1.0, hd95=1.0, n=15)
    assert "(n=12-15 per job)" in delta_figure(collect(tmp_path), "dice").axes[0].get_title()
    plt.close("all")


def test_split_level_headlines_are_over_all_images(tmp_path):
    _job(tmp_path / "0", 0, dice=0.5, hd95=1.0)
    summary = json.loads((tmp_path / "0" / "summary.json").read_text())
    summary["headline_metrics"] = "confusion"
    (tmp_path / "0" / "summary.json").write_text(json.dumps(summary))
    (row,) = collect(tmp_path)
    assert (row["group"], row["images"]) == ("all", 15)


def test_delta_is_read_from_cam_options_and_from_old_flat_configs(tmp_path):
    """Run folders written before `cam.options` keep `delta` at the top of `cam`."""
    _job(tmp_path / "new", 20, dice=0.5, hd95=1.0)
    _job(tmp_path / "old", 40, dice=0.5, hd95=1.0, old_format=True)
    (tmp_path / "off").mkdir()
    _job(tmp_path / "off" / "job", "null", dice=0.5, hd95=1.0)
    by_job = {row["job"]: row["delta"] for row in collect(tmp_path)}
    assert by_job == {"new": 20, "old": 40, "off/job": None}


def test_folders_that_are_not_runs_are_named_and_skipped(tmp_path, caplog):
    _job(tmp_path / "run", 0, 0.5, 3.0)
    other = tmp_path / "other"  # a tool's summary.json beside a config.yaml of another kind
    other.mkdir()
    (other / "config.yaml").write_text("key: [unclosed\n")
    (other / "summary.json").write_text("{}")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.yaml").write_text("name: x\n")
    (plain / "summary.json").write_text("[1, 2]")
    rows = collect(tmp_path)
    assert [row["job"] for row in rows] == ["run"]
    skipped = [r.getMessage() for r in caplog.records if "not a run folder" in r.getMessage()]
    assert len(skipped) == 2 and any(str(other) in m for m in skipped)


def test_a_folder_without_runs_is_one_line_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("unrelated")
    result = run_python_status("-m", "src.report", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: no finished runs (summary.json + config.yaml of src.run) under {tmp_path}"
    ]


def test_a_mask_only_run_names_its_mask_rule(tmp_path):
    _job(tmp_path / "remask", 0, 0.5, 3.0)
    config = tmp_path / "remask" / "config.yaml"
    config.write_text(config.read_text().replace("name: ltgradcam", "name: ltgradcam, mask: otsu"))
    config.write_text(config.read_text() + "stage: masks\n")
    (row,) = collect(tmp_path)
    assert row["mask"] == "otsu"
    assert to_markdown([row]).splitlines()[2].startswith("| ltgradcam (re-masked: otsu) | 0 |")


def run_python_status(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *arguments], cwd=REPO, env=env, capture_output=True, text=True
    )

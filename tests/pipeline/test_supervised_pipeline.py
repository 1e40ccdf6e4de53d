"""`method=supervised` through the real pipeline on tiny generated BraTS-format data: the U-Net
is trained on the training masks, stored, reused, and scored exactly like a CAM row."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from src.data.generators.voc import generate_voc
from src.pipeline.config import ConfigError
from src.pipeline.eval_inputs import eval_loader
from src.pipeline.stages import build_datamodule, run_pipeline

pytestmark = pytest.mark.slow

EVAL_IMAGES = 6


@pytest.fixture(scope="module")
def workspace(module_tmp_path, brats_e2e) -> dict[str, Path]:
    """This module's runs and U-Net store, on the session's BraTS data and slice cache."""
    root = module_tmp_path
    return {
        "root": root,
        "data": brats_e2e["data"],
        "slices": brats_e2e["slices"],
        "store": root / "store",
    }


@pytest.fixture(scope="module")
def config(workspace, composer) -> Callable[..., DictConfig]:
    """``config(out, *extra)``: a tiny-budget supervised run on this module's data."""
    data, slices, store = workspace["data"], workspace["slices"], workspace["store"]

    def make(out: Path, *extra: str) -> DictConfig:
        overrides = [
            "method=supervised",
            "data=brats",
            f"data.root={data}",
            f"data.cache_dir={slices}",
            f"paths.model_store={store}",
            "data.image_size=null",
            "data.split_ratios=[0.34,0.33,0.33]",  # 2/2/2 cases
            "segmenter.epochs=3",
            "segmenter.batch_size=16",
            "segmenter.net.filters=[8,16,32,64,128]",
            f"eval.limit={EVAL_IMAGES}",
            "eval.positive_fraction=0.67",
            "eval.batch_size=4",
            "eval.mask_workers=0",
            "eval.figure_images=2",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            *extra,
        ]
        return composer(overrides, out)

    return make


@pytest.fixture(scope="module")
def first_run(workspace, config, single_thread) -> dict[str, object]:
    out = workspace["root"] / "run1"
    summary = run_pipeline(config(out))
    return {"out": out, "summary": summary}


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "per_image.csv") as handle:
        return list(csv.DictReader(handle))


def test_writes_the_outputs_of_a_cam_run(first_run):
    out = first_run["out"]
    for name in ("per_image.csv", "summary.json", "cam_maps.npz", "overview.png", "config.yaml"):
        assert (out / name).is_file(), name
    # The best checkpoint stays; last.ckpt, which only a resume reads, is gone once the run
    # is complete (keep_last_checkpoint=false).
    kept = sorted(p.name for p in (out / "checkpoints" / "segmenter").glob("*.ckpt"))
    assert len(kept) == 1 and kept[0].startswith("best-epoch="), kept
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["method"], summary["mask"], summary["network"]) == (
        "supervised",
        "threshold 0.5",
        "DynUNet",
    )
    assert "cam_options" not in summary and summary["split"] == "test"
    assert len(_rows(out)) == EVAL_IMAGES


def test_summary_is_the_mean_of_its_per_image_rows(first_run):
    out = first_run["out"]
    rows = _rows(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["groups"]["abnormal"]["n"] > 0
    for group in ("abnormal", "normal", "all"):
        members = [r for r in rows if group in ("all", r["group"])]
        assert summary["groups"][group]["n"] == len(members)
        if not members:
            continue
        for metric in ("dice", "iou", "hd95"):
            values = [float(r[metric]) for r in members]
            # per_image.csv keeps 6 significant digits
            assert summary["groups"][group][f"{metric}_mean"] == pytest.approx(
                np.mean(values), rel=1e-5, abs=1e-6
            )
    headline = summary["headline"]["dice"]
    assert headline["mean"] == summary["groups"]["abnormal"]["dice_mean"]
    # The score is the largest pixel probability: a mask appears only where it exceeds 0.5.
    for row in rows:
        assert (int(row["pred_area"]) > 0) == (float(row["score"]) > 0.5)


def test_scores_the_same_images_as_a_cam_run(first_run, config, tmp_path):
    supervised = config(tmp_path / "s")
    cam = config(tmp_path / "c", "method=cam", "cam=gradcam")
    ids = []
    for cfg in (supervised, cam):
        datamodule = build_datamodule(cfg)
        datamodule.setup("test")
        ids.append([item["id"] for item in eval_loader(cfg, datamodule).dataset])
    assert ids[0] == ids[1]
    assert sorted(r["id"] for r in _rows(first_run["out"])) == sorted(ids[0])


def test_second_run_reuses_the_stored_unet(workspace, first_run, config):
    store = workspace["store"]
    assert [p.name.split("-")[0] for p in store.iterdir()] == ["segmenter"]
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    out = workspace["root"] / "run2"
    summary = run_pipeline(config(out))
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert before == after
    assert not (out / "checkpoints").exists()
    assert summary["headline"] == first_run["summary"]["headline"]
    info = json.loads(next(store.glob("segmenter-*/info.json")).read_text())
    assert info["monitor"] == "val/dice" and 0 <= info["best_score"] <= 1


def test_multilabel_data_is_refused_before_training(tmp_path, composer, workspace):
    root = tmp_path / "VOC"
    generate_voc(root, n_train=4, n_val=2, seed=0)
    cfg = composer(
        [
            "method=supervised",
            "data=voc",
            f"data.root={root}",
            f"paths.model_store={tmp_path / 'store'}",
            "logger=none",
        ],
        tmp_path / "run",
    )
    with pytest.raises(ConfigError, match="method=supervised.*multilabel"):
        run_pipeline(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "store").exists()


def test_stages_without_meaning_for_the_unet_are_refused(config, tmp_path):
    with pytest.raises(ConfigError, match="stage"):
        run_pipeline(config(tmp_path / "p", "stage=pretrain"))


def test_masks_stage_refuses_the_unet_maps(first_run, config, tmp_path):
    cfg = config(tmp_path / "m", "method=cam", "stage=masks", f"maps_from={first_run['out']}")
    with pytest.raises(ConfigError, match="maps_from.*method=supervised"):
        run_pipeline(cfg)

"""The whole pipeline on tiny generated BraTS-format data, through the real loader.

One module-scoped run trains once; the other tests check what it wrote and that later runs
reuse its classifier.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from src.evaluation.items import truncated_uint8_rgb
from src.evaluation.map_store import read_maps
from src.evaluation.masks import MaskMaker
from src.evaluation.metrics import binary_metrics
from src.models.checkpoints import CheckpointError
from src.pipeline.config import ConfigError
from src.pipeline.stages import run_pipeline
from src.pipeline.store import ModelStore
from tests.helpers.processes import run_python

pytestmark = pytest.mark.slow

EVAL_IMAGES = 4
# The first run's method; the later evaluations of the same maps compare with it.
GRADCAM_CRF = ("cam=gradcam", "cam.mask=densecrf")


@pytest.fixture(scope="module")
def workspace(module_tmp_path, brats_e2e) -> dict[str, Path]:
    """This module's run folders, on the session's BraTS data, slice cache and model store
    (`brats_e2e`, tests/conftest.py)."""
    return {
        "root": module_tmp_path,
        **{k: brats_e2e[k] for k in ("data", "slices", "store")},
    }


@pytest.fixture(scope="module")
def overrides(workspace) -> Callable[..., list[str]]:
    """``overrides(*extra)``: a run on this module's data and caches with tiny budgets, then
    ``extra`` (the command line of the subprocess tests)."""
    return lambda *extra: [
        "data=brats",
        f"data.root={workspace['data']}",
        f"data.cache_dir={workspace['slices']}",
        f"paths.model_store={workspace['store']}",
        "data.image_size=null",
        "pretrain.epochs=1",
        "pretrain.batch_size=16",
        "finetune.epochs=1",
        "finetune.batch_size=16",
        f"eval.limit={EVAL_IMAGES}",
        "eval.batch_size=4",
        "eval.mask_workers=0",
        "eval.figure_images=2",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        *extra,
    ]


@pytest.fixture(scope="module")
def config(overrides, composer) -> Callable[..., DictConfig]:
    """``config(out, *extra)``: the composed config of such a run, writing into ``out``."""
    return lambda out, *extra: composer(overrides(*extra), out)


@pytest.fixture(scope="module")
def first_run(workspace, config) -> dict[str, object]:
    out = workspace["root"] / "run1"
    cfg = config(out, *GRADCAM_CRF)
    summary = run_pipeline(cfg)
    return {"out": out, "summary": summary, "cfg": cfg}


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "per_image.csv") as handle:
        return list(csv.DictReader(handle))


def _run_module(module: str, *arguments: str) -> None:
    """``python -m module arguments`` in its own process, from the repository: DDP and Hydra
    multirun need their own launchers, which cannot start from inside pytest."""
    run_python("-m", module, *arguments)


def test_run_writes_every_output(first_run):
    out = first_run["out"]
    for name in (
        "config.yaml",
        "per_image.csv",
        "summary.json",
        "cam_maps.npz",
        "overview.png",
        "dice_histogram.png",
        "split.json",
    ):
        assert (out / name).is_file(), name
    # The best checkpoint (named in the store's info.json) stays; last.ckpt, which only a
    # resume reads, is gone once the run is complete (keep_last_checkpoint=false).
    kept = sorted(p.name for p in (out / "checkpoints" / "finetune").glob("*.ckpt"))
    assert len(kept) == 1 and kept[0].startswith("best-epoch="), kept
    rows = _rows(out)
    assert len(rows) == EVAL_IMAGES
    assert len({r["id"] for r in rows}) == EVAL_IMAGES
    summary = json.loads((out / "summary.json").read_text())
    groups = summary["groups"]
    assert groups["all"]["n"] == EVAL_IMAGES
    assert groups["abnormal"]["n"] + groups["normal"]["n"] == EVAL_IMAGES
    dice = [float(r["dice"]) for r in rows]
    assert groups["all"]["dice_mean"] == pytest.approx(np.mean(dice), abs=1e-5)
    assert groups["all"]["dice_std"] == pytest.approx(np.std(dice), abs=1e-5)


def test_saved_maps_reproduce_the_reported_metrics(first_run):
    """The per-image numbers follow from the saved maps: nothing is lost between stages."""
    out = first_run["out"]
    maps = dict(read_maps(out / "cam_maps.npz"))
    rows = {r["id"]: r for r in _rows(out)}
    assert set(maps) == set(rows)
    for cam_map in maps.values():
        assert cam_map.shape == (64, 64)
        assert np.isfinite(cam_map).all() and cam_map.min() >= 0 and cam_map.max() <= 1


def test_second_run_reuses_the_classifier(workspace, first_run, config):
    store = workspace["store"]
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    out = workspace["root"] / "run2"
    cfg = config(out, "cam=cfdcam", "cam.options.scales=[1]", "cam.options.batch_size=128")
    summary = run_pipeline(cfg)
    assert not (out / "checkpoints").exists(), "the second run trained again"
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert after == before
    assert summary["method"] == "cfdcam"
    assert len(_rows(out)) == EVAL_IMAGES


def test_bad_checkpoint_fails_clearly_and_keeps_results(first_run, tmp_path, config):
    out = first_run["out"]
    before = (out / "summary.json").read_bytes()
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    cfg = config(out, "stage=eval", f"ckpt={bad}")
    with pytest.raises(CheckpointError, match="broken.ckpt"):
        run_pipeline(cfg)
    cfg = config(out, "stage=eval", f"ckpt={tmp_path / 'missing.ckpt'}")
    with pytest.raises(ConfigError, match="missing.ckpt"):
        run_pipeline(cfg)
    assert (out / "summary.json").read_bytes() == before


def test_bad_value_stops_before_any_work(tmp_path, config):
    cfg = config(tmp_path / "bad", "cam=ltgradcam", "cam.options.delta=100")
    with pytest.raises(ConfigError, match=r"cam\.options\.delta"):
        run_pipeline(cfg)
    assert not (tmp_path / "bad").exists()


def test_masks_recomputed_from_maps_match_the_csv(first_run):
    """Dice in the CSV equals Dice of the mask recomputed from the saved map and the GT."""
    from hydra.utils import instantiate

    out = first_run["out"]
    cfg = first_run["cfg"]
    rows = {r["id"]: r for r in _rows(out)}
    maps = dict(read_maps(out / "cam_maps.npz"))
    datamodule = instantiate(cfg.data)  # the data node is a plain constructor call
    datamodule.setup("test")
    dataset = datamodule.dataset("test")
    items = {dataset[i]["id"]: dataset[i] for i in range(len(dataset))}
    with MaskMaker(method="densecrf", workers=0) as maker:
        for image_id, row in rows.items():
            item = items[image_id]
            image = truncated_uint8_rgb(item["image"][None])
            mask = maker(image, maps[image_id][None])[0]
            metrics = binary_metrics(mask, item["mask"].numpy().astype(bool))
            # Masks were made from the same float16 maps that were saved: exact.
            assert metrics["dice"] == pytest.approx(float(row["dice"]), abs=1e-6)


def test_masks_stage_reproduces_the_original_masks_exactly(workspace, first_run, config):
    source = first_run["out"]

    def remask(out: Path, mask: str) -> dict:
        return run_pipeline(
            config(out, "stage=masks", f"maps_from={source}", "cam=gradcam", f"cam.mask={mask}")
        )

    out = workspace["root"] / "remask-same"
    remask(out, "densecrf")
    assert (out / "per_image.csv").read_text() == (source / "per_image.csv").read_text()
    assert "checkpoint" not in json.loads((out / "summary.json").read_text()), "no network ran"
    assert not (out / "checkpoints").exists()

    out = workspace["root"] / "remask-otsu"
    summary = remask(out, "otsu")
    assert summary["mask"] == "otsu"
    assert {r["id"] for r in _rows(out)} == {r["id"] for r in _rows(source)}


def test_two_process_ddp_evaluation_equals_one_process(workspace, first_run, overrides):
    """`trainer=ddp` shards the split over 2 CPU processes; rank 0 writes the same results."""
    out = workspace["root"] / "ddp-eval"
    _run_module(
        "src.run",
        *overrides(*GRADCAM_CRF),
        "stage=eval",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={out}",
    )
    single = {r["id"]: r for r in _rows(first_run["out"])}
    ddp = {r["id"]: r for r in _rows(out)}
    assert set(ddp) == set(single)
    for image_id, row in ddp.items():
        for key, value in row.items():
            if key in ("id", "group"):
                assert value == single[image_id][key]
            else:
                expected = float(single[image_id][key])  # NaN: pointing on a normal slice
                assert float(value) == pytest.approx(expected, abs=1e-4, nan_ok=True)
    assert set(dict(read_maps(out / "cam_maps.npz"))) == set(single)
    assert not list(out.glob("cam_maps.rank*"))
    one = json.loads((first_run["out"] / "summary.json").read_text())["groups"]
    two = json.loads((out / "summary.json").read_text())["groups"]
    assert set(two) == set(one)
    for group, stats in one.items():
        assert two[group] == pytest.approx(stats, abs=1e-4, nan_ok=True)


def test_offline_wandb_run_holds_summary_and_per_image_table(
    workspace, first_run, config, monkeypatch
):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = workspace["root"] / "wandb-eval"
    summary = run_pipeline(config(out, "stage=eval", *GRADCAM_CRF, "logger=wandb"))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected exactly one offline W&B run"
    files = runs[0] / "files"
    # Offline runs keep W&B's own summary in the binary run log; the keys are stored as text.
    run_log = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"eval/headline/dice/mean" in run_log and b"eval/all/n" in run_log
    attached = json.loads((files / "summary.json").read_text())
    assert attached["headline"] == summary["headline"]
    tables = list(files.rglob("per_image*.table.json"))
    assert tables, "per-image table not logged"
    table = json.loads(tables[0].read_text())
    assert len(table["data"]) == EVAL_IMAGES
    assert "dice" in table["columns"] and "overlay" in table["columns"]
    # The figure's images (eval.figure_images=2) carry their overlay as a PNG in the run.
    named = [row[table["columns"].index("overlay_file")] for row in table["data"]]
    assert len([name for name in named if name]) == 2
    assert all((files / name).stat().st_size > 100 for name in named if name)


def test_delta_sweep_multirun_reuses_the_classifier_and_reports(workspace, first_run, overrides):
    """A Hydra multirun over 3 deltas evaluates only (no training) and `src.report` turns the
    sweep folder into the table and the metric-versus-delta plots."""
    sweep = workspace["root"] / "sweep"
    _run_module(
        "src.run",
        "-m",
        *overrides("cam=ltgradcam", "cam.options.delta=0,20,40"),
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p.parent for p in sweep.rglob("summary.json"))
    assert len(jobs) == 3
    assert not any((job / "checkpoints").exists() for job in jobs), "a sweep job retrained"
    _run_module("src.report", str(sweep))
    table = (sweep / "sweep_report.md").read_text().splitlines()
    deltas = [line.split("|")[2].strip() for line in table[2:]]
    assert deltas == ["0", "20", "40"]
    assert all(line.split("|")[1].strip() == "ltgradcam" for line in table[2:])
    for metric in ("dice", "iou", "hd95"):
        assert (sweep / f"sweep_{metric}_vs_delta.png").stat().st_size > 1000


def test_missing_cam_layer_and_empty_split_fail_clearly_and_keep_results(
    workspace, first_run, config, tmp_path
):
    out = first_run["out"]
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    cfg = config(out, "stage=eval", "cam.layers=[layer3,layer9]")
    with pytest.raises(ConfigError, match="layer9"):
        run_pipeline(cfg)
    cases = sorted(p.name for p in workspace["data"].iterdir() if p.is_dir())
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": cases[:-1], "val": cases[-1:], "test": []}))
    # Another split is another training config: name the trained weights explicitly.
    weights = ModelStore(workspace["store"]).lookup(first_run["cfg"], "finetune")
    cfg = config(out, "stage=eval", f"data.split_file={split}", f"ckpt={weights}")
    with pytest.raises(RuntimeError, match="test split is empty"):
        run_pipeline(cfg)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != "split.json"} == {
        k: v for k, v in before.items() if k != "split.json"
    }

"""VOC (multi-label, 21-class VOC mask rule) and KSDD2 (binary, Otsu) through the pipeline:
split-level confusion-matrix metrics that follow from the saved maps."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from src.data.generators.ksdd2 import generate_ksdd2
from src.data.generators.voc import generate_voc
from src.evaluation.image_result import gated_mask
from src.evaluation.map_store import MapWriter, read_maps
from src.evaluation.masks import otsu_mask, voc_mask
from src.evaluation.metrics import ConfusionMatrix
from src.pipeline.stages import run_pipeline

pytestmark = pytest.mark.slow


def _common(tmp: Path) -> list[str]:
    return [
        f"paths.model_store={tmp / 'classifiers'}",
        "pretrain=none",
        "finetune.epochs=1",
        "finetune.batch_size=8",
        "eval.batch_size=4",
        "eval.mask_workers=0",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "per_image.csv") as handle:
        return list(csv.DictReader(handle))


def _test_items(cfg) -> dict[str, dict]:
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    dataset = datamodule.dataset("test")
    return {dataset[i]["id"]: dataset[i] for i in range(len(dataset))}


def _voc_overrides(root: Path, tmp: Path, *extra: str) -> list[str]:
    return [
        "data=voc",
        f"data.root={root}",
        "data.image_size=64",
        "cam=gradcam",
        *_common(tmp),
        *extra,
    ]


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory, composer) -> dict:
    """One VOC run (train + eval) shared by the VOC tests."""
    tmp = tmp_path_factory.mktemp("voc")
    root = tmp / "voc"
    generate_voc(root, n_train=12, n_val=6, seed=3)
    out = tmp / "run"
    cfg = composer(_voc_overrides(root, tmp), out)
    return {"tmp": tmp, "root": root, "out": out, "cfg": cfg, "summary": run_pipeline(cfg)}


def test_voc_scores_the_split_with_the_voc_rule(voc_run):
    out, cfg, summary = voc_run["out"], voc_run["cfg"], voc_run["summary"]
    rows = _rows(out)
    assert len(rows) == 6 and "dice" not in rows[0]
    assert summary["headline_metrics"] == "confusion"
    # Recompute the split's confusion matrix from the saved maps and the GT masks.
    maps: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for key, cam_map in read_maps(out / "cam_maps.npz"):
        image_id, class_index = key.rsplit("@", 1)
        maps[image_id][int(class_index)] = cam_map
    items = _test_items(cfg)
    expected = ConfusionMatrix(21)
    for image_id, item in items.items():
        classes = sorted(maps[image_id])
        assert classes == np.flatnonzero(item["label"].numpy() > 0.5).tolist()
        pred = voc_mask(np.stack([maps[image_id][c] for c in classes]), classes)
        expected.update(pred, item["mask"].numpy())
    assert summary["headline"]["miou"]["mean"] == pytest.approx(expected.miou())
    assert summary["confusion"]["f1"] == pytest.approx(expected.f1())
    saved = json.loads((out / "summary.json").read_text())
    assert saved["confusion"]["miou"] == pytest.approx(expected.miou())


def test_masks_stage_reproduces_the_voc_masks_and_metrics_exactly(voc_run, composer):
    """`stage=masks` on a VOC run: per-class maps -> VOC rule -> the same rows and split-level
    confusion matrix as the evaluation, without the network."""
    source, tmp = voc_run["out"], voc_run["tmp"]
    out = tmp / "remask"
    # cam.mask is a binary option: the VOC rule ignores it, as the evaluation does.
    cfg = composer(
        _voc_overrides(
            voc_run["root"],
            tmp,
            "stage=masks",
            f"maps_from={source}",
            "cam.mask=threshold",
            "cam.threshold=0.9",
        ),
        out,
    )
    summary = run_pipeline(cfg)
    assert (out / "per_image.csv").read_text() == (source / "per_image.csv").read_text()
    original = json.loads((source / "summary.json").read_text())
    for key in ("confusion", "headline", "groups", "mask"):
        assert summary[key] == original[key], key
    assert summary["maps_from"] == str(source / "cam_maps.npz")
    assert not (out / "checkpoints").exists()
    # A missing class map is an error naming it, not a silently different mask.
    damaged = tmp / "damaged"
    damaged.mkdir()
    for name in ("per_image.csv", "summary.json", "config.yaml"):
        (damaged / name).write_bytes((source / name).read_bytes())
    kept = list(read_maps(source / "cam_maps.npz"))[1:]
    with MapWriter(damaged / "cam_maps.npz") as writer:
        for key, cam_map in kept:
            writer.add(key, cam_map)
    dropped = next(iter(read_maps(source / "cam_maps.npz")))[0]
    cfg = composer(
        _voc_overrides(voc_run["root"], tmp, "stage=masks", f"maps_from={damaged}"),
        tmp / "remask-damaged",
    )
    with pytest.raises(KeyError, match=dropped):
        run_pipeline(cfg)


def test_ksdd2_reports_the_defect_class_iou(tmp_path, composer):
    root = tmp_path / "ksdd2"
    generate_ksdd2(root, n_train=12, n_test=6, seed=2, defect_fraction=0.5, size=(126, 46))
    out = tmp_path / "run"
    cfg = composer(
        [
            "data=ksdd2",
            f"data.root={root}",
            "data.image_size=[128,64]",
            "cam=ltgradcam",
            "cam.options.delta=20",
            *_common(tmp_path),
        ],
        out,
    )
    summary = run_pipeline(cfg)
    maps = dict(read_maps(out / "cam_maps.npz"))
    expected = ConfusionMatrix(2)
    for image_id, item in _test_items(cfg).items():
        # KSDD2's label gate (eval.label_gate, on for KSDD2): a defect-free image scores
        # an empty mask.
        label = int(item["label"].max() > 0.5)
        mask = gated_mask(otsu_mask(maps[image_id]), label, label_gate=True)
        expected.update(mask, item["mask"].numpy())
    headline = summary["headline"]
    assert headline["miou"]["mean"] == pytest.approx(expected.miou(include_background=False))
    assert headline["precision"]["mean"] == pytest.approx(expected.precision())
    assert headline["recall"]["mean"] == pytest.approx(expected.recall())
    assert {"dice_mean", "hd95_mean"} <= set(summary["groups"]["all"])

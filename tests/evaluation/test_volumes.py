"""Tests of src/evaluation/volumes.py: per-case Dice and HD95 from stacked slices."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from medpy.metric.binary import dc, hd95
from torch.utils.data import DataLoader, Dataset

from src.evaluation.cam_module import CAMEvaluationModule
from src.evaluation.evaluate import run_test_loop
from src.evaluation.reports import write_per_case_csv
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.summary import build_summary
from src.evaluation.volumes import (
    CaseStacker,
    Volumes,
    case_metrics,
    case_of,
    slice_order,
)
from tests.helpers.networks import tiny_net
from tests.helpers.trainer import quiet_trainer_kwargs

pytestmark = pytest.mark.usefixtures("single_thread")


def _ball(shape: tuple[int, int, int], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.75, 0.75), (5.0, 1.0, 1.5)])
def test_case_metrics_match_medpy_in_3d(spacing):
    rng = np.random.default_rng(3)
    for _ in range(4):
        shape = (9, 20, 24)
        pred = _ball(shape, rng.uniform(2, 7, 3) * (1, 2, 2), rng.uniform(2, 5))
        gt = _ball(shape, rng.uniform(2, 7, 3) * (1, 2, 2), rng.uniform(2, 5))
        pred |= rng.random(shape) < 0.01
        found = case_metrics(pred, gt, spacing, None)
        assert found["dice"] == pytest.approx(dc(pred, gt), abs=1e-12)
        assert found["hd95"] == pytest.approx(hd95(pred, gt, voxelspacing=spacing), abs=1e-9)


def test_case_level_empty_rules():
    empty, full = np.zeros((3, 4, 5), bool), np.ones((3, 4, 5), bool)
    assert case_metrics(empty, empty, (1, 1, 1), 7.0) == {"dice": 1.0, "hd95": 0.0}
    assert case_metrics(full, empty, (1, 1, 1), 7.0) == {"dice": 0.0, "hd95": 7.0}
    diagonal = math.sqrt((3 * 2) ** 2 + 4**2 + (5 * 0.5) ** 2)
    assert case_metrics(empty, full, (2, 1, 0.5), None)["hd95"] == pytest.approx(diagonal)


def test_ids_give_case_and_slice_order():
    assert case_of("BraTS2021_00001/s077") == "BraTS2021_00001"
    assert case_of("TCGA_CS_4941_19960909/s012") == "TCGA_CS_4941_19960909"
    ids = ["c/s1000", "c/s999", "c/s010", "c/s9"]
    assert sorted(ids, key=slice_order) == ["c/s9", "c/s010", "c/s999", "c/s1000"]


def _volume_slices(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two cases of 5 slices each (13 x 11 px), random blobs in the middle slices."""
    rng = np.random.default_rng(seed)
    slices = {}
    for case in ("a", "b"):
        pred = _ball((5, 13, 11), rng.uniform(1, 4, 3) * (1, 3, 3), 2.5)
        gt = _ball((5, 13, 11), rng.uniform(1, 4, 3) * (1, 3, 3), 2.5)
        for z in range(5):
            slices[f"{case}/s{z:03d}"] = (pred[z], gt[z])
    return slices


def test_a_case_is_scored_from_its_stacked_slices_once_complete():
    slices = _volume_slices()
    volumes = Volumes({"a": 5, "b": 5}, {"a": (1.0, 1.0, 1.0), "b": (2.0, 1.0, 1.0)}, "mm")
    stacker = CaseStacker(volumes, 373.0)
    ids = list(slices)[::-1]  # any order: stacked by slice number
    for image_id in ids[:-1]:  # a/s000 missing: case a stays partial
        stacker.add(image_id, *slices[image_id])
    stacker.add("b/s002", *slices["b/s002"])  # a repeat counts once
    stacker.add("x/s000", *slices["b/s002"])  # not a case of the split: ignored
    assert list(stacker.done) == ["b"] and list(stacker.partial) == ["a"]
    pred = np.stack([slices[f"b/s{z:03d}"][0] for z in range(5)])
    gt = np.stack([slices[f"b/s{z:03d}"][1] for z in range(5)])
    (row,) = stacker.rows()
    assert (row.case, row.slices, row.gt_voxels, row.pred_voxels) == ("b", 5, gt.sum(), pred.sum())
    assert row.dice == pytest.approx(dc(pred, gt))
    assert row.hd95 == pytest.approx(hd95(pred, gt, voxelspacing=(2.0, 1.0, 1.0)))
    summary = stacker.summary()
    assert summary["complete_cases"] == 1 and summary["partial_cases_left_out"] == 1
    assert summary["dice_mean"] == pytest.approx(row.dice) and summary["dice_std"] == 0.0
    stacker.add("a/s000", *slices["a/s000"])
    assert sorted(stacker.done) == ["a", "b"] and not stacker.partial


def test_processes_shares_merge_into_the_one_process_result():
    """A distributed sampler spreads a case's slices over the processes (and repeats some)."""
    slices = _volume_slices(seed=1)
    volumes = Volumes({"a": 5, "b": 5}, {"a": (1.0, 1.0, 1.0), "b": (1.0, 1.0, 1.0)}, "mm")
    whole, first, second = (CaseStacker(volumes, None) for _ in range(3))
    for k, (image_id, pair) in enumerate(slices.items()):
        whole.add(image_id, *pair)
        (first if k % 2 else second).add(image_id, *pair)
    first.add("a/s000", *slices["a/s000"])  # the padding repeat
    total = CaseStacker(volumes, None)
    total.merge(first)
    total.merge(second)
    assert total.rows() == whole.rows() and not total.partial


class VolumeSlices(Dataset):
    """Two 3-slice cases of 64 px images with a bright square tumour on some slices."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = [f"{case}/s{z:03d}" for case in ("p1", "p2") for z in range(3)]
        self.images = 0.3 * torch.rand(len(self.ids), 3, 64, 64, generator=gen)
        self.masks = torch.zeros(len(self.ids), 64, 64, dtype=torch.uint8)
        for i in (1, 2, 4):
            self.images[i, :, 20:40, 16:36] += 0.6
            self.masks[i, 20:40, 16:36] = 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        label = self.masks[i].any().float()[None]
        return {"image": self.images[i], "label": label, "mask": self.masks[i], "id": self.ids[i]}


def test_the_test_loop_writes_per_case_results_of_complete_cases(tmp_path: Path):
    """Case p2 has a fourth slice in the split that was not evaluated: left out."""
    dataset = VolumeSlices()
    volumes = Volumes({"p1": 3, "p2": 4}, {"p1": (1.0, 1.0, 1.0), "p2": (1.0, 1.0, 1.0)}, "mm")
    settings = EvalSettings(tmp_path, "test", "binary", 50.0, None, 0, 0, volumes=volumes)
    method = Method("gradcam", "otsu")
    net = tiny_net(num_classes=1, dead=0)

    def build(mask_maker, maps_path):
        return CAMEvaluationModule(
            net, "gradcam", ["conv2"], {}, mask_maker, maps_path, task="binary",
            empty_hd95=50.0, volumes=volumes,
        )  # fmt: skip

    trainer = pl.Trainer(inference_mode=False, **quiet_trainer_kwargs())
    loader = DataLoader(dataset, batch_size=4)
    results, cases = run_test_loop(trainer, build, loader, method, settings, tmp_path / "m.npz")
    (row,) = cases.rows()
    assert row.case == "p1" and row.slices == 3 and row.gt_voxels == 2 * 400
    pred_area = sum(r.pred_area for r in results if case_of(r.id) == "p1")
    assert row.pred_voxels == pred_area
    summary = build_summary(results, settings, method, {}, cases)
    assert summary["per_case"]["complete_cases"] == 1
    assert summary["per_case"]["partial_cases_left_out"] == 1
    assert summary["per_case"]["dice_mean"] == pytest.approx(row.dice)
    assert "per_case" in summary["conventions"]
    write_per_case_csv(cases.rows(), tmp_path / "per_case.csv")
    with open(tmp_path / "per_case.csv") as handle:
        (written,) = list(csv.DictReader(handle))
    assert written["case"] == "p1" and float(written["dice"]) == pytest.approx(row.dice, 1e-5)

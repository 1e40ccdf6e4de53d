"""Tests of the typed per-image result, the summary and the evaluation's task switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from src.evaluation.cam_module import CAMEvaluationModule
from src.evaluation.image_result import binary_result, multilabel_result
from src.evaluation.metrics import ConfusionMatrix
from src.evaluation.reports import write_per_image_csv
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.summary import build_summary, split_confusion


def _settings(task: str = "binary", **changes) -> EvalSettings:
    options = {
        "output_dir": Path("out"),
        "split": "test",
        "task": task,
        "empty_hd95": 373.12866,
        "normal_area_max": None,
        "mask_workers": 0,
        "figure_images": 2,
    }
    return EvalSettings(**{**options, **changes})


def _binary_results():
    gt = np.zeros((8, 8), bool)
    gt[2:5, 2:5] = True
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    cam_map = gt.astype(np.float32) * 0.75
    empty = np.zeros((8, 8), bool)
    return [
        binary_result("b", gt, mask, cam_map, 1, 0.8125, 373.12866),
        binary_result("a", empty, empty, cam_map * 0, 0, 1 / 3, 373.12866),
    ]


def test_per_image_csv_has_the_columns_order_and_formatting_of_before(tmp_path):
    path = tmp_path / "per_image.csv"
    write_per_image_csv(_binary_results(), path)
    assert path.read_text().splitlines() == [
        "id,group,label,score,gt_area,pred_area,dice,iou,precision,recall,hd95,pointing,mass_in_gt",
        "a,normal,0,0.333333,0,0,1,1,1,1,0,nan,nan",
        "b,abnormal,1,0.8125,9,9,0.666667,0.5,0.666667,0.666667,1,1,1",
    ]
    gt = np.array([[0, 1], [255, 2]])
    pred = np.array([[0, 1], [1, 1]])
    write_per_image_csv([multilabel_result("v", gt, pred, [1, 2], 0.5)], path)
    assert path.read_text().splitlines() == [
        "id,group,label,score,gt_area,pred_area,pixel_accuracy",
        "v,abnormal,1 2,0.5,2,3,0.666667",
    ]


def test_split_confusion_merges_the_per_image_matrices():
    results = _binary_results()
    total = split_confusion(results)
    expected = ConfusionMatrix(2, ignore_index=None)
    for result in results:
        expected.matrix += result.confusion.matrix
    np.testing.assert_array_equal(total.matrix, expected.matrix)
    assert total.matrix.sum() == 2 * 64
    assert all(r.confusion.matrix.sum() == 64 for r in results), "inputs stay as they were"


def test_summary_headline_follows_the_task_unless_the_dataset_names_one():
    results = _binary_results()
    method = Method("gradcam", "threshold", 0.5)
    summary = build_summary(results, _settings(), method, {"checkpoint": "w.pt"})
    assert list(summary)[:3] == ["method", "checkpoint", "mask"]
    assert summary["mask"] == "threshold 0.5" and summary["headline_metrics"] == "per_image"
    assert summary["headline"]["dice"]["mean"] == pytest.approx(2 / 3)
    confusion = build_summary(
        results, _settings(metrics="confusion", miou="foreground"), method, {}
    )
    assert confusion["headline"]["miou"]["mean"] == confusion["confusion"]["miou_foreground"]
    assert _settings("multilabel").headline_metrics == "confusion"


def test_settings_refuse_a_per_image_headline_for_a_multilabel_task_and_unknown_tasks():
    with pytest.raises(ValueError, match="per_image needs a binary"):
        _settings("multilabel", metrics="per_image")
    with pytest.raises(ValueError, match="task"):
        _settings("multiclass")


class _TwoLogits(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :2]


@pytest.mark.parametrize(("task", "shape"), [("binary", (1, 3, 4, 4)), ("multilabel", None)])
def test_logits_that_disagree_with_the_datamodule_task_are_an_error(task, shape):
    net = _TwoLogits() if task == "binary" else torch.nn.Identity()
    images = torch.zeros(shape or (1, 1, 4, 4))
    module = CAMEvaluationModule(net, "gradcam", [], {}, None, "x.npz", task=task)
    with pytest.raises(ValueError, match=f"do not fit the DataModule's {task} task"):
        module.test_step({"image": images, "id": ["x"]}, 0)


def test_label_gate_empties_the_mask_of_negative_images_only():
    gt = np.zeros((8, 8), bool)
    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:7] = True  # Otsu splits even a clean surface's map in two
    cam_map = mask.astype(np.float32)
    plain = binary_result("n", gt, mask, cam_map, 0, 0.1, 373.12866)
    gated = binary_result("n", gt, mask, cam_map, 0, 0.1, 373.12866, label_gate=True)
    assert plain.pred_area == 36 and plain.metrics["dice"] == 0.0
    assert gated.pred_area == 0 and gated.metrics["dice"] == 1.0
    assert gated.confusion.matrix[0, 1] == 0 and plain.confusion.matrix[0, 1] == 36
    # A positive label keeps its mask, gate or not.
    gt[2:4, 2:4] = True
    positive = binary_result("p", gt, mask, cam_map, 1, 0.9, 373.12866, label_gate=True)
    assert positive.pred_area == 36


def test_label_gate_leaves_the_foreground_iou_of_a_split_as_over_its_positives():
    rng = np.random.default_rng(0)
    results, positives = [], []
    for i in range(6):
        gt = np.zeros((16, 16), bool)
        if i % 2:
            gt[4:9, 3:10] = True
        mask = rng.random((16, 16)) > 0.6
        result = binary_result(str(i), gt, mask, mask * 1.0, i % 2, 0.5, None, label_gate=True)
        results.append(result)
        if i % 2:
            positives.append(result)
    everything = split_confusion(results).as_dict()
    only_positive = split_confusion(positives).as_dict()
    for column in ("miou_foreground", "precision", "recall", "f1"):
        assert everything[column] == pytest.approx(only_positive[column])

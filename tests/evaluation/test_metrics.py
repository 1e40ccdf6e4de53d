"""Tests of src/evaluation/metrics.py: reference libraries, golden values, edge cases."""

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from medpy.metric.binary import dc, hd95, jc
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from omegaconf import OmegaConf

from src.evaluation.image_result import binary_result
from src.evaluation.masks import MaskMaker
from src.evaluation.metrics import (
    AUTHORS_EMPTY_HD95,
    ConfusionMatrix,
    binary_metrics,
    group_of,
    localisation_metrics,
    summarize,
    surface_distances,
)
from src.pipeline.compose import CONF_DIR
from src.segmentation.evaluation import SegmenterEvaluationModule


def _blobs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A few random discs and rectangles, some touching the image border."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        radius = rng.uniform(1.5, max(shape) / 3)
        if rng.random() < 0.5:
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        else:
            mask |= (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius / 2)
    return mask


def _random_pairs():
    """Non-empty mask pairs: blobs, scattered pixels and mixtures, several shapes."""
    rng = np.random.default_rng(7)
    pairs = []
    for shape in [(17, 23), (32, 32), (8, 50), (40, 12)]:
        for kind in ("blobs", "scattered", "mixed"):
            for _ in range(3):
                blob_a, blob_b = _blobs(rng, shape), _blobs(rng, shape)
                dots_a = rng.random(shape) < rng.uniform(0.01, 0.2)
                dots_b = rng.random(shape) < rng.uniform(0.01, 0.2)
                pred = {"blobs": blob_a, "scattered": dots_a, "mixed": blob_a | dots_a}[kind]
                gt = {"blobs": blob_b, "scattered": dots_b, "mixed": blob_b}[kind]
                if pred.any() and gt.any():
                    pairs.append((pred, gt))
    return pairs


PAIRS = _random_pairs()


def _nchw(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask)[None, None].float()


def test_enough_random_pairs():
    assert len(PAIRS) >= 30


@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_binary_metrics_match_medpy(index):
    pred, gt = PAIRS[index]
    ours = binary_metrics(pred, gt)
    assert ours["dice"] == pytest.approx(dc(pred, gt), abs=1e-12)
    assert ours["iou"] == pytest.approx(jc(pred, gt), abs=1e-12)
    assert ours["hd95"] == pytest.approx(hd95(pred, gt), abs=1e-9)
    overlap = (pred & gt).sum()
    assert ours["precision"] == pytest.approx(overlap / pred.sum())
    assert ours["recall"] == pytest.approx(overlap / gt.sum())


def test_dice_iou_match_monai_and_monai_hd95_is_max_of_directed_percentiles():
    """MONAI agrees on Dice/IoU; its HD95 is the larger directed 95th percentile, which is not
    medpy's percentile of the union, so the two differ on some pairs (we follow medpy)."""
    differs = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pred, gt in PAIRS:
            ours = binary_metrics(pred, gt)
            assert compute_dice(_nchw(pred), _nchw(gt)).item() == pytest.approx(ours["dice"])
            assert compute_iou(_nchw(pred), _nchw(gt)).item() == pytest.approx(ours["iou"])
            monai_hd = compute_hausdorff_distance(_nchw(pred), _nchw(gt), percentile=95).item()
            forward = np.percentile(surface_distances(pred, gt), 95)
            backward = np.percentile(surface_distances(gt, pred), 95)
            assert monai_hd == pytest.approx(max(forward, backward), abs=1e-4)
            differs += abs(monai_hd - ours["hd95"]) > 1e-3
    assert differs > 0


def test_hd95_golden_two_points():
    pred = np.zeros((10, 10), bool)
    gt = np.zeros((10, 10), bool)
    pred[2, 3] = True
    gt[5, 7] = True
    assert binary_metrics(pred, gt)["hd95"] == pytest.approx(5.0)


def test_identical_masks_are_perfect():
    pred, _ = PAIRS[0]
    assert binary_metrics(pred, pred) == {
        "dice": 1.0,
        "iou": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "hd95": 0.0,
    }


def test_metrics_are_symmetric_where_they_should_be():
    pred, gt = PAIRS[3]
    forward, backward = binary_metrics(pred, gt), binary_metrics(gt, pred)
    for key in ("dice", "iou", "hd95"):
        assert forward[key] == pytest.approx(backward[key])
    assert forward["precision"] == pytest.approx(backward["recall"])


def test_both_empty_convention():
    empty = np.zeros((12, 9), bool)
    assert binary_metrics(empty, empty) == {
        "dice": 1.0,
        "iou": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "hd95": 0.0,
    }


@pytest.mark.parametrize("pred_empty", [True, False])
def test_one_empty_convention(pred_empty):
    empty = np.zeros((30, 40), bool)
    full = np.zeros((30, 40), bool)
    full[5:9, 5:9] = True
    pred, gt = (empty, full) if pred_empty else (full, empty)
    result = binary_metrics(pred, gt)
    assert result == {
        "dice": 0.0,
        "iou": 0.0,
        "precision": 0.0,
        "recall": 0.0,
        "hd95": AUTHORS_EMPTY_HD95,
    }
    assert binary_metrics(pred, gt, empty_hd95=None)["hd95"] == pytest.approx(50.0)
    assert binary_metrics(pred, gt, empty_hd95=7.5)["hd95"] == 7.5


def test_authors_constant_is_the_brats_volume_diagonal():
    assert math.sqrt(240**2 + 240**2 + 155**2) == pytest.approx(AUTHORS_EMPTY_HD95, abs=1e-5)


def test_binary_metrics_accepts_tensors_and_labels():
    pred, gt = PAIRS[1]
    from_numpy = binary_metrics(pred, gt)
    from_torch = binary_metrics(torch.from_numpy(pred), torch.from_numpy(gt.astype(np.uint8) * 255))
    assert from_numpy == from_torch


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        binary_metrics(np.zeros((4, 5), bool), np.zeros((5, 4), bool))


def test_group_of():
    gt = np.zeros((4, 4), np.uint8)
    assert group_of(gt) == "normal"
    gt[1, 2] = 255
    assert group_of(gt) == "abnormal"


def test_summarize_population_std_groups_counts():
    rows = [
        {"group": "abnormal", "dice": 0.2, "hd95": 10.0},
        {"group": "abnormal", "dice": 0.6, "hd95": 20.0},
        {"group": "abnormal", "dice": 1.0, "hd95": 30.0},
        {"group": "normal", "dice": 1.0, "hd95": 0.0},
    ]
    summary = summarize(rows, ["dice", "hd95"])
    assert summary["abnormal"]["n"] == 3
    assert summary["normal"]["n"] == 1
    assert summary["all"]["n"] == 4
    assert summary["abnormal"]["dice_mean"] == pytest.approx(0.6)
    # population std of (0.2, 0.6, 1.0) = sqrt(0.32 / 3), not the sample std sqrt(0.32 / 2)
    assert summary["abnormal"]["dice_std"] == pytest.approx(math.sqrt(0.32 / 3))
    assert summary["abnormal"]["hd95_std"] == pytest.approx(math.sqrt(200 / 3))
    assert summary["normal"]["dice_std"] == 0.0
    assert summary["all"]["dice_mean"] == pytest.approx(0.7)
    assert summary["all"]["hd95_mean"] == pytest.approx(15.0)
    assert summary["all"]["hd95_std"] == pytest.approx(np.std([10, 20, 30, 0]))


def test_summarize_empty_group_is_nan():
    summary = summarize([{"group": "abnormal", "dice": 0.5}], ["dice"])
    assert summary["normal"]["n"] == 0
    assert math.isnan(summary["normal"]["dice_mean"])
    assert summary["all"]["dice_mean"] == 0.5


def test_summarize_leaves_undefined_values_out():
    rows = [
        {"group": "abnormal", "pointing": 1.0},
        {"group": "abnormal", "pointing": 0.0},
        {"group": "normal", "pointing": math.nan},
    ]
    summary = summarize(rows, ["pointing"])
    assert summary["abnormal"]["pointing_mean"] == 0.5
    assert summary["all"]["pointing_mean"] == 0.5 and summary["all"]["n"] == 3
    assert math.isnan(summary["normal"]["pointing_mean"]) and summary["normal"]["n"] == 1


def test_localisation_golden():
    gt = np.zeros((4, 5), bool)
    gt[1:3, 1:3] = True
    cam = np.zeros((4, 5))
    cam[1, 2] = 0.9  # the maximum, inside
    cam[0, 4] = 0.3  # mass outside
    cam[2, 1] = -5.0  # negative values carry no mass
    result = localisation_metrics(cam, gt)
    assert result == {"pointing": 1.0, "mass_in_gt": pytest.approx(0.9 / 1.2)}
    cam[3, 0] = 1.0  # a new maximum, outside
    assert localisation_metrics(cam, gt) == {
        "pointing": 0.0,
        "mass_in_gt": pytest.approx(0.9 / 2.2),
    }
    # Ties go to the first maximal pixel in raster order (numpy's argmax).
    tie = np.zeros((4, 5))
    tie[1, 1] = tie[3, 4] = 1.0
    assert localisation_metrics(tie, gt)["pointing"] == 1.0
    assert localisation_metrics(tie[::-1, ::-1], gt[::-1, ::-1])["pointing"] == 0.0


def test_localisation_edge_cases():
    gt = np.zeros((3, 3), bool)
    assert all(math.isnan(v) for v in localisation_metrics(np.ones((3, 3)), gt).values())
    gt[1, 1] = True
    for constant in (np.zeros((3, 3)), np.full((3, 3), 0.7)):
        assert localisation_metrics(constant, gt) == {"pointing": 0.0, "mass_in_gt": 0.0}
    assert localisation_metrics(torch.eye(3), torch.eye(3) > 0)["mass_in_gt"] == 1.0
    with pytest.raises(ValueError, match="does not match"):
        localisation_metrics(np.ones((3, 4)), gt)


@pytest.mark.parametrize(
    "row, message",
    [({"group": "tumour", "dice": 1.0}, "group"), ({"group": "normal"}, "missing metrics")],
)
def test_summarize_bad_rows(row, message):
    with pytest.raises(ValueError, match=message):
        summarize([row], ["dice"])


def _direct_iou(preds, gts, num_classes, ignore=255):
    """Per-class IoU from boolean masks, written independently of the bincount."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for pred, gt in zip(preds, gts, strict=True):
        valid = gt != ignore
        for c in range(num_classes):
            inter[c] += ((pred == c) & (gt == c) & valid).sum()
            union[c] += (((pred == c) | (gt == c)) & valid).sum()
    return np.array([inter[c] / union[c] if union[c] else np.nan for c in range(num_classes)])


def _voc_like(seed, n=4, shape=(9, 11), num_classes=21, used=(0, 3, 7, 12, 15)):
    rng = np.random.default_rng(seed)
    preds = [rng.choice(used, size=shape) for _ in range(n)]
    gts = [rng.choice(used[:-1] + (255,), size=shape) for _ in range(n)]
    return preds, gts


def test_miou_matches_direct_computation_and_ignores_255():
    preds, gts = _voc_like(0)
    cm = ConfusionMatrix(21)
    for pred, gt in zip(preds, gts, strict=True):
        cm.update(pred, gt)
    direct = _direct_iou(preds, gts, 21)
    np.testing.assert_allclose(cm.per_class_iou(), direct, equal_nan=True)
    assert cm.miou() == pytest.approx(np.nanmean(direct))
    assert np.isnan(direct).sum() == 16  # 16 classes absent from both: left out of the mean
    assert cm.miou(include_background=False) == pytest.approx(np.nanmean(direct[1:]))
    assert cm.matrix.sum() == sum((gt != 255).sum() for gt in gts)


def test_merge_and_add_equal_one_matrix():
    preds, gts = _voc_like(1)
    whole, first, second = ConfusionMatrix(21), ConfusionMatrix(21), ConfusionMatrix(21)
    for index, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        whole.update(pred, gt)
        (first if index % 2 else second).update(pred, gt)
    shipped = pickle.loads(pickle.dumps(second))  # shards come back from other processes
    np.testing.assert_array_equal((first + shipped).matrix, whole.matrix)
    assert first.merge(shipped).as_dict() == whole.as_dict()


def test_merge_incompatible_raises():
    with pytest.raises(ValueError, match="cannot merge"):
        ConfusionMatrix(21).merge(ConfusionMatrix(2))


def test_binary_precision_recall_f1_golden():
    """KSDD2-like: 2 classes. pred/gt below give TP=3, FP=2, FN=1, TN=4."""
    gt = np.array([[1, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
    pred = np.array([[1, 1, 1, 0, 1], [1, 0, 0, 0, 0]])
    cm = ConfusionMatrix(2).update(pred, gt)
    np.testing.assert_array_equal(cm.matrix, [[4, 2], [1, 3]])
    assert cm.precision() == pytest.approx(3 / 5)
    assert cm.recall() == pytest.approx(3 / 4)
    assert cm.f1() == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert cm.f1() == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert cm.per_class_iou() == pytest.approx([4 / 7, 3 / 6])
    assert cm.miou() == pytest.approx((4 / 7 + 0.5) / 2)
    assert cm.miou(include_background=False) == pytest.approx(0.5)
    assert cm.f1("macro") == pytest.approx(cm.f1())


def test_multiclass_micro_and_macro_golden():
    """Classes 0 (bg), 1, 2. Confusion (rows gt, cols pred):
    gt0: 2 -> 0, 1 -> 1;  gt1: 2 -> 1, 1 -> 2;  gt2: 1 -> 2, 1 -> 0.
    Foreground TP = 2 + 1, FP = 1 + 1, FN = 1 + 1 (the 255 pixel is ignored)."""
    gt = np.array([0, 0, 0, 1, 1, 1, 2, 2, 255])
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1])
    cm = ConfusionMatrix(3).update(pred, gt)
    np.testing.assert_array_equal(cm.matrix, [[2, 1, 0], [0, 2, 1], [1, 0, 1]])
    assert cm.precision() == pytest.approx(3 / 5)
    assert cm.recall() == pytest.approx(3 / 5)
    assert cm.f1() == pytest.approx(6 / 10)
    # per class: P1 = 2/3, R1 = 2/3, P2 = 1/2, R2 = 1/2
    assert cm.precision("macro") == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert cm.recall("macro") == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert cm.f1("macro") == pytest.approx((2 / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="average"):
        cm.f1("weighted")


def test_zero_denominators():
    nothing_predicted = ConfusionMatrix(2).update(np.zeros(4, int), np.array([0, 1, 1, 0]))
    assert nothing_predicted.precision() == 0.0
    assert nothing_predicted.recall() == 0.0
    no_foreground = ConfusionMatrix(2).update(np.zeros(4, int), np.zeros(4, int))
    assert math.isnan(no_foreground.precision())
    assert math.isnan(no_foreground.miou(include_background=False))
    assert no_foreground.miou() == 1.0


def test_as_dict_keys_and_nan_free_per_class():
    cm = ConfusionMatrix(3).update(np.array([0, 1]), np.array([0, 1]))
    result = cm.as_dict()
    assert result["per_class_iou"] == [1.0, 1.0, None]
    assert result["miou"] == 1.0
    assert {"precision", "recall", "f1", "miou_foreground"} <= set(result)


@pytest.mark.parametrize(
    "pred, gt, message",
    [
        (np.zeros((2, 3), int), np.zeros((3, 2), int), r"\(2, 3\).*\(3, 2\)"),
        (np.array([0, 21]), np.array([0, 1]), "pred: labels"),
        (np.array([0, 1]), np.array([0, 30]), "gt: labels"),
    ],
)
def test_confusion_bad_input(pred, gt, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix(21).update(pred, gt)


def test_confusion_accepts_tensors():
    preds, gts = _voc_like(2, n=1)
    from_numpy = ConfusionMatrix(21).update(preds[0], gts[0])
    from_torch = ConfusionMatrix(21).update(torch.from_numpy(preds[0]), torch.from_numpy(gts[0]))
    np.testing.assert_array_equal(from_numpy.matrix, from_torch.matrix)


def test_normal_area_max_scores_small_tumours_as_normal_against_an_empty_mask():
    """The authors' grouping (eval.normal_area_max=0.01): a tumour of at most 1 % of the
    slice is scored as a normal slice, so an empty prediction is perfect there and a
    prediction on the small tumour is a false positive; larger tumours are unchanged."""
    small = np.zeros((20, 20), bool)
    small[5, 5:9] = True  # 4 px = 1 % of 400: normal under the authors' rule (<=)
    large = np.zeros((20, 20), bool)
    large[5, 5:10] = True  # 5 px > 1 %
    empty = np.zeros((20, 20), bool)
    cam_map = small.astype(np.float32)

    def rows(area_max):
        return [
            binary_result("small-missed", small, empty, cam_map, 0, 0.1, 373.0, area_max),
            binary_result("small-found", small, small, cam_map, 0, 0.9, 373.0, area_max),
            binary_result("large", large, large, cam_map, 1, 0.9, 373.0, area_max),
            binary_result("empty", empty, empty, cam_map, 0, 0.1, 373.0, area_max),
        ]

    default_results, authors_results = rows(None), rows(0.01)
    default = [r.as_row() for r in default_results]
    authors = [r.as_row() for r in authors_results]
    assert [r["group"] for r in default] == ["abnormal", "abnormal", "abnormal", "normal"]
    assert [r["group"] for r in authors] == ["normal", "normal", "abnormal", "normal"]
    assert [r["dice"] for r in default] == [0.0, 1.0, 1.0, 1.0]
    assert [r["dice"] for r in authors] == [1.0, 0.0, 1.0, 1.0]
    assert authors[1]["hd95"] == 373.0 and authors[0]["hd95"] == 0.0
    assert [r["gt_area"] for r in authors] == [4, 4, 5, 0]  # the true area is kept
    assert math.isnan(authors[0]["pointing"]) and default[0]["pointing"] == 1.0
    summary = summarize(authors, ["dice"])
    assert (summary["normal"]["n"], summary["abnormal"]["n"]) == (3, 1)
    assert summary["normal"]["dice_mean"] == pytest.approx(2 / 3)
    assert summarize(default, ["dice"])["abnormal"]["dice_mean"] == pytest.approx(2 / 3)
    # The confusion counts follow the scored mask: the found small tumour is 4 false positives.
    assert authors_results[1].confusion.matrix.tolist() == [[396, 4], [0, 0]]


@pytest.mark.parametrize("config", ["eval/default.yaml", "experiment/cfdcam_mri.yaml"])
def test_the_configs_state_the_authors_constant(config):
    """YAML cannot import the constant: the configs that name the authors' value are
    held to it here, so there is one number."""
    node = OmegaConf.load(CONF_DIR / config)
    node = node.get("eval", node)
    assert node.empty_hd95 == AUTHORS_EMPTY_HD95


def test_the_unet_rows_score_small_tumours_as_normal_as_the_cam_rows(tmp_path):
    """`eval.normal_area_max` reaches the U-Net's scoring (it was dropped, while its
    summary.json said it applied)."""
    gt = np.zeros((1, 32, 32), bool)
    gt[0, :2, :2] = True  # 4 of 1024 pixels: under 1 %
    with MaskMaker(method="threshold", workers=0, threshold=0.5) as masks:
        module = SegmenterEvaluationModule(
            torch.nn.Identity(), masks, tmp_path / "maps.npz", normal_area_max=0.01
        )
        maps = np.zeros((1, 32, 32), np.float32)
        masks.submit(np.zeros((1, 32, 32, 3), np.uint8), maps)
        info = {
            "ids": ["a"],
            "gts": gt,
            "maps": maps,
            "labels": np.ones(1),
            "scores": [0.1],
            "faithfulness": {},
        }
        module._pending.append(info)
        module._collect()
    (result,) = module.results
    assert result.group == "normal" and result.metrics["dice"] == 1.0 and result.gt_area == 4

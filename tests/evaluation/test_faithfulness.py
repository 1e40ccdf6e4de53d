"""Tests of src/evaluation/faithfulness.py: golden values by hand, torchcam, invariances."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from benchmarks.rows import FixedMaps
from src.evaluation.cam_module import CAMEvaluationModule
from src.evaluation.evaluate import run_test_loop
from src.evaluation.faithfulness import (
    FAITHFULNESS,
    Faithfulness,
    blurred,
    faithfulness_metrics,
    step_counts,
)
from src.evaluation.map_store import read_maps
from src.evaluation.settings import EvalSettings, Method
from src.evaluation.summary import build_summary
from src.models.seeded import cfd_resnet18
from tests.helpers.datasets import DictDataset
from tests.helpers.networks import tiny_net
from tests.helpers.trainer import quiet_trainer_kwargs

pytestmark = pytest.mark.usefixtures("single_thread")

#: One grey 2 x 2 image (raster order 0.8, 0.4 / 0.2, 0.6) scored by its mean.
IMAGE = torch.tensor([[[[0.8, 0.4], [0.2, 0.6]]]])


def mean_score(images: torch.Tensor) -> torch.Tensor:
    return images.mean((1, 2, 3))


def _values(images: torch.Tensor, maps: torch.Tensor, **options) -> dict[str, list[float]]:
    found = faithfulness_metrics(mean_score, images, maps, Faithfulness(**options))
    return {name: value.tolist() for name, value in found.items()}


def test_golden_values_of_a_mean_score():
    """s(x) = 0.5; map 1, 0.5 / 0, 0.5: E = 0.8, 0.2 / 0, 0.3 -> s = 0.325, drop 0.35.
    Order p0, p1, p3 (tie with p1, raster order), p2. Deletion: 0.5, 0.3, 0.2, 0.05, 0 ->
    0.25 * (0.25 + 0.55) = 0.2; insertion: 0, 0.2, 0.3, 0.45, 0.5 -> 0.25 * 1.2 = 0.3."""
    maps = torch.tensor([[[1.0, 0.5], [0.0, 0.5]]])
    found = _values(IMAGE, maps, steps=4)
    expected = {"avg_drop": 0.35, "conf_increase": 0.0, "deletion_auc": 0.2, "insertion_auc": 0.3}
    assert list(found) == list(FAITHFULNESS)
    for name, value in expected.items():
        assert found[name][0] == pytest.approx(value, abs=1e-6), name


def test_a_constant_map_removes_pixels_in_raster_order():
    """Map 0.5 everywhere: E = x / 2, drop 0.5. Deletion 0.5, 0.3, 0.2, 0.15, 0 -> 0.225;
    insertion 0, 0.2, 0.3, 0.35, 0.5 -> 0.275. A map of 1 leaves the score as it is: no
    drop and no increase (the increase is strict)."""
    found = _values(IMAGE, torch.full((1, 2, 2), 0.5), steps=4)
    assert found["avg_drop"][0] == pytest.approx(0.5)
    assert found["deletion_auc"][0] == pytest.approx(0.225)
    assert found["insertion_auc"][0] == pytest.approx(0.275)
    found = _values(IMAGE, torch.ones(1, 2, 2), steps=4)
    assert found["avg_drop"] == [0.0] and found["conf_increase"] == [0.0]


def test_an_increase_counts_one():
    """A score that grows where the image darkens: E = x * map raises it."""
    maps = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    found = faithfulness_metrics(
        lambda x: 1 - mean_score(x), IMAGE, maps, Faithfulness(steps=4, chunk=3)
    )
    assert found["conf_increase"].tolist() == [1.0] and found["avg_drop"].tolist() == [0.0]


def test_step_counts_follow_torchcam():
    assert step_counts(4, 4) == [0, 1, 2, 3, 4]
    assert step_counts(10, 4) == [0, 3, 6, 9, 10]
    assert step_counts(3, 20) == [0, 1, 2, 3]


def test_blur_keeps_a_constant_interior_and_sums_to_one():
    image = torch.full((1, 3, 30, 30), 0.7)
    out = blurred(image)
    assert out[..., 10:20, 10:20] == pytest.approx(torch.full((1, 3, 10, 10), 0.7), abs=1e-6)
    assert out[0, 0, 0, 0] < 0.7  # zero padding darkens the border, as RISE's code


@pytest.mark.parametrize(
    ("options", "key"),
    [({"steps": 0}, "steps"), ({"baseline": "noise"}, "baseline"), ({"chunk": 0}, "chunk")],
)
def test_bad_settings_are_refused(options, key):
    with pytest.raises(ValueError, match=f"eval.faithfulness_{key}"):
        Faithfulness(**options)


def _model_batch(
    batch: int = 3, size: int = 64
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    net = cfd_resnet18(seed=3)
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(batch, 3, size, size, generator=gen)
    maps = torch.rand(batch, size // 8, size // 8, generator=gen)
    maps = torch.nn.functional.interpolate(maps[:, None], size=(size, size), mode="bilinear")
    return net, images, maps[:, 0]


def _sigmoid_score(net: torch.nn.Module):
    return lambda x: torch.sigmoid(net(x)[:, 0])


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_batch_loop_and_chunk_invariance(baseline):
    """The same numbers whatever the chunking, up to float32 noise: a convolution's result
    changes in the last bits with the batch it runs in (1e-6 seen on the drop)."""
    net, images, maps = _model_batch()
    score = _sigmoid_score(net)
    whole = faithfulness_metrics(score, images, maps, Faithfulness(7, baseline, chunk=1000))
    for chunk in (1, 5):
        part = faithfulness_metrics(score, images, maps, Faithfulness(7, baseline, chunk))
        for name in FAITHFULNESS:
            torch.testing.assert_close(part[name], whole[name], atol=1e-5, rtol=0)
    for i in range(len(images)):
        alone = faithfulness_metrics(
            score, images[i : i + 1], maps[i : i + 1], Faithfulness(7, baseline, chunk=4)
        )
        for name in FAITHFULNESS:
            torch.testing.assert_close(alone[name][0], whole[name][i], atol=1e-5, rtol=0)


def test_agrees_with_torchcam():
    """Per image, torchcam's ClassificationMetric and DeletionInsertionMetric with the sigmoid
    as its `logits_fn` (one logit: its argmax class is the only one) give our values, up to
    float32 noise from running the perturbed images in other batches (2e-6 seen)."""
    metrics = pytest.importorskip("torchcam.metrics")
    net, images, maps = _model_batch(batch=4)
    steps = 20  # 64 * 64 pixels: not a multiple, so the last interval is shorter
    ours = {
        baseline: faithfulness_metrics(
            _sigmoid_score(net), images, maps, Faithfulness(steps, baseline, chunk=16)
        )
        for baseline in ("zero", "blur")
    }
    worst = 0.0
    for i in range(len(images)):
        extractor = FixedMaps(net, maps[i : i + 1])
        confidence = metrics.ClassificationMetric(extractor, torch.sigmoid)
        confidence.update(images[i : i + 1])
        theirs = confidence.summary()
        for baseline, substrate in (("zero", None), ("blur", blurred)):
            curves = metrics.DeletionInsertionMetric(
                extractor, torch.sigmoid, steps=steps, baseline=substrate, batch_size=16
            )
            curves.update(images[i : i + 1])
            theirs.update(curves.summary())
            for name in FAITHFULNESS:
                worst = max(worst, abs(theirs[name] - float(ours[baseline][name][i])))
    print(f"max abs difference to torchcam: {worst:.3g}")
    assert worst < 1e-5


@pytest.mark.parametrize("measured", [False, True])
def test_the_test_loop_writes_the_columns_only_when_asked(tmp_path, measured):
    """Per image, the loop's columns are the function's on the saved (float16) maps; off, the
    rows have exactly the columns of before."""
    net = tiny_net(num_classes=1, dead=0)
    dataset = DictDataset(n=5)
    settings = Faithfulness(steps=4, chunk=7) if measured else None
    method = Method("gradcam", "otsu")
    options = EvalSettings(tmp_path, "test", "binary", None, None, 0, 0, faithfulness=settings)

    def build(mask_maker, maps_path):
        return CAMEvaluationModule(
            net, "gradcam", ["conv2"], {}, mask_maker, maps_path, task="binary",
            faithfulness=settings,
        )  # fmt: skip

    trainer = pl.Trainer(inference_mode=False, **quiet_trainer_kwargs())
    loader = DataLoader(dataset, batch_size=2)
    results, _ = run_test_loop(trainer, build, loader, method, options, tmp_path / "maps.npz")
    rows = {r.id: r.as_row() for r in results}
    summary = build_summary(results, options, method, {})
    if not measured:
        assert FAITHFULNESS[0] not in next(iter(rows.values()))
        assert "avg_drop_mean" not in summary["groups"]["all"]
        return
    maps = dict(read_maps(tmp_path / "maps.npz"))
    ids = [dataset[i]["id"] for i in range(len(dataset))]
    expected = faithfulness_metrics(
        lambda x: torch.sigmoid(net(x)[:, 0]),
        dataset.images,
        torch.stack([torch.from_numpy(maps[i]) for i in ids]),
        settings,
    )
    for k, image_id in enumerate(ids):
        for name in FAITHFULNESS:
            assert rows[image_id][name] == pytest.approx(float(expected[name][k]), abs=1e-5)
    mean = sum(rows[i]["deletion_auc"] for i in ids) / len(ids)
    assert summary["groups"]["all"]["deletion_auc_mean"] == pytest.approx(mean)
    assert "faithfulness" in summary["conventions"]

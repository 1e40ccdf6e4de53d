"""The supervised U-Net: topology rule, any-size inputs, the training module and its checks."""

from __future__ import annotations

import time

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from src.data.datasets import TensorSliceDataset
from src.data.errors import DataFormatError
from src.pipeline.config import ConfigError
from src.pipeline.supervised import require_binary_task, require_pixel_labels
from src.segmentation.evaluation import SegmenterEvaluationModule
from src.segmentation.module import SegmenterModule, foreground, per_image_dice
from src.segmentation.unet import build_dynunet, unet_topology
from tests.helpers.trainer import quiet_trainer_kwargs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(
    ("size", "strides"),
    [
        # Halve while >= 8 px: 112 -> 56 -> 28 -> 14 -> 7.
        ((112, 112), [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]]),
        # Odd sizes round up: 240 -> 120 -> 60 -> 30 -> 15 -> 8 -> 4.
        ((240, 240), [[1, 1]] + [[2, 2]] * 6),
        # The short axis stops first (KSDD2-like strips).
        ((128, 32), [[1, 1], [2, 2], [2, 2], [2, 2], [2, 1], [2, 1]]),
    ],
)
def test_topology_halves_each_axis_down_to_the_minimum(size, strides):
    kernels, got = unet_topology(size)
    assert got == strides
    assert kernels == [[3, 3]] * len(strides)


def test_topology_waits_for_the_fine_axes_of_anisotropic_images():
    kernels, strides = unet_topology((64, 64), spacing=(1.0, 3.0))
    # The 3x coarser axis is neither pooled nor convolved until the fine one reaches 4x ...
    assert strides[1] == [2, 1] and kernels[1] == [3, 1]
    # ... after which both are.
    assert strides[2] == [2, 2] and kernels[2] == [3, 3]


@pytest.mark.parametrize("bad", [(), (0, 10)])
def test_topology_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="patch_size"):
        unet_topology(bad)


def test_unet_keeps_any_input_size_and_stacks_deep_supervision_in_training():
    net = build_dynunet((50, 37), filters=[4, 8, 16, 32, 64, 64], deep_supervision=True)
    images = torch.rand(2, 3, 50, 37)
    net.train()
    assert net(images).shape == (2, 2, 1, 50, 37)
    net.eval()
    with torch.no_grad():
        assert net(images).shape == (2, 1, 50, 37)


def test_unet_refuses_too_few_filters():
    with pytest.raises(ValueError, match="5-level U-Net"):
        build_dynunet((64, 64), filters=[8, 16])


def test_per_image_dice_follows_the_empty_case_convention():
    pred = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    target = torch.zeros(3, 1, 4, 4)
    pred[1, 0, :2] = True  # 8 predicted, 4 of them right
    target[1, 0, 1:3] = 1
    target[2, 0, 0, 0] = 1  # missed entirely
    assert per_image_dice(pred, target).tolist() == pytest.approx([1.0, 0.5, 0.0])


def _discs(n: int = 8, size: int = 32, seed: int = 0) -> TensorSliceDataset:
    """Bright discs on noise; every fourth image has none (an empty mask)."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = (torch.rand(n, 1, size, size, generator=generator) * 60 + 40).to(torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        if i % 4 == 0:
            continue
        cy, cx = torch.randint(8, size - 8, (2,), generator=generator)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (3 + i % 4) ** 2
        masks[i][disc] = 1
        images[i, 0][disc] = 200
    labels = (masks.flatten(1).amax(1) > 0).float()[:, None]
    return TensorSliceDataset(images, masks, labels, [f"disc{i}" for i in range(n)])


def test_unet_overfits_a_tiny_set(capsys):
    """Eight 32 px images, 60 full-batch epochs: every mask is learnt (Dice > 0.9, the
    empty ones left empty). The CPU time is reported, not asserted."""
    data = _discs()
    pl.seed_everything(0)
    net = build_dynunet((32, 32), filters=[8, 16, 32, 64], deep_supervision=True)
    module = SegmenterModule(net, lr=1e-2, max_epochs=60, hflip_p=0.0)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=60))
    start = time.process_time()
    trainer.fit(module, DataLoader(data, batch_size=8))
    with capsys.disabled():
        print(f"\nU-Net overfit: {time.process_time() - start:.1f} CPU s")
    module.eval()
    batch = next(iter(DataLoader(data, batch_size=8)))
    with torch.no_grad():
        pred = torch.sigmoid(module(batch["image"])) > 0.5
    dice = per_image_dice(pred, foreground(batch["mask"]))
    assert dice.min() > 0.9, dice


def test_flip_moves_image_and_mask_together():
    module = SegmenterModule(torch.nn.Identity(), hflip_p=1.0)
    images = torch.arange(8.0).view(1, 1, 2, 4).expand(1, 3, 2, 4)
    target = (images[:, :1] > 5).float()
    flipped, flipped_target = module._flip(images, target)
    assert torch.equal(flipped, images.flip(-1))
    assert torch.equal(flipped_target, (flipped[:, :1] > 5).float())


@pytest.mark.parametrize(
    ("argument", "value"), [("hflip_p", 1.5), ("threshold", 0.0), ("threshold", 1.0)]
)
def test_module_rejects_bad_settings(argument, value):
    with pytest.raises(ValueError, match=argument):
        SegmenterModule(torch.nn.Identity(), **{argument: value})


class _Data:
    """The two things the start-up checks read from a DataModule."""

    def __init__(self, dataset, task: str = "binary", root: str = "/data/x") -> None:
        self.task, self.root, self._dataset = task, root, dataset

    def dataset(self, split: str):
        return self._dataset


def test_a_dataset_without_masks_is_refused_before_training():
    data = _discs()
    unlabelled = TensorSliceDataset(
        data.images, torch.zeros_like(data.masks), data.labels, data.ids
    )
    with pytest.raises(DataFormatError, match="needs pixel masks.*train split"):
        require_pixel_labels(_Data(unlabelled))
    void = TensorSliceDataset(data.images, torch.full_like(data.masks, 255), data.labels, data.ids)
    with pytest.raises(DataFormatError, match="/data/x"):
        require_pixel_labels(_Data(void))
    require_pixel_labels(_Data(data))  # masks present: accepted


def test_a_multilabel_dataset_is_refused():
    with pytest.raises(ConfigError, match="binary.*multilabel"):
        require_binary_task(_Data(_discs(), task="multilabel"))


def test_evaluation_scores_are_the_largest_pixel_probability():
    logits = torch.tensor([[[[-3.0, 0.0], [2.0, -1.0]]]])
    module = SegmenterEvaluationModule(torch.nn.Identity(), mask_maker=None, maps_path="x.npz")
    scores, maps = module.scores_and_maps(logits.expand(1, 3, 2, 2), logits)
    assert torch.allclose(maps, torch.sigmoid(logits[:, 0]))
    assert scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item()])


def test_bf16_mixed_precision_trains_on_cpu():
    """`trainer.precision=bf16-mixed`: the Dice+CE loss stays finite and the weights move."""
    data = _discs(n=4)
    pl.seed_everything(0)
    net = build_dynunet((32, 32), filters=[4, 8, 16, 32], deep_supervision=True)
    module = SegmenterModule(net, max_epochs=1, hflip_p=0.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_steps=2, precision="bf16-mixed"))
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    after = net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)

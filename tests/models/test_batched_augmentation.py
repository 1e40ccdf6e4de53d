"""The batched augmentation against torchvision's per-image transforms it replaces: the
sampled parameters' statistics, the pixel maths, seeds, device and dtype, and that the work
per call does not grow with the batch (no loop over images)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from benchmarks.measure import count_aten_ops
from src.models.augment import (
    BatchAugmentation,
    color_jitter_,
    crop_boxes,
    grey_batch,
    is_grey,
    jitter_ranges,
    resample,
    to_grayscale_,
)
from src.models.backbones import build_backbone
from src.models.supcon import SupConModule

N = 4000  # samples for the statistics: standard errors ~1 %, tolerances 4-5 of them


def _box_stats(boxes: torch.Tensor, height: int, width: int) -> dict[str, float]:
    area = boxes[:, 2] * boxes[:, 3] / (height * width)
    return {"area": float(area.mean()), "full": float((area == 1).float().mean())}


def test_crop_boxes_follow_torchvision_random_resized_crop():
    height, width, scale = 24, 32, (0.08, 1.0)
    torch.manual_seed(0)
    ours = crop_boxes(torch.zeros(N, 3, height, width), scale)
    crop = v2.RandomResizedCrop((height, width), scale=scale)
    theirs = torch.tensor(
        [
            [p["top"], p["left"], p["height"], p["width"]]
            for p in (crop.make_params([torch.zeros(3, height, width)]) for _ in range(N))
        ],
        dtype=torch.float32,
    )
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= height).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= width).all()
    assert (ours == ours.round()).all()
    a, b = _box_stats(ours, height, width), _box_stats(theirs, height, width)
    assert a["area"] == pytest.approx(b["area"], abs=0.015)
    ratio = lambda x: (x[:, 3] / x[:, 2]).log().mean()  # noqa: E731
    assert float(ratio(ours)) == pytest.approx(float(ratio(theirs)), abs=0.02)
    left = lambda x: (x[:, 1] / (width - x[:, 3]).clamp(min=1)).mean()  # noqa: E731
    assert float(left(ours)) == pytest.approx(float(left(theirs)), abs=0.03)


def test_crop_falls_back_to_torchvisions_centre_crop():
    boxes = crop_boxes(torch.zeros(3, 3, 10, 40), (0.999, 1.0))  # no try fits a 4:1 image
    assert boxes.tolist() == [[0.0, 13.0, 10.0, 13.0]] * 3
    crop = v2.RandomResizedCrop((10, 40), scale=(0.999, 1.0))
    p = crop.make_params([torch.zeros(3, 10, 40)])
    assert [p["top"], p["left"], p["height"], p["width"]] == [0, 13, 10, 13]


def test_resample_is_crop_then_bilinear_resize_and_flip():
    torch.manual_seed(1)
    images = torch.rand(5, 3, 20, 24)
    boxes = torch.tensor(
        [[0, 0, 20, 24], [3, 5, 9, 13], [10, 0, 10, 7], [2, 2, 5, 5], [0, 4, 20, 20]]
    )
    flip = torch.tensor([False, True, False, True, False])
    for size in [(20, 24), (24, 30)]:  # enlarging: torchvision's antialias does nothing
        out = resample(images, boxes, size, flip)
        for image, (t, left, h, w), flipped, got in zip(
            images, boxes.tolist(), flip, out, strict=True
        ):
            expected = TF.resized_crop(image, t, left, h, w, list(size), antialias=True)
            expected = expected.flip(-1) if flipped else expected
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_jitter_factors_and_order_match_torchvision():
    """Brightness alone: the factor is uniform in [0.2, 1.8]; with both brightness and contrast
    on a constant image each order gives a different, predictable result."""
    ranges = jitter_ranges((0.8, 0.0, 0.0, 0.0))
    assert ranges == {"brightness": (pytest.approx(0.2), 1.8)}
    torch.manual_seed(2)
    factors = color_jitter_(torch.full((N, 3, 1, 1), 0.5), ranges)[:, 0, 0, 0] / 0.5
    factors = factors[factors < 1.99]  # the clamp at 1 hides factors above 2
    assert float(factors.min()) >= 0.2 - 1e-6 and float(factors.max()) <= 1.8 + 1e-6
    assert float(factors.mean()) == pytest.approx(1.0, abs=0.03)
    # brightness 2 then contrast 0 -> the mean grey of the brightened (clamped) image; contrast
    # first -> the mean grey, doubled: with a 0.3 / 0.7 image the two orders differ.
    image = torch.tensor([0.3, 0.7]).repeat(3, 1)[None, :, None, :].repeat(N, 1, 1, 1)
    out = color_jitter_(image.clone(), {"brightness": (2.0, 2.0), "contrast": (0.0, 0.0)})
    weight = sum((0.2989, 0.587, 0.114))
    brightness_first = (0.6 + 1.0) / 2 * weight
    contrast_first = 0.5 * weight * 2
    first = (out[:, 0, 0, 0] - brightness_first).abs() < 1e-4
    second = (out[:, 0, 0, 0] - contrast_first).abs() < 1e-4
    assert bool((first | second).all())
    assert float(first.float().mean()) == pytest.approx(0.5, abs=0.04)  # per-sample order


def test_hue_and_saturation_match_torchvision():
    torch.manual_seed(3)
    images = torch.rand(6, 3, 8, 8)
    for op, function in (("hue", TF.adjust_hue), ("saturation", TF.adjust_saturation)):
        low, high = (-0.4, 0.4) if op == "hue" else (0.0, 2.0)
        torch.manual_seed(4)
        out = color_jitter_(images.clone(), {op: (low, high)})
        torch.manual_seed(4)
        factors = torch.rand(6) * (high - low) + low
        for image, factor, got in zip(images, factors.tolist(), out, strict=True):
            torch.testing.assert_close(got, function(image, factor), atol=1e-5, rtol=0)


def test_supcon_view_statistics_match_torchvision():
    """Flip rate 0.5, grayscale rate 0.2 and jitter rate 0.8 of SupCon's views, read off a
    colour image whose every operation leaves a mark."""
    module = SupConModule(build_backbone("resnet18", 0), crop_scale=(1.0, 1.0))
    gradient = torch.linspace(0.1, 0.9, 8)
    image = torch.stack(
        [gradient[None].expand(8, 8), 0.5 * torch.ones(8, 8), 0.3 * torch.ones(8, 8)]
    )
    torch.manual_seed(5)
    views = module.make_view(image[None].expand(N, -1, -1, -1))
    # A flipped view has its red gradient (jitter keeps its direction) reversed.
    flipped = views[:, 0, :, 0].mean(1) > views[:, 0, :, -1].mean(1)
    grey = (views[:, 0] == views[:, 1]).flatten(1).all(1)
    untouched = (views == image).flatten(1).all(1) | (views == image.flip(-1)).flatten(1).all(1)
    assert float(flipped.float().mean()) == pytest.approx(0.5, abs=0.04)
    assert float(grey.float().mean()) == pytest.approx(0.2, abs=0.03)
    assert float(untouched.float().mean()) == pytest.approx(0.2 * 0.8, abs=0.03)


def test_grey_stays_grey_in_both_stages():
    torch.manual_seed(6)
    grey = torch.rand(16, 1, 12, 12).repeat(1, 3, 1, 1)
    supcon = SupConModule(build_backbone("resnet18", 0), color_jitter_p=1.0)
    finetune = BatchAugmentation(
        hflip_p=0.5, crop_scale=[0.5, 1], brightness=[0.5, 1.5], contrast=[0.5, 1.5],
        bias_field=[-0.3, 0.3], bias_field_p=1.0, shade_negatives_p=1.0,
    )  # fmt: skip
    for out in (supcon.make_view(grey), finetune(grey, torch.zeros(16, 1))):
        assert torch.equal(out[:, :1].expand_as(out), out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_fixes_the_output_on_the_inputs_device_and_dtype(dtype):
    images = torch.rand(8, 3, 16, 16, dtype=dtype)
    supcon = SupConModule(build_backbone("resnet18", 0), image_size=12)
    finetune = BatchAugmentation(
        hflip_p=0.5, crop_scale=[0.5, 1], brightness=[0.5, 1.5], bias_field=[-0.3, 0.3],
        shade_negatives_p=0.5,
    )  # fmt: skip
    labels = torch.zeros(8, 1)
    for augment, shape in ((supcon.make_view, (8, 3, 12, 12)), (finetune, images.shape)):
        outs = []
        for _ in range(2):
            torch.manual_seed(7)
            outs.append(augment(images, labels) if augment is finetune else augment(images))
        assert torch.equal(outs[0], outs[1])
        assert outs[0].shape == shape and outs[0].dtype == dtype
        assert outs[0].device == images.device
        assert 0 <= float(outs[0].min()) and float(outs[0].max()) <= 1


def test_grayscale_is_torchvisions():
    images = torch.rand(2, 3, 5, 5)
    out = to_grayscale_(images.clone(), torch.tensor([True, False]))
    torch.testing.assert_close(out[0], TF.rgb_to_grayscale(images[0], 3), atol=1e-6, rtol=0)
    assert torch.equal(out[1], images[1])


def test_no_loop_over_images():
    """The tensor operations of one call are the same in number for 2 and 64 images."""
    supcon = SupConModule(build_backbone("resnet18", 0))
    finetune = BatchAugmentation(
        hflip_p=0.5, crop_scale=[0.5, 1], brightness=[0.5, 1.5], contrast=[0.5, 1.5],
        bias_field=[-0.3, 0.3], shade_negatives_p=0.5,
    )  # fmt: skip
    for colour in (False, True):
        counts = {}
        for batch in (2, 64):
            images = torch.rand(batch, 1 + 2 * colour, 16, 16).expand(-1, 3, -1, -1)
            labels = torch.zeros(batch, 1)
            counts[batch] = (
                count_aten_ops(lambda i=images: supcon.make_view(i)),
                count_aten_ops(lambda i=images, y=labels: finetune(i, y)),
            )
        assert counts[2] == counts[64]
        assert max(counts[2]) < 1000  # a few hundred operations, whatever the batch


def test_bad_jitter_strength_names_the_key():
    with pytest.raises(ValueError, match="pretrain.module.color_jitter: hue"):
        SupConModule(build_backbone("resnet18", 0), color_jitter=(0.8, 0.8, 0.8, 0.7))
    assert math.isclose(jitter_ranges((0.5, 1.5, 0, 0.1))["contrast"][0], 0.0)


def test_is_grey_per_sample_and_without_looking_at_an_expanded_batch():
    torch.manual_seed(8)
    images = torch.rand(5, 1, 7, 9).repeat(1, 3, 1, 1)
    images[1, 2, 3, 4] += 1e-6  # one pixel of one channel
    images[3, 1] = torch.rand(7, 9)
    images[4, :, 0, 0] = torch.tensor([float("nan")] * 3)  # NaN counts as colour
    assert is_grey(images).tolist() == [True, False, True, False, False]
    expanded = torch.rand(4, 1, 6, 6).expand(-1, 3, -1, -1)
    assert is_grey(expanded).all() and grey_batch(expanded)
    assert grey_batch(images[[0, 2]]) and not grey_batch(images)
    assert is_grey(images[:, :1]).all()  # one channel: grey


def _force_three_channels(monkeypatch) -> None:
    """Send grey batches down the general three-channel path."""
    import src.models.augment as augment
    import src.models.supcon as supcon

    never = lambda images, grey=None: False  # noqa: E731
    monkeypatch.setattr(augment, "grey_batch", never)
    monkeypatch.setattr(supcon, "grey_batch", never)


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (112, 112)])
def test_grey_batch_as_one_channel_equals_the_three_channel_path(monkeypatch, size):
    """A grey CPU batch is augmented as one channel and expanded back: the same random
    draws and, up to float rounding of fused multiply-adds, the same values as all three
    channels through the general path; colour batches keep that path."""
    torch.manual_seed(9)
    grey = torch.rand(12, 1, *size).repeat(1, 3, 1, 1)
    labels = torch.tensor([[0.0], [1.0]] * 6)
    supcon = SupConModule(build_backbone("resnet18", 0), color_jitter_p=1.0, grayscale_p=0.5)
    finetune = BatchAugmentation(
        hflip_p=0.5, crop_scale=[0.5, 1], brightness=[0.5, 1.5], contrast=[0.5, 1.5],
        bias_field=[-0.3, 0.3], shade_negatives_p=0.5,
    )  # fmt: skip
    calls = (lambda x: supcon.make_view(x), lambda x: finetune(x, labels))
    fast = []
    for call in calls:
        torch.manual_seed(10)
        fast.append(call(grey))
    _force_three_channels(monkeypatch)
    for call, quick in zip(calls, fast, strict=True):
        torch.manual_seed(10)
        general = call(grey)
        assert quick.shape == general.shape == grey.shape and quick.stride(1) == 0
        assert general.stride(1) != 0
        torch.testing.assert_close(quick, general, atol=1e-6, rtol=0)
        assert float((quick - grey).abs().max()) > 0.01  # it did augment


def test_colour_operations_spare_grey_samples_whatever_operations_are_on():
    """Saturation alone (no brightness or contrast before it in the list) still leaves the
    grey samples of a mixed batch exactly as they are."""
    torch.manual_seed(11)
    images = torch.rand(4, 3, 6, 6)
    images[::2] = images[::2, :1].expand(-1, 3, -1, -1)
    out = color_jitter_(images.clone(), {"saturation": (0.0, 0.0)}, colour=~is_grey(images))
    assert torch.equal(out[::2], images[::2])
    assert not torch.equal(out[1::2], images[1::2])


def test_separable_resample_is_crop_then_interpolate_in_float64():
    """The two-pass resampling (columns by grid_sample over rows as channels, rows by
    gathers and a lerp) against cropping each sample and F.interpolate (bilinear,
    align_corners=False), boxes at every border, enlarged and shrunk, in float64 so that
    the tolerance holds on any CPU."""
    import torch.nn.functional as F

    torch.manual_seed(12)
    images = torch.rand(6, 2, 13, 17, dtype=torch.float64)
    boxes = torch.tensor(
        [[0, 0, 13, 17], [12, 16, 1, 1], [5, 0, 8, 17], [0, 9, 13, 8], [3, 4, 6, 9], [7, 2, 6, 3]]
    )
    flip = torch.tensor([False, True, True, False, True, False])
    for size in [(13, 17), (20, 9), (4, 5)]:
        out = resample(images, boxes, size, flip)
        assert out.dtype == torch.float64 and out.shape == (6, 2, *size)
        for image, (t, left, h, w), flipped, got in zip(
            images, boxes.tolist(), flip, out, strict=True
        ):
            crop = image[None, :, t : t + h, left : left + w]
            expected = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0]
            expected = expected.flip(-1) if flipped else expected
            torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)

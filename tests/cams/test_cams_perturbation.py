"""Cfd-CAM (docs/cfdcam.md) and the Score-CAM presets (docs/scorecam.md) against independent
loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.cams import build_cam, cfd_weights
from tests.helpers.networks import images, instance_resnet18, tiny_net

# --------------------------------------------------------------------------- weight rule


def test_fig2_worked_example_weights():
    """Paper Fig. 2: masked-image logits 7.8, 10.0, -1.6; the blank image is more confident
    than the third -> weights 0.5, 0.5, 0 (softmax would give 0.1, 0.9, 0)."""
    logits = torch.tensor([7.8, 10.0, -1.6])
    blank = torch.sigmoid(torch.tensor(0.0))  # between the third and the others
    weights = cfd_weights(torch.sigmoid(logits), blank, "faithful")
    assert torch.allclose(weights, torch.tensor([0.5, 0.5, 0.0]), atol=1e-3)
    assert weights[2] == 0 and torch.isclose(weights.sum(), torch.tensor(1.0))
    assert torch.allclose(logits.softmax(0), torch.tensor([0.1, 0.9, 0.0]), atol=1e-2)


def test_weight_rule_threshold_is_inclusive_and_batched():
    scores = torch.tensor([[0.3, 0.5, 0.7], [0.2, 0.2, 0.2]])
    blank = torch.tensor([0.5, 0.9])
    weights = cfd_weights(scores, blank)
    assert torch.allclose(weights[0], torch.tensor([0.0, 0.5 / 1.2, 0.7 / 1.2]))
    assert torch.equal(weights[1], torch.zeros(3))  # all below the blank: no division


def test_wosigmoid_weights_use_scores_without_threshold():
    logits = torch.tensor([7.8, 10.0, -1.6])
    weights = cfd_weights(logits, torch.tensor(100.0), "wosigmoid")
    assert torch.allclose(weights, logits / logits.sum())
    with pytest.raises(ValueError, match="preset"):
        cfd_weights(logits, 0.0, "softmax")


# ------------------------------------------------------- independent Cfd-CAM (docs/cfdcam.md loop)


def reference_cfd_single(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Steps 1-5 for one image (1, 3, H, W), a plain per-channel loop."""
    store = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: store.update(a=o.clone()))
    with torch.no_grad():
        s = torch.sigmoid(model(x)[0, 0])
        handle.remove()
        s0 = torch.sigmoid(model(torch.zeros_like(x))[0, 0])
        height, width = x.shape[-2:]
        masks = []
        for a_k in store["a"][0]:
            m = F.interpolate(a_k[None, None], size=(height, width), mode="bilinear")[0, 0]
            if m.max() > m.min():
                m = (m - m.min()) / (m.max() - m.min())
            masks.append(m)
        scores = torch.sigmoid(model(torch.stack([x[0] * m for m in masks]))[:, 0])
        weights = [float(sk) if sk >= s0 else 0.0 for sk in scores]
        total = sum(weights)
        if total > 0:
            weights = [w / total for w in weights]
        cam = torch.relu(sum(w * m for w, m in zip(weights, masks, strict=True)))
        if cam.max() > cam.min():
            cam = (cam - cam.min()) / (cam.max() - cam.min())
        else:
            cam = torch.zeros_like(cam)
        return cam * s


def reference_cfd(model: nn.Module, x: torch.Tensor, multi_scale: bool) -> torch.Tensor:
    cam = reference_cfd_single(model, x)
    if not multi_scale:
        return cam
    x2 = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    cam2 = F.interpolate(reference_cfd_single(model, x2)[None, None], scale_factor=0.5)[0, 0]
    return (cam + cam2) / 2


@pytest.fixture(scope="module")
def cfd_model():
    return instance_resnet18()


# The model's float32 logits depend on the batch composition (oneDNN kernels) by ~1e-5
# relative; to compare the algorithm and not that noise, the engine forwards the same
# batches as the reference (all 512 channels of the image at once, no skipping).
SAME_BATCHES = {"batch_size": 512, "skip_blank": False}


@pytest.mark.parametrize(
    "scales",
    [
        pytest.param([1], id="single-scale"),
        pytest.param([1, 2], id="multi-scale", marks=pytest.mark.slow),
    ],
)
def test_cfdcam_matches_reference_loop(cfd_model, scales):
    x = images(1, 40, seed=7)
    with build_cam("cfdcam", cfd_model, ["layer4"], scales=scales, **SAME_BATCHES) as cam:
        ours = cam(x)[0]
    ref = reference_cfd(cfd_model, x, multi_scale=len(scales) == 2)
    assert ref.max() > 0.1
    assert (ours - ref).abs().max() <= 1e-5


def test_cfdcam_map_max_is_the_confidence():
    model = tiny_net(num_classes=1)
    x = images(2, 16, seed=9)
    with torch.no_grad():
        s = torch.sigmoid(model(x)[:, 0])
    with build_cam("cfdcam", model, ["act"], scales=[1]) as cam:
        assert torch.allclose(cam(x).amax(dim=(1, 2)), s, atol=1e-6)
    with build_cam("cfdcam", model, ["act"], scales=[1], confidence_scaling=False) as cam:
        assert torch.allclose(cam(x).amax(dim=(1, 2)), torch.ones(2), atol=1e-6)


class DarkIsConfident(nn.Module):
    """Logit = -10 * mean(features): the blank image beats every masked image."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(0.1)
            self.features[0].bias.fill_(0.01)

    def forward(self, x):
        return -10 * self.features(x).mean(dim=(1, 2, 3))[:, None]


def test_all_weights_zero_gives_zero_map_not_nan():
    model = DarkIsConfident().eval()
    with build_cam("cfdcam", model, ["features"]) as cam:
        maps = cam(images(2, 16))
    assert not maps.isnan().any()
    assert torch.equal(maps, torch.zeros_like(maps))


# ------------------------------------------------------------------ exact skipping


class ForwardCounter:
    def __init__(self, model: nn.Module) -> None:
        self.images = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.images += args[0].shape[0]


@pytest.mark.parametrize(
    ("name", "preset"),
    [
        ("cfdcam", "faithful"),
        ("cfdcam", "wosigmoid"),
        ("scorecam", "pgc"),
        ("scorecam", "official"),
    ],
)
def test_skipping_blank_channels_leaves_maps_identical(name, preset):
    model = tiny_net(num_classes=3, dead=2)  # 2 of 6 channels are all zero
    x = images(3, 16, seed=10)
    results = {}
    for skip in (False, True):
        counter = ForwardCounter(model)
        with build_cam(name, model, ["act"], preset=preset, skip_blank=skip, batch_size=5) as c:
            results[skip] = c(x, [0, 1, 2])
        counter.handle.remove()
        results[f"n{skip}"] = counter.images
    assert torch.allclose(results[True], results[False], atol=1e-6, rtol=0)
    scales = 2 if name == "cfdcam" else 1
    # at least the 2 dead channels per image and scale were not forwarded
    assert results["nFalse"] - results["nTrue"] >= scales * 3 * 2


# ---------------------------------------------------------- Score-CAM official preset


def reference_official(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int):
    """The Score-CAM authors' loop: softmax score, constant maps skipped, raw maps summed."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(a=o.clone()))
    with torch.no_grad():
        model(x)
        handle.remove()
        total = torch.zeros(x.shape[-2:])
        for a_k in store["a"][0]:
            up = F.interpolate(a_k[None, None], size=x.shape[-2:], mode="bilinear")[0, 0]
            if up.max() == up.min():
                continue
            mask = (up - up.min()) / (up.max() - up.min())
            score = model(x * mask).softmax(1)[0, target]
            total += score * up
        total = torch.relu(total)
        return (total - total.min()) / (total.max() - total.min())


def test_scorecam_official_matches_authors_loop():
    model = tiny_net(num_classes=3, dead=2)
    x = images(2, 16, seed=12)
    with build_cam("scorecam", model, ["act"], preset="official", batch_size=4) as cam:
        ours = cam(x, [2, 0])
    for i, target in enumerate([2, 0]):
        ref = reference_official(model, model.act, x[i : i + 1], target)
        assert (ours[i] - ref).abs().max() <= 1e-5


def test_scorecam_cfd_preset_equals_cfdcam_single_scale():
    model = tiny_net(num_classes=1)
    x = images(2, 16, seed=13)
    with build_cam("scorecam", model, ["act"], preset="cfd") as cam:
        a = cam(x)
    with build_cam("cfdcam", model, ["act"], scales=[1]) as cam:
        b = cam(x)
    assert torch.equal(a, b)

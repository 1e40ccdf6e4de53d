"""Truncation and layerization plug-ins (docs/layerization-truncation.md)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from src.cams import build_cam
from src.cams.truncation import Truncation, positive_percentile
from tests.helpers.networks import bn_resnet18, images, minmax, tiny_net


def test_positive_percentile_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(6, 50, generator=gen)
    values[1, :49] = -1.0  # a single positive entry
    values[2] = -torch.rand(50, generator=gen)  # no positive entry
    for q in (0, 10, 37.5, 50, 90, 99.9):
        tau = positive_percentile(values, q)[:, 0]
        for row, t in zip(values.numpy(), tau, strict=True):
            positive = row[row > 0]
            if positive.size == 0:
                assert torch.isinf(t)
            else:
                assert t.item() == pytest.approx(np.percentile(positive, q), rel=1e-6)


def test_delta_zero_keeps_exactly_the_positive_gradients():
    g = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(Truncation(0)(g), g.clamp(min=0))
    assert torch.equal(Truncation(0, "layer")(g), g.clamp(min=0))
    assert Truncation(None)(g) is g


def test_larger_delta_keeps_fewer_entries():
    g = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    kept = [int((Truncation(d)(g) != 0).sum()) for d in (0, 20, 50, 90)]
    assert kept == sorted(kept, reverse=True) and kept[0] > kept[1] > kept[3] > 0
    truncated = Truncation(50)(g)
    for b in range(2):
        for c in range(4):
            positive = g[b, c][g[b, c] > 0]
            tau = np.percentile(positive.numpy(), 50)
            kept_values = truncated[b, c][truncated[b, c] != 0]
            assert torch.equal(kept_values.sort().values, positive[positive >= tau].sort().values)
    assert not torch.equal(Truncation(50, "layer")(g), truncated)


@pytest.fixture(scope="module")
def resnet():
    return bn_resnet18(num_classes=3)


@pytest.mark.parametrize(("lt", "plain"), [("ltgradcam", "gradcam"), ("ltlayercam", "layercam")])
def test_lt_without_truncation_and_one_layer_equals_plain(resnet, lt, plain):
    x = images(2, 32, seed=3)
    with build_cam(lt, resnet, ["layer3"], delta=None) as cam:
        ours = cam(x, [0, 2])
    with build_cam(plain, resnet, ["layer3"]) as cam:
        ref = cam(x, [0, 2])
    assert torch.equal(ours, ref)
    with build_cam(lt, resnet, ["layer3"], delta=30) as cam:  # truncation does change it
        assert (cam(x, [0, 2]) - ref).abs().max() > 1e-3


def test_ltfullgrad_without_truncation_equals_fullgrad():
    model = tiny_net()
    x = images(2, 16, seed=4)
    with build_cam("ltfullgrad", model, delta=None) as cam:
        ours = cam(x, [0, 1])
    with build_cam("fullgrad", model) as cam:
        ref = cam(x, [0, 1])
    assert torch.equal(ours, ref)
    with build_cam("ltfullgrad", model, delta=50) as cam:
        assert (cam(x, [0, 1]) - ref).abs().max() > 1e-3


def test_layercam_ignores_delta_zero(resnet):
    """Layer-CAM already uses relu(g): delta = 0 (positive gradients) changes nothing."""
    x = images(2, 32, seed=5)
    with build_cam("layercam", resnet, ["layer2", "layer3"], delta=0) as cam:
        a = cam(x, [1, 2])
    with build_cam("layercam", resnet, ["layer2", "layer3"]) as cam:
        b = cam(x, [1, 2])
    assert torch.equal(a, b)


def test_gradcam_delta_zero_uses_positive_gradients_only():
    """Hooked bn1 is followed by ReLU(inplace=True); the reference runs a copy without the
    in-place op, so this also checks that the engine captures bn1's own output."""
    model = tiny_net()
    reference = copy.deepcopy(model)
    reference.relu.inplace = False
    x = images(2, 16, seed=6)
    store = {}
    handle = reference.bn1.register_forward_hook(lambda m, i, o: store.update(a=o))
    logits = reference(x)
    handle.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(logits[:, 1].sum(), a)
    cam = (g.clamp(min=0).mean(dim=(2, 3), keepdim=True) * a).sum(1).clamp(min=0)
    ref = torch.nn.functional.interpolate(cam[:, None], size=(16, 16), mode="bilinear")[:, 0]
    with build_cam("gradcam", model, ["bn1"], delta=0) as c:
        ours = c(x, 1)
    assert (ours - minmax(ref.detach())).abs().max() < 1e-5


def test_fusions_on_two_layers(resnet):
    """sum = min-max of the summed upsampled relu maps (Eq. 8); max and mean_minmax differ."""
    x = images(1, 32, seed=7)
    layers = ["layer2", "layer3"]
    single = []
    for layer in layers:  # one layer at a time: relu map upsampled, before the min-max
        store = {}
        handle = resnet.get_submodule(layer).register_forward_hook(
            lambda m, i, o, store=store: store.update(a=o)
        )
        logits = resnet(x)
        handle.remove()
        (g,) = torch.autograd.grad(logits[:, 0].sum(), store["a"])
        cam = (g.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1).clamp(min=0).detach()
        single.append(
            torch.nn.functional.interpolate(cam[:, None], size=(32, 32), mode="bilinear")[:, 0]
        )
    with build_cam("ltgradcam", resnet, layers, delta=None, fusion="sum") as cam:
        fused_sum = cam(x, 0)
    assert (fused_sum - minmax(single[0] + single[1])).abs().max() < 1e-5
    with build_cam("layercam", resnet, layers, fusion="max") as cam:
        fused_max = cam(x, 0)
    with build_cam("layercam", resnet, layers, fusion="mean_minmax") as cam:
        fused_mean = cam(x, 0)
    assert (fused_max - fused_mean).abs().max() > 1e-3

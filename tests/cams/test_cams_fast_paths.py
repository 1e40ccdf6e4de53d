"""The speed paths of the engine give the same numbers as the plain computation:
channels-last max-pooling, autograd recorded from the first hooked layer, the truncation
shortcuts (all exact) and BatchNorm folding (to float rounding)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from src.cams import build_cam
from src.cams.capture import FeatureCapture
from src.cams.folding import foldable_pairs
from src.cams.pooling import channels_last_pooling
from src.cams.truncation import Truncation, positive_percentile
from tests.helpers.networks import bn_resnet18, images, vgg16

STAGES = ["layer1", "layer2", "layer3", "layer4"]


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return bn_resnet18(num_classes=3)


# ------------------------------------------------------------------ channels-last pooling


def test_channels_last_pooling_is_bit_identical_in_values_and_gradients(resnet):
    x = images(3, 40)
    plain = x.clone().requires_grad_(True)
    pooled = x.clone().requires_grad_(True)
    reference = resnet(plain)
    with channels_last_pooling(resnet):
        assert hook_count(resnet) == 2  # ResNet-18 has one MaxPool2d
        fast = resnet(pooled)
    assert hook_count(resnet) == 0
    assert torch.equal(fast, reference)
    (grad_ref,) = torch.autograd.grad(reference.sum(), plain)
    (grad_fast,) = torch.autograd.grad(fast.sum(), pooled)
    assert torch.equal(grad_fast, grad_ref)


def test_channels_last_pooling_hands_on_the_layout_it_was_given():
    pool = nn.MaxPool2d(3, 2, 1, return_indices=True)
    x = torch.rand(2, 4, 9, 9)
    with channels_last_pooling(pool):
        values, indices = pool(x)
        assert values.is_contiguous() and indices.is_contiguous()
        cl_values, _ = pool(x.contiguous(memory_format=torch.channels_last))
        assert cl_values.is_contiguous(memory_format=torch.channels_last)
    ref_values, ref_indices = pool(x)
    assert torch.equal(values, ref_values) and torch.equal(indices, ref_indices)


def test_channels_last_pooling_removes_its_hooks_after_an_error():
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 1))
    with pytest.raises(RuntimeError), channels_last_pooling(model):
        model(torch.rand(1, 1, 9, 9))  # 4x4 after pooling: Linear(4) rejects 16 features
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", ["gradcam", "scorecam"])
def test_vgg_maps_do_not_change_with_channels_last_pooling(name, monkeypatch):
    """VGG16 has five max-pools. Reference: the same CAM with every pool forced back to the
    contiguous kernel."""
    model = vgg16(num_classes=2)
    x = images(2, 32)

    def maps() -> torch.Tensor:
        with build_cam(name, model, ["features.28"]) as cam:
            return cam(x, [0, 1])

    fast = maps()
    original = nn.MaxPool2d.forward
    monkeypatch.setattr(nn.MaxPool2d, "forward", lambda self, t: original(self, t.contiguous()))
    assert torch.equal(maps(), fast)


# -------------------------------------------------------- autograd from the hooked layers


def reference_gradients(model, layers, x, target=0):
    """d logit / d layer output with the whole forward recorded from the input."""
    outputs = {}

    def keep(name):
        def hook(module, inputs, output):
            outputs[name] = output
            return output.clone()

        return hook

    handles = [model.get_submodule(n).register_forward_hook(keep(n)) for n in layers]
    try:
        inputs = x.clone().requires_grad_(True)
        score = model(inputs)[:, target].sum()
        return torch.autograd.grad(score, [outputs[n] for n in layers])
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("grad_mode", [False, True])
def test_graph_from_hooks_gives_the_full_graph_gradients(resnet, frozen, grad_mode):
    resnet.requires_grad_(not frozen)
    try:
        x = images(2, 48, seed=3)
        reference = reference_gradients(resnet, STAGES, x)
        modules = [resnet.get_submodule(n) for n in STAGES]
        with FeatureCapture(modules, STAGES) as capture, torch.set_grad_enabled(grad_mode):
            with capture.record(graph_from_hooks=True):
                score = resnet(x)[:, 0].sum()
            assert torch.is_grad_enabled() == grad_mode  # restored after the block
            outputs = capture.outputs
            assert outputs[0].is_leaf and outputs[0].requires_grad  # the graph starts here
            grads = torch.autograd.grad(score, outputs)
        for ours, theirs in zip(grads, reference, strict=True):
            assert torch.equal(ours, theirs)
        assert all(p.grad is None for p in resnet.parameters())
    finally:
        resnet.requires_grad_(True)


def test_graph_from_hooks_restores_the_grad_mode_after_an_error(resnet):
    with FeatureCapture([resnet.layer1], ["layer1"]) as capture:
        with pytest.raises(RuntimeError), capture.record(graph_from_hooks=True):
            resnet(torch.rand(1, 5, 32, 32))  # wrong channel count
        assert torch.is_grad_enabled()


def test_a_hooked_layer_on_a_frozen_side_branch_still_gets_its_gradient():
    """Target layers off the main path (their inputs come from before the first hooked
    layer, their weights frozen) become leaves of their own."""

    class TwoBranches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left = nn.Conv2d(3, 4, 3, padding=1)
            self.right = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = torch.cat([self.left(x).relu(), self.right(x).relu()], dim=1)
            return self.head(features.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = TwoBranches().eval().requires_grad_(False)
    x = images(2, 12)
    reference = reference_gradients(model, ["left", "right"], x)
    with build_cam("gradcam", model, ["left", "right"]) as cam:
        maps = cam(x)
    for grad in reference:
        assert grad.abs().sum() > 0
    # the same maps as a Grad-CAM computed from the reference gradients
    acts = [model.left(x), model.right(x)]
    layer_maps = [
        (g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1).clamp(min=0)
        for a, g in zip(acts, reference, strict=True)
    ]
    fused = layer_maps[0] + layer_maps[1]
    low = fused.amin(dim=(1, 2), keepdim=True)
    expected = (fused - low) / (fused.amax(dim=(1, 2), keepdim=True) - low)
    assert (maps - expected).abs().max() <= 1e-5


# ---------------------------------------------------------------------- truncation


@pytest.mark.parametrize("scope", ["channel", "layer"])
def test_delta_zero_shortcut_equals_the_percentile_rule(scope):
    g = torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(4))
    g[0, 1] = -1.0  # a channel without positive entries
    g[1, 2, 0, 0] = 0.0
    flat = g.flatten(2 if scope == "channel" else 1)
    tau = positive_percentile(flat, 0.0)
    rule = torch.where((flat > 0) & (flat >= tau), flat, torch.zeros_like(flat)).view_as(g)
    assert torch.equal(Truncation(0, scope)(g), rule)


def test_positive_percentile_handles_all_positive_and_tied_rows():
    values = torch.tensor([[3.0, 1.0, 2.0, 4.0], [2.0, 2.0, 2.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    tau = positive_percentile(values, 50.0)[:, 0]
    assert tau[0] == pytest.approx(2.5) and tau[1] == 2.0 and torch.isinf(tau[2])


# ---------------------------------------------------------------- BatchNorm folding

GRADIENT_METHODS = ["cam", "gradcam", "gradcampp", "xgradcam", "layercam", "ltgradcam"]


def test_foldable_pairs_follow_the_dataflow(resnet):
    pairs = foldable_pairs(resnet)
    assert len(pairs) == 20  # every conv of ResNet-18 is followed by its own BatchNorm
    assert ("conv1", "bn1") in pairs and ("layer2.0.downsample.0", "layer2.0.downsample.1") in pairs
    kept = foldable_pairs(resnet, keep=["layer4.1.conv2"])
    assert ("layer4.1.conv2", "layer4.1.bn2") not in kept and len(kept) == 19

    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.bn(self.conv(x))
            return x

    assert foldable_pairs(Untraceable()) == []
    shared = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    twice = nn.Sequential(shared, nn.ReLU(), shared)  # the same pair called twice
    assert foldable_pairs(twice) == []


@pytest.mark.parametrize("name", GRADIENT_METHODS)
@pytest.mark.parametrize(
    "layers",
    [["layer4"], STAGES, ["layer3.1.bn2", "layer4.0.conv1"]],
    ids=["l4", "4stages", "bn-conv"],
)
def test_folded_maps_equal_the_unfolded_ones(resnet, name, layers):
    """Target layers may be stages, a BatchNorm (folded into Identity: same output) or a
    conv (kept unfolded so its hooked output stays the raw convolution).

    Folding changes the float32 rounding, so both maps are measured against the unfolded
    network in float64, and folding may cost at most a few times what float32 rounding
    costs the unfolded maps on this CPU. That scale is the method's own: XGrad-CAM divides
    by sum(A), which on a raw conv output can cancel to 1e-4 of its terms and multiplies
    their rounding (1.7e-4 of the map here, 5e-3 on another CPU); the others stay near 1e-6,
    hence the floor of 1e-5."""
    x = images(3, 48, seed=5)
    with build_cam(name, resnet, layers, fold_batchnorm=False) as cam:
        plain = cam(x, [0, 1, 2])
    with build_cam(name, resnet, layers) as cam:
        assert cam.method.folds  # on by default
        folded = cam(x, [0, 1, 2])
    with build_cam(name, copy.deepcopy(resnet).double(), layers, fold_batchnorm=False) as cam:
        exact = cam(x.double(), [0, 1, 2])
    rounding = (plain.double() - exact).abs().max().item()
    assert (folded.double() - exact).abs().max().item() <= max(4 * rounding, 1e-5)
    assert hook_count(resnet) == 0


def test_folded_twin_follows_weight_changes_and_leaves_the_model_alone():
    model = bn_resnet18(num_classes=2, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(2, 40, seed=6)

    def maps(fold: bool) -> torch.Tensor:
        with build_cam("gradcam", model, ["layer3", "layer4"], fold_batchnorm=fold) as cam:
            return cam(x, [0, 1])

    first = maps(True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(isinstance(m, nn.Identity) for m in model.modules())
    with torch.no_grad():  # the kind of change training makes between two evaluations
        model.layer4[1].bn2.running_mean.add_(0.5)
        model.layer3[0].conv1.weight.mul_(1.5)
    after = maps(True)
    assert (after - first).abs().max() > 1e-2
    assert (after - maps(False)).abs().max() <= 1e-4

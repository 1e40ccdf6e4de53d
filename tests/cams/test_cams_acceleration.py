"""Speed options (benchmarks/results.md): autocast, channels_last, compile, batch_size=auto, pruned
backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.cams import acceleration, build_cam, model_copies
from src.cams.acceleration import AUTO_MAX_BATCH, MaskedForward, auto_batch_size
from tests.helpers.networks import images, instance_resnet18, sensitive_net, tiny_net

PERTURBATION = [
    ("cfdcam", {"preset": "faithful"}),
    ("cfdcam", {"preset": "wosigmoid"}),
    ("scorecam", {"preset": "pgc"}),
    ("scorecam", {"preset": "official"}),
]


def run(name, model, x, layer="act", **options):
    batch = x.shape[0]
    targets = None if name == "cfdcam" or model.fc.out_features == 1 else [0, 2, 1][:batch]
    with build_cam(name, model, [layer], **options) as cam:
        return cam(x, targets)


@pytest.fixture(scope="module")
def model():
    return tiny_net(num_classes=3, dead=0)


@pytest.mark.parametrize(("name", "preset"), PERTURBATION)
@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize(
    "option",
    [
        pytest.param({"autocast_dtype": "bfloat16"}, id="bf16"),
        pytest.param({"autocast_dtype": "float16"}, id="fp16"),
        pytest.param({"channels_last": True}, id="channels_last"),
    ],
)
def test_speed_options_keep_maps_within_1e2_of_float32(name, preset, option, classes):
    model = sensitive_net(classes)
    x = images(2, 32, seed=4)
    reference = run(name, model, x, **preset)
    fast = run(name, model, x, **preset, **option)
    assert reference.amax() > 0.1
    assert (fast - reference).abs().max() <= 1e-2


@pytest.mark.slow
def test_compile_keeps_maps_within_1e2_of_float32_and_sees_new_weights():
    model = instance_resnet18()
    x = images(1, 64, seed=5)
    options = {"preset": "official", "batch_size": 128}
    for _ in range(2):  # the second round: after a weight change (frozen twin -> rebuilt)
        reference = run("scorecam", model, x, "layer4", **options)
        fast = run("scorecam", model, x, "layer4", compile=True, channels_last=True, **options)
        assert (fast - reference).abs().max() <= 1e-2
        with torch.no_grad():
            model.fc.weight.mul_(-1)
            model.layer4[1].conv2.weight.mul_(0.3)


def test_channels_last_leaves_the_model_alone_and_follows_its_weights(model):
    model = tiny_net(num_classes=3, dead=0)
    x = images(2, 16, seed=6)
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    first = run("scorecam", model, x, channels_last=True)
    assert model.conv2.weight.is_contiguous()  # the twin is converted, not the model
    with build_cam("scorecam", model, ["act"], channels_last=True):  # capture hooks are on
        twin = model_copies.twin_of(model, channels_last=True, compile_model=False)
        assert twin is not model and twin.conv2.weight.is_contiguous(
            memory_format=torch.channels_last
        )
        assert sum(len(m._forward_hooks) for m in twin.modules()) == 0
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks
    with torch.no_grad():  # a weight update after the twin was built must be seen
        model.conv2.weight.mul_(-1.5)
        model.fc.bias.add_(0.3)
    updated = run("scorecam", model, x, channels_last=True)
    plain = run("scorecam", model, x)
    assert not torch.allclose(first, plain, atol=1e-2)
    assert (updated - plain).abs().max() <= 1e-5


def test_autocast_scores_blank_image_in_the_same_precision(model):
    """Skipped (all-zero) channels take the blank score; with autocast on, skipping must
    still give the same map as forwarding them, i.e. the blank is scored in bf16 too."""
    model = tiny_net(num_classes=1, dead=2)
    x = images(3, 16, seed=11)
    skipped = run("cfdcam", model, x, autocast_dtype="bfloat16", skip_blank=True)
    forwarded = run("cfdcam", model, x, autocast_dtype="bfloat16", skip_blank=False)
    assert (skipped - forwarded).abs().max() <= 1e-6


# ------------------------------------------------------------------ batch_size=auto


def test_auto_batch_size_arithmetic():
    assert auto_batch_size(item_bytes=100, free_bytes=1000) == 5
    assert auto_batch_size(item_bytes=100, free_bytes=10) == 1  # never below one image
    assert auto_batch_size(item_bytes=1, free_bytes=10**12) == AUTO_MAX_BATCH


def test_probe_estimate_grows_with_image_area(model):
    forward = MaskedForward()
    small = forward.item_bytes(model, images(1, 16))
    large = forward.item_bytes(model, images(1, 32))
    assert small > 2 * 3 * 16 * 16 * 4  # at least the input and its mask
    assert 3.5 * small <= large <= 4.5 * small


@pytest.mark.parametrize(("name", "preset"), PERTURBATION)
def test_auto_batch_size_follows_free_memory_and_keeps_maps(monkeypatch, model, name, preset):
    x = images(3, 16, seed=2)
    fixed = run(name, model, x, batch_size=5, **preset)
    item = MaskedForward().item_bytes(model, x[:1])
    for free, chunk in ((3 * item, 1), (10**15, AUTO_MAX_BATCH)):
        monkeypatch.setattr(acceleration, "free_memory", lambda device, free=free: free)
        with build_cam(name, model, ["act"], batch_size="auto", **preset) as cam:
            auto = cam(x, None if name == "cfdcam" else [0, 2, 1])
            assert cam.method.chunk == chunk
        assert (auto - fixed).abs().max() <= 1e-5


def test_free_memory_reads_the_system():
    free = acceleration.free_memory(torch.device("cpu"))
    assert 0 < free < 1 << 50


@pytest.mark.parametrize("value", ["big", 0, 2.5, True])
def test_bad_batch_size_and_options_are_named(model, value):
    with pytest.raises(ValueError, match="batch_size"):
        build_cam("cfdcam", model, ["act"], batch_size=value)
    with pytest.raises(ValueError, match="autocast_dtype"):
        build_cam("cfdcam", model, ["act"], autocast_dtype="int8")
    with pytest.raises(ValueError, match="channels_last"):
        build_cam("scorecam", model, ["act"], channels_last="yes")
    with pytest.raises(ValueError, match="compile"):
        build_cam("gradcam", model, ["act"], compile=True)  # perturbation methods only


# ------------------------------------------------------- gradient CAMs: pruned backward


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("backward ran below the hooked layer")


class StemWithoutBackward(nn.Module):
    """tiny_net behind a stem whose backward must never run (docs/gradient-cams.md,
    benchmarks/results.md: the gradient goes
    to the hooked activations only, not to the input or the parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net(num_classes=3, dead=0)

    def forward(self, x):
        return self.net(_NoBackward.apply(x))


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "xgradcam", "layercam", "ltgradcam"])
def test_gradient_cams_backpropagate_only_to_the_hooked_layers(name):
    model = StemWithoutBackward().eval()
    with build_cam(name, model, ["net.bn1", "net.act"][-1 if name[:2] != "lt" else -2 :]) as cam:
        maps = cam(images(2, 16), [0, 1])
    assert maps.amax() > 0.1
    with build_cam("fullgrad", model) as cam, pytest.raises(AssertionError, match="below"):
        cam(images(2, 16), [0, 1])  # FullGrad needs the input gradient: the stem's backward

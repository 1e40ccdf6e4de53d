"""Engine contract: hooks, model state, grad modes, batching, edge cases, errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.cams import CAM_METHODS, build_cam
from src.cams.gradient import XGRADCAM_EPS, xgradcam_rule
from tests.helpers.networks import bn_resnet18, images, minmax, tiny_net

LAYERS = ["bn1", "act"]  # bn1 is followed by ReLU(inplace=True)
PERTURB = ("scorecam", "cfdcam")


def layers_for(name: str) -> list[str]:
    return LAYERS if name.startswith("lt") else ["act"]


def all_hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def run(name, model, x, targets=None, **options):
    with build_cam(name, model, layers_for(name), **options) as cam:
        return cam(x, targets)


@pytest.fixture
def model():
    return tiny_net(num_classes=3)


# ------------------------------------------------------------------ output contract


@pytest.mark.parametrize("name", CAM_METHODS)
def test_output_contract(model, name):
    x = images(2, 16)
    maps = run(name, model, x, [0, 2])
    assert maps.shape == (2, 16, 16) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 and not maps.isnan().any()
    assert maps.amax(dim=(1, 2)).min() > 0.1


@pytest.mark.parametrize("name", CAM_METHODS)
def test_batch_equals_loop(model, name):
    x = images(3, 16, seed=1)
    targets = [2, 0, 1]
    options = {"batch_size": 4} if name in PERTURB else {}
    batched = run(name, model, x, targets, **options)
    for i in range(3):
        single = run(name, model, x[i : i + 1], targets[i : i + 1])
        assert (batched[i] - single[0]).abs().max() <= 1e-5, name


@pytest.mark.parametrize(
    ("name", "preset"),
    [
        ("scorecam", "pgc"),
        ("scorecam", "official"),
        ("cfdcam", "faithful"),
        ("cfdcam", "wosigmoid"),
    ],
)
def test_perturbation_maps_do_not_depend_on_batch_size(model, name, preset):
    x = images(3, 16, seed=2)
    reference = run(name, model, x, [1, 1, 0], batch_size=1, preset=preset)
    for batch_size in (2, 5, 64):
        maps = run(name, model, x, [1, 1, 0], batch_size=batch_size, preset=preset)
        assert (maps - reference).abs().max() <= 1e-6


def test_options_reach_the_engine(model):
    x = images(2, 16, seed=10)
    nearest = run("cfdcam", model, x, [0, 1])
    bilinear = run("cfdcam", model, x, [0, 1], downsample_mode="bilinear")
    assert (nearest - bilinear).abs().max() > 1e-3
    channel = run("ltgradcam", model, x, [0, 1], delta=50)
    layer = run("ltgradcam", model, x, [0, 1], delta=50, truncation_scope="layer")
    assert (channel - layer).abs().max() > 1e-3


def test_memory_is_bounded_by_batch_size(model):
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    run("cfdcam", model, images(4, 16), batch_size=3)
    handle.remove()
    assert seen.count(4) == 2  # the feature forwards of the 4 images at scales 1 and 2
    assert all(n <= 3 for n in seen if n != 4)  # blank image and masked chunks
    assert sum(n for n in seen if n != 4) > 2 * 4  # masked images were forwarded in chunks


def test_targets_none_means_predicted_class_or_positive_class(model):
    x = images(2, 16, seed=3)
    predicted = model(x).argmax(1)
    assert torch.equal(run("gradcam", model, x, None), run("gradcam", model, x, predicted))
    binary = tiny_net(num_classes=1)
    assert torch.equal(run("gradcam", binary, x, None), run("gradcam", binary, x, 0))
    with pytest.raises(ValueError, match="only class id is 0"):
        run("gradcam", binary, x, [1, 0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        run("gradcam", model, x, [0, 3])


def test_cam_weights_are_the_fc_weights():
    """CAM (docs/gradient-cams.md): fc weights of the target class on the last layer."""
    model = bn_resnet18(num_classes=4)
    x = images(2, 64, seed=4)
    store = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: store.update(a=o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    weights = model.fc.weight[[3, 1]].detach()
    raw = (weights[:, :, None, None] * store["a"]).sum(1).clamp(min=0)
    ref = minmax(F.interpolate(raw[:, None], size=(64, 64), mode="bilinear")[:, 0])
    with build_cam("cam", model, ["layer4"]) as cam:
        assert (cam(x, [3, 1]) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "layercam", "fullgrad", "scorecam"])
def test_inplace_ops_after_the_hooked_layer_do_not_change_the_map(model, name):
    """bn1 feeds ReLU(inplace=True); the map must equal the one of a non-inplace copy."""
    reference = copy.deepcopy(model)
    reference.relu.inplace = False
    x = images(2, 16, seed=5)
    with build_cam(name, model, ["bn1"]) as cam:
        ours = cam(x, [0, 1])
    with build_cam(name, reference, ["bn1"]) as cam:
        ref = cam(x, [0, 1])
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "fullgrad"])
def test_multi_scale_is_the_mean_of_rescaled_runs(model, name):
    x = images(2, 16, seed=6)
    single = run(name, model, x, [0, 1])
    double = run(name, model, F.interpolate(x, scale_factor=2, mode="bilinear"), [0, 1])
    expected = (single + F.interpolate(double[:, None], scale_factor=0.5)[:, 0]) / 2
    assert (run(name, model, x, [0, 1], scales=[1, 2]) - expected).abs().max() <= 1e-6


@pytest.mark.parametrize("name", CAM_METHODS)
def test_constant_maps_give_zeros_not_nan(name):
    """Every channel of `act` is zero: the maps (and all gradients below it) vanish."""
    dead = tiny_net(num_classes=3, dead=6)
    maps = run(name, dead, images(2, 16), [0, 1], scales=[1, 2])
    assert torch.equal(maps, torch.zeros_like(maps))


def test_layers_by_module_equal_layers_by_name(model):
    x = images(1, 16)
    with build_cam("layercam", model, [model.bn1, model.act]) as cam:
        by_module = cam(x, 0)
    with build_cam("layercam", model, ["bn1", "act"]) as cam:
        assert torch.equal(cam(x, 0), by_module)


# -------------------------------------------------------------- hooks and model state


def test_hooks_live_only_inside_the_with_block(model):
    assert all_hooks(model) == 0
    with build_cam("ltgradcam", model, LAYERS) as cam:
        assert all_hooks(model) == 2
        cam(images(1, 16))
    assert all_hooks(model) == 0
    with pytest.raises(RuntimeError, match="with build_cam"):
        cam(images(1, 16))


def test_hooks_removed_and_modes_restored_after_an_exception(model):
    model.train()
    with pytest.raises(ZeroDivisionError):
        with build_cam("fullgrad", model) as cam:
            cam(images(1, 16))
            raise ZeroDivisionError
    assert all_hooks(model) == 0

    class Broken(nn.Module):
        def forward(self, x):
            raise KeyError("model failure")

    broken = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), Broken()).train()
    with pytest.raises(KeyError, match="model failure"):
        with build_cam("scorecam", broken, ["1"]) as cam:
            cam(images(1, 16))
    assert all_hooks(broken) == 0
    assert all(m.training for m in broken.modules())


@pytest.mark.parametrize("name", ["gradcam", "fullgrad", "cfdcam"])
def test_model_modes_params_and_grads_are_left_as_they_were(model, name):
    model.train()
    model.conv2.eval()  # a mixed state must survive too
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 7.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    run(name, model, images(2, 16, seed=7), [0, 1])
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model.conv1.weight.grad, torch.full_like(model.conv1.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "conv1.weight")
    for key, value in model.state_dict().items():  # BN running stats untouched
        assert torch.equal(value, before[key]), key


def test_grad_mode_of_the_caller_does_not_matter(model):
    x = images(2, 16, seed=8)
    expected = run("gradcam", model, x, [0, 1])
    with torch.no_grad():
        assert torch.equal(run("gradcam", model, x, [0, 1]), expected)
    for p in model.parameters():
        p.requires_grad_(False)  # a frozen model still gets activation gradients
    assert torch.equal(run("gradcam", model, x, [0, 1]), expected)


def test_inference_mode_raises_a_clear_error(model):
    with build_cam("gradcam", model, ["act"]) as cam:
        with torch.inference_mode():
            x = images(1, 16)
            with pytest.raises(RuntimeError, match="inference_mode"):
                cam(x)
        maps = cam(x)  # an inference tensor made outside is accepted afterwards
    assert maps.shape == (1, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["gradcam", "fullgrad", "cfdcam"])
def test_cuda_matches_cpu(model, name):
    x = images(2, 16, seed=9)
    cpu = run(name, model, x, [0, 1])
    gpu = run(name, model.cuda(), x.cuda(), [0, 1])
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() <= 1e-4


# ------------------------------------------------------------------------ bad input


def test_unknown_method_lists_the_valid_names(model):
    with pytest.raises(ValueError, match="valid names: cam, gradcam"):
        build_cam("gradcam2", model, ["act"])


def test_unknown_layer_is_named_with_suggestions(model):
    with pytest.raises(ValueError, match=r"'acts'.*act"):
        build_cam("gradcam", model, ["acts"])
    with pytest.raises(ValueError, match="not a submodule"):
        build_cam("gradcam", model, [nn.ReLU()])
    with pytest.raises(ValueError, match="needs target_layers"):
        build_cam("gradcam", model)


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("gradcam", {"delta": 100}, "delta"),
        ("gradcam", {"delta": -1}, "delta"),
        ("gradcam", {"delta": "20"}, "delta"),
        ("gradcam", {"truncation_scope": "image"}, "truncation_scope"),
        ("gradcam", {"fusion": "avg"}, "fusion"),
        ("gradcam", {"scales": []}, "scales"),
        ("gradcam", {"scales": [1, 0]}, "scales"),
        ("gradcam", {"downsample_mode": "lanczos"}, "downsample_mode"),
        ("gradcam", {"preset": "pgc"}, "preset"),
        ("gradcam", {"fold_batchnorm": "yes"}, "fold_batchnorm"),
        ("fullgrad", {"fold_batchnorm": True}, "fold_batchnorm"),
        ("scorecam", {"preset": "faithful"}, "preset"),
        ("scorecam", {"delta": 0}, "delta"),
        ("cfdcam", {"preset": "pgc"}, "preset"),
        ("cfdcam", {"batch_size": 0}, "batch_size"),
        ("cfdcam", {"skip_blank": "yes"}, "skip_blank"),
        ("cfdcam", {"confidence_scaling": 1}, "confidence_scaling"),
        ("cfdcam", {"bogus": 1}, "bogus"),
    ],
)
def test_invalid_options_name_the_option(model, name, options, field):
    with pytest.raises(ValueError, match=field):
        build_cam(name, model, ["act"], **options)


def test_bad_images_and_targets(model):
    with build_cam("gradcam", model, ["act"]) as cam:
        with pytest.raises(ValueError, match="B, C, H, W"):
            cam(torch.rand(3, 16, 16))
        with pytest.raises(ValueError, match="2 entries"):
            cam(images(3, 16), [0, 1])


def test_xgradcam_weights_survive_a_cancelling_activation_sum():
    """A channel whose activations sum to 1e-4 of their size: summed in float32 the weight
    is off by 3e-4 (and by another amount for another summation order); the rule sums in
    float64 and agrees with the float64 formula to float32 precision."""
    a = torch.tensor([[[[1.0, 3e-5], [-1.0, 7e-5]]]])
    g = torch.tensor([[[[0.5, 0.25], [0.5, 1.0]]]])
    a64, g64 = a.double(), g.double()
    weights = (g64 * a64).sum(dim=(2, 3)) / (a64.sum(dim=(2, 3)) + XGRADCAM_EPS)
    exact = (weights[:, :, None, None] * a64).sum(dim=1)
    error = (xgradcam_rule(a, g).double() - exact).abs().max() / exact.abs().max()
    assert error <= 1e-6

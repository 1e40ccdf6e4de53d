"""Golden agreement with grad-cam 1.5.7 (docs/gradient-cams.md; ScoreCAM = docs/scorecam.md preset
``pgc``).

Random ResNet-18 with trained-like BatchNorm statistics (``layer3``, where the gradient is
not spatially uniform) and VGG16's feature stack; batch of 3 with different targets; max
abs difference <= 1e-4 after per-image min-max.
"""

from __future__ import annotations

import pytest
import torch

from src.cams import build_cam
from tests.helpers.networks import bn_resnet18, images, minmax, vgg16

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TOL = 1e-4
TARGETS = [0, 3, 1]
REFERENCE = {
    "gradcam": pgc.GradCAM,
    "gradcampp": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "fullgrad": pgc.FullGrad,
    "scorecam": pgc.ScoreCAM,
}


def reference_maps(name, model, layers, x, targets=TARGETS):
    modules = [] if name == "fullgrad" else [model.get_submodule(n) for n in layers]
    with REFERENCE[name](model=model, target_layers=modules) as ref:
        out = ref(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    return torch.from_numpy(out)


def our_maps(name, model, layers, x, targets=TARGETS, **options):
    with build_cam(name, model, target_layers=layers, **options) as cam:
        return cam(x, torch.tensor(targets))


def assert_golden(ours, ref):
    assert ours.shape == ref.shape
    assert (ref.amax(dim=(1, 2)) > 0.5).sum() >= 2, "reference maps are trivial: a vacuous test"
    diff = (minmax(ours) - minmax(ref.float())).abs().max().item()
    assert diff <= TOL, f"max abs difference {diff:.2e} > {TOL}"


@pytest.fixture(scope="module")
def resnet():
    return bn_resnet18(num_classes=5)


@pytest.fixture(scope="module")
def vgg():
    return vgg16(num_classes=4)


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "xgradcam", "layercam", "fullgrad"])
def test_gradient_methods_match_gradcam_resnet_layer3(resnet, name):
    x = images(3, 64, seed=1)
    assert_golden(
        our_maps(name, resnet, ["layer3"], x), reference_maps(name, resnet, ["layer3"], x)
    )


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "xgradcam", "layercam", "fullgrad"])
def test_gradient_methods_match_gradcam_vgg16_stage(vgg, name):
    x = images(3, 64, seed=2)
    layers = ["features.23"]
    assert_golden(our_maps(name, vgg, layers, x), reference_maps(name, vgg, layers, x))


def test_scorecam_pgc_matches_gradcam_resnet_layer3(resnet):
    x = images(3, 32, seed=3)
    ours = our_maps("scorecam", resnet, ["layer3"], x, preset="pgc", batch_size=96)
    assert_golden(ours, reference_maps("scorecam", resnet, ["layer3"], x))


def test_scorecam_pgc_matches_gradcam_vgg16_stage(vgg):
    x = images(3, 32, seed=4)
    ours = our_maps("scorecam", vgg, ["features.9"], x, preset="pgc", batch_size=128)
    assert_golden(ours, reference_maps("scorecam", vgg, ["features.9"], x))


@pytest.mark.parametrize("name", ["gradcam", "layercam"])
def test_mean_minmax_fusion_matches_gradcam_multilayer(resnet, vgg, name):
    x = images(3, 64, seed=5)
    layers = ["layer2", "layer3"]
    ours = our_maps(name, resnet, layers, x, fusion="mean_minmax")
    assert_golden(ours, reference_maps(name, resnet, layers, x))
    layers = ["features.16", "features.23"]
    ours = our_maps(name, vgg, layers, x, fusion="mean_minmax")
    assert_golden(ours, reference_maps(name, vgg, layers, x))


def test_default_targets_are_the_predicted_classes(resnet):
    x = images(3, 64, seed=6)
    predicted = resnet(x).argmax(1).tolist()
    with build_cam("gradcam", resnet, target_layers=["layer3"]) as cam:
        ours = cam(x, None)
    assert_golden(ours, reference_maps("gradcam", resnet, ["layer3"], x, targets=predicted))


def test_methods_differ_on_layer3(resnet):
    """The golden tests would be vacuous if the methods coincided on this layer."""
    x = images(3, 64, seed=1)
    grad = our_maps("gradcam", resnet, ["layer3"], x)
    for name in ["xgradcam", "layercam", "fullgrad"]:
        assert (our_maps(name, resnet, ["layer3"], x) - grad).abs().max() > 0.05, name

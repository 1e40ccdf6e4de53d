"""Backbones: names, normalisation inside the model, head split, local weight files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.models.backbones import INPUT_NORMS, build_backbone, stage_names
from src.models.checkpoints import CheckpointError

X = torch.rand(2, 3, 64, 64)


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    return build_backbone("vgg16", 1, norm="none").eval()


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_resnet_stages_and_norm(norm):
    net = build_backbone("resnet18", 3, norm=norm).eval()
    modules = dict(net.named_modules())
    assert net.cam_stages == ["layer1", "layer2", "layer3", "layer4"]
    assert all(name in modules for name in net.cam_stages)
    assert net.feature_dim == 512 and net(X).shape == (2, 3)
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d | nn.BatchNorm2d)]
    if norm == "instance":  # the authors' choice: InstanceNorm2d without affine parameters
        assert norms and all(isinstance(m, nn.InstanceNorm2d) and not m.affine for m in norms)
    else:
        assert norms and all(isinstance(m, nn.BatchNorm2d) for m in norms)


def test_vgg16_stages_are_the_five_maxpools(vgg16):
    modules = dict(vgg16.named_modules())
    assert vgg16.cam_stages == [f"features.{i}" for i in (4, 9, 16, 23, 30)]
    assert all(isinstance(modules[s], nn.MaxPool2d) for s in vgg16.cam_stages)
    assert vgg16.feature_dim == 4096 and vgg16(X).shape == (2, 1)


def test_vgg16_bn_stage_indices_are_computed():
    net = build_backbone("vgg16", 1, norm="batch")
    modules = dict(net.named_modules())
    assert net.cam_stages == [f"features.{i}" for i in (6, 13, 23, 33, 43)]
    assert all(isinstance(modules[s], nn.MaxPool2d) for s in net.cam_stages)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.features)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"arch": "resnet50"}, "arch"),
        ({"arch": "resnet18", "norm": "group"}, "norm"),
        ({"arch": "vgg16", "norm": "instance"}, "norm"),
        ({"arch": "resnet18", "input_norm": "cifar"}, "input_norm"),
        ({"arch": "resnet18", "padding_mode": "circle"}, "padding_mode"),
    ],
)
def test_unknown_choices_name_field_and_valid_values(kwargs, field):
    with pytest.raises(ValueError, match=rf"backbone\.{field}=.*not one of \["):
        build_backbone(num_classes=1, **kwargs)


def test_input_normalisation_lives_inside_the_model():
    torch.manual_seed(0)
    plain = build_backbone("resnet18", 1, norm="batch", input_norm="identity").eval()
    imagenet = build_backbone("resnet18", 1, norm="batch", input_norm="imagenet").eval()
    # Normaliser buffers are not weights: the state_dicts have the same keys and load across.
    assert plain.state_dict().keys() == imagenet.state_dict().keys()
    assert not any(k.startswith("input_norm") for k in plain.state_dict())
    imagenet.load_state_dict(plain.state_dict())
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in INPUT_NORMS["imagenet"])
    torch.testing.assert_close(imagenet(X), plain((X - mean) / std))
    assert not torch.allclose(imagenet(X), plain(X))
    # The blank image the CAM engine feeds (zeros) is black: normalised to -mean/std.
    torch.testing.assert_close(
        imagenet.input_norm(torch.zeros(1, 3, 2, 2)), (-mean / std).expand(1, 3, 2, 2)
    )
    torch.testing.assert_close(plain.input_norm(X), X)


def test_encoder_is_the_classifier_without_its_final_linear(vgg16):
    resnet = build_backbone("resnet18", 1)
    encoder = build_backbone("resnet18", 0)
    assert encoder(X).shape == (2, 512) and not encoder.has_head and resnet.has_head
    assert set(resnet.state_dict()) - set(encoder.state_dict()) == {"fc.weight", "fc.bias"}
    assert set(encoder.state_dict()) <= set(resnet.state_dict())
    vgg_keys = set(vgg16.state_dict())
    vgg16_encoder_keys = vgg_keys - vgg16.head_state_keys()
    assert vgg_keys - vgg16_encoder_keys == {"classifier.6.weight", "classifier.6.bias"}


def _imagenet_like_file(tmp_path, drop_step_counters: bool = False):
    """A torchvision-style 1000-class state_dict, as an ImageNet download would be."""
    source = build_backbone("resnet18", 1000, norm="batch")
    for m in source.modules():  # trained-like statistics, so loading them is visible
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    state = source.state_dict()
    if drop_step_counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("drop_step_counters", [False, True])
def test_local_weights_load_everything_but_the_head(tmp_path, drop_step_counters):
    path, state = _imagenet_like_file(tmp_path, drop_step_counters)
    net = build_backbone("resnet18", 1, norm="batch", weights=str(path))
    loaded = net.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, msg=key)
    assert loaded["fc.weight"].shape == (1, 512)


def test_weights_of_other_norm_are_refused_with_keys(tmp_path):
    path, _ = _imagenet_like_file(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"resnet18_imagenet\.pth.*unexpected.*bn1\.running_mean"
    ):
        build_backbone("resnet18", 1, norm="instance", weights=str(path))


def test_missing_or_corrupt_weights_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.pth: weights file not found"):
        build_backbone("resnet18", 1, weights=str(tmp_path / "nowhere.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pth: not a PyTorch checkpoint"):
        build_backbone("resnet18", 1, weights=str(bad))


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_slim_vgg16_keeps_the_five_stages_and_scales_every_convolution(norm):
    net = build_backbone("vgg16", num_classes=1, norm=norm, width=0.25, head="gap")
    assert net.cam_stages == stage_names("vgg16", norm)
    convs = [m.out_channels for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert convs == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    assert net.head_name == "classifier.0" and net.feature_dim == 128
    assert net(torch.rand(2, 3, 64, 32)).shape == (2, 1)
    # The encoder is the classifier without its one linear layer, as for the fc head.
    encoder = build_backbone("vgg16", num_classes=0, norm=norm, width=0.25, head="gap")
    assert encoder(torch.rand(2, 3, 64, 32)).shape == (2, 128)
    assert set(net.state_dict()) - set(encoder.state_dict()) == net.head_state_keys()


def test_narrow_vgg16_with_the_fc_head_fits_its_first_linear_layer():
    net = build_backbone("vgg16", num_classes=3, norm="none", width=0.125)
    assert net.classifier[0].in_features == 64 * 7 * 7
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arch": "resnet18", "width": 0.5}, "VGG16 option"),
        ({"arch": "vgg16", "head": "mlp"}, "backbone.head"),
        ({"arch": "resnet18", "head": "mlp"}, "backbone.head"),
        ({"arch": "vgg16", "width": 0}, "backbone.width"),
    ],
)
def test_bad_width_or_head_is_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(num_classes=1, **{"norm": "batch", **kwargs})


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_gmp_head_scores_the_strongest_position_of_each_channel(arch):
    kw = {"width": 0.125} if arch == "vgg16" else {}
    net = build_backbone(arch, num_classes=1, norm="batch", head="gmp", **kw).eval()
    assert isinstance(net.avgpool, nn.AdaptiveMaxPool2d)
    head = net.get_submodule(net.head_name)
    assert net.head_name == ("classifier.0" if arch == "vgg16" else "fc")
    features = torch.zeros(1, net.feature_dim, 4, 2)
    features[0, :, 3, 1] = torch.arange(float(net.feature_dim))  # every channel's maximum
    pooled = head(net.avgpool(features).flatten(1))
    torch.testing.assert_close(pooled, head(features[:, :, 3, 1]))
    assert net(torch.rand(2, 3, 64, 48)).shape == (2, 1)
    # The fc (= gap) head keeps torchvision's average pooling.
    assert isinstance(build_backbone("resnet18", 1, head="gap").avgpool, nn.AdaptiveAvgPool2d)


SLIM = {"arch": "vgg16", "norm": "batch", "width": 0.125, "head": "gmp"}  # the KSDD2 demo's


@pytest.mark.parametrize("kwargs", [SLIM, {"arch": "resnet18", "norm": "batch"}])
def test_zeros_padding_is_the_former_network(kwargs):
    """`padding_mode=zeros` (the configs' default) builds the same network as before the
    option existed: the same weights from the same seed and exactly the same output."""
    torch.manual_seed(0)
    former = build_backbone(num_classes=1, **kwargs).eval()
    torch.manual_seed(0)
    today = build_backbone(num_classes=1, padding_mode="zeros", **kwargs).eval()
    convs = [m for m in today.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.padding_mode == "zeros" for m in convs)
    assert str(former) == str(today)
    assert torch.equal(former(X), today(X))


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("kwargs", [SLIM, {"arch": "resnet18", "norm": "batch"}])
def test_reflect_or_replicate_padding_makes_no_border(kwargs, mode):
    """Every padded convolution pads with `mode` (same parameters, so weights load across
    modes); a uniform image then gives the deepest stage a uniform map, where zero padding
    marks the border."""
    torch.manual_seed(0)
    zeros = build_backbone(num_classes=1, **kwargs).eval()
    net = build_backbone(num_classes=1, padding_mode=mode, **kwargs).eval()
    padded = [m for m in net.modules() if isinstance(m, nn.Conv2d) and any(m.padding)]
    assert padded and all(m.padding_mode == mode for m in padded)
    assert all(
        m.padding_mode == "zeros"
        for m in net.modules()
        if isinstance(m, nn.Conv2d) and not any(m.padding)
    )
    net.load_state_dict(zeros.state_dict())
    conv = padded[0]
    first = nn.functional.conv2d(
        nn.functional.pad(X, [conv.padding[1]] * 2 + [conv.padding[0]] * 2, mode=mode),
        conv.weight,
        conv.bias,
        conv.stride,
    )
    torch.testing.assert_close(conv(X), first)
    assert not torch.equal(net(X), zeros(X))

    def deepest(model):
        maps = []
        stage = model.get_submodule(model.cam_stages[-1])
        handle = stage.register_forward_hook(lambda module, args, out: maps.append(out))
        model(torch.full((1, 3, 128, 128), 0.6))
        handle.remove()
        return maps[0]

    uniform = deepest(net)
    assert uniform.shape[-1] > 2
    torch.testing.assert_close(uniform, uniform[..., :1, :1].expand_as(uniform))
    edged = deepest(zeros)
    assert not torch.allclose(edged, edged[..., 1:2, 1:2].expand_as(edged))

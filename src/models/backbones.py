"""Classifier backbones with their CAM stage names (docs/cfdcam.md, docs/layerization-truncation.md,
docs/training.md).

Every network built here
- takes images (B, 3, H, W) with values in [0, 1] and normalises them INSIDE the model
  (module ``input_norm``), so the CAM engine's blank image ``zeros_like(x)`` is a black image
  whatever the normalisation (docs/cfdcam.md, step 1);
- keeps torchvision's module names, so CAM target layers read as in the papers: ResNet stages
  ``layer1..layer4``, VGG16 max-pool outputs ``features.4/9/16/23/30``
  (docs/layerization-truncation.md);
- exposes ``cam_stages`` (those names, shallow to deep), ``feature_dim`` (width of the
  encoder output, i.e. the input of the final linear layer) and ``head_name`` (the final
  linear layer, the only module the SupCon encoder lacks; docs/training.md).

The SupCon encoder is the same network with the final linear layer replaced by
``nn.Identity`` (``num_classes=0`` or ``remove_head()``), so a fine-tuned classifier loads the
pretrained encoder by parameter name: every key but the head's matches.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vgg import VGG, cfgs, make_layers

from src.models.checkpoints import load_by_name, read_state_dict
from src.models.layers import FastInstanceNorm2d
from src.validation import check_choice

ARCHS = ("resnet18", "vgg16")
HEADS = ("fc", "gap", "gmp")
#: How every padded convolution fills its border (torch's `Conv2d.padding_mode`); `zeros` is
#: torchvision's. `reflect` / `replicate` add no artificial dark edge the network could learn
#: to respond to (docs/demo.md, held-out KSDD2).
PADDING_MODES = ("zeros", "reflect", "replicate")
NORMS = {"resnet18": ("instance", "batch"), "vgg16": ("none", "batch")}
INPUT_NORMS = {
    "identity": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel; buffer-only and not persistent.

    The buffers are left out of the state_dict on purpose: the normalisation is a property of
    the config (``input_norm``), not of trained weights, so ImageNet files and SupCon
    checkpoints load the same whatever normalisation either side was built with.
    """

    def __init__(self, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel."""
        return (x - self.mean) / self.std


class _CamBackbone:
    """Mixin shared by both architectures: head handling and CAM metadata."""

    cam_stages: list[str]
    feature_dim: int
    head_name: str

    def _get_head(self) -> nn.Module:
        return self.get_submodule(self.head_name)  # type: ignore[attr-defined]

    def _set_head(self, module: nn.Module) -> None:
        parent_name, _, child = self.head_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self  # type: ignore[attr-defined]
        setattr(parent, child, module)

    def remove_head(self) -> _CamBackbone:
        """Replace the final linear layer by ``nn.Identity`` (the SupCon encoder); returns self."""
        self._set_head(nn.Identity())
        return self

    @property
    def has_head(self) -> bool:
        return isinstance(self._get_head(), nn.Linear)

    def head_state_keys(self) -> set[str]:
        """State-dict keys of the final linear layer (present or not), e.g. ``fc.weight``."""
        return {f"{self.head_name}.weight", f"{self.head_name}.bias"}


class CamResNet(_CamBackbone, ResNet):
    """torchvision ResNet that normalises its input first (names unchanged).

    ``head``: ``fc`` or ``gap`` (torchvision's global average pooling and linear layer) or
    ``gmp`` (global max pooling instead): the score then rests on the most tumour-like
    position of each channel, not on the share of positions that show it, so it does not
    shrink when the image is enlarged (Cfd-CAM's second scale; docs/demo.md)."""

    head_name = "fc"

    def __init__(self, *args, input_norm: InputNormalization, head: str = "fc", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if head == "gmp":
            self.avgpool = nn.AdaptiveMaxPool2d(1)
        self.input_norm = input_norm
        self.cam_stages = ["layer1", "layer2", "layer3", "layer4"]
        self.feature_dim = self.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (or encoder features without a head) of images in [0, 1]."""
        return self._forward_impl(self.input_norm(x))


class CamVGG(_CamBackbone, VGG):
    """torchvision VGG that normalises its input first (names unchanged).

    The CAM stages are the outputs of the five max-pools, found by type so the indices are
    right for plain VGG16 (4, 9, 16, 23, 30) and VGG16-BN (6, 13, 23, 33, 43) alike, at any
    width. ``head="gap"`` replaces torchvision's 7x7 pooling and three fully connected layers
    (120 M parameters at full width) by global average pooling and one linear layer: the
    same five stages with a head small enough to train from scratch on a CPU. ``head="gmp"``
    pools by the maximum instead: the score then rests on the single most object-like
    position of each channel, so training rewards features that fire on the object and not
    around it (small objects such as surface defects; see docs/training.md).
    """

    def __init__(self, *args, input_norm: InputNormalization, head: str = "fc", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.input_norm = input_norm
        self.cam_stages = [
            f"features.{name}"
            for name, module in self.features.named_children()
            if isinstance(module, nn.MaxPool2d)
        ]
        channels = [m for m in self.features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        if head in ("gap", "gmp"):
            self.avgpool = nn.AdaptiveAvgPool2d(1) if head == "gap" else nn.AdaptiveMaxPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(channels, self.classifier[6].out_features))
        elif channels != 512:  # a narrower VGG16: torchvision's first layer expects 512 x 7 x 7
            self.classifier[0] = nn.Linear(channels * 49, self.classifier[0].out_features)
        for layer in self.classifier:
            if isinstance(layer, nn.Linear) and (head != "fc" or channels != 512):
                nn.init.normal_(layer.weight, 0, 0.01)  # torchvision's rule for linear layers
                nn.init.constant_(layer.bias, 0)
        self.head_name = f"classifier.{len(self.classifier) - 1}"
        self.feature_dim = self.classifier[-1].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (or encoder features without a head) of images in [0, 1]."""
        return super().forward(self.input_norm(x))


def _vgg_layout(width: float) -> list[int | str]:
    """VGG16's layer list ("D") with every convolution's channels scaled by ``width``."""
    return [v if v == "M" else max(8, round(int(v) * width)) for v in cfgs["D"]]


def stage_names(arch: str, norm: str = "instance") -> list[str]:
    """The ``cam_stages`` of the network ``build_backbone(arch, ..., norm=norm)`` builds, from
    the architecture's layout alone (no weights built): for the start-up checks."""
    check_choice("backbone.arch", arch, ARCHS)
    if arch == "resnet18":
        return ["layer1", "layer2", "layer3", "layer4"]
    names, index = [], 0
    for entry in cfgs["D"]:  # conv (+ BatchNorm) + ReLU per number, one max-pool per "M"
        if entry == "M":
            names.append(f"features.{index}")
            index += 1
        else:
            index += 3 if norm == "batch" else 2
    return names


def _deepest_stage_side(arch: str, side: int) -> int:
    """The side of the deepest CAM stage's output for an input side of `side` pixels."""
    if arch == "resnet18":
        side = (side - 1) // 2 + 1  # the 7x7 stride-2 stem conv (padding 3)
        for _ in range(4):  # its 3x3 stride-2 max-pool and layer2-4, all with padding 1
            side = (side - 1) // 2 + 1
        return side
    for _ in range(cfgs["D"].count("M")):  # VGG16's five 2x2 max-pools
        side //= 2
    return side


def min_image_size(arch: str, norm: str, padding_mode: str = "zeros") -> int:
    """The smallest image side the network takes: at least its total downsampling (32 for
    ResNet-18 and VGG16), below which the deepest CAM stage has less than a pixel's worth of
    the image (VGG's pooling fails outright); with InstanceNorm the deepest stage must also
    keep more than one pixel, which the norm needs in training, and so must ResNet-18's with
    reflect padding, which cannot mirror a single pixel (33 px for ResNet-18; VGG16's last
    convolutions see twice the deepest stage's side)."""
    check_choice("backbone.arch", arch, ARCHS)
    two = norm == "instance" or (arch == "resnet18" and padding_mode == "reflect")
    side = 2**5
    while _deepest_stage_side(arch, side) < (2 if two else 1):
        side += 1
    return side


def build_backbone(
    arch: str,
    num_classes: int,
    norm: str = "instance",
    weights: str | None = None,
    input_norm: str = "identity",
    width: float = 1.0,
    head: str = "fc",
    padding_mode: str = "zeros",
    **kw,
) -> nn.Module:
    """Build a classifier (``num_classes >= 1``) or a SupCon encoder (``num_classes = 0``).

    ``arch``: ``resnet18`` (``norm``: ``instance`` = ``InstanceNorm2d(affine=False)`` as the
    Cfd-CAM authors, or ``batch``) or ``vgg16`` (``norm``: ``none`` = VGG16, ``batch`` =
    VGG16-BN). ``input_norm``: ``identity`` (MRI default, docs/cfdcam.md) or ``imagenet``.
    ``weights``: path of a local torchvision state_dict (e.g. ImageNet); its final linear layer
    is skipped (other class count), every other parameter must match by name and shape.
    VGG16 only: ``width`` scales every convolution's channels (1 = torchvision's 64..512;
    ImageNet weights need 1). ``head``: VGG16 ``fc`` (torchvision's three fully connected
    layers) or ``gap`` / ``gmp`` (global average / max pooling and one linear layer, see
    :class:`CamVGG`); ResNet-18 ``fc`` = ``gap`` (torchvision's) or ``gmp`` (max pooling,
    :class:`CamResNet`).
    ``padding_mode``: how every padded convolution fills its border, ``zeros`` (torchvision's)
    or ``reflect`` / ``replicate`` (torch's ``Conv2d.padding_mode``; the same parameters, so
    weights load whatever either side was built with). Pooling layers keep their padding.
    Extra keyword arguments go to the torchvision constructor (e.g. ``dropout`` for VGG).
    """
    check_choice("backbone.arch", arch, ARCHS)
    check_choice("backbone.norm", norm, NORMS[arch])
    check_choice("backbone.input_norm", input_norm, INPUT_NORMS)
    if arch != "vgg16" and width != 1.0:
        raise ValueError(f"backbone.width is a VGG16 option, not {arch}'s")
    check_choice("backbone.head", head, HEADS)
    check_choice("backbone.padding_mode", padding_mode, PADDING_MODES)
    if not width > 0:
        raise ValueError(f"backbone.width must be > 0, got {width}")
    if num_classes < 0:
        raise ValueError(f"backbone num_classes must be >= 0 (0 = encoder), got {num_classes}")
    normaliser = InputNormalization(*INPUT_NORMS[input_norm])
    out = max(num_classes, 1)
    if arch == "resnet18":
        norm_layer = partial(FastInstanceNorm2d, affine=False) if norm == "instance" else None
        net: _CamBackbone = CamResNet(
            BasicBlock,
            [2, 2, 2, 2],
            num_classes=out,
            norm_layer=norm_layer,
            input_norm=normaliser,
            head=head,
            **kw,
        )
    else:
        features = make_layers(_vgg_layout(width), batch_norm=norm == "batch")
        net = CamVGG(features, num_classes=out, input_norm=normaliser, head=head, **kw)
    if padding_mode != "zeros":
        for module in net.modules():  # type: ignore[attr-defined]
            if isinstance(module, nn.Conv2d) and any(module.padding):
                module.padding_mode = padding_mode
    if num_classes == 0:
        net.remove_head()
    if weights is not None:
        state = read_state_dict(weights)
        load_by_name(net, state, source=str(weights), skip=net.head_state_keys())
    return net  # type: ignore[return-value]

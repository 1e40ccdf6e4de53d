"""Benchmark networks: random-weight ResNet-18s, and a "trained-like" one with dead channels.

``cfd_resnet18`` is the framework's own Cfd-CAM classifier (``build_backbone``), so the
limit rows time the backbone users run. A random network has no dead ``layer4`` channel, so
Cfd-CAM's exact skipping (docs/cfdcam.md) has nothing to skip. ``kill_layer4_channels`` makes a
fraction of ``layer4``'s output channels exactly zero for every input, deterministically,
by zeroing the weights that produce them (every conv before an InstanceNorm without affine
gives a constant-zero channel, so the norm outputs 0 and the final ReLU keeps it at 0).
Dead channels are common in trained BatchNorm networks (a negative BN shift before a ReLU);
the InstanceNorm classifier hardly has any: IN gives every channel zero mean, so unless a
conv output is constant some entry stays positive (the demo classifier: 0 of 512 ``layer4``
channels all-zero on 32 test slices, at 96 and at 240 px).

The CAM tests (tests/cams/cams_testdata.py) build their ResNet-18s and BatchNorm statistics
here too, so a benchmark measures the very models the tests check; changing a builder
changes the seeded models of both.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from src.models.backbones import build_backbone


def cfd_resnet18(seed: int = 0) -> nn.Module:
    """The Cfd-CAM classifier (docs/cfdcam.md): ResNet-18 with InstanceNorm, one logit, eval
    mode."""
    torch.manual_seed(seed)
    return build_backbone("resnet18", num_classes=1, norm="instance").eval()


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-like BN statistics in place: non-zero bias and running_mean (docs/gradient-cams.md:
    with the
    default initialisation FullGrad's BN bias terms are all zero and hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
    return model


def bn_resnet18(num_classes: int = 1, seed: int = 0) -> nn.Module:
    """ResNet-18 with BatchNorm and trained-like running statistics (non-zero biases, so
    FullGrad's bias terms are not all zero), eval mode."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=num_classes)
    return randomize_batchnorm(model, seed).eval()


def kill_layer4_channels(model: nn.Module, fraction: float) -> list[int]:
    """Make ``fraction`` of ``layer4``'s output channels zero for every input (in place).

    Zeroes, for those channels, the weights of ``layer4[0].conv2``, its downsample conv and
    ``layer4[1].conv2``: each then outputs a constant 0, InstanceNorm maps it to 0, the
    residual sums stay 0 and ReLU keeps them 0. Returns the killed channel indices.
    """
    blocks = model.layer4
    channels = blocks[1].conv2.out_channels
    dead = list(range(0, channels, max(1, round(1 / fraction))))[: round(fraction * channels)]
    with torch.no_grad():
        for conv in (blocks[0].conv2, blocks[0].downsample[0], blocks[1].conv2):
            conv.weight[dead] = 0
    return dead

"""Seeded random-weight networks on which CAMs are measured (``make bench``) and tested.

A benchmark times the very models the CAM tests check, so both build them here: changing a
builder changes the seeded models of both. ``cfd_resnet18`` is the framework's own Cfd-CAM
classifier (``build_backbone``); ``bn_resnet18`` is torchvision's ResNet-18 with trained-like
BatchNorm statistics (``randomize_batchnorm``), which a freshly initialised network lacks.
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
    with the default initialisation FullGrad's BN bias terms are all zero and hide bugs)."""
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

"""Small random models and images for the CAM tests (seeded, CPU, eval mode).

The ResNet-18s and the trained-like BatchNorm statistics come from ``src/models/seeded.py``,
which the benchmarks build theirs with too, so the tests check the models the benchmarks time.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from src.models.seeded import bn_resnet18 as bn_resnet18  # re-exported for the tests
from src.models.seeded import cfd_resnet18, randomize_batchnorm

#: The Cfd-CAM classifier (docs/cfdcam.md): InstanceNorm ResNet-18 with one logit.
instance_resnet18 = cfd_resnet18


class SmallHeadVGG16(nn.Module):
    """VGG16's exact feature stack (module names ``features.N``) with a light head, so the
    test does not initialise VGG's 120M-parameter classifier."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = make_layers(cfgs["D"])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16(num_classes: int = 4, seed: int = 0) -> nn.Module:
    """He-initialised (PyTorch's default init makes this deep BN-free stack forget its
    input) with small random conv biases, so FullGrad's bias terms are not all zero."""
    torch.manual_seed(seed)
    model = SmallHeadVGG16(num_classes)
    with torch.no_grad():
        for module in model.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                module.bias.normal_(0, 0.05)
    return model.eval()


class TinyNet(nn.Module):
    """conv -> BN -> ReLU(inplace) -> conv -> ReLU -> GAP -> fc; the second conv's last
    ``dead`` channels are forced to zero (bias -1e4) so exact skipping has work to do."""

    def __init__(self, num_classes: int = 3, channels: int = 6, dead: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, channels, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(channels, num_classes)
        if dead:
            with torch.no_grad():
                self.conv2.bias[-dead:] = -1e4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.act(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_net(num_classes: int = 3, seed: int = 0, dead: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(TinyNet(num_classes, dead=dead), seed).eval()


def images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def minmax(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low).clamp(min=1e-12)


def sensitive_net(num_classes: int = 3, seed: int = 0) -> nn.Module:
    """TinyNet with non-negative conv weights, so its features follow local brightness and
    its logits move by whole units when a mask darkens part of the image: the score spread
    of a trained classifier. (A random network's masked-image scores agree to ~1e-3, below
    bfloat16's resolution, so reduced-precision options are judged on this one.)"""
    model = tiny_net(num_classes, seed, dead=0)
    with torch.no_grad():
        model.conv1.weight.abs_()
        model.conv2.weight.abs_()
        model.bn1.running_mean.zero_()
        model.bn1.bias.abs_()
        model.fc.weight.mul_(20)
    return model

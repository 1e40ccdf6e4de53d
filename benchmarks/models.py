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

The seeded ResNet-18s live in ``src/models/seeded.py``, shared with the CAM tests, so a
benchmark measures the very models the tests check; changing a builder changes both.
"""

from __future__ import annotations

import torch
from torch import nn


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

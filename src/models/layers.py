"""Layers whose CPU kernels beat the stock ones with the same result.

``InstanceNorm2d`` without running statistics is ``GroupNorm`` with one group per channel.
PyTorch computes instance norm through the batch-norm kernel on a (1, B*C, H, W) view, which
on CPU is several times slower than the group-norm kernel once a map has 16 pixels or more
(benchmarks/results.md). It is a noticeable share of a Cfd-CAM masked forward of the
InstanceNorm ResNet-18, so the backbone uses the group-norm kernel there. Results agree to float rounding (~1e-6); tiny maps, running
statistics, unbatched inputs and GPU tensors (measured on CPU only) take the stock path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Below this many pixels per map the stock kernel is as fast or faster (measured on CPU).
GROUP_NORM_MIN_PIXELS = 16


class FastInstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same arguments and state dict) on the group-norm kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Instance norm of (B, C, H, W); the stock kernel where it is as fast or is needed."""
        small = x.ndim != 4 or x.shape[-1] * x.shape[-2] < GROUP_NORM_MIN_PIXELS
        if small or self.track_running_stats or x.device.type != "cpu":
            return super().forward(x)
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)

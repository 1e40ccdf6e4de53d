"""Layerization plug-in: fuse the per-layer maps of any method (docs/layerization-truncation.md, Eq.
8).

Each method returns one non-negative map per target layer at that layer's resolution; the
fusion brings them to the input size (bilinear, align_corners=False) and combines them:

- ``sum`` (paper, default): ``S = sum_l up(M_l)``.
- ``mean_minmax`` (grad-cam): min-max each layer at its own resolution, upsample, mean.
- ``max`` (torchcam): min-max each layer, upsample, element-wise max.

The caller min-maxes the fused map. A single layer is min-maxed at its own resolution
before upsampling whatever the fusion (grad-cam's order; the final min-max makes this equal
to Eq. 8, and a constant map becomes exact zeros instead of resized rounding noise), so
with one layer the three fusions agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from src.cams.maps import minmax, resize
from src.validation import check_choice

FUSIONS = ("sum", "mean_minmax", "max")


def fuse_layers(
    layer_maps: Sequence[torch.Tensor], fusion: str, size: tuple[int, int], eps: float
) -> torch.Tensor:
    """(B, h_l, w_l) maps of every layer -> (B, H, W) fused map (not yet min-maxed).

    ``eps`` is the epsilon of the per-layer min-max (grad-cam: 1e-7)."""
    check_choice("fusion", fusion, FUSIONS)
    if fusion == "sum" and len(layer_maps) > 1:
        return torch.stack([resize(m, size) for m in layer_maps]).sum(0)
    scaled = torch.stack([resize(minmax(m, eps), size) for m in layer_maps])
    return scaled.amax(0) if fusion == "max" else scaled.mean(0)

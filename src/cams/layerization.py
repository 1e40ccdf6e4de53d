"""Layerization plug-in: fuse the per-layer maps of any method (SPEC section 4, Eq. 8).

Each method returns one non-negative map per target layer at that layer's resolution; the
fusion brings them to the input size (bilinear, align_corners=False) and combines them:

- ``sum`` (paper, default): ``S = sum_l up(M_l)``.
- ``mean_minmax`` (grad-cam): min-max each layer at its own resolution, upsample, mean.
- ``max`` (torchcam): min-max each layer, upsample, element-wise max.

The caller min-maxes the fused map. With one layer the three fusions agree (min-max is
affine and bilinear resizing commutes with affine maps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from src.cams.maps import minmax, resize

FUSIONS = ("sum", "mean_minmax", "max")


def fuse_layers(
    layer_maps: Sequence[torch.Tensor], fusion: str, size: tuple[int, int], eps: float
) -> torch.Tensor:
    """(B, h_l, w_l) maps of every layer -> (B, H, W) fused map (not yet min-maxed)."""
    if fusion not in FUSIONS:
        raise ValueError(f"option 'fusion' must be one of {FUSIONS}, got {fusion!r}")
    if fusion == "sum":
        return torch.stack([resize(m, size) for m in layer_maps]).sum(0)
    scaled = torch.stack([resize(minmax(m, eps), size) for m in layer_maps])
    return scaled.mean(0) if fusion == "mean_minmax" else scaled.amax(0)

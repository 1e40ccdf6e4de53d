"""Multi-scale plug-in: run any method on rescaled inputs and average (docs/cfdcam.md).

Scale ``s``: ``x_s = upsample(x, s, bilinear, align_corners=False)`` (``s = 1``: x itself);
the method's map at ``x_s`` resolution is brought back to the input size with
``downsample_mode`` (default ``nearest`` = ``interpolate(scale_factor=1/s)``'s default);
the final map is the mean over scales.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from src.cams.maps import resize

RESIZE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")

# (images, targets or None) -> (maps at the images' size, resolved targets)
SingleScale = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def rescale_images(images: torch.Tensor, scale: float) -> torch.Tensor:
    """``images`` bilinearly resized by ``scale`` (``align_corners=False``); scale 1: as is."""
    if scale == 1:
        return images
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)


def multi_scale(
    single: SingleScale,
    images: torch.Tensor,
    targets: torch.Tensor | None,
    scales: Sequence[float],
    downsample_mode: str = "nearest",
) -> torch.Tensor:
    """Mean over ``scales`` of ``single`` run on rescaled images, at the input size.

    ``targets=None`` is resolved at the first listed scale and reused at the others, so every
    scale explains the same class.
    """
    size = (images.shape[-2], images.shape[-1])
    total = None
    for scale in scales:
        maps, targets = single(rescale_images(images, scale), targets)
        maps = resize(maps, size, mode=downsample_mode)
        total = maps if total is None else total + maps
    assert total is not None
    return total / len(scales)

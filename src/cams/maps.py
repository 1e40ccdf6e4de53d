"""Map post-processing shared by every method (docs/gradient-cams.md, grad-cam conventions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# grad-cam's min-max epsilon: (m - min) / (max - min + 1e-7).
GRADCAM_EPS = 1e-7


def minmax(maps: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Min-max each map over its last two dims: ``(m - min) / (max - min + eps)``.

    A constant map gives zeros (never NaN), with or without ``eps``.
    """
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    safe = torch.where(span > 0, span + eps, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))


def normalize(maps: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Final min-max of a map to exactly [0, 1]; a map that is constant up to float rounding
    (``max - min <= rtol * max|m|``, e.g. a bilinearly resized constant) gives zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    flat = span <= rtol * maps.abs().amax(dim=(-2, -1), keepdim=True)
    safe = torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.zeros_like(maps), (maps - low) / safe)


def resize(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (B, h, w) maps to ``size``; bilinear/bicubic use ``align_corners=False``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(maps[:, None], size=size, mode=mode, align_corners=align)[:, 0]

"""Array conventions shared by every reader (docs/data.md; inputs as docs/cfdcam.md).

Images are [0, 1] floats (no mean/std normalisation, docs/cfdcam.md), resized bilinearly with
antialiasing; masks are resized with nearest neighbour so labels never blend.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

Size = tuple[int, int]


def as_size(image_size: int | tuple[int, int] | list[int] | None) -> Size | None:
    """``None`` (keep), an int (square) or ``(height, width)``."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"image_size must be a positive int or (height, width) of positive ints, "
            f"got {image_size!r}"
        )
    return size  # type: ignore[return-value]


def minmax_volume(volume: np.ndarray) -> np.ndarray:
    """Per-volume min-max to [0, 1] (float32); a constant volume becomes zeros."""
    v = volume.astype(np.float32, copy=False)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return np.zeros(v.shape, np.float32)
    return (v - lo) / (hi - lo)


def resize_images(images: torch.Tensor, size: Size | None) -> torch.Tensor:
    """(N, C, H, W) float images -> (N, C, *size): bilinear, antialiased, align_corners=False."""
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def resize_masks(masks: torch.Tensor, size: Size | None) -> torch.Tensor:
    """(N, H, W) integer masks -> (N, *size) with nearest-exact sampling (labels preserved)."""
    if size is None or tuple(masks.shape[-2:]) == size:
        return masks
    out = F.interpolate(masks[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].to(masks.dtype)


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 (rounded), the in-memory storage of cached slices."""
    return (images01.clamp(0, 1) * 255).round().to(torch.uint8)


def foreground_square(volume: np.ndarray) -> tuple[slice, slice] | None:
    """The smallest square (in the last two axes) around every non-zero voxel of ``volume``.

    Skull-stripped MRI (BraTS) is zero outside the head, so this is the head's box over all
    slices: one crop per case, found from the image alone (never the label). The square is
    centred on the box and shifted to stay inside the frame; its side is capped by the
    frame's shorter side. ``None`` for an all-zero volume (nothing to crop to).
    """
    rows = np.flatnonzero(volume.any(axis=tuple(range(volume.ndim - 2)) + (-1,)))
    cols = np.flatnonzero(volume.any(axis=tuple(range(volume.ndim - 1))))
    if len(rows) == 0:
        return None
    height, width = volume.shape[-2:]
    side = min(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1, height, width)
    box = []
    for first, last, extent in ((rows[0], rows[-1], height), (cols[0], cols[-1], width)):
        start = (first + last + 1 - side) // 2
        start = int(np.clip(start, 0, extent - side))
        box.append(slice(start, start + int(side)))
    return box[0], box[1]

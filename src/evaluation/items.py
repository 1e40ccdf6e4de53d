"""The evaluated images: finding one in its dataset by id (the maps file and per_image.csv
name images by id; the figures and `stage=masks` need the image and its ground truth again),
and their uint8 RGB form for DenseCRF and the figures.

Kept out of `masks.py`, whose worker processes should not have to import torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset


def item_index(dataset: Dataset) -> dict[str, int]:
    """Position of each image id in the dataset (a Subset maps through its indices)."""
    if isinstance(dataset, Subset):
        inner = item_index(dataset.dataset)
        wanted = {position: i for i, position in enumerate(dataset.indices)}
        return {image_id: wanted[pos] for image_id, pos in inner.items() if pos in wanted}
    ids = getattr(dataset, "ids", None)
    if ids is None:
        ids = [dataset[i]["id"] for i in range(len(dataset))]
    return {image_id: i for i, image_id in enumerate(ids)}


def truncated_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) in [0,1] -> (B,H,W,3) uint8, the form DenseCRF's bilateral term reads.

    Truncates like the authors' ``uint8(255 * image)`` (docs/masks.md), not rounding; computed
    in the tensor's float32 as the evaluation always has (a float64 product could truncate a
    few pixels differently).
    """
    array = images.detach().float().clamp(0, 1).mul(255).to(torch.uint8)
    return np.ascontiguousarray(array.permute(0, 2, 3, 1).cpu().numpy())

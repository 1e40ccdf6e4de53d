"""The two Dataset kinds every reader builds on, with one item format.

Item (a dict): ``image`` float32 (3, H, W) in [0, 1] (grey repeated to 3 channels, docs/cfdcam.md),
``label`` float32 (K,), ``mask`` int64 (H, W), ``id`` str. Both kinds expose
``labels`` (N, K) and ``ids`` so that the DataModule can count and weight without loading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.transforms import Size, resize_images, resize_masks

Item = dict[str, Any]


def _three_channels(image: torch.Tensor) -> torch.Tensor:
    """A single grey channel is repeated to 3 (docs/cfdcam.md); other counts are kept."""
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


class TensorSliceDataset(Dataset):
    """Items held in memory as uint8 tensors (cached BraTS slices, already resized)."""

    def __init__(
        self, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, ids: Sequence[str]
    ) -> None:
        if not len(images) == len(masks) == len(labels) == len(ids):
            raise ValueError("images, masks, labels and ids must have the same length")
        self.images, self.masks, self.labels, self.ids = images, masks, labels, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Item:
        image = self.images[index].float().div_(255)
        return {
            "image": _three_channels(image),
            "label": self.labels[index].clone(),
            "mask": self.masks[index].long(),
            "id": self.ids[index],
        }


#: Reads one record: returns an (H, W, C) uint8/float image in [0, 255] or [0, 1] and an
#: (H, W) integer mask.
Loader = Callable[[Any], tuple[np.ndarray, np.ndarray]]


class FileImageDataset(Dataset):
    """Items read from image files on access (formats too large to hold in memory).

    ``records`` are opaque to this class; ``load`` turns one into (image, mask) arrays.
    ``scale`` divides the image values (255 for uint8 files).
    """

    def __init__(
        self,
        records: Sequence[Any],
        labels: torch.Tensor,
        ids: Sequence[str],
        load: Loader,
        size: Size | None,
        scale: float = 255.0,
    ) -> None:
        if not len(records) == len(labels) == len(ids):
            raise ValueError("records, labels and ids must have the same length")
        self.records, self.labels, self.ids = list(records), labels, list(ids)
        self.load, self.size, self.scale = load, size, scale

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Item:
        image, mask = self.load(self.records[index])
        if image.ndim == 2:
            image = image[:, :, None]
        img = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / self.scale
        img = resize_images(img[None], self.size)[0].clamp_(0, 1)
        msk = resize_masks(torch.from_numpy(mask.astype(np.int64))[None], self.size)[0]
        return {
            "image": _three_channels(img),
            "label": self.labels[index].clone(),
            "mask": msk,
            "id": self.ids[index],
        }

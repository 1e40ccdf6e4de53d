"""Tiny in-memory data in the DataModules' batch format (dicts of image, label, mask, id)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

# InstanceNorm needs more than one spatial element in layer4: 64 px gives 2x2.
SIZE = 64


class DictDataset(Dataset):
    """Images whose class shows as a bright square, labels (N, K) float 0/1."""

    def __init__(self, n: int = 8, num_classes: int = 1, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.rand(n, num_classes, generator=g) > 0.5).float()
        self.labels[0], self.labels[1] = 0.0, 1.0  # both values present in every column
        self.images = 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
        for i in range(n):
            for k in torch.nonzero(self.labels[i]).flatten().tolist():
                row, col = divmod(k % 16, 4)
                self.images[i, :, 16 * row : 16 * row + 12, 16 * col : 16 * col + 12] += 0.6

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "label": self.labels[i],
            "mask": torch.zeros(SIZE, SIZE, dtype=torch.uint8),
            "id": f"img{i:03d}",
        }

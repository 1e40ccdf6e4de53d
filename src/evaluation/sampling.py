"""Which images an evaluation scores when it is limited to a few (`eval.limit`).

The choice depends only on the labels (and, for in-memory slices, the masks) of the split,
so every method evaluated on the same data scores the same images and their rows compare.
The pipeline reads the limits from its config and passes them in as plain values.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset

from src.evaluation.metrics import scored_as_normal


def _spread(indices: np.ndarray, count: int) -> list[int]:
    """`count` of `indices`, evenly spaced (the split is ordered by case and slice)."""
    if count >= len(indices):
        return indices.tolist()
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(int)].tolist()


def positive_share(limit: int, positive_fraction: float) -> int:
    """How many of `limit` images come from the positive-label ones: the rounded share, but
    at least one of each kind when the fraction asks for both, so that a small limit still
    has a `normal` group (`eval.limit=4` with 0.86 would otherwise round to four tumours)."""
    wanted = int(round(limit * positive_fraction))
    if limit >= 2 and 0 < positive_fraction < 1:
        wanted = min(max(wanted, 1), limit - 1)
    return wanted


def eval_subset(
    labels: np.ndarray,
    limit: int,
    positive_fraction: float | None,
    normal: np.ndarray | None = None,
) -> list[int]:
    """Indices of at most `limit` images, evenly spaced; with `positive_fraction`, that share
    of them (`positive_share`) comes from the positive-label images (the papers' tables are
    about tumours) and the rest from the others.

    `normal` (optional, bool per image): the images the evaluation scores as normal. The rest
    is then drawn from them rather than from all negative-label images, so that it lands in
    the `normal` group (a BraTS slice with a tumour of at most 1 % of its area is labelled
    negative but scored as `abnormal`). When one pool is too small the other fills the
    limit."""
    everything = np.arange(len(labels))
    if positive_fraction is None:
        return _spread(everything, limit)
    positive = everything[labels.reshape(len(labels), -1).max(1) > 0.5]
    rest = np.setdiff1d(everything, positive)
    if normal is not None:
        rest = rest[normal[rest]]
    n_rest = min(limit - positive_share(limit, positive_fraction), len(rest))
    n_positive = min(limit - n_rest, len(positive))
    n_rest = min(limit - n_positive, len(rest))
    return sorted(_spread(positive, n_positive) + _spread(rest, n_rest))


def eval_indices(
    dataset: Dataset,
    limit: int,
    positive_fraction: float | None,
    normal_area_max: float | None = None,
) -> list[int]:
    """`eval_subset` of a dataset; in-memory slices (BraTS) also say which
    images the evaluation scores as normal (`eval.normal_area_max`)."""
    masks = getattr(dataset, "masks", None)
    normal = None
    if masks is not None:
        areas = (masks.flatten(1) > 0).sum(1).numpy()
        normal = scored_as_normal(areas, masks[0].numel() if len(masks) else 0, normal_area_max)
    return eval_subset(np.asarray(dataset.labels), limit, positive_fraction, normal)


def limited_loader(
    loader: DataLoader,
    batch_size: int | None,
    limit: int | None,
    positive_fraction: float | None,
    normal_area_max: float | None,
) -> DataLoader:
    """`loader` over the `eval_indices` of its dataset when `limit` is smaller than it (with
    the same workers and collate function), else `loader` itself."""
    dataset = loader.dataset
    if limit is None or limit >= len(dataset):
        return loader
    indices = eval_indices(dataset, limit, positive_fraction, normal_area_max)
    return DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
    )

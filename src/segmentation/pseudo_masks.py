"""Pseudo-masks for `method=selftrain` (docs/selftrain.md): the CAM maps of training slices,
the masks a mask rule makes of them, and the training items that carry them in place of the
pixel labels.

No pixel label passes through here: the CAM loop and the mask rule get items without their
`mask`, and a training item's `mask` is its pseudo-mask (empty for a slice labelled negative).

A pseudo-mask is boolean, or, with confident regions (`confidence.py`), uint8 labels 0 / 1 /
`IGNORE`; its training item then also carries `ignore`, the pixels the loss leaves out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from src.data.base import sample_weights
from src.evaluation.cam_module import CAMEvaluationModule
from src.evaluation.items import truncated_uint8_rgb
from src.evaluation.map_store import MapArchive, MapWriter
from src.evaluation.masks import MaskMaker
from src.segmentation.confidence import IGNORE, OBJECT, Confidence, confident_labels

#: What an item without its pixel labels keeps.
UNLABELLED_KEYS = ("image", "label", "id")


class WithoutPixelLabels(Dataset):
    """The items of `dataset` at `indices`, each without its `mask`: image, image-level label
    and id only."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.ids = [dataset.ids[i] for i in self.indices]
        self.labels = dataset.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[self.indices[index]]
        return {key: item[key] for key in UNLABELLED_KEYS}

    def positive(self, index: int) -> bool:
        """Whether the image-level label of item `index` names the object."""
        return bool(self.labels[index].max() > 0.5)


class PseudoMaskDataset(WithoutPixelLabels):
    """Training items whose `mask` is the pseudo-mask of their id (`masks`, (H, W) boolean or
    labels 0 / 1 / `IGNORE`).

    When any of the masks has ignored pixels, every item also carries `ignore` (boolean
    (H, W)), which the segmenter's loss leaves out, and `mask` is 1 on the object pixels only.
    Masks without ignored pixels give the items of the former pseudo-masks, key for key."""

    def __init__(
        self, dataset: Dataset, indices: Sequence[int], masks: Mapping[str, np.ndarray]
    ) -> None:
        super().__init__(dataset, indices)
        missing = [image_id for image_id in self.ids if image_id not in masks]
        if missing:
            raise KeyError(f"no pseudo-mask for {missing[:5]}")
        self.masks = masks
        self.has_ignore = any(bool((np.asarray(masks[i]) == IGNORE).any()) for i in self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        labels = np.asarray(self.masks[item["id"]])
        if not self.has_ignore:
            item["mask"] = torch.from_numpy(labels.astype(np.int64))
            return item
        item["mask"] = torch.from_numpy((labels == OBJECT).astype(np.int64))
        item["ignore"] = torch.from_numpy(labels == IGNORE)
        return item


class CAMMapsModule(CAMEvaluationModule):
    """The CAM test loop that only computes and saves the maps (float16, as an evaluation
    saves them): no mask, no metric, no pixel label read. Binary classifiers (one logit)."""

    def __init__(
        self,
        net: torch.nn.Module,
        cam_name: str,
        target_layers: list[str],
        cam_options: dict[str, Any],
        maps_path: str | Path,
    ) -> None:
        """The CAM `cam_name` of `net` at `target_layers` with `cam_options`, streamed to
        `maps_path`; its mask maker is never given a map."""
        super().__init__(
            net,
            cam_name,
            target_layers,
            cam_options,
            MaskMaker("threshold"),
            maps_path,
            task="binary",
        )

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The CAMs of one batch, streamed to the maps file."""
        maps = self._cams(batch["image"], None).detach().half().cpu().numpy()
        assert self._writer is not None
        for image_id, cam_map in zip(batch["id"], maps, strict=True):
            self._writer.add(image_id, cam_map)


def pseudo_masks(
    items: WithoutPixelLabels,
    maps_path: str | Path,
    mask_maker: MaskMaker,
    confidence: Confidence | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """(id, mask) of every item: for a slice labelled positive, `mask_maker`'s mask of its
    saved map (as `stage=masks` makes it from an evaluation's maps), boolean, or with
    `confidence` its confident labels (0 / 1 / `IGNORE`, `confident_labels`); for one
    labelled negative, an empty mask (the image label says there is no object), uint8 zeros
    with `confidence` (no ignored pixel)."""
    with MapArchive(maps_path) as maps:
        pending, kept = [], {}
        for index in range(len(items)):
            if not items.positive(index):
                continue
            item = items[index]
            cam_map = maps[item["id"]]
            image = truncated_uint8_rgb(item["image"][None])
            mask_maker.submit(image, cam_map[None])
            pending.append(item["id"])
            if confidence is not None:
                kept[item["id"]] = (np.asarray(cam_map, dtype=np.float32), image[0])
        made = dict(zip(pending, (masks[0] for masks in mask_maker.results()), strict=True))
    empty = np.uint8 if confidence is not None else bool
    for index in range(len(items)):
        image_id = items.ids[index]
        if image_id not in made:
            size = items[index]["image"].shape[-2:]
            yield image_id, np.zeros(tuple(size), dtype=empty)
        elif confidence is None:
            yield image_id, made[image_id].astype(bool)
        else:
            cam_map, image = kept[image_id]
            yield image_id, confident_labels(made[image_id], cam_map, confidence, image)


def write_masks(path: str | Path, masks: Iterator[tuple[str, np.ndarray]]) -> dict[str, int]:
    """Write masks (boolean, or labels 0 / 1 / `IGNORE`) into a maps-format file (the
    labels as float16, exact for these values; keyed by id; atomic); returns the object area
    of each (its pixels labelled 1)."""
    areas = {}
    with MapWriter(path) as writer:
        for image_id, mask in masks:
            writer.add(image_id, mask.astype(np.float16))
            areas[image_id] = int((mask.astype(np.uint8) == OBJECT).sum())
    return areas


def ignored_areas(masks: Mapping[str, np.ndarray]) -> dict[str, int]:
    """How many pixels of each mask the loss leaves out (`IGNORE`)."""
    return {image_id: int((np.asarray(m) == IGNORE).sum()) for image_id, m in masks.items()}


def read_masks(path: str | Path) -> dict[str, np.ndarray]:
    """The masks of a file written by `write_masks`: boolean for a file of 0/1 masks (as
    they were written), uint8 labels 0 / 1 / `IGNORE` when any has ignored pixels."""
    with MapArchive(path) as archive:
        values = {image_id: archive[image_id] for image_id in archive.ids()}
    if not any(bool((v > OBJECT + 0.5).any()) for v in values.values()):
        return {image_id: v > 0.5 for image_id, v in values.items()}
    return {
        image_id: np.where(v > OBJECT + 0.5, IGNORE, v > 0.5).astype(np.uint8)
        for image_id, v in values.items()
    }


class PseudoMaskDataModule(pl.LightningDataModule):
    """The U-Net's training data when it learns from pseudo-masks: `dataset` only (no
    validation loader, so no pixel label of the validation split picks or shapes anything).

    An epoch draws `epoch_size` items with replacement, class-balanced when `balanced` (as
    the training split's `weighted_sampling`), with a generator seeded by `seed`: with as many
    as the whole training split holds, a small pseudo-labelled subset gets the optimisation
    steps of `method=supervised`."""

    def __init__(
        self,
        dataset: PseudoMaskDataset,
        epoch_size: int,
        batch_size: int,
        *,
        balanced: bool,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if len(dataset) == 0:
            raise ValueError("no pseudo-labelled training slice")
        self.dataset = dataset
        self.epoch_size = int(epoch_size)
        self.batch_size = int(batch_size)
        self.balanced = balanced
        self.seed = int(seed)
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    def train_dataloader(self) -> DataLoader:
        """`epoch_size` draws with replacement from the pseudo-labelled items."""
        labels = torch.as_tensor(self.dataset.labels)
        weights = sample_weights(labels) if self.balanced else torch.ones(len(labels))
        sampler = WeightedRandomSampler(
            weights,
            self.epoch_size,
            replacement=True,
            generator=torch.Generator().manual_seed(self.seed),
        )
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

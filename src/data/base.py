"""One DataModule engine for all four datasets: scan, split, build datasets, serve loaders.

A reader subclasses :class:`SplitDataModule` and supplies three things: ``_scan`` (the group
ids found under ``root``, validating files through :meth:`_guard`), ``_official_split`` (None
for a seeded split by ``split_ratios``, or the official lists) and ``_make_dataset``. The
base class owns splitting (docs/data.md), ``split.json``, bad-input policy (``on_error``),
logging of counts, weighted sampling and the dataloaders.

The arguments every reader shares are declared once, in :class:`DataModuleArguments`; a
reader's signature lists only its own options and passes the rest on with
``**shared: Unpack[DataModuleArguments]`` (``typing_extensions.Unpack``, imported under
``TYPE_CHECKING``: ``typing.Unpack`` needs Python 3.11). The ``data`` configs keep every name
flat (``data.image_size``); the defaults and checks stay in :class:`SplitDataModule`.
"""

from __future__ import annotations

import logging
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from src.data.datasets import FileImageDataset
from src.data.errors import DataFormatError
from src.data.splits import SPLITS, Split, read_split_file, seeded_split, write_split_file
from src.validation import check_choice

log = logging.getLogger(__name__)
T = TypeVar("T")


def sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-item weights that balance classes: 1 / (count of the rarest class the item has).

    Items without any positive label count as their own class ("none"). For K = 1 this is
    the usual 1/n_pos, 1/n_neg weighting.
    """
    positive = labels > 0.5
    counts = positive.sum(0).clamp(min=1).float()
    none = ~positive.any(1)
    inv = torch.where(positive, 1.0 / counts, torch.zeros_like(labels, dtype=torch.float32))
    weights = inv.max(1).values
    if none.any():
        weights[none] = 1.0 / none.sum().float()
    return weights


def processes_per_node() -> int:
    """Training processes sharing this machine: torchrun's ``LOCAL_WORLD_SIZE`` or SLURM's
    tasks per node, else 1."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "").split("(")[0]  # SLURM may write "4(x2)"
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def loader_settings(
    num_workers: int | None, pin_memory: bool | None, persistent_workers: bool | None = None
) -> tuple[int, bool, bool]:
    """Loader workers, memory pinning and persistent workers; None = auto.

    Auto workers: none without CUDA (a CPU run's training step already uses every core, and
    worker processes would only compete with it and cost start-up time in tests), else
    ``min(4, cores per process - 1)``: the cores this process may use (its affinity), shared
    by the training processes on the node, one left to the training process itself. Auto
    pinning: on when CUDA is available (page-locked batches copy to the GPU asynchronously).
    Auto persistence: on when there are workers, which then start once per run instead of
    once per epoch. Workers never change a run: the datasets draw no random numbers, and the
    loader draws its one seed per epoch from torch's generator whatever the worker count
    (persistent workers draw it once: docs/training.md)."""
    if num_workers is not None and (int(num_workers) != num_workers or num_workers < 0):
        raise ValueError(f"data.num_workers must be null or an integer >= 0, got {num_workers}")
    cuda = torch.cuda.is_available()
    if num_workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        per_process = max(1, (cores or 1) // processes_per_node())
        num_workers = min(4, per_process - 1) if cuda else 0
    workers = int(num_workers)
    pin = cuda if pin_memory is None else bool(pin_memory)
    persistent = workers > 0 if persistent_workers is None else bool(persistent_workers)
    return workers, pin, persistent


class DataModuleArguments(TypedDict, total=False):
    """The keyword arguments every reader takes and hands to :class:`SplitDataModule` as they
    are (defaults and checks are there). ``split_ratios`` is not one of them: only the readers
    without an official split (BraTS, TCGA-LGG) accept it."""

    split_seed: int  # seeds the split by ratios, the val carve-out and weighted sampling
    split_file: str | Path | None  # JSON/YAML {train, val, test} lists replacing the split
    batch_size: int  # default: the reader's ``default_batch_size``
    num_workers: int | None  # None: auto (``loader_settings``)
    pin_memory: bool | None  # None: auto, on when CUDA is available
    persistent_workers: bool | None  # None: auto, on when there are workers
    weighted_sampling: bool  # class-balanced sampling with replacement in the train loader
    on_error: str  # "raise" | "skip" (skip groups with bad files, with a warning)
    output_dir: str | Path | None  # where split.json is written (None: not written)


class SplitDataModule(pl.LightningDataModule, ABC):
    """Shared engine; see the module docstring. Subclasses set the class attributes."""

    num_classes: int
    task: str  # "binary" | "multilabel"
    class_names: list[str]
    default_batch_size: int = 64
    # How the evaluation scores this dataset unless eval.metrics / eval.miou say otherwise:
    # per_image (Dice/IoU/HD95 per image; binary tasks) | confusion (one matrix over the split)
    # | None (the task's default: EvalSettings.headline_metrics), and the mIoU over all
    # classes or the object classes only (foreground).
    eval_metrics: str | None = None
    eval_miou: str = "all"
    # Score images labelled negative with an empty mask (src.evaluation.image_result.gated_mask)
    eval_label_gate: bool = False
    # Readers whose items are slices of 3-D cases (ids `<case>/<slice>`): the unit of
    # `voxel_spacing`, for the evaluation's per-case metrics; None = the images are not slices.
    volume_unit: str | None = None

    def voxel_spacing(self, case: str) -> tuple[float, float, float]:
        """(slice, row, column) size of one case's voxels as evaluated, in `volume_unit`: 1
        each unless the reader knows the physical size."""
        return (1.0, 1.0, 1.0)

    def __init__(
        self,
        root: str | Path,
        split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
        /,
        *,
        split_seed: int = 42,
        split_file: str | Path | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        weighted_sampling: bool = False,
        on_error: str = "raise",
        output_dir: str | Path | None = None,
        **unknown: object,
    ) -> None:
        """``root`` and ``split_ratios`` come positionally from the reader (KSDD2 and VOC derive
        the ratios from ``val_fraction``); the rest is :class:`DataModuleArguments`.

        ``**unknown`` only collects misspelt or foreign names (``split_ratios`` given to KSDD2)
        so that the error names the reader the user called, not this base class.
        """
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword arguments {sorted(unknown)}"
            )
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root = Path(root).expanduser()
        self.split_seed = int(split_seed)
        self.split_ratios = tuple(float(r) for r in split_ratios)
        self.split_file = Path(split_file) if split_file else None
        self.batch_size = int(self.default_batch_size if batch_size is None else batch_size)
        self.num_workers, self.pin_memory, self.persistent_workers = loader_settings(
            num_workers, pin_memory, persistent_workers
        )
        self.weighted_sampling = bool(weighted_sampling)
        self.on_error = on_error
        self.output_dir = Path(output_dir) if output_dir else None
        self.skipped: dict[str, str] = {}
        self.split: Split | None = None
        self._datasets: dict[str, Dataset] = {}

    # ---- hooks for the readers ----------------------------------------------------------
    @abstractmethod
    def _scan(self) -> list[str]:
        """Group ids (cases, patients or images) usable under ``root``, in a stable order."""

    @abstractmethod
    def _make_dataset(self, split: str, groups: list[str]) -> Dataset:
        """The Dataset of the items of ``groups``; it must expose ``labels`` and ``ids``."""

    def _official_split(self, groups: list[str]) -> Split | None:
        """The dataset's own split (VOC, KSDD2), or None for a seeded split by ratios."""
        return None

    # ---- shared machinery -----------------------------------------------------------------
    def _check_root(self) -> None:
        if not self.root.exists():
            raise FileNotFoundError(f"{self.root}: dataset root does not exist (data.root)")
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: dataset root is not a folder (data.root)")

    def _guard(self, group: str, action: Callable[[], T]) -> T | None:
        """Run ``action``; on a :class:`DataFormatError` raise it or, with ``on_error='skip'``,
        warn, record the group in ``skipped`` and return None."""
        try:
            return action()
        except DataFormatError as exc:
            if self.on_error == "raise":
                raise
            self.skipped[group] = str(exc)
            warnings.warn(f"skipping {group}: {exc}", stacklevel=2)
            log.warning("skipping %s: %s", group, exc)
            return None

    def _resolve_split(self, groups: list[str]) -> Split:
        if self.split_file is not None:
            known = list(groups) + list(self.skipped)
            split = read_split_file(self.split_file, known)
            dropped = {i for ids in split.values() for i in ids if i in self.skipped}
            if dropped:
                log.warning("split file lists %d skipped groups; dropping them", len(dropped))
            unused = set(groups) - {i for ids in split.values() for i in ids}
            if unused:
                log.warning("%d groups under %s are not in the split file", len(unused), self.root)
            return {k: [i for i in v if i not in self.skipped] for k, v in split.items()}
        official = self._official_split(groups)
        if official is not None:
            return official
        return seeded_split(groups, self.split_ratios, self.split_seed)

    def setup(self, stage: str | None = None) -> None:
        """Scan, split and build the three datasets (once; later calls are no-ops)."""
        if self.split is not None:
            return
        self._check_root()
        groups = self._scan()
        if self.skipped:
            log.warning("skipped %d groups with bad files under %s", len(self.skipped), self.root)
        if not groups:
            raise DataFormatError(self.root, "no usable data found under the dataset root")
        split = self._resolve_split(groups)
        if self.output_dir is not None:
            write_split_file(self.output_dir / "split.json", split)
        self._datasets = {name: self._make_dataset(name, split[name]) for name in SPLITS}
        self.split = split
        for name in SPLITS:
            self._log_counts(name, len(split[name]))

    def _log_counts(self, split: str, n_groups: int) -> None:
        labels = self._datasets[split].labels
        positives = {
            self.class_names[k]: int((labels[:, k] > 0.5).sum()) for k in range(labels.shape[1])
        }
        none = int((~(labels > 0.5).any(1)).sum()) if len(labels) else 0
        log.info(
            "%s %s: %d groups, %d items, positives %s, no label %d",
            type(self).__name__,
            split,
            n_groups,
            len(labels),
            positives,
            none,
        )

    def dataset(self, split: str) -> Dataset:
        """The Dataset of ``split`` (train, val or test); runs ``setup`` if needed."""
        check_choice("split", split, SPLITS)
        self.setup()
        return self._datasets[split]

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, or class-balanced with replacement when ``weighted_sampling``."""
        data = self.dataset("train")
        if self.weighted_sampling and len(data):
            generator = torch.Generator().manual_seed(self.split_seed)
            sampler = WeightedRandomSampler(
                sample_weights(data.labels), len(data), replacement=True, generator=generator
            )
            return self._loader(data, self.batch_size, shuffle=False, sampler=sampler)
        return self._loader(data, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Unshuffled loader of the validation split."""
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """Unshuffled loader of the test split."""
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Unshuffled loader over any split (train, val or test), for evaluation and CAMs."""
        return self._loader(self.dataset(split), batch_size or self.batch_size, shuffle=False)


class FileDataModule(SplitDataModule):
    """Readers whose items are image files read on access (TCGA-LGG, KSDD2, VOC).

    ``_scan`` fills ``self._entries[group]`` with ``(item id, record, label vector)``;
    ``_load(record)`` returns the (image, mask) arrays of one item; items are resized to
    ``self.image_size`` (set by the subclass, None = keep).
    """

    image_size: tuple[int, int] | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._entries: dict[str, list[tuple[str, object, list[float]]]] = {}

    @abstractmethod
    def _load(self, record: object) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, C) uint8 image and (H, W) integer mask of one record."""

    def _make_dataset(self, split: str, groups: list[str]) -> FileImageDataset:
        rows = [row for g in groups for row in self._entries[g]]
        labels = torch.tensor([r[2] for r in rows], dtype=torch.float32).reshape(
            len(rows), self.num_classes
        )
        return FileImageDataset(
            [r[1] for r in rows], labels, [r[0] for r in rows], self._load, self.image_size
        )

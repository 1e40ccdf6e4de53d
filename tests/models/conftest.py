"""Fixtures: tiny in-memory data in the DataModules' batch format (dicts of image, label, mask,
id) and quiet CPU trainers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from tests.helpers.datasets import DictDataset
from tests.helpers.trainer import quiet_trainer_kwargs


@pytest.fixture(scope="session")
def make_loader() -> Callable[..., DataLoader]:
    """``make_loader(n, num_classes, batch_size, seed)``: a loader of DictDataset, in order."""

    def make(n: int = 8, num_classes: int = 1, batch_size: int = 4, seed: int = 0) -> DataLoader:
        return DataLoader(DictDataset(n, num_classes, seed), batch_size=batch_size)

    return make


@pytest.fixture(scope="session")
def make_trainer() -> Callable[..., pl.Trainer]:
    """``make_trainer(**overrides)``: a quiet single-process CPU trainer."""
    return lambda **overrides: pl.Trainer(**quiet_trainer_kwargs(**overrides))

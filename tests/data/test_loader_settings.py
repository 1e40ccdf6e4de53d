"""Loader workers and pinning follow the machine by default, and never change a run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from src.data import base
from src.data.base import loader_settings
from tests.helpers.datasets import DictDataset


@pytest.mark.parametrize(
    ("cuda", "cores", "env", "expected"),
    [
        (False, 8, {}, (0, False, False)),  # CPU training uses the cores itself
        (True, 8, {}, (4, True, True)),
        (True, 2, {}, (1, True, True)),
        (True, 8, {"LOCAL_WORLD_SIZE": "4"}, (1, True, True)),  # 2 cores per process
        (True, 16, {"SLURM_NTASKS_PER_NODE": "2(x3)"}, (4, True, True)),
        (True, 1, {}, (0, True, False)),  # no workers to keep
    ],
)
def test_auto_follows_the_accelerator_and_cores_per_process(
    monkeypatch, cuda, cores, env, expected
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(base.os, "sched_getaffinity", lambda pid: set(range(cores)))
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert loader_settings(None, None, None) == expected
    assert loader_settings(2, False, False) == (2, False, False)  # the config overrides
    assert loader_settings(0, None, True)[2] is True  # kept as set (the loader ignores it)


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_bad_worker_count_names_the_key(bad):
    with pytest.raises(ValueError, match="data.num_workers"):
        loader_settings(bad, None)


def test_workers_change_neither_batches_nor_the_random_stream():
    """The same shuffled batches and the same torch random state after an epoch (the
    augmentation's stream) with 0 and 2 workers."""
    data = DictDataset(12, 1, 0)
    results = []
    for workers in (0, 2):
        torch.manual_seed(3)
        batches = [
            b["image"] for b in DataLoader(data, batch_size=4, shuffle=True, num_workers=workers)
        ]
        results.append((torch.cat(batches), torch.rand(3)))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])

"""Fixtures that test folders opt into."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-model tests: on a shared 2-core machine two
    OpenMP threads made a 32 px ResNet-18 forward ~60x slower (0.7 s vs 12 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

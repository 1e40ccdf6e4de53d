"""Fixtures that test folders opt into."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# The checkout first on sys.path, whatever starts pytest (`python -m pytest` or the `pytest`
# script, importlib mode inserts nothing): `tests.helpers`, `experiments` and `benchmarks` are
# folders of the checkout, not installed, and `src` must be this checkout's.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-model tests: on a shared 2-core machine two
    OpenMP threads made a 32 px ResNet-18 forward ~60x slower (0.7 s vs 12 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

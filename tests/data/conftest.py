"""Tiny generated datasets shared by the data tests (generated once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from src.data.generators.brats import generate_brats

TINY_BRATS_SHAPE = (48, 48, 20)


@pytest.fixture(scope="session")
def tiny_brats(tmp_path_factory) -> tuple[Path, list[str]]:
    """5 BraTS-format cases of 48x48x20 (one without tumour). Read-only: copy to modify."""
    root = tmp_path_factory.mktemp("brats") / "BraTS2021"
    ids = generate_brats(root, n_cases=5, seed=3, shape=TINY_BRATS_SHAPE, normal_cases=1)
    return root, ids


@pytest.fixture
def brats_copy(tiny_brats, tmp_path) -> Path:
    """A private, modifiable copy of the tiny BraTS tree."""
    root = tmp_path / "data"
    shutil.copytree(tiny_brats[0], root)
    return root

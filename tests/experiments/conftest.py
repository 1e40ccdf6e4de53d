"""Fixtures of the recipe tests: fake dataset roots and engine settings under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.engine import Settings  # the root conftest puts the checkout on sys.path
from experiments.recipes import DATASETS


@pytest.fixture
def fake_roots(tmp_path: Path) -> dict[str, str]:
    """One (empty) folder per dataset: enough to compose and validate, never read."""
    roots = {}
    for dataset in DATASETS:
        root = tmp_path / "data" / dataset
        root.mkdir(parents=True)
        roots[dataset] = str(root)
    return roots


@pytest.fixture
def settings(tmp_path: Path, fake_roots: dict[str, str]) -> Settings:
    """Real-data settings with every output (runs, tables, caches) under tmp_path."""
    return Settings(
        roots=fake_roots,
        runs_dir=tmp_path / "runs",
        results_dir=tmp_path / "results",
        demo_data_dir=tmp_path / "demo_data",
        vgg_weights=str(tmp_path / "vgg16.pth"),
        extra=(f"paths.root_dir={tmp_path}",),
        project_root=tmp_path,
    )

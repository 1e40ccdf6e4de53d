"""Compose the project's Hydra config in tests, the way `python -m src.run` does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig

from src.pipeline.compose import compose_config


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config(overrides, output_dir or tmp_path / "run")

    return make


@pytest.fixture(scope="session")
def composer() -> Callable[[Sequence[str], Path], DictConfig]:
    """`compose_config` itself, for module-scoped fixtures."""
    return compose_config

"""The CAM tests run on one intra-op thread: their models are tiny (``single_thread`` in
tests/conftest.py says why)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def cam_tests_single_thread(single_thread: None) -> None:
    """Applies ``single_thread`` to every module of this folder."""

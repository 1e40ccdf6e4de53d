"""Atomic writes give files and folders the permissions a plain open/mkdir would."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from src.data.atomic import atomic_directory, atomic_write_text


@pytest.fixture(params=[0o022, 0o077])
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_file_and_folder_follow_the_umask(tmp_path, umask):
    path = tmp_path / "split.json"
    atomic_write_text(path, "{}\n")
    assert _mode(path) == 0o666 & ~umask  # tempfile alone would give 0600
    with atomic_directory(tmp_path / "entry") as tmp:
        (tmp / "weights.pt").write_bytes(b"x")
    assert _mode(tmp_path / "entry") == 0o777 & ~umask  # not mkdtemp's 0700
    assert os.umask(umask) == umask, "the process umask changed"

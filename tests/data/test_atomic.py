"""Atomic writes give files and folders the permissions a plain open/mkdir would."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from src.data.atomic import atomic_directory, atomic_path, atomic_write_text


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


def test_atomic_path_appears_only_when_the_block_succeeds(tmp_path, umask):
    path = tmp_path / "figure.png"
    with atomic_path(path) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path  # writers pick formats by name
        tmp.write_bytes(b"png")
        assert not path.exists()
    assert path.read_bytes() == b"png" and _mode(path) == 0o666 & ~umask
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"png", "a failed write leaves the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"], "no temporary left"

"""Slice cache on disk: decoded arrays per source item, invalidated when a source file changes.

docs/data.md: read volumes once and never re-decode NIfTI per item. Cache files live in a
user cache folder keyed by the dataset root (never inside the dataset folder) and record the
size and mtime of the files they were decoded from; any difference means a re-decode.
Processes that miss the same entry at once decode it once (`cached`: the entry's lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from src.data.atomic import atomic_write_bytes
from src.data.lock import build_once

CACHE_VERSION = 1


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/wsss-cam`` (``~/.cache/wsss-cam`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wsss-cam"


def dataset_cache_dir(cache_dir: str | Path | None, dataset: str, root: Path) -> Path:
    """``<cache_dir or default>/<dataset>/<hash of the resolved root>``; refuses the root itself."""
    resolved_root = root.resolve()
    digest = hashlib.sha1(str(resolved_root).encode()).hexdigest()[:16]
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
    folder = (base / dataset / digest).resolve()
    if folder == resolved_root or resolved_root in folder.parents:
        raise ValueError(f"{folder}: cache_dir must not be inside the dataset root {root}")
    return folder


@contextlib.contextmanager
def discarded_on_error(folder: Path) -> Iterator[None]:
    """Remove ``folder`` if it did not exist before the block and the block fails.

    Each cache entry is written atomically, but a first read of a dataset that stops at a
    bad file would otherwise leave a folder holding only the cases before it."""
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def fingerprint(paths: list[Path]) -> dict[str, list[int]]:
    """Size and mtime (ns) of each source file: what a cache entry is valid for."""
    out = {}
    for p in paths:
        st = p.stat()
        out[p.name] = [st.st_size, st.st_mtime_ns]
    return out


def load_entry(path: Path, sources: dict[str, list[int]]) -> dict[str, np.ndarray] | None:
    """The cached arrays if ``path`` exists and was made from exactly ``sources``, else None.

    An unreadable cache file (e.g. a crash of another process) counts as missing.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta != {"version": CACHE_VERSION, "sources": sources}:
                return None
            return {k: data[k] for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def save_entry(path: Path, arrays: dict[str, np.ndarray], sources: dict[str, list[int]]) -> None:
    """Write a compressed ``.npz`` atomically with its source fingerprint."""
    meta = json.dumps({"version": CACHE_VERSION, "sources": sources})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=np.array(meta), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def cached(
    path: Path, sources: dict[str, list[int]], decode: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The entry at ``path`` for ``sources``; on a miss ``decode()`` runs and is saved, by one
    process only when several miss together (the others wait and load its file)."""

    def build() -> dict[str, np.ndarray]:
        arrays = decode()
        save_entry(path, arrays, sources)
        return arrays

    return build_once(path, lambda: load_entry(path, sources), build)

"""Content fingerprints of datasets and files: the same data gives the same fingerprint
wherever it is mounted.

The model store keys a trained classifier by the data it learnt from. A path cannot be that
key (the same dataset is mounted at another path on another cluster node), nor can
modification times (a copy gets new ones); the bytes can. Hashing a whole dataset costs one
read of it, so the hash of each file is remembered in a memo file (outside the dataset, keyed
by the file's path, size and modification time) and a later run only stats the files. Jobs
that start together on a new dataset hash it once (the memo's lock, `src.data.lock`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

from src.data.atomic import atomic_write_text
from src.data.lock import build_once

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of one file's bytes (hex), read in chunks; not remembered anywhere."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _data_files(root: Path) -> list[Path]:
    """Every file under `root` (or `root` itself), sorted; hidden files and folders are left
    out, as the readers ignore them (e.g. the demo generator's marker)."""
    if root.is_file():
        return [root]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / name for name in sorted(files) if not name.startswith(".")]
    return found


def _memo_file(memo_dir: Path, root: Path) -> Path:
    return memo_dir / f"{hashlib.sha1(str(root).encode()).hexdigest()[:16]}.json"


def content_fingerprint(path: str | os.PathLike, memo_dir: str | os.PathLike | None = None) -> str:
    """SHA-256 over the relative path and content hash of every file under `path` (a folder
    or one file); "missing" if it does not exist. `memo_dir` keeps the per-file hashes.

    Computed once per process and path (a missing path is asked again: it may be generated
    later)."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        return "missing"
    return _fingerprint(root, None if memo_dir is None else Path(memo_dir))


def _read_memo(path: Path) -> dict[str, list]:
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _digest(root: Path, memo: dict[str, list], hash_missing: bool) -> tuple[str | None, dict]:
    """The fingerprint and the fresh memo; (None, {}) if a file is not in `memo` (or changed
    since) and `hash_missing` is false."""
    digest = hashlib.sha256()
    fresh: dict[str, list] = {}
    hashed = 0
    for file in _data_files(root):
        name = "" if file == root else file.relative_to(root).as_posix()  # a file: its bytes
        stat = file.stat()
        known = memo.get(name)
        if known and known[:2] == [stat.st_size, stat.st_mtime_ns]:
            sha = known[2]
        elif hash_missing:
            sha = file_sha256(file)
            hashed += stat.st_size
        else:
            return None, {}
        fresh[name] = [stat.st_size, stat.st_mtime_ns, sha]
        digest.update(f"{name}\0{sha}\n".encode())
    if hashed:
        log.info("Hashed %.1f MB of %s for its content fingerprint", hashed / 1e6, root)
    return digest.hexdigest()[:16], fresh


@functools.lru_cache(maxsize=32)
def _fingerprint(root: Path, memo_dir: Path | None) -> str:
    """With a memo, the files not in it are hashed by one process of those that ask at
    once (the jobs of a sweep starting together); the others wait and read its memo."""
    if memo_dir is None:
        fingerprint, _ = _digest(root, {}, hash_missing=True)
        assert fingerprint is not None
        return fingerprint
    memo_path = _memo_file(memo_dir, root)

    def from_memo() -> str | None:
        return _digest(root, _read_memo(memo_path), hash_missing=False)[0]

    def build() -> str:
        fingerprint, fresh = _digest(root, _read_memo(memo_path), hash_missing=True)
        atomic_write_text(memo_path, json.dumps(fresh))
        assert fingerprint is not None
        return fingerprint

    return build_once(memo_path, from_memo, build)

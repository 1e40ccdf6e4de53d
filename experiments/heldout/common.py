"""What both writers share: per-case seeds, worker processes, writing into a staging folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MANIFEST = ".heldout.json"


def case_seeds(seed: int, n: int, stream: int) -> list[np.random.SeedSequence]:
    """One independent seed per case of a format (``stream``): case i is the same whatever
    ``n`` and the workers."""
    return [np.random.SeedSequence([seed, stream, i]) for i in range(n)]


def run_cases(work: Callable, tasks: list, workers: int) -> list:
    """``work`` over ``tasks`` in order, in ``workers`` processes (1: in this process)."""
    if workers <= 1 or len(tasks) <= 1:
        return [work(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        return list(pool.map(work, tasks))


@contextmanager
def staged_output(out: str | Path, params: dict) -> Iterator[tuple[Path, dict]]:
    """Yield a staging folder next to ``out`` and a manifest dict; on success write the
    manifest into it and move it to ``out`` (which must not exist, or be an empty folder)."""
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    manifest = {"params": params, "generator": "experiments.heldout"}
    try:
        yield stage, manifest
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.chmod(stage, 0o755)
        if out.exists():
            out.rmdir()
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)

"""Demo data: the generated BraTS copy the pipeline runs on when no real data is given.

Generated once per parameter set: a marker file inside the generated folder records the
generator parameters and version, and the folder is rebuilt only when they differ or the
folder is incomplete (a missing case file). Runs started together on one checkout generate it
once: the first takes the folder's lock (`src.data.lock`, a hidden sibling), the others wait
and read what it wrote.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.data.brats import BraTSDataModule
from src.data.generators.anatomy import MODALITIES
from src.data.generators.brats import generate_brats
from src.data.lock import build_once

log = logging.getLogger(__name__)

#: Bump when the generator's output changes, so cached demo copies are rebuilt.
DEMO_VERSION = 3
MARKER = ".wsss_demo.json"


def _complete(root: Path, cases: list[str]) -> bool:
    names = [*MODALITIES, "seg"]
    return all((root / c / f"{c}_{m}.nii.gz").is_file() for c in cases for m in names)


def _is_current(root: Path, params: dict) -> bool:
    """True if ``root`` holds a complete copy generated with exactly ``params``."""
    try:
        stored = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return stored.get("params") == params and _complete(root, stored.get("cases", []))


def ensure_demo_brats(
    root: str | Path, n_cases: int = 12, seed: int = 0, workers: int | None = None, **kw: Any
) -> Path:
    """Return ``root`` holding a generated BraTS copy made with these parameters.

    ``kw`` goes to :func:`src.data.generators.brats.generate_brats` (``shape``,
    ``normal_cases``, ``noise``). The marker is hidden, so the BraTS reader ignores it.
    ``workers``: generator processes (default: one per CPU core, at most 4); they do not
    change the data, so they are not part of the marker.
    """
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    root = Path(root).expanduser()
    params = {"version": DEMO_VERSION, "n_cases": n_cases, "seed": seed, **kw}
    params = json.loads(json.dumps(params))  # tuples -> lists, as stored in the marker
    marker = root / MARKER

    def current() -> Path | None:
        return root if _is_current(root, params) else None

    def generate() -> Path:
        log.info("generating demo BraTS data in %s (%s)", root, params)
        exists = root.exists()
        if exists and not marker.is_file() and any(root.iterdir()):
            raise FileExistsError(
                f"{root}: not a generated demo folder (no {MARKER}); refusing to replace it"
            )
        # generate_brats builds a temporary sibling and swaps it in, marker included.
        generate_brats(
            root,
            n_cases=n_cases,
            seed=seed,
            overwrite=exists,
            marker=(MARKER, {"params": params}),
            workers=workers,
            **kw,
        )
        return root

    return build_once(root, current, generate)


class DemoBraTSDataModule(BraTSDataModule):
    """The BraTS DataModule on a generated copy of BraTS in its real on-disk format.

    ``demo``: the generator's arguments (:func:`ensure_demo_brats`: ``n_cases``, ``seed``,
    ``normal_cases``, ``shape``, ``workers``, ...); None reads ``root`` as it is (the demo's
    settings on another BraTS-format folder). Every other argument is the
    :class:`~src.data.brats.BraTSDataModule`'s. ``prepare_data`` generates the copy into
    ``root`` (once per parameter set, however many processes ask at once); the pipeline calls
    it right after building the DataModule, before anything reads ``root``.
    """

    def __init__(
        self, root: str | Path, demo: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """A BraTS DataModule on `root` that `prepare_data` fills with `demo`'s generator."""
        super().__init__(root, **kwargs)
        # Plain values (a config node's lists are not JSON, which the marker file is).
        self.demo = OmegaConf.to_container(demo) if OmegaConf.is_config(demo) else demo

    def prepare_data(self) -> None:
        """Generate the demo copy into ``root`` unless it is already there (the marker matches)."""
        if self.demo is not None:
            ensure_demo_brats(self.root, **self.demo)

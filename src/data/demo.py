"""Demo data: generated copies in the real on-disk formats, which the real readers then read.

Each demo DataModule is its dataset's DataModule plus ``prepare_data``, which generates the
copy into ``root`` on first use. A copy is generated once per parameter set: a marker file
inside the generated folder records the generator parameters and version (and the files it
wrote), and the folder is rebuilt only when they differ or a file is missing. Runs started
together on one checkout generate it once: the first takes the folder's lock
(`src.data.lock`, a hidden sibling), the others wait and read what it wrote. A folder without
a marker is never replaced: it is somebody's data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.data.brats import BraTSDataModule
from src.data.generators.anatomy import MODALITIES
from src.data.generators.brats import generate_brats
from src.data.generators.ksdd2 import generate_ksdd2
from src.data.generators.tcga_lgg import generate_tcga_lgg
from src.data.generators.voc_scenes import generate_voc_scenes
from src.data.ksdd2 import KSDD2DataModule
from src.data.lock import build_once
from src.data.tcga_lgg import TCGALGGDataModule
from src.data.voc import VOCDataModule

log = logging.getLogger(__name__)

#: Bump when a generator's output changes, so cached demo copies are rebuilt.
DEMO_VERSION = 3
KSDD2_DEMO_VERSION = 4
TCGA_DEMO_VERSION = 1
VOC_DEMO_VERSION = 1
MARKER = ".wsss_demo.json"

#: (root, overwrite, marker) -> None: writes the copy, marker included, atomically.
Generate = Callable[[Path, bool, tuple[str, dict]], None]
#: The marker's content -> the files a complete copy holds (relative to its root).
ExpectedFiles = Callable[[dict], list[str]]


def ensure_generated(
    root: str | Path, params: dict[str, Any], generate: Generate, expected: ExpectedFiles
) -> Path:
    """Return ``root`` holding a complete copy that ``generate`` made with ``params``."""
    root = Path(root).expanduser()
    params = json.loads(json.dumps(params))  # tuples -> lists, as stored in the marker
    marker = root / MARKER

    def current() -> Path | None:
        try:
            stored = json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
        if stored.get("params") != params:
            return None
        files = expected(stored)  # a marker listing nothing is an interrupted generation
        return root if files and all((root / f).is_file() for f in files) else None

    def build() -> Path:
        log.info("generating demo data in %s (%s)", root, params)
        exists = root.exists()
        if exists and not marker.is_file() and any(root.iterdir()):
            raise FileExistsError(
                f"{root}: not a generated demo folder (no {MARKER}); refusing to replace it"
            )
        generate(root, exists, (MARKER, {"params": params}))
        return root

    return build_once(root, current, build)


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
    params = {"version": DEMO_VERSION, "n_cases": n_cases, "seed": seed, **kw}

    def generate(target: Path, overwrite: bool, marker: tuple[str, dict]) -> None:
        generate_brats(
            target, n_cases=n_cases, seed=seed, overwrite=overwrite, marker=marker,
            workers=workers, **kw,
        )  # fmt: skip

    def expected(stored: dict) -> list[str]:
        names = [*MODALITIES, "seg"]
        return [f"{c}/{c}_{m}.nii.gz" for c in stored.get("cases", []) for m in names]

    return ensure_generated(root, params, generate, expected)


def ensure_demo_ksdd2(root: str | Path, seed: int = 0, **kw: Any) -> Path:
    """Return ``root`` holding a generated KSDD2 copy made with these parameters.

    ``kw`` goes to :func:`src.data.generators.ksdd2.generate_ksdd2` (``n_train``, ``n_test``,
    ``defect_fraction``, ``size``).
    """
    params = {"version": KSDD2_DEMO_VERSION, "seed": seed, **kw}

    def generate(target: Path, overwrite: bool, marker: tuple[str, dict]) -> None:
        generate_ksdd2(target, seed=seed, overwrite=overwrite, marker=marker, **kw)

    return ensure_generated(root, params, generate, _listed_files)


def ensure_demo_tcga(root: str | Path, seed: int = 0, **kw: Any) -> Path:
    """Return ``root`` holding a generated TCGA-LGG copy (kaggle_3m layout) made with these
    parameters.

    ``kw`` goes to :func:`src.data.generators.tcga_lgg.generate_tcga_lgg` (``n_patients``,
    ``size``, ``n_slices``, ``normal_patients``, ``nested_duplicate``, ``compress``).
    """
    params = {"version": TCGA_DEMO_VERSION, "seed": seed, **kw}

    def generate(target: Path, overwrite: bool, marker: tuple[str, dict]) -> None:
        generate_tcga_lgg(target, seed=seed, overwrite=overwrite, marker=marker, **kw)

    return ensure_generated(root, params, generate, _listed_files)


def ensure_demo_voc(root: str | Path, seed: int = 0, **kw: Any) -> Path:
    """Return ``root`` holding a generated PASCAL VOC 2012 copy (``VOCdevkit/VOC2012``) made
    with these parameters.

    ``kw`` goes to :func:`src.data.generators.voc_scenes.generate_voc_scenes` (``n_train``,
    ``n_val``, ``size``).
    """
    params = {"version": VOC_DEMO_VERSION, "seed": seed, **kw}

    def generate(target: Path, overwrite: bool, marker: tuple[str, dict]) -> None:
        generate_voc_scenes(target, seed=seed, overwrite=overwrite, marker=marker, **kw)

    return ensure_generated(root, params, generate, _listed_files)


def _listed_files(stored: dict) -> list[str]:
    """The files a generator listed in its marker."""
    return stored.get("files", [])


class _GeneratedData:
    """Mixin for a reader's DataModule whose `prepare_data` generates its folder first.

    ``demo``: the generator's arguments (passed to ``ensure``); None reads ``root`` as it is
    (a real folder, or one made by other code). ``prepare_data`` generates the copy into
    ``root`` once per parameter set, however many processes ask at once; the pipeline calls
    it right after building the DataModule, before anything reads ``root``."""

    root: Path
    #: Makes `root` hold the generated copy: ensure(root, **demo).
    ensure: Callable[..., Path]

    def __init__(
        self, root: str | Path, demo: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """The reader's DataModule on `root`, which `prepare_data` fills with `demo`'s data."""
        super().__init__(root, **kwargs)  # type: ignore[call-arg]
        # Plain values (a config node's lists are not JSON, which the marker file is).
        self.demo = OmegaConf.to_container(demo) if OmegaConf.is_config(demo) else demo

    def prepare_data(self) -> None:
        """Generate the demo copy into ``root`` unless it is already there (the marker matches)."""
        if self.demo is not None:
            type(self).ensure(self.root, **self.demo)


class DemoBraTSDataModule(_GeneratedData, BraTSDataModule):
    """The BraTS DataModule on a generated copy of BraTS in its real on-disk format.

    ``demo``: :func:`ensure_demo_brats`'s arguments (``n_cases``, ``seed``, ``normal_cases``,
    ``shape``, ``workers``, ...); every other argument is the
    :class:`~src.data.brats.BraTSDataModule`'s.
    """

    ensure = staticmethod(ensure_demo_brats)


class DemoKSDD2DataModule(_GeneratedData, KSDD2DataModule):
    """The KSDD2 DataModule on a generated copy of KolektorSDD2 in its real on-disk format.

    ``demo``: :func:`ensure_demo_ksdd2`'s arguments (``n_train``, ``n_test``, ``seed``,
    ``defect_fraction``, ``size``); every other argument is the
    :class:`~src.data.ksdd2.KSDD2DataModule`'s.
    """

    ensure = staticmethod(ensure_demo_ksdd2)


class DemoTCGADataModule(_GeneratedData, TCGALGGDataModule):
    """The TCGA-LGG DataModule on a generated copy of Kaggle's ``kaggle_3m`` in its real
    on-disk format.

    ``demo``: :func:`ensure_demo_tcga`'s arguments (``n_patients``, ``seed``, ``size``,
    ``n_slices``, ``normal_patients``, ``compress``, ...); every other argument is the
    :class:`~src.data.tcga_lgg.TCGALGGDataModule`'s.
    """

    ensure = staticmethod(ensure_demo_tcga)


class DemoVOCDataModule(_GeneratedData, VOCDataModule):
    """The VOC DataModule on a generated copy of PASCAL VOC 2012 in its real on-disk format.

    ``demo``: :func:`ensure_demo_voc`'s arguments (``n_train``, ``n_val``, ``seed``,
    ``size``); every other argument is the :class:`~src.data.voc.VOCDataModule`'s.
    """

    ensure = staticmethod(ensure_demo_voc)

"""Synthetic BraTS 2021 in the real layout (docs/data.md).

``<root>/BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``: int16 images,
uint8 segmentation with labels {0, 1, 2, 4}, case IDs with gaps. Brains come from the
bundled MNI152 template (see :mod:`src.data.generators.anatomy`).
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from src.data.atomic import atomic_directory
from src.data.generators.anatomy import MODALITIES, render, sample_brain, sample_tumour

BRATS_SHAPE = (240, 240, 155)
#: BraTS volumes are stored in LPS-like orientation at 1 mm; the loader ignores the affine.
_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def brats_case_ids(n_cases: int, rng: np.random.Generator) -> list[str]:
    """``BraTS2021_00000``-style IDs with random gaps (the real IDs are not contiguous)."""
    numbers = np.cumsum(np.concatenate([[0], rng.integers(1, 4, n_cases - 1)]))
    return [f"BraTS2021_{int(n):05d}" for n in numbers]


def write_nifti(path: Path, data: np.ndarray, compresslevel: int = 1) -> None:
    """Write a .nii.gz with a low gzip level (nibabel's default level is slow for demo data).

    The gzip header's modification time is 0, not the clock's: the model store keys a
    classifier by the bytes of its data (`src.data.fingerprint`), so a regenerated demo
    must be the same bytes to find the classifier trained on the first one."""
    payload = nib.Nifti1Image(data, _AFFINE).to_bytes()
    path.write_bytes(gzip.compress(payload, compresslevel=compresslevel, mtime=0))


def _write_case(
    folder: Path, seed: int, index: int, shape: tuple[int, ...], normal: bool, noise: float
) -> None:
    """One case's five files; its own random stream, so cases can be made in any order."""
    case = folder.name
    case_rng = np.random.default_rng([seed, index])
    brain = sample_brain(shape, case_rng)
    tumour = None if normal else sample_tumour(brain, case_rng)
    folder.mkdir()
    for modality in MODALITIES:
        img = render(brain, tumour, modality, case_rng, noise=noise)
        scale = case_rng.uniform(700, 1500)
        write_nifti(folder / f"{case}_{modality}.nii.gz", np.round(img * scale).astype(np.int16))
    seg = tumour.labels() if tumour is not None else np.zeros(shape, np.uint8)
    write_nifti(folder / f"{case}_seg.nii.gz", seg)


def generate_brats(
    root: str | Path,
    n_cases: int = 12,
    seed: int = 0,
    shape: Sequence[int] = BRATS_SHAPE,
    normal_cases: int | None = None,
    noise: float = 0.03,
    overwrite: bool = False,
    marker: tuple[str, dict] | None = None,
    workers: int = 1,
) -> list[str]:
    """Write ``n_cases`` synthetic cases under ``root`` (built in a temp sibling, then renamed).

    ``normal_cases`` of them (chosen at random; default ``n_cases // 6``) have no tumour; the
    others have one tumour of
    random position, size and shape, so they also contain tumour-free slices. Returns the case
    IDs in sorted order. Deterministic for a given ``seed`` and arguments. ``marker`` =
    (file name, content): a JSON provenance file written at the root with the cases, plus
    a ``cases`` list, inside the same atomic rename. ``workers`` > 1 makes the cases in that
    many processes (each loads the template once, a few seconds); the files are the same.
    """
    if normal_cases is None:
        normal_cases = n_cases // 6
    if n_cases < 1 or not 0 <= normal_cases <= n_cases:
        raise ValueError(
            f"need n_cases >= 1 and 0 <= normal_cases <= n_cases, got {n_cases}, {normal_cases}"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 sizes >= 8, got {shape}")
    rng = np.random.default_rng(seed)
    ids = brats_case_ids(n_cases, rng)
    normal = set(rng.choice(n_cases, normal_cases, replace=False).tolist())
    with atomic_directory(root, overwrite=overwrite) as tmp:
        jobs = [(tmp / case, seed, i, shape, i in normal, noise) for i, case in enumerate(ids)]
        if workers > 1 and len(jobs) > 1:
            # spawn, not fork: a forked copy of a process that already ran torch can hang.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                min(workers, len(jobs)),
                mp_context=context,
                initializer=torch.set_num_threads,
                initargs=(1,),
            ) as pool:
                for done in [pool.submit(_write_case, *job) for job in jobs]:
                    done.result()
        else:
            for job in jobs:
                _write_case(*job)
        if marker is not None:
            name, content = marker
            (tmp / name).write_text(json.dumps({**content, "cases": ids}, indent=1))
    return ids

"""Synthetic BraTS 2021 in the real layout (SPEC section 7).

``<root>/BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``: int16 images,
uint8 segmentation with labels {0, 1, 2, 4}, case IDs with gaps. Brains come from the
bundled MNI152 template (see :mod:`src.data.generators.anatomy`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

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
    """Write a .nii.gz with a low gzip level (nibabel's default level is slow for demo data)."""
    payload = nib.Nifti1Image(data, _AFFINE).to_bytes()
    path.write_bytes(gzip.compress(payload, compresslevel=compresslevel))


def generate_brats(
    root: str | Path,
    n_cases: int = 12,
    seed: int = 0,
    shape: Sequence[int] = BRATS_SHAPE,
    normal_cases: int | None = None,
    noise: float = 0.03,
    overwrite: bool = False,
    marker: tuple[str, dict] | None = None,
) -> list[str]:
    """Write ``n_cases`` synthetic cases under ``root`` (built in a temp sibling, then renamed).

    ``normal_cases`` of them (chosen at random; default ``n_cases // 6``) have no tumour; the
    others have one tumour of
    random position, size and shape, so they also contain tumour-free slices. Returns the case
    IDs in sorted order. Deterministic for a given ``seed`` and arguments. ``marker`` =
    (file name, content): a JSON provenance file written at the root with the cases, plus
    a ``cases`` list, inside the same atomic rename.
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
        for i, case in enumerate(ids):
            case_rng = np.random.default_rng([seed, i])
            brain = sample_brain(shape, case_rng)
            tumour = None if i in normal else sample_tumour(brain, case_rng)
            folder = tmp / case
            folder.mkdir()
            for modality in MODALITIES:
                img = render(brain, tumour, modality, case_rng, noise=noise)
                scale = case_rng.uniform(700, 1500)
                write_nifti(
                    folder / f"{case}_{modality}.nii.gz", np.round(img * scale).astype(np.int16)
                )
            seg = tumour.labels() if tumour is not None else np.zeros(shape, np.uint8)
            write_nifti(folder / f"{case}_seg.nii.gz", seg)
        if marker is not None:
            name, content = marker
            (tmp / name).write_text(json.dumps({**content, "cases": ids}, indent=1))
    return ids

"""Synthetic TCGA-LGG in the Kaggle ``lgg-mri-segmentation`` layout (docs/data.md).

``<root>/kaggle_3m/TCGA_XX_XXXX_YYYYMMDD/<folder>_<n>.tif`` (H x W x 3 uint8: pre-contrast,
FLAIR, post-contrast), ``<folder>_<n>_mask.tif`` (0/255), unpadded slice numbers from 1,
``kaggle_3m/data.csv`` and optionally the nested duplicate copy of the Kaggle download
(``<root>/lgg-mri-segmentation/kaggle_3m/``). Brains reuse the BraTS anatomy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tifffile

from src.data.atomic import atomic_directory
from src.data.generators.anatomy import render, sample_brain, sample_tumour

#: Stored channel order of the Kaggle slices.
TCGA_MODALITIES = ("t1", "flair", "t1ce")
_INSTITUTIONS = ("CS", "DU", "EZ", "FG", "HT")


def tcga_patient_ids(n: int, rng: np.random.Generator) -> list[str]:
    """Distinct ``TCGA_XX_XXXX_YYYYMMDD`` folder names."""
    ids: set[str] = set()
    while len(ids) < n:
        inst = _INSTITUTIONS[rng.integers(len(_INSTITUTIONS))]
        date = f"{rng.integers(1995, 2006)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
        ids.add(f"TCGA_{inst}_{rng.integers(4000, 9000):04d}_{date}")
    return sorted(ids)


def _to_uint8(volume: np.ndarray) -> np.ndarray:
    hi = float(volume.max())
    return np.round(volume / hi * 255).astype(np.uint8) if hi > 0 else volume.astype(np.uint8)


def generate_tcga_lgg(
    root: str | Path,
    n_patients: int = 6,
    seed: int = 0,
    size: int = 256,
    n_slices: tuple[int, int] = (12, 24),
    normal_patients: int = 0,
    nested_duplicate: bool = True,
    overwrite: bool = False,
) -> list[str]:
    """Write ``n_patients`` patients (slice count drawn in ``n_slices``, inclusive) under
    ``root``; returns the patient folder names, sorted. Deterministic for a seed."""
    if n_patients < 1 or not 0 <= normal_patients <= n_patients:
        raise ValueError("need n_patients >= 1 and 0 <= normal_patients <= n_patients")
    rng = np.random.default_rng(seed)
    patients = tcga_patient_ids(n_patients, rng)
    normal = set(rng.choice(n_patients, normal_patients, replace=False).tolist())
    with atomic_directory(root, overwrite=overwrite) as tmp:
        base = tmp / "kaggle_3m"
        base.mkdir()
        rows = ["Patient,death01"]
        for i, patient in enumerate(patients):
            prng = np.random.default_rng([seed, i])
            depth = int(prng.integers(n_slices[0], n_slices[1] + 1))
            brain = sample_brain((size, size, depth), prng)
            tumour = None if i in normal else sample_tumour(brain, prng)
            volume = np.stack(
                [_to_uint8(render(brain, tumour, m, prng)) for m in TCGA_MODALITIES], -1
            )
            wt = tumour.labels() > 0 if tumour is not None else np.zeros(brain.mask.shape, bool)
            folder = base / patient
            folder.mkdir()
            for z in range(depth):
                stem = folder / f"{patient}_{z + 1}"
                tifffile.imwrite(f"{stem}.tif", volume[:, :, z], photometric="rgb")
                mask = (wt[:, :, z] * 255).astype(np.uint8)
                tifffile.imwrite(f"{stem}_mask.tif", mask, photometric="minisblack")
            rows.append(f"{patient[:12]},{int(prng.integers(0, 2))}")
        (base / "data.csv").write_text("\n".join(rows) + "\n")
        if nested_duplicate:
            shutil.copytree(
                base / patients[0], tmp / "lgg-mri-segmentation" / "kaggle_3m" / patients[0]
            )
    return patients

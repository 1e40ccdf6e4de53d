"""Synthetic TCGA-LGG in the Kaggle ``lgg-mri-segmentation`` layout (docs/data.md).

``<root>/kaggle_3m/TCGA_XX_XXXX_YYYYMMDD/<folder>_<n>.tif`` (H x W x 3 uint8: pre-contrast,
FLAIR, post-contrast), ``<folder>_<n>_mask.tif`` (0/255), unpadded slice numbers from 1,
``kaggle_3m/data.csv`` and optionally the nested duplicate copy of the Kaggle download
(``<root>/lgg-mri-segmentation/kaggle_3m/``). Brains reuse the BraTS anatomy.

Slices are shown as the Kaggle slices are: anterior at the top. As in the real data, every
patient has a tumour, on a part of its slices, and the patient's other slices are the
tumour-free ones (``normal_patients`` adds patients without any tumour, which the real data
has none of; ``tumour_depth`` scales how many slices a tumour spans). The mask is the whole
FLAIR abnormality, which is bright on FLAIR; lower-grade gliomas mostly do not enhance, so
only a share ``enhancing`` of the tumours have the BraTS anatomy's enhancing rim and necrotic
core, the others are non-enhancing: FLAIR-bright, dark on both T1 channels.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import tifffile

from src.data.atomic import atomic_directory
from src.data.generators.anatomy import Tumour, render, sample_brain, sample_tumour

#: The two files of one slice: the image and its mask.
MASK_PAIR = (".tif", "_mask.tif")
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


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    """Slice ``z`` of an (x, y, z, ...) volume as displayed: anterior (+y) up, rows along y."""
    return np.ascontiguousarray(np.swapaxes(volume[:, :, z], 0, 1)[::-1])


def non_enhancing(tumour: Tumour) -> Tumour:
    """The same tumour as a non-enhancing glioma: all of it takes the oedema's contrasts
    (FLAIR-bright, dark on T1), none the enhancing rim's or the necrosis's."""
    whole = np.clip(sum(tumour.parts.values()), 0, 1).astype(np.float32)
    none = np.zeros_like(whole)
    return dataclasses.replace(tumour, parts={"oedema": whole, "enhancing": none, "necrosis": none})


def generate_tcga_lgg(
    root: str | Path,
    n_patients: int = 6,
    seed: int = 0,
    size: int = 256,
    n_slices: tuple[int, int] = (12, 24),
    normal_patients: int = 0,
    enhancing: float = 1.0,
    tumour_depth: float = 1.0,
    nested_duplicate: bool = True,
    overwrite: bool = False,
    compress: bool = False,
    marker: tuple[str, dict] | None = None,
) -> list[str]:
    """Write ``n_patients`` patients (slice count drawn in ``n_slices``, inclusive) under
    ``root``; returns the patient folder names, sorted. Deterministic for a seed.

    ``enhancing``: the share of tumours with an enhancing rim and necrotic core, the others
    non-enhancing (:func:`non_enhancing`). ``tumour_depth`` scales the tumours' extent across
    slices (1: as the BraTS anatomy's, which spans about half of a patient's slices here).

    ``compress``: deflate-compressed tif files (any TIFF reader decodes them; about a sixth of
    the size). ``marker`` = (file name, content): a JSON provenance file written at the root
    with the data, plus a ``files`` list, inside the same atomic rename."""
    if n_patients < 1 or not 0 <= normal_patients <= n_patients:
        raise ValueError("need n_patients >= 1 and 0 <= normal_patients <= n_patients")
    if not 0 <= enhancing <= 1 or tumour_depth <= 0:
        raise ValueError("need 0 <= enhancing <= 1 and tumour_depth > 0")
    rng = np.random.default_rng(seed)
    patients = tcga_patient_ids(n_patients, rng)
    normal = set(rng.choice(n_patients, normal_patients, replace=False).tolist())
    with atomic_directory(root, overwrite=overwrite) as tmp:
        base = tmp / "kaggle_3m"
        base.mkdir()
        rows = ["Patient,death01"]
        files = ["kaggle_3m/data.csv"]
        tif = {"compression": "zlib", "compressionargs": {"level": 1}} if compress else {}
        for i, patient in enumerate(patients):
            prng = np.random.default_rng([seed, i])
            depth = int(prng.integers(n_slices[0], n_slices[1] + 1))
            brain = sample_brain((size, size, depth), prng)
            tumour = None
            if i not in normal:
                tumour = sample_tumour(brain, prng, (1.0, 1.0, tumour_depth))
                if prng.random() >= enhancing:
                    tumour = non_enhancing(tumour)
            volume = np.stack(
                [_to_uint8(render(brain, tumour, m, prng)) for m in TCGA_MODALITIES], -1
            )
            wt = tumour.labels() > 0 if tumour is not None else np.zeros(brain.mask.shape, bool)
            folder = base / patient
            folder.mkdir()
            for z in range(depth):
                stem = folder / f"{patient}_{z + 1}"
                tifffile.imwrite(f"{stem}.tif", _axial(volume, z), photometric="rgb", **tif)
                mask = (_axial(wt, z) * 255).astype(np.uint8)
                tifffile.imwrite(f"{stem}_mask.tif", mask, photometric="minisblack", **tif)
                files += [f"kaggle_3m/{patient}/{stem.name}{end}" for end in MASK_PAIR]
            rows.append(f"{patient[:12]},{int(prng.integers(0, 2))}")
        (base / "data.csv").write_text("\n".join(rows) + "\n")
        if nested_duplicate:
            shutil.copytree(
                base / patients[0], tmp / "lgg-mri-segmentation" / "kaggle_3m" / patients[0]
            )
        if marker is not None:
            name, content = marker
            (tmp / name).write_text(json.dumps({**content, "files": files}, indent=1))
    return patients

"""TCGA-LGG ``kaggle_3m`` layout (Kaggle ``lgg-mri-segmentation``).

``<out>/kaggle_3m/TCGA_XX_XXXX_YYYYMMDD/<folder>_<n>.tif``: 256 x 256 x 3 uint8 slices
(pre-contrast T1, FLAIR, post-contrast T1), ``<folder>_<n>_mask.tif`` 0/255, ``n`` from 1
(inferior to superior), and ``kaggle_3m/data.csv``. Every patient has one lower-grade
glioma: FLAIR-bright, T1-dark, mostly without enhancement, spanning about a third of the
patient's 20-40 thick axial slices; the other slices are negatives. The head is not
skull-stripped (scalp, skull and orbits are in the frame). The phantom is built at
about 1 mm (the same anatomy code as the BraTS writer) and each slice averages a 2.5-4 mm
slab of it; its mask is where at least half the slab is tumour.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from experiments.heldout.anatomy import Grid, add_tumour, draw_lgg, make_brain, render
from experiments.heldout.common import case_seeds, run_cases, staged_output

FOV_XY = 240.0
FOV_Z = 180.0
CHANNELS = ("t1", "flair", "t1ce")  # the stored order: pre-contrast, FLAIR, post-contrast
SITES = ("CS", "DU", "EZ", "FG", "HT")


def make_patient(seed: np.random.SeedSequence, size: int = 256) -> dict:
    """One patient's slices (list of (H, W, 3) uint8), masks (list of (H, W) bool) and a
    summary."""
    rng = np.random.default_rng(seed)
    step = FOV_XY / size
    grid = Grid.frame((size, size, max(8, int(round(FOV_Z / step)))), (FOV_XY, FOV_XY, FOV_Z))
    brain = make_brain(rng, grid, centre=(0.0, 4.0, 5.0), head=True)
    top = brain.centre[2] + brain.size["az_sup"] + rng.uniform(-2, 6)
    bottom = brain.centre[2] - 1.3 * brain.size["az_inf"] + rng.uniform(-6, 6)
    n = int(rng.integers(20, 41))
    spec = draw_lgg(rng, z_extent=rng.uniform(0.27, 0.42) * (top - bottom))
    appearance = add_tumour(rng, brain, spec)
    images = render(rng, brain, appearance, modalities=CHANNELS, skull_stripped=False)
    tumour = (appearance > 0).astype(np.float32)

    z_axis = grid.axes()[2].ravel()
    thickness = max(min((top - bottom) / (n - 1), rng.uniform(2.5, 4.0)), grid.spacing[2])
    slabs = []
    for zc in np.linspace(bottom, top, n):
        planes = np.flatnonzero(np.abs(z_axis - zc) <= thickness / 2 + 1e-6)
        if len(planes) == 0:
            planes = np.array([int(np.argmin(np.abs(z_axis - zc)))])
        slabs.append(planes)
    head = brain.labels > 0
    stack = np.stack([images[c] for c in CHANNELS], axis=-1)  # (X, Y, Z, 3)
    kept = np.concatenate(slabs)
    top_value = [np.percentile(images[c][:, :, kept][head[:, :, kept]], 99.7) for c in CHANNELS]
    scale = 255.0 / np.maximum(np.array(top_value, np.float32), 1e-6)
    slices, masks = [], []
    for planes in slabs:
        image = stack[:, :, planes].mean(axis=2) * scale
        mask = tumour[:, :, planes].mean(axis=2) >= 0.5
        # Rows run anterior to posterior, columns right to left (radiological view).
        slices.append(np.clip(np.round(image), 0, 255).astype(np.uint8).transpose(1, 0, 2))
        masks.append(np.ascontiguousarray(mask.T))
    positives = sum(bool(m.any()) for m in masks)
    info = {
        "slices": n,
        "tumour_slices": positives,
        "place": spec.place,
        "extent_mm": [round(2 * r, 1) for r in spec.radius],
        "cyst": spec.cyst,
        "enhancing_foci": spec.enhancing_foci,
        "side": "left" if spec.centre[0] > 0 else "right",  # type: ignore[index]
    }
    return {"slices": slices, "masks": masks, "info": info}


def _write_patient(task: tuple) -> tuple[str, dict]:
    import tifffile

    folder, patient, seed, size = task
    made = make_patient(seed, size)
    target = Path(folder) / "kaggle_3m" / patient
    target.mkdir(parents=True, exist_ok=True)
    for n, (image, mask) in enumerate(zip(made["slices"], made["masks"], strict=True), start=1):
        tifffile.imwrite(target / f"{patient}_{n}.tif", image, photometric="rgb")
        tifffile.imwrite(target / f"{patient}_{n}_mask.tif", mask.astype(np.uint8) * 255)
    return patient, made["info"]


CSV_COLUMNS = (
    "Patient", "RNASeqCluster", "MethylationCluster", "miRNACluster", "CNCluster",
    "RPPACluster", "OncosignCluster", "COCCluster", "histological_type",
    "neoplasm_histologic_grade", "tumor_tissue_site", "laterality", "tumor_location",
    "gender", "age_at_initial_pathologic", "race", "ethnic_group", "death01",
)  # fmt: skip


def _csv_row(rng: np.random.Generator, patient: str, info: dict) -> list:
    def code(high: int):  # a cluster code, sometimes missing as in the real table
        return "" if rng.uniform() < 0.15 else int(rng.integers(1, high + 1))

    return [
        "_".join(patient.split("_")[:3]),
        code(4), code(5), code(4), code(3), code(3), code(3), code(3),
        int(rng.integers(1, 4)), int(rng.integers(1, 3)), 1,
        1 if info["side"] == "left" else 3, int(rng.integers(1, 6)),
        int(rng.integers(1, 3)), int(rng.integers(20, 76)), 3, 2, int(rng.uniform() < 0.25),
    ]  # fmt: skip


def generate_kaggle3m(
    out: str | Path, patients: int = 20, seed: int = 1, size: int = 256, workers: int = 1
) -> list[str]:
    """Write ``patients`` kaggle_3m patient folders and ``data.csv`` under
    ``out/kaggle_3m`` (``out`` must not exist or be empty); returns the folder names."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    names: list[str] = []
    while len(names) < patients:
        site = SITES[int(rng.integers(len(SITES)))]
        day = np.datetime64("1995-01-01") + int(rng.integers(0, 365 * 12))
        name = f"TCGA_{site}_{int(rng.integers(4000, 9000))}_{str(day).replace('-', '')}"
        if not any(n.rsplit("_", 1)[0] == name.rsplit("_", 1)[0] for n in names):
            names.append(name)
    names.sort()
    seeds = case_seeds(seed, patients, stream=1)
    params = {"format": "kaggle_3m", "patients": patients, "seed": seed, "size": size}
    with staged_output(out, params) as (folder, manifest):
        tasks = [(str(folder), p, s, size) for p, s in zip(names, seeds, strict=True)]
        infos = dict(run_cases(_write_patient, tasks, workers))
        manifest["patients"] = infos
        with open(folder / "kaggle_3m" / "data.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for patient in names:
                writer.writerow(_csv_row(rng, patient, infos[patient]))
    return names

"""BraTS 2021 layout: ``<out>/BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``.

Skull-stripped volumes (zero outside the brain) in int16 with a per-case and per-contrast
scale, 1 mm voxels over a 240 x 240 x 155 mm field of view (a smaller ``shape`` samples the
same field with larger voxels), seg labels {0, 1, 2, 4}; ``normal`` of the cases have no
tumour (seg all zero), and every other case's tumour covers more than 1 % of its slices over
at least 10 mm of height (so each tumour case has positive slices). A hidden ``.heldout.json`` records the parameters and what each case
holds; the BraTS reader ignores it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.heldout.anatomy import (
    MODALITIES,
    Grid,
    add_tumour,
    draw_tumour,
    make_brain,
    render,
    seg_labels,
)
from experiments.heldout.common import case_seeds, run_cases, staged_output

FOV = (240.0, 240.0, 155.0)
SHAPE = (240, 240, 155)
MIN_SPAN_MM = 10.0  # a tumour case has at least this much of its height over 1 % per slice


def write_nifti(path: Path, volume: np.ndarray, spacing) -> None:
    """Save one volume with BraTS's orientation (LPS-flipped axes 0 and 1) and spacing."""
    import nibabel as nib

    sx, sy, sz = (float(v) for v in spacing)
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[1, 3] = sy * (volume.shape[1] - 1)
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def _span_over_1pct(appearance: np.ndarray, slice_mm: float) -> float:
    area = (appearance > 0).sum((0, 1))
    return float((area > 0.01 * appearance.shape[0] * appearance.shape[1]).sum() * slice_mm)


def make_case(seed: np.random.SeedSequence, shape=SHAPE, tumour: bool = True) -> dict:
    """One case's four contrasts (int16) and seg (uint8), plus a summary of what it holds."""
    rng = np.random.default_rng(seed)
    grid = Grid.frame(shape, FOV)
    brain = make_brain(rng, grid, centre=(0.0, 0.0, 8.0))
    appearance, info = None, {"tumour": False}
    if tumour:
        # Like every BraTS case, the tumour must show: redraw it (on the anatomy as it was)
        # until slices over MIN_SPAN_MM of height have whole-tumour areas above 1 %.
        anatomy = brain.labels.copy()
        for _ in range(8):
            spec = draw_tumour(rng)
            appearance = add_tumour(rng, brain, spec)
            if _span_over_1pct(appearance, grid.spacing[2]) >= MIN_SPAN_MM:
                break
            brain.labels[...] = anatomy
        info = {
            "tumour": True,
            "kind": spec.kind,
            "place": spec.place,
            "core_radius_mm": round(float(np.mean(spec.radius)), 1),
            "oedema_mm": round(spec.oedema, 1),
            "satellites": spec.satellites,
        }
    images = render(rng, brain, appearance)
    seg = seg_labels(appearance) if appearance is not None else np.zeros(grid.shape, np.uint8)
    volumes = {}
    for name in MODALITIES:
        scale = rng.uniform(250, 2500)
        volumes[name] = np.clip(np.round(images[name] * scale), 0, 32767).astype(np.int16)
    if tumour:
        counts = np.bincount(seg.ravel(), minlength=5)
        info["voxels"] = {str(k): int(counts[k]) for k in (1, 2, 4)}
        area = (seg > 0).reshape(-1, seg.shape[2]).sum(0)
        info["slices_over_1pct"] = int((area > 0.01 * seg.shape[0] * seg.shape[1]).sum())
    return {"volumes": volumes, "seg": seg, "spacing": grid.spacing, "info": info}


def _write_case(task: tuple) -> tuple[str, dict]:
    folder, case, seed, shape, tumour = task
    made = make_case(seed, shape, tumour)
    target = Path(folder) / case
    target.mkdir(parents=True, exist_ok=True)
    for name, volume in made["volumes"].items():
        write_nifti(target / f"{case}_{name}.nii.gz", volume, made["spacing"])
    write_nifti(target / f"{case}_seg.nii.gz", made["seg"], made["spacing"])
    return case, made["info"]


def generate_brats(
    out: str | Path,
    cases: int = 24,
    normal: int = 8,
    seed: int = 1,
    shape=SHAPE,
    workers: int = 1,
) -> list[str]:
    """Write ``cases`` BraTS-format cases (``normal`` of them without tumour) into ``out``
    (which must not exist or be empty); returns the case ids. Deterministic for a seed,
    whatever ``workers``."""
    if not 0 <= normal <= cases:
        raise ValueError(f"normal must be in [0, cases], got {normal} of {cases}")
    shape = tuple(int(v) for v in shape)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2021]))
    numbers = np.sort(rng.choice(np.arange(0, 1700), size=cases, replace=False))
    ids = [f"BraTS2021_{n:05d}" for n in numbers]
    healthy = set(rng.choice(cases, size=normal, replace=False).tolist())
    seeds = case_seeds(seed, cases, stream=0)
    params = {"format": "brats2021", "cases": cases, "normal": normal, "seed": seed}
    params["shape"] = list(shape)
    with staged_output(out, params) as (folder, manifest):
        tasks = [
            (str(folder), case, case_seed, shape, i not in healthy)
            for i, (case, case_seed) in enumerate(zip(ids, seeds, strict=True))
        ]
        manifest["cases"] = dict(run_cases(_write_case, tasks, workers))
    return ids

"""The BraTS-format generator: layout, determinism and modality contrasts (docs/data.md)."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest

from src.data.generators.brats import generate_brats


def _load(root, case, name):
    return np.asarray(nib.load(str(root / case / f"{case}_{name}.nii.gz")).dataobj)


def test_layout_dtypes_labels_and_gapped_ids(tiny_brats):
    root, ids = tiny_brats
    numbers = [int(i.split("_")[1]) for i in ids]
    assert all(i.startswith("BraTS2021_") and len(i) == 15 for i in ids)
    assert numbers == sorted(numbers) and numbers[0] == 0 and numbers[-1] > len(ids) - 1
    tumour_cases = 0
    for case in ids:
        files = sorted(p.name for p in (root / case).iterdir())
        assert files == sorted(f"{case}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair", "seg"))
        seg = _load(root, case, "seg")
        assert seg.dtype == np.uint8 and seg.shape == (48, 48, 20)
        assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4}
        flair = _load(root, case, "flair")
        assert flair.dtype == np.int16 and flair.min() == 0
        assert (flair[seg > 0] > 0).all()  # tumour lies inside the brain
        tumour_cases += bool(seg.any())
    assert tumour_cases == len(ids) - 1  # normal_cases=1


def test_deterministic_and_the_same_from_worker_processes(tmp_path):
    a = generate_brats(tmp_path / "a", n_cases=3, seed=5, shape=(24, 24, 10), normal_cases=1)
    b = generate_brats(
        tmp_path / "b", n_cases=3, seed=5, shape=(24, 24, 10), normal_cases=1, workers=2
    )
    assert a == b
    for case in a:
        for name in ("t1", "flair", "seg"):
            np.testing.assert_array_equal(
                _load(tmp_path / "a", case, name), _load(tmp_path / "b", case, name)
            )
    with pytest.raises(FileExistsError):
        generate_brats(tmp_path / "a", n_cases=1, shape=(24, 24, 10))


def test_two_generations_are_the_same_bytes(tmp_path, monkeypatch):
    """The store keys a classifier by its data's bytes: a regenerated demo, however much
    later, must not look like new data (gzip headers carried the time of writing)."""
    clock = iter([1.0e9, 2.0e9])
    monkeypatch.setattr(time, "time", lambda: next(clock, 3.0e9))
    first = generate_brats(tmp_path / "a", n_cases=2, seed=5, shape=(24, 24, 10))
    generate_brats(tmp_path / "b", n_cases=2, seed=5, shape=(24, 24, 10))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.nii.gz"))
    assert len(files) == 5 * len(first)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_modality_contrasts(tmp_path):
    """T1: WM > GM-ish brain > CSF; T2: CSF bright; FLAIR: oedema bright; T1ce: rim bright."""
    root = tmp_path / "b"
    (case,) = generate_brats(root, n_cases=1, seed=2, shape=(96, 96, 40), normal_cases=0)
    seg = _load(root, case, "seg")
    vols = {m: _load(root, case, m).astype(np.float64) for m in ("t1", "t1ce", "t2", "flair")}
    brain = (vols["t1"] > 0) & (seg == 0)
    for m, v in vols.items():
        vols[m] = v / np.percentile(v[brain], 99)
    oedema, rim = seg == 2, seg == 4
    assert vols["flair"][oedema].mean() > vols["flair"][brain].mean() + 0.3
    assert vols["t1ce"][rim].mean() > vols["t1ce"][brain].mean() + 0.3
    assert vols["t1"][rim].mean() < vols["t1"][brain].mean()
    # Darkest decile of normal brain (CSF) is bright in T2, dark in T1 and FLAIR.
    dark_t1 = brain & (vols["t1"] < np.percentile(vols["t1"][brain], 10))
    assert vols["t2"][dark_t1].mean() > vols["t2"][brain].mean()
    assert vols["flair"][dark_t1].mean() < vols["flair"][brain].mean()


def test_atomic_generation_leaves_nothing_on_failure(tmp_path, monkeypatch):
    import src.data.generators.brats as gen

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen, "write_nifti", boom)
    with pytest.raises(RuntimeError):
        generate_brats(tmp_path / "x", n_cases=1, shape=(24, 24, 10))
    assert list(tmp_path.iterdir()) == []

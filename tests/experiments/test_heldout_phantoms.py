"""The held-out phantoms (experiments/heldout) are read by the project's own readers with the
labels and masks they were written with."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import tifffile

from experiments.heldout.brats import generate_brats
from experiments.heldout.kaggle3m import generate_kaggle3m
from src.data.brats import BraTSDataModule
from src.data.tcga_lgg import TCGALGGDataModule

SHAPE = (64, 64, 40)  # 3.75 mm voxels over BraTS's field of view: seconds, not minutes


def _items(dm) -> dict[str, dict]:
    return {item["id"]: item for s in ("train", "val", "test") for item in dm.dataset(s)}


def test_brats_phantoms_read_with_their_labels(tmp_path):
    root = tmp_path / "brats"
    ids = generate_brats(root, cases=3, normal=1, seed=4, shape=SHAPE)
    manifest = json.loads((root / ".heldout.json").read_text())["cases"]
    assert sorted(manifest) == ids == sorted(p.name for p in root.iterdir() if p.is_dir())
    items = _items(BraTSDataModule(root, modality=["t1", "t2", "flair"], cache_dir=tmp_path / "c"))
    assert len(items) == 3 * SHAPE[2]
    for case in ids:
        seg = np.asanyarray(nib.load(str(root / case / f"{case}_seg.nii.gz")).dataobj)
        flair = nib.load(str(root / case / f"{case}_flair.nii.gz"))
        assert seg.shape == flair.shape == SHAPE and flair.get_data_dtype() == np.int16
        assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4}
        area = (seg > 0).sum((0, 1))
        labels = np.array([items[f"{case}/s{z:03d}"]["label"].item() for z in range(SHAPE[2])])
        np.testing.assert_array_equal(labels, area > 0.01 * SHAPE[0] * SHAPE[1])
        for z in range(SHAPE[2]):
            np.testing.assert_array_equal(
                items[f"{case}/s{z:03d}"]["mask"].numpy(), seg[:, :, z] > 0
            )
        if manifest[case]["tumour"]:
            assert labels.sum() >= 3 and {2} <= set(np.unique(seg).tolist())
            image = np.asanyarray(flair.dataobj).astype(float)
            assert image[seg > 0].mean() > image[(seg == 0) & (image > 0)].mean()  # bright
        else:
            assert not seg.any() and not labels.any()


def test_brats_phantoms_are_deterministic(tmp_path):
    a = generate_brats(tmp_path / "a", cases=1, normal=0, seed=9, shape=(32, 32, 20))
    b = generate_brats(tmp_path / "b", cases=1, normal=0, seed=9, shape=(32, 32, 20), workers=2)
    assert a == b
    for name in ("t1ce", "seg"):
        va, vb = (
            np.asanyarray(nib.load(str(tmp_path / r / a[0] / f"{a[0]}_{name}.nii.gz")).dataobj)
            for r in ("a", "b")
        )
        np.testing.assert_array_equal(va, vb)
    with pytest.raises(FileExistsError):
        generate_brats(tmp_path / "a", cases=1, normal=0, seed=9, shape=(32, 32, 20))


def test_kaggle3m_phantoms_read_with_their_labels(tmp_path):
    root = tmp_path / "lgg"
    patients = generate_kaggle3m(root, patients=2, seed=4, size=64)
    assert (root / "kaggle_3m" / "data.csv").read_text().count("\n") == 3
    items = _items(TCGALGGDataModule(root, batch_size=4))
    assert sorted({i.split("/")[0] for i in items}) == patients
    for patient in patients:
        folder = root / "kaggle_3m" / patient
        n = len(list(folder.glob("*_mask.tif")))
        assert 20 <= n <= 40
        labels = []
        for k in range(1, n + 1):
            image = tifffile.imread(folder / f"{patient}_{k}.tif")
            mask = tifffile.imread(folder / f"{patient}_{k}_mask.tif")
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
            assert set(np.unique(mask).tolist()) <= {0, 255}
            item = items[f"{patient}/s{k:03d}"]
            np.testing.assert_array_equal(item["mask"].numpy(), mask > 0)
            assert item["label"].item() == float(mask.any())
            labels.append(mask.any())
            if mask.any():  # FLAIR-bright tumour
                assert image[..., 1][mask > 0].mean() > image[..., 1][image[..., 1] > 20].mean()
        assert 0.15 * n <= sum(labels) <= 0.6 * n  # about a third of the slices

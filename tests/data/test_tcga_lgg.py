"""TCGA-LGG reader against the generated kaggle_3m copy (docs/data.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from src.data.errors import DataFormatError
from src.data.generators.tcga_lgg import generate_tcga_lgg
from src.data.tcga_lgg import TCGALGGDataModule, head_square
from tests.helpers.files import snapshot


@pytest.fixture(scope="module")
def tiny_tcga(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcga") / "lgg-mri-segmentation"
    patients = generate_tcga_lgg(root, n_patients=4, seed=1, size=40, n_slices=(9, 12))
    return root, patients


def test_items_match_tif_files(tiny_tcga, tmp_path):
    root, patients = tiny_tcga
    before = snapshot(root)
    dm = TCGALGGDataModule(root, batch_size=4, output_dir=tmp_path)
    dm.setup()
    assert sorted(sum(dm.split.values(), [])) == patients
    assert json.loads((tmp_path / "split.json").read_text()) == dm.split
    n_items = 0
    for split in ("train", "val", "test"):
        data = dm.dataset(split)
        for i, item_id in enumerate(data.ids):
            patient, s = item_id.split("/")
            n = int(s[1:])
            image = tifffile.imread(root / "kaggle_3m" / patient / f"{patient}_{n}.tif")
            mask = tifffile.imread(root / "kaggle_3m" / patient / f"{patient}_{n}_mask.tif")
            item = data[i]
            np.testing.assert_allclose(
                item["image"].permute(1, 2, 0).numpy(), image / 255, atol=1e-6
            )
            np.testing.assert_array_equal(item["mask"].numpy(), mask // 255)
            assert item["label"].item() == float(mask.any())
            n_items += 1
        # natural order of slice numbers within each patient (s010 after s009)
        for patient in dm.split[split]:
            numbers = [int(i.split("/s")[1]) for i in data.ids if i.startswith(patient)]
            assert numbers == list(range(1, len(numbers) + 1))
    assert n_items == sum(len(list((root / "kaggle_3m" / p).glob("*_mask.tif"))) for p in patients)
    assert any(max(int(i.split("/s")[1]) for i in dm.dataset(s).ids) >= 10 for s in ("train",))
    assert snapshot(root) == before


def test_channels_option_and_root_variants(tiny_tcga):
    root, _ = tiny_tcga
    stored = TCGALGGDataModule(root / "kaggle_3m", batch_size=4)  # the kaggle_3m folder itself
    flair = TCGALGGDataModule(root, channels="flair", image_size=20, batch_size=4)
    stored.setup()
    flair.setup()
    assert stored.split == flair.split  # the nested duplicate copy is ignored either way
    a, b = stored.dataset("train")[3], flair.dataset("train")[3]
    assert b["image"].shape == (3, 20, 20) and torch.equal(b["image"][0], b["image"][2])
    assert torch.equal(b["label"], a["label"])
    with pytest.raises(ValueError, match="channels"):
        TCGALGGDataModule(root, channels="t2")


def _copy(tiny_tcga, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_tcga[0], root)
    patient = tiny_tcga[1][0]
    return root, root / "kaggle_3m" / patient, patient


def test_bad_inputs_name_the_file(tiny_tcga, tmp_path):
    root, folder, patient = _copy(tiny_tcga, tmp_path)
    (folder / f"{patient}_3_mask.tif").unlink()
    with pytest.raises(DataFormatError, match=rf"{patient}_3.tif: slice 3 has no mask file"):
        TCGALGGDataModule(root).setup()
    tifffile.imwrite(folder / f"{patient}_3_mask.tif", np.full((40, 40), 7, np.uint8))
    with pytest.raises(
        DataFormatError, match=rf"{patient}_3_mask.tif: mask must be 2D with values 0/255"
    ):
        TCGALGGDataModule(root).setup()
    (folder / f"{patient}_3_mask.tif").write_bytes(b"II*\0garbage")
    with pytest.raises(DataFormatError, match=rf"{patient}_3_mask.tif: cannot decode TIFF"):
        TCGALGGDataModule(root).setup()
    dm = TCGALGGDataModule(root, on_error="skip")
    with pytest.warns(UserWarning, match=patient):
        dm.setup()
    assert list(dm.skipped) == [patient] and patient not in sum(dm.split.values(), [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no patient folders"):
        TCGALGGDataModule(tmp_path / "empty").setup()


def test_crop_foreground_keeps_each_patients_head_and_the_labels(tiny_tcga):
    """One square per patient around its head; labels, tumour pixels and nearly all of the
    head's intensity survive the crop."""
    root, patients = tiny_tcga
    full = TCGALGGDataModule(root, batch_size=4)
    cropped = TCGALGGDataModule(root, crop_foreground=True, batch_size=4)
    assert full.dataset("train").ids == cropped.dataset("train").ids
    for split in ("train", "val", "test"):
        a, b = full.dataset(split), cropped.dataset(split)
        torch.testing.assert_close(a.labels, b.labels)
        sides = {}
        for i, item_id in enumerate(a.ids):
            whole, cut = a[i], b[i]
            side = cut["image"].shape[-1]
            assert cut["image"].shape[-2:] == (side, side) and side < 40
            assert sides.setdefault(item_id.split("/")[0], side) == side  # one box per patient
            assert cut["mask"].sum() == whole["mask"].sum()
            assert cut["image"].sum() >= 0.99 * whole["image"].sum()
    with pytest.raises(ValueError, match="crop_foreground"):
        TCGALGGDataModule(root, crop_foreground="yes")


def test_head_square_ignores_a_faint_background_and_stray_pixels():
    rng = np.random.default_rng(0)
    mean_slice = rng.uniform(0, 3, (64, 64))  # a background that is not exactly black
    yy, xx = np.mgrid[:64, :64]
    mean_slice[(yy - 30) ** 2 / 20**2 + (xx - 34) ** 2 / 14**2 <= 1] = 100
    mean_slice[2, 60] = 4  # a stray pixel above the noise, far below the head
    rows, cols = head_square(mean_slice)
    assert (rows.start, rows.stop) == (10, 51) and cols.stop - cols.start == 41
    assert cols.start <= 20 and cols.stop >= 49
    assert head_square(np.zeros((8, 8))) is None


def test_generator_marker_compression_and_tumours(tmp_path):
    """Every patient has a tumour on part of its slices (no tumour-free patients, as in the
    real data), bright on FLAIR; non-enhancing tumours stay dark on post-contrast; the marker
    lists every file; compressed tifs decode to the same data; same bytes every time."""
    kw = {"n_patients": 3, "seed": 4, "size": 48, "n_slices": (8, 10), "enhancing": 0.0}
    patients = generate_tcga_lgg(tmp_path / "a", **kw, marker=(".m.json", {"x": 1}))
    generate_tcga_lgg(tmp_path / "b", **kw, compress=True)
    generate_tcga_lgg(tmp_path / "c", **kw, compress=True)
    marker = json.loads((tmp_path / "a" / ".m.json").read_text())
    listed = sorted(marker.pop("files"))
    written = sorted(
        str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a" / "kaggle_3m").rglob("*.*")
    )
    assert marker == {"x": 1} and listed == written
    for patient in patients:
        folder = Path("kaggle_3m") / patient
        slices = sorted((tmp_path / "a" / folder).glob("*_mask.tif"))
        masks = np.stack([tifffile.imread(p) > 0 for p in slices])
        images = np.stack([tifffile.imread(str(p).replace("_mask", "")) for p in slices])
        assert 0 < masks.any(axis=(1, 2)).sum() < len(slices)
        brain = images.max(-1) > 0
        pre, flair, post = (images[..., c].astype(float) for c in range(3))
        assert flair[masks].mean() > 1.3 * flair[brain & ~masks].mean()
        assert post[masks].mean() < post[brain & ~masks].mean()
        for p in slices:
            for name in (p.name, p.name.replace("_mask", "")):
                plain = tifffile.imread(tmp_path / "a" / folder / name)
                np.testing.assert_array_equal(
                    plain, tifffile.imread(tmp_path / "b" / folder / name)
                )
                compressed = (tmp_path / "b" / folder / name).read_bytes()
                assert compressed == (tmp_path / "c" / folder / name).read_bytes()

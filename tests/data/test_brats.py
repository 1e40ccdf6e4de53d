"""BraTS reader + DataModule against what the generator wrote (docs/data.md)."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import src.data.brats as brats
from src.data.brats import BraTSDataModule, slice_labels
from src.data.errors import DataFormatError
from src.data.generators.brats import write_nifti
from src.data.transforms import foreground_square
from tests.helpers.files import snapshot


def _volume(root: Path, case: str, name: str) -> np.ndarray:
    return np.asarray(nib.load(str(root / case / f"{case}_{name}.nii.gz")).dataobj)


def _dm(root: Path, tmp_path: Path, **kw) -> BraTSDataModule:
    kw.setdefault("cache_dir", tmp_path / "cache")
    kw.setdefault("batch_size", 8)
    return BraTSDataModule(root, **kw)


def _all_items(dm: BraTSDataModule) -> dict[str, dict]:
    return {item["id"]: item for s in ("train", "val", "test") for item in dm.dataset(s)}


def test_items_match_generated_volumes(tiny_brats, tmp_path):
    root, ids = tiny_brats
    before = snapshot(root)
    dm = _dm(root, tmp_path)
    dm.setup()
    items = _all_items(dm)
    assert len(items) == len(ids) * 20
    n_pos = 0
    for case in ids:
        flair = _volume(root, case, "flair").astype(np.float64)
        seg = _volume(root, case, "seg")
        expected = (flair - flair.min()) / (flair.max() - flair.min())
        for z in range(seg.shape[2]):
            item = items[f"{case}/s{z:03d}"]
            assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
            # grey modality repeated to 3 channels, per-volume min-max (uint8 cache: 1/255).
            assert torch.equal(item["image"][0], item["image"][2])
            np.testing.assert_allclose(
                item["image"][0].numpy(), expected[:, :, z], atol=0.5 / 255 + 1e-6
            )
            wt = seg[:, :, z] > 0
            assert item["mask"].dtype == torch.int64
            np.testing.assert_array_equal(item["mask"].numpy(), wt.astype(np.int64))
            label = float(wt.sum() > 0.01 * wt.size)
            assert item["label"].tolist() == [label]
            n_pos += label
    assert 0 < n_pos < len(items)  # both classes exist in the tiny data
    assert snapshot(root) == before  # nothing under root was written


def test_area_rule_is_strict_at_one_percent(tmp_path):
    """A 10x10 slice: 1 tumour pixel is exactly 1 % (normal), 2 pixels is above (tumour)."""
    root = tmp_path / "data"
    case = "BraTS2021_00042"
    (root / case).mkdir(parents=True)
    seg = np.zeros((10, 10, 4), np.uint8)
    seg[0, 0, 1] = 2  # area 1 == 1 %
    seg[0, :2, 2] = 4  # area 2 > 1 %
    seg[3:6, 3:6, 3] = 1  # area 9
    image = np.arange(400, dtype=np.int16).reshape(10, 10, 4)
    write_nifti(root / case / f"{case}_flair.nii.gz", image)
    write_nifti(root / case / f"{case}_seg.nii.gz", seg)
    dm = _dm(root, tmp_path, split_ratios=(1, 0, 0))
    dm.setup()
    data = dm.dataset("train")
    assert [data[z]["label"].item() for z in range(4)] == [0.0, 0.0, 1.0, 1.0]
    assert [int(data[z]["mask"].sum()) for z in range(4)] == [0, 1, 2, 9]
    # The rule is computed at the original resolution, not after resizing.
    dm_small = _dm(root, tmp_path, split_ratios=(1, 0, 0), image_size=4)
    dm_small.setup()
    assert dm_small.dataset("train").labels[:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_slice_labels_golden():
    seg = np.zeros((3, 20, 10), np.uint8)  # 200 px: 1 % = 2 px
    seg[1, 0, :2] = 1
    seg[2, 0, :3] = 4
    assert slice_labels(seg, 0.01).tolist() == [False, False, True]
    assert slice_labels(seg, 0.0).tolist() == [False, True, True]


def test_resize_and_slice_range(tiny_brats, tmp_path):
    root, ids = tiny_brats
    full = _dm(root, tmp_path)
    full.setup()
    dm = _dm(root, tmp_path, image_size=(16, 24), slice_range=(5, 15))
    dm.setup()
    assert dm.split == full.split
    items, full_items = _all_items(dm), _all_items(full)
    assert sorted(items) == sorted(f"{c}/s{z:03d}" for c in ids for z in range(5, 15))
    for key, item in items.items():
        assert item["image"].shape == (3, 16, 24)
        assert item["mask"].shape == (16, 24)
        assert set(item["mask"].unique().tolist()) <= {0, 1}
        assert torch.equal(item["label"], full_items[key]["label"])
        # Antialiased bilinear down-sampling keeps the mean intensity roughly.
        assert abs(item["image"].mean() - full_items[key]["image"].mean()) < 0.02


def test_modality_list_stacks_channels(tiny_brats, tmp_path):
    root, ids = tiny_brats
    singles = {}
    for m in ("t1", "t2", "flair"):
        dm = _dm(root, tmp_path, modality=m)
        dm.setup()
        singles[m] = _all_items(dm)
    stacked = _dm(root, tmp_path, modality=["t1", "t2", "flair"])
    stacked.setup()
    two = _dm(root, tmp_path, modality=["t1ce", "flair"])
    two.setup()
    for key, item in _all_items(stacked).items():
        for c, m in enumerate(("t1", "t2", "flair")):
            assert torch.equal(item["image"][c], singles[m][key]["image"][0])
    assert two.dataset("val")[0]["image"].shape[0] == 2
    with pytest.raises(ValueError, match="modality"):
        BraTSDataModule(root, modality="dwi")


def test_cache_is_reused_and_invalidated(brats_copy, tmp_path, monkeypatch):
    first = _dm(brats_copy, tmp_path)
    first.setup()
    reference = _all_items(first)
    cache_files = list((tmp_path / "cache").rglob("*.npz"))
    assert len(cache_files) == 5
    assert all(brats_copy not in p.parents for p in cache_files)

    calls: list[Path] = []
    real_read = brats.read_nifti

    def failing_read(path):
        calls.append(Path(path))
        raise AssertionError(f"NIfTI decoded again: {path}")

    monkeypatch.setattr(brats, "read_nifti", failing_read)
    second = _dm(brats_copy, tmp_path)
    second.setup()  # served from the cache: decoding would raise
    again = _all_items(second)
    assert again.keys() == reference.keys()
    for key in reference:
        assert torch.equal(again[key]["image"], reference[key]["image"])
        assert torch.equal(again[key]["mask"], reference[key]["mask"])

    # A changed source file (new size/mtime) invalidates exactly that case's entry.
    case = sorted(p.name for p in brats_copy.iterdir())[0]
    seg_path = brats_copy / case / f"{case}_seg.nii.gz"
    seg = real_read(seg_path)
    seg[:] = 0
    write_nifti(seg_path, seg)
    monkeypatch.setattr(brats, "read_nifti", lambda p: (calls.append(Path(p)), real_read(p))[1])
    third = _dm(brats_copy, tmp_path)
    third.setup()
    assert {p.parent.name for p in calls} == {case}
    assert all(
        third.dataset(s).labels[[i.startswith(case) for i in third.dataset(s).ids]].sum() == 0
        for s in ("train", "val", "test")
    )


def test_default_cache_dir_is_outside_root(tiny_brats, tmp_path, monkeypatch):
    root, _ = tiny_brats
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = snapshot(root)
    dm = BraTSDataModule(root)
    dm.setup()
    assert len(list((tmp_path / "xdg" / "wsss-cam" / "brats").rglob("*.npz"))) == 5
    assert snapshot(root) == before
    with pytest.raises(ValueError, match="inside the dataset root"):
        BraTSDataModule(root, cache_dir=root / "cache").setup()


def test_split_by_case_deterministic_and_written(tiny_brats, tmp_path):
    root, ids = tiny_brats
    dm = _dm(root, tmp_path, output_dir=tmp_path / "run", split_ratios=(0.6, 0.2, 0.2))
    dm.setup()
    split = dm.split
    assert sorted(sum(split.values(), [])) == sorted(ids)
    assert [len(split[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    written = json.loads((tmp_path / "run" / "split.json").read_text())
    assert written == split
    for s in ("train", "val", "test"):  # items of a split come only from its cases
        assert {i.split("/")[0] for i in dm.dataset(s).ids} == set(split[s])
    again = _dm(root, tmp_path, split_ratios=(0.6, 0.2, 0.2))
    again.setup()
    assert again.split == split
    seeds = set()
    for seed in range(6):
        other = _dm(root, tmp_path, split_ratios=(0.6, 0.2, 0.2), split_seed=seed)
        other.setup()
        seeds.add(json.dumps(other.split))
    assert len(seeds) > 1


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_split_file(tiny_brats, tmp_path, suffix):
    root, ids = tiny_brats
    wanted = {"train": ids[:2], "val": ids[2:4], "test": ids[4:]}
    path = tmp_path / f"split{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(wanted))
    else:
        path.write_text("".join(f"{k}: [{', '.join(v)}]\n" for k, v in wanted.items()))
    dm = _dm(root, tmp_path, split_file=path, output_dir=tmp_path / "run")
    dm.setup()
    assert dm.split == wanted
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == wanted


def test_split_file_unknown_ids_are_named(tiny_brats, tmp_path):
    root, ids = tiny_brats
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ids[:3] + ["BraTS2021_99999"], "val": [], "test": []}))
    with pytest.raises(DataFormatError, match=r"split.json.*BraTS2021_99999"):
        _dm(root, tmp_path, split_file=path).setup()
    path.write_text(json.dumps({"train": ids[:3], "val": ids[2:3]}))
    with pytest.raises(DataFormatError, match="both train and val"):
        _dm(root, tmp_path, split_file=path).setup()


def test_loaders(tiny_brats, tmp_path):
    root, _ = tiny_brats
    dm = _dm(root, tmp_path, weighted_sampling=True, batch_size=7)
    dm.setup()
    batch = next(iter(dm.eval_dataloader("test", batch_size=5)))
    assert batch["image"].shape == (5, 3, 48, 48)
    assert batch["label"].shape == (5, 1) and batch["mask"].dtype == torch.int64
    assert batch["id"] == dm.dataset("test").ids[:5]  # no shuffle
    ids = [i for b in dm.eval_dataloader("train") for i in b["id"]]
    assert ids == dm.dataset("train").ids
    train = dm.train_dataloader()
    assert isinstance(train.sampler, torch.utils.data.WeightedRandomSampler)
    assert (dm.num_classes, dm.task, dm.class_names) == (1, "binary", ["tumour"])


def test_small_case_counts_fill_every_split(brats_copy, tmp_path):
    for case in sorted(p.name for p in brats_copy.iterdir())[3:]:
        for f in (brats_copy / case).iterdir():
            f.unlink()
        (brats_copy / case).rmdir()
    dm = _dm(brats_copy, tmp_path)
    dm.setup()
    assert [len(dm.split[s]) for s in ("train", "val", "test")] == [1, 1, 1]


# ---- bad input --------------------------------------------------------------------------


def _first_case(root: Path) -> str:
    return sorted(p.name for p in root.iterdir())[0]


def test_missing_and_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _dm(tmp_path / "nope", tmp_path).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"empty: no case folders"):
        _dm(tmp_path / "empty", tmp_path).setup()


def _missing_modality(root: Path, case: str) -> str:
    (root / case / f"{case}_flair.nii.gz").unlink()
    return f"{case}_flair.nii.gz: missing file"


def _truncated(root: Path, case: str) -> str:
    path = root / case / f"{case}_flair.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    return f"{case}_flair.nii.gz: cannot decode NIfTI"


def _not_gzip(root: Path, case: str) -> str:
    (root / case / f"{case}_seg.nii.gz").write_bytes(b"garbage" * 10)
    return f"{case}_seg.nii.gz: cannot decode NIfTI"


def _shape_mismatch(root: Path, case: str) -> str:
    write_nifti(root / case / f"{case}_seg.nii.gz", np.zeros((48, 48, 19), np.uint8))
    return f"{case}_flair.nii.gz: image shape \\(48, 48, 20\\) differs"


def _bad_labels(root: Path, case: str) -> str:
    seg = np.zeros((48, 48, 20), np.uint8)
    seg[10, 10, 10] = 3
    write_nifti(root / case / f"{case}_seg.nii.gz", seg)
    return f"{case}_seg.nii.gz: labels \\[3\\] outside"


@pytest.mark.parametrize(
    "corrupt", [_missing_modality, _truncated, _not_gzip, _shape_mismatch, _bad_labels]
)
def test_bad_case_raises_naming_file_or_is_skipped(brats_copy, tmp_path, corrupt):
    case = _first_case(brats_copy)
    message = corrupt(brats_copy, case)
    with pytest.raises(DataFormatError, match=message):
        _dm(brats_copy, tmp_path).setup()
    before = snapshot(brats_copy)
    dm = _dm(brats_copy, tmp_path, on_error="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
    assert list(dm.skipped) == [case]
    assert any(case in str(w.message) for w in caught)
    assert case not in sum(dm.split.values(), [])
    assert sum(len(v) for v in dm.split.values()) == 4
    assert snapshot(brats_copy) == before


def test_stray_files_and_hidden_folders_are_ignored(brats_copy, tmp_path):
    (brats_copy / "README.txt").write_text("not a case")
    (brats_copy / ".hidden").mkdir()
    dm = _dm(brats_copy, tmp_path)
    dm.setup()
    assert sum(len(v) for v in dm.split.values()) == 5


def test_truncated_gzip_is_decoding_error(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_bytes(gzip.compress(b"\0" * 100))
    with pytest.raises(DataFormatError, match="x.nii.gz"):
        brats.read_nifti(path)


def test_split_file_naming_a_skipped_case_drops_it(brats_copy, tmp_path):
    ids = sorted(p.name for p in brats_copy.iterdir())
    _missing_modality(brats_copy, ids[0])
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ids[:3], "val": [ids[3]], "test": [ids[4]]}))
    dm = _dm(brats_copy, tmp_path, split_file=path, on_error="skip")
    with pytest.warns(UserWarning, match=ids[0]):
        dm.setup()
    assert dm.split == {"train": ids[1:3], "val": [ids[3]], "test": [ids[4]]}


def test_foreground_square_golden():
    volume = np.zeros((2, 20, 30), np.uint8)
    volume[1, 5:9, 10:20] = 1  # rows 5..8, cols 10..19: a 4x10 box -> a 10x10 square
    assert foreground_square(volume) == (slice(2, 12), slice(10, 20))
    volume[0, 0:20, 0:3] = 1  # as tall as the frame: the square fills its height
    assert foreground_square(volume) == (slice(0, 20), slice(0, 20))
    edge = np.zeros((1, 10, 10), np.uint8)
    edge[0, 0, 0:6] = 1  # a 1x6 box in the corner: the square is shifted inside the frame
    assert foreground_square(edge) == (slice(0, 6), slice(0, 6))
    assert foreground_square(np.zeros((3, 4, 4))) is None


def test_crop_foreground_keeps_the_head_and_the_labels(tmp_path):
    """A 40x40 frame whose head fills rows 10..29, cols 5..24: every slice is cut to that
    20x20 square (then resized); labels still come from the full slice."""
    root = tmp_path / "data"
    case = "BraTS2021_00001"
    (root / case).mkdir(parents=True)
    image = np.zeros((40, 40, 3), np.int16)
    image[10:30, 5:25, :] = 100
    image[12:16, 8:12, 1] = 300  # a bright tumour in slice 1
    seg = np.zeros((40, 40, 3), np.uint8)
    seg[12:16, 8:12, 1] = 2  # 16 px = 1 % of 1600: not above it
    seg[12:18, 8:12, 2] = 2  # 24 px: tumour
    write_nifti(root / case / f"{case}_flair.nii.gz", image)
    write_nifti(root / case / f"{case}_seg.nii.gz", seg)
    kw = {"split_ratios": (1, 0, 0)}
    cropped = _dm(root, tmp_path, crop_foreground=True, **kw)
    cropped.setup()
    data = cropped.dataset("train")
    assert [data[z]["label"].item() for z in range(3)] == [0.0, 0.0, 1.0]
    assert data[0]["image"].shape == (3, 20, 20)
    assert float(data[0]["image"].min()) > 0  # no black frame left: the head fills the crop
    np.testing.assert_array_equal(data[2]["mask"].numpy(), seg[10:30, 5:25, 2] > 0)
    resized = _dm(root, tmp_path, crop_foreground=True, image_size=10, **kw)
    resized.setup()
    item = resized.dataset("train")[2]
    assert item["image"].shape == (3, 10, 10) and int(item["mask"].sum()) == 6
    # The per-case metrics' voxels: 1 mm before the 20 px crop is spread over 10 px.
    assert cropped.voxel_spacing(case) == (1.0, 1.0, 1.0)
    assert resized.voxel_spacing(case) == (1.0, 2.0, 2.0)
    stepped = _dm(root, tmp_path, image_size=20, slice_step=2, **kw)
    stepped.setup()
    assert stepped.voxel_spacing(case) == (2.0, 2.0, 2.0)
    assert stepped.volume_unit == "mm"


def test_first_read_stopped_by_a_bad_case_leaves_no_partial_cache(brats_copy, tmp_path):
    last = sorted(p.name for p in brats_copy.iterdir())[-1]
    seg = brats_copy / last / f"{last}_seg.nii.gz"
    good = seg.read_bytes()
    _bad_labels(brats_copy, last)
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError, match=f"{last}_seg.nii.gz"):
        _dm(brats_copy, tmp_path).setup()
    assert not list(cache.rglob("*.npz")), "the cases before the bad one were left cached"
    # A cache that existed before the failed read is kept: its entries are valid.
    seg.write_bytes(good)
    _dm(brats_copy, tmp_path).setup()
    cached = sorted(cache.rglob("*.npz"))
    _bad_labels(brats_copy, last)
    with pytest.raises(DataFormatError):
        _dm(brats_copy, tmp_path).setup()
    assert cached and all(p.exists() for p in cached)

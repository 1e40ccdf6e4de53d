"""The authors' JPEG round trip (data.jpeg_roundtrip): the same pixels as their writer and
reader, applied by the BraTS and TCGA-LGG readers only when asked for."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from skimage import io as skio

from src.data.brats import BraTSDataModule, decode_case
from src.data.generators.tcga_lgg import generate_tcga_lgg
from src.data.jpeg import jpeg_roundtrip, jpeg_roundtrip_slices
from src.data.tcga_lgg import TCGALGGDataModule


def _slice(seed: int = 0, size: int = 64) -> np.ndarray:
    """A brain-like uint8 slice: a textured disc on black with a bright blob (sharp edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    blob = (yy - size * 0.4) ** 2 + (xx - size * 0.6) ** 2 < (size * 0.1) ** 2
    image = disc * (90 + 30 * rng.random((size, size))) + blob * 100
    return image.round().astype(np.uint8)


def test_same_pixels_as_the_authors_writer_and_reader(tmp_path):
    """Their gen_dataset.py: skimage.io.imsave(<case>-<z>.jpg) with the writer's default
    quality; their loader: PIL open -> RGB. Our in-memory round trip gives the same bytes."""
    image = _slice()
    path = tmp_path / "case-070.jpg"
    skio.imsave(path, image, check_contrast=False)
    with Image.open(path) as decoded:
        theirs = np.asarray(decoded.convert("RGB"))
    ours = jpeg_roundtrip(image)
    assert ours.shape == image.shape and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, theirs[..., 0])
    np.testing.assert_array_equal(theirs[..., 0], theirs[..., 2])  # grey, repeated
    changed = ours != image
    assert 0.05 < changed.mean() < 0.9  # lossy: edges and texture move
    assert 0 < np.abs(ours.astype(int) - image).max() <= 64


def test_shapes_are_kept_and_bad_input_is_refused():
    grey = _slice(1)
    np.testing.assert_array_equal(jpeg_roundtrip(grey[..., None])[..., 0], jpeg_roundtrip(grey))
    colour = np.stack([grey, grey[::-1], grey.T], -1)
    assert jpeg_roundtrip(colour).shape == colour.shape
    stack = np.stack([[grey, grey.T]] * 3)  # (S, C, H, W): every plane its own JPEG
    out = jpeg_roundtrip_slices(stack)
    assert out.shape == stack.shape
    np.testing.assert_array_equal(out[2, 1], jpeg_roundtrip(grey.T))
    with pytest.raises(ValueError, match="uint8"):
        jpeg_roundtrip(grey.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        jpeg_roundtrip(np.zeros((8, 8, 2), np.uint8))


def _images(dm) -> dict[str, torch.Tensor]:
    return {
        item["id"]: (item["image"], item["mask"], item["label"])
        for split in ("train", "val", "test")
        for item in dm.dataset(split)
    }


def test_brats_roundtrip_is_off_by_default_and_applied_to_the_full_slice(tiny_brats, tmp_path):
    root, _ = tiny_brats
    cache = tmp_path / "cache"
    plain = _images(BraTSDataModule(root, cache_dir=cache))
    cached = sorted(p.name for p in cache.rglob("*.npz"))
    with pytest.raises(ValueError, match="jpeg_roundtrip"):
        BraTSDataModule(root, cache_dir=cache, jpeg_roundtrip="yes")
    lossy = _images(BraTSDataModule(root, cache_dir=cache, jpeg_roundtrip=True))
    assert sorted(p.name for p in cache.rglob("*.npz")) == cached  # the cache stays lossless
    assert plain.keys() == lossy.keys()
    moved = 0
    for image_id, (image, mask, label) in plain.items():
        expected = jpeg_roundtrip((image[0] * 255).round().to(torch.uint8).numpy())
        np.testing.assert_array_equal((lossy[image_id][0][0] * 255).round().numpy(), expected)
        assert torch.equal(lossy[image_id][1], mask) and torch.equal(lossy[image_id][2], label)
        moved += int((lossy[image_id][0] != image).any())
    assert moved > len(plain) // 2
    # Off (the default) is the lossless reader: exactly the decoded uint8 slices.
    for case in {image_id.split("/")[0] for image_id in plain}:
        decoded = decode_case(
            root / case / f"{case}_flair.nii.gz", root / case / f"{case}_seg.nii.gz"
        )
        for z, expected in enumerate(decoded["image"]):
            image = plain[f"{case}/s{z:03d}"][0]
            np.testing.assert_array_equal((image[0] * 255).round().numpy(), expected)


def test_tcga_lgg_roundtrip_changes_the_images_as_read(tmp_path):
    root = tmp_path / "lgg"
    generate_tcga_lgg(root, n_patients=3, seed=2, size=40, n_slices=(3, 4))
    plain = TCGALGGDataModule(root, batch_size=4).dataset("train")
    lossy = TCGALGGDataModule(root, batch_size=4, jpeg_roundtrip=True).dataset("train")
    assert plain.ids == lossy.ids
    for i, item_id in enumerate(plain.ids):
        patient, s = item_id.split("/")
        stored = tifffile.imread(root / "kaggle_3m" / patient / f"{patient}_{int(s[1:])}.tif")
        np.testing.assert_array_equal(plain[i]["image"].permute(1, 2, 0).numpy() * 255, stored)
        np.testing.assert_allclose(
            lossy[i]["image"].permute(1, 2, 0).numpy() * 255, jpeg_roundtrip(stored), atol=1e-4
        )
        assert torch.equal(lossy[i]["mask"], plain[i]["mask"])

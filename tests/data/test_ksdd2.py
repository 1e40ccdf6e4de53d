"""KSDD2 reader against the generated copy (docs/data.md)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from src.data.errors import DataFormatError
from src.data.generators.ksdd2 import generate_ksdd2
from src.data.ksdd2 import KSDD2DataModule
from tests.helpers.files import snapshot


@pytest.fixture(scope="module")
def tiny_ksdd2(tmp_path_factory):
    root = tmp_path_factory.mktemp("ksdd2") / "KSDD2"
    stems = generate_ksdd2(root, n_train=10, n_test=5, seed=4, defect_fraction=0.5, size=(126, 46))
    return root, stems


def test_items_labels_masks_and_official_split(tiny_ksdd2):
    root, stems = tiny_ksdd2
    before = snapshot(root)
    dm = KSDD2DataModule(root, image_size=None, batch_size=1, val_fraction=0.2)
    dm.setup()
    assert dm.split["test"] == [f"test/{s}" for s in stems["test"]]
    assert sorted(dm.split["train"] + dm.split["val"]) == [f"train/{s}" for s in stems["train"]]
    assert len(dm.split["val"]) == 2
    labels = []
    for split in ("train", "val", "test"):
        data = dm.dataset(split)
        for i, item_id in enumerate(data.ids):
            folder, stem = item_id.split("/")
            gt = np.asarray(Image.open(root / folder / f"{stem}_GT.png"))
            image = np.asarray(Image.open(root / folder / f"{stem}.png"))
            item = data[i]
            np.testing.assert_array_equal(item["mask"].numpy(), (gt > 0).astype(np.int64))
            np.testing.assert_allclose(
                item["image"].permute(1, 2, 0).numpy(), image / 255, atol=1e-6
            )
            assert item["label"].item() == float(gt.any())
            labels.append(float(gt.any()))
    assert 0 < sum(labels) < len(labels)
    assert snapshot(root) == before


def test_default_resize_is_640x232(tiny_ksdd2):
    root, _ = tiny_ksdd2
    dm = KSDD2DataModule(root, batch_size=3)
    batch = next(iter(dm.eval_dataloader("test")))
    assert batch["image"].shape == (3, 3, 640, 232) and batch["mask"].shape == (3, 640, 232)
    assert set(batch["mask"].unique().tolist()) <= {0, 1}
    assert (dm.num_classes, dm.task, dm.class_names) == (1, "binary", ["defect"])


def test_bad_inputs(tiny_ksdd2, tmp_path):
    root = tmp_path / "k"
    shutil.copytree(tiny_ksdd2[0], root)
    stem = tiny_ksdd2[1]["train"][0]
    (root / "train" / f"{stem}_GT.png").unlink()
    with pytest.raises(DataFormatError, match=rf"{stem}_GT.png: missing ground-truth file"):
        KSDD2DataModule(root).setup()
    Image.new("L", (5, 5)).save(root / "train" / f"{stem}_GT.png")
    with pytest.raises(DataFormatError, match=rf"{stem}_GT.png: GT shape \(5, 5\) differs"):
        KSDD2DataModule(root).setup()
    dm = KSDD2DataModule(root, on_error="skip")
    with pytest.warns(UserWarning):
        dm.setup()
    assert list(dm.skipped) == [f"train/{stem}"]
    shutil.rmtree(root / "test")
    with pytest.raises(DataFormatError, match="test: missing KSDD2 folder"):
        KSDD2DataModule(root).setup()

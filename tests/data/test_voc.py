"""VOC 2012 reader against the generated VOCdevkit copy (docs/data.md)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from src.data.errors import DataFormatError
from src.data.generators.voc import generate_voc, voc_palette
from src.data.voc import VOC_CLASSES, VOCDataModule
from tests.helpers.files import snapshot


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "voc"
    lists = generate_voc(root, n_train=8, n_val=4, n_aug=2, seed=2)
    return root, lists


def _voc(root):
    return root / "VOCdevkit" / "VOC2012"


def test_palette_matches_voc_colours():
    palette = voc_palette()
    assert palette[3:6] == [128, 0, 0]  # aeroplane
    assert palette[15 * 3 : 15 * 3 + 3] == [192, 128, 128]  # person
    assert palette[255 * 3 : 255 * 3 + 3] == [224, 224, 192]  # void


def test_items_labels_masks_and_void(tiny_voc):
    root, lists = tiny_voc
    before = snapshot(root)
    dm = VOCDataModule(root, image_size=None, batch_size=1)
    dm.setup()
    assert dm.split["test"] == sorted(lists["val"])  # official val is our test
    assert sorted(dm.split["train"] + dm.split["val"]) == sorted(lists["train"])
    voc = _voc(root)
    n_void = 0
    for split in ("train", "val", "test"):
        data = dm.dataset(split)
        for i, image_id in enumerate(data.ids):
            item = data[i]
            names = {
                o.findtext("name")
                for o in ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot().iter("object")
            }
            assert item["label"].shape == (20,)
            assert [VOC_CLASSES[k] for k in item["label"].nonzero()[:, 0]] == sorted(
                names, key=VOC_CLASSES.index
            )
            png = Image.open(voc / "SegmentationClass" / f"{image_id}.png")
            assert png.mode == "P"
            np.testing.assert_array_equal(item["mask"].numpy(), np.asarray(png).astype(np.int64))
            present = set(item["mask"].unique().tolist()) - {0, 255}
            assert present <= {VOC_CLASSES.index(n) + 1 for n in names}
            n_void += int((item["mask"] == 255).sum())
    assert n_void > 0
    assert snapshot(root) == before


def test_train_aug_and_resize(tiny_voc):
    root, lists = tiny_voc
    dm = VOCDataModule(root, train_list="train_aug", image_size=(48, 64), batch_size=2)
    dm.setup()
    assert sorted(dm.split["train"] + dm.split["val"]) == sorted(lists["train"] + lists["aug"])
    train = dm.dataset("train")
    aug_index = [i for i, x in enumerate(train.ids) if x in lists["aug"]]
    for i in aug_index:  # SBD extras have no mask: all void
        assert (train[i]["mask"] == 255).all()
    batch = next(iter(dm.eval_dataloader("test")))
    assert batch["image"].shape == (2, 3, 48, 64) and batch["label"].shape == (2, 20)
    assert set(batch["mask"].unique().tolist()) <= set(range(21)) | {255}
    assert (dm.num_classes, dm.task) == (20, "multilabel")


def test_bad_inputs(tiny_voc, tmp_path):
    root = tmp_path / "v"
    shutil.copytree(tiny_voc[0], root)
    voc = _voc(root)
    image_id = tiny_voc[1]["val"][0]
    xml = voc / "Annotations" / f"{image_id}.xml"
    xml.write_text(xml.read_text().replace("<name>", "<name>zebra", 1))
    with pytest.raises(DataFormatError, match=rf"{image_id}.xml: unknown object names"):
        VOCDataModule(root).setup()
    xml.write_text("<annotation>")
    with pytest.raises(DataFormatError, match=rf"{image_id}.xml: cannot parse"):
        VOCDataModule(root).setup()
    shutil.copy(tiny_voc[0] / "VOCdevkit/VOC2012/Annotations" / f"{image_id}.xml", xml)
    (voc / "SegmentationClass" / f"{image_id}.png").unlink()
    with pytest.raises(DataFormatError, match=rf"{image_id}.png: missing mask"):
        VOCDataModule(root).setup()
    bad = np.full((10, 10), 30, np.uint8)
    Image.fromarray(bad).save(voc / "SegmentationClass" / f"{image_id}.png")
    with pytest.raises(DataFormatError, match=rf"{image_id}.png: mask values \[30\]"):
        VOCDataModule(root).setup()
    dm = VOCDataModule(root, on_error="skip")
    with pytest.warns(UserWarning):
        dm.setup()
    assert list(dm.skipped) == [image_id]
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DataFormatError, match="val.txt: missing image list"):
        VOCDataModule(root).setup()
    with pytest.raises(DataFormatError, match="no VOC2012 folder"):
        VOCDataModule(tmp_path).setup()
    shutil.rmtree(voc / "Annotations")
    for on_error in ("raise", "skip"):  # not one "cannot parse" per image
        with pytest.raises(DataFormatError, match=r"Annotations: missing folder"):
            VOCDataModule(root, on_error=on_error).setup()

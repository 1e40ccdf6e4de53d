"""The pieces of `method=selftrain` that carry pseudo-masks: items without pixel labels, items
with the pseudo-mask as their mask, the masks of saved maps, and the training loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_lightning.utilities.model_helpers import is_overridden

from src.data.datasets import TensorSliceDataset
from src.evaluation.items import truncated_uint8_rgb
from src.evaluation.map_store import MapWriter
from src.evaluation.masks import MaskMaker
from src.pipeline.selftrain import training_slices
from src.segmentation.confidence import IGNORE, Confidence, confident_labels
from src.segmentation.pseudo_masks import (
    PseudoMaskDataModule,
    PseudoMaskDataset,
    WithoutPixelLabels,
    pseudo_masks,
    read_masks,
    write_masks,
)

SIZE = 16


def _slices(n: int = 8) -> TensorSliceDataset:
    """`n` slices, every other one labelled positive, each with a non-empty ground truth
    (so a pseudo-mask can never be mistaken for it)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    masks = torch.ones(n, SIZE, SIZE, dtype=torch.uint8)
    labels = torch.tensor([[float(i % 2 == 0)] for i in range(n)])
    return TensorSliceDataset(images, masks, labels, [f"case/s{i:03d}" for i in range(n)])


def test_items_without_pixel_labels_have_no_mask():
    items = WithoutPixelLabels(_slices(), [1, 2, 5])
    assert items.ids == ["case/s001", "case/s002", "case/s005"]
    assert [items.positive(i) for i in range(3)] == [False, True, False]
    for i in range(3):
        assert set(items[i]) == {"image", "label", "id"}


def test_training_items_carry_the_pseudo_mask_not_the_ground_truth():
    data = _slices()
    masks = {image_id: np.zeros((SIZE, SIZE), bool) for image_id in data.ids}
    masks["case/s002"][3:6, 4:9] = True
    items = PseudoMaskDataset(data, [2, 3], masks)
    first, second = items[0], items[1]
    assert first["mask"].dtype == torch.int64
    assert torch.equal(first["mask"], torch.from_numpy(masks["case/s002"]).long())
    assert int(second["mask"].sum()) == 0  # labelled negative: empty, although its GT is not
    with pytest.raises(KeyError, match="no pseudo-mask"):
        PseudoMaskDataset(data, [2], {})


def test_pseudo_masks_are_the_mask_rules_on_positives_and_empty_on_negatives(tmp_path):
    data = _slices()
    items = WithoutPixelLabels(data, range(len(data)))
    maps = {}
    with MapWriter(tmp_path / "maps.npz") as writer:
        for i in items_positive(items):
            cam_map = np.zeros((SIZE, SIZE), np.float32)
            cam_map[2 + i : 8 + i, 3:10] = 0.9
            maps[items.ids[i]] = cam_map
            writer.add(items.ids[i], cam_map)
    with MaskMaker("otsu") as maker:
        made = dict(pseudo_masks(items, tmp_path / "maps.npz", maker))
    assert list(made) == items.ids
    rule = MaskMaker("otsu")
    for i, image_id in enumerate(items.ids):
        if items.positive(i):
            image = truncated_uint8_rgb(items[i]["image"][None])
            expected = rule(image, maps[image_id][None].astype(np.float16).astype(np.float32))[0]
            assert np.array_equal(made[image_id], expected) and made[image_id].any()
        else:
            assert not made[image_id].any()
    areas = write_masks(tmp_path / "masks.npz", iter(made.items()))
    back = read_masks(tmp_path / "masks.npz")
    assert areas == {k: int(v.sum()) for k, v in made.items()}
    assert all(np.array_equal(back[k], made[k]) for k in made)


def test_confident_pseudo_masks_leave_the_uncertain_band_out(tmp_path):
    """With confident regions: the rule's mask cut to the high part of the map, the low
    part outside it background, the rest `IGNORE`; negatives wholly background; written
    and read back exactly, and the training items say which pixels to ignore."""
    data = _slices()
    items = WithoutPixelLabels(data, range(len(data)))
    maps = {}
    with MapWriter(tmp_path / "maps.npz") as writer:
        for i in items_positive(items):
            cam_map = np.full((SIZE, SIZE), 0.02, np.float32)
            cam_map[2:12, 2:12] = 0.4  # a wide, lukewarm blob ...
            cam_map[5:9, 5:9] = 0.9  # ... around a confident core
            maps[items.ids[i]] = cam_map
            writer.add(items.ids[i], cam_map)
    rule = Confidence(foreground=0.6, background=0.1, refine=False)
    with MaskMaker("threshold", threshold=0.3) as maker:
        made = dict(pseudo_masks(items, tmp_path / "maps.npz", maker, rule))
    for i, image_id in enumerate(items.ids):
        labels = made[image_id]
        assert labels.dtype == np.uint8
        if not items.positive(i):
            assert not labels.any()  # background everywhere, nothing ignored
            continue
        assert (
            labels.tolist() == confident_labels(maps[image_id] > 0.3, maps[image_id], rule).tolist()
        )
        assert (labels == 1).sum() == 16 and (labels == IGNORE).sum() == 100 - 16
    areas = write_masks(tmp_path / "masks.npz", iter(made.items()))
    back = read_masks(tmp_path / "masks.npz")
    assert all(np.array_equal(back[k], made[k]) for k in made)
    assert areas == {k: int((v == 1).sum()) for k, v in made.items()}
    training = PseudoMaskDataset(data, range(len(data)), back)
    item = training[0]
    assert torch.equal(item["ignore"], torch.from_numpy(made[items.ids[0]] == IGNORE))
    assert set(item["mask"].unique().tolist()) == {0, 1}  # the ignored pixels are not object
    assert not training[1]["ignore"].any()


def test_masks_without_an_ignored_pixel_make_the_former_items():
    data = _slices()
    masks = {image_id: np.zeros((SIZE, SIZE), bool) for image_id in data.ids}
    assert "ignore" not in PseudoMaskDataset(data, [0, 1], masks)[0]


def items_positive(items: WithoutPixelLabels) -> list[int]:
    return [i for i in range(len(items)) if items.positive(i)]


def test_training_slices_are_an_even_balanced_subset_of_the_labels():
    labels = torch.tensor([[1.0]] * 10 + [[0.0]] * 30)
    chosen = training_slices(labels, 8, 0.5)
    assert len(chosen) == 8 and sorted(chosen) == chosen
    assert sum(int(labels[i, 0]) for i in chosen) == 4
    assert training_slices(labels, 8, 0.5) == chosen  # deterministic
    assert training_slices(labels, None, 0.5) == list(range(40))
    assert training_slices(labels, 100, 0.5) == list(range(40))


def test_an_epoch_draws_the_split_size_balanced():
    data = _slices(8)
    masks = {image_id: np.zeros((SIZE, SIZE), bool) for image_id in data.ids}
    items = PseudoMaskDataset(data, [0, 1, 3, 5], masks)  # one positive, three negatives
    module = PseudoMaskDataModule(items, epoch_size=400, batch_size=50, balanced=True, seed=3)
    labels = torch.cat([batch["label"] for batch in module.train_dataloader()])
    assert len(labels) == 400
    assert 0.4 < float(labels.mean()) < 0.6  # the one positive drawn about half the time
    again = torch.cat([batch["label"] for batch in module.train_dataloader()])
    assert torch.equal(labels, again)  # seeded
    # No validation loader: no pixel label of the validation split reaches the training.
    assert not is_overridden("val_dataloader", module)

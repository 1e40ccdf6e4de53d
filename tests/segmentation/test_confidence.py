"""Confident regions of a pseudo-mask (`src/segmentation/confidence.py`) and the loss that
leaves the rest out (`src/segmentation/losses.py`, `SegmenterModule`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from omegaconf import OmegaConf

from src.segmentation.confidence import IGNORE, OTSU, Confidence, confident_labels
from src.segmentation.losses import masked_dice_ce
from src.segmentation.module import SegmenterModule


def test_labels_keep_the_high_inside_and_the_low_outside():
    cam_map = np.array([[1.0, 0.6, 0.3, 0.05], [0.9, 0.2, 0.5, 0.0]], np.float32) * 0.8
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    labels = confident_labels(mask, cam_map, Confidence(0.5, 0.1, refine=False))
    # Inside the mask: object where the map is at least half its maximum, else ignored;
    # outside: background where it is below a tenth of its maximum, else ignored.
    expected = [[1, 1, IGNORE, 0], [1, IGNORE, IGNORE, 0]]
    assert labels.dtype == np.uint8 and labels.tolist() == expected


def test_a_background_of_one_takes_everything_outside_the_mask():
    cam_map = np.array([[0.9, 0.5, 0.8]], np.float32)
    mask = np.array([[True, True, False]])
    labels = confident_labels(mask, cam_map, Confidence(0.8, 1.0, refine=False))
    assert labels.tolist() == [[1, IGNORE, 0]]


def test_thresholds_are_fractions_of_the_maps_maximum():
    mask = np.ones((1, 3), bool)
    rule = Confidence(foreground=0.5, background=0.0, refine=False)
    low = confident_labels(mask, np.array([[0.2, 0.1, 0.04]], np.float32), rule)
    assert low.tolist() == [[1, 1, IGNORE]]  # 0.1 is half of 0.2: object at any scale


def test_otsu_splits_the_mask_by_the_map_alone():
    """`OTSU`: the object is the mask's pixels above Otsu's threshold of the map's levels
    inside the mask, so pixels outside it (here a bright spot) cannot move the split."""
    cam_map = np.array([[0.9, 1.0, 0.5, 0.45, 0.95, 0.02]], np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0]], bool)
    labels = confident_labels(mask, cam_map, Confidence(OTSU, 1.0, refine=False))
    assert labels.tolist() == [[1, 1, IGNORE, IGNORE, 0, 0]]
    # the same split whatever the map's scale (levels are fractions of its maximum)
    scaled = confident_labels(mask, cam_map * 0.3, Confidence(OTSU, 1.0, refine=False))
    assert np.array_equal(scaled, labels)


def test_otsu_keeps_a_mask_it_cannot_split():
    cam_map = np.array([[0.7, 0.7, 0.1]], np.float32)
    mask = np.array([[True, True, False]])
    labels = confident_labels(mask, cam_map, Confidence(OTSU, 1.0, refine=False))
    assert labels.tolist() == [[1, 1, 0]]
    nothing = confident_labels(np.zeros_like(mask), cam_map, Confidence(OTSU, 1.0, refine=False))
    assert not (nothing == 1).any()  # no mask, no object
    assert Confidence(OTSU, 1.0).describe()["foreground"] == "otsu"


def test_the_crf_shrinks_the_thresholded_blob_to_the_bright_object():
    """IRNet's refinement: the map's high part is a coarse square around a small bright
    object; the DenseCRF on the image keeps the object and drops the dull tissue around."""
    image = np.full((32, 32, 3), 90, np.uint8)
    image[12:18, 12:18] = 220  # the object, 6 x 6
    cam_map = np.full((32, 32), 0.05, np.float32)
    cam_map[8:24, 8:24] = 0.9  # a 16 x 16 cell of the map, 7 times the object's area
    mask = cam_map > 0.5
    plain = confident_labels(mask, cam_map, Confidence(0.8, 1.0, refine=False))
    refined = confident_labels(mask, cam_map, Confidence(0.8, 1.0), image)
    assert (plain == 1).sum() == 256
    assert np.array_equal(refined == 1, image[..., 0] == 220)
    assert np.array_equal(refined == 0, ~mask)  # the background does not depend on it
    with pytest.raises(ValueError, match="needs the image"):
        confident_labels(mask, cam_map, Confidence(0.8, 1.0))


def test_the_key_names_the_refinement():
    assert "object" in Confidence(0.8, 1.0).describe()
    assert Confidence(0.8, 1.0, refine=False).describe() == {"foreground": 0.8, "background": 1.0}


@pytest.mark.parametrize(
    ("foreground", "background", "message"),
    [
        (0.5, -0.1, r"\[0, 1\]"),
        (1.5, 0.1, r"\[0, 1\] or otsu"),
        (True, 0.1, "a number"),
        ("otso", 0.1, "or otsu, got 'otso'"),
        (0.5, OTSU, "background: expected a number"),
    ],
)
def test_bad_thresholds_are_refused(foreground, background, message):
    with pytest.raises(ValueError, match=message):
        Confidence(foreground, background)


def test_the_config_sets_both_thresholds_or_neither():
    assert Confidence.from_config(OmegaConf.create({"limit": None})) is None
    both = OmegaConf.create({"confident_foreground": 0.5, "confident_background": 0.1})
    assert Confidence.from_config(both) == Confidence(0.5, 0.1)
    with pytest.raises(ValueError, match="both"):
        Confidence.from_config(OmegaConf.create({"confident_foreground": 0.5}))


def _logits_and_target(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 1, 8, 8, generator=generator)
    target = (torch.rand(3, 1, 8, 8, generator=generator) > 0.6).float()
    target[2] = 0  # an image with an empty target
    return logits, target


def test_with_every_pixel_kept_the_loss_is_monais_dice_ce():
    logits, target = _logits_and_target()
    keep = torch.ones_like(target, dtype=torch.bool)
    expected = DiceCELoss(sigmoid=True)(logits, target)
    assert torch.allclose(masked_dice_ce(logits, target, keep), expected, atol=1e-6)


def test_ignored_pixels_change_nothing_and_get_no_gradient():
    logits, target = _logits_and_target()
    keep = torch.rand(target.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    logits.requires_grad_(True)
    loss = masked_dice_ce(logits, target, keep)
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[~keep] == 0) and logits.grad[keep].abs().sum() > 0
    # Anything at the ignored pixels, prediction or target, leaves the loss as it is.
    other_logits = torch.where(keep, logits.detach(), torch.full_like(logits, 9.0))
    other_target = torch.where(keep, target, 1 - target)
    assert torch.allclose(masked_dice_ce(other_logits, other_target, keep), loss.detach())
    # ... while the same change at kept pixels does not.
    assert not torch.allclose(masked_dice_ce(logits, 1 - target, keep), loss.detach())


class _Constant(torch.nn.Module):
    """A 'network' returning fixed logits (deep-supervision heads stacked on dim 1)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_the_module_leaves_a_batchs_ignored_pixels_out_of_the_loss():
    logits, target = _logits_and_target()
    heads = torch.stack([logits, logits.flip(-2)], dim=1)  # (B, 2 heads, 1, H, W)
    module = SegmenterModule(_Constant(heads), hflip_p=0.0)
    module.log = lambda *args, **kwargs: None
    mask = target[:, 0].long()
    ignore = torch.zeros_like(mask, dtype=torch.bool)
    ignore[:, :, :3] = True
    images = torch.zeros(3, 3, 8, 8)
    batch = {"image": images, "mask": mask, "ignore": ignore}
    loss = module.training_step(batch, 0)
    flipped = {**batch, "mask": torch.where(ignore, 1 - mask, mask)}
    assert torch.allclose(module.training_step(flipped, 0), loss)
    # Without `ignore` the batch is a pixel-labelled one: every pixel counts, as before.
    plain = module.training_step({"image": images, "mask": mask}, 0)
    flipped_plain = module.training_step({"image": images, "mask": flipped["mask"]}, 0)
    assert not torch.allclose(plain, flipped_plain)
    expected = (
        2 * DiceCELoss(sigmoid=True)(logits, target)
        + DiceCELoss(sigmoid=True)(logits.flip(-2), target)
    ) / 3
    assert torch.allclose(plain, expected, atol=1e-6)


def test_a_flip_moves_the_ignored_pixels_with_the_mask():
    module = SegmenterModule(_Constant(torch.zeros(1, 1, 2, 3)), hflip_p=1.0)
    images = torch.arange(6.0).view(1, 1, 2, 3)
    mask = torch.tensor([[[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]])
    keep = torch.tensor([[[[True, True, False], [True, False, False]]]])
    flipped_images, flipped_mask, flipped_keep = module._flip(images, mask, keep)
    assert torch.equal(flipped_images, images.flip(-1))
    assert torch.equal(flipped_mask, mask.flip(-1)) and torch.equal(flipped_keep, keep.flip(-1))

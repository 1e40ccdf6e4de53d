"""Fine-tuning augmentation: what each option does to a batch, and bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.models.augment import LEGENDRE_TERMS, BatchAugmentation, legendre_field
from src.models.backbones import build_backbone
from src.models.classifier import ClassifierModule


def _grey_batch(n: int = 6, size: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 1, size, size).repeat(1, 3, 1, 1)


def test_off_is_the_identity():
    images = _grey_batch()
    augment = BatchAugmentation()
    assert not augment.enabled and augment(images) is images


def test_flip_per_sample_and_grey_stays_grey():
    images = _grey_batch(32)
    torch.manual_seed(1)
    out = BatchAugmentation(hflip_p=0.5)(images)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < len(images)  # each sample draws its own coin
    assert torch.equal(BatchAugmentation(hflip_p=1.0)(images), images.flip(-1))
    jitter = BatchAugmentation(brightness=[0.5, 1.5], contrast=[0.5, 1.5], crop_scale=[0.5, 1])
    out = jitter(images)
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert not torch.equal(out, images)


def test_shading_darkens_negatives_only():
    images = _grey_batch(8, size=64) * 0.5 + 0.25
    labels = torch.tensor([[0.0], [1.0]] * 4)
    torch.manual_seed(2)
    out = BatchAugmentation(shade_negatives_p=1.0)(images, labels)
    positive = labels[:, 0] > 0.5
    assert torch.equal(out[positive], images[positive])
    ratio = out[~positive] / images[~positive]
    assert ratio.min() < 0.01 and ratio.max() > 0.99  # min-max scaled shading: 0 to 1
    assert torch.equal(out[~positive][:, 0], out[~positive][:, 1])  # grey stays grey
    # Smooth: neighbouring pixels differ by far less than the field's range.
    assert ratio[:, 0].diff(dim=-1).abs().max() < 0.15
    with pytest.raises(ValueError, match="labels"):
        BatchAugmentation(shade_negatives_p=1.0)(images)


def test_bias_field_is_smooth_multiplicative_and_grey():
    images = torch.full((4, 3, 64, 64), 0.4)
    torch.manual_seed(0)
    np.random.seed(0)
    out = BatchAugmentation(bias_field=[-0.3, 0.3], bias_field_p=1.0)(images)
    assert type(out) is torch.Tensor  # not MONAI's MetaTensor
    ratio = out / images
    assert ratio.max() - ratio.min() > 0.2
    assert torch.equal(out[:, 0], out[:, 2])
    assert ratio.diff(dim=-1).abs().max() < 0.1 * (ratio.max() - ratio.min())


def test_bias_field_is_monais_legendre_field():
    """The vectorised field is exp of MONAI's degree-3 Legendre field for the same
    coefficients (MONAI's own generator, called with them)."""
    from monai.transforms import RandBiasField

    coefficients = torch.linspace(-0.3, 0.3, LEGENDRE_TERMS)[None].repeat(2, 1)
    coefficients[1] *= -1
    images = torch.ones(2, 3, 20, 28)
    ours = legendre_field(images, coefficients)[:, 0]
    monai = RandBiasField(degree=3)._generate_random_field
    for sample, coeff in zip(ours, coefficients, strict=True):
        expected = np.exp(monai(spatial_shape=(20, 28), degree=3, coeff=coeff.tolist()))
        np.testing.assert_allclose(sample.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"hflip_p": 1.5}, "hflip_p"),
        ({"crop_scale": [0.8, 0.2]}, "crop_scale"),
        ({"crop_scale": [0.5, 1.2]}, "crop_scale"),
        ({"brightness": [1.0]}, "brightness"),
        ({"contrast": [-1, 1]}, "contrast"),
        ({"bias_field": [0.5, 0.1]}, "bias_field"),
        ({"bias_field_p": 2}, "bias_field_p"),
        ({"shade_negatives_p": -0.1}, "shade_negatives_p"),
    ],
)
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ValueError, match=f"augment.{field}"):
        BatchAugmentation(**options)


def test_classifier_augments_training_batches_only(monkeypatch):
    module = ClassifierModule(
        build_backbone("resnet18", 1, norm="instance", input_norm="identity"),
        augment={"hflip_p": 1.0, "crop_scale": None},
    )
    assert module.hparams.augment == {
        "hflip_p": 1.0,
        "crop_scale": None,
        "brightness": None,
        "contrast": None,
        "bias_field": None,
        "bias_field_p": 0.5,
        "shade_negatives_p": 0.0,
    }
    seen = []
    monkeypatch.setattr(module, "forward", lambda x: seen.append(x) or x.mean((1, 2, 3))[:, None])
    images = _grey_batch(2)
    batch = {"image": images, "label": torch.ones(2, 1)}
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    module.training_step(batch, 0)
    module.validation_step(batch, 0)
    assert torch.equal(seen[0], images.flip(-1)) and torch.equal(seen[1], images)

"""Fine-tuning augmentation: flips, random resized crops and intensity jitter per sample.

A classifier fine-tuned on a few dozen cases memorises them: it scores the training cases
right and new ones timidly. Cfd-CAM multiplies its map by that score (a map of a slice scored
0.4 never reaches DenseCRF's 0.5), so how well the score carries over to unseen cases sets
the masks. Every option off is the plain, unaugmented fine-tuning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


def _pair(values: Sequence[float] | None, name: str, low: float, high: float) -> tuple | None:
    if values is None:
        return None
    pair = tuple(float(v) for v in values)
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ValueError(
            f"finetune.module.augment.{name} must be [a, b] with {low} <= a <= b <= {high}, "
            f"got {list(values)}"
        )
    return pair


def _probability(value: float, name: str) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"finetune.module.augment.{name} must be in [0, 1], got {value}")
    return float(value)


class BatchAugmentation:
    """Per-sample random transforms of an image batch (B, C, H, W) in [0, 1].

    ``hflip_p``: probability of a left-right flip (the brain's halves are alike, a tumour
    may sit in either). ``crop_scale``: RandomResizedCrop area range back to the input size
    (None = no crop). ``brightness`` / ``contrast``: ColorJitter factor ranges (None = none);
    on a grey image repeated to 3 channels both keep it grey. ``bias_field``: coefficient
    range of MONAI's ``RandBiasField`` (a smooth multiplicative field, exp of a degree-3
    Legendre polynomial, the same on every channel), applied with probability
    ``bias_field_p``. MRI has such fields; a classifier that has never seen strong ones may
    take any smooth darkening of the brain, like the masks Cfd-CAM and Score-CAM multiply the
    image with, for a hyperintense lesion, and then scores every masked image alike.
    ``shade_negatives_p``: probability that a negative image (all labels 0) is multiplied by
    a random smooth shading in [0, 1] (a k x k uniform grid, k in 2..6, upsampled bilinearly
    and min-max scaled). Shading a healthy slice cannot create a lesion, so the label stays
    right; positives are left alone, since a shading can hide their lesion. It teaches the
    classifier that a darkened healthy brain is still healthy, which is what a perturbation
    CAM (Score-CAM, Cfd-CAM) asks of it when it scores the image under each channel's mask.
    """

    def __init__(
        self,
        hflip_p: float = 0.0,
        crop_scale: Sequence[float] | None = None,
        brightness: Sequence[float] | None = None,
        contrast: Sequence[float] | None = None,
        bias_field: Sequence[float] | None = None,
        bias_field_p: float = 0.5,
        shade_negatives_p: float = 0.0,
    ) -> None:
        self.hflip_p = _probability(hflip_p, "hflip_p")
        self.crop_scale = _pair(crop_scale, "crop_scale", 0.0, 1.0)
        self.brightness = _pair(brightness, "brightness", 0.0, float("inf"))
        self.contrast = _pair(contrast, "contrast", 0.0, float("inf"))
        self.bias_field = _pair(bias_field, "bias_field", -float("inf"), float("inf"))
        self.bias_field_p = _probability(bias_field_p, "bias_field_p")
        self.shade_negatives_p = _probability(shade_negatives_p, "shade_negatives_p")
        steps: list = []
        if self.hflip_p:
            steps.append(v2.RandomHorizontalFlip(self.hflip_p))
        if self.brightness or self.contrast:
            steps.append(v2.ColorJitter(brightness=self.brightness, contrast=self.contrast))
        if self.bias_field is not None and self.bias_field_p > 0:
            from monai.transforms import RandBiasField

            field = RandBiasField(coeff_range=self.bias_field, prob=self.bias_field_p)
            # MONAI's transforms share one class-level generator unless given their own, so the
            # field would depend on every MONAI transform run before; seeding it from torch's
            # generator makes it follow the run's seed (seed_everything) instead.
            field.set_random_state(seed=int(torch.randint(2**31 - 1, ())))
            steps.append(lambda image: field(image).as_tensor().to(image.dtype))
        self._steps = v2.Compose(steps) if steps else None

    def settings(self) -> dict[str, float | list[float] | None]:
        """The validated options as plain Python values (for checkpoints and configs)."""
        pairs = {"crop_scale": self.crop_scale, "brightness": self.brightness}
        pairs.update(contrast=self.contrast, bias_field=self.bias_field)
        plain = {k: v and list(v) for k, v in pairs.items()}
        return {
            "hflip_p": self.hflip_p,
            **plain,
            "bias_field_p": self.bias_field_p,
            "shade_negatives_p": self.shade_negatives_p,
        }

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is configured (otherwise batches pass unchanged)."""
        return self._steps is not None or self.crop_scale is not None or self.shade_negatives_p > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Augmented copy of ``images``; ``labels`` (B, K) are needed for the shading only."""
        if not self.enabled:
            return images
        crop = None
        if self.crop_scale is not None:
            crop = v2.RandomResizedCrop(tuple(images.shape[-2:]), self.crop_scale, antialias=True)
        out = []
        for image in images:
            if crop is not None:
                image = crop(image)
            if self._steps is not None:
                image = self._steps(image)
            out.append(image)
        augmented = torch.stack(out)
        if self.shade_negatives_p > 0:
            if labels is None:
                raise ValueError("shade_negatives_p needs the batch labels")
            augmented = self._shade_negatives(augmented, labels)
        return augmented.clamp_(0, 1)

    def _shade_negatives(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        negative = labels.reshape(len(labels), -1).amax(1) <= 0.5
        chosen = negative & (torch.rand(len(images)) < self.shade_negatives_p)
        for i in torch.nonzero(chosen).flatten().tolist():
            k = int(torch.randint(2, 7, ()))
            grid = torch.rand(1, 1, k, k)
            field = F.interpolate(grid, size=images.shape[-2:], mode="bilinear")[0, 0]
            low, high = field.min(), field.max()
            images[i] = images[i] * ((field - low) / (high - low)).to(images.dtype)
        return images

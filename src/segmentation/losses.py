"""The segmenter's Dice + cross-entropy with pixels left out (pseudo-masks' ignore region).

MONAI's `DiceCELoss(sigmoid=True)` has no ignore label. `masked_dice_ce` is the same loss on
the pixels that count only: the per-image soft Dice (MONAI's default smoothing, 1e-5) and
the mean binary cross-entropy over the kept pixels. With every pixel kept it equals
`DiceCELoss(sigmoid=True)` (a test checks it); an ignored pixel gets no gradient at all, so
what the network predicts there is left to what it learnt on the confident pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: MONAI's DiceLoss defaults (`smooth_nr`, `smooth_dr`).
SMOOTH = 1e-5


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Dice + binary cross-entropy of `logits` (B, 1, H, W) against 0/1 `target` on the
    pixels where `keep` (B, 1, H, W, boolean) is set; images with no kept pixel add nothing
    to the cross-entropy and a Dice loss of 0."""
    keep = keep.to(logits.dtype)
    probs = torch.sigmoid(logits) * keep
    target = target.to(logits.dtype) * keep
    dims = tuple(range(2, logits.dim()))
    overlap = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    dice = 1 - (2 * overlap + SMOOTH) / (total + SMOOTH)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    ce = (bce * keep).sum() / keep.sum().clamp_min(1)
    return dice.mean() + ce

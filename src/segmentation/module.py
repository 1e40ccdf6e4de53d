"""Supervised training of the U-Net on pixel masks: the ceiling the CAM methods are compared to.

Binary tasks only (tumour / defect vs background): one output channel, a sigmoid, MONAI's
Dice + cross-entropy loss. Validation Dice per image follows the evaluation's empty-case
convention (both empty = 1), so the checkpoint kept on `val/dice` is chosen by the number the
tables report (docs/supervised.md).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from monai.losses import DiceCELoss
from torch import nn
from torchmetrics import MeanMetric

from src.models.schedules import adam_with_cosine
from src.segmentation.losses import masked_dice_ce


def foreground(masks: torch.Tensor) -> torch.Tensor:
    """(B, H, W) integer masks -> (B, 1, H, W) float 0/1 targets (every label > 0 is object)."""
    return (masks > 0).unsqueeze(1).float()


def per_image_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of each image's binary prediction; 1 where both prediction and target are empty."""
    pred, target = pred.flatten(1).float(), target.flatten(1).float()
    overlap = (pred * target).sum(1)
    total = pred.sum(1) + target.sum(1)
    return torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total))


class SegmenterModule(pl.LightningModule):
    """Trains `net` (images (B, 3, H, W) in [0, 1] -> logits (B, 1, H, W)) on `batch["mask"]`.

    With deep supervision the network returns, in training mode, its full-resolution output
    and the auxiliary ones stacked on dim 1; they are weighted 1, 1/2, 1/4, ... and the
    weights normalised, as nnU-Net does. `hflip_p`: probability of flipping an image and its
    mask left-right together. Logs `train/loss`, `val/loss` and `val/dice` (threshold 0.5).

    A training batch may carry `ignore` (B, H, W, boolean): pixels whose target is unknown
    (the ignore region of self-training's pseudo-masks, docs/selftrain.md), left out of the
    loss (`masked_dice_ce`). Pixel labels never carry it: the supervised loss is unchanged.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        min_lr: float = 1e-5,
        max_epochs: int = 50,
        hflip_p: float = 0.5,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0 <= hflip_p <= 1:
            raise ValueError(f"segmenter.module.hflip_p must be in [0, 1], got {hflip_p}")
        if not 0 < threshold < 1:
            raise ValueError(f"segmenter.module.threshold must be in (0, 1), got {threshold}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.loss = DiceCELoss(sigmoid=True)
        self.val_dice = MeanMetric()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Foreground logits of the wrapped U-Net (deep-supervision heads while training)."""
        return self.net(images)

    def _flip(self, images: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Flip left-right, with probability `hflip_p` per image, the images and the
        (B, 1, H, W) `targets` that go with them (mask, ignored pixels) together."""
        chosen = torch.rand(images.shape[0], device=images.device) < self.hparams.hflip_p
        pick = chosen.view(-1, 1, 1, 1)
        return tuple(torch.where(pick, t.flip(-1), t) for t in (images, *targets))

    def _head_loss(
        self, logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None
    ) -> torch.Tensor:
        return self.loss(logits, target) if keep is None else masked_dice_ce(logits, target, keep)

    def _supervised_loss(
        self, outputs: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        if outputs.dim() == target.dim():  # one output
            return self._head_loss(outputs, target, keep)
        heads = outputs.unbind(1)
        weights = torch.tensor([0.5**i for i in range(len(heads))])
        weights = weights / weights.sum()
        return sum(
            w * self._head_loss(head, target, keep) for w, head in zip(weights, heads, strict=True)
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Dice + cross-entropy on the (randomly flipped) batch, logged as ``train/loss``;
        the batch's `ignore` pixels, if it has any, left out."""
        images, target = batch["image"], foreground(batch["mask"])
        ignore = batch.get("ignore")
        keep = None if ignore is None else ~ignore.bool().unsqueeze(1)
        if self.hparams.hflip_p:
            if keep is None:
                images, target = self._flip(images, target)
            else:
                images, target, keep = self._flip(images, target, keep)
        loss = self._supervised_loss(self(images), target, keep)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True,
            batch_size=images.shape[0],
        )  # fmt: skip
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Log ``val/loss`` and accumulate the per-image Dice ``val/dice`` (the monitor)."""
        images, target = batch["image"], foreground(batch["mask"])
        logits = self(images)
        size = images.shape[0]
        self.log("val/loss", self.loss(logits, target), sync_dist=True, batch_size=size)
        pred = torch.sigmoid(logits) > self.hparams.threshold
        self.val_dice.update(per_image_dice(pred, target))
        # The metric object gathers its own state across processes.
        self.log("val/dice", self.val_dice, on_epoch=True, prog_bar=True, batch_size=size)

    def configure_optimizers(self):
        """Adam with cosine annealing, as the classifier (``schedules.adam_with_cosine``)."""
        hp = self.hparams
        return adam_with_cosine(self.parameters(), hp.lr, hp.weight_decay, hp.max_epochs, hp.min_lr)

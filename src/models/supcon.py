"""Supervised contrastive pre-training of the encoder (docs/training.md; Khosla et al. 2020).

Defaults are the Cfd-CAM authors': two augmented views per image, temperature 0.07,
projection head 512 -> 512 (no bias) -> ReLU -> 256, projections NOT L2-normalised
(``normalize`` option), SGD lr 1e-3 wd 1e-5 without momentum, constant lr for 10 epochs then
cosine, 100 epochs.

Multi-label batches (VOC, ``label`` of shape (B, 20)): two images are positives of each other
iff their label vectors are identical (label-set identity). For a binary (B, 1) label this is
ordinary SupCon; for multi-hot labels it never mixes images whose class sets differ.

Under DDP the projections and labels of all processes are gathered before the loss (the
reference implementation computes it per device): every anchor has the negatives and positives
of the whole global batch, and loss and parameter gradients equal those of one process on the
concatenated batch (``src.models.distributed.gather_batches``). The contrastive batch is thus
``pretrain.batch_size`` x the number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from src.models.augment import (
    coin,
    color_jitter_,
    crop_boxes,
    grey_batch,
    is_grey,
    jitter_ranges,
    one_channel,
    resample,
    three_channels,
    to_grayscale_,
)
from src.models.distributed import gather_batches
from src.models.schedules import constant_then_cosine


class SupConLoss(nn.Module):
    """SupCon loss, L_out form: mean over positives of -log softmax, scaled by T / T_base.

    ``forward(features, labels)``: ``features`` (B, V, D) holds V views of B samples;
    ``labels`` (B,) class ids or (B, K) label vectors (positives = identical rows), or None for
    the unsupervised SimCLR case (positives = the other views of the same sample).
    """

    def __init__(
        self, temperature: float = 0.07, base_temperature: float = 0.07, normalize: bool = False
    ) -> None:
        super().__init__()
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError("SupConLoss temperatures must be > 0")
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.normalize = normalize

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar loss of ``features`` and ``labels`` (shapes: class docstring)."""
        if features.dim() != 3:
            raise ValueError(f"features must be (batch, views, dim), got {tuple(features.shape)}")
        batch, views, _ = features.shape
        if self.normalize:
            features = F.normalize(features, dim=-1)
        if labels is None:
            same = torch.eye(batch, dtype=torch.bool, device=features.device)
        else:
            if labels.shape[0] != batch:
                raise ValueError(f"{labels.shape[0]} labels for {batch} samples")
            rows = labels.reshape(batch, -1)
            same = (rows[:, None, :] == rows[None, :, :]).all(dim=-1)
        # Anchors and contrasts are all views, view-major: index = view * batch + sample.
        flat = features.transpose(0, 1).reshape(views * batch, -1)
        logits = flat @ flat.T / self.temperature  # logsumexp below keeps large logits stable
        not_self = ~torch.eye(views * batch, dtype=torch.bool, device=features.device)
        positives = same.repeat(views, views) & not_self
        log_denominator = torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1)
        log_prob = logits - log_denominator[:, None]
        mean_log_prob_pos = (log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)
        return -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()


def _as_floats(values: Sequence[float], n: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != n:
        raise ValueError(f"pretrain.module.{name} needs {n} numbers, got {list(values)}")
    return values


class SupConModule(pl.LightningModule):
    """Lightning module for SupCon pre-training of ``encoder``.

    ``encoder``: a backbone from ``build_backbone`` (its final linear layer, if any, is replaced
    by ``nn.Identity``); stored as ``self.encoder`` so checkpoint keys read
    ``encoder.<torchvision names>`` and ``load_encoder_weights`` finds them.
    Batches are dicts with ``image`` (B, 3, H, W) in [0, 1] and ``label`` (B, 1) or (B, K).
    ``image_size``: RandomResizedCrop output size (int or (H, W)); None = the batch's own size.
    """

    def __init__(
        self,
        encoder: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        temperature: float = 0.07,
        base_temperature: float = 0.07,
        normalize: bool = False,
        warm_epochs: int = 10,
        max_epochs: int = 100,
        min_lr: float = 0.0,
        proj_dim: int = 256,
        image_size: int | Sequence[int] | None = None,
        crop_scale: Sequence[float] = (0.08, 1.0),
        color_jitter: Sequence[float] = (0.8, 0.8, 0.8, 0.2),
        color_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        # Plain Python values in the checkpoint (Hydra hands over ListConfig), so that it loads
        # with torch.load(weights_only=True).
        crop_scale = _as_floats(crop_scale, 2, "crop_scale")
        color_jitter = _as_floats(color_jitter, 4, "color_jitter")
        if image_size is not None and not isinstance(image_size, int):
            image_size = tuple(int(v) for v in image_size)
        self.hparams.update(crop_scale=crop_scale, color_jitter=color_jitter, image_size=image_size)
        if not hasattr(encoder, "feature_dim"):
            raise TypeError("SupConModule needs an encoder from build_backbone (no feature_dim)")
        if getattr(encoder, "has_head", False):
            encoder.remove_head()
        self.encoder = encoder
        dim = encoder.feature_dim
        self.head = nn.Sequential(
            nn.Linear(dim, dim, bias=False), nn.ReLU(inplace=True), nn.Linear(dim, proj_dim)
        )
        self.criterion = SupConLoss(temperature, base_temperature, normalize)
        self._crop_scale = crop_scale
        self._jitter = jitter_ranges(color_jitter)
        self._jitter_p = color_jitter_p
        self._grayscale_p = grayscale_p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Projections (B, proj_dim) of images (B, 3, H, W) in [0, 1]."""
        return self.head(self.encoder(images))

    def make_view(self, images: torch.Tensor) -> torch.Tensor:
        """One augmented view of the batch, every sample with its own random parameters:
        RandomResizedCrop, horizontal flip (p = 0.5), ColorJitter (p = ``color_jitter_p``),
        RandomGrayscale (p = ``grayscale_p``), batched (``src.models.augment``). Grey images
        (MRI repeated to RGB) skip saturation and hue, which cannot change them; a batch of
        grey images on the CPU is augmented as one channel and comes back as that channel
        expanded to three (``src.models.augment.grey_batch``)."""
        size = self.hparams.image_size or tuple(images.shape[-2:])
        if isinstance(size, int):
            size = (size, size)
        grey = is_grey(images)
        single = grey_batch(images, grey)
        source = one_channel(images) if single else images
        flip = coin(images, 0.5)
        view = resample(source, crop_boxes(images, self._crop_scale), size, flip)
        color_jitter_(view, self._jitter, coin(images, self._jitter_p), ~grey)
        to_grayscale_(view, coin(images, self._grayscale_p))
        return three_channels(view) if single else view

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Two augmented views per image, the SupCon loss over every process's batch."""
        images, labels = batch["image"], batch["label"]
        views = torch.cat([self.make_view(images), self.make_view(images)])
        projections = self(views)
        features = torch.stack(projections.chunk(2), dim=1)  # (B, 2, D)
        loss, global_batch = self.contrastive_loss(features, labels)
        self.log(
            "pretrain/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=global_batch,
        )
        return loss

    def contrastive_loss(
        self, features: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, int]:
        """SupCon loss of this process's ``features`` (B, V, D) and ``labels`` against the
        batches of every process (gathered; see the module docstring), and the number of
        samples it covers. The same value on every process."""
        features = gather_batches(features)
        if labels is not None:
            labels = gather_batches(labels)
        return self.criterion(features, labels), features.shape[0]

    def configure_optimizers(self):
        """SGD with a constant then cosine learning rate (``schedules``)."""
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=0.0, weight_decay=hp.weight_decay
        )
        schedule = constant_then_cosine(optimizer, hp.warm_epochs, hp.max_epochs, hp.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

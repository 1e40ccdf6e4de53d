"""Fine-tuning of the image classifier (docs/training.md).

The whole network is trained with Adam (lr 1e-4, wd 1e-5), cosine annealing to 5e-6 over
``max_epochs`` (10), and BCE-with-logits: one logit for the binary MRI/KSDD2 task, 20 logits for
VOC's multi-label task. ``val/auc`` (binary AUROC, or macro AUROC over the labels) is the
quantity to keep the best checkpoint on (mode max).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    MultilabelAccuracy,
    MultilabelAUROC,
)

from src.models.augment import BatchAugmentation
from src.models.checkpoints import load_by_name, read_state_dict
from src.models.schedules import adam_with_cosine
from src.validation import check_choice

TASKS = ("binary", "multilabel")
ENCODER_PREFIX = "encoder."


def load_encoder_weights(net: nn.Module, checkpoint_path: str | Path) -> None:
    """Load pretrained encoder weights into the classifier ``net`` by parameter name.

    ``checkpoint_path``: a SupConModule Lightning checkpoint (keys ``encoder.*``; the projection
    head is left out) or a plain state_dict of the encoder. Every encoder parameter and buffer
    of ``net`` must be found with its shape, and nothing else may be left over; the final
    linear layer keeps its own initialisation. Errors name the file and the first keys.
    """
    state = read_state_dict(checkpoint_path, prefix=ENCODER_PREFIX)
    head_keys = net.head_state_keys() if hasattr(net, "head_state_keys") else set()
    load_by_name(net, state, source=str(checkpoint_path), skip=head_keys)


class ClassifierModule(pl.LightningModule):
    """Lightning module that fine-tunes ``net`` (images in [0, 1] -> logits (B, num_classes)).

    Batches are dicts with ``image`` (B, 3, H, W) and ``label`` (B, num_classes) float 0/1.
    ``task``: ``binary`` (num_classes = 1) or ``multilabel`` (num_classes = K >= 2).
    ``augment``: keyword arguments of :class:`BatchAugmentation` for the training batches
    (None = none). Logs ``train/loss``, ``val/loss``, ``val/acc`` (threshold 0.5 on the sigmoid) and
    ``val/auc``.
    """

    def __init__(
        self,
        net: nn.Module,
        task: str = "binary",
        num_classes: int = 1,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        min_lr: float = 5e-6,
        max_epochs: int = 10,
        augment: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_choice("finetune.module.task", task, TASKS)
        if task == "binary" and num_classes != 1:
            raise ValueError(f"task binary needs num_classes=1 (one logit), got {num_classes}")
        if task == "multilabel" and num_classes < 2:
            raise ValueError(f"task multilabel needs num_classes >= 2, got {num_classes}")
        self.augment = BatchAugmentation(**(augment or {}))
        self.save_hyperparameters(ignore=["net"])
        # Plain Python values in the checkpoint (Hydra hands over DictConfig), so that it
        # loads with torch.load(weights_only=True).
        self.hparams.update(augment=self.augment.settings())
        self.net = net
        if task == "binary":
            self.val_acc, self.val_auc = BinaryAccuracy(), BinaryAUROC()
        else:
            self.val_acc = MultilabelAccuracy(num_labels=num_classes, average="macro")
            self.val_auc = MultilabelAUROC(num_labels=num_classes, average="macro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of the wrapped network."""
        return self.net(images)

    def _step(
        self, batch: dict, augment: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = batch["image"]
        if augment:
            images = self.augment(images, batch["label"])
        logits = self(images)
        labels = batch["label"].to(logits.dtype)
        if logits.shape != labels.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ: "
                f"check backbone num_classes against the data's labels"
            )
        return logits, labels, F.binary_cross_entropy_with_logits(logits, labels)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """BCE-with-logits on the augmented batch, logged as ``train/loss``."""
        _, labels, loss = self._step(batch, augment=True)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=labels.shape[0],
        )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Accumulate ``val/loss``, ``val/acc`` and ``val/auc`` (the checkpoint monitor)."""
        logits, labels, loss = self._step(batch)
        probs, targets = torch.sigmoid(logits), labels.long()
        if self.hparams.task == "binary":
            probs, targets = probs.squeeze(1), targets.squeeze(1)
        self.val_acc.update(probs, targets)
        self.val_auc.update(probs, targets)
        size = labels.shape[0]
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=size)
        # Metric objects gather their own state across processes.
        self.log("val/acc", self.val_acc, on_epoch=True, batch_size=size)
        self.log("val/auc", self.val_auc, on_epoch=True, prog_bar=True, batch_size=size)

    def configure_optimizers(self):
        """Adam with cosine annealing (``schedules.adam_with_cosine``)."""
        hp = self.hparams
        return adam_with_cosine(self.parameters(), hp.lr, hp.weight_decay, hp.max_epochs, hp.min_lr)

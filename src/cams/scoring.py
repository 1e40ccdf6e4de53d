"""Targets and scores of a classifier's logits (docs/cfdcam.md, docs/gradient-cams.md).

A model returns logits (B, K). K = 1 is a binary classifier with a sigmoid: its only class
id is 0 (the positive class). Target score for gradient CAMs and Score-CAM ``pgc`` = the
target logit; confidence (Cfd-CAM, Score-CAM ``official``) = sigmoid of the logit for
K = 1, the softmax probability of the target class for K >= 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TargetSpec = torch.Tensor | Sequence[int] | int | None


def as_target_tensor(targets: TargetSpec, batch: int, device: torch.device) -> torch.Tensor | None:
    """Class ids as a (B,) long tensor on ``device`` (None stays None)."""
    if targets is None:
        return None
    if isinstance(targets, int) and not isinstance(targets, bool):
        return torch.full((batch,), targets, dtype=torch.long, device=device)
    tensor = torch.as_tensor(targets, device=device)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise TypeError(f"targets must be integer class ids, got dtype {tensor.dtype}")
    tensor = tensor.long().reshape(-1)
    if tensor.numel() != batch:
        raise ValueError(f"targets has {tensor.numel()} entries for a batch of {batch} images")
    return tensor


def check_logits(logits: object, batch: int) -> torch.Tensor:
    """The model output must be logits of shape (B, K)."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(f"the model must return logits of shape (B={batch}, K), got {shape}")
    return logits


def resolve_targets(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """None -> positive class (K = 1) or predicted class; given ids are range-checked."""
    num_classes = logits.shape[1]
    if targets is None:
        if num_classes == 1:
            return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return logits.detach().argmax(dim=1)
    if bool(((targets < 0) | (targets >= num_classes)).any()):
        hint = " (K=1: a binary sigmoid head, its only class id is 0)" if num_classes == 1 else ""
        raise ValueError(
            f"targets must be class ids in [0, {num_classes}){hint}, got {targets.tolist()}"
        )
    return targets


def target_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) logit of each sample's target class."""
    return logits.gather(1, targets[:, None])[:, 0]


def target_confidence(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) sigmoid (K = 1) or softmax probability (K >= 2) of each sample's target class."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return logits.softmax(dim=1).gather(1, targets[:, None])[:, 0]


SCORES = {"logit": target_logits, "confidence": target_confidence}

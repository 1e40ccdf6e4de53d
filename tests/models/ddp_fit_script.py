"""Two-process DDP fits of SupConModule and ClassifierModule on CPU (gloo).

Run by tests/models/test_training_runs.py as ``python ddp_fit_script.py OUT.json``: Lightning's
DDP launcher re-executes this script for rank 1, which it could not do from inside pytest.
Rank 0 writes a JSON summary: step counts, the largest parameter difference between the ranks
(DDP keeps them equal), and the logged ``val/auc`` next to the AUC over the whole validation
set computed in one process.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from src.models.backbones import build_backbone
from src.models.classifier import ClassifierModule
from src.models.supcon import SupConModule
from tests.helpers.trainer import quiet_trainer_kwargs


def tiny_set(seed: int, n: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    images = 0.5 * torch.rand(n, 3, 64, 64, generator=g)
    # Interleaved labels: DistributedSampler gives each rank one class only, so a val/auc that
    # was not gathered across ranks could not equal the AUC over the whole set.
    labels = (torch.arange(n) % 2).float()[:, None]
    images[labels[:, 0] == 1, :, 16:48, 16:48] += 0.5
    return [{"image": images[i], "label": labels[i]} for i in range(n)]


def pairwise_auc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    pos, neg = scores[targets == 1], scores[targets == 0]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    return wins.mean().item()


def fit(module: pl.LightningModule, with_validation: bool) -> tuple[pl.Trainer, dict]:
    trainer = pl.Trainer(
        **quiet_trainer_kwargs(
            strategy="ddp",
            devices=2,
            max_epochs=2,
            limit_val_batches=1.0 if with_validation else 0,
        )
    )
    val = DataLoader(tiny_set(1), batch_size=2) if with_validation else None
    trainer.fit(module, DataLoader(tiny_set(0), batch_size=2), val)
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    copies = [torch.zeros_like(flat) for _ in range(trainer.world_size)]
    dist.all_gather(copies, flat)
    losses = [v for k, v in trainer.callback_metrics.items() if k.endswith("loss")]
    summary = {
        "global_step": trainer.global_step,
        "max_param_difference_between_ranks": max((c - flat).abs().max().item() for c in copies),
        "loss_is_finite": bool(losses) and all(math.isfinite(v.item()) for v in losses),
    }
    return trainer, summary


def main(out: Path) -> None:
    pl.seed_everything(0)
    _, supcon = fit(SupConModule(build_backbone("resnet18", 0), warm_epochs=1, max_epochs=2), False)
    classifier = ClassifierModule(build_backbone("resnet18", 1), max_epochs=2)
    trainer, finetune = fit(classifier, True)
    if trainer.global_rank != 0:
        return
    classifier.eval()
    val = tiny_set(1)
    with torch.no_grad():
        scores = torch.sigmoid(classifier(torch.stack([v["image"] for v in val]))).flatten()
    finetune["logged_auc"] = trainer.callback_metrics["val/auc"].item()
    finetune["auc_on_full_val_set"] = pairwise_auc(scores, torch.cat([v["label"] for v in val]))
    result = {"world_size": trainer.world_size, "supcon": supcon, "finetune": finetune}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

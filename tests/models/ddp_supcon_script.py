"""SupCon loss under 2-process DDP (gloo, CPU) against one process on the whole batch.

Run by tests/models/test_supcon.py as ``python ddp_supcon_script.py OUT_DIR``; it spawns two
processes (a test function cannot be pickled for them from inside pytest). The shards are
uneven (4 and 3 samples) and positives and negatives cross them. Each rank writes
``rank<r>.json``: the gathered loss and the one-process loss on the concatenated batch, the
gradient on its own projections, and the DDP-averaged gradient of the projection head, each
next to the one-process value.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from src.models.backbones import build_backbone
from src.models.supcon import SupConModule

WORLD = 2
SHARDS = [(0, 4), (4, 7)]  # uneven on purpose
LABELS = torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0], [0.0], [1.0]])


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def worker(rank: int, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{out / 'rendezvous'}", rank=rank, world_size=WORLD
    )
    torch.manual_seed(0)  # same head and inputs on both ranks
    module = SupConModule(build_backbone("resnet18", 0))
    reference_head = copy.deepcopy(module.head)
    # Encoder outputs of 7 samples x 2 views, as the head sees them.
    embeddings = torch.randn(len(LABELS), 2, module.encoder.feature_dim)
    lo, hi = SHARDS[rank]

    head = DistributedDataParallel(module.head)
    local = head(embeddings[lo:hi].flatten(0, 1)).unflatten(0, (hi - lo, 2))
    local.retain_grad()
    loss, covered = module.contrastive_loss(local, LABELS[lo:hi])
    loss.backward()

    full = reference_head(embeddings.flatten(0, 1)).unflatten(0, (len(LABELS), 2))
    full.retain_grad()
    reference = module.criterion(full, LABELS)
    reference.backward()

    head_grads = dict(module.head.named_parameters())
    result = {
        "covered": covered,
        "loss": loss.item(),
        "reference_loss": reference.item(),
        "local_only_loss": module.criterion(local.detach(), LABELS[lo:hi]).item(),
        "feature_grad_difference": _max_difference(local.grad / WORLD, full.grad[lo:hi]),
        "feature_grad_scale": full.grad[lo:hi].abs().max().item(),
        "head_grad_difference": max(
            _max_difference(head_grads[name].grad, p.grad)
            for name, p in reference_head.named_parameters()
        ),
        "head_grad_scale": max(p.grad.abs().max().item() for p in reference_head.parameters()),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(out_dir,), nprocs=WORLD)

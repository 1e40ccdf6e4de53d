"""Batches of all processes in one tensor, for losses whose samples interact (SupCon).

Under DDP each process only sees its own shard of a batch. A loss that compares samples with
each other (contrastive negatives) must see the whole batch to equal the one-process loss, so
the shards are gathered, with gradients flowing back to the process that owns each part.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn


def world_size() -> int:
    """Number of processes in the default group (1 when torch.distributed is not running)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_batches(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order; itself alone when
    not distributed.

    Shards may differ in length (a last, shorter batch): lengths are exchanged first and the
    shards padded to the longest for the collective, then trimmed.

    Gradients: the backward of the gather sums, over processes, the gradient each one's loss
    sends to this process's rows. When every process computes the same loss L on the gathered
    batch, the local rows receive ``world_size * dL/dx``; DDP then averages parameter
    gradients over processes (divides by ``world_size``), so the update equals the
    one-process update on the whole batch.
    """
    if world_size() == 1:
        return tensor
    length = torch.tensor([tensor.shape[0]], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(world_size())]
    dist.all_gather(lengths, length)
    counts = [int(n) for n in lengths]
    padding = tensor.new_zeros((max(counts) - tensor.shape[0], *tensor.shape[1:]))
    shards = dist_nn.all_gather(torch.cat([tensor, padding]))
    return torch.cat([shard[:count] for shard, count in zip(shards, counts, strict=True)])

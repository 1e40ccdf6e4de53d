"""Channels-last max-pooling on CPU, as hooks that live only inside a ``with`` block.

PyTorch's CPU max-pool kernel for contiguous (NCHW) tensors is an order of magnitude slower
than its channels-last kernel (benchmarks/results.md), enough to matter in a whole
ResNet-18 forward; VGG has five such pools. Max-pooling is exact in either layout, so the CAM forwards run every ``MaxPool2d`` of
the model on a channels-last copy of its input and hand a contiguous output on: maps and
gradients are bit-identical, only faster. GPU tensors and already channels-last inputs are
left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class _ChannelsLastPool:
    """The pre-hook and hook of one ``MaxPool2d``: the output is made contiguous again only
    when the pre-hook converted the input (a nested call stack, for re-entrant models)."""

    def __init__(self) -> None:
        self.converted: list[bool] = []

    def before(self, module: nn.Module, inputs: tuple) -> tuple | None:
        x = inputs[0] if inputs else None
        convert = (
            isinstance(x, torch.Tensor)
            and x.device.type == "cpu"
            and x.ndim == 4
            and not x.is_contiguous(memory_format=torch.channels_last)
        )
        self.converted.append(convert)
        if not convert:
            return None
        return (x.contiguous(memory_format=torch.channels_last), *inputs[1:])

    def after(self, module: nn.Module, inputs: tuple, output: object) -> object:
        if not self.converted.pop():
            return None
        if isinstance(output, tuple):  # return_indices=True: (values, indices)
            return tuple(t.contiguous() if isinstance(t, torch.Tensor) else t for t in output)
        return output.contiguous() if isinstance(output, torch.Tensor) else None


@contextmanager
def channels_last_pooling(model: nn.Module) -> Iterator[None]:
    """Run ``model``'s ``MaxPool2d`` layers channels-last on CPU inside the block."""
    handles = []
    try:
        for module in model.modules():
            if isinstance(module, nn.MaxPool2d):
                pool = _ChannelsLastPool()
                handles.append(module.register_forward_pre_hook(pool.before))
                handles.append(module.register_forward_hook(pool.after))
        yield
    finally:
        for handle in handles:
            handle.remove()

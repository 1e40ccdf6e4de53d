"""Fold eval-mode BatchNorm into the convolution before it, for gradient CAMs.

In eval mode ``bn(conv(x))`` is one convolution with scaled weights and a shifted bias.
Folding removes every BatchNorm from the forward and from the backward of a gradient CAM
(ResNet-18: 20 of them, ~6 % of a 4-stage Grad-CAM on CPU). Activations and gradients at
the target layers agree with the unfolded network to float rounding (~1e-6 relative).

Which convolution feeds which BatchNorm is read from a ``torch.fx`` trace: a pair is folded
only if the BatchNorm's input is the convolution's output and nothing else uses that output,
each module is called exactly once, and the convolution is not a target layer (its hooked
output must stay the raw convolution). Models that ``torch.fx`` cannot trace are left as
they are. The folding runs on a copy (``model_copies.twin_of``); the model is never changed.
The copy costs the model's memory once more and carries none of the model's own hooks: a
user's forward hook that alters outputs needs ``fold_batchnorm=False``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def foldable_pairs(model: nn.Module, keep: Collection[str] = ()) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) pairs of ``model`` that can be folded; ``keep``: module
    names whose own output must not change (target layers)."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any untraceable model simply keeps its BatchNorms
        return []
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if not (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules[source.target], nn.Conv2d)
            and len(source.users) == 1
            and calls[source.target] == 1
            and calls[node.target] == 1
            and source.target not in keep
            and modules[node.target].track_running_stats
        ):
            continue
        pairs.append((str(source.target), str(node.target)))
    return pairs


def fold_batchnorm(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """Fold each (conv, BatchNorm) pair of an eval-mode ``model`` in place: the conv gets the
    folded weights and bias, the BatchNorm becomes ``nn.Identity`` (same name, so a target
    layer that was the BatchNorm still gives the same output). Returns ``model``."""
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        _replace(model, conv_name, fuse_conv_bn_eval(conv, bn))
        _replace(model, bn_name, nn.Identity())
    return model


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)

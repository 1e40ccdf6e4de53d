"""Cached hook-free copies ("twins") of a model, for CAM forwards that must not run the
model itself: the channels-last / compiled twin of the perturbation CAMs' masked forwards
(``acceleration.py``) and the BatchNorm-folded twin of the gradient CAMs (``folding.py``).

A twin is built once per model and option set and cached (weakly keyed on the model), so a
compiled twin survives across ``with build_cam(...)`` blocks. Before each use it is checked
against the model: an eager twin copies in every weight whose tensor or version counter
changed; a twin with baked-in weights (compiled with freezing, or BatchNorm-folded) cannot
see new weights, so it is rebuilt (and recompiled). Either way a twin never runs stale
weights, and the model itself is never modified.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from src.cams.folding import fold_batchnorm


def _hook_free_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` without any hooks (the CAM's capture hooks, the user's own)."""
    memo: dict[int, object] = {}
    for module in model.modules():
        for name, value in vars(module).items():
            if "hooks" in name and isinstance(value, dict):
                memo[id(value)] = type(value)()
    return copy.deepcopy(model, memo)


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]


Folds = tuple[tuple[str, str], ...]  # (conv, BatchNorm) names folded in a twin


def _signature(model: nn.Module) -> list[tuple[str, torch.Size, torch.dtype, torch.device]]:
    return [(n, t.shape, t.dtype, t.device) for n, t in _tensors(model)]


def _stamps(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (id(t), t._version) for name, t in _tensors(model)}


@dataclass
class _Twin:
    """A hook-free copy of a model in eval mode, optionally channels-last, BatchNorm-folded
    (``folding.py``) and compiled."""

    module: nn.Module
    run: nn.Module
    derived: bool  # weights baked in (compiled with freezing, or folded): rebuild on change
    signature: list  # the model's tensor names, shapes, dtypes and devices at build time
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (id, version)

    @classmethod
    def build(cls, model: nn.Module, channels_last: bool, compile_model: bool, folds: Folds):
        module = _hook_free_copy(model).eval().requires_grad_(False)
        fold_batchnorm(module, list(folds))
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        run = torch.compile(module, options={"freezing": True}) if compile_model else module
        derived = compile_model or bool(folds)
        return cls(module, run, derived, _signature(model), _stamps(model))

    def matches(self, model: nn.Module) -> bool:
        return self.signature == _signature(model)

    def stale(self, model: nn.Module) -> bool:
        """A tensor of ``model`` was replaced or changed in place since the last sync."""
        return self.seen != _stamps(model)

    def sync(self, model: nn.Module) -> None:
        """Copy in every tensor of ``model`` that is new or changed since the last sync."""
        ours = dict(_tensors(self.module))
        with torch.no_grad():
            for name, tensor in _tensors(model):
                stamp = (id(tensor), tensor._version)
                if self.seen.get(name) != stamp:
                    ours[name].copy_(tensor)
                    self.seen[name] = stamp


_TWINS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[bool, bool, Folds], _Twin]] = (
    weakref.WeakKeyDictionary()
)


def twin_of(
    model: nn.Module, channels_last: bool, compile_model: bool, folds: Folds = ()
) -> nn.Module:
    """The cached hook-free twin of ``model`` for these options, with current weights: an
    eager twin copies changed tensors in, a derived one is rebuilt."""
    twins = _TWINS.setdefault(model, {})
    key = (channels_last, compile_model, folds)
    twin = twins.get(key)
    if twin is None or not twin.matches(model) or (twin.derived and twin.stale(model)):
        twin = twins[key] = _Twin.build(model, channels_last, compile_model, folds)
    twin.sync(model)
    return twin.run

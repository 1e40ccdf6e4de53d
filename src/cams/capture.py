"""Activation capture: forward hooks that live only inside a ``with`` block (torchcam style).

Gradients are never taken from hooks or parameter ``.grad``: callers differentiate the
target score w.r.t. the captured tensors with ``torch.autograd.grad`` (docs/gradient-cams.md).

In-place safety (docs/gradient-cams.md): the hook stores the layer's own output and hands a clone
downstream, so an in-place op after the layer (ResNet's ``ReLU(inplace=True)`` after a BN,
``out += identity``) modifies the clone. The stored tensor keeps the layer's value, and the
gradient w.r.t. it is the gradient w.r.t. the layer's output (a clone is the identity).

Graph from the hooks (``record(graph_from_hooks=True)``): when no input gradient is wanted,
the forward starts without autograd and each hook turns its layer's output into a leaf that
requires grad and switches autograd on. The stem before the first target layer then records
nothing (max-pool runs without indices, no saved tensors), and the backward stops at the
earliest target layer; the gradients w.r.t. the stored tensors are unchanged.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

LayerSpec = str | nn.Module


def resolve_layers(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]
) -> tuple[list[nn.Module], list[str]]:
    """Target layers given by ``named_modules()`` name or as modules -> (modules, names).

    Raises ValueError naming an unknown layer and listing close or top-level valid names.
    """
    if isinstance(layers, str | nn.Module):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("target_layers is empty; give at least one layer name or module")
    by_name = dict(model.named_modules())
    name_of = {id(module): name for name, module in by_name.items()}
    modules: list[nn.Module] = []
    names: list[str] = []
    for layer in layers:
        if isinstance(layer, str):
            if layer not in by_name or layer == "":
                candidates = [name for name in by_name if name]
                close = difflib.get_close_matches(layer, candidates, n=5, cutoff=0.5)
                top = [name for name, _ in model.named_children()]
                hint = ", ".join(dict.fromkeys(close + top[:8]))
                raise ValueError(
                    f"unknown target layer {layer!r}; valid names include: {hint} "
                    f"({len(candidates)} named modules in the model)"
                )
            modules.append(by_name[layer])
            names.append(layer)
        elif isinstance(layer, nn.Module):
            if id(layer) not in name_of:
                raise ValueError(
                    f"target layer {type(layer).__name__} is not a submodule of the model"
                )
            modules.append(layer)
            names.append(name_of[id(layer)] or "<model>")
        else:
            raise TypeError(
                f"target_layers entries must be module names or modules, got {type(layer)}"
            )
    return modules, names


class FeatureCapture:
    """Forward hooks on ``modules``; outputs are stored only inside ``record()``.

    Use as a context manager: hooks are registered on enter and removed on exit, also when
    the block raises. Forwards outside ``record()`` (e.g. masked images of Score-CAM) pass
    through untouched. A module called several times in one forward keeps its last output.
    """

    def __init__(self, modules: Sequence[nn.Module], names: Sequence[str]) -> None:
        self.modules = list(modules)
        self.names = list(names)
        self._handles: list[RemovableHandle] = []
        self._outputs: list[torch.Tensor | None] = []
        self._recording = False
        self._graph_from_hooks = False

    def __enter__(self) -> FeatureCapture:
        if self._handles:
            raise RuntimeError("FeatureCapture is already active")
        try:
            for index, module in enumerate(self.modules):
                self._handles.append(module.register_forward_hook(partial(self._hook, index)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook and drop stored tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._outputs = []
        self._recording = False

    @contextmanager
    def record(self, graph_from_hooks: bool = False) -> Iterator[None]:
        """Store the hooked outputs of the forwards run inside this block; with
        ``graph_from_hooks``, autograd records only from the first hooked output on (the
        grad mode in force before the block is restored after it)."""
        if not self._handles:
            raise RuntimeError("FeatureCapture.record() used outside its `with` block")
        self._outputs = [None] * len(self.modules)
        self._recording = True
        self._graph_from_hooks = graph_from_hooks
        grad_mode = torch.is_grad_enabled()
        if graph_from_hooks:
            torch.set_grad_enabled(False)
        try:
            yield
        finally:
            torch.set_grad_enabled(grad_mode)
            self._recording = False
            self._graph_from_hooks = False

    @property
    def outputs(self) -> list[torch.Tensor]:
        """The outputs stored by the last ``record()``, in the order of ``modules``."""
        missing = [
            name for name, out in zip(self.names, self._outputs, strict=False) if out is None
        ]
        if missing or len(self._outputs) != len(self.modules):
            raise RuntimeError(
                f"target layer(s) {missing or self.names} produced no output during the forward "
                "pass; are they used by the model's forward()?"
            )
        return [out for out in self._outputs if out is not None]

    def _hook(
        self, index: int, module: nn.Module, inputs: object, output: object
    ) -> torch.Tensor | None:
        if not self._recording:
            return None
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(
                f"target layer {self.names[index]!r} must output a (B, C, h, w) tensor, got {shape}"
            )
        if self._graph_from_hooks:
            torch.set_grad_enabled(True)
            if not output.requires_grad:
                output = output.detach().requires_grad_(True)
        self._outputs[index] = output
        return output.clone()

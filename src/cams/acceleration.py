"""Speed options of the masked forwards of perturbation CAMs (docs/cfdcam.md, docs/scorecam.md,
benchmarks/results.md).

Perturbation CAMs spend nearly all their time in forward passes of masked images, so speed
comes from cheaper forwards (benchmarks/results.md). ``MaskedForward`` runs those forwards with
three
options, all off by default, each keeping maps within 1e-2 of float32 (tested):

- ``autocast_dtype`` (``bfloat16`` | ``float16``): ``torch.autocast`` around the masked and
  blank-image forwards (they are scored in the same precision, so Cfd-CAM's blank threshold
  compares like with like). The capture forward that gives the feature maps, the targets and
  the confidence stays float32.
- ``channels_last``: the forwards run on a hook-free twin of the model whose 4-D weights are
  channels-last, with channels-last inputs.
- ``compile``: ``torch.compile`` of that twin with inductor's ``freezing`` (weights become
  constants, so oneDNN gets pre-packed weights; without freezing, compiling gains little;
  measured speed-ups: benchmarks/results.md).

The twin is built once per model and option set and cached (weakly keyed on the model), so a
compiled twin survives across ``with build_cam(...)`` blocks. Before each use it is checked
against the model: an eager twin copies in every weight whose tensor or version counter
changed; a twin with baked-in weights (compiled with freezing, or BatchNorm-folded for the
gradient CAMs, ``folding.py``) cannot see new weights, so it is rebuilt (and recompiled).
Either way a twin never runs stale weights, and the model itself is never modified.

``auto_batch_size`` picks the chunk of masked images per forward from free memory
(``batch_size: auto``).
"""

from __future__ import annotations

import contextlib
import copy
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from src.cams.folding import fold_batchnorm
from src.validation import check_choice

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}

# batch_size=auto: use this fraction of the free memory for one chunk, within these bounds.
AUTO_MEMORY_FRACTION = 0.5
AUTO_MAX_BATCH = 1024


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


class MaskedForward:
    """``forward(model, images) -> float32 logits`` with the speed options above."""

    def __init__(
        self, autocast_dtype: str | None = None, channels_last: bool = False, compile: bool = False
    ) -> None:
        check_choice("autocast_dtype", autocast_dtype, (None, *AUTOCAST_DTYPES))
        self.dtype = AUTOCAST_DTYPES.get(autocast_dtype) if autocast_dtype else None
        self.channels_last = channels_last
        self.compile = compile

    def network(self, model: nn.Module) -> nn.Module:
        """The module that runs the masked forwards: the model itself without options."""
        if not (self.channels_last or self.compile):
            return model
        return twin_of(model, self.channels_last, self.compile)

    @contextlib.contextmanager
    def precision(self, device: torch.device) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=self.dtype):
                yield

    def __call__(self, network: nn.Module, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self.precision(images.device):
            logits = network(images)
        return logits.float() if isinstance(logits, torch.Tensor) else logits

    def item_bytes(self, network: nn.Module, image: torch.Tensor) -> int:
        """Memory of one masked image's forward, estimated from a probe forward of ``image``
        (1, C, H, W): the input, its mask, and every leaf module's output summed (an upper
        bound: without autograd most of them are freed before the next is made)."""
        total = 2 * image.numel() * image.element_size()
        sizes: list[int] = []

        def count(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                sizes.append(output.numel() * output.element_size())

        model = getattr(network, "_orig_mod", network)  # a compiled twin: probe it eagerly
        handles = [m.register_forward_hook(count) for m in model.modules() if not any(m.children())]
        try:
            with torch.no_grad():
                self(model, image)
        finally:
            for handle in handles:
                handle.remove()
        return total + sum(sizes)


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors: ``torch.cuda.mem_get_info`` on CUDA, else the system's
    available RAM (``MemAvailable`` of /proc/meminfo, or ``os.sysconf`` where there is none)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_batch_size(item_bytes: int, free_bytes: int) -> int:
    """Masked images per forward: half the free memory over the per-image estimate, in
    ``[1, AUTO_MAX_BATCH]``."""
    fitting = int(AUTO_MEMORY_FRACTION * free_bytes) // max(1, item_bytes)
    return max(1, min(AUTO_MAX_BATCH, fitting))

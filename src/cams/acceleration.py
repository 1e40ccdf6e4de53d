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

The twin comes from the cache of model copies (``model_copies.py``): built once per model and
option set, never stale, and the model itself is never modified.

``auto_batch_size`` picks the chunk of masked images per forward from free memory
(``batch_size: auto``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from src.cams.model_copies import twin_of
from src.validation import check_choice

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}

# batch_size=auto: use this fraction of the free memory for one chunk, within these bounds.
AUTO_MEMORY_FRACTION = 0.5
AUTO_MAX_BATCH = 1024


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
        """Autocast to the ``autocast_dtype`` option on ``device``'s type (no-op without it)."""
        if self.dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=self.dtype):
                yield

    def __call__(self, network: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Logits of ``network`` (from :meth:`network`) for ``images``, always float32, so
        scores compare alike whatever the autocast dtype."""
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

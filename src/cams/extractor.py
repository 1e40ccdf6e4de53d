"""The callable CAM object: hooks for the ``with`` block, one call = maps for a batch.

Per scale: the method's per-layer maps -> layerization (fusion) -> min-max -> optional
per-image scale (Cfd-CAM's confidence); the multi-scale plug-in averages the scales. Every
call runs the model's max-pools channels-last on CPU (``pooling.py``: exact, faster).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from src.cams.base import CamMethod
from src.cams.capture import FeatureCapture
from src.cams.layerization import fuse_layers
from src.cams.maps import normalize
from src.cams.multiscale import multi_scale
from src.cams.pooling import channels_last_pooling
from src.cams.scoring import TargetSpec, as_target_tensor


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (running BN statistics, no dropout, as grad-cam does) and restore
    every module's own ``training`` flag afterwards, also after an exception."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class CamExtractor:
    """``with build_cam(...) as cam: maps = cam(images, targets)``.

    ``images`` (B, C, H, W) float; ``targets`` (B,) class ids, an int, or None (positive
    class for K = 1, predicted class otherwise). Returns float32 (B, H, W) maps in [0, 1] on
    the images' device. Hooks exist only inside the ``with`` block.
    """

    def __init__(
        self,
        model: nn.Module,
        method: CamMethod,
        fusion: str = "sum",
        scales: Sequence[float] = (1,),
        downsample_mode: str = "nearest",
    ) -> None:
        self.model = model
        self.method = method
        self.fusion = fusion
        self.scales = list(scales)
        self.downsample_mode = downsample_mode
        self._capture: FeatureCapture | None = None

    def __enter__(self) -> CamExtractor:
        if self._capture is not None:
            raise RuntimeError("this CAM is already inside a `with` block")
        capture = FeatureCapture(self.method.modules, self.method.names)
        self._capture = capture.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None

    def __call__(self, images: torch.Tensor, targets: TargetSpec = None) -> torch.Tensor:
        """(B, H, W) float32 maps in [0, 1] for ``images`` (B, 3, H, W) in [0, 1], explaining
        ``targets`` (class ids, or None: see ``scoring.resolve_targets``); only inside the
        ``with`` block."""
        if self._capture is None:
            raise RuntimeError("call the CAM inside its block: `with build_cam(...) as cam:`")
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "CAMs cannot be computed under torch.inference_mode(): they need autograd or "
                "hooked forwards on normal tensors. Use torch.no_grad() instead, or "
                "Trainer(inference_mode=False) in Lightning."
            )
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")
        if images.is_inference():
            images = images.clone()  # inference tensors cannot enter autograd
        target_ids = as_target_tensor(targets, images.shape[0], images.device)
        grad_mode = torch.enable_grad() if self.method.needs_gradients else torch.no_grad()
        with grad_mode, eval_mode(self.model), channels_last_pooling(self.model):
            maps = multi_scale(
                self._single_scale, images, target_ids, self.scales, self.downsample_mode
            )
        return maps.detach().float().clamp_(0, 1)

    def _single_scale(
        self, images: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._capture is not None
        out = self.method.layer_maps(self.model, self._capture, images, targets)
        size = (images.shape[-2], images.shape[-1])
        maps = normalize(fuse_layers(out.layer_maps, self.fusion, size, self.method.layer_eps))
        if out.scale is not None:
            maps = maps * out.scale[:, None, None].to(maps.dtype)
        return maps, out.targets

"""What every CAM method gives the engine (one small interface; the method pages of docs/README.md).

A method computes, for images at one scale, one non-negative map per hooked layer. The
engine (``extractor.py``) fuses the layers (per-layer min-max with the method's
``layer_eps``), min-maxes the result to exactly [0, 1] and applies the optional per-image
``scale`` (Cfd-CAM's confidence scaling); the multi-scale plug-in wraps that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from src.cams.capture import FeatureCapture


class OptionError(ValueError):
    """A CAM option is unknown or has a bad value; ``option`` names it, so a caller that
    reads the options from a config can name the config field."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass
class MethodOutput:
    """What a method returns for one scale: the per-layer maps before fusion, the class ids
    they explain, and an optional per-image factor applied after the final min-max."""

    layer_maps: list[torch.Tensor]  # (B, h_l, w_l) per hooked layer, >= 0
    targets: torch.Tensor  # (B,) resolved class ids
    scale: torch.Tensor | None = None  # (B,) factor applied after the final min-max


class CamMethod(Protocol):
    """The interface the engine (``CamExtractor``) drives: which layers to hook, whether the
    forward needs autograd, and how to turn one batch into per-layer maps."""

    modules: list[nn.Module]  # layers to hook
    names: list[str]
    needs_gradients: bool
    layer_eps: float  # epsilon of the per-layer min-max in the fusion

    def layer_maps(
        self,
        model: nn.Module,
        capture: FeatureCapture,
        images: torch.Tensor,
        targets: torch.Tensor | None,
    ) -> MethodOutput:
        """One non-negative (B, h_l, w_l) map per hooked layer for ``images`` at one scale;
        ``targets=None`` is resolved by the method (see ``scoring.resolve_targets``)."""
        ...

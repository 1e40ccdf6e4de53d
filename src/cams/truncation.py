"""Truncation plug-in: keep only large positive gradients (docs/layerization-truncation.md, Eq.
9-10).

Per layer and channel (scope ``channel``) or per layer (scope ``layer``), for each image:
``tau = percentile(g[g > 0], delta)`` (numpy's linear interpolation); keep ``g`` where
``g >= tau`` and ``g > 0``, else 0. ``delta = 0`` keeps exactly the positive gradients;
``delta = None`` switches truncation off. Fully vectorised (no host round trip).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from src.cams.base import OptionError
from src.validation import check_choice

SCOPES = ("channel", "layer")


def positive_percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``q``-th percentile of the positive entries along the last dim (keepdim).

    Linear interpolation between order statistics as ``numpy.percentile``; +inf where a
    row has no positive entry (so nothing passes ``g >= tau``). The positive entries are the
    last ``count`` of an ascending sort of the row, so no masking is needed before sorting.
    """
    length = values.shape[-1]
    count = (values > 0).sum(dim=-1, keepdim=True)
    ordered = values.sort(-1).values
    rank = (count - 1).clamp(min=0).to(values.dtype) * (q / 100.0)
    first = (length - count).clamp(max=length - 1)  # index of the smallest positive entry
    low = rank.floor().long()
    high = rank.ceil().long()
    v_low = ordered.gather(-1, first + low)
    v_high = ordered.gather(-1, first + high)
    frac = rank - low.to(values.dtype)
    tau = torch.where(high > low, v_low + (v_high - v_low) * frac, v_low)
    return torch.where(count > 0, tau, torch.full_like(tau, float("inf")))


@dataclass(frozen=True)
class Truncation:
    """Gradient truncation with percentile ``delta`` (None = off) and ``scope``."""

    delta: float | None = None
    scope: str = "channel"

    def __post_init__(self) -> None:
        if self.delta is not None:
            if isinstance(self.delta, bool) or not isinstance(self.delta, numbers.Real):
                raise OptionError(
                    "delta", f"option 'delta' must be None or a number, got {self.delta!r}"
                )
            if not 0 <= self.delta < 100:
                raise OptionError(
                    "delta", f"option 'delta' must be in [0, 100) or None, got {self.delta}"
                )
        check_choice("truncation_scope", self.scope, SCOPES, OptionError)

    def __call__(self, grads: torch.Tensor) -> torch.Tensor:
        """Truncate (B, C, h, w) gradients; identity when ``delta`` is None."""
        if self.delta is None:
            return grads
        if self.delta == 0:  # tau = the smallest positive entry: keep exactly g > 0
            return grads.clamp(min=0)
        start = 2 if self.scope == "channel" else 1
        flat = grads.flatten(start)
        tau = positive_percentile(flat, float(self.delta))
        # tau is a positive entry (or +inf), so g >= tau already implies g > 0.
        return torch.where(flat >= tau, flat, 0.0).view_as(grads)

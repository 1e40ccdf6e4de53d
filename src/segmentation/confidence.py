"""Pseudo-masks with an ignore region (docs/selftrain.md, "Confident regions").

A CAM's mask is least reliable near its boundary: on the demo the DenseCRF masks of Cfd-CAM
hold the tumours at about twice their size, and a U-Net trained on them learns the blob, not
the tumour. Self-training in the field (AffinityNet, Ahn & Kwak 2018; IRNet, Ahn et al. 2019)
keeps only the pixels the CAM is sure of: object where the map is high, background where it
is clearly low, and leaves the band between out of the loss, so that the student places the
boundary from what the image shows (the object's own appearance, learnt on the confident
pixels and on the slices labelled negative), not where the coarse map put it.

Here, on a slice labelled positive, with `m` its map and `M` the mask rule's mask of it:

- object (1): `M` and `m >= foreground * max(m)`;
- background (0): not `M` and `m < background * max(m)`;
- ignored (`IGNORE`, 255, the label VOC and the WSSS codes use): every other pixel.

The thresholds are fractions of the map's maximum, as IRNet's `conf_fg_thres` and
`conf_bg_thres` are of its max-normalised CAMs. The two regions never overlap (one lies inside
the mask, the other outside), so any pair is valid: `background = 1` makes every pixel outside
the mask background (the mask rule's mask taken as an upper bound of the object),
`foreground = 0` every pixel inside it object. A slice labelled negative keeps its empty
mask with no ignored pixel (its image label says there is no object anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The label of a pixel the loss leaves out.
IGNORE = 255
#: Label values of a pseudo-mask with an ignore region.
BACKGROUND, OBJECT = 0, 1


@dataclass(frozen=True)
class Confidence:
    """Fractions of a map's maximum at or above which (inside the mask) a pixel is object
    and below which (outside it) it is background (`selftrain.confident_foreground`,
    `selftrain.confident_background`)."""

    foreground: float
    background: float

    def __post_init__(self) -> None:
        for name in ("foreground", "background"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"confident {name}: expected a number in [0, 1], got {value!r}")
            if not 0 <= value <= 1:
                raise ValueError(f"confident {name}: must be in [0, 1], got {value!r}")

    @classmethod
    def from_config(cls, node: Any) -> Confidence | None:
        """The thresholds of a `selftrain` node; None (no ignore region, the former masks)
        when both are unset. Setting one alone is refused: the other has no neutral value."""
        foreground = node.get("confident_foreground")
        background = node.get("confident_background")
        if foreground is None and background is None:
            return None
        if foreground is None or background is None:
            raise ValueError(
                "set both selftrain.confident_foreground and selftrain.confident_background "
                "(or neither: no ignore region)"
            )
        return cls(foreground, background)

    def describe(self) -> dict[str, float]:
        """The thresholds as they enter the pseudo-masks' store key."""
        return {"foreground": float(self.foreground), "background": float(self.background)}


def confident_labels(mask: np.ndarray, cam_map: np.ndarray, confidence: Confidence) -> np.ndarray:
    """(H, W) uint8 labels of a positive slice: `OBJECT` where `mask` and the map is high,
    `BACKGROUND` outside `mask` where the map is low, `IGNORE` elsewhere (module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    cam_map = np.asarray(cam_map, dtype=np.float32)
    if mask.shape != cam_map.shape:
        raise ValueError(f"mask {mask.shape} and map {cam_map.shape} differ in shape")
    peak = float(cam_map.max())
    labels = np.full(mask.shape, IGNORE, dtype=np.uint8)
    labels[~mask & (cam_map < confidence.background * peak)] = BACKGROUND
    labels[mask & (cam_map >= confidence.foreground * peak)] = OBJECT
    return labels

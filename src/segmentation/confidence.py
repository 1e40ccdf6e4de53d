"""Pseudo-masks with an ignore region (docs/selftrain.md, "Confident regions").

A CAM's mask is least reliable near its boundary: on the demo the DenseCRF masks of Cfd-CAM
hold the tumours at about twice their size, and a U-Net trained on them learns the blob, not
the tumour. Self-training in the field (AffinityNet, Ahn & Kwak 2018; IRNet, Ahn et al. 2019)
keeps only the pixels the CAM is sure of: object where the map is high, background where it
is clearly low, and leaves the band between out of the loss, so that the student places the
boundary from what the image shows (the object's own appearance, learnt on the confident
pixels and on the slices labelled negative), not where the coarse map put it.

Here, on a slice labelled positive, with `m` its map and `M` the mask rule's mask of it:

- object (1): `M` and the DenseCRF refinement of `m >= foreground * max(m)` on the image;
- background (0): not `M` and `m < background * max(m)`;
- ignored (`IGNORE`, 255, the label VOC and the WSSS codes use): every other pixel.

The object region is IRNet's (`cam_to_ir_label`): the map thresholded, then a DenseCRF on
those hard labels (unary `gt_prob` 0.7, as IRNet's `crf_inference_label`; the pairwise terms
of the authors' DenseCRF, `CrfParams`), so that the image, not the coarse map, places its
boundary. On the demo a Cfd-CAM map is a plateau over cells of 16 to 28 px: its top part
alone is about the size of a cell whatever the tumour's, and the CRF shrinks it to the bright
tumour inside (docs/selftrain.md).

The thresholds are fractions of the map's maximum, as IRNet's `conf_fg_thres` and
`conf_bg_thres` are of its max-normalised CAMs. The foreground one can instead be `"otsu"`:
Otsu's threshold of the map's grey levels (`uint8(255 * m / max(m))`) inside the mask, chosen
per slice from the map alone. A fixed fraction has to be picked somehow, and the only signal
that could pick it on the demo is the pixel labels the method must not read; Otsu's split of
the mask into its high and low parts needs nothing but the map. The two regions never overlap (one lies
inside the mask, the other outside), so any pair is valid: `background = 1` makes every pixel
outside the mask background (the mask rule's mask taken as an upper bound of the object). A
slice labelled negative keeps its empty mask with no ignored pixel (its image label says
there is no object anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from src.evaluation.masks import CrfParams, otsu_threshold, truncated_uint8

#: The label of a pixel the loss leaves out.
IGNORE = 255
#: Label values of a pseudo-mask with an ignore region.
BACKGROUND, OBJECT = 0, 1
#: IRNet's confidence in the thresholded labels fed to the DenseCRF (`crf_inference_label`).
LABEL_CONFIDENCE = 0.7
#: The foreground threshold chosen per slice by Otsu's method inside the mask.
OTSU = "otsu"


class ThresholdError(ValueError):
    """A bad confident-region threshold; `side` names it ("foreground" or "background")."""

    def __init__(self, side: str, message: str) -> None:
        super().__init__(f"confident {side}: {message}")
        self.side = side


@dataclass(frozen=True)
class Confidence:
    """Fractions of a map's maximum at or above which (inside the mask) a pixel is object
    (or `OTSU`: above Otsu's threshold of the map inside the mask) and below which (outside
    it) it is background (`selftrain.confident_foreground`, `selftrain.confident_background`)."""

    foreground: float | str
    background: float
    #: Refine the thresholded object region by a DenseCRF on the image (IRNet); off, it is
    #: the thresholded map inside the mask (kept for tests and comparisons).
    refine: bool = True

    def __post_init__(self) -> None:
        for name in ("foreground", "background"):
            value = getattr(self, name)
            if name == "foreground" and value == OTSU:
                continue
            number = not isinstance(value, bool) and isinstance(value, int | float)
            if not number or not 0 <= value <= 1:
                expected = f"a number in [0, 1]{' or otsu' if name == 'foreground' else ''}"
                raise ThresholdError(name, f"expected {expected}, got {value!r}")

    @classmethod
    def from_config(cls, node: Any) -> Confidence | None:
        """The thresholds of a `selftrain` node; None (no ignore region, the former masks)
        when both are unset. Setting one alone is refused: the other has no neutral value."""
        foreground = node.get("confident_foreground")
        background = node.get("confident_background")
        if foreground is None and background is None:
            return None
        if foreground is None or background is None:
            raise ThresholdError(
                "foreground" if foreground is None else "background",
                "set both selftrain.confident_foreground and selftrain.confident_background "
                "(or neither: no ignore region)",
            )
        return cls(foreground, background)

    def describe(self) -> dict[str, Any]:
        """The settings as they enter the pseudo-masks' store key."""
        described: dict[str, Any] = {
            "foreground": OTSU if self.foreground == OTSU else float(self.foreground),
            "background": float(self.background),
        }
        if self.refine:
            described["object"] = f"densecrf of the thresholded map, gt_prob {LABEL_CONFIDENCE}"
        return described


def refined_labels(
    image: np.ndarray, labels: np.ndarray, crf: CrfParams | None = None
) -> np.ndarray:
    """IRNet's `crf_inference_label` on binary `labels` (H, W): unary from the hard labels
    (`LABEL_CONFIDENCE`), the Gaussian and bilateral terms of `crf` on `image` ((H, W, 3)
    uint8, as DenseCRF reads it); returns the boolean object mask."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    crf = crf or CrfParams()
    height, width = labels.shape
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"image: expected ({height}, {width}, 3) uint8, got {image.shape} {image.dtype}"
        )
    field = dcrf.DenseCRF2D(width, height, 2)
    unary = unary_from_labels(
        labels.astype(np.int32), 2, gt_prob=LABEL_CONFIDENCE, zero_unsure=False
    )
    field.setUnaryEnergy(np.ascontiguousarray(unary))
    field.addPairwiseGaussian(sxy=crf.sxy_gaussian, compat=crf.compat_gaussian)
    field.addPairwiseBilateral(
        sxy=crf.sxy_bilateral,
        srgb=crf.srgb,
        rgbim=np.ascontiguousarray(image),
        compat=crf.compat_bilateral,
    )
    marginals = np.asarray(field.inference(crf.iterations))
    return marginals.argmax(axis=0).reshape(height, width).astype(bool)


def confident_labels(
    mask: np.ndarray,
    cam_map: np.ndarray,
    confidence: Confidence,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W) uint8 labels of a positive slice: `OBJECT` inside `mask` where the map is high
    (refined on `image`, (H, W, 3) uint8, when `confidence.refine`), `BACKGROUND` outside
    `mask` where the map is low, `IGNORE` elsewhere (module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    cam_map = np.asarray(cam_map, dtype=np.float32)
    if mask.shape != cam_map.shape:
        raise ValueError(f"mask {mask.shape} and map {cam_map.shape} differ in shape")
    peak = float(cam_map.max())
    if confidence.foreground == OTSU:
        high = _above_otsu_inside(cam_map, peak, mask)
    else:
        high = cam_map >= confidence.foreground * peak
    if confidence.refine:
        if image is None:
            raise ValueError("refining the object region needs the image")
        high = refined_labels(image, high)
    labels = np.full(mask.shape, IGNORE, dtype=np.uint8)
    labels[~mask & (cam_map < confidence.background * peak)] = BACKGROUND
    labels[mask & high] = OBJECT
    return labels


def _above_otsu_inside(cam_map: np.ndarray, peak: float, mask: np.ndarray) -> np.ndarray:
    """Pixels whose grey level `uint8(255 * m / peak)` exceeds Otsu's threshold of the levels
    inside `mask`. A mask whose map has a single level there cannot be split: all of it is
    kept (the mask rule's own decision), as is an empty mask (nothing to keep)."""
    levels = truncated_uint8(cam_map / peak) if peak > 0 else np.zeros(cam_map.shape, np.uint8)
    threshold = otsu_threshold(levels[mask]) if mask.any() else None
    if threshold is None:
        return mask.copy()
    return levels > threshold

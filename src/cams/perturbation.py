"""Perturbation engine: Score-CAM family and Cfd-CAM as presets (docs/cfdcam.md, docs/scorecam.md).

One engine: capture the layer's maps ``A``, build masks ``M_k = normalise(up(A_k))``, score
the masked images ``x * M_k`` chunk by chunk (``batch_size`` masked images per forward,
never all B x C at once), turn the (B, C) scores into weights with the preset's rule and
combine. The presets differ only in the table below (docs/scorecam.md):

========== =============== =============== ============ =========================== ======
preset     upsampling      normalisation   score        weights                     sum of
========== =============== =============== ============ =========================== ======
pgc        align_corners=T eps 1e-8        logit        softmax over channels       A_k
official   align_corners=F if max > min    confidence   the score (constant -> 0)   up(A_k)
faithful   align_corners=F if max > min    confidence   Cfd rule (blank threshold)  M_k
wosigmoid  align_corners=F if max > min    logit        score / sum                 M_k
========== =============== =============== ============ =========================== ======

``official`` follows the Score-CAM authors' code: constant maps get weight 0 and the map is
``sum_k w_k up(A_k)`` with the raw upsampled activations. Cfd-CAM (``faithful``) multiplies
its final map by the confidence ``s(x)`` (option ``confidence_scaling``).

Exact skipping: a channel whose maps are all zero has an all-zero mask for every preset, so
its masked image is the blank (black) image; its score is the blank image's score, computed
once, and no forward is run for it (option ``skip_blank``; the map is unchanged).

Speed options of the masked forwards (``autocast_dtype``, ``channels_last``, ``compile``) and
``batch_size="auto"`` (chunk from free memory) are in ``acceleration.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from src.cams import acceleration
from src.cams.acceleration import MaskedForward
from src.cams.base import MethodOutput
from src.cams.capture import FeatureCapture
from src.cams.maps import GRADCAM_EPS
from src.cams.scoring import SCORES, check_logits, resolve_targets, target_confidence
from src.validation import check_choice

# (scores (B, C), blank-image score (B,), constant-mask flags (B, C)) -> weights (B, C)
WeightFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

CFD_RULES = ("faithful", "wosigmoid")


def cfd_weights(
    scores: torch.Tensor, blank_score: torch.Tensor | float, preset: str = "faithful"
) -> torch.Tensor:
    """Cfd-CAM channel weights (docs/cfdcam.md, step 4), pure function over the last dim.

    ``faithful``: ``w_k = s_k if s_k >= s0 else 0``; ``wosigmoid``: ``w_k = s_k`` (no blank
    threshold; the scores are logits). Then, if ``sum(w) > 0``, ``w = w / sum(w)``.
    ``scores`` (..., C), ``blank_score`` broadcastable to (...).
    """
    check_choice("preset", preset, CFD_RULES)
    scores = torch.as_tensor(scores)
    blank = torch.as_tensor(blank_score, dtype=scores.dtype, device=scores.device)
    if preset == "faithful":
        weights = torch.where(scores >= blank[..., None], scores, torch.zeros_like(scores))
    else:
        weights = scores
    total = weights.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, weights / torch.where(total > 0, total, 1), weights)


def _softmax_weights(scores: torch.Tensor, blank: torch.Tensor, constant: torch.Tensor):
    return scores.softmax(dim=-1)


def _official_weights(scores: torch.Tensor, blank: torch.Tensor, constant: torch.Tensor):
    return torch.where(constant, torch.zeros_like(scores), scores)


def _cfd_rule(preset: str) -> WeightFn:
    return lambda scores, blank, constant: cfd_weights(scores, blank, preset)


@dataclass(frozen=True)
class Preset:
    """One row of the preset table (module docstring): everything Score-CAM variants and
    Cfd-CAM differ in."""

    align_corners: bool  # upsampling of A_k to the input size
    mask_eps: float | None  # None: min-max only if max > min; else (m - min)/(max - min + eps)
    score: str  # key of scoring.SCORES
    weights: WeightFn
    combine: str  # what sum_k w_k (.) runs over: "features" (A_k), "upsampled", "masks"
    layer_eps: float  # epsilon of the per-layer min-max (fusion)
    confidence_scaling: bool  # multiply the final map by s(x)


PRESETS: dict[str, Preset] = {
    "pgc": Preset(True, 1e-8, "logit", _softmax_weights, "features", GRADCAM_EPS, False),
    "official": Preset(False, None, "confidence", _official_weights, "upsampled", 0.0, False),
    "faithful": Preset(False, None, "confidence", _cfd_rule("faithful"), "masks", 0.0, True),
    "wosigmoid": Preset(False, None, "logit", _cfd_rule("wosigmoid"), "masks", 0.0, True),
}


def upsample(maps: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """(N, h, w) -> (N, H, W) bilinear."""
    return torch.nn.functional.interpolate(
        maps[:, None], size=size, mode="bilinear", align_corners=align_corners
    )[:, 0]


def normalise_masks(maps: torch.Tensor, eps: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max each (H, W) map -> (masks, constant flags). ``eps=None``: constant maps stay."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    constant = span[..., 0, 0] == 0
    if eps is not None:
        return (maps - low) / (span + eps), constant
    scaled = (maps - low) / torch.where(constant[..., None, None], 1, span)
    return torch.where(constant[..., None, None], maps, scaled), constant


class PerturbationMethod:
    r"""Masked-forward CAM with a preset (module docstring); one map per hooked layer.

    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k w_k^c\, T(A^k)\Big), \quad
       w_k^c = \mathrm{rule}\big(s^c(x \odot M_k)\big), \quad
       M_k = \mathrm{normalise}(\mathrm{up}(A^k))

    with :math:`s^c` the preset's score (logit or confidence) and :math:`T` what the preset
    sums (:math:`A^k`, its upsampling or :math:`M_k`). Score-CAM: H. Wang et al., CVPR
    Workshops 2020, arXiv:1910.01279 (docs/scorecam.md); Cfd-CAM: Y.-J. Chen, Y. Shi, T.-Y. Ho,
    2023 (docs/cfdcam.md), whose rule keeps the channels that score at least the blank image.

    Example::

        with build_cam("cfdcam", model, target_layers=["layer4"], batch_size="auto") as cam:
            maps = cam(images)  # (B, H, W) in [0, 1]
    """

    needs_gradients = False

    def __init__(
        self,
        modules: list[nn.Module],
        names: list[str],
        preset: str,
        batch_size: int | str = 64,
        skip_blank: bool = True,
        confidence_scaling: bool | None = None,
        forward: MaskedForward | None = None,
    ) -> None:
        check_choice("preset", preset, PRESETS)
        self.modules = modules
        self.names = names
        self.preset = PRESETS[preset]
        self.batch_size = batch_size  # an int or "auto"
        self.forward = forward or MaskedForward()
        self.skip_blank = skip_blank
        self.confidence_scaling = (
            self.preset.confidence_scaling if confidence_scaling is None else confidence_scaling
        )
        self.layer_eps = self.preset.layer_eps
        self.forwarded = 0  # masked images forwarded since built, all scales (tests, benches)
        self.chunk = batch_size if isinstance(batch_size, int) else 0  # last chunk size used
        self._item_bytes: dict[tuple, int] = {}  # batch_size=auto: probe result per input kind

    def layer_maps(
        self,
        model: nn.Module,
        capture: FeatureCapture,
        images: torch.Tensor,
        targets: torch.Tensor | None,
    ) -> MethodOutput:
        """Score every (image, channel) mask in chunks and weight the layer's maps with the
        preset's rule; the blank image is scored once, as the masked images are."""
        batch = images.shape[0]
        with capture.record():
            logits = check_logits(model(images), batch)
        targets = resolve_targets(logits, targets)
        score = SCORES[self.preset.score]
        network = self.forward.network(model)
        # The blank image is scored like the masked images (same network and precision).
        blank_logits = check_logits(self.forward(network, torch.zeros_like(images[:1])), 1)
        blank = score(blank_logits.expand(batch, -1), targets)
        self.chunk = self._chunk_size(network, images)
        maps = [self._layer_map(network, images, a, targets, blank) for a in capture.outputs]
        scale = target_confidence(logits, targets) if self.confidence_scaling else None
        return MethodOutput(maps, targets, scale)

    def _chunk_size(self, network: nn.Module, images: torch.Tensor) -> int:
        """``batch_size``, or for ``auto`` half the free memory over a probed per-image cost
        (one probe forward per input shape, dtype and device)."""
        if isinstance(self.batch_size, int):
            return self.batch_size
        key = (tuple(images.shape[1:]), images.dtype, images.device, id(network))
        if key not in self._item_bytes:
            self._item_bytes[key] = self.forward.item_bytes(network, images[:1])
        free = acceleration.free_memory(images.device)
        return acceleration.auto_batch_size(self._item_bytes[key], free)

    def _masks(self, activations: torch.Tensor, size: tuple[int, int]):
        upsampled = upsample(activations, size, self.preset.align_corners)
        return upsampled, *normalise_masks(upsampled, self.preset.mask_eps)

    def _layer_map(
        self,
        network: nn.Module,
        images: torch.Tensor,
        activations: torch.Tensor,
        targets: torch.Tensor,
        blank: torch.Tensor,
    ) -> torch.Tensor:
        size = (images.shape[-2], images.shape[-1])
        batch, channels = activations.shape[:2]
        score = SCORES[self.preset.score]
        all_zero = (activations == 0).flatten(2).all(dim=-1)
        skipped = all_zero if self.skip_blank else torch.zeros_like(all_zero)
        # Skipped channels: zero mask -> blank image -> blank score, constant map.
        scores = blank[:, None].expand(batch, channels).clone()
        constant = skipped.clone()
        pairs = (~skipped).nonzero()  # one host sync per layer, outside the per-channel work
        for start in range(0, pairs.shape[0], self.chunk):
            image_idx, channel_idx = pairs[start : start + self.chunk].unbind(1)
            _, masks, is_constant = self._masks(activations[image_idx, channel_idx], size)
            masked = images[image_idx] * masks[:, None].to(images.dtype)
            logits = check_logits(self.forward(network, masked), masked.shape[0])
            scores[image_idx, channel_idx] = score(logits, targets[image_idx]).to(scores.dtype)
            constant[image_idx, channel_idx] = is_constant
            self.forwarded += masked.shape[0]
        weights = self.preset.weights(scores, blank, constant)
        if self.preset.combine == "features":
            return (weights[:, :, None, None] * activations).sum(dim=1).clamp(min=0)
        return self._combine_at_input(activations, weights, size).clamp(min=0)

    def _combine_at_input(
        self, activations: torch.Tensor, weights: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """sum_k w_k T(A_k) at input size, channel chunk by channel chunk (bounded memory)."""
        batch, channels = activations.shape[:2]
        step = max(1, self.chunk // batch)
        total = torch.zeros(batch, *size, dtype=activations.dtype, device=activations.device)
        for start in range(0, channels, step):
            chunk = activations[:, start : start + step]
            upsampled, masks, _ = self._masks(chunk.flatten(0, 1), size)
            maps = masks if self.preset.combine == "masks" else upsampled
            maps = maps.view(batch, chunk.shape[1], *size)
            total = total + (weights[:, start : start + step, None, None] * maps).sum(dim=1)
        return total

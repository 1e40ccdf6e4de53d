"""Gradient CAMs: one weight rule per method on (activations, gradients) (docs/gradient-cams.md).

Activations come from forward hooks; gradients from ``torch.autograd.grad`` of the summed
per-sample target logits w.r.t. the hooked activations only (no parameter ``.grad``). The
truncation plug-in (docs/layerization-truncation.md) is applied to the gradients before any rule.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import torch
from torch import nn

from src.cams.base import MethodOutput
from src.cams.capture import FeatureCapture
from src.cams.folding import foldable_pairs
from src.cams.maps import GRADCAM_EPS
from src.cams.model_copies import twin_of
from src.cams.pooling import channels_last_pooling
from src.cams.scoring import check_logits, resolve_targets, target_logits
from src.cams.truncation import Truncation

# (activations A, gradients g), both (B, C, h, w) -> (B, h, w) map before the ReLU.
WeightRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

GRADCAMPP_EPS = 1e-6
XGRADCAM_EPS = 1e-7


def _weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k for (B, C) or (B, C, h, w) weights."""
    if weights.ndim == 2:
        weights = weights[:, :, None, None]
    return (weights * activations).sum(dim=1)


def cam_rule(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """CAM: ``w_k = sum_ij g_ijk``; for a layer feeding GAP + Linear this is exactly the fc
    weight of the target class (``dy/dA_ijk = W_ck / hw``)."""
    return _weighted_sum(g.sum(dim=(2, 3)), a)


def gradcam_rule(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: ``w_k = mean_ij g_ijk``."""
    return _weighted_sum(g.mean(dim=(2, 3)), a)


def gradcampp_rule(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: ``alpha = g^2 / (2 g^2 + sum(A) g^3 + eps)`` (0 where g = 0),
    ``w_k = sum_ij relu(g) alpha``."""
    g2 = g * g
    alpha = g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g + GRADCAMPP_EPS)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return _weighted_sum((g.clamp(min=0) * alpha).sum(dim=(2, 3)), a)


def xgradcam_rule(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: ``w_k = sum_ij (g A) / (sum_ij A + 1e-7)``, grad-cam's rule and epsilon.

    On a layer whose activations take both signs (a raw convolution) ``sum_ij A`` can cancel
    to near 0 and the quotient multiplies any error in it. The two sums are therefore taken
    in float64: a float32 sum of cancelling terms is off by ~1e-7 of their magnitude, and by
    a different amount for each summation order a CPU's vector units choose, which a channel
    summing to 1e-4 of its magnitude turned into per-mille differences of the map. What
    remains is the rounding of the activations themselves, which no rule can undo."""
    a64 = a.double()
    weights = (g.double() * a64).sum(dim=(2, 3)) / (a64.sum(dim=(2, 3)) + XGRADCAM_EPS)
    return _weighted_sum(weights.to(a.dtype), a)


def layercam_rule(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Layer-CAM: element-wise ``sum_k relu(g_k) A_k``."""
    return _weighted_sum(g.clamp(min=0), a)


WEIGHT_RULES: dict[str, WeightRule] = {
    "cam": cam_rule,
    "gradcam": gradcam_rule,
    "gradcampp": gradcampp_rule,
    "xgradcam": xgradcam_rule,
    "layercam": layercam_rule,
}


def activation_gradients(
    model: nn.Module,
    capture: FeatureCapture,
    images: torch.Tensor,
    targets: torch.Tensor | None,
    truncation: Truncation,
    input_gradient: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
    """One forward + ``autograd.grad`` -> (activations, truncated gradients, input gradient
    or None, resolved targets). With ``input_gradient`` (FullGrad) the input is made to
    require grad and the whole forward is recorded; otherwise autograd records from the
    first hooked layer on and the backward runs from the logits down to the hooked layers
    only. Either way frozen models work, and no parameter gradient is computed."""
    inputs = images.detach().requires_grad_(input_gradient)
    with capture.record(graph_from_hooks=not input_gradient):
        logits = check_logits(model(inputs), images.shape[0])
    targets = resolve_targets(logits, targets)
    activations = capture.outputs
    wanted = [*activations, inputs] if input_gradient else activations
    score = target_logits(logits, targets).sum()
    grads = torch.autograd.grad(score, wanted, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wanted, strict=True)]
    layer_grads = [truncation(g) for g in grads[: len(activations)]]
    input_grad = grads[-1] if input_gradient else None
    return [a.detach() for a in activations], layer_grads, input_grad, targets


class GradientMethod:
    r"""A gradient CAM = hooked target layers + one weight rule (+ truncation).

    ``fold_batchnorm``: run on a hook-free twin of the model whose eval-mode BatchNorms are
    folded into the convolutions before them (``folding.py``; same maps to float rounding,
    one BatchNorm fewer per conv in the forward and the backward); a model with nothing to
    fold runs as it is.

    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A^k\Big)

    with :math:`A^k` the hooked layer's activations and :math:`w_k^c` from ``rule`` applied to
    the gradients :math:`\partial y^c / \partial A^k` (Grad-CAM: their spatial mean, Selvaraju
    et al., ICCV 2017, arXiv:1610.02391; the other rules: docs/gradient-cams.md). LT-Grad-CAM
    truncates the gradients first (``truncation``, docs/layerization-truncation.md).

    Example::

        with build_cam("gradcam", model, target_layers=["layer4"]) as cam:
            maps = cam(images, targets)  # (B, H, W) in [0, 1]
    """

    needs_gradients = True
    layer_eps = GRADCAM_EPS

    def __init__(
        self,
        rule: WeightRule,
        model: nn.Module,
        modules: list[nn.Module],
        names: list[str],
        truncation: Truncation,
        fold_batchnorm: bool = False,
    ) -> None:
        self.rule = rule
        self.modules = modules
        self.names = names
        self.truncation = truncation
        hooked_whole_model = any(module is model for module in modules)
        fold = fold_batchnorm and not hooked_whole_model
        self.folds = tuple(foldable_pairs(model, keep=names)) if fold else ()

    def layer_maps(
        self,
        model: nn.Module,
        capture: FeatureCapture,
        images: torch.Tensor,
        targets: torch.Tensor | None,
    ) -> MethodOutput:
        """One weighted-activation map per hooked layer (class docstring), on the folded twin
        when there are BatchNorms to fold."""
        with ExitStack() as stack:
            if self.folds:  # the folded twin, with hooks of its own for this call
                model = twin_of(model, channels_last=False, compile_model=False, folds=self.folds)
                modules = [model.get_submodule(name) for name in self.names]
                capture = stack.enter_context(FeatureCapture(modules, self.names))
                stack.enter_context(channels_last_pooling(model))
            acts, grads, _, targets = activation_gradients(
                model, capture, images, targets, self.truncation
            )
        maps = [self.rule(a, g).clamp(min=0) for a, g in zip(acts, grads, strict=True)]
        return MethodOutput(maps, targets)

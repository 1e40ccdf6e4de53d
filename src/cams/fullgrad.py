"""FullGrad (docs/gradient-cams.md): input-gradient term plus bias-gradient terms of every layer.

``|x * dy/dx|`` per input channel, plus for every Conv2d and BatchNorm2d with a bias
``|b_k * G_k|`` (G = gradient w.r.t. the layer's own output; BN's effective bias is
``beta - running_mean * gamma / sqrt(running_var + eps)``). Each map is min-maxed per
(image, channel) at its own resolution and summed over channels; the fusion (``sum``
by default) upsamples and adds the terms. ``target_layers`` is ignored. The truncation
plug-in applies to the bias gradients (docs/layerization-truncation.md).
"""

from __future__ import annotations

import torch
from torch import nn

from src.cams.base import MethodOutput
from src.cams.capture import FeatureCapture
from src.cams.gradient import activation_gradients
from src.cams.maps import GRADCAM_EPS, minmax
from src.cams.truncation import Truncation


def bias_layers(model: nn.Module) -> tuple[list[nn.Module], list[str]]:
    """Every Conv2d and BatchNorm2d of ``model`` that has a bias, in module order."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.BatchNorm2d) and module.bias is not None
    ]
    if not found:
        raise ValueError("FullGrad needs at least one Conv2d or BatchNorm2d with a bias")
    return [module for _, module in found], [name for name, _ in found]


def effective_bias(module: nn.Module) -> torch.Tensor:
    """The bias a layer adds to its output in eval mode (BN: running statistics folded in)."""
    bias = module.bias.detach()
    if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
        gamma = module.weight.detach() if module.weight is not None else 1.0
        bias = bias - module.running_mean * gamma / torch.sqrt(module.running_var + module.eps)
    return bias


class FullGradMethod:
    r"""FullGrad: the input-gradient map plus one bias-gradient map per biased layer.

    .. math:: S(x) = \sum_i \psi(|x_i \odot \nabla_{x_i} y^c|)
       + \sum_l \sum_k \psi(|b_{l,k} \nabla_{z_{l,k}} y^c|)

    with :math:`\psi` a per-(image, channel) min-max at the map's own resolution, :math:`x_i`
    the input channels, :math:`z_{l,k}` channel :math:`k` of layer :math:`l`'s output and
    :math:`b_{l,k}` its (BatchNorm: effective) bias; the fusion upsamples and adds the terms
    (Srinivas and Fleuret, *Full-Gradient Representation for Neural Network Visualization*,
    NeurIPS 2019, arXiv:1905.00780; docs/gradient-cams.md). Every Conv2d and
    BatchNorm2d with a bias is hooked, so ``target_layers`` is ignored; ``truncation`` applies
    to the bias gradients.

    Example::

        with build_cam("fullgrad", model) as cam:
            maps = cam(images)  # (B, H, W) in [0, 1]
    """

    needs_gradients = True
    layer_eps = GRADCAM_EPS

    def __init__(self, model: nn.Module, truncation: Truncation) -> None:
        self.modules, self.names = bias_layers(model)
        self.truncation = truncation

    def layer_maps(
        self,
        model: nn.Module,
        capture: FeatureCapture,
        images: torch.Tensor,
        targets: torch.Tensor | None,
    ) -> MethodOutput:
        """The input term first, then one bias term per hooked layer (class docstring)."""
        _, grads, input_grad, targets = activation_gradients(
            model, capture, images, targets, self.truncation, input_gradient=True
        )
        assert input_grad is not None
        terms = [minmax((images * input_grad).abs(), GRADCAM_EPS).sum(dim=1)]
        for module, grad in zip(self.modules, grads, strict=True):
            bias = effective_bias(module).to(grad.dtype)[None, :, None, None]
            terms.append(minmax((bias * grad).abs(), GRADCAM_EPS).sum(dim=1))
        return MethodOutput(terms, targets)

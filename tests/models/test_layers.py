"""FastInstanceNorm2d is nn.InstanceNorm2d on a faster kernel: same values, gradients,
arguments and state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.models.backbones import build_backbone
from src.models.layers import FastInstanceNorm2d


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape", [(3, 8, 32, 32), (2, 16, 5, 7), (2, 4, 3, 3), (4, 6, 6)])
def test_values_and_gradients_match_instance_norm(shape, affine):
    torch.manual_seed(0)
    channels = shape[-3]
    stock, fast = (
        nn.InstanceNorm2d(channels, affine=affine),
        FastInstanceNorm2d(channels, affine=affine),
    )
    if affine:
        with torch.no_grad():
            stock.weight.uniform_(0.5, 1.5)
            stock.bias.normal_()
        fast.load_state_dict(stock.state_dict())
    x = (torch.randn(*shape) * 3 + 1).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    upstream = torch.randn(*shape)
    expected, got = stock(x), fast(y)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    expected.backward(upstream)
    got.backward(upstream)
    # Gradients are sums over the image (and batch): float32 rounding grows with the summed
    # magnitudes and differs with each CPU's summation order, so the bound is relative to
    # those magnitudes (~100 float32 epsilons of them), not an absolute number.
    spatial = tuple(range(-2, 0))
    input_scale = (upstream.abs().sum(spatial, keepdim=True) / x[0, 0].numel()).expand_as(x)
    assert ((y.grad - x.grad).abs() <= 1e-5 * (input_scale + x.grad.abs())).all()
    if affine:
        x_hat = (x - x.mean(spatial, keepdim=True)) / x.std(spatial, keepdim=True)
        summed = (upstream * x_hat).abs()
        scale = summed.sum(dim=(0, *spatial)) if len(shape) == 4 else summed.sum(dim=spatial)
        assert ((fast.weight.grad - stock.weight.grad).abs() <= 1e-5 * scale).all()


def test_running_statistics_take_the_stock_path():
    torch.manual_seed(1)
    stock = nn.InstanceNorm2d(4, track_running_stats=True)
    fast = FastInstanceNorm2d(4, track_running_stats=True)
    x = torch.randn(2, 4, 8, 8) + 2
    assert torch.equal(fast(x), stock(x))  # training: updates the running stats alike
    assert torch.equal(fast.running_mean, stock.running_mean)
    fast.eval(), stock.eval()
    assert torch.equal(fast(x), stock(x))


def test_the_instance_norm_resnet_uses_it_with_an_unchanged_state_dict():
    net = build_backbone("resnet18", num_classes=1, norm="instance")
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(isinstance(m, FastInstanceNorm2d) for m in norms)
    assert not any("bn" in key for key in net.state_dict())  # no affine or running stats

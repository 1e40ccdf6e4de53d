"""MONAI's DynUNet with an nnU-Net-style topology derived from the patch size.

The Cfd-CAM paper's supervised ceiling is the "Optimized U-Net" (Futrega et al. 2021,
arXiv:2110.03352), an nnU-Net-like DynUNet. Its depth is not a free choice: each level halves
the feature map along the axes that are still large enough and not much coarser than the
finest axis, until no axis can be halved again. `unet_topology` applies that rule, so the same
config builds a sensible network for 64 px demo slices and 240 px BraTS slices alike
(docs/supervised.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import DynUNet
from torch import nn


def unet_topology(
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    min_size: int = 4,
    max_levels: int = 6,
) -> tuple[list[list[int]], list[list[int]]]:
    """Per-level kernel sizes and strides for a patch of `patch_size` pixels.

    An axis is downsampled (stride 2) while it is at least `2 * min_size` pixels and its
    spacing at most twice the finest one; a coarse axis keeps kernel 1 until the others have
    caught up (anisotropic images). The first level never downsamples. Stops when no axis
    can be halved or after `max_levels` downsamplings. Odd sizes round up: `PaddedUNet` pads
    the input to a multiple of the total stride.
    """
    sizes = [int(s) for s in patch_size]
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"patch_size must hold positive sizes, got {list(patch_size)}")
    spacings = [1.0] * len(sizes) if spacing is None else [float(s) for s in spacing]
    if len(spacings) != len(sizes):
        raise ValueError(f"spacing {list(spacings)} and patch_size {sizes} differ in length")
    kernels: list[list[int]] = [[3] * len(sizes)]
    strides: list[list[int]] = [[1] * len(sizes)]
    for _ in range(max_levels):
        finest = min(spacings)
        fine = [sp <= 2 * finest for sp in spacings]
        stride = [
            2 if ok and size >= 2 * min_size else 1 for ok, size in zip(fine, sizes, strict=True)
        ]
        if all(s == 1 for s in stride):
            break
        kernels.append([3 if ok else 1 for ok in fine])
        strides.append(stride)
        sizes = [-(-size // s) for size, s in zip(sizes, stride, strict=True)]
        spacings = [sp * s for sp, s in zip(spacings, stride, strict=True)]
    return kernels, strides


class PaddedUNet(nn.Module):
    """A DynUNet for any image size: zero-pads the input to a multiple of the total stride
    (skip connections need exact halvings) and crops every output back.

    Zero is the background of skull-stripped MRI, so padding adds no structure.
    """

    def __init__(self, unet: DynUNet, multiple: Sequence[int]) -> None:
        super().__init__()
        self.unet = unet
        self.multiple = [int(m) for m in multiple]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The U-Net's output for ``images`` of any size, cropped back to that size."""
        sizes = images.shape[-len(self.multiple) :]
        pads: list[int] = []
        for size, multiple in zip(reversed(sizes), reversed(self.multiple), strict=True):
            pads += [0, math.ceil(size / multiple) * multiple - size]
        out = self.unet(F.pad(images, pads) if any(pads) else images)
        return out[(..., *(slice(0, size) for size in sizes))]


def build_dynunet(
    patch_size: Sequence[int],
    in_channels: int = 3,
    out_channels: int = 1,
    spacing: Sequence[float] | None = None,
    filters: Sequence[int] | None = None,
    deep_supervision: bool = False,
    deep_supr_num: int = 1,
    dropout: float | None = None,
) -> PaddedUNet:
    """A 2D (or 3D, from `len(patch_size)`) DynUNet with instance norm and leaky ReLU.

    `filters`: channels per level; the first `levels` entries are used (None = MONAI's
    default, 32 doubling to 320). Deep supervision adds `deep_supr_num` auxiliary outputs,
    returned stacked in training mode only.
    """
    kernels, strides = unet_topology(patch_size, spacing)
    levels = len(strides)
    if filters is not None:
        filters = list(filters)
        if len(filters) < levels:
            raise ValueError(
                f"filters {filters}: a {list(patch_size)} patch gives a {levels}-level U-Net, "
                f"which needs {levels} channel counts"
            )
        filters = filters[:levels]
    if deep_supervision and not 1 <= deep_supr_num <= levels - 2:
        raise ValueError(
            f"deep_supr_num={deep_supr_num}: a {levels}-level U-Net allows 1..{levels - 2}"
        )
    unet = DynUNet(
        spatial_dims=len(kernels[0]),
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        dropout=dropout,
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=deep_supervision,
        deep_supr_num=deep_supr_num,
    )
    return PaddedUNet(unet, [math.prod(axis) for axis in zip(*strides, strict=True)])

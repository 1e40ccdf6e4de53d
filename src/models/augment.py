"""Training augmentation of both stages, batched: one set of tensor operations per batch.

Both stages draw their random parameters per sample, as torchvision's per-image transforms
did, but apply them to the whole batch at once on the batch's device: a Python loop over the
images cost ~0.4 ms per image in dispatch alone at 16 px, more than the network's step. The
number of tensor operations per call does not grow with the batch (test_batched_augmentation.py
counts them; benchmarks/ times them). Every draw comes from torch's generator of the batch's
device, so a seeded run repeats its augmentation. A grey batch on the CPU (MRI repeated to
RGB) is augmented as its one channel and returned expanded to three (:func:`grey_batch`):
at 112 px memory traffic, not arithmetic, sets the time, and two of the three channels are
copies.

The distributions are torchvision's (v2 ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``ColorJitter``, ``RandomGrayscale``) and MONAI's ``RandBiasField``: the same ranges,
probabilities, crop sampling (10 tries, then the centre crop), a random order of the jitter
operations drawn for every image, torchvision's blend formulas and clamps. Two differences
remain, both documented in docs/training.md: a crop shrunk to a smaller output (SupCon's
``image_size`` below the input size; never with the defaults) is resampled bilinearly without
torchvision's antialiasing filter, and values differ by float rounding (<= 1e-5).

Fine-tuning (:class:`BatchAugmentation`): a classifier fine-tuned on a few dozen cases
memorises them: it scores the training cases right and new ones timidly. Cfd-CAM multiplies
its map by that score (a map of a slice scored 0.4 never reaches DenseCRF's 0.5), so how well
the score carries over to unseen cases sets the masks. Every option off is the plain,
unaugmented fine-tuning. SupCon's views (``SupConModule.make_view``) use the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

#: torchvision's luminance weights (``rgb_to_grayscale``): the grey of the contrast and
#: saturation blends and of the grayscale transform.
GREY_WEIGHTS = (0.2989, 0.587, 0.114)
#: The jitter operations in torchvision's order and the factor that leaves an image unchanged.
JITTER_NEUTRAL = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
#: The jitter operations that only change colour images (a grey image has no saturation or hue).
COLOUR_OPS = ("saturation", "hue")
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10
LEGENDRE_DEGREE = 3
LEGENDRE_TERMS = (LEGENDRE_DEGREE + 1) * (LEGENDRE_DEGREE + 2) // 2  # MONAI: i + j <= 3
SHADING_GRID = (2, 6)  # the shading's k x k grid, k drawn from this range


def _pair(values: Sequence[float] | None, name: str, low: float, high: float) -> tuple | None:
    if values is None:
        return None
    pair = tuple(float(v) for v in values)
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ValueError(
            f"finetune.module.augment.{name} must be [a, b] with {low} <= a <= b <= {high}, "
            f"got {list(values)}"
        )
    return pair


def _probability(value: float, name: str) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"finetune.module.augment.{name} must be in [0, 1], got {value}")
    return float(value)


def jitter_ranges(strengths: Sequence[float]) -> dict[str, tuple[float, float]]:
    """Factor ranges of torchvision's ``ColorJitter(brightness, contrast, saturation, hue)``
    numbers: s -> [max(0, 1 - s), 1 + s] for the first three, h -> [-h, h] for the hue;
    operations of strength 0 are left out, as torchvision does."""
    names = list(JITTER_NEUTRAL)
    ranges = {}
    for name, value in zip(names, strengths, strict=True):
        high = 0.5 if name == "hue" else float("inf")
        if not 0 <= value <= high:
            raise ValueError(
                f"pretrain.module.color_jitter: {name} must be in [0, {high}], got {value}"
            )
        if value:
            centre = JITTER_NEUTRAL[name]
            ranges[name] = (max(0.0, centre - value) if centre else -value, centre + value)
    return ranges


def coin(images: torch.Tensor, p: float) -> torch.Tensor:
    """A (B,) boolean tensor on the images' device, each entry True with probability ``p``."""
    return torch.rand(len(images), device=images.device) < p


def _uniform(images: torch.Tensor, low: float, high: float, *shape: int) -> torch.Tensor:
    return torch.rand(len(images), *shape, device=images.device) * (high - low) + low


def crop_boxes(
    images: torch.Tensor, scale: Sequence[float], ratio: Sequence[float] = CROP_RATIO
) -> torch.Tensor:
    """Per-sample ``RandomResizedCrop`` boxes (B, 4): top, left, height, width in pixels.

    torchvision's rule, vectorised over the batch and its ten tries: area fraction uniform in
    ``scale``, aspect ratio log-uniform in ``ratio``, sides rounded to whole pixels; the first
    try that fits is kept, placed uniformly; a sample with no fitting try gets the centre crop
    of the input's aspect ratio clamped to ``ratio``.
    """
    height, width = images.shape[-2:]
    area = _uniform(images, scale[0], scale[1], CROP_TRIES) * (height * width)
    log_ratio = _uniform(images, math.log(ratio[0]), math.log(ratio[1]), CROP_TRIES)
    w = torch.round(torch.sqrt(area * torch.exp(log_ratio)))
    h = torch.round(torch.sqrt(area / torch.exp(log_ratio)))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first fitting try
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    top = torch.floor(torch.rand_like(h) * (height - h + 1))
    left = torch.floor(torch.rand_like(w) * (width - w + 1))
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = round(height * max(ratio)), height
    else:
        fallback_w, fallback_h = width, height
    fallback = torch.tensor(
        [(height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h, fallback_w],
        dtype=w.dtype,
        device=w.device,
    )
    boxes = torch.stack([top, left, h, w], dim=1)
    return torch.where(fits.any(1, keepdim=True), boxes, fallback)


def _source_coordinates(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) pixel coordinates that bilinear resizing of the span [start, start + length)
    to ``size`` samples (align_corners=False, clamped to the span as F.interpolate does)."""
    steps = torch.arange(size, device=start.device, dtype=start.dtype) + 0.5
    within = steps * (length[:, None] / size) - 0.5
    return start[:, None] + torch.minimum(within.clamp(min=0), length[:, None] - 1)


def resample(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: Sequence[int],
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each sample's box (top, left, height, width) resized bilinearly to ``size``, mirrored
    left-right where ``flip`` (B,) is True, for the whole batch at once.

    The sampled points are those of cropping and then ``F.interpolate`` (bilinear,
    align_corners=False); a flip only reverses the columns' points, so it costs nothing.
    Bilinear resizing is separable, and done in two passes: the columns by one
    ``grid_sample`` that treats every image row as a channel of a one-row image (its grid
    holds one point per output column, not one per output pixel), then the rows by two
    row gathers and a ``lerp``. This is ``F.interpolate``'s own order (columns inside, rows
    outside); one 2-D ``grid_sample`` over a full (B, H, W, 2) grid took ~1.4 times as long.
    """
    out_h, out_w = (int(s) for s in size)
    batch, channels, in_h, in_w = images.shape
    boxes = boxes.to(images.dtype)
    ys = _source_coordinates(boxes[:, 0], boxes[:, 2], out_h)
    xs = _source_coordinates(boxes[:, 1], boxes[:, 3], out_w)
    if flip is not None:
        xs = torch.where(flip[:, None], xs.flip(1), xs)
    # Columns: (B, C * H, 1, W) images of one row, sampled at the (x, 0) points
    # (normalised, align_corners=False; y = 0 is the row itself, weight exactly 1).
    gx = (2 * xs + 1) / in_w - 1
    grid = torch.stack([gx, torch.zeros_like(gx)], dim=-1)[:, None]  # (B, 1, out_w, 2)
    rows_as_channels = images.reshape(batch, channels * in_h, 1, in_w)
    columns = F.grid_sample(
        rows_as_channels, grid, mode="bilinear", padding_mode="border", align_corners=False
    ).view(batch * channels * in_h, out_w)
    # Rows: each output row between its two source rows (clamped at the last row).
    top = ys.floor()
    weight = (ys - top).to(images.dtype)
    first = top.long()
    second = (first + 1).clamp(max=in_h - 1)
    offset = torch.arange(batch * channels, device=images.device).view(batch, channels, 1)
    offset = offset * in_h
    upper = columns.index_select(0, (offset + first[:, None]).flatten())
    lower = columns.index_select(0, (offset + second[:, None]).flatten())
    weight = weight[:, None, :, None].expand(batch, channels, out_h, 1).reshape(-1, 1)
    return upper.lerp_(lower, weight).view(batch, channels, out_h, out_w)


def flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``images`` with the samples where ``flip`` (B,) is True mirrored left-right."""
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def grey_level(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance of RGB ``images`` with torchvision's weights (a weighted sum of
    channel slices: a 1x1 convolution costs ten times more on the CPU). A one-channel batch
    stands for a grey one (:func:`one_channel`): its channel is all three."""
    red, green, blue = (images[:, :1],) * 3 if images.shape[1] == 1 else images[:, :3].split(1, 1)
    grey = red * GREY_WEIGHTS[0]
    grey.add_(green, alpha=GREY_WEIGHTS[1])
    return grey.add_(blue, alpha=GREY_WEIGHTS[2])


def is_grey(images: torch.Tensor) -> torch.Tensor:
    """(B,) True where all channels of a sample are equal (a grey image repeated to RGB).

    Read off each channel's difference to the first (its largest magnitude 0), written into
    one reused buffer: about half the time of an elementwise ``==`` on the CPU. For finite
    values ``a - b == 0`` iff ``a == b`` (IEEE subtraction underflows gradually); a sample
    with an inf or NaN counts as colour, which only sends it down the general path. A
    channel-expanded batch (channel stride 0) is grey without looking."""
    grey = torch.ones(len(images), dtype=torch.bool, device=images.device)
    if images.stride(1) == 0:
        return grey
    difference = torch.empty_like(images[:, 0])  # one channel's buffer, reused
    for channel in range(1, images.shape[1]):
        torch.sub(images[:, channel], images[:, 0], out=difference)
        grey &= difference.abs_().flatten(1).amax(1) == 0
    return grey


def grey_batch(images: torch.Tensor, grey: torch.Tensor | None = None) -> bool:
    """Whether every sample of the CPU batch ``images`` (B, 3, H, W) is grey, so that the
    batch can be augmented as one channel (:func:`one_channel`). ``grey``: the batch's
    :func:`is_grey`, if the caller has it. Always False off the CPU, where asking would wait
    for the device (those batches keep their three channels)."""
    if images.device.type != "cpu" or images.dim() != 4 or images.shape[1] != 3:
        return False
    return bool((is_grey(images) if grey is None else grey).all())


def one_channel(images: torch.Tensor) -> torch.Tensor:
    """The first channel (B, 1, H, W) of a grey batch: every operation of both stages gives
    the same result on each channel of a grey image (the same per-sample parameters, the
    same luminance on every channel), so a grey batch is augmented as one channel and
    expanded back to three at the end (:func:`three_channels`): a third of the work and
    memory. Values are those of the three-channel computation up to float rounding (fused
    multiply-adds in vectorised loops may round the last bit differently; <= 1e-6)."""
    return images[:, :1]


def three_channels(images: torch.Tensor) -> torch.Tensor:
    """A one-channel result (B, 1, H, W) as the (B, 3, H, W) grey batch it stands for: a
    view with channel stride 0, not a copy (a copy of a 256 x 3 x 112 x 112 batch costs
    more than the whole augmentation). The consumers read it (the backbone's input
    normalisation, SupCon's ``torch.cat`` of two views); to write into it in place, call
    ``.contiguous()`` first."""
    return images.expand(-1, 3, -1, -1)


def _hue_shift(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB ``images`` with their HSV hue turned by ``shift`` (B,) turns (torchvision's
    ``adjust_hue``); value and chroma are kept, so a grey pixel stays exactly as it is."""
    red, green, blue = images.unbind(1)
    high, low = images.amax(1), images.amin(1)
    chroma = high - low
    divisor = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sector = torch.where(
        high == red,
        (green - blue) / divisor,
        torch.where(high == green, (blue - red) / divisor + 2, (red - green) / divisor + 4),
    )
    hue = torch.remainder(sector / 6 + shift[:, None, None], 1.0)
    # HSV -> RGB: channel n (5, 3, 1 for red, green, blue) at k = (n + 6 h) mod 6 is
    # value - chroma * clamp(min(k, 4 - k), 0, 1).
    phase = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device)
    k = torch.remainder(phase[None, :, None, None] + 6 * hue[:, None], 6)
    return high[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def color_jitter_(
    images: torch.Tensor,
    ranges: Mapping[str, tuple[float, float]],
    apply: torch.Tensor | None = None,
    colour: torch.Tensor | None = None,
) -> torch.Tensor:
    """torchvision's ``ColorJitter`` with per-sample factors and a per-sample random order,
    in place: ``images`` (a batch the caller owns) is changed and returned.

    ``ranges``: factor range of each operation used (keys of :data:`JITTER_NEUTRAL`), each
    factor uniform in it, hue in turns. ``apply`` (B,): which samples are jittered (None: all);
    ``colour`` (B,): which samples get saturation and hue (None: all; grey images need
    neither, which cannot change them; a one-channel batch, :func:`one_channel`, is grey
    throughout and gets neither). Brightness, contrast and saturation are torchvision's
    blends, clamped to [0, 1] after each: ``f x``, ``f x + (1 - f) mean(grey)``,
    ``f x + (1 - f) grey``. Every image applies its operations in its own random order, so
    the batch runs one slot per operation: in a slot every sample applies the operation its
    order puts there, and a neutral factor for the others, which leaves them exactly as they
    are (the hue is selected instead).
    """
    ops = [op for op in JITTER_NEUTRAL if op in ranges]
    unknown = set(ranges) - set(JITTER_NEUTRAL)
    if unknown:
        raise ValueError(f"unknown jitter operations {sorted(unknown)}")
    chosen = {op: apply for op in ops}
    if colour is not None:
        chosen.update(
            {op: colour if apply is None else apply & colour for op in ops if op in COLOUR_OPS}
        )
    # Grey batches skip the colour operations' cost; only on the CPU, where asking costs no
    # round trip to a device (the result is the same either way).
    grey_channel = images.shape[1] == 1
    if grey_channel or (
        colour is not None and images.device.type == "cpu" and not bool(colour.any())
    ):
        ops = [op for op in ops if op not in COLOUR_OPS]
    if not ops:
        return images
    factors = {op: _uniform(images, *ranges[op]) for op in ops}
    order = torch.rand(len(images), len(ops), device=images.device).argsort(1)
    ones = torch.ones(len(images), device=images.device, dtype=images.dtype)
    out = images
    for slot in range(len(ops)):
        here = {}
        for index, op in enumerate(ops):
            mask = order[:, slot] == index
            here[op] = mask if chosen[op] is None else mask & chosen[op]
        scale, offset, grey_weight = ones, torch.zeros_like(ones), torch.zeros_like(ones)
        for op in ("brightness", "contrast", "saturation"):
            if op in here:
                scale = torch.where(here[op], factors[op], scale)
        if "contrast" in here:
            weights = torch.tensor(GREY_WEIGHTS, dtype=out.dtype, device=out.device)
            means = out.mean((-2, -1))  # (B, 3), or (B, 1) for a grey batch's one channel
            mean_grey = means.expand(-1, len(GREY_WEIGHTS)) @ weights
            offset = torch.where(here["contrast"], (1 - factors["contrast"]) * mean_grey, offset)
        if "saturation" in here:
            grey_weight = torch.where(here["saturation"], 1 - factors["saturation"], grey_weight)
        grey = grey_level(out) if "saturation" in here else None
        out.mul_(scale[:, None, None, None]).add_(offset[:, None, None, None])
        if grey is not None:
            out.add_(grey.mul_(grey_weight[:, None, None, None]))
        out.clamp_(0, 1)
        if "hue" in here:
            shifted = _hue_shift(out, factors["hue"])
            out.copy_(torch.where(here["hue"][:, None, None, None], shifted, out))
    return out


def to_grayscale_(images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``images`` with the samples where ``chosen`` (B,) is True made grey (torchvision's
    luminance repeated to the three channels), in place."""
    weight = chosen.to(images.dtype)[:, None, None, None]
    return images.lerp_(grey_level(images).expand_as(images), weight)


def legendre_field(images: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) ``exp`` of the degree-3 Legendre polynomial field of MONAI's
    ``RandBiasField`` with per-sample ``coefficients`` (B, 10), in MONAI's order (the lower
    triangle of the 4 x 4 coefficient matrix, row by row; rows are the height axis)."""
    height, width = images.shape[-2:]

    def basis(n: int) -> torch.Tensor:
        x = torch.linspace(-1, 1, n, device=images.device, dtype=images.dtype)
        return torch.stack([torch.ones_like(x), x, (3 * x**2 - 1) / 2, (5 * x**3 - 3 * x) / 2])

    rows, cols = torch.tril_indices(LEGENDRE_DEGREE + 1, LEGENDRE_DEGREE + 1)
    matrix = images.new_zeros(len(images), LEGENDRE_DEGREE + 1, LEGENDRE_DEGREE + 1)
    matrix[:, rows, cols] = coefficients.to(images.dtype)
    field = torch.einsum("bij,ih,jw->bhw", matrix, basis(height), basis(width))
    return field.exp_()[:, None]


def _interpolation_matrix(length: torch.Tensor, size: int, source: int) -> torch.Tensor:
    """(B, size, source) weights of bilinear resizing (align_corners=False) of each sample's
    first ``length`` (B,) of ``source`` points to ``size`` points: a hat function of the
    distance to each source point."""
    coordinates = _source_coordinates(torch.zeros_like(length), length, size)
    points = torch.arange(source, device=length.device, dtype=length.dtype)
    return (1 - (coordinates[:, :, None] - points).abs()).clamp(min=0)


def smooth_shading(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) random smooth shadings in [0, 1]: per sample a k x k uniform grid (k in
    2..6) resized bilinearly to the image and min-max scaled. The resizing is two small
    matrix products per sample (rows, then columns), far cheaper than sampling a grid."""
    low, high = SHADING_GRID
    k = torch.randint(low, high + 1, (len(images),), device=images.device).to(images.dtype)
    grids = torch.rand(len(images), high, high, device=images.device, dtype=images.dtype)
    height, width = images.shape[-2:]
    rows = _interpolation_matrix(k, height, high)
    cols = _interpolation_matrix(k, width, high)
    field = (rows @ grids @ cols.transpose(1, 2))[:, None]
    low_value = field.amin((-2, -1), keepdim=True)
    span = field.amax((-2, -1), keepdim=True) - low_value
    return field.sub_(low_value).div_(span)  # in place: no image-sized temporaries


class BatchAugmentation:
    """Per-sample random transforms of an image batch (B, C, H, W) in [0, 1], batched.

    ``hflip_p``: probability of a left-right flip (the brain's halves are alike, a tumour
    may sit in either). ``crop_scale``: RandomResizedCrop area range back to the input size
    (None = no crop). ``brightness`` / ``contrast``: ColorJitter factor ranges (None = none);
    on a grey image repeated to 3 channels both keep it grey. ``bias_field``: coefficient
    range of MONAI's ``RandBiasField`` (a smooth multiplicative field, exp of a degree-3
    Legendre polynomial, the same on every channel), applied with probability
    ``bias_field_p``. MRI has such fields; a classifier that has never seen strong ones may
    take any smooth darkening of the brain, like the masks Cfd-CAM and Score-CAM multiply the
    image with, for a hyperintense lesion, and then scores every masked image alike.
    ``shade_negatives_p``: probability that a negative image (all labels 0) is multiplied by
    a random smooth shading in [0, 1] (a k x k uniform grid, k in 2..6, upsampled bilinearly
    and min-max scaled). Shading a healthy slice cannot create a lesion, so the label stays
    right; positives are left alone, since a shading can hide their lesion. It teaches the
    classifier that a darkened healthy brain is still healthy, which is what a perturbation
    CAM (Score-CAM, Cfd-CAM) asks of it when it scores the image under each channel's mask.
    Order: crop and flip, jitter, bias field, shading, then a clamp to [0, 1].
    """

    def __init__(
        self,
        hflip_p: float = 0.0,
        crop_scale: Sequence[float] | None = None,
        brightness: Sequence[float] | None = None,
        contrast: Sequence[float] | None = None,
        bias_field: Sequence[float] | None = None,
        bias_field_p: float = 0.5,
        shade_negatives_p: float = 0.0,
    ) -> None:
        self.hflip_p = _probability(hflip_p, "hflip_p")
        self.crop_scale = _pair(crop_scale, "crop_scale", 0.0, 1.0)
        self.brightness = _pair(brightness, "brightness", 0.0, float("inf"))
        self.contrast = _pair(contrast, "contrast", 0.0, float("inf"))
        self.bias_field = _pair(bias_field, "bias_field", -float("inf"), float("inf"))
        self.bias_field_p = _probability(bias_field_p, "bias_field_p")
        self.shade_negatives_p = _probability(shade_negatives_p, "shade_negatives_p")
        jitter = {"brightness": self.brightness, "contrast": self.contrast}
        self._jitter = {op: pair for op, pair in jitter.items() if pair is not None}

    def settings(self) -> dict[str, float | list[float] | None]:
        """The validated options as plain Python values (for checkpoints and configs)."""
        pairs = {"crop_scale": self.crop_scale, "brightness": self.brightness}
        pairs.update(contrast=self.contrast, bias_field=self.bias_field)
        plain = {k: v and list(v) for k, v in pairs.items()}
        return {
            "hflip_p": self.hflip_p,
            **plain,
            "bias_field_p": self.bias_field_p,
            "shade_negatives_p": self.shade_negatives_p,
        }

    @property
    def _bias_field_on(self) -> bool:
        return self.bias_field is not None and self.bias_field_p > 0

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is configured (otherwise batches pass unchanged)."""
        return bool(
            self.hflip_p
            or self.crop_scale is not None
            or self._jitter
            or self._bias_field_on
            or self.shade_negatives_p > 0
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Augmented copy of ``images``; ``labels`` (B, K) are needed for the shading only.

        A grey batch on the CPU (MRI repeated to RGB) is augmented as one channel and comes
        back as that channel expanded to three (:func:`grey_batch`, :func:`three_channels`).
        """
        if not self.enabled:
            return images
        if self.shade_negatives_p > 0 and labels is None:
            raise ValueError("shade_negatives_p needs the batch labels")
        grey = grey_batch(images)
        source = one_channel(images) if grey else images
        out = source
        flip = coin(images, self.hflip_p) if self.hflip_p else None
        if self.crop_scale is not None:
            out = resample(source, crop_boxes(images, self.crop_scale), images.shape[-2:], flip)
        elif flip is not None:
            out = flip_where(source, flip)
        if out is source:
            out = source.clone()
        if self._jitter:
            color_jitter_(out, self._jitter)
        field = None  # bias field and shading: one multiplicative (B, 1, H, W) field
        if self._bias_field_on:
            coefficients = _uniform(images, *self.bias_field, LEGENDRE_TERMS)
            chosen = coin(images, self.bias_field_p)
            field = legendre_field(out, coefficients * chosen[:, None])
        if self.shade_negatives_p > 0:
            negative = labels.reshape(len(labels), -1).amax(1) <= 0.5
            chosen = (negative & coin(images, self.shade_negatives_p))[:, None, None, None]
            shading = smooth_shading(out).masked_fill_(~chosen, 1.0)
            field = shading if field is None else field.mul_(shading)
        if field is not None:
            out.mul_(field)
        out.clamp_(0, 1)
        return three_channels(out) if grey else out

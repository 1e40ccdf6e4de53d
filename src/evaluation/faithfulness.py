"""Faithfulness of a map to the classifier (docs/metrics.md): does the classifier's score
follow the pixels the map ranks highest?

Mask metrics judge a map against the ground truth; these judge it against the network that
made it, so a map can be faithful and still miss the tumour (or the reverse). Per image of a
binary task, with the score s(x) = the classifier's sigmoid probability:

- ``avg_drop`` and ``conf_increase`` (Chattopadhay et al., WACV 2018, Grad-CAM++): the score
  on the image multiplied by the map, ``max(0, s(x) - s(m * x)) / s(x)`` (a fraction, not a
  percentage) and ``[s(m * x) > s(x)]``;
- ``deletion_auc`` and ``insertion_auc`` (Petsiuk et al., BMVC 2018, RISE): the area under
  the score curve while the pixels are replaced by a baseline (deletion) or put back into
  the baseline (insertion) in the map's order, over the fraction of pixels changed.

The step counts, tie order and epsilon are torchcam's (``torchcam.metrics``), so its
implementation checks ours (tests/evaluation/test_faithfulness.py). Everything runs batched
on the images' device: every perturbed image of a batch goes through the network in chunks
of at most ``chunk`` images, one forward per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from src.validation import check_choice

#: The per-image columns, in `per_image.csv` order.
FAITHFULNESS = ("avg_drop", "conf_increase", "deletion_auc", "insertion_auc")
BASELINES = ("zero", "blur")
#: RISE's blur substrate: an 11 x 11 Gaussian kernel with sigma 5 (their evaluation code).
BLUR_SIZE = 11
BLUR_SIGMA = 5.0
#: Keeps the drop finite for a score of 0; torchcam's value, so both agree.
EPSILON = 1e-7

#: Images (n, C, H, W) -> the score of the explained class (n,).
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Faithfulness:
    """How deletion and insertion are run: `steps` intervals of the pixel fraction (the curve
    has up to steps + 1 points), the `baseline` that replaces removed pixels (`zero`: black,
    `blur`: RISE's Gaussian blur of the image) and at most `chunk` images per forward (memory
    only: the numbers do not depend on it)."""

    steps: int = 20
    baseline: str = "zero"
    chunk: int = 64

    def __post_init__(self) -> None:
        """Refuse values that would make no curve or no forward, before any image runs."""
        check_choice("eval.faithfulness_baseline", self.baseline, BASELINES)
        for name, value in (("steps", self.steps), ("chunk", self.chunk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"eval.faithfulness_{name} must be an integer >= 1, got {value!r}")

    def describe(self) -> str:
        """The settings in words, for `summary.json`'s conventions."""
        baseline = (
            "black (zero) image"
            if self.baseline == "zero"
            else f"Gaussian blur of the image ({BLUR_SIZE}x{BLUR_SIZE}, sigma {BLUR_SIGMA:g})"
        )
        return (
            "score = classifier's sigmoid probability; avg_drop = max(0, s(x) - s(map * x)) / "
            "s(x) as a fraction; conf_increase = [s(map * x) > s(x)]; deletion/insertion AUC: "
            f"trapezoid over the fraction of pixels, {self.steps} steps, baseline {baseline}, "
            "pixels in decreasing map value, ties in raster order"
        )


def blurred(images: torch.Tensor) -> torch.Tensor:
    """RISE's blur substrate: each channel convolved with a normalised Gaussian, zero padded
    (as their code, so the borders darken)."""
    coords = torch.arange(BLUR_SIZE, dtype=images.dtype, device=images.device) - BLUR_SIZE // 2
    line = torch.exp(-(coords**2) / (2 * BLUR_SIGMA**2))
    kernel = torch.outer(line, line)
    kernel = (kernel / kernel.sum()).expand(images.shape[1], 1, BLUR_SIZE, BLUR_SIZE)
    return F.conv2d(images, kernel, padding=BLUR_SIZE // 2, groups=images.shape[1])


def baseline_images(images: torch.Tensor, baseline: str) -> torch.Tensor:
    """What a removed pixel becomes."""
    check_choice("baseline", baseline, BASELINES)
    return torch.zeros_like(images) if baseline == "zero" else blurred(images)


def step_counts(pixels: int, steps: int) -> list[int]:
    """How many pixels are changed at each point of the curves: multiples of
    ceil(pixels / steps), then all of them (torchcam's points; exactly k * pixels / steps when
    `steps` divides the pixel count)."""
    size = -(-pixels // steps)
    return [*range(0, pixels, size), pixels]


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Each pixel's place (B, H*W) in decreasing map value; equal values keep raster order
    (a stable sort), so a constant map removes pixels row by row from the top left."""
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


def chunked_scores(score: ScoreFn, inputs: Iterator[torch.Tensor], total: int) -> torch.Tensor:
    """The scores of `total` images arriving in chunks, as one (total,) tensor."""
    scores = torch.cat([score(chunk).float() for chunk in inputs])
    assert scores.shape == (total,)
    return scores


def faithfulness_metrics(
    score: ScoreFn, images: torch.Tensor, maps: torch.Tensor, settings: Faithfulness
) -> dict[str, torch.Tensor]:
    """The four columns of FAITHFULNESS for a batch: images (B, C, H, W), maps (B, H, W) in
    [0, 1]; each value a (B,) tensor on the images' device. Gradients are not needed."""
    if maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"maps {tuple(maps.shape)} do not fit images {tuple(images.shape)}")
    maps = maps.to(images)
    batch = images.shape[0]
    pixels = maps[0].numel()
    counts = step_counts(pixels, settings.steps)
    ranks = pixel_ranks(maps)
    flat = images.flatten(2)
    substrate = baseline_images(images, settings.baseline).flatten(2)
    # Jobs (image, count, deletion?): the all-baseline image ends deletion and starts
    # insertion; the original image's score starts deletion and ends insertion.
    jobs = [(i, pixels, True) for i in range(batch)]
    jobs += [(i, c, d) for i in range(batch) for c in counts[1:-1] for d in (True, False)]

    def perturbed() -> Iterator[torch.Tensor]:
        for start in range(0, len(jobs), settings.chunk):
            part = jobs[start : start + settings.chunk]
            who = torch.tensor([j[0] for j in part], device=images.device)
            count = torch.tensor([j[1] for j in part], device=images.device)
            deletion = torch.tensor([j[2] for j in part], device=images.device)
            changed = ranks[who] < count[:, None]  # (n, H*W): the first `count` pixels
            keep = (changed != deletion[:, None])[:, None]
            yield torch.where(keep, flat[who], substrate[who]).reshape(-1, *images.shape[1:])

    def explanations() -> Iterator[torch.Tensor]:
        for start in range(0, batch, settings.chunk):
            end = start + settings.chunk
            yield images[start:end] * maps[start:end, None]

    with torch.no_grad():
        original = chunked_scores(score, iter(images.split(settings.chunk)), batch)
        explained = chunked_scores(score, explanations(), batch)
        values = chunked_scores(score, perturbed(), len(jobs))
    fractions = torch.tensor(counts, dtype=torch.float32, device=images.device) / pixels
    deletion = original.new_empty(batch, len(counts))
    insertion = original.new_empty(batch, len(counts))
    deletion[:, 0], insertion[:, -1] = original, original
    deletion[:, -1] = insertion[:, 0] = values[:batch]
    interior = values[batch:].reshape(batch, len(counts) - 2, 2)
    deletion[:, 1:-1], insertion[:, 1:-1] = interior[..., 0], interior[..., 1]
    return {
        "avg_drop": torch.relu(original - explained) / (original + EPSILON),
        "conf_increase": (explained > original).float(),
        "deletion_auc": torch.trapezoid(deletion, fractions, dim=1),
        "insertion_auc": torch.trapezoid(insertion, fractions, dim=1),
    }

"""Every row of a recipe against its reference row, paired: `<recipe>_paired.md`.

The table's mean ± std per row cannot say whether two rows differ: seeds and images move
both rows together (a seed's classifier is shared by the rows of that seed, an image is hard
for every method), and that shared noise hides in each row's spread. Differences of paired
results cancel it. Per seed: reference − row of the headline metric (the table's first
column, higher is better), its mean, its minimum and in how many seeds the reference wins.
Per image, for a per-image headline (Dice over the abnormal images): the difference on
each image both runs scored, averaged over the seeds (so the images, not seed x image, are
the independent units), a two-sided Wilcoxon signed-rank test and a seeded bootstrap
percentile interval of the mean difference. A split-level headline (one confusion matrix
per run: mIoU, F1) has no per-image value, so only the per-seed pairing is given.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from experiments.recipes import Recipe, Row
from experiments.tables import DONE, Outcome
from src.evaluation.sweep_report import HEADLINE_GROUP

log = logging.getLogger(__name__)

PER_IMAGE = "per_image"  # summary.json's `headline_metrics` of a per-image headline
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Paired:
    """One row against the reference row of its group.

    `seed_differences`: reference − row of the headline, per seed both finished.
    `image_differences`: reference − row per image (mean over those seeds, images in id
    order), or None for a split-level headline (no per-image value to pair)."""

    row: Row
    reference: Row
    seed_differences: tuple[float, ...]
    image_differences: np.ndarray | None

    @property
    def reference_wins(self) -> int:
        return sum(d > 0 for d in self.seed_differences)


def reference_row(recipe: Recipe, row: Row) -> Row | None:
    """The reference of `row`: the reproduced row of its group named `recipe.reference`
    (None for the reference itself, or a group without one)."""
    for candidate in recipe.jobs():
        if candidate.group == row.group and candidate.method == recipe.reference:
            return None if candidate == row else candidate
    return None


def _headline(outcome: Outcome, metric: str) -> float | None:
    value = ((outcome.headline or {}).get(metric) or {}).get("mean")
    finite = isinstance(value, int | float) and not math.isnan(value)
    return float(value) if finite else None


def seed_pairs(reference: Outcome, row: Outcome) -> list[tuple[Outcome, Outcome]]:
    """The runs of the seeds both rows finished, matched by seed value."""
    rows = {seed: outcome for seed, outcome in row.per_seed() if outcome.status == DONE}
    return [
        (outcome, rows[seed])
        for seed, outcome in reference.per_seed()
        if outcome.status == DONE and seed in rows
    ]


def per_image_values(run_dir: Path, metric: str) -> dict[str, float] | None:
    """The run's `metric` per image of the headline group (id -> value, finite values
    only), or None if its headline is split-level (or its per_image.csv has no such column).
    A run folder deleted or emptied since its row finished (another recipe's run that this
    one reused) also gives None, with a warning: the table must still be written."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary.get("headline_metrics") != PER_IMAGE:
            return None
        with (run_dir / "per_image.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        log.warning("no per-image results for the paired comparison: %s", err)
        return None
    if rows and metric not in rows[0]:
        return None
    values, group = {}, HEADLINE_GROUP[PER_IMAGE]
    for line in rows:
        if line["group"] == group and math.isfinite(value := float(line[metric])):
            values[line["id"]] = value
    return values


def image_differences(pairs: Sequence[tuple[Outcome, Outcome]], metric: str) -> np.ndarray | None:
    """Reference − row per image scored in both runs of a seed, averaged over the seeds that
    scored it, in id order; None if a run's headline is split-level."""
    by_image: dict[str, list[float]] = {}
    for reference, row in pairs:
        ours = per_image_values(Path(reference.run_dir), metric)
        theirs = per_image_values(Path(row.run_dir), metric)
        if ours is None or theirs is None:
            return None
        for image in ours.keys() & theirs.keys():
            by_image.setdefault(image, []).append(ours[image] - theirs[image])
    return np.array([np.mean(by_image[image]) for image in sorted(by_image)])


def compare(recipe: Recipe, outcomes: dict[str, Outcome]) -> list[Paired]:
    """Every reproduced row that has a reference row, paired on the finished seeds."""
    metric = recipe.metrics[0][0]
    compared = []
    for row in recipe.jobs():
        reference = reference_row(recipe, row)
        if reference is None:
            continue
        ref_outcome, row_outcome = outcomes.get(reference.key), outcomes.get(row.key)
        pairs = (
            []
            if ref_outcome is None or row_outcome is None
            else seed_pairs(ref_outcome, row_outcome)
        )
        differences = []
        for ours, theirs in pairs:
            a, b = _headline(ours, metric), _headline(theirs, metric)
            if a is not None and b is not None:
                differences.append(a - b)
        images = image_differences(pairs, metric) if pairs else None
        compared.append(Paired(row, reference, tuple(differences), images))
    return compared


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (zero differences dropped, scipy's default);
    1 when every difference is zero (scipy would divide by zero to the same answer)."""
    if not np.any(differences):
        return 1.0
    return float(stats.wilcoxon(differences).pvalue)


def bootstrap_interval(differences: np.ndarray) -> tuple[float, float]:
    """The bootstrap percentile interval (`CONFIDENCE`) of the mean difference, resampling
    images; seeded, so a table rewritten from the same runs shows the same interval."""
    result = stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def _number(value: float, percent: bool) -> str:
    return f"{100 * value:.2f}" if percent else f"{value:.3f}"


def _line(paired: Paired, percent: bool, with_group: bool) -> list[str]:
    seeds = paired.seed_differences
    cells = [paired.row.group] if with_group else []
    cells += [paired.row.method, paired.reference.method, str(len(seeds))]
    if seeds:
        cells += [
            _number(float(np.mean(seeds)), percent),
            _number(min(seeds), percent),
            f"{paired.reference_wins}/{len(seeds)}",
        ]
    else:
        cells += ["–", "–", "–"]
    images = paired.image_differences
    if images is None:
        cells += ["split-level" if seeds else "–", "–", "–"]
    elif len(images) < 2:  # a bootstrap needs two images, a rank test more
        cells += [str(len(images)), "–", "–"]
    else:
        low, high = bootstrap_interval(images)
        cells += [
            str(len(images)),
            f"{wilcoxon_p(images):.3g}",
            f"[{_number(low, percent)}, {_number(high, percent)}]",
        ]
    return cells


def render_paired(recipe: Recipe, outcomes: dict[str, Outcome], mode_note: str = "") -> str | None:
    """The paired comparison as Markdown, or None before the reference and another row of
    its group have a finished seed in common (or for a recipe without a reference)."""
    if not recipe.reference:
        return None
    compared = compare(recipe, outcomes)
    if not any(paired.seed_differences for paired in compared):
        return None
    percent = recipe.layout != "mean_std"
    metric, title = recipe.metrics[0]
    units = "percentage points" if percent else "the metric's units"
    with_group = any(paired.row.group for paired in compared)
    header = (["Group"] if with_group else []) + [
        "Method",
        "Reference",
        "seeds",
        "mean Δ",
        "min Δ",
        "reference wins",
        "images",
        "Wilcoxon p",
        f"bootstrap {CONFIDENCE:.0%} CI of mean Δ",
    ]
    notes = [
        mode_note,
        f"Δ = reference − row of the headline {title} (`{metric}`, higher is better) in {units}; "
        f"the reference is {recipe.reference} of the row's group",
        "per seed: Δ on each seed both rows finished (the rows of a seed share its "
        "classifier); mean Δ, min Δ and the number of seeds where the reference is higher",
        "per image (per-image headlines): Δ on each image of the headline group scored by "
        "both runs, averaged over the seeds; two-sided Wilcoxon signed-rank test (zero "
        "differences dropped; p = 1 when all are zero) and bootstrap percentile interval of "
        f"the mean Δ over images ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})",
        "split-level: the headline is one confusion matrix over the split, per-image pairing "
        "is not defined: per-seed pairing only",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_line(p, percent, with_group)) + " |" for p in compared]
    text = f"# {recipe.title}: paired against {recipe.reference}\n\n"
    text += "".join(f"- {note}\n" for note in notes if note)
    return text + "\n" + "\n".join(lines) + "\n"

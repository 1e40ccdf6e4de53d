"""LT-Grad-CAM's δ chosen on the training split and reported on the test split, in one command.

The paper picks the truncation percentile δ on KSDD2's training split (its Fig. 5) and reports
the chosen δ on the test split. `run_selection` runs the Fig. 5 sweep (`ltgrad_fig5`, every
δ of every method, on the train split), takes per method the δ with the highest train mIoU,
then runs that δ on the test split (the matching rows of `ltgrad_fig4`) and writes
`ltgrad_delta_select.md/.csv`: method, chosen δ, its train mIoU and the test metrics. With
several seeds the choice is made on the mean train curve over the seeds, and the test cells
are the chosen row's mean ± std over the seeds. Both
phases go through the recipe engine, so they reuse finished rows, share the classifier and
can run as parallel jobs (`--launcher`).

A grid, not Optuna's sampler: δ is one parameter on the paper's grid of ten values (0, 10,
..., 90), and the paper's Fig. 5 needs every point anyway. Optuna's TPE draws its first ten
trials at random (`n_startup_trials`), so with ten or fewer trials it is a random search of
the same grid, one trial after the other unless run in parallel; the grid evaluates all ten
at once as independent jobs, with one shared classifier, and finds the exact maximum.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from experiments.engine import Settings, collect_recipe, results_paths, run_recipe, seeds_note
from experiments.recipes import RECIPES, Recipe, Row
from experiments.tables import DONE, Outcome, ours_cell
from src.data.atomic import atomic_write_text

NAME = "ltgrad_delta_select"
TITLE = "LT-Grad-CAM: δ chosen on the KSDD2 train split (max mIoU), reported on the test split"
TRAIN, TEST = "ltgrad_fig5", "ltgrad_fig4"
SELECT_BY = "miou"
TEST_METRICS = (("miou", "mIoU"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"))


def row_delta(row: Row) -> int:
    """The δ of a sweep row (its `cam.options.delta=` override)."""
    for override in row.overrides:
        if override.startswith("cam.options.delta="):
            return int(override.split("=", 1)[1])
    raise ValueError(f"row {row.key} has no cam.options.delta override")


def best_deltas(recipe: Recipe, outcomes: dict[str, Outcome]) -> dict[str, tuple[Row, float]]:
    """Per method (the rows' group), the finished row with the highest mean `SELECT_BY`
    (with several seeds: of the mean over the seeds, the mean train curve); a tie goes to the
    smaller δ (less truncation). Methods with no finished row are absent."""
    best: dict[str, tuple[Row, float]] = {}
    for row in sorted(recipe.jobs(), key=row_delta):
        outcome = outcomes.get(row.key)
        if outcome is None or outcome.status != DONE:
            continue
        value = ((outcome.headline or {}).get(SELECT_BY) or {}).get("mean")
        if value is None:
            continue
        if row.group not in best or value > best[row.group][1]:
            best[row.group] = (row, float(value))
    return best


def matching_test_row(recipe: Recipe, chosen: Row) -> Row:
    """The test-split row with the same method and δ as the chosen train-split row."""
    for row in recipe.jobs():
        if row.group == chosen.group and row.overrides == chosen.overrides:
            return row
    raise ValueError(f"{recipe.name} has no row for {chosen.group} {chosen.method}")


def render(
    chosen: dict[str, tuple[Row, float]],
    tests: dict[str, tuple[Row, Outcome | None]],
    seeds: int = 1,
) -> tuple[str, str]:
    """The selection table as Markdown and CSV (percent in Markdown, fractions in CSV); with
    several `seeds` the notes say that the train value is the seeds' mean and what the test
    cells aggregate."""
    header = ["Method", "δ (chosen on train)", "train mIoU"]
    header += [f"test {title}" for _, title in TEST_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "delta", "train_miou", *(f"test_{m}" for m, _ in TEST_METRICS)])
    for method, (row, train_value) in chosen.items():
        test, outcome = tests[method]
        cells = [
            ours_cell(test, outcome, metric, True, i == 0)
            for i, (metric, _) in enumerate(TEST_METRICS)
        ]
        lines.append(
            "| "
            + " | ".join([method, str(row_delta(row)), f"{100 * train_value:.2f}", *cells])
            + " |"
        )
        headline = (outcome.headline or {}) if outcome and outcome.status == DONE else {}
        means = [(headline.get(metric) or {}).get("mean") for metric, _ in TEST_METRICS]
        writer.writerow([method, row_delta(row), train_value, *means])
    notes = [f"train sweep: {TRAIN}; test rows: {TEST}"]
    if seeds > 1:
        notes.append(f"δ chosen on the mean train curve over the seeds; {seeds_note(seeds)}")
    text = f"# {TITLE}\n\n" + "".join(f"- {note}\n" for note in notes)
    text += "\n" + "\n".join(lines) + "\n"
    return text, buffer.getvalue()


def run_selection(
    settings: Settings, dry_run: bool = False, collect: bool = False
) -> tuple[dict[str, Outcome], list[Path]]:
    """The train sweep, the choice per method, the chosen δ on the test split, the table.
    `collect`: run nothing, read both phases from the run folders of earlier jobs."""

    def phase(recipe: Recipe, phase_settings: Settings) -> tuple[dict[str, Outcome], list[Path]]:
        if collect:
            return collect_recipe(recipe, phase_settings)
        return run_recipe(recipe, phase_settings, dry_run)

    train_recipe, test_recipe = RECIPES[TRAIN], RECIPES[TEST]
    train_outcomes, written = phase(train_recipe, settings)
    if dry_run:
        print(
            f"# then, per method, the δ with the best train {SELECT_BY} on the test split ({TEST})"
        )
        return train_outcomes, []
    chosen = best_deltas(train_recipe, train_outcomes)
    tests = {method: matching_test_row(test_recipe, row) for method, (row, _) in chosen.items()}
    only = tuple(row.key for row in tests.values())
    test_outcomes: dict[str, Outcome] = {}
    if only:
        test_outcomes, more = phase(test_recipe, dataclasses.replace(settings, only=only))
        written += more
    markdown, table_csv = render(
        chosen,
        {m: (row, test_outcomes.get(row.key)) for m, row in tests.items()},
        settings.seeds,
    )
    paths = results_paths(dataclasses.replace(test_recipe, name=NAME), settings)
    atomic_write_text(paths["markdown"], markdown)
    atomic_write_text(paths["csv"], table_csv)
    outcomes = {**train_outcomes, **{f"test/{k}": v for k, v in test_outcomes.items()}}
    return outcomes, [*written, paths["markdown"], paths["csv"]]

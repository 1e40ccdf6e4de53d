"""Render a recipe's results in the paper's layout, our numbers beside the paper's.

Layouts (`Recipe.layout`):
- `mean_std` (Cfd-CAM Tables 1-2): one line per row, "ours" and "paper" columns per metric,
  cells "mean ± std" with three decimals (the paper's format);
- `percent` (LT-Grad-CAM Tables 2-4): one line per method, values in percent, two decimals;
- `stages` (LT-Grad-CAM Table 1): the paper's transposed table, one column per stage block,
  an "ours" and a "paper" line per metric;
- `sweep` (LT-Grad-CAM Fig. 4/5): one line per delta, one column per method and metric.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from experiments.paper_numbers import PAPER, PaperValue
from experiments.recipes import Recipe, Row

DONE, FAILED, NOT_RUN = "done", "failed", "not run"


@dataclass(frozen=True)
class Outcome:
    """What became of one row's job: its headline (`summary["headline"]`) or why there is none."""

    status: str
    headline: dict[str, dict[str, float | None]] | None = None
    reason: str = ""
    run_dir: str = ""
    seconds: float | None = None
    log: str = ""  # the job's log, for a failed job run by a launcher


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float, percent: bool) -> str:
    return f"{100 * value:.2f}" if percent else f"{value:.3f}"


def ours_cell(
    row: Row, outcome: Outcome | None, metric: str, percent: bool, first: bool = True
) -> str:
    """Our value of `metric` for `row`, or why it is missing (the reason only in the row's
    `first` cell, so a failed row reads "failed: <reason> | failed | failed")."""
    if not row.reproduced:
        return "not reproduced"
    if outcome is None or outcome.status not in (DONE, FAILED):
        status = NOT_RUN
    else:
        status = outcome.status
    if status != DONE:
        reason = outcome.reason if outcome is not None else ""
        return f"{status}: {_short(reason)}" if first and reason else status
    stats = (outcome.headline or {}).get(metric) or {}
    mean, std = stats.get("mean"), stats.get("std")
    if not _finite(mean):
        return "n/a"
    if _finite(std):
        return f"{_number(mean, percent)} ± {_number(std, percent)}"
    return _number(mean, percent)


def paper_cell(value: PaperValue | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, tuple):
        return f"{value[0]:.3f} ± {value[1]:.3f}"
    return f"{value:g}"


def _markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def _paper(recipe: Recipe, row: Row) -> dict[str, PaperValue]:
    return PAPER.get(recipe.name, {}).get((row.group, row.method), {})


def _rows_table(recipe: Recipe, outcomes: dict[str, Outcome], percent: bool) -> str:
    with_group = any(row.group for row in recipe.rows)
    with_kind = any(row.kind for row in recipe.rows)
    header = (["Dataset"] if with_group else []) + (["Type"] if with_kind else []) + ["Method"]
    for _, title in recipe.metrics:
        header += [f"{title} (ours)", f"{title} (paper)"]
    lines = []
    for row in recipe.rows:
        line = ([row.group] if with_group else []) + ([row.kind] if with_kind else [])
        line.append(row.method)
        paper = _paper(recipe, row)
        for i, (metric, _) in enumerate(recipe.metrics):
            line += [
                ours_cell(row, outcomes.get(row.key), metric, percent, first=i == 0),
                paper_cell(paper.get(metric)),
            ]
        lines.append(line)
    return _markdown_table(header, lines)


def _stages_table(recipe: Recipe, outcomes: dict[str, Outcome]) -> str:
    header = ["block", *(row.method for row in recipe.rows)]
    lines = []
    for metric, title in recipe.metrics:
        lines.append(
            [f"{title} (ours)"]
            + [ours_cell(row, outcomes.get(row.key), metric, True) for row in recipe.rows]
        )
        lines.append(
            [f"{title} (paper)"]
            + [paper_cell(_paper(recipe, row).get(metric)) for row in recipe.rows]
        )
    return _markdown_table(header, lines)


def _sweep_table(recipe: Recipe, outcomes: dict[str, Outcome]) -> str:
    groups = list(dict.fromkeys(row.group for row in recipe.rows))
    steps = list(dict.fromkeys(row.method for row in recipe.rows))
    cells = {(row.group, row.method): row for row in recipe.rows}
    header = ["δ"] + [f"{group} {title}" for group in groups for _, title in recipe.metrics]
    lines = []
    for step in steps:
        line = [step.removeprefix("δ=")]
        for group in groups:
            row = cells.get((group, step))
            for i, (metric, _) in enumerate(recipe.metrics):
                outcome = None if row is None else outcomes.get(row.key)
                line.append("–" if row is None else ours_cell(row, outcome, metric, True, i == 0))
        lines.append(line)
    return _markdown_table(header, lines)


def render_markdown(recipe: Recipe, outcomes: dict[str, Outcome], mode_note: str = "") -> str:
    """The recipe's table as Markdown: title, notes (incl. `mode_note`, e.g. the demo subset)
    and the table in the paper's layout."""
    percent = recipe.layout != "mean_std"
    if recipe.layout in ("mean_std", "percent"):
        table = _rows_table(recipe, outcomes, percent)
    elif recipe.layout == "stages":
        table = _stages_table(recipe, outcomes)
    elif recipe.layout == "sweep":
        table = _sweep_table(recipe, outcomes)
    else:
        raise ValueError(f"recipe {recipe.name}: unknown layout {recipe.layout!r}")
    notes = ([mode_note] if mode_note else []) + list(recipe.notes)
    text = f"# {recipe.title}\n\n"
    text += "".join(f"- {note}\n" for note in notes)
    logs = [(key, o.log) for key, o in outcomes.items() if o.status == FAILED and o.log]
    if logs:
        table += "\nLogs of the failed rows:\n\n" + "".join(f"- `{k}`: {p}\n" for k, p in logs)
    return text + "\n" + table


CSV_FIELDS = (
    "recipe",
    "group",
    "type",
    "method",
    "metric",
    "ours_mean",
    "ours_std",
    "paper_mean",
    "paper_std",
    "status",
    "reason",
    "seconds",
    "run_dir",
    "log",
)


def render_csv(recipe: Recipe, outcomes: dict[str, Outcome]) -> str:
    """Long format: one line per row and metric, raw fractions (not percent) for ours,
    the paper's value as printed."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in recipe.rows:
        outcome = outcomes.get(row.key)
        paper = _paper(recipe, row)
        for metric, _ in recipe.metrics:
            stats = ((outcome.headline or {}) if outcome else {}).get(metric) or {}
            value = paper.get(metric)
            paper_mean, paper_std = value if isinstance(value, tuple) else (value, None)
            status = (
                "not reproduced" if not row.reproduced else (outcome or Outcome(NOT_RUN)).status
            )
            writer.writerow(
                {
                    "recipe": recipe.name,
                    "group": row.group,
                    "type": row.kind,
                    "method": row.method,
                    "metric": metric,
                    "ours_mean": stats.get("mean"),
                    "ours_std": stats.get("std"),
                    "paper_mean": paper_mean,
                    "paper_std": paper_std,
                    "status": status,
                    "reason": outcome.reason if outcome else "",
                    "seconds": None
                    if outcome is None or outcome.seconds is None
                    else round(outcome.seconds, 1),
                    "run_dir": outcome.run_dir if outcome else "",
                    "log": outcome.log if outcome else "",
                }
            )
    return buffer.getvalue()

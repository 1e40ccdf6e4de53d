"""Render a recipe's results in the paper's layout, our numbers beside the paper's.

Layouts (`Recipe.layout`):
- `mean_std` (Cfd-CAM Tables 1-2): one line per row, "ours" and "paper" columns per metric,
  cells "mean ± std" with three decimals (the paper's format);
- `percent` (LT-Grad-CAM Tables 2-4): one line per method, values in percent, two decimals;
- `stages` (LT-Grad-CAM Table 1): the paper's transposed table, one column per stage block,
  an "ours" and a "paper" line per metric;
- `sweep` (LT-Grad-CAM Fig. 4/5): one line per delta, one column per method and metric.

With several seeds per row (`run_recipe.py --seeds N`) a row's outcome aggregates its
seeds' (`aggregate_seeds`): every cell is the mean ± population std over the seeds, the CSV
adds a line per seed, and a sweep states the seed noise beside the change over δ.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.paper_numbers import PAPER, PaperValue
from experiments.recipes import Recipe, Row

DONE, FAILED, NOT_RUN = "done", "failed", "not run"
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Outcome:
    """What became of one row's job: its headline (`summary["headline"]`) or why there is none.

    A row run with several seeds has the aggregate of its seeds' outcomes (`aggregate_seeds`):
    `seeds` holds each seed's value and outcome, and each headline metric also has `n`, the
    number of seeds it is over."""

    status: str
    headline: dict[str, dict[str, float | None]] | None = None
    reason: str = ""
    run_dir: str = ""
    seconds: float | None = None
    log: str = ""  # the job's log, for a failed job run by a launcher
    seeds: tuple[tuple[int | None, Outcome], ...] = ()

    def per_seed(self) -> tuple[tuple[int | None, Outcome], ...]:
        """The outcome of each seed: the aggregated ones, or this one as the only seed (whose
        value, the config's, is not known here)."""
        return self.seeds or ((None, self),)


def aggregate_seeds(per_seed: Sequence[tuple[int | None, Outcome]]) -> Outcome:
    """A row's outcome over its seeds: per headline metric the mean and population std
    (ddof=0: the spread of these seeds, not an estimate for others) of the finished seeds'
    means, and how many seeds that is (`n`). Done if any seed finished (the cells say how
    many), else failed if any seed failed, else not run; the reason names the seeds that did
    not finish."""
    done = [outcome for _, outcome in per_seed if outcome.status == DONE]
    headline: dict[str, dict[str, float | None]] = {}
    for metric in dict.fromkeys(m for outcome in done for m in outcome.headline or {}):
        values = [
            float(mean)
            for outcome in done
            if _finite(mean := ((outcome.headline or {}).get(metric) or {}).get("mean"))
        ]
        headline[metric] = {
            "mean": statistics.fmean(values) if values else math.nan,
            "std": statistics.pstdev(values) if values else None,
            "n": len(values),
        }
    unfinished = [
        f"seed {seed} {outcome.status}" + (f": {outcome.reason}" if outcome.reason else "")
        for seed, outcome in per_seed
        if outcome.status != DONE
    ]
    statuses = {outcome.status for _, outcome in per_seed}
    status = DONE if done else FAILED if FAILED in statuses else NOT_RUN
    reason = "; ".join(unfinished) if done or status == FAILED else ""
    seconds = [o.seconds for o in done if o.seconds is not None]
    return Outcome(
        status,
        headline if done else None,
        reason,
        per_seed[0][1].run_dir,
        sum(seconds) if seconds else None,
        seeds=tuple(per_seed),
    )


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
    stats = _stats(outcome, metric)
    mean, std = stats.get("mean"), stats.get("std")
    if not _finite(mean):
        return "n/a"
    seeds = _seed_count(outcome, stats)
    if _finite(std):
        return f"{_number(mean, percent)} ± {_number(std, percent)}{seeds}"
    return _number(mean, percent) + seeds


def _seed_count(outcome: Outcome, stats: dict[str, Any]) -> str:
    """The suffix " (k/n seeds)" when the value is over only k of the row's n seeds (the others
    failed, have not run yet, or have no value), so a partial mean is not read as a full one."""
    n = len(outcome.seeds)
    return f" ({stats['n']}/{n} seeds)" if n and stats.get("n", n) < n else ""


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
    if any(outcome.seeds for outcome in outcomes.values()):
        noise, change = ["seed std (mean over δ)"], ["range over δ (max − min of the mean)"]
        for group in groups:
            group_outcomes = [outcomes.get(row.key) for row in recipe.rows if row.group == group]
            for metric, _ in recipe.metrics:
                std, spread = seed_noise(group_outcomes, metric)
                noise.append("–" if std is None else _number(std, True))
                change.append("–" if spread is None else _number(spread, True))
        lines += [noise, change]
    return _markdown_table(header, lines)


def seed_noise(
    outcomes: Sequence[Outcome | None], metric: str
) -> tuple[float | None, float | None]:
    """Whether a sweep's change over δ exceeds the seed noise: the std over seeds of
    `metric` at each δ, averaged over the δs with at least two seeds, and the range (max −
    min) over δ of the mean curve; None where there is nothing to take it over."""
    stds, means = [], []
    for outcome in outcomes:
        stats = _stats(outcome, metric) if outcome and outcome.status == DONE else {}
        if _finite(stats.get("mean")):
            means.append(stats["mean"])
            if stats.get("n", 0) >= 2:
                stds.append(stats["std"])
    std = statistics.fmean(stds) if stds else None
    return std, (max(means) - min(means) if means else None)


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
    logs = [
        (key if seed is None else f"{key}, seed {seed}", run.log)
        for key, o in outcomes.items()
        for seed, run in o.per_seed()
        if run.status == FAILED and run.log
    ]
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


#: With several seeds: which seed a line is (its value, or `ALL_SEEDS` for the aggregate)
#: and how many seeds the aggregate is over.
SEED_FIELDS = ("seed", "n_seeds")
ALL_SEEDS = "all"


def render_csv(recipe: Recipe, outcomes: dict[str, Outcome], seeds: int = 1) -> str:
    """Long format: one line per row and metric, raw fractions (not percent) for ours,
    the paper's value as printed.

    With `seeds` > 1 two more columns, `seed` and `n_seeds`: per row and metric first the
    aggregate line (`seed` "all": ours_mean/ours_std = mean and population std over the
    `n_seeds` finished seeds), then one line per seed (`seed` = its value; ours_std = that
    run's own std, e.g. over the images), so one file holds both."""
    buffer = io.StringIO()
    fields = CSV_FIELDS + (SEED_FIELDS if seeds > 1 else ())
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in recipe.rows:
        outcome = outcomes.get(row.key)
        paper = _paper(recipe, row)
        for metric, _ in recipe.metrics:
            value = paper.get(metric)
            paper_mean, paper_std = value if isinstance(value, tuple) else (value, None)
            line = {
                "recipe": recipe.name,
                "group": row.group,
                "type": row.kind,
                "method": row.method,
                "metric": metric,
                "paper_mean": paper_mean,
                "paper_std": paper_std,
            }
            if seeds == 1:
                writer.writerow({**line, **_csv_outcome(row, outcome, metric)})
                continue
            n_seeds = _stats(outcome, metric).get("n", 0)
            aggregate = {"seed": ALL_SEEDS, "n_seeds": n_seeds}
            writer.writerow({**line, **_csv_outcome(row, outcome, metric), **aggregate})
            for seed, seed_outcome in outcome.seeds if outcome else ():
                writer.writerow({**line, **_csv_outcome(row, seed_outcome, metric), "seed": seed})
    return buffer.getvalue()


def _stats(outcome: Outcome | None, metric: str) -> dict[str, Any]:
    """The headline statistics of `metric` in `outcome` ({} if it has none)."""
    return ((outcome.headline or {}) if outcome else {}).get(metric) or {}


def _csv_outcome(row: Row, outcome: Outcome | None, metric: str) -> dict[str, Any]:
    """The CSV columns of one outcome's `metric`: ours, the status and where the run is."""
    stats = _stats(outcome, metric)
    status = "not reproduced" if not row.reproduced else (outcome or Outcome(NOT_RUN)).status
    return {
        "ours_mean": stats.get("mean"),
        "ours_std": stats.get("std"),
        "status": status,
        "reason": outcome.reason if outcome else "",
        "seconds": None
        if outcome is None or outcome.seconds is None
        else round(outcome.seconds, 1),
        "run_dir": _portable(outcome.run_dir) if outcome else "",
        "log": _portable(outcome.log) if outcome else "",
    }


def _portable(path: str) -> str:
    """A path inside this checkout relative to it, so committed tables hold no machine's
    folders; any other path as it is."""
    if not path:
        return path
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path

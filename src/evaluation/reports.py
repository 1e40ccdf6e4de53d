"""Result files of an evaluation: per_image.csv, summary.json and the printed table.

Everything is written to a temporary file and renamed, so an interrupted run never leaves a
half-written result beside complete ones.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from src.data.atomic import atomic_write_text
from src.evaluation.image_result import ImageResult
from src.evaluation.metrics import GROUPS
from src.evaluation.volumes import CASE_COLUMNS, CaseResult


def write_per_image_csv(results: Sequence[ImageResult], path: str | os.PathLike) -> None:
    """One row per image, sorted by id; the columns are the first result's (`ImageResult`)."""
    if not results:
        raise ValueError("no evaluated images to write")
    buffer = io.StringIO()
    fields = list(results[0].as_row())
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for result in sorted(results, key=lambda r: r.id):
        writer.writerow(result.csv_row())
    atomic_write_text(path, buffer.getvalue())


def write_per_case_csv(cases: Sequence[CaseResult], path: str | os.PathLike) -> None:
    """One row per scored case, in the order given; only the header when no case was
    complete (the summary says how many were left out)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CASE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for case in cases:
        writer.writerow(case.csv_row())
    atomic_write_text(path, buffer.getvalue())


def finite(value: Any) -> Any:
    """NaN (e.g. the mean of an empty group) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_json(data: dict[str, Any], path: str | os.PathLike) -> None:
    """`data` as indented JSON, NaN written as null (`finite`)."""
    atomic_write_text(path, json.dumps(finite(data), indent=2, allow_nan=False) + "\n")


def format_table(summary: dict[str, Any], metrics: Sequence[str], title: str = "") -> str:
    """A fixed-width table, one row per group: `mean ± std` of each metric and the count."""
    header = ["group", "n", *metrics]
    lines = []
    for group in GROUPS:
        stats = summary.get(group)
        if not stats or not stats.get("n"):
            continue
        cells = [group, str(stats["n"])]
        for metric in metrics:
            mean, std = stats[f"{metric}_mean"], stats[f"{metric}_std"]
            undefined = mean is None or mean != mean  # None (from finite) or NaN
            cells.append("—" if undefined else f"{mean:.3f} ± {std:.3f}")
        lines.append(cells)
    widths = [
        max(len(h), *(len(row[i]) for row in lines)) if lines else len(h)
        for i, h in enumerate(header)
    ]

    def fmt(cells: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    rule = "-+-".join("-" * w for w in widths)
    out = [title] if title else []
    out += [fmt(header), rule, *(fmt(row) for row in lines)]
    return "\n".join(out)


def format_headline(headline: dict[str, dict[str, Any]], kind: str) -> str:
    """One line per headline metric, as the papers' tables report them."""
    lines = [f"headline ({kind}):"]
    for metric, stats in headline.items():
        mean, std = stats.get("mean"), stats.get("std")
        if mean is None:
            text = "n/a"
        elif std is None:
            text = f"{mean:.4f}"
        else:
            text = f"{mean:.3f} ± {std:.3f}"
        lines.append(f"  {metric:<10} {text}")
    return "\n".join(lines)

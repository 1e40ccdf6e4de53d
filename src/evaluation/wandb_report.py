"""Evaluation results on a W&B dashboard: summary metrics, per-image table, figures.

Only called when a W&B logger is configured; the run is offline unless the user set
WANDB_MODE=online, so nothing leaves the machine by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def flatten(prefix: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """{"abnormal": {"dice_mean": 0.5}} -> {"<prefix>/abnormal/dice_mean": 0.5}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(name, value))
        elif isinstance(value, int | float | str) or value is None:
            flat[name] = value
    return flat


def log_results(
    run: Any,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    overlays: Mapping[str, np.ndarray],
    figures: Sequence[Path],
    files: Sequence[Path] = (),
) -> None:
    """Write the metrics into the run summary, log the per-image table and figures, and
    attach result `files` to the run.

    `overlays` maps some image ids to an RGB overlay (image / CAM / mask); those rows of the
    table show it, the others leave the image cell empty (a BraTS test split has thousands of
    slices; images for all of them would make the run huge).
    """
    import wandb

    run.summary.update(flatten("eval", summary["groups"]))
    run.summary.update(flatten("eval/headline", summary["headline"]))
    columns = list(rows[0]) + ["overlay"]
    table = wandb.Table(columns=columns)
    for row in rows:
        overlay = overlays.get(row["id"])
        image = wandb.Image(overlay) if overlay is not None else None
        table.add_data(*(row[c] for c in columns[:-1]), image)
    payload: dict[str, Any] = {"eval/per_image": table}
    for path in figures:
        if path.is_file():
            payload[f"eval/{path.stem}"] = wandb.Image(str(path))
    run.log(payload)
    for path in files:  # e.g. summary.json and per_image.csv, readable without a W&B server
        run.save(str(path), base_path=str(path.parent), policy="now")

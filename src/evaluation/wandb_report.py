"""Evaluation results on a W&B dashboard: summary metrics, per-image table, figures.

Only called when a W&B logger is configured; the run is offline unless the user set
WANDB_MODE=online, so nothing leaves the machine by default.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from src.data.atomic import atomic_write_bytes


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


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_overlays(run_dir: str | Path, overlays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Write each overlay as a PNG into `run_dir/overlays/` (atomically); returns the file of
    each image id, relative to `run_dir`.

    W&B keeps the images of a logged table only in the table's artifact, which an offline
    run stages outside its folder; the run's own table file then holds the word "Image".
    Files in the run folder travel with it (and `wandb sync` uploads them)."""
    names = {}
    for number, (image_id, overlay) in enumerate(overlays.items()):
        name = f"overlays/{number:02d}_{re.sub(r'[^A-Za-z0-9._-]', '_', image_id)}.png"
        atomic_write_bytes(Path(run_dir) / name, _png(overlay))
        names[image_id] = name
    return names


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

    `overlays` maps some image ids (the figure's) to an RGB strip (image / ground truth / map
    / mask, `figures.overlay_strip`); those rows of the table show it in `overlay` and name
    its PNG in the run folder in `overlay_file` (see `save_overlays`); the other rows leave
    both empty (a BraTS test split has thousands of slices; images for all of them would
    make the run huge).
    """
    import wandb  # optional: only runs with logger=wandb need it

    run.summary.update(flatten("eval", summary["groups"]))
    run.summary.update(flatten("eval/headline", summary["headline"]))
    overlay_files = save_overlays(run.dir, overlays)
    columns = [*rows[0], "overlay", "overlay_file"]
    table = wandb.Table(columns=columns)
    for row in rows:
        name = overlay_files.get(row["id"])
        image = None if name is None else wandb.Image(str(Path(run.dir) / name), caption=row["id"])
        table.add_data(*(row[c] for c in columns[:-2]), image, name)
    payload: dict[str, Any] = {"eval/per_image": table}
    for path in figures:
        if path.is_file():
            payload[f"eval/{path.stem}"] = wandb.Image(str(path))
    run.log(payload)
    for name in overlay_files.values():
        run.save(str(Path(run.dir) / name), base_path=run.dir, policy="now")
    for path in files:  # e.g. summary.json and per_image.csv, readable without a W&B server
        run.save(str(path), base_path=str(path.parent), policy="now")
        relative_link(Path(run.dir) / path.name, path)


def relative_link(link: Path, target: Path) -> None:
    """Point the symlink `link` (W&B's link to a saved file, absolute) at `target` by a
    relative path, so the link still resolves when the run folder is moved or copied to
    another machine with its W&B runs."""
    if not link.is_symlink():
        return  # W&B copied the file (or will upload it) rather than linking it
    relative = os.path.relpath(target.resolve(), link.parent.resolve())
    spare = link.with_name(f".{link.name}.tmp")
    spare.unlink(missing_ok=True)
    spare.symlink_to(relative)
    os.replace(spare, link)  # atomic: the link is never missing

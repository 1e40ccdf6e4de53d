"""Errors a user can fix (a config value, a dataset file, a checkpoint): one line, exit 2.

Their message names the field or file; a traceback would only bury it. Internal errors are
not caught here and keep theirs. `HYDRA_FULL_ERROR=1` re-raises user errors too.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from src.data.errors import DataFormatError
from src.models.checkpoints import CheckpointError
from src.pipeline.config import ConfigError
from src.pipeline.resume import KEY_FILE

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataFormatError, CheckpointError)
EXIT_STATUS = 2
HINT = "(HYDRA_FULL_ERROR=1 shows the traceback)"
# What a failed start leaves in a run folder: Hydra's config copies and log, the split,
# empty logger folders, and `checkpoints/` while it holds only the training keys a stage
# writes before it reads its first batch (`src.pipeline.resume.KEY_FILE`). Anything else
# (results, checkpoints) keeps the folder.
DISPOSABLE = frozenset({".hydra", "csv", "split.json", "multirun.yaml"})
CHECKPOINTS = "checkpoints"


def full_error_wanted() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def report(error: Exception) -> None:
    """Print `error` as one line on stderr."""
    kind = "data" if isinstance(error, DataFormatError) else "checkpoint"
    kind = "config" if isinstance(error, ConfigError) else kind
    print(f"Error ({kind}): {error} {HINT}", file=sys.stderr)


def remove_if_disposable(folder: Path) -> bool:
    """Delete `folder` if it holds only what a failed start writes (see DISPOSABLE; `*.log`
    too); True if it was deleted."""
    if not folder.is_dir():
        return False
    for entry in folder.iterdir():
        if entry.name in DISPOSABLE or (entry.is_file() and entry.suffix == ".log"):
            continue
        if entry.name == CHECKPOINTS and entry.is_dir() and _only_training_keys(entry):
            continue
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _only_training_keys(checkpoints: Path) -> bool:
    """Whether `checkpoints` holds no file but the stages' training keys (no checkpoint)."""
    return all(p.is_dir() or p.name == KEY_FILE for p in checkpoints.rglob("*"))


def clean_up_failed_start(run_dir: Path, sweep_dir: Path | None, resumed: bool = False) -> None:
    """Remove the run folder of a failed start and, once empty of jobs, its sweep folder.

    A `resumed` run's folder existed before this start and is never removed."""
    if resumed:
        return
    if remove_if_disposable(run_dir) and sweep_dir is not None:
        remove_if_disposable(sweep_dir)

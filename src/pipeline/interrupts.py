"""Stopping a run by Ctrl+C or SIGTERM (what SLURM sends at the end of a job's time), so that
`resume=<run folder>` finishes it.

Lightning on its own answers SIGTERM by setting a flag that its loops read after each batch,
and one batch of a perturbation CAM (Cfd-CAM, ScoreCAM: hundreds of forwards per image) can
outlast SLURM's grace period before its SIGKILL. The entry point therefore turns SIGTERM into
the KeyboardInterrupt of a Ctrl+C, which stops the current batch at once; Lightning keeps its
own SIGTERM handler and calls this one after it. Every result file is written atomically, so
a stopped run leaves nothing half-written, and without its `config.yaml` (written last) the
run is one that `resume=` continues.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

#: The signals received, in order (empty: the run was not stopped by a signal).
received: list[int] = []


def _stop(signum: int, frame: FrameType | None) -> None:
    """Remember the signal and interrupt whatever runs, as Ctrl+C does."""
    received.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT and SIGTERM to `_stop` (the entry point, once per process)."""
    received.clear()
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def stopped_by_signal() -> bool:
    """Whether this process was stopped by Ctrl+C or SIGTERM (Lightning turns the
    KeyboardInterrupt into its own exit, so the exception alone does not say)."""
    return bool(received)


def exit_status() -> int:
    """The shell's convention for a process ended by the first signal received: 128 + its
    number (130 for Ctrl+C, 143 for SIGTERM)."""
    return 128 + received[0]


def resume_hint(run_dir: Path) -> str:
    """What to type to finish the stopped run."""
    name = signal.Signals(received[0]).name if received else "an interrupt"
    return f"Stopped by {name}. To finish this run: python -m src.run resume={run_dir.resolve()}"

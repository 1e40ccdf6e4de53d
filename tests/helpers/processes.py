"""Run Python in a process of its own, from the repository root.

DDP launchers and Hydra multirun re-execute their command line, which cannot start from
inside pytest, so those tests run a script or module as a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Seconds after which a child process counts as hung. Generous on purpose: on a machine whose
#: cores other jobs keep busy a start-up alone (importing torch) can take a minute.
TIMEOUT = 1800.0


def run_python(*arguments: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python *arguments`` from the repository (on PYTHONPATH); fails the test with the end
    of stderr if the process fails."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result

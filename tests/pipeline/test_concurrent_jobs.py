"""Three jobs of one sweep started at the same time on a fresh checkout (the demo config):
the demo data is generated once, the classifier trained once, and every job's results equal
those of a job run alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import REPO, TIMEOUT

pytestmark = pytest.mark.slow

# The demo config with tiny budgets; each job evaluates with another CAM.
TINY_DEMO = (
    "data.demo.n_cases=4",
    "data.demo.normal_cases=1",
    "+data.demo.shape=[48,48,24]",
    "+data.demo.workers=1",
    "data.slice_range=null",
    "data.slice_step=2",
    "data.image_size=64",
    "finetune.epochs=1",
    "finetune.batch_size=8",
    "eval.limit=3",
    "eval.mask_workers=0",
    "eval.figure_images=1",
    "cam.mask=otsu",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "threads=1",
)
METHODS = ("cam=gradcam", "cam=layercam", "cam=xgradcam")


def _start(cache: Path, run_dir: Path, method: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [*TINY_DEMO, method, f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(
        [sys.executable, "-m", "src.run", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(job: subprocess.Popen) -> str:
    output, _ = job.communicate(timeout=TIMEOUT)
    assert job.returncode == 0, output[-3000:]
    return output


def _headline(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["headline"]


def test_three_jobs_at_once_train_once_and_match_a_sequential_run(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    jobs = [_start(cache, tmp_path / f"job{i}", m) for i, m in enumerate(METHODS)]
    logs = [_finish(job) for job in jobs]

    text = "\n".join(logs)
    assert text.count("generating demo data") == 1
    trained = [i for i in range(3) if (tmp_path / f"job{i}" / "checkpoints").exists()]
    assert len(trained) == 1
    assert sum("Reusing the finetune weights" in log for log in logs) == 2
    entries = [p.name for p in (cache / "classifiers").iterdir()]
    assert len(entries) == 1 and entries[0].startswith("finetune-"), entries
    assert not [p for p in (cache / "demo").iterdir() if p.name.startswith(".")]

    # The same jobs one after the other on a fresh checkout of their own.
    alone = tmp_path / "alone"
    for i, method in enumerate(METHODS):
        _finish(_start(alone / "cache", alone / f"job{i}", method))
        assert _headline(alone / f"job{i}") == _headline(tmp_path / f"job{i}")

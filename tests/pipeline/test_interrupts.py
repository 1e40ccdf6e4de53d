"""A run stopped by Ctrl+C or SIGTERM (SLURM's end of time) during the CAM evaluation stops
within seconds, says how to resume and leaves a run that `resume=` continues."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.models.backbones import build_backbone
from tests.helpers.processes import REPO


def _cpu_seconds(pid: int) -> float:
    """CPU time a live process has used so far, with that of the children it has waited for
    (utime, stime, cutime, cstime of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc/<pid>/stat")
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_cam_loop_mid_batch_and_names_the_resume_command(
    tmp_path, brats_e2e, signum, status
):
    weights = tmp_path / "weights.pt"  # untrained: the stop is what is tested, not the maps
    torch.save(build_backbone("resnet18", num_classes=1).state_dict(), weights)
    run_dir = tmp_path / "run"
    command = [
        *(sys.executable, "-m", "src.run", "stage=eval", "data=brats"),
        f"data.root={brats_e2e['data']}",
        f"data.cache_dir={brats_e2e['slices']}",
        f"paths.model_store={tmp_path / 'classifiers'}",
        *("data.image_size=null", f"ckpt={weights}", "threads=1"),
        # ScoreCAM forwards every layer4 channel per image: a batch of 8 costs ~20 s of CPU,
        # which Lightning's own SIGTERM handling (a flag read after each batch) waits out.
        *("cam=scorecam", "eval.limit=null", "eval.batch_size=8"),
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # A deadline against a hang only: start-up takes seconds on an idle machine.
    deadline = time.monotonic() + 900
    while not list(run_dir.glob(".cam_maps*")):  # the maps file of the running loop
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    # Into the first batch: until the loop has used a second of CPU time (on a loaded
    # machine a second of wall time may give it none).
    started = _cpu_seconds(process.pid)
    while _cpu_seconds(process.pid) < started + 1:
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    used = _cpu_seconds(process.pid)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == status, stderr[-2000:]
    # The CPU time it spent after the signal, not the wall time, which other processes' load
    # stretches: stopping and exiting take well under a second of it, a batch ~20 s.
    total = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = sum(getattr(total, f) - getattr(reaped, f) for f in ("ru_utime", "ru_stime"))
    assert spent - used < 8, f"the loop finished its batch first ({spent - used:.1f} CPU s)"
    assert f"resume={run_dir}" in stderr.strip().splitlines()[-1]
    assert not list(run_dir.glob("*cam_maps*")), "a half-written maps file was left"
    assert not (run_dir / "config.yaml").exists(), "the stopped run would count as complete"

"""A run stopped by Ctrl+C or SIGTERM (SLURM's end of time) during the CAM evaluation stops
within seconds, says how to resume and leaves a run that `resume=` continues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from src.data.generators.brats import generate_brats
from src.models.backbones import build_backbone
from tests.helpers.processes import REPO


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_cam_loop_mid_batch_and_names_the_resume_command(
    tmp_path, signum, status
):
    data = tmp_path / "BraTS2021"
    generate_brats(data, n_cases=4, seed=1, shape=(64, 64, 16), normal_cases=0)
    weights = tmp_path / "weights.pt"  # untrained: the stop is what is tested, not the maps
    torch.save(build_backbone("resnet18", num_classes=1).state_dict(), weights)
    run_dir = tmp_path / "run"
    command = [
        *(sys.executable, "-m", "src.run", "stage=eval", "data=brats", f"data.root={data}"),
        f"data.cache_dir={tmp_path / 'slices'}",
        f"paths.model_store={tmp_path / 'classifiers'}",
        *("data.image_size=null", f"ckpt={weights}", "threads=1"),
        # ScoreCAM forwards every layer4 channel per image: a batch of 8 takes ~20 s here,
        # which Lightning's own SIGTERM handling (a flag read after each batch) waits out.
        *("cam=scorecam", "eval.limit=null", "eval.batch_size=8"),
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not list(run_dir.glob(".cam_maps*")):  # the maps file of the running loop
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    time.sleep(1)
    sent = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - sent < 8, "the loop finished its batch first"
    assert process.returncode == status, stderr[-2000:]
    assert f"resume={run_dir}" in stderr.strip().splitlines()[-1]
    assert not list(run_dir.glob("*cam_maps*")), "a half-written maps file was left"
    assert not (run_dir / "config.yaml").exists(), "the stopped run would count as complete"

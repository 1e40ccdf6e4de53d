"""`python -m src.run resume=<run>` after SIGINT or SIGKILL in fine-tuning finishes that run
in its folder, with its settings, and stores the classifier an uninterrupted run stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.pipeline.resume import KEY_FILE
from tests.helpers.processes import REPO, TIMEOUT, run_python

pytestmark = pytest.mark.slow

EPOCHS = 3


@pytest.fixture(scope="module")
def workspace(module_tmp_path, brats_e2e) -> Path:
    """This module's runs and stores, on the session's BraTS data (`brats_e2e`): each run
    trains (`reuse_classifier=false`) into a store of its own, so the stored entries compare."""
    root = module_tmp_path
    (root / "BraTS2021").symlink_to(brats_e2e["data"], target_is_directory=True)
    (root / "slices").symlink_to(brats_e2e["slices"], target_is_directory=True)
    return root


def _command(root: Path, name: str) -> list[str]:
    """A small run named `name`: the settings the resumed run must restore by itself."""
    return [
        "-m",
        "src.run",
        "data=brats",
        f"data.root={root / 'BraTS2021'}",
        f"data.cache_dir={root / 'slices'}",
        "data.image_size=null",
        "data.weighted_sampling=true",  # a sampler with its own random generator
        "pretrain=none",
        f"finetune.epochs={EPOCHS}",
        "finetune.batch_size=8",
        "finetune.module.augment.hflip_p=0.5",  # augmentation draws from the global RNG
        "finetune.module.augment.crop_scale=[0.6,1.0]",
        # The best checkpoint must be one that only the interrupted process saw: the first
        # epoch's, whatever the scores (Lightning offers `epoch` to every ModelCheckpoint; the
        # highest validation loss, used before, was epoch 1's on some machines).
        "callbacks.classifier_checkpoint.monitor=epoch",
        "callbacks.classifier_checkpoint.mode=min",
        "reuse_classifier=false",
        "keep_last_checkpoint=true",  # the last epochs of both runs are compared
        "cam=gradcam",
        "cam.mask=otsu",
        "eval.limit=2",
        "eval.mask_workers=0",
        "eval.figure_images=1",
        "trainer.enable_progress_bar=false",
        "threads=1",
        f"paths.model_store={root / 'store' / name}",
        f"hydra.run.dir={root / 'runs' / name}",
    ]


@pytest.fixture(scope="module")
def uninterrupted(workspace) -> Path:
    run_python(*_command(workspace, "uninterrupted"))
    return workspace / "runs" / "uninterrupted"


def _interrupt_after_first_epoch(root: Path, name: str, signum: int) -> Path:
    """Start the run, send `signum` once its first epoch's checkpoint exists."""
    run = root / "runs" / name
    last = run / "checkpoints" / "finetune" / "last.ckpt"
    output = root / f"{name}.out"
    with open(output, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, *_command(root, name)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            # A child of a background job inherits an ignored SIGINT: give it Python's handler.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            while not last.exists() and process.poll() is None:
                time.sleep(0.02)
            # Until it ends: a SIGINT that lands while Lightning closes a checkpoint file is
            # lost (the KeyboardInterrupt is raised inside fsspec's file close and dropped).
            while process.poll() is None:
                process.send_signal(signum)
                time.sleep(0.2)
            status = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
    assert status != 0, output.read_text()[-3000:]
    return run


def _same_but_names(root: Path, name: str, path: str | Path) -> bool:
    """Whether a file of run `name` equals the uninterrupted run's, but for the folder names."""
    text = {
        run: (root / str(path).replace(name, run)).read_text().replace(run, "<run>")
        for run in (name, "uninterrupted")
    }
    return text[name] == text["uninterrupted"]


def _stored(root: Path, name: str) -> Path:
    (entry,) = (root / "store" / name).glob("finetune-*")
    return entry


def _bookkeeping(checkpoint: dict, run: Path) -> dict[str, tuple[str, float | None]]:
    """Best path (run folder left out) and best score of each ModelCheckpoint in a checkpoint."""
    return {
        key: (
            state["best_model_path"].replace(str(run), "<run>"),
            None if state["best_model_score"] is None else float(state["best_model_score"]),
        )
        for key, state in checkpoint["callbacks"].items()
        if key.startswith("ModelCheckpoint")
    }


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_resume_finishes_the_run_as_if_never_interrupted(workspace, uninterrupted, signum):
    name = f"cut-{signum.name}"
    run = _interrupt_after_first_epoch(workspace, name, signum)
    epoch = _load(run / "checkpoints" / "finetune" / "last.ckpt")["epoch"]
    assert epoch < EPOCHS - 1, "the run finished before the signal: nothing to resume"
    assert not (run / "summary.json").exists()
    assert not (workspace / "store" / name).exists()

    # A contradicting command is refused before anything runs (exit status 2, one line).
    refused = subprocess.run(
        [sys.executable, "-m", "src.run", f"resume={run}", "cam=cfdcam"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert refused.returncode == 2
    assert "cam=gradcam" in refused.stderr and "cam=cfdcam" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    runs_before = sorted(p.name for p in (workspace / "runs").iterdir())
    run_python("-m", "src.run", f"resume={run}")

    # The same folder was completed, with the run's own settings; no new run folder.
    assert sorted(p.name for p in (workspace / "runs").iterdir()) == runs_before
    config = (run / "config.yaml").read_text()
    assert "name: gradcam" in config and f"resume: {run}" in config
    # Its results and stored classifier are the uninterrupted run's: weights, best epoch, score.
    for output in ("summary.json", "per_image.csv"):
        assert _same_but_names(workspace, name, Path("runs") / name / output), output
    ours, theirs = _stored(workspace, name), _stored(workspace, "uninterrupted")
    assert ours.name == theirs.name
    ours_weights, their_weights = _load(ours / "weights.pt"), _load(theirs / "weights.pt")
    assert all(torch.equal(ours_weights[k], their_weights[k]) for k in their_weights)
    assert _same_but_names(workspace, name, ours.relative_to(workspace) / "info.json")
    assert "best-epoch=0.ckpt" in (ours / "info.json").read_text()
    # The last epochs too: same weights, same checkpoint bookkeeping.
    last = [_load(r / "checkpoints" / "finetune" / "last.ckpt") for r in (run, uninterrupted)]
    assert last[1]["epoch"] == EPOCHS - 1  # last.ckpt is the last epoch's, not the best's
    assert all(torch.equal(last[0]["state_dict"][k], v) for k, v in last[1]["state_dict"].items())
    assert _bookkeeping(last[0], run) == _bookkeeping(last[1], uninterrupted)
    # The best epoch's file holds weights only; the optimiser state resume needs is last.ckpt's.
    best = _load(uninterrupted / "checkpoints" / "finetune" / "best-epoch=0.ckpt")
    assert "optimizer_states" not in best and "optimizer_states" in last[1]
    assert best["state_dict"] and best["epoch"] == 0
    assert (run / "checkpoints" / "finetune" / KEY_FILE).is_file()

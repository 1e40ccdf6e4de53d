"""Whole runs: resuming an interrupted fit, and 2-process DDP on CPU (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from src.models.backbones import build_backbone
from src.models.classifier import ClassifierModule
from src.models.supcon import SupConModule
from tests.helpers.processes import run_python


class _CrashAtStep(pl.Callback):
    """Simulates a run killed in the middle of an epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _module(kind: str) -> pl.LightningModule:
    pl.seed_everything(0)
    if kind == "supcon":
        return SupConModule(build_backbone("resnet18", 0), warm_epochs=1, max_epochs=2)
    return ClassifierModule(build_backbone("resnet18", 1), max_epochs=2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["supcon", "finetune"])
def test_interrupted_run_resumes_to_the_same_step_count(kind, tmp_path, make_loader, make_trainer):
    """4 steps per epoch, 2 epochs; the first attempt dies after step 3 of epoch 0."""
    full = make_trainer(max_epochs=2, limit_val_batches=0)
    full.fit(_module(kind), make_loader(n=8, batch_size=2))
    assert full.global_step == 8

    def checkpointing_trainer(*callbacks):
        saver = ModelCheckpoint(
            dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1
        )
        return make_trainer(
            max_epochs=2,
            limit_val_batches=0,
            enable_checkpointing=True,
            callbacks=[*callbacks, saver],
        )

    crashed = checkpointing_trainer(_CrashAtStep(3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(_module(kind), make_loader(n=8, batch_size=2))
    last = tmp_path / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3

    resumed = checkpointing_trainer()
    resumed.fit(_module(kind), make_loader(n=8, batch_size=2), ckpt_path=str(last))
    assert resumed.global_step == full.global_step
    assert resumed.current_epoch == full.current_epoch
    lr = [t.optimizers[0].param_groups[0]["lr"] for t in (full, resumed)]
    assert lr[0] == pytest.approx(lr[1])


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    """Runs tests/models/ddp_fit_script.py: Lightning's DDP launcher re-executes the script,
    which would not work from inside pytest."""
    out = tmp_path / "ddp.json"
    run_python(str(Path(__file__).with_name("ddp_fit_script.py")), str(out))
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    for kind in ("supcon", "finetune"):
        run = result[kind]
        # 8 images, batch 2 per process, 2 processes: 2 steps per epoch, 2 epochs.
        assert run["global_step"] == 4, run
        assert run["max_param_difference_between_ranks"] == 0.0, run
        assert run["loss_is_finite"], run
    # val/auc is gathered over both processes' halves of the validation set.
    finetune = result["finetune"]
    assert finetune["logged_auc"] == pytest.approx(finetune["auc_on_full_val_set"], abs=1e-6)

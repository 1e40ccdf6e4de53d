"""`finetune.patience`: training ends once the score the best checkpoint keeps has not
improved for that many epochs, and the checkpoint kept is still the best epoch's."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from src.pipeline.training import early_stop
from tests.helpers.trainer import quiet_trainer_kwargs

#: The validation score each epoch logs: best at epoch 2, then two epochs without a better
#: one, then a better one that only a patience of 3 or more reaches.
SCORES = [0.5, 0.7, 0.9, 0.8, 0.9, 0.95, 0.6, 0.6]


class _ScriptedScore(pl.LightningModule):
    def __init__(self, scores: list[float], sign: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.scores, self.sign = scores, sign

    def training_step(self, batch, batch_idx):
        return (self.weight - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.sign * self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, patience, mode: str = "max", monitor: str | None = "val/score"):
    loader = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=2)
    best = ModelCheckpoint(dirpath=tmp_path, monitor=monitor, mode=mode, filename="{epoch}")
    stop = early_stop(patience, best, "finetune.patience")
    callbacks = [best, *([stop] if stop else [])]
    module = _ScriptedScore(SCORES, 1.0 if mode == "max" else -1.0)
    kwargs = quiet_trainer_kwargs(max_epochs=len(SCORES), callbacks=callbacks)
    trainer = pl.Trainer(**{**kwargs, "enable_checkpointing": True})
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return trainer.current_epoch, best.best_model_path


@pytest.mark.parametrize("mode", ["max", "min"])
def test_training_stops_after_patience_epochs_without_a_better_checkpoint(tmp_path, mode):
    """A loss (min) and a score (max) alike: the stop follows the checkpoint's direction."""
    epochs, kept = _fit(tmp_path / "two", 2, mode)
    assert epochs == 5 and kept.endswith("epoch=2.ckpt")  # epochs 3 and 4 did not improve
    epochs, kept = _fit(tmp_path / "three", 3, mode)
    assert epochs == len(SCORES) and kept.endswith("epoch=5.ckpt")  # epoch 5 came in time


def test_no_patience_trains_every_epoch(tmp_path):
    epochs, kept = _fit(tmp_path, None)
    assert epochs == len(SCORES) and kept.endswith("epoch=5.ckpt")


def test_without_a_monitor_the_last_epoch_is_kept_and_a_patience_is_refused(tmp_path):
    """`callbacks.classifier_checkpoint.monitor=null`: the checkpoint of the last epoch, not
    of the best score (epoch 5); an early stop then has no score to watch."""
    epochs, kept = _fit(tmp_path, None, monitor=None)
    assert epochs == len(SCORES) and kept.endswith(f"epoch={len(SCORES) - 1}.ckpt")
    with pytest.raises(ValueError, match=r"finetune\.patience stops .* monitor is null"):
        early_stop(2, ModelCheckpoint(monitor=None), "finetune.patience")


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_a_patience_that_is_not_a_whole_number_of_epochs_names_its_field(bad):
    best = ModelCheckpoint(monitor="val/auc", mode="max")
    with pytest.raises(ValueError, match=r"finetune\.patience must be a whole number"):
        early_stop(bad, best, "finetune.patience")

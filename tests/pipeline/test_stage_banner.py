"""Before a stage trains, the log says what it will cost: epochs x steps of its batch."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from src.pipeline.training import StageBanner
from tests.helpers.trainer import quiet_trainer_kwargs


class _Toy(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(epochs: int, images: int, batch: int) -> None:
    loader = DataLoader(TensorDataset(torch.randn(images, 2)), batch_size=batch)
    trainer = pl.Trainer(
        **quiet_trainer_kwargs(max_epochs=epochs, callbacks=[StageBanner("finetune")])
    )
    trainer.fit(_Toy(), train_dataloaders=loader)


def test_the_banner_gives_epochs_times_steps_before_training(caplog):
    with caplog.at_level(logging.INFO, logger="src.pipeline.training"):
        _fit(epochs=2, images=10, batch=4)  # 3 steps per epoch, the last one short
    banners = [r.getMessage() for r in caplog.records if r.getMessage().startswith("finetune:")]
    assert banners == ["finetune: 2 epochs x 3 steps of batch 4 = 6 steps"]

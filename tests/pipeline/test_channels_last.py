"""`trainer.channels_last=true`: the training stages run their network in the channels-last
memory format and hand back ordinary tensors; the weights they reach are the default
format's, up to float rounding."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import open_dict
from torch.utils.data import DataLoader, TensorDataset

from src.pipeline.compose import compose_config
from src.pipeline.trainer import PipelineLoggers, build_trainer
from src.pipeline.training import ChannelsLast
from tests.helpers.trainer import quiet_trainer_kwargs


class _ConvNet(pl.LightningModule):
    """Two convolutions and a linear score; records the weight's format in each step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)
        )
        self.head = torch.nn.Linear(4, 1)
        self.formats: list[bool] = []

    def training_step(self, batch, batch_idx):
        (images,) = batch
        weight = self.body[0].weight
        self.formats.append(weight.is_contiguous(memory_format=torch.channels_last))
        features = self.body(images)
        self.formats.append(features.is_contiguous(memory_format=torch.channels_last))
        return self.head(features.amax(dim=(2, 3))).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _fit(callbacks: list[pl.Callback]) -> _ConvNet:
    torch.manual_seed(1)
    loader = DataLoader(TensorDataset(torch.rand(12, 3, 16, 16)), batch_size=4)
    module = _ConvNet()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=callbacks))
    trainer.fit(module, train_dataloaders=loader)
    return module


def test_channels_last_trains_in_nhwc_and_reaches_the_same_weights():
    plain, nhwc = _fit([]), _fit([ChannelsLast()])
    assert nhwc.formats and all(nhwc.formats)  # weights and activations, every step
    assert not any(plain.formats[::2])  # the default run's conv weights are NCHW
    for name, weight in nhwc.named_parameters():
        assert weight.is_contiguous(), name  # back to the default format after the fit
        torch.testing.assert_close(
            weight, dict(plain.named_parameters())[name], atol=1e-5, rtol=1e-4
        )
    assert any(
        not torch.equal(w, _ConvNet().state_dict()[k]) for k, w in nhwc.state_dict().items()
    )  # it trained


def test_the_trainer_node_keeps_channels_last_to_the_pipeline(tmp_path):
    """`trainer.channels_last` is not a Trainer argument: building the Trainer must not pass
    it on (Trainer would refuse the keyword)."""
    cfg = compose_config(["trainer.channels_last=true"], tmp_path)
    with open_dict(cfg):
        cfg.logger = None
    trainer = build_trainer(cfg, "finetune", PipelineLoggers(cfg), max_epochs=1)
    assert isinstance(trainer, pl.Trainer) and trainer.max_epochs == 1

"""A training resumed from a checkpoint sees the same batches and random draws as one that
was never interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from src.pipeline.randomness import RandomState

pytestmark = pytest.mark.usefixtures("single_thread")


class _Recorder(pl.LightningModule):
    """Records each step's batch and one draw of the global RNG (as the augmentation does)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        self.seen: list[tuple[int, list[int], float]] = []

    def training_step(self, batch, batch_idx):
        (indices,) = batch
        self.seen.append((self.current_epoch, indices.tolist(), torch.rand(()).item()))
        return self.linear(indices.float()[:, None]).sum()

    def validation_step(self, batch, batch_idx):
        # Falls with the epoch: the best checkpoint is the first one.
        self.log("score", -float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loaders(weighted: bool) -> tuple[DataLoader, DataLoader]:
    data = TensorDataset(torch.arange(8))
    if weighted:  # like the class-balanced sampler: its own generator
        generator = torch.Generator().manual_seed(0)
        sampler = WeightedRandomSampler(torch.ones(8), 8, generator=generator)
        train = DataLoader(data, batch_size=4, sampler=sampler)
    else:  # shuffled from the global RNG
        train = DataLoader(data, batch_size=4, shuffle=True)
    return train, DataLoader(data, batch_size=4)


def _fit(folder: Path, epochs: int, weighted: bool, ckpt: Path | None = None):
    pl.seed_everything(1)
    module = _Recorder()
    checkpoints = ModelCheckpoint(dirpath=folder, save_last=True, monitor="score", mode="max")
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[checkpoints, RandomState()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder,
    )
    trainer.fit(module, *_loaders(weighted), ckpt_path=ckpt)
    return module.seen, checkpoints


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted-sampler", "shuffled"])
def test_resumed_epochs_repeat_the_uninterrupted_ones(tmp_path, weighted):
    full, _ = _fit(tmp_path / "full", 3, weighted)
    _fit(tmp_path / "cut", 1, weighted)  # stops after epoch 0, as an interrupted run
    resumed, checkpoints = _fit(tmp_path / "cut", 3, weighted, tmp_path / "cut" / "last.ckpt")
    assert [epoch for epoch, *_ in resumed] == [1, 1, 2, 2]
    assert resumed == full[2:]
    # The best epoch came before the interruption and is still the best.
    assert Path(checkpoints.best_model_path).name == "epoch=0-step=2.ckpt"
    assert checkpoints.best_model_score == 0


def test_without_the_callback_the_streams_restart(tmp_path):
    """The check above can fail: Lightning alone does not restore the random streams."""
    full, _ = _fit(tmp_path / "full", 2, weighted=False)
    _fit(tmp_path / "cut", 1, weighted=False)
    pl.seed_everything(1)
    module = _Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, *_loaders(False), ckpt_path=tmp_path / "cut" / "last.ckpt")
    assert [epoch for epoch, *_ in module.seen] == [1, 1]
    assert module.seen != full[2:]


def test_the_state_loads_with_weights_only(tmp_path):
    """The project reads checkpoints with `weights_only=True`: the state must pass it."""
    _fit(tmp_path, 1, weighted=True)
    checkpoint = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    state = checkpoint["callbacks"]["RandomState"]
    assert set(state) == {"torch", "numpy", "python", "sampler"}
    assert isinstance(state["sampler"], torch.Tensor)

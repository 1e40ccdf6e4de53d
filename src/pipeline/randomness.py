"""Random-number state in Lightning checkpoints, so a resumed training repeats the original.

Lightning restores weights, optimiser, scheduler and loop counters, not the random streams:
after a resume the augmentation (global torch RNG) and a sampler's own generator (the
class-balanced sampler's) would start again from the seed, and the epochs after the
interruption would see other batches than an uninterrupted run. This callback stores those
states in every checkpoint and puts them back just before the first resumed epoch.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


def _sampler_generator(trainer: pl.Trainer) -> torch.Generator | None:
    """The generator of the training loader's sampler, if it has its own."""
    loader = trainer.train_dataloader
    generator = getattr(getattr(loader, "sampler", None), "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


def _numpy_state() -> dict[str, Any]:
    """numpy's global state as tensors and numbers: checkpoints are read with
    `weights_only=True`, which refuses numpy arrays."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    keys = torch.from_numpy(keys.astype(np.int64))
    return {"keys": keys, "pos": position, "has_gauss": has_gauss, "cached": cached}


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["pos"], state["has_gauss"], state["cached"]))


class RandomState(Callback):
    """Saves the torch, numpy, Python and sampler random states with each checkpoint.

    A checkpoint is written after an epoch's validation. An uninterrupted run then starts the
    next epoch's loader iterator, which draws one seed (unless its workers persist), and only
    then its sampler and augmentation draw. A resumed run has already started that iterator
    before `on_train_start` (the earliest hook after Lightning's sanity check); so the states
    are restored there and the iterator's draw is repeated, which puts every stream where the
    uninterrupted run has it. (A loader with its own `generator` would need that one saved too;
    the project's loaders have none.)"""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Keep the trainer: the sampler's generator is found through its loaders."""
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """The torch, numpy, Python and sampler random states, as saved in the checkpoint."""
        generator = None if self._trainer is None else _sampler_generator(self._trainer)
        return {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(),
            "python": random.getstate(),
            "sampler": None if generator is None else generator.get_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the states of a resumed checkpoint until ``on_train_start`` (class docstring)."""
        self._loaded = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the kept states and repeat the loader iterator's seed draw (class
        docstring); nothing for a run that did not resume."""
        if self._loaded is None:
            return
        state, self._loaded = self._loaded, None
        torch.set_rng_state(state["torch"])
        _set_numpy_state(state["numpy"])
        random.setstate(state["python"])
        generator = _sampler_generator(trainer)
        if generator is not None and state["sampler"] is not None:
            generator.set_state(state["sampler"])
        loader = trainer.train_dataloader
        if not (loader.persistent_workers and loader.num_workers > 0):
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)

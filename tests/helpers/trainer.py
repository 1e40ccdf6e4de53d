"""Quiet CPU trainer settings for the tests that fit, in a plain module rather than a conftest
so that tests/models/ddp_fit_script.py (run as its own process) uses the same ones."""

from __future__ import annotations

from typing import Any


def quiet_trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    """Quiet CPU trainer settings shared by every fit in these tests (and the DDP script)."""
    kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return kwargs

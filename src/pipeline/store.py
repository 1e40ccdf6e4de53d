"""A content-addressed store of trained networks, so CAM sweeps never retrain.

A trained encoder or classifier is saved together with the exact config that made it, under
a key hashed from the parts of the config that change its weights (data, backbone, training
hyper-parameters, seed). A later run whose key matches loads it instead of training again.
Fields that only change speed or where files go (workers, cache folders, logging) are left
out of the key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from src.data.atomic import atomic_directory

log = logging.getLogger(__name__)

# Data-config fields that do not change what a network learns.
_RUNTIME_DATA_KEYS = ("num_workers", "cache_dir", "output_dir", "on_error", "evaluation")


@functools.lru_cache(maxsize=16)
def dataset_fingerprint(root: str | os.PathLike) -> str:
    """Hash of every file's relative path, size and modification time under `root`.

    The config alone cannot tell that a dataset folder was replaced or regenerated (same
    path, other images); this can, at the cost of one stat per file.
    """
    root = Path(root)
    if not root.exists():
        return "missing"
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.yaml"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def training_key(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The config subset that determines the weights produced by `stage` (pretrain|finetune
    for the classifier, segmenter for the supervised U-Net)."""
    data = {k: v for k, v in _plain(cfg.data).items() if k not in _RUNTIME_DATA_KEYS}
    key: dict[str, Any] = {
        "data": data,
        "data_files": dataset_fingerprint(data["root"]) if data.get("root") else None,
        "seed": cfg.seed,
        "precision": cfg.trainer.get("precision"),
    }
    if stage == "segmenter":
        key["segmenter"] = _plain(cfg.segmenter)
        return key
    key["backbone"] = _plain(cfg.backbone.net)
    pretrain = _plain(cfg.pretrain)
    key["pretrain"] = pretrain if pretrain.get("enabled", True) else {"enabled": False}
    if stage == "finetune":
        key["finetune"] = _plain(cfg.finetune)
    elif stage != "pretrain":
        raise ValueError(f"unknown training stage {stage!r}")
    return key


def fingerprint(key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ModelStore:
    """Folder `<root>/<stage>-<hash>/` holding `weights.pt` (a state_dict) and `config.yaml`."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def entry(self, cfg: DictConfig, stage: str) -> Path:
        return self.root / f"{stage}-{fingerprint(training_key(cfg, stage))}"

    def lookup(self, cfg: DictConfig, stage: str) -> Path | None:
        """Path of the stored weights for this config, or None."""
        weights = self.entry(cfg, stage) / WEIGHTS_FILE
        return weights if weights.is_file() else None

    def save(
        self,
        cfg: DictConfig,
        stage: str,
        state_dict: dict[str, torch.Tensor],
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Store weights with the config that made them; atomic (a half-written entry never
        looks valid to a concurrent run)."""
        entry = self.entry(cfg, stage)
        with atomic_directory(entry, overwrite=True) as tmp:
            torch.save(state_dict, tmp / WEIGHTS_FILE)
            OmegaConf.save(cfg, tmp / CONFIG_FILE, resolve=True)
            (tmp / "key.json").write_text(
                json.dumps(training_key(cfg, stage), indent=2, sort_keys=True, default=str)
            )
            if extra:
                (tmp / "info.json").write_text(json.dumps(extra, indent=2, default=str))
        log.info("Stored %s weights in %s", stage, entry)
        return entry / WEIGHTS_FILE


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message starts with the file."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


def _looks_like_torch_file(path: Path) -> bool:
    """`torch.save` writes a zip archive (legacy files: a pickle, first byte 0x80)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def load_state_dict(path: str | os.PathLike, prefix: str = "net.") -> dict[str, torch.Tensor]:
    """Read a network state_dict from a plain `torch.save` file or a Lightning checkpoint.

    Lightning checkpoints hold the LightningModule's state; the network's entries carry
    `prefix`, which is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            path, "not a PyTorch checkpoint (expected a Lightning .ckpt or a torch.save file)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle garbage, ...
        raise CheckpointError(path, f"corrupt checkpoint, cannot be loaded ({err})") from err
    if isinstance(obj, dict) and "state_dict" in obj:
        state = obj["state_dict"]
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        return state
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(path, "holds no state_dict (a dict of tensors)")
    return obj


def load_weights(net: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a classifier's weights, naming the file and the mismatching keys on failure."""
    state = load_state_dict(path)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(path, f"does not fit the configured backbone: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            path,
            "does not fit the configured backbone: "
            f"missing keys {result.missing_keys[:5]} (of {len(result.missing_keys)}), "
            f"unexpected keys {result.unexpected_keys[:5]} (of {len(result.unexpected_keys)})",
        )


def save_from_rank_zero(
    trainer: pl.Trainer,
    store: ModelStore,
    cfg: DictConfig,
    stage: str,
    state_dict: Callable[[], dict[str, torch.Tensor]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Store trained weights once (rank 0); every process waits and returns the stored path."""
    if trainer.is_global_zero:
        store.save(cfg, stage, state_dict(), extra=extra)
    trainer.strategy.barrier(f"store-{stage}")
    return store.entry(cfg, stage) / WEIGHTS_FILE

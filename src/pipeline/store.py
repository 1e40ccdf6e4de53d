"""A content-addressed store of trained networks, so CAM sweeps never retrain.

A trained encoder or classifier is saved together with the exact config that made them, under
a key hashed from the parts of the config that change its weights (data, backbone, training
hyper-parameters, seed). A later run whose key matches loads it instead of training again.
Fields that only change speed or where files go (workers, cache folders, logging) are left
out of the key, and files enter it by their content, not their path: the same dataset
mounted elsewhere (another cluster node) finds the same classifier.

Many jobs may need the same classifier at once (the jobs of a sweep on a cluster): the job
that finds no entry takes the entry's lock (`src.data.lock`) and trains, the others wait for
it and load its result (`ModelStore.train_once`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from src.data.atomic import atomic_directory
from src.data.fingerprint import content_fingerprint
from src.data.lock import DirLock, lock_path
from src.models.checkpoints import load_by_name, read_state_dict

log = logging.getLogger(__name__)

#: Version of the key layout; entries without it were keyed by the data folder's path.
KEY_SCHEME = 2
# Data-config fields that do not change what a network learns (the loader settings among them:
# their defaults may change, as num_workers' did from 0 to null = auto, without moving a key).
_RUNTIME_DATA_KEYS = (
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "cache_dir",
    "output_dir",
    "on_error",
    "evaluation",
)
# The demo DataModule generates the data the BraTS one reads; both enter the key as the latter.
_DEMO_TARGET = "src.data.demo.DemoBraTSDataModule"
_BRATS_TARGET = "src.data.brats.BraTSDataModule"
_FORMER_TASK = {"task": "binary", "num_classes": 1}
# Options a reader gained after networks were stored for it: at the value that does what the
# reader did before, they stay out of the key, so those networks are still found.
_ADDED_DATA_OPTIONS = {"src.data.tcga_lgg.TCGALGGDataModule": {"crop_foreground": False}}
# The same for a training node's options (an early stop, off).
_ADDED_TRAINING_OPTIONS = {"patience": None}
# The same for options `build_backbone` gained (at the value that builds the former network).
_ADDED_BACKBONE_OPTIONS = {"padding_mode": "zeros"}
# Path-valued fields that enter the key as the content fingerprint of what they name.
_PATH_DATA_KEYS = ("root", "split_file")

WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.yaml"
KEY_FILE = "key.json"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def training_key(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The config subset that determines the weights produced by `stage` (pretrain|finetune
    for the classifier, segmenter for the supervised U-Net, selftrain for the U-Net trained
    on pseudo-masks).

    The data root, a split file and a backbone's initial weights are named by the content
    fingerprint of their files (per-file hashes remembered in `<paths.cache_dir>/fingerprints`).
    Settings that moved out of the hashed nodes enter the key as they were before they moved
    (the best-checkpoint rule, the classifier's former task keys, the demo's BraTS reader, the
    `data.batch_size` the data configs set to the reader's default although every stage
    trains with its own), and options a reader gained later are left out at their former
    behaviour, so the networks stored before are still found."""
    memo = Path(cfg.paths.cache_dir) / "fingerprints"

    def content(path: Any) -> str | None:
        return None if path in (None, "") else content_fingerprint(path, memo)

    data = {k: v for k, v in _plain(cfg.data).items() if k not in _RUNTIME_DATA_KEYS}
    if data.get("_target_") == _DEMO_TARGET:  # the BraTS reader; `demo` names the data made
        data["_target_"] = _BRATS_TARGET
    _drop_added(data, _ADDED_DATA_OPTIONS.get(data.get("_target_"), {}))
    if "batch_size" not in data:  # the data configs named it, always the reader's default
        data["batch_size"] = get_class(data["_target_"]).default_batch_size
    for name in _PATH_DATA_KEYS:
        if name in data:
            data[name] = content(data[name])
    key: dict[str, Any] = {
        "scheme": KEY_SCHEME,
        "data": data,
        "seed": cfg.seed,
        "precision": cfg.trainer.get("precision"),
    }
    if stage == "segmenter":
        key["segmenter"] = _with_checkpoint_rule(cfg.segmenter, cfg.callbacks.segmenter_checkpoint)
        return key
    if stage == "selftrain":
        # The same U-Net settings; its weights are those of the last epoch (no validation:
        # the validation split's pixel labels must not choose them), and its targets are
        # the pseudo-masks the pipeline names by their entry's hash (docs/selftrain.md).
        pseudo_masks = cfg.selftrain.get("pseudo_masks")
        if not pseudo_masks:
            raise ValueError("the selftrain key needs selftrain.pseudo_masks (set at run time)")
        key["segmenter"] = {**_plain(cfg.segmenter), "keep": "last epoch"}
        key["pseudo_masks"] = pseudo_masks
        return key
    backbone = dict(_plain(cfg.backbone.net))
    _drop_added(backbone, _ADDED_BACKBONE_OPTIONS)
    if "weights" in backbone:
        backbone["weights"] = content(backbone["weights"])
    key["backbone"] = backbone
    pretrain = _plain(cfg.pretrain)
    key["pretrain"] = pretrain if pretrain.get("enabled", True) else {"enabled": False}
    if stage == "finetune":
        finetune = _with_checkpoint_rule(cfg.finetune, cfg.callbacks.classifier_checkpoint)
        # The task the finetune config used to name (always replaced by the DataModule's,
        # which the data `_target_` of the key determines).
        finetune["module"].update(_FORMER_TASK)
        key["finetune"] = finetune
    elif stage != "pretrain":
        raise ValueError(f"unknown training stage {stage!r}")
    return key


def _drop_added(node: dict[str, Any], added: dict[str, Any]) -> None:
    """Remove from `node` (in place) each added option that is at its former value."""
    for name, former in added.items():
        if name in node and node[name] == former:
            del node[name]


def _with_checkpoint_rule(node: DictConfig, checkpoint: DictConfig) -> dict[str, Any]:
    """A training node with its best-checkpoint rule (`callbacks.*_checkpoint`) under the keys
    it had inside the node (`monitor`, `monitor_mode`) when the first networks were stored."""
    plain = dict(_plain(node))
    _drop_added(plain, _ADDED_TRAINING_OPTIONS)
    plain.update(monitor=checkpoint.monitor, monitor_mode=checkpoint.mode)
    return plain


def fingerprint(key: dict[str, Any]) -> str:
    """A short stable hash of a training key (16 hex digits of its sorted-JSON SHA-256)."""
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_identity(cfg: DictConfig) -> str:
    """What the processes of one job share and other jobs do not: the SLURM job step (all
    tasks of an `srun`), else the run folder (Lightning's DDP ranks reuse it)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return f"slurm {job}.{os.environ.get('SLURM_STEP_ID', '')}"
    return f"run {cfg.paths.output_dir}"


class ModelStore:
    """Folder `<root>/<stage>-<hash>/` holding `weights.pt` (a state_dict), `config.yaml` and
    `key.json`; `.<stage>-<hash>.lock/` while a job trains it."""

    def __init__(self, root: str | os.PathLike, poll: float = 2.0) -> None:
        self.root = Path(root)
        self.poll = poll
        self._warned_old = False

    def entry(self, cfg: DictConfig, stage: str) -> Path:
        """The folder of this config's ``stage`` weights, whether or not it exists yet."""
        return self.root / f"{stage}-{fingerprint(training_key(cfg, stage))}"

    def lookup(self, cfg: DictConfig, stage: str) -> Path | None:
        """Path of the stored weights for this config, or None."""
        weights = self.entry(cfg, stage) / WEIGHTS_FILE
        if weights.is_file():
            return weights
        self._note_old_entries(stage)
        return None

    def _note_old_entries(self, stage: str) -> None:
        """Say once that entries keyed by the old scheme exist and are not reused."""
        if self._warned_old:
            return
        old = []
        for key_file in self.root.glob(f"{stage}-*/{KEY_FILE}"):
            try:
                scheme = json.loads(key_file.read_text()).get("scheme")
            except (OSError, ValueError):
                continue
            if scheme != KEY_SCHEME:
                old.append(key_file.parent.name)
        if old:
            self._warned_old = True
            log.info(
                "The model store %s holds %d %s entries keyed by an older scheme (by the data "
                "folder's path, not its content): they are never reused, this run trains anew. "
                "Delete them once no old checkout needs them: %s",
                self.root,
                len(old),
                stage,
                ", ".join(sorted(old)[:5]),
            )

    def train_once(self, cfg: DictConfig, stage: str, train: Callable[[], Path]) -> Path:
        """The stored weights of `stage` for this config, training them with `train()` only if
        no job has: of many jobs started together exactly one trains, the others wait on the
        entry's lock and then load its result. A job killed while training leaves no entry
        (weights are stored atomically) and its lock is taken over (`src.data.lock`).

        Only rank 0 of a multi-process job takes the lock; the other ranks train when the lock
        is held by their own job (they join rank 0) and load when the entry appears."""
        stored = self.lookup(cfg, stage)
        if stored is not None and cfg.reuse_classifier:
            log.info("Reusing the %s weights in %s (same training key)", stage, stored.parent)
            return stored
        if not cfg.reuse_classifier:
            return train()
        entry = self.entry(cfg, stage)
        if rank_zero_only.rank != 0:
            return self._follow(cfg, entry, train)
        with DirLock(lock_path(entry), label=job_identity(cfg), poll=self.poll):
            stored = self.lookup(cfg, stage)
            if stored is not None:
                log.info("Reusing the %s weights another job trained: %s", stage, entry)
                return stored
            return train()

    def _follow(self, cfg: DictConfig, entry: Path, train: Callable[[], Path]) -> Path:
        """A rank > 0: train along with this job's rank 0, or load what another job stored."""
        lock = DirLock(lock_path(entry))
        me = job_identity(cfg)
        while True:
            if (entry / WEIGHTS_FILE).is_file():
                return entry / WEIGHTS_FILE
            owner = lock.read_owner()
            if owner is not None and owner.get("label") == me:
                return train()
            time.sleep(self.poll)

    def save(
        self,
        cfg: DictConfig,
        stage: str,
        state_dict: dict[str, torch.Tensor],
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Store weights with the config that made them; atomic (built in a temporary folder
        and renamed into place, so a half-written entry never looks valid to another run).
        Weights with NaN or infinite values (a diverged training) are refused: stored, every
        later run with the same key would reuse them silently."""
        _check_finite(state_dict, stage)
        entry = self.entry(cfg, stage)
        with atomic_directory(entry, overwrite=True) as tmp:
            torch.save(state_dict, tmp / WEIGHTS_FILE)
            OmegaConf.save(cfg, tmp / CONFIG_FILE, resolve=True)
            (tmp / KEY_FILE).write_text(
                json.dumps(training_key(cfg, stage), indent=2, sort_keys=True, default=str)
            )
            if extra:
                (tmp / "info.json").write_text(json.dumps(extra, indent=2, default=str))
        log.info("Stored %s weights in %s", stage, entry)
        return entry / WEIGHTS_FILE


class NonFiniteWeightsError(RuntimeError):
    """A training stage ended with NaN or infinite weights (it diverged)."""


def _check_finite(state_dict: dict[str, torch.Tensor], stage: str) -> None:
    bad = [
        name
        for name, tensor in state_dict.items()
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    if bad:
        raise NonFiniteWeightsError(
            f"the {stage} stage ended with NaN or infinite weights in {len(bad)} tensor(s) "
            f"(first: {bad[0]}): the training diverged, so nothing was stored; lower the "
            "stage's learning rate (its `module.lr`) or check its loss in the logs"
        )


def load_state_dict(path: str | os.PathLike, prefix: str = "net.") -> dict[str, torch.Tensor]:
    """A network's state_dict from a stored ``weights.pt`` or a LightningModule checkpoint
    (whose network keys carry ``prefix``): :func:`src.models.checkpoints.read_state_dict`."""
    return read_state_dict(path, prefix=prefix)


def load_weights(net: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a stored or checkpointed network into ``net``; every key must fit (else a
    :class:`CheckpointError` naming the file and the first mismatching keys)."""
    load_by_name(net, load_state_dict(path), source=path)


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

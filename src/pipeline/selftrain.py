"""`method=selftrain`: the U-Net of `method=supervised` trained on pseudo-masks instead of
pixel labels, then scored like every method (docs/selftrain.md).

A pseudo-mask is what the run's CAM and mask rule (`cam`, `cam.mask`) make of a training
slice labelled positive, on the classifier this config trains (or the store holds); a slice
labelled negative gets an empty one, as its image label says. Three store entries, each
keyed by what determines it, so a later run recomputes nothing it already has:

- `trainmaps-<hash>/cam_maps.npz`: the CAM maps of the chosen positive training slices
  (keyed by the data, the classifier's weights, the CAM config and the slices); the costly
  part, shared by every mask rule and U-Net setting;
- `pseudomasks-<hash>/pseudo_masks.npz`: the masks of every chosen slice (keyed by the maps,
  the mask rule and the slices with their labels);
- `selftrain-<hash>/weights.pt`: the U-Net (the `segmenter` settings and the pseudo-masks'
  hash).

No pixel label of any split reaches the U-Net's training: the maps and masks are made from
items without their `mask`, the training items carry the pseudo-mask in its place, and there
is no validation loop (the stored weights are the last epoch's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from src.data.atomic import atomic_directory
from src.data.fingerprint import file_sha256
from src.data.lock import build_once
from src.evaluation.map_store import MAPS_FILE
from src.evaluation.sampling import eval_subset
from src.evaluation.settings import Method
from src.pipeline.config import ConfigError, cam_options
from src.pipeline.eval_inputs import cam_method
from src.pipeline.store import ModelStore, fingerprint, job_identity, training_key
from src.pipeline.supervised import (
    STAGES,
    build_segmenter,
    patch_size,
    require_binary_task,
    score_segmenter,
)
from src.pipeline.trainer import PipelineLoggers, build_trainer
from src.pipeline.training import fit_and_store
from src.segmentation.confidence import Confidence, ThresholdError
from src.segmentation.pseudo_masks import (
    CAMMapsModule,
    PseudoMaskDataModule,
    PseudoMaskDataset,
    WithoutPixelLabels,
    ignored_areas,
    pseudo_masks,
    read_masks,
    write_masks,
)
from src.validation import check_choice

log = logging.getLogger(__name__)

METHOD = STAGE = "selftrain"
MAPS_STAGE = "trainmaps"
MASKS_STAGE = "pseudomasks"
MASKS_FILE = "pseudo_masks.npz"
#: Where the pseudo-masks come from: the run's CAM (`cam`) and mask rule (`cam.mask`).
SOURCES = ("cam",)
#: Version of the layout of the maps' and pseudo-masks' keys.
KEY_SCHEME = 1

#: The classifier's CAM stages, once its weights are loaded: (network, target layers).
LoadedClassifier = tuple[torch.nn.Module, list[str]]


def check_selftrain_config(cfg: DictConfig) -> None:
    """Start-up checks of `method=selftrain` that need only the config."""
    node = cfg.selftrain
    if cfg.stage not in STAGES:
        raise ConfigError(
            "stage",
            f"method=selftrain runs stage all, finetune (pseudo-masks, then the U-Net) or "
            f"eval, not {cfg.stage!r}",
        )
    check_choice("selftrain.source", node.get("source"), SOURCES, ConfigError)
    limit = node.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(
            "selftrain.limit", f"must be a number of training slices >= 1 or null, got {limit!r}"
        )
    fraction = node.get("positive_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ConfigError("selftrain.positive_fraction", f"must be in (0, 1], got {fraction!r}")
    confidence(cfg)
    datamodule = get_class(cfg.data._target_)
    if datamodule.task != "binary":
        raise ConfigError(
            "method",
            f"method=selftrain trains a binary (object vs background) segmenter; "
            f"{datamodule.__name__} is a {datamodule.task} task",
        )
    strategy, devices = str(cfg.trainer.get("strategy", "auto")), cfg.trainer.get("devices", 1)
    if "ddp" in strategy or (isinstance(devices, int) and devices > 1):
        raise ConfigError(
            "trainer",
            "method=selftrain computes its pseudo-masks in one process: use trainer=cpu or "
            "trainer=gpu with one device",
        )


def confidence(cfg: DictConfig) -> Confidence | None:
    """The confident regions of the pseudo-masks (`selftrain.confident_foreground` and
    `.confident_background`; both null = no ignore region, the former masks), or
    a ConfigError naming the field."""
    try:
        return Confidence.from_config(cfg.selftrain)
    except ThresholdError as error:
        raise ConfigError(f"selftrain.confident_{error.side}", str(error)) from None


def training_slices(labels: torch.Tensor, limit: int | None, positive_fraction: float) -> list[int]:
    """Positions of the training slices that get pseudo-masks: all of them (`limit` null),
    else `limit` of them, evenly spaced over the split, `positive_fraction` of them labelled
    positive (the evaluation's sampler, `eval_subset`, on the image labels alone)."""
    labels = torch.as_tensor(labels)
    if limit is None or limit >= len(labels):
        return list(range(len(labels)))
    return eval_subset(labels.numpy(), limit, positive_fraction)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PseudoMaskPlan:
    """The training slices a self-trained U-Net learns from, and the keys of the maps and
    pseudo-masks made of them (`plan`)."""

    items: WithoutPixelLabels
    maps_key: dict[str, Any]
    masks_key: dict[str, Any]

    @property
    def positives(self) -> list[int]:
        """Positions (in `items`) of the slices labelled positive: the ones with a map."""
        return [i for i in range(len(self.items)) if self.items.positive(i)]

    @property
    def masks_hash(self) -> str:
        """The pseudo-masks' hash, which the U-Net's store key names."""
        return fingerprint(self.masks_key)

    def maps_entry(self, store: ModelStore) -> Path:
        """The store folder of the maps, whether or not it exists yet."""
        return store.root / f"{MAPS_STAGE}-{fingerprint(self.maps_key)}"

    def masks_entry(self, store: ModelStore) -> Path:
        """The store folder of the pseudo-masks, whether or not it exists yet."""
        return store.root / f"{MASKS_STAGE}-{self.masks_hash}"


def plan(cfg: DictConfig, datamodule: pl.LightningDataModule, classifier: Path) -> PseudoMaskPlan:
    """Which training slices get pseudo-masks (`selftrain.limit`, `.positive_fraction`) and
    what their maps and masks depend on: the data (by content), the classifier's weights (by
    content), the CAM config and precision, the mask rule, the slices and their labels."""
    dataset = datamodule.dataset("train")
    node = cfg.selftrain
    chosen = training_slices(dataset.labels, node.get("limit"), node.positive_fraction)
    items = WithoutPixelLabels(dataset, chosen)
    positives = [items.ids[i] for i in range(len(items)) if items.positive(i)]
    maps_key = {
        "scheme": KEY_SCHEME,
        "data": training_key(cfg, "segmenter")["data"],
        "classifier": file_sha256(Path(classifier))[:16],
        "cam": {
            "name": cfg.cam.name,
            "layers": _plain(cfg.cam.get("layers", 1)),
            "options": cam_options(cfg.cam),
        },
        "precision": cfg.trainer.get("precision"),
        "slices": _digest(positives),
        "count": len(positives),
    }
    method = cam_method(cfg)
    labelled = [f"{items.ids[i]}\t{int(items.positive(i))}" for i in range(len(items))]
    masks_key = {
        "scheme": KEY_SCHEME,
        "source": node.source,
        "maps": fingerprint(maps_key),
        "mask": method.describe(),
        "slices": _digest(labelled),
        "count": len(items),
    }
    regions = confidence(cfg)
    if regions is not None:
        # An option the masks gained later: absent (no ignore region), it stays out of the
        # key, so the pseudo-masks stored before it are still found.
        masks_key["confidence"] = regions.describe()
    return PseudoMaskPlan(items, maps_key, masks_key)


def with_pseudo_masks(cfg: DictConfig, masks_hash: str) -> DictConfig:
    """A copy of `cfg` naming the pseudo-masks its U-Net learns from (`selftrain.pseudo_masks`,
    part of the U-Net's store key; `training_key`)."""
    named = cfg.copy()
    with open_dict(named):
        named.selftrain.pseudo_masks = masks_hash
    return named


def _write_entry_files(folder: Path, key: dict[str, Any], info: dict[str, Any]) -> None:
    (folder / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
    (folder / "info.json").write_text(json.dumps(info, indent=2, default=str))


def _built(path: Path) -> Path | None:
    return path if path.is_file() else None


def training_maps(
    cfg: DictConfig,
    pseudo: PseudoMaskPlan,
    store: ModelStore,
    loggers: PipelineLoggers,
    load: Callable[[], LoadedClassifier],
) -> Path:
    """The maps file of the plan's positive slices: the store's, or computed now (once, however
    many jobs ask at once) by the CAM test loop, batched as the evaluation (`eval.batch_size`)."""
    entry = pseudo.maps_entry(store)
    target = entry / MAPS_FILE

    def build() -> Path:
        net, target_layers = load()
        positives = WithoutPixelLabels(pseudo.items, pseudo.positives)
        loader = torch.utils.data.DataLoader(
            positives, batch_size=cfg.eval.batch_size, shuffle=False
        )
        log.info(
            "Computing the %s maps of %d training slices labelled positive (%s)",
            cfg.cam.name,
            len(positives),
            entry,
        )
        trainer = build_trainer(cfg, MAPS_STAGE, loggers, inference_mode=False)
        wall, cpu = time.perf_counter(), time.process_time()
        with atomic_directory(entry, overwrite=True) as folder:
            module = CAMMapsModule(
                net, cfg.cam.name, target_layers, cam_options(cfg.cam), folder / MAPS_FILE
            )
            try:
                trainer.test(module, dataloaders=loader, verbose=False)
            finally:
                module.close_maps(complete=False)  # no-op after a complete loop
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            info = {
                "slices": len(positives),
                "seconds": round(wall, 1),
                "cpu_seconds": round(cpu, 1),
                "threads": torch.get_num_threads(),
            }
            _write_entry_files(folder, pseudo.maps_key, info)
        log.info(
            "Stored the maps of %d slices in %s: %.0f s (%.1f s per slice), %.0f s of CPU",
            len(positives),
            entry,
            wall,
            wall / max(len(positives), 1),
            cpu,
        )
        return target

    return build_once(entry, lambda: _built(target), build, label=job_identity(cfg))


def training_masks(cfg: DictConfig, pseudo: PseudoMaskPlan, store: ModelStore, maps: Path) -> Path:
    """The pseudo-masks of the plan's slices: the store's, or made now from `maps` by the
    run's mask rule (`cam.mask`; in `eval.mask_workers` processes), empty for negatives;
    with confident regions (`selftrain.confident_*`), labels 0 / 1 / ignored."""
    entry = pseudo.masks_entry(store)
    target = entry / MASKS_FILE

    def build() -> Path:
        method: Method = cam_method(cfg)
        regions = confidence(cfg)
        with (
            method.mask_maker(cfg.eval.mask_workers) as mask_maker,
            atomic_directory(entry, overwrite=True) as folder,
        ):
            made = dict(pseudo_masks(pseudo.items, maps, mask_maker, regions))
            areas = write_masks(folder / MASKS_FILE, iter(made.items()))
            empty = sum(1 for i in pseudo.positives if areas[pseudo.items.ids[i]] == 0)
            info = {
                "maps": str(maps),
                "mask": method.describe(),
                "slices": len(pseudo.items),
                "positives": len(pseudo.positives),
                "positives_with_empty_mask": empty,
                "areas": areas,
            }
            if regions is not None:
                info["confidence"] = regions.describe()
                info["ignored"] = ignored_areas(made)
            _write_entry_files(folder, pseudo.masks_key, info)
        log.info(
            "Stored the pseudo-masks of %d training slices (%d labelled positive, %d of them "
            "with an empty %s mask) in %s",
            len(pseudo.items),
            len(pseudo.positives),
            empty,
            method.describe(),
            entry,
        )
        if regions is not None:
            positive_ids = [pseudo.items.ids[i] for i in pseudo.positives]
            log.info(
                "Confident regions (%s): on the positive slices, %d object pixels and %d left "
                "out of the loss",
                regions.describe(),
                sum(areas[i] for i in positive_ids),
                sum(info["ignored"][i] for i in positive_ids),
            )
        return target

    return build_once(entry, lambda: _built(target), build, label=job_identity(cfg))


def selftrain_stage(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
    classifier: Path,
    load: Callable[[], LoadedClassifier],
) -> Path:
    """The stored self-trained U-Net of this config and classifier (`classifier`, its weights;
    `load()` builds it for the CAMs), trained if no job has: maps -> pseudo-masks -> U-Net,
    each taken from the store when it holds them."""
    require_binary_task(datamodule)
    pseudo = plan(cfg, datamodule, classifier)
    named = with_pseudo_masks(cfg, pseudo.masks_hash)

    def train() -> Path:
        maps = training_maps(named, pseudo, store, loggers, load)
        masks = training_masks(named, pseudo, store, maps)
        return _train_unet(named, datamodule, pseudo, read_masks(masks), store, loggers)

    return store.train_once(named, STAGE, train)


def _train_unet(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    pseudo: PseudoMaskPlan,
    masks: dict[str, Any],
    store: ModelStore,
    loggers: PipelineLoggers,
) -> Path:
    """Train the `segmenter` U-Net on the pseudo-masks and store its last epoch's weights.
    An epoch draws as many items as the training split holds (`PseudoMaskDataModule`)."""
    items = pseudo.items
    dataset = PseudoMaskDataset(items.dataset, items.indices, masks)
    train = PseudoMaskDataModule(
        dataset,
        epoch_size=len(items.dataset),
        batch_size=cfg.segmenter.batch_size,
        balanced=bool(getattr(datamodule, "weighted_sampling", False)),
        seed=getattr(datamodule, "split_seed", cfg.seed),
        num_workers=getattr(datamodule, "num_workers", 0),
        pin_memory=getattr(datamodule, "pin_memory", False),
    )
    log.info(
        "Training the U-Net on the pseudo-masks of %d training slices (%d labelled positive)",
        len(items),
        len(pseudo.positives),
    )

    def segmenter() -> pl.LightningModule:
        net = build_segmenter(cfg, patch_size(datamodule, "train"))
        return instantiate(cfg.segmenter.module, net=net)

    with warnings.catch_warnings():
        # The module's validation step is meant for pixel labels, which this training has
        # none of: Lightning's note that it skips the loop is the intent here.
        warnings.filterwarnings(
            "ignore", message=".*`validation_step` but have no `val_dataloader`"
        )
        return fit_and_store(
            cfg,
            STAGE,
            segmenter,
            lambda module: module.net.state_dict(),
            train,
            store,
            loggers,
            settings="segmenter",
        )


def selftrain_eval_stage(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    store: ModelStore,
    loggers: PipelineLoggers,
    classifier: Path | None,
) -> dict[str, Any]:
    """Score the self-trained U-Net (`ckpt`, or the store's for this config and `classifier`)
    like the supervised one, on the evaluation images of a CAM run."""
    info: dict[str, Any] = {}
    ckpt = cfg.get("ckpt")
    if not ckpt:
        if classifier is None:
            raise ConfigError(
                "ckpt",
                f"no trained classifier in {store.root} for this config, so no pseudo-masks "
                "and no self-trained U-Net: run method=selftrain with stage=all first, or give "
                "the U-Net's weights with ckpt=/path",
            )
        pseudo = plan(cfg, datamodule, classifier)
        ckpt = store.lookup(with_pseudo_masks(cfg, pseudo.masks_hash), STAGE)
        if ckpt is None:
            raise ConfigError(
                "ckpt",
                f"no self-trained U-Net in {store.root} for this config: run "
                "method=selftrain with stage=all (or stage=finetune) first, or give its "
                "weights with ckpt=/path",
            )
        info = pseudo_mask_info(pseudo, store)
    summary = score_segmenter(cfg, datamodule, ckpt, METHOD, loggers, info)
    if info:
        log.info("%s", closing_note(info, cam_method(cfg)))
    return summary


def closing_note(info: dict[str, Any], method: Method) -> str:
    """What the U-Net learnt from and what its targets cost, from `pseudo_mask_info`."""
    slices, positives = info["pseudo_mask_slices"], info["pseudo_mask_positives"]
    seconds, cpu = info.get("training_maps_seconds"), info.get("training_maps_cpu_seconds")
    cost = "cost unknown"
    if seconds is not None and cpu is not None:
        cost = (
            f"{seconds:.0f} s of wall time, {cpu:.0f} s of CPU ({cpu / max(positives, 1):.1f} s "
            "per slice), once"
        )
    return (
        f"The U-Net learnt from the pseudo-masks of {slices} training slices: {positives} "
        f"labelled positive, each a {method.name} map with its {method.describe()} mask (the "
        f"maps: {cost}), and {slices - positives} labelled negative with an empty mask (free); "
        f"no pixel label. Entry: {info['pseudo_masks']}"
    )


def pseudo_mask_info(pseudo: PseudoMaskPlan, store: ModelStore) -> dict[str, Any]:
    """What `summary.json` says of the pseudo-masks: their entry, how many training slices
    they cover, and what the maps cost."""
    maps_info = pseudo.maps_entry(store) / "info.json"
    cost = json.loads(maps_info.read_text()) if maps_info.is_file() else {}
    return {
        "pseudo_masks": str(pseudo.masks_entry(store)),
        "pseudo_mask_slices": len(pseudo.items),
        "pseudo_mask_positives": len(pseudo.positives),
        "training_maps_seconds": cost.get("seconds"),
        "training_maps_cpu_seconds": cost.get("cpu_seconds"),
    }

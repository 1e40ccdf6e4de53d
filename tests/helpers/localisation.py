"""A demo's stored classifier, and how well a run's CAM, with its config's options, finds the
objects of some images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from src.cams import build_cam
from src.evaluation.metrics import localisation_metrics
from src.pipeline.compose import compose_config
from src.pipeline.config import cam_options, cam_target_layers
from src.pipeline.stages import build_datamodule, build_net, run_pipeline
from src.pipeline.store import ModelStore, load_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
QUIET = ("logger=none", "trainer.enable_progress_bar=false")


def stored_classifier(
    overrides: list[str], run_dir: Path
) -> tuple[DictConfig, Any, torch.nn.Module]:
    """The config `python -m src.run <overrides>` composes in this checkout, its DataModule
    (test split set up) and its classifier from the project's model store, trained first if
    the store has none (so the demo run and the tests share it)."""
    cfg = compose_config([*overrides, "stage=finetune", *QUIET], run_dir, cwd=REPO_ROOT)
    store = ModelStore(cfg.paths.model_store)
    if store.lookup(cfg, "finetune") is None:
        run_pipeline(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    net = build_net(cfg, datamodule.num_classes)
    load_weights(net, store.lookup(cfg, "finetune"))
    return cfg, datamodule, net.eval()


@dataclass(frozen=True)
class Localisation:
    """Means over the images: the pointing game, the map's mass inside the object, and the
    object's share of the image (what an evenly spread map would put inside it)."""

    per_image: list[dict[str, float]]
    pointing: float
    mass: float
    share: float


def cam_localisation(cfg: DictConfig, net: torch.nn.Module, items: list[dict]) -> Localisation:
    """`cfg.cam` (method, layers, options) on the items' images, scored against their masks."""
    images = torch.stack([item["image"] for item in items])
    layers = cam_target_layers(net.cam_stages, cfg.cam.layers)
    with torch.enable_grad(), build_cam(cfg.cam.name, net, layers, **cam_options(cfg.cam)) as cam:
        maps = cam(images).detach().numpy()
    found = [
        localisation_metrics(cam_map, item["mask"].numpy())
        for cam_map, item in zip(maps, items, strict=True)
    ]
    return Localisation(
        found,
        float(np.mean([f["pointing"] for f in found])),
        float(np.mean([f["mass_in_gt"] for f in found])),
        float(np.mean([item["mask"].float().mean().item() for item in items])),
    )


def painted_over(items: list[dict], brain_above: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The items' images with each tumour painted over with its slice's median brain colour
    (per channel), and, as a control, the same edit on the tumour's mirror image across the
    midline (healthy tissue). Brain = pixels whose brightest channel exceeds `brain_above`."""
    images = torch.stack([item["image"] for item in items])
    edited, control = images.clone(), images.clone()
    for i, item in enumerate(items):
        tumour = item["mask"].bool()
        mirrored = tumour.flip(-1) & ~tumour
        brain = (images[i].amax(0) > brain_above) & ~tumour
        fill = images[i][:, brain].median(dim=1).values[:, None]
        edited[i][:, tumour] = fill
        control[i][:, mirrored] = fill
    return edited, control

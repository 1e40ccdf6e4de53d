"""How well a run's CAM, with its config's options, finds the objects of some images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from src.cams import build_cam
from src.evaluation.metrics import localisation_metrics
from src.pipeline.config import cam_options, cam_target_layers


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

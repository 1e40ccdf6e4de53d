"""Start-up checks of a composed config.

Hydra already rejects unknown config-group options and misspelt keys (the config is in struct
mode). What it cannot know are value ranges and choices inside a group; they are checked here,
before anything is trained, so a typo costs seconds instead of an hour of training.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

STAGES = ("all", "pretrain", "finetune", "eval", "masks")
METHODS = ("cam", "supervised")
MODALITIES = ("t1", "t1ce", "t2", "flair")
EVAL_SPLITS = ("train", "val", "test")
MASK_METHODS = ("densecrf", "otsu", "threshold")
# Keys of a `cam` config read by the evaluation; every other key is a build_cam option.
CAM_EVAL_KEYS = ("name", "layers", "mask", "threshold")


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"Invalid config value for '{field}': {message}")
        self.field = field


def _check_choice(field: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(field, f"got {value!r}, expected one of {', '.join(choices)}")


def _check_modality(field: str, value: Any) -> None:
    values = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]
    if not values:
        raise ConfigError(field, "needs at least one modality")
    for item in values:
        _check_choice(field, item, MODALITIES)


def cam_options(cam_cfg: DictConfig) -> dict[str, Any]:
    """The build_cam keyword options of a `cam` config (everything but the evaluation keys)."""
    options = OmegaConf.to_container(cam_cfg, resolve=True)
    assert isinstance(options, dict)
    return {key: value for key, value in options.items() if key not in CAM_EVAL_KEYS}


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first invalid value, naming its field."""
    _check_choice("stage", cfg.stage, STAGES)
    _check_choice("method", cfg.method, METHODS)
    if cfg.stage == "masks" and not cfg.get("maps_from"):
        raise ConfigError("maps_from", "stage=masks needs maps_from=<folder of a finished run>")
    if "modality" in cfg.data:
        _check_modality("data.modality", cfg.data.modality)
    elif cfg.get("modality") is not None:
        _check_modality("modality", cfg.modality)

    if cfg.data.get("root") is None:
        raise ConfigError("data.root", "no dataset folder given; set data.root=/path/to/dataset")

    cam = cfg.cam
    delta = cam.get("delta")
    if delta is not None:
        if isinstance(delta, bool) or not isinstance(delta, int | float):
            raise ConfigError("cam.delta", f"must be a number in [0, 100) or null, got {delta!r}")
        if not 0 <= delta < 100:
            raise ConfigError("cam.delta", f"must be in [0, 100), got {delta}")
    _check_choice("cam.mask", cam.mask, MASK_METHODS)
    if cam.mask == "threshold" and cam.get("threshold") is None:
        raise ConfigError("cam.threshold", "mask=threshold needs a threshold in [0, 1]")
    layers = cam.get("layers", 1)
    stages = list(cfg.backbone.cam_stages)
    if not isinstance(layers, int) or not 1 <= layers <= len(stages):
        raise ConfigError("cam.layers", f"must be an integer in [1, {len(stages)}], got {layers!r}")

    _check_choice("eval.split", cfg.eval.split, EVAL_SPLITS)
    limit = cfg.eval.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError("eval.limit", f"must be a positive integer or null, got {limit!r}")
    fraction = cfg.eval.get("positive_fraction")
    if fraction is not None and not (isinstance(fraction, int | float) and 0 <= fraction <= 1):
        raise ConfigError("eval.positive_fraction", f"must be in [0, 1] or null, got {fraction!r}")
    area = cfg.eval.get("normal_area_max")
    if area is not None and not (
        isinstance(area, int | float) and not isinstance(area, bool) and 0 <= area < 1
    ):
        raise ConfigError("eval.normal_area_max", f"must be in [0, 1) or null, got {area!r}")

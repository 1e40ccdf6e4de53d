"""Start-up checks of a composed config.

Hydra already rejects unknown config-group options and misspelt keys (the config is in struct
mode), except under `cam.options.`: the build_cam options differ per method, so the entry
point lets any `cam.options.<key>` through and the CAM engine's own validator judges them
here. What Hydra cannot
know either are value ranges, choices inside a group and whether the named files exist; they
are checked here, before any data is read or anything trained, so a typo costs seconds
instead of an hour of training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from src.cams import CAM_METHODS, check_options
from src.cams.base import OptionError
from src.evaluation.faithfulness import BASELINES
from src.evaluation.masks import METHODS as MASK_METHODS
from src.models.backbones import PADDING_MODES, min_image_size, stage_names
from src.validation import check_choice, check_patience

STAGES = ("all", "pretrain", "finetune", "eval", "masks")
METHODS = ("cam", "supervised", "selftrain")
MODALITIES = ("t1", "t1ce", "t2", "flair")
EVAL_SPLITS = ("train", "val", "test")
FULLGRAD_METHODS = ("fullgrad", "ltfullgrad")
#: The training nodes whose best-checkpoint stage may stop early (`<node>.patience`), and
#: the callback config whose monitored score the stop watches.
EARLY_STOP_NODES = {"finetune": "classifier_checkpoint", "segmenter": "segmenter_checkpoint"}


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"Invalid config value for '{field}': {message}")
        self.field = field


def _check_choice(field: str, value: Any, choices: Iterable[str]) -> None:
    check_choice(field, value, choices, ConfigError)


def _check_modality(field: str, value: Any) -> None:
    values = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]
    if not values:
        raise ConfigError(field, "needs at least one modality")
    for item in values:
        _check_choice(field, item, MODALITIES)


def _check_image_size(value: Any, arch: str, norm: str, padding_mode: str = "zeros") -> None:
    sizes = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]
    if value is None:
        return
    if len(sizes) not in (1, 2) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise ConfigError(
            "data.image_size",
            f"must be a positive number of pixels, [height, width] or null (keep each "
            f"image's size), got {value!r}",
        )
    smallest = min_image_size(arch, norm, padding_mode)
    if min(sizes) < smallest:
        raise ConfigError(
            "data.image_size",
            f"{value!r} is too small for the {arch} network (norm={norm}), which downsamples "
            f"by 32: give at least {smallest} px",
        )


def _check_threads(value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(
            "threads",
            f"must be a number of CPU threads >= 1, or null (PyTorch's default), got {value!r}",
        )


def _check_faithfulness(cfg: DictConfig) -> None:
    """`eval.faithfulness*`: the values, and that a measure of a CAM against its classifier
    has both (a CAM run of a binary task: VOC's per-class maps are not supported), before the
    classifier is trained."""
    enabled = cfg.eval.get("faithfulness")
    if not isinstance(enabled, bool):
        raise ConfigError("eval.faithfulness", f"must be true or false, got {enabled!r}")
    for key in ("faithfulness_steps", "faithfulness_chunk"):
        value = cfg.eval.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"eval.{key}", f"must be an integer >= 1, got {value!r}")
    _check_choice("eval.faithfulness_baseline", cfg.eval.get("faithfulness_baseline"), BASELINES)
    if not enabled:
        return
    if cfg.method != "cam":
        raise ConfigError(
            "eval.faithfulness",
            f"measures a CAM against its classifier; method={cfg.method} has no classifier",
        )
    datamodule = get_class(cfg.data._target_)
    if datamodule.task != "binary":
        raise ConfigError(
            "eval.faithfulness",
            f"needs a binary (one-logit) task; {datamodule.__name__} is {datamodule.task}",
        )


def cam_target_layers(stages: Sequence[str], layers: int | Sequence[str]) -> list[str]:
    """The stages a CAM hooks: the last `layers` of the network's `stages` (shallow to deep), or
    the stages `layers` names (`cam.layers=[features.4]`: one stage alone)."""
    if isinstance(layers, int):
        return list(stages)[-layers:]
    return [str(name) for name in layers]


def cam_options(cam_cfg: DictConfig) -> dict[str, Any]:
    """The build_cam keyword options of a `cam` config: its `options` node as a plain dict
    (empty when the config has none)."""
    node = cam_cfg.get("options")
    if node is None:
        return {}
    options = OmegaConf.to_container(node, resolve=True)
    if not isinstance(options, dict):
        raise ConfigError("cam.options", f"must be a mapping of build_cam options, got {node!r}")
    return {str(key): value for key, value in options.items()}


@cache
def build_cam_option_names() -> frozenset[str]:
    """Every option name some CAM method's build_cam accepts (`delta`, `scales`, `preset`...):
    a `cam.<name>` outside `cam.options` is one of these misplaced."""
    return frozenset().union(*(check_options(name) for name in CAM_METHODS))


def _check_cam_options(cam: DictConfig) -> None:
    """The CAM engine's own validator, before any training (the evaluation would reach it
    only after the classifier is trained)."""
    misplaced = sorted(key for key in cam if key in build_cam_option_names())
    if misplaced:
        key = misplaced[0]
        raise ConfigError(
            f"cam.{key}",
            f"build_cam options live under cam.options: set cam.options.{key}, not cam.{key}",
        )
    try:
        check_options(cam.name, **cam_options(cam))
    except OptionError as err:
        raise ConfigError(f"cam.options.{err.option}", str(err)) from err
    except ValueError as err:  # an unknown method name
        raise ConfigError("cam.name", str(err)) from err


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
    net = cfg.backbone.net
    padding_mode = net.get("padding_mode", "zeros")
    _check_choice("backbone.net.padding_mode", padding_mode, PADDING_MODES)
    _check_image_size(
        cfg.data.get("image_size"), net.arch, net.get("norm", "instance"), padding_mode
    )
    _check_threads(cfg.get("threads"))
    for node, callback in EARLY_STOP_NODES.items():
        if node in cfg:
            # An absent callback config is not a null monitor: that is the trainer's to refuse.
            monitor = cfg.get("callbacks", {}).get(callback, {}).get("monitor", "")
            patience = cfg[node].get("patience")
            check_patience(f"{node}.patience", patience, ConfigError, monitor=monitor)
    if not isinstance(cfg.get("keep_last_checkpoint"), bool):
        raise ConfigError(
            "keep_last_checkpoint",
            f"must be true or false, got {cfg.get('keep_last_checkpoint')!r}",
        )

    cam = cfg.cam
    _check_cam_options(cam)
    _check_choice("cam.mask", cam.mask, MASK_METHODS)
    if cam.mask == "threshold" and cam.get("threshold") is None:
        raise ConfigError("cam.threshold", "mask=threshold needs a threshold in [0, 1]")
    if cam.name in FULLGRAD_METHODS and cfg.backbone.net.get("norm") == "instance":
        # FullGrad sums the bias-gradients of Conv2d/BatchNorm2d layers; the InstanceNorm
        # ResNet has none, which the engine would report only after training.
        raise ConfigError(
            "cam.name",
            f"{cam.name} needs a backbone with biases (Conv2d or BatchNorm2d); the "
            f"{cfg.backbone.net.arch} with norm=instance has none: use backbone=vgg16 or "
            "backbone.net.norm=batch",
        )
    stages = stage_names(net.arch, net.get("norm", "instance"))
    layers = cam.get("layers", 1)
    if OmegaConf.is_list(layers) or isinstance(layers, list):
        unknown = [name for name in layers if name not in stages]
        if not layers or unknown:
            raise ConfigError(
                "cam.layers",
                f"{list(layers)!r} names no stage or stages the {net.arch} network does not "
                f"have ({unknown}); its stages are {stages}",
            )
    elif not isinstance(layers, int) or isinstance(layers, bool) or not 1 <= layers <= len(stages):
        raise ConfigError(
            "cam.layers",
            f"must be an integer in [1, {len(stages)}] or a list of stage names {stages}, "
            f"got {layers!r}",
        )

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
    gate = cfg.eval.get("label_gate")
    if gate is not None and not isinstance(gate, bool):
        raise ConfigError("eval.label_gate", f"must be true, false or null, got {gate!r}")
    _check_faithfulness(cfg)


def check_paths(cfg: DictConfig) -> None:
    """The files and folders the config names exist, before any Trainer starts.

    A generated dataset (`data.demo`) is made on first use, so its root may be missing."""
    root = cfg.data.get("root")
    if root is not None and not cfg.data.get("demo") and not Path(root).is_dir():
        raise ConfigError("data.root", f"{root} is not a folder; point it at the dataset")
    ckpt = cfg.get("ckpt")
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError("ckpt", f"{ckpt} is not a file; give a checkpoint or weights file")

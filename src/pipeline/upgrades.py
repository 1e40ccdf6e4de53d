"""Configs of runs saved by older versions of the pipeline: converted where a later stage
reads them (`stage=masks` re-masks any finished run), refused with the fix where replaying
them today would silently change what they mean (`resume=`, a run's own `data` node).

Gathered here so that each change of the config layout has its conversion in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from src.pipeline.config import ConfigError, build_cam_option_names

#: The generated demo's DataModule; older runs had a BraTS node with a `demo` entry instead.
DEMO_TARGET = "src.data.demo.DemoBraTSDataModule"
_BRATS_TARGET = "src.data.brats.BraTSDataModule"


def check_data_arguments(arguments: dict[str, Any]) -> None:
    """Raise ConfigError for a resolved `data` node in the form of older runs
    (`upgrade_data_config` converts those that stage=masks reads): its `evaluation` entry is
    now `eval.metrics`/`eval.miou`, its `demo` entry belongs to `DEMO_TARGET`."""
    generated = str(arguments["_target_"]).startswith("src.data.demo.")
    if "evaluation" in arguments or ("demo" in arguments and not generated):
        raise ConfigError(
            "data",
            "a data config of an older run (with data.evaluation or data.demo on "
            f"{arguments['_target_']}): set eval.metrics/eval.miou instead of data.evaluation, "
            f"and _target_: {DEMO_TARGET} for generated data, in that run's config.yaml",
        )


def upgrade_data_config(data: DictConfig, evaluation: DictConfig) -> DictConfig:
    """The `data` node of a run saved before the data nodes became plain DataModule calls,
    in today's form (newer nodes come back unchanged).

    Then, `data.evaluation` held the headline convention (now `eval.metrics`/`eval.miou`,
    filled into `evaluation` where this run leaves them null) and the demo was a
    BraTSDataModule node with a `demo` entry (now `src.data.demo.DemoBraTSDataModule`)."""
    data = data.copy()
    with open_dict(data), open_dict(evaluation):
        for key, value in (data.pop("evaluation", None) or {}).items():
            if evaluation.get(key) is None:
                evaluation[key] = value
        if data.get("demo") and data.get("_target_") == _BRATS_TARGET:
            data._target_ = DEMO_TARGET
        data.pop("output_dir", None)  # the pipeline passes it
    return data


def check_not_before_cam_options(run: Path, saved: Sequence[tuple[str, str]]) -> None:
    """ConfigError when the run in `run` set a build_cam option at the top of `cam`
    (`++cam.delta=20`; `saved` holds each saved override's text and the key it sets): it was
    started before the options moved under `cam.options`, and replayed today the value would
    not reach the CAM."""
    for text, key in saved:
        if key.startswith("cam.") and key.removeprefix("cam.") in build_cam_option_names():
            name = key.removeprefix("cam.")
            raise ConfigError(
                "resume",
                f"the run in {run} predates cam.options (it was started with {text}, now "
                f"cam.options.{name}); it cannot be resumed: start a new run with "
                f"cam.options.{name}",
            )


ABSENT = object()
#: Options the config files gained after finished jobs were recorded, oldest change first.
#: Each change lists (dotted key, the value it was added at, the value that did the same
#: before: `ABSENT` where the key did not exist). A recorded job's digest
#: (experiments/engine.py) was taken on the config of its day, so a key added at a value that
#: changes nothing must not make every finished job run again.
CONFIG_ADDITIONS: tuple[tuple[tuple[str, Any, Any], ...], ...] = (
    # method=selftrain's group (its settings only matter to that method)
    (("selftrain", {"source": "cam", "limit": None, "positive_fraction": 0.5}, ABSENT),),
    # channels_last training and persistent loader workers chosen with the accelerator
    (("trainer.channels_last", False, ABSENT), ("data.persistent_workers", None, False)),
    # method=selftrain's confident regions, off
    (
        ("selftrain.confident_foreground", None, ABSENT),
        ("selftrain.confident_background", None, ABSENT),
    ),
    # fine-tuning's early stop, off
    (("finetune.patience", None, ABSENT),),
    # the backbone's convolution padding, torchvision's zeros
    (("backbone.net.padding_mode", "zeros", ABSENT),),
)


def composed_before(container: dict[str, Any]) -> list[dict[str, Any]]:
    """A composed config (a plain container) as the config files of each earlier version
    composed it, newest first: each step takes back one more change of `CONFIG_ADDITIONS`,
    turning its keys that are at the value they were added at into their former value.
    A value set by hand (an override) stays, so a job with it still differs from one
    without."""
    forms, current = [], container
    for change in reversed(CONFIG_ADDITIONS):
        current = _take_back(current, change)
        forms.append(current)
    return forms


def _take_back(container: dict[str, Any], change: tuple[tuple[str, Any, Any], ...]) -> dict:
    """`container` with the keys of one change at their former value (copied along the
    changed paths: the input stays as it is)."""
    result = dict(container)
    for dotted, added_at, former in change:
        *parents, name = dotted.split(".")
        node = result
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                break
            node[parent] = node = dict(node[parent])
        else:
            value = node.get(name, ABSENT)
            if value == added_at and type(value) is type(added_at):  # 0 is not False
                if former is ABSENT:
                    del node[name]
                else:
                    node[name] = former
    return result

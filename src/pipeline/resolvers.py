"""OmegaConf resolvers the project's configs use (`conf/paths`, `conf/hydra`).

Registered by the entry point and by `compose_config` before Hydra composes anything.
"""

from __future__ import annotations

import os
import re

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

MAX_NAME = 120  # with the job number in front, well below the 255 bytes of a file name


def launch_dir() -> str:
    """The folder the command was started from.

    Hydra's own `${hydra:runtime.cwd}` fails while a multirun launcher resolves
    `hydra.sweep.dir` (no job config is set yet); this falls back to the process's working
    directory then, which is the same folder (runs never change directory)."""
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.cwd)
    return os.getcwd()


def path_safe(text: str) -> str:
    """`text` as a folder name a shell takes unquoted: the `+` of Hydra's append overrides
    dropped, every character other than letters, digits, `.`, `-` and `_` turned into `_`,
    at most MAX_NAME characters (the job number in front keeps names unique)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("+", "")).strip("_")
    return name[:MAX_NAME]


def masks_suffix(stage: str, mask: str) -> str:
    """The end of a run folder's name: `_masks-<mask rule>` for a `stage=masks` run, whose
    maps are another run's and whose mask rule is the one thing it chose; else nothing."""
    return f"_masks-{path_safe(str(mask))}" if stage == "masks" else ""


RESOLVERS = {"launch_dir": launch_dir, "path_safe": path_safe, "masks_suffix": masks_suffix}


def register_resolvers() -> None:
    """Register every resolver once (calling again is a no-op)."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)

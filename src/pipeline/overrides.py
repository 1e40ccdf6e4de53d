"""Command-line overrides as the entry point hands them to Hydra."""

from __future__ import annotations

from collections.abc import Sequence

from src.pipeline.config import ConfigError, build_cam_option_names

OPTIONS_PREFIX = "cam.options."


def _misplaced_option(argument: str) -> str | None:
    """The build_cam option a `cam.<key>=...` argument (with or without Hydra's `+`/`++`/`~`
    prefix) sets outside `cam.options`, else None."""
    key = argument.lstrip("+~").split("=", 1)[0]
    if not key.startswith("cam.") or key.startswith(OPTIONS_PREFIX):
        return None
    name = key.removeprefix("cam.")
    return name if name in build_cam_option_names() else None


def cam_options_as_upserts(arguments: Sequence[str]) -> list[str]:
    """`cam.options.<key>=<value>` -> `++cam.options.<key>=<value>` (set, or add if the method's
    config lacks it).

    The build_cam options differ per method (`cam.options.delta` exists for `ltgradcam`, not
    for `cfdcam`). Hydra would reject a key the chosen method's file lacks with a generic
    struct error before the start-up checks run; added, it reaches the CAM engine's validator,
    whose message names the method's valid options. A build_cam option given at the top of
    `cam` (`cam.delta=20`, the layout before `cam.options`) raises ConfigError naming
    `cam.options.<key>`; any other misspelt `cam.<key>` is left to Hydra, which rejects it.
    Every other argument is left as it is.
    """
    for argument in arguments:
        if "=" in argument and (name := _misplaced_option(argument)) is not None:
            value = argument.split("=", 1)[1]
            raise ConfigError(
                f"cam.{name}",
                f"build_cam options live under cam.options: use cam.options.{name}={value}",
            )
    return [
        f"++{arg}" if arg.startswith(OPTIONS_PREFIX) and "=" in arg else arg for arg in arguments
    ]

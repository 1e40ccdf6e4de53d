"""Command-line overrides as the entry point hands them to Hydra."""

from __future__ import annotations

from collections.abc import Sequence


def cam_options_as_upserts(arguments: Sequence[str]) -> list[str]:
    """`cam.<key>=<value>` -> `++cam.<key>=<value>` (set, or add if the method's config lacks it).

    CAM options differ per method (`cam.delta` exists for `ltgradcam`, not for `cfdcam`).
    Hydra would reject a key the chosen method's file lacks with a generic struct error
    before the start-up checks run; added, it reaches the CAM engine's validator, whose
    message names the method's valid options. Every other argument is left as it is.
    """
    return [f"++{arg}" if arg.startswith("cam.") and "=" in arg else arg for arg in arguments]

"""What a run prints: Lightning's advertising tips and the known, harmless deprecation
warnings of the libraries we call are dropped; every other message and warning stays."""

from __future__ import annotations

import logging
import warnings

# Loggers Lightning's `rank_zero_info` writes through (it rebinds between the two packages).
_LIGHTNING_INFO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)

# (message regex, category, module regex) of warnings we trigger and cannot act on.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Lightning's batch-size probe still builds torch's LeafSpec (torch >= 2.10 deprecates it).
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"pytorch_lightning\.",
    ),
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def quiet_console() -> None:
    """Install the filters (idempotent)."""
    for name in _LIGHTNING_INFO_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in target.filters):
            target.addFilter(_DropTips())
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)

"""The one check of a value against its allowed choices, shared by every layer (no imports
from the project, so any module can use it without a cycle).

Each layer keeps its own exception type (``ConfigError`` for the pipeline's config,
``OptionError`` for CAM options, ``ValueError`` elsewhere) and passes it in; the wording of the
message is the same everywhere: ``<name>=<value> is not one of [<choices>]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def _value_error(name: str, message: str) -> Exception:
    return ValueError(message)


def check_choice(
    name: str,
    value: T,
    choices: Iterable[Any],
    error: Callable[[str, str], Exception] = _value_error,
) -> T:
    """Return ``value`` if it is one of ``choices``, else raise ``error(name, message)``.

    ``name`` is what the user set (a config field, a CAM option, an argument); ``error`` builds
    the exception from it and the message (``ConfigError`` and ``OptionError`` take exactly
    these two arguments; the default raises ``ValueError(message)``).
    """
    choices = list(choices)
    if value not in choices:
        raise error(name, f"{name}={value!r} is not one of {choices}")
    return value


def check_patience(
    name: str,
    value: object,
    error: Callable[[str, str], Exception] = _value_error,
    *,
    monitor: str | None,
) -> int | None:
    """Return an early-stop patience (a whole number of epochs >= 1, or ``None`` for no stop),
    else raise ``error(name, message)``. Shared by the start-up config check and the trainer,
    so a bad value fails in seconds with the same words it would get an hour later.
    ``monitor`` is the score the stop watches, the best checkpoint's: ``None`` (the last
    epoch is kept) leaves a stop nothing to watch."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise error(name, f"{name} must be a whole number of epochs >= 1 or null, got {value!r}")
    if value is not None and monitor is None:
        raise error(
            name,
            f"{name} stops on the score the best checkpoint monitors, and its monitor is null "
            "(the last epoch is kept): set the monitor or drop the patience",
        )
    return value

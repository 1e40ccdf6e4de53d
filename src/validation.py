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

"""The error raised for malformed dataset files: its message always names the file."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent.

    ``path`` is the offending file (or folder); the message starts with it so that a user can
    find the file from the error alone.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

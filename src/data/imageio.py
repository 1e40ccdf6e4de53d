"""Decoding of 2D image files (PNG, JPEG) with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.data.errors import DataFormatError


def read_image(path: Path, mode: str) -> np.ndarray:
    """Decode an image converted to PIL ``mode`` ("RGB", "L"); failures name the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode))
    except Exception as exc:  # PIL raises many types for corrupt files
        raise DataFormatError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from exc


def image_hw(path: Path) -> tuple[int, int]:
    """(height, width) from the image header only."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Exception as exc:
        raise DataFormatError(
            path, f"cannot read image header ({type(exc).__name__}: {exc})"
        ) from exc

"""The JPEG round trip of the Cfd-CAM authors' data pipeline, as an opt-in switch.

Their preprocessing writes every min-max scaled slice as an 8-bit JPEG with the writer's
default quality and trains and evaluates on the decoded file (docs/data.md, "Authors'
protocol"). The compression moves about 30 % of the pixels of a brain slice, by up to
~40/255, mostly around edges such as a tumour's border. ``data.jpeg_roundtrip=true`` applies
the same loss to our slices so that their numbers can be compared like for like; the
default keeps the lossless slices.
"""

from __future__ import annotations

import io

import numpy as np

#: ``skimage.io.imsave`` hands JPEGs to Pillow without a quality, so Pillow's default applies.
AUTHORS_JPEG_QUALITY = 75


def jpeg_roundtrip(image: np.ndarray, quality: int = AUTHORS_JPEG_QUALITY) -> np.ndarray:
    """``image`` encoded as JPEG in memory and decoded again, same shape and dtype (uint8).

    (H, W) and (H, W, 1) are encoded as greyscale JPEGs, (H, W, 3) as colour ones (Pillow's
    default 4:2:0 chroma subsampling, as the authors' writer); other shapes are refused.
    """
    from PIL import Image

    if image.dtype != np.uint8:
        raise ValueError(f"jpeg_roundtrip needs uint8 pixels, got {image.dtype}")
    grey = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    if not grey and not (image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(
            f"jpeg_roundtrip needs an (H, W), (H, W, 1) or (H, W, 3) image, got {image.shape}"
        )
    plane = image.reshape(image.shape[:2]) if grey else image
    buffer = io.BytesIO()
    # uint8 (H, W) -> Pillow mode "L", (H, W, 3) -> "RGB"
    Image.fromarray(np.ascontiguousarray(plane)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded).reshape(image.shape)


def jpeg_roundtrip_slices(slices: np.ndarray) -> np.ndarray:
    """Each (H, W) plane of a uint8 (..., H, W) stack through :func:`jpeg_roundtrip`, the way
    the authors store every slice (and every modality) as its own greyscale file."""
    flat = slices.reshape(-1, *slices.shape[-2:])
    out = np.empty_like(flat)
    for index, plane in enumerate(flat):
        out[index] = jpeg_roundtrip(plane)
    return out.reshape(slices.shape)

"""TCGA-LGG reader and DataModule (Kaggle ``lgg-mri-segmentation``, docs/data.md).

``kaggle_3m/TCGA_XX_XXXX_YYYYMMDD/<folder>_<n>.tif`` (256x256x3 uint8: pre-contrast, FLAIR,
post-contrast) with ``<folder>_<n>_mask.tif`` (0/255). ``root`` may be the ``kaggle_3m``
folder or its parent; ``data.csv``, other files and any folder not named ``TCGA_*`` (such as
the nested duplicate copy of the Kaggle download) are ignored. Slice numbers are not
zero-padded and sorted numerically. Label = mask non-empty; split by patient.
``crop_foreground`` cuts each patient's slices to the square around its head (one square per
patient, found from the images alone, never the masks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from src.data.base import DataModuleArguments, FileDataModule
from src.data.errors import DataFormatError
from src.data.jpeg import jpeg_roundtrip as roundtrip
from src.data.transforms import as_size, foreground_square

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: Channel order of the stored tif slices (Kaggle ``kaggle_3m``).
CHANNELS = {"pre": 0, "flair": 1, "post": 2}
#: ``crop_foreground``: the head is where a patient's mean slice exceeds this share of its
#: maximum. A relative threshold on the mean over slices, not "non-zero": the Kaggle slices
#: are not skull-stripped and their background need not be exactly black, and isolated
#: bright pixels average out.
FOREGROUND_SHARE = 0.05


def read_tif(path: Path) -> np.ndarray:
    """Decode a tif file; failures become an error naming the file."""
    import tifffile

    try:
        data = np.asarray(tifffile.imread(path))
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise DataFormatError(path, f"cannot decode TIFF ({type(exc).__name__}: {exc})") from exc
    if data.size == 0:  # tifffile returns an empty array for some corrupt files
        raise DataFormatError(path, "cannot decode TIFF (no image data)")
    return data


def tif_shape(path: Path) -> tuple[int, ...]:
    """Shape of a tif's first page from its header, without decoding the pixels."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tuple(tif.pages[0].shape)
    except Exception as exc:
        raise DataFormatError(
            path, f"cannot read TIFF header ({type(exc).__name__}: {exc})"
        ) from exc


def read_binary_mask(path: Path) -> np.ndarray:
    """A 0/255 mask file as 0/1 uint8 (2D; a 3-channel copy is reduced to its first channel)."""
    mask = read_tif(path)
    if mask.ndim == 3:
        mask = mask[..., 0]
    values = np.flatnonzero(np.bincount(mask.ravel().astype(np.int64))) if mask.size else []
    bad = [int(v) for v in values if v not in (0, 255)]
    if mask.ndim != 2 or bad:
        raise DataFormatError(
            path, f"mask must be 2D with values 0/255, got {mask.shape}, {bad[:5]}"
        )
    return (mask > 0).astype(np.uint8)


def natural_slices(folder: Path) -> list[tuple[int, Path, Path]]:
    """(n, image, mask) of a patient folder sorted by slice number (``_10`` after ``_9``)."""
    pattern = re.compile(rf"^{re.escape(folder.name)}_(\d+)(_mask)?\.tif$")
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            (masks if match.group(2) else images)[int(match.group(1))] = path
    if not images:
        raise DataFormatError(folder, f"no slices named {folder.name}_<n>.tif")
    for n in sorted(set(images) ^ set(masks)):
        present = images.get(n) or masks[n]
        missing = "mask" if n in images else "image"
        raise DataFormatError(present, f"slice {n} has no {missing} file")
    return [(n, images[n], masks[n]) for n in sorted(images)]


def head_square(mean_slice: np.ndarray) -> tuple[slice, slice] | None:
    """The square around the head of a patient's mean slice (H, W): where it exceeds
    ``FOREGROUND_SHARE`` of its maximum (:func:`~src.data.transforms.foreground_square`);
    None for an all-black patient."""
    peak = float(mean_slice.max())
    return foreground_square(mean_slice > FOREGROUND_SHARE * peak) if peak > 0 else None


class TCGALGGDataModule(FileDataModule):
    """TCGA-LGG slices, binary tumour label, FLAIR-abnormality mask.

    ``channels``: ``stored`` (the 3 stored channels: pre-contrast, FLAIR, post-contrast) or one
    of ``pre``/``flair``/``post`` repeated to 3 channels. ``image_size``: None keeps 256x256.
    ``jpeg_roundtrip``: pass each slice (its selected channels) through JPEG as it is read, the
    way the Cfd-CAM authors' pipeline stores slices (:mod:`src.data.jpeg`).
    ``crop_foreground``: cut every slice of a patient (image and mask) to the square around
    the patient's head (:func:`head_square` of the mean over its slices, brightest channel)
    before resizing, so a small ``image_size`` spends its pixels on the brain; the label is
    still the full mask's. The scan then decodes every slice once.
    ``split_ratios`` divides the patients; ``**shared``: :class:`DataModuleArguments`.
    """

    num_classes = 1
    task = "binary"
    # The tif slices carry no voxel size: per-case HD95 in voxels of the evaluated slices.
    volume_unit = "voxels"
    class_names = ["tumour"]

    def __init__(
        self,
        root: str | Path,
        channels: str = "stored",
        image_size: int | Sequence[int] | None = None,
        split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
        jpeg_roundtrip: bool = False,
        crop_foreground: bool = False,
        **shared: Unpack[DataModuleArguments],
    ) -> None:
        super().__init__(root, split_ratios, **shared)
        for name, value in (
            ("jpeg_roundtrip", jpeg_roundtrip),
            ("crop_foreground", crop_foreground),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        self.jpeg_roundtrip = jpeg_roundtrip
        self.crop_foreground = crop_foreground
        if channels != "stored" and channels not in CHANNELS:
            raise ValueError(
                f"channels must be 'stored' or one of {list(CHANNELS)}, got {channels!r}"
            )
        self.channels = channels
        self.image_size = as_size(image_size)  # type: ignore[arg-type]

    def _patients_dir(self) -> Path:
        nested = self.root / "kaggle_3m"
        return nested if nested.is_dir() else self.root

    def _scan(self) -> list[str]:
        base = self._patients_dir()
        patients = sorted(
            p.name for p in base.iterdir() if p.is_dir() and p.name.startswith("TCGA_")
        )
        if not patients:
            raise DataFormatError(base, "no patient folders TCGA_* (expected kaggle_3m layout)")
        for patient in patients:
            rows = self._guard(patient, lambda p=patient: self._scan_patient(base / p))
            if rows is not None:
                self._entries[patient] = rows
        return [p for p in patients if p in self._entries]

    def _scan_patient(self, folder: Path) -> list[tuple[str, object, list[float]]]:
        slices, total = [], None
        for n, image, mask_path in natural_slices(folder):
            if self.crop_foreground:
                pixels = read_tif(image)
                shape = pixels.shape
            else:
                shape = tif_shape(image)
            if len(shape) != 3 or shape[2] != 3:
                raise DataFormatError(image, f"expected an (H, W, 3) slice, got {shape}")
            if self.crop_foreground:
                brightest = pixels.max(axis=2).astype(np.float64)
                if total is not None and total.shape != brightest.shape:
                    raise DataFormatError(
                        image, f"slice shape {shape} differs from the patient's other slices"
                    )
                total = brightest if total is None else total + brightest
            mask = read_binary_mask(mask_path)
            if mask.shape != shape[:2]:
                raise DataFormatError(
                    mask_path, f"mask shape {mask.shape} differs from image {shape}"
                )
            slices.append((f"{folder.name}/s{n:03d}", image, mask_path, float(mask.any())))
        box = head_square(total) if total is not None else None
        return [(id_, (image, mask, box), [label]) for id_, image, mask, label in slices]

    def _load(self, record: object) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path, box = record  # type: ignore[misc]
        image = read_tif(image_path)
        if self.channels != "stored":
            image = image[..., CHANNELS[self.channels] : CHANNELS[self.channels] + 1]
        if self.jpeg_roundtrip:  # on the full slice, as the authors store it
            image = roundtrip(image)
        mask = read_binary_mask(mask_path)
        if box is not None:
            image, mask = image[box], mask[box]
        return image, mask

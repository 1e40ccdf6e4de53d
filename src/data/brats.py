"""BraTS 2021 reader and DataModule (docs/data.md).

Layout: ``<root>/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (any non-hidden sub-folder is
a case; IDs have gaps). Each requested modality is min-max scaled per volume, cut into axial
slices (axis 2; a slice is ``volume[:, :, z]`` as stored) and cached as uint8; the slice
label is "tumour" iff the whole-tumour area (seg > 0) is strictly greater than
``tumour_area_fraction`` of the slice, computed at the original resolution. Only the
requested modalities and the seg file are required per case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from src.data.base import DataModuleArguments, SplitDataModule
from src.data.cache import cached, dataset_cache_dir, discarded_on_error, fingerprint
from src.data.datasets import TensorSliceDataset
from src.data.errors import DataFormatError
from src.data.jpeg import jpeg_roundtrip_slices
from src.data.transforms import (
    as_size,
    foreground_square,
    minmax_volume,
    resize_images,
    resize_masks,
    to_uint8,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

MODALITIES = ("t1", "t1ce", "t2", "flair")
SEG_LABELS = (0, 1, 2, 4)


def read_nifti(path: Path) -> np.ndarray:
    """Decode one NIfTI volume; any decoding failure becomes an error naming the file."""
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel/gzip/zlib raise many types for corrupt files
        raise DataFormatError(path, f"cannot decode NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3:
        raise DataFormatError(path, f"expected a 3D volume, got shape {data.shape}")
    return data


def decode_case(image_path: Path, seg_path: Path) -> dict[str, np.ndarray]:
    """One modality of one case as cached: ``image`` uint8 (S, H, W) after per-volume min-max
    and ``seg`` uint8 (S, H, W) with the raw BraTS labels (S = axial slices)."""
    volume = read_nifti(image_path)
    seg = read_nifti(seg_path)
    if volume.shape != seg.shape:
        raise DataFormatError(
            image_path, f"image shape {volume.shape} differs from {seg_path.name} {seg.shape}"
        )
    if np.issubdtype(seg.dtype, np.integer) and seg.min() >= 0:
        values = np.flatnonzero(np.bincount(seg.ravel()))  # much faster than np.unique
    else:
        values = np.unique(seg)
    bad = [v for v in values.tolist() if v not in SEG_LABELS]
    if bad:
        raise DataFormatError(seg_path, f"labels {bad[:10]} outside {list(SEG_LABELS)}")
    image = to_uint8(torch.from_numpy(minmax_volume(volume))).numpy()
    return {
        "image": np.ascontiguousarray(np.moveaxis(image, 2, 0)),
        "seg": np.ascontiguousarray(np.moveaxis(seg.astype(np.uint8), 2, 0)),
    }


def slice_labels(seg: np.ndarray, fraction: float) -> np.ndarray:
    """Tumour iff whole-tumour area > ``fraction`` of the slice (strict), per (S, H, W) slice."""
    area = (seg > 0).reshape(len(seg), -1).sum(1)
    return area > fraction * seg.shape[1] * seg.shape[2]


@dataclass
class CaseSlices:
    """The kept slices of one case, ready for the Dataset (uint8 tensors)."""

    images: torch.Tensor  # (S, C, h, w)
    masks: torch.Tensor  # (S, h, w) 0/1
    labels: torch.Tensor  # (S, 1) float32
    ids: list[str]


class BraTSDataModule(SplitDataModule):
    """BraTS 2021 axial slices, binary tumour label, whole-tumour mask (docs/data.md).

    ``modality``: one of t1, t1ce, t2, flair (grey, repeated to 3 channels) or a list of
    them stacked as channels in the listed order (3 names -> 3 channels; a list of one name
    is the grey case; any other count gives that many channels, which the model must accept).
    ``image_size``: None (keep 240x240), an int or (height, width). ``slice_range``: keep
    axial indices in [lo, hi); ``slice_step``: keep every n-th of them (neighbouring slices are
    near copies, so a step covers a case's whole range at a fraction of the cost).
    ``crop_foreground``: cut every slice of a case to the square
    around the case's non-zero voxels (the skull-stripped head) before resizing, so a small
    ``image_size`` spends its pixels on the brain rather than on the black frame; the slice
    label is still taken on the full slice. ``jpeg_roundtrip``: pass every kept slice
    through JPEG as the Cfd-CAM authors' pipeline does (:mod:`src.data.jpeg`; the cache
    keeps the lossless slices). Cache: ``<cache_dir>/brats/<hash of root>/<case>_<mod>.npz``.
    ``split_ratios`` divides the cases; ``**shared``: :class:`DataModuleArguments`.
    """

    num_classes = 1
    task = "binary"
    class_names = ["tumour"]
    # BraTS 2021 volumes are resampled to 1 mm isotropic voxels: per-case HD95 in mm.
    volume_unit = "mm"

    def __init__(
        self,
        root: str | Path,
        modality: str | Sequence[str] = "flair",
        image_size: int | Sequence[int] | None = None,
        tumour_area_fraction: float = 0.01,
        split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
        cache_dir: str | Path | None = None,
        slice_range: Sequence[int] | None = None,
        slice_step: int = 1,
        crop_foreground: bool = False,
        jpeg_roundtrip: bool = False,
        **shared: Unpack[DataModuleArguments],
    ) -> None:
        super().__init__(root, split_ratios, **shared)
        names = [modality] if isinstance(modality, str) else [str(m) for m in modality]
        unknown = [m for m in names if m not in MODALITIES]
        if not names or unknown:
            raise ValueError(
                f"modality must be in {MODALITIES} or a list of them, got {modality!r}"
            )
        self.modalities = names
        self.image_size = as_size(image_size)  # type: ignore[arg-type]
        if not 0 <= tumour_area_fraction < 1:
            raise ValueError(f"tumour_area_fraction must be in [0, 1), got {tumour_area_fraction}")
        self.tumour_area_fraction = float(tumour_area_fraction)
        if slice_range is not None:
            lo, hi = (int(v) for v in slice_range)
            if not 0 <= lo < hi:
                raise ValueError(
                    f"slice_range must be [lo, hi) with 0 <= lo < hi, got {slice_range}"
                )
            slice_range = (lo, hi)
        self.slice_range = slice_range
        if isinstance(slice_step, bool) or not isinstance(slice_step, int) or slice_step < 1:
            raise ValueError(f"slice_step must be a positive integer, got {slice_step!r}")
        self.slice_step = slice_step
        self.crop_foreground = bool(crop_foreground)
        if not isinstance(jpeg_roundtrip, bool):
            raise ValueError(f"jpeg_roundtrip must be true or false, got {jpeg_roundtrip!r}")
        self.jpeg_roundtrip = jpeg_roundtrip
        self.cache_dir = cache_dir
        self._cases: dict[str, CaseSlices] = {}
        self._spacing: dict[str, tuple[float, float, float]] = {}

    def case_files(self, case: str) -> tuple[list[Path], Path]:
        """The requested modality files and the seg file of ``case`` (missing -> error)."""
        folder = self.root / case
        images = [folder / f"{case}_{m}.nii.gz" for m in self.modalities]
        seg = folder / f"{case}_seg.nii.gz"
        for path in [*images, seg]:
            if not path.is_file():
                raise DataFormatError(path, f"missing file of case {case}")
        return images, seg

    def _scan(self) -> list[str]:
        cases = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not cases:
            raise DataFormatError(self.root, "no case folders (expected <root>/<case>/...)")
        cache = dataset_cache_dir(self.cache_dir, "brats", self.root)
        with discarded_on_error(cache):
            for case in cases:
                loaded = self._guard(case, lambda case=case: self._load_case(case, cache))
                if loaded is not None:
                    self._cases[case] = loaded
        return [c for c in cases if c in self._cases]

    def _load_case(self, case: str, cache: Path) -> CaseSlices:
        images, seg_path = self.case_files(case)
        channels, seg = [], None
        for modality, path in zip(self.modalities, images, strict=True):
            sources = fingerprint([path, seg_path])
            entry = cache / f"{case}_{modality}.npz"
            arrays = cached(entry, sources, lambda path=path: decode_case(path, seg_path))
            if seg is not None and arrays["seg"].shape != seg.shape:
                raise DataFormatError(
                    path, f"shape {arrays['image'].shape} differs across modalities"
                )
            seg = arrays["seg"]
            channels.append(arrays["image"])
        assert seg is not None
        labels = slice_labels(seg, self.tumour_area_fraction)
        keep = np.arange(len(seg))
        if self.slice_range is not None:
            keep = keep[self.slice_range[0] : self.slice_range[1]]
        keep = keep[:: self.slice_step]
        stack = np.stack([c[keep] for c in channels], axis=1)
        if self.jpeg_roundtrip:  # on the full slice, as the authors store it
            stack = jpeg_roundtrip_slices(stack)
        tumour = (seg[keep] > 0).astype(np.uint8)
        box = foreground_square(np.stack(channels)) if self.crop_foreground else None
        if box is not None:
            stack, tumour = stack[..., box[0], box[1]], tumour[..., box[0], box[1]]
        images01 = resize_images(torch.from_numpy(stack).float() / 255, self.image_size)
        masks = resize_masks(torch.from_numpy(np.ascontiguousarray(tumour)), self.image_size)
        # 1 mm voxels before the crop and resize; kept slices are `slice_step` apart.
        (height, width), (rows, cols) = tumour.shape[-2:], masks.shape[-2:]
        self._spacing[case] = (float(self.slice_step), height / rows, width / cols)
        return CaseSlices(
            images=to_uint8(images01),
            masks=masks,
            labels=torch.from_numpy(labels[keep].astype(np.float32))[:, None],
            ids=[f"{case}/s{z:03d}" for z in keep.tolist()],
        )

    def voxel_spacing(self, case: str) -> tuple[float, float, float]:
        """The case's voxels as evaluated in mm: `slice_step` mm between kept slices, and
        the (cropped) slice's 1 mm pixels spread over `image_size`."""
        return self._spacing[case]

    def _make_dataset(self, split: str, groups: list[str]) -> TensorSliceDataset:
        parts = [self._cases.pop(c) for c in groups]  # the split's tensors now own the data
        if not parts:
            size = self.image_size or (0, 0)
            return TensorSliceDataset(
                torch.zeros((0, len(self.modalities), *size), dtype=torch.uint8),
                torch.zeros((0, *size), dtype=torch.uint8),
                torch.zeros((0, 1)),
                [],
            )
        return TensorSliceDataset(
            torch.cat([p.images for p in parts]),
            torch.cat([p.masks for p in parts]),
            torch.cat([p.labels for p in parts]),
            [i for p in parts for i in p.ids],
        )

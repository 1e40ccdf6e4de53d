"""Masks from class activation maps (docs/masks.md; the Otsu rule of
docs/layerization-truncation.md).

Three binary rules turn a map in [0, 1] into a mask:

- ``densecrf``: the Cfd-CAM authors' rule for BraTS / TCGA-LGG (empty-mask test, then a
  2-label DenseCRF),
- ``otsu``: OpenCV's ``THRESH_BINARY + THRESH_OTSU`` on ``uint8(map * 255)`` (the second
  paper; KSDD2),
- ``threshold``: a fixed threshold (docs/layerization-truncation.md option).

``voc_mask`` is the multi-class VOC rule. ``MaskMaker`` applies one rule to a batch, optionally
in a process pool so that DenseCRF runs while the next CAM batch is being computed.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from src.validation import check_choice

METHODS = ("densecrf", "otsu", "threshold")


def _as_numpy(array: Any, name: str) -> np.ndarray:
    """Accept numpy arrays and torch tensors (detached to CPU) alike."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.dtype == object:
        raise ValueError(f"{name}: expected a numeric array, got dtype object")
    return array


def _check_map(cam: Any, name: str = "cam") -> np.ndarray:
    cam = _as_numpy(cam, name)
    if cam.ndim != 2:
        raise ValueError(f"{name}: expected a (H, W) map, got shape {cam.shape}")
    return cam.astype(np.float64, copy=False)


def truncated_uint8(cam: np.ndarray) -> np.ndarray:
    """``uint8(cam * 255)`` with truncation, as ``np.uint8`` in the papers' code
    (docs/layerization-truncation.md).

    Values are clipped to [0, 1] first so out-of-range inputs cannot wrap around; for maps
    already in [0, 1] the result is identical to the unclipped cast. Not
    ``src.data.transforms.to_uint8``, which rounds: that one stores cached slices, this one
    reproduces the authors' masks.
    """
    return (np.clip(cam, 0.0, 1.0) * 255.0).astype(np.uint8)


def otsu_threshold(cam_u8: np.ndarray) -> int | None:
    """Otsu threshold of a uint8 image, as OpenCV's ``THRESH_OTSU`` chooses it.

    For each candidate ``t`` (class 1 = grey levels <= t) the between-class variance is
    ``(S * w - N * s)^2 / (w * (N - w))`` with ``N`` pixels of grey sum ``S``, ``w`` pixels
    of grey sum ``s`` at or below ``t``; the FIRST ``t`` with the largest variance wins and
    the mask is ``pixel > t``. The comparison is done in exact integer arithmetic, so exact
    ties resolve to the lowest ``t`` as OpenCV 5 does (checked against ``cv2.threshold`` on
    thousands of random maps; a float evaluation can flip such ties).

    Returns ``None`` when no threshold splits the histogram (a single grey level): OpenCV then
    returns 0 and marks every non-zero pixel, while this module defines such a constant map as
    carrying no object (empty mask).
    """
    if cam_u8.dtype != np.uint8:
        raise ValueError(f"otsu_threshold: expected uint8 input, got {cam_u8.dtype}")
    if cam_u8.size == 0:
        raise ValueError("otsu_threshold: empty input")
    hist = np.bincount(cam_u8.ravel(), minlength=256).tolist()
    total = cam_u8.size
    grey_sum = sum(level * count for level, count in enumerate(hist))
    below = below_sum = 0
    best: int | None = None
    best_num, best_den = 0, 1
    for level, count in enumerate(hist):
        below += count
        below_sum += level * count
        if count == 0 or below == total:
            continue
        num = (grey_sum * below - total * below_sum) ** 2
        den = below * (total - below)
        if num * best_den > best_num * den:
            best, best_num, best_den = level, num, den
    return best


def otsu_mask(cam: Any) -> np.ndarray:
    """Binary mask ``uint8(cam * 255) > otsu_threshold`` (docs/layerization-truncation.md,
    docs/masks.md KSDD2).

    Matches ``cv2.threshold(uint8(cam*255), 0, 255, THRESH_BINARY + THRESH_OTSU)`` except for
    single-valued maps, which give an empty mask (see :func:`otsu_threshold`).
    """
    cam_u8 = truncated_uint8(_check_map(cam))
    threshold = otsu_threshold(cam_u8)
    if threshold is None:
        return np.zeros(cam_u8.shape, dtype=bool)
    return cam_u8 > threshold


def threshold_mask(cam: Any, threshold: float) -> np.ndarray:
    """Binary mask ``cam > threshold`` on the float map (docs/layerization-truncation.md option
    ``threshold``)."""
    return _check_map(cam) > threshold


@dataclass(frozen=True)
class CrfParams:
    """DenseCRF settings of the Cfd-CAM authors (docs/masks.md); every field is a config option."""

    sxy_gaussian: float = 3
    compat_gaussian: float = 3
    sxy_bilateral: float = 10
    srgb: float = 13
    compat_bilateral: float = 10
    iterations: int = 10
    empty_below: float = 0.1


def _rgb_uint8(image: Any, shape: tuple[int, int]) -> np.ndarray:
    """``uint8(255 * image)`` as (H, W, 3) C-contiguous, the bilateral kernel's reference image.

    Float images are taken to be in [0, 1] (clipped, then truncated like ``np.uint8``); uint8
    images are used as they are. Grey images, (H, W) or (H, W, 1), are repeated to 3 channels
    (a single MRI modality).
    """
    image = _as_numpy(image, "image")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.shape[:2] != shape:
        raise ValueError(
            f"image: expected channels-last (H, W, 3), (H, W, 1) or (H, W) with H, W = {shape}, "
            f"got shape {image.shape}"
        )
    if image.dtype != np.uint8:
        image = truncated_uint8(image.astype(np.float64, copy=False))
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def is_empty_map(cam: np.ndarray, empty_below: float = CrfParams.empty_below) -> bool:
    """The authors' empty-mask rule (docs/masks.md): ``(max + min) / 2 < empty_below``."""
    return (float(cam.max()) + float(cam.min())) / 2.0 < empty_below


def densecrf_mask(
    image: Any,
    cam: Any,
    *,
    sxy_gaussian: float = CrfParams.sxy_gaussian,
    compat_gaussian: float = CrfParams.compat_gaussian,
    sxy_bilateral: float = CrfParams.sxy_bilateral,
    srgb: float = CrfParams.srgb,
    compat_bilateral: float = CrfParams.compat_bilateral,
    iterations: int = CrfParams.iterations,
    empty_below: float = CrfParams.empty_below,
) -> np.ndarray:
    """The Cfd-CAM authors' mask (docs/masks.md): empty-mask rule, then a 2-label DenseCRF.

    Unary energies are ``-log(clip([1 - cam, cam], 1e-5, 1))``; pairwise terms are a Gaussian
    kernel and a bilateral kernel on ``uint8(255 * image)``; the label is the argmax of the
    marginals after ``iterations`` mean-field steps (label 1 = object).
    """
    import pydensecrf.densecrf as dcrf

    cam = _check_map(cam)
    height, width = cam.shape
    rgb = _rgb_uint8(image, (height, width))
    if is_empty_map(cam, empty_below):
        return np.zeros((height, width), dtype=bool)
    probs = np.stack([1.0 - cam, cam]).reshape(2, -1)
    unary = np.ascontiguousarray(-np.log(np.clip(probs, 1e-5, 1.0)), dtype=np.float32)
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=sxy_gaussian, compat=compat_gaussian)
    crf.addPairwiseBilateral(sxy=sxy_bilateral, srgb=srgb, rgbim=rgb, compat=compat_bilateral)
    marginals = np.asarray(crf.inference(iterations))
    return marginals.argmax(axis=0).reshape(height, width).astype(bool)


def voc_mask(cams: Any, class_ids: Sequence[int]) -> np.ndarray:
    """The VOC multi-class rule (docs/masks.md) -> (H, W) int64 label map, 0 = background.

    ``cams[k]`` is the map of foreground class ``class_ids[k]`` (0-based among the 20 VOC
    classes), one per class present in the image label. A pixel takes label
    ``class_ids[k] + 1`` of the highest map ``k`` (first one on ties) if that map is above its
    own Otsu threshold (:func:`otsu_mask`), else background 0.
    """
    cams = _as_numpy(cams, "cams")
    class_ids = [int(c) for c in class_ids]
    if cams.ndim != 3 or cams.shape[0] != len(class_ids):
        raise ValueError(
            f"cams: expected shape (K, H, W) with K = len(class_ids) = {len(class_ids)}, "
            f"got {cams.shape}"
        )
    if any(c < 0 for c in class_ids):
        raise ValueError(f"class_ids: expected 0-based non-negative ids, got {class_ids}")
    labels = np.zeros(cams.shape[1:], dtype=np.int64)
    if not class_ids:
        return labels
    above = np.stack([otsu_mask(cam) for cam in cams])
    winner = cams.argmax(axis=0)
    wins = np.take_along_axis(above, winner[None], axis=0)[0]
    labels[wins] = np.asarray(class_ids, dtype=np.int64)[winner[wins]] + 1
    return labels


def _one_mask(method: str, threshold: float, crf: dict[str, float], image: Any, cam: Any):
    """One map -> one mask; module-level so a process pool can pickle it."""
    if method == "densecrf":
        return densecrf_mask(image, cam, **crf)
    if method == "otsu":
        return otsu_mask(cam)
    return threshold_mask(cam, threshold)


class PendingMasks:
    """Handle of one submitted batch; ``result()`` blocks and returns (N, H, W) bool."""

    def __init__(self, futures: list[Future], height_width: tuple[int, int]):
        """One future per image; `height_width` shapes the result of an empty batch."""
        self._futures = futures
        self._height_width = height_width

    def done(self) -> bool:
        """Whether every mask of the batch is ready (`result()` would not block)."""
        return all(future.done() for future in self._futures)

    def result(self) -> np.ndarray:
        """The batch's masks, (N, H, W) bool, waiting for them if needed."""
        if not self._futures:
            return np.zeros((0, *self._height_width), dtype=bool)
        return np.stack([future.result() for future in self._futures])


class MaskMaker:
    """Turns a batch of maps (N, H, W) into boolean masks with one method (docs/masks.md).

    ``method``: ``densecrf`` (needs images), ``otsu`` or ``threshold`` (uses ``threshold``).
    ``workers``: 0 runs in this process; > 0 starts a process pool (``start_method``) so that
    ``submit`` returns at once and masks are computed while the caller computes the next CAM
    batch. Results are the same in both modes (same functions, per image). Use as a context
    manager, or call ``close()``, to shut the pool down.

    Images are channels-last, float in [0, 1] or uint8: (N, H, W, 3), (N, H, W, 1) or
    (N, H, W); torch tensors are accepted and moved to CPU.
    """

    def __init__(
        self,
        method: str = "densecrf",
        *,
        threshold: float = 0.5,
        crf: CrfParams | dict[str, float] | None = None,
        workers: int = 0,
        start_method: str = "forkserver",
    ):
        """Check the options and start the worker pool (see the class docstring)."""
        check_choice("mask method", method, METHODS)
        if workers < 0:
            raise ValueError(f"MaskMaker: workers must be >= 0, got {workers}")
        self.method = method
        self.threshold = float(threshold)
        if not isinstance(crf, CrfParams):
            unknown = sorted(set(crf or {}) - set(CrfParams.__dataclass_fields__))
            if unknown:
                raise ValueError(f"MaskMaker: unknown crf options {unknown}")
            crf = CrfParams(**(crf or {}))
        self.crf = asdict(crf)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            context = multiprocessing.get_context(start_method)
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        self._pending: deque[PendingMasks] = deque()

    def _split(self, images: Any, maps: Any) -> tuple[list[Any], np.ndarray]:
        maps = _as_numpy(maps, "maps")
        if maps.ndim != 3:
            raise ValueError(f"maps: expected a (N, H, W) batch, got shape {maps.shape}")
        if self.method != "densecrf":
            return [None] * len(maps), maps
        if images is None:
            raise ValueError("MaskMaker(method='densecrf'): images are required")
        images = _as_numpy(images, "images")
        if images.shape[:3] != maps.shape:
            raise ValueError(
                f"images {images.shape} and maps {maps.shape} disagree on (N, H, W); "
                "images must be channels-last"
            )
        return list(images), maps

    def submit(self, images: Any, maps: Any) -> PendingMasks:
        """Queue a batch; the handle is also kept for :meth:`results` (submission order)."""
        images_list, maps = self._split(images, maps)
        args = (self.method, self.threshold, self.crf)
        futures = []
        for image, cam in zip(images_list, maps, strict=True):
            if self._pool is None:
                future: Future = Future()
                future.set_result(_one_mask(*args, image, cam))
            else:
                future = self._pool.submit(_one_mask, *args, image, cam)
            futures.append(future)
        handle = PendingMasks(futures, maps.shape[1:])
        self._pending.append(handle)
        return handle

    def results(self) -> Iterator[np.ndarray]:
        """Yield the masks of every batch submitted so far, in submission order."""
        while self._pending:
            yield self._pending.popleft().result()

    def __call__(self, images: Any, maps: Any) -> np.ndarray:
        """Masks of one batch, waiting for them (any pending batches stay queued)."""
        handle = self.submit(images, maps)
        self._pending.remove(handle)
        return handle.result()

    def close(self) -> None:
        """Shut the worker pool down (no-op without one or when already closed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> MaskMaker:
        """The mask maker itself, its pool shut down when the block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Shut the worker pool down."""
        self.close()

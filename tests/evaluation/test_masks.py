"""Tests of src/evaluation/masks.py: Otsu against OpenCV/skimage, DenseCRF rules, VOC rule,
MaskMaker serial vs pooled."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu

from src.evaluation.masks import (
    CrfParams,
    MaskMaker,
    densecrf_mask,
    is_empty_map,
    otsu_mask,
    otsu_threshold,
    threshold_mask,
    truncated_uint8,
    voc_mask,
)


def _maps(seed: int, count: int, shape=(21, 27)) -> list[np.ndarray]:
    """Smooth, noisy, quantised and two-valued maps in [0, 1]."""
    rng = np.random.default_rng(seed)
    maps = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            cam = gaussian_filter(rng.random(shape), 2)
            cam = (cam - cam.min()) / (cam.max() - cam.min())
        elif kind == 1:
            cam = rng.beta(0.4, 0.4, shape)
        elif kind == 2:
            cam = np.round(rng.random(shape) * 4) / 4
        else:
            cam = rng.choice(rng.random(2), shape)
        maps.append(cam)
    return maps


def _disc(shape=(48, 48), centre=(24, 22), radius=10) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def test_to_uint8_truncates_like_np_uint8():
    cam = np.array([[0.0, 0.5, 0.999, 1.0], [1.2, -0.1, 0.1, 0.2]])
    np.testing.assert_array_equal(truncated_uint8(cam), [[0, 127, 254, 255], [255, 0, 25, 51]])


@pytest.mark.parametrize("cam", _maps(0, 12), ids=lambda _: "map")
def test_otsu_matches_opencv(cam):
    cv2 = pytest.importorskip("cv2")
    cam_u8 = truncated_uint8(cam)
    threshold, reference = cv2.threshold(cam_u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert otsu_threshold(cam_u8) == int(threshold)
    np.testing.assert_array_equal(otsu_mask(cam), reference > 0)


def test_otsu_exact_tie_takes_lowest_threshold_like_opencv():
    """Levels 63, 127, 191 once each: t = 63 and t = 127 have exactly the same between-class
    variance; a float evaluation picks 127, OpenCV (and this module) 63."""
    cam_u8 = np.array([[63], [127], [191]], dtype=np.uint8)
    assert otsu_threshold(cam_u8) == 63
    cv2 = pytest.importorskip("cv2")
    assert cv2.threshold(cam_u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] == 63


@pytest.mark.parametrize("cam", _maps(1, 8)[:2] + _maps(2, 8)[4:6], ids=lambda _: "map")
def test_otsu_matches_skimage_on_untied_maps(cam):
    cam_u8 = truncated_uint8(cam)
    assert otsu_threshold(cam_u8) == threshold_otsu(cam_u8)


def test_otsu_hand_computed():
    """Levels 0 (x8), 51 (x7), 229 (x1): t = 0 gives variance 0.25 * 73.25^2 = 1341,
    t = 51 gives (15/256) * (229 - 23.8)^2 = 2467, so t = 51 and only the 229 pixel is kept."""
    cam_u8 = np.array([[51] * 4, [229, 51, 51, 51], [0] * 4, [0] * 4], dtype=np.uint8)
    assert otsu_threshold(cam_u8) == 51
    expected = np.zeros((4, 4), bool)
    expected[1, 0] = True
    np.testing.assert_array_equal(otsu_mask(cam_u8 / 255.0 + 1e-9), expected)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_map_gives_empty_otsu_mask(value):
    cam = np.full((6, 7), value)
    assert otsu_threshold(truncated_uint8(cam)) is None
    assert not otsu_mask(cam).any()


def test_otsu_mask_accepts_tensor():
    cam = _maps(3, 1)[0]
    np.testing.assert_array_equal(otsu_mask(torch.from_numpy(cam)), otsu_mask(cam))


def test_threshold_mask_is_strictly_above():
    cam = np.array([[0.2, 0.5, 0.7]])
    np.testing.assert_array_equal(threshold_mask(cam, 0.5), [[False, False, True]])


def test_map_must_be_2d():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        otsu_mask(np.zeros((2, 3, 4)))


def test_empty_rule_boundary():
    cam = np.zeros((5, 5))
    cam[0, 0] = 0.2  # (0.2 + 0) / 2 = 0.1 is not below 0.1
    assert not is_empty_map(cam)
    cam[0, 0] = 0.1999
    assert is_empty_map(cam)


def test_densecrf_empty_rule_is_applied_at_its_boundary():
    """A clear blob (min 0, max 1, mid-range 0.5) survives empty_below = 0.5 and vanishes as
    soon as the mid-range drops below it."""
    blob = _disc()
    image = np.stack([np.where(blob, 0.8, 0.2)] * 3, axis=-1)
    cam = np.where(blob, 1.0, 0.0)
    np.testing.assert_array_equal(densecrf_mask(image, cam, empty_below=0.5), blob)
    assert not densecrf_mask(image, cam * 0.999, empty_below=0.5).any()
    assert not densecrf_mask(image, np.full(blob.shape, 0.19)).any()


def test_densecrf_returns_a_clear_blob():
    rng = np.random.default_rng(0)
    blob = _disc()
    image = np.stack([np.where(blob, 0.8, 0.1)] * 3, axis=-1)
    cam = np.clip(np.where(blob, 0.9, 0.1) + rng.normal(0, 0.05, blob.shape), 0, 1)
    mask = densecrf_mask(image, cam)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, blob)


def test_densecrf_snaps_a_blurred_map_to_image_edges():
    """The bilateral term puts the boundary on the image edge, which no threshold of the
    blurred map achieves (blurring rounds the square's corners)."""
    yy, xx = np.mgrid[:48, :48]
    blob = (abs(yy - 24) <= 10) & (abs(xx - 22) <= 10)
    image = np.stack([np.where(blob, 0.8, 0.2)] * 3, axis=-1)
    cam = gaussian_filter(blob.astype(float), 4)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    best_threshold_error = min(((cam > t) != blob).sum() for t in np.linspace(0.05, 0.95, 19))
    assert best_threshold_error > 20
    assert (densecrf_mask(image, cam) != blob).sum() <= 3


def test_densecrf_grey_and_uint8_images_equal_rgb():
    rng = np.random.default_rng(1)
    cam = _maps(4, 1, shape=(16, 20))[0]
    grey_u8 = rng.integers(0, 256, (16, 20), dtype=np.uint8)
    rgb_u8 = np.repeat(grey_u8[:, :, None], 3, axis=2)
    reference = densecrf_mask(rgb_u8, cam)
    np.testing.assert_array_equal(densecrf_mask(grey_u8, cam), reference)
    np.testing.assert_array_equal(densecrf_mask(grey_u8[:, :, None], cam), reference)
    # float images are truncated by uint8(255 * image): (v + 0.5) / 255 maps back to v
    np.testing.assert_array_equal(densecrf_mask((rgb_u8 + 0.5) / 255.0, cam), reference)


def test_densecrf_image_shape_mismatch():
    with pytest.raises(ValueError, match=r"image.*\(8, 8, 3\)"):
        densecrf_mask(np.zeros((8, 8, 3)), np.zeros((8, 9)))


def test_voc_rule_hand_built():
    """A = class 4 (label 5), B = class 11 (label 12). Otsu: A keeps > 51 (only the 0.9 pixel),
    B keeps > 76 (the 0.95 pixels); B's 0.3 pixels win but stay background."""
    cam_a = np.array([[0.2] * 4, [0.9, 0.2, 0.2, 0.2], [0.0] * 4, [0.0] * 4])
    cam_b = np.array([[0.95, 0.95, 0.3, 0.3], [0.3] * 4, [0.3, 0.3, 0.95, 0.95], [0.1] * 4])
    assert otsu_threshold(truncated_uint8(cam_a)) == 51
    assert otsu_threshold(truncated_uint8(cam_b)) == 76
    expected = np.array([[12, 12, 0, 0], [5, 0, 0, 0], [0, 0, 12, 12], [0, 0, 0, 0]])
    labels = voc_mask(np.stack([cam_a, cam_b]), [4, 11])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, expected)
    # order of the (map, class) pairs does not matter
    np.testing.assert_array_equal(voc_mask(np.stack([cam_b, cam_a]), [11, 4]), expected)


def test_voc_rule_winner_below_its_threshold_gives_background():
    """B wins everywhere on the left but is below its own Otsu threshold there; A is above its
    own threshold (0) on the left, yet the pixel stays background."""
    cam_a = np.array([[0.2, 0.2, 0.0, 0.0]] * 2)
    cam_b = np.array([[0.3, 0.3, 0.9, 0.9]] * 2)
    assert otsu_mask(cam_a)[:, :2].all()
    expected = np.array([[0, 0, 3, 3]] * 2)
    np.testing.assert_array_equal(voc_mask(np.stack([cam_a, cam_b]), [0, 2]), expected)


def test_voc_rule_no_class_and_bad_input():
    assert not voc_mask(np.zeros((0, 3, 4)), []).any()
    assert voc_mask(np.zeros((0, 3, 4)), []).shape == (3, 4)
    with pytest.raises(ValueError, match="len\\(class_ids\\) = 1"):
        voc_mask(np.zeros((2, 3, 4)), [5])


def _batch(seed: int, count: int = 3, shape=(20, 24)):
    rng = np.random.default_rng(seed)
    images = rng.random((count, *shape, 3))
    maps = np.stack(_maps(seed, count, shape))
    return images, maps


@pytest.mark.parametrize("method", ["densecrf", "otsu", "threshold"])
def test_mask_maker_serial_matches_functions(method):
    images, maps = _batch(5)
    masks = MaskMaker(method, threshold=0.4)(images, maps)
    assert masks.shape == maps.shape and masks.dtype == bool
    for image, cam, mask in zip(images, maps, masks, strict=True):
        if method == "densecrf":
            expected = densecrf_mask(image, cam)
        elif method == "otsu":
            expected = otsu_mask(cam)
        else:
            expected = threshold_mask(cam, 0.4)
        np.testing.assert_array_equal(mask, expected)


def test_mask_maker_pooled_equals_serial_in_submission_order():
    batches = [_batch(seed) for seed in (10, 11, 12)]
    crf = {"iterations": 5}
    serial = MaskMaker("densecrf", crf=crf)
    expected = [serial(images, maps) for images, maps in batches]
    assert any(mask.any() for masks in expected for mask in masks)
    with MaskMaker("densecrf", crf=crf, workers=2) as pooled:
        handles = [pooled.submit(images, maps) for images, maps in batches]
        got = list(pooled.results())
        assert all(handle.done() for handle in handles)
        assert list(pooled.results()) == []
        direct = pooled(*batches[1])
    assert len(got) == len(expected)
    for mine, reference in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mine, reference)
    np.testing.assert_array_equal(direct, expected[1])


def test_mask_maker_accepts_tensors_and_empty_batch():
    images, maps = _batch(6)
    maker = MaskMaker("otsu")
    np.testing.assert_array_equal(maker(None, torch.from_numpy(maps)), maker(images, maps))
    assert maker(None, np.zeros((0, 5, 6))).shape == (0, 5, 6)


def test_mask_maker_bad_options_and_inputs():
    with pytest.raises(ValueError, match="'crf_plus'"):
        MaskMaker("crf_plus")
    with pytest.raises(ValueError, match="srgbb"):
        MaskMaker(crf={"srgbb": 3})
    with pytest.raises(ValueError, match="workers"):
        MaskMaker(workers=-1)
    maker = MaskMaker("densecrf", crf=CrfParams(iterations=2))
    images, maps = _batch(7)
    with pytest.raises(ValueError, match="images are required"):
        maker(None, maps)
    with pytest.raises(ValueError, match=r"\(3, 24, 20, 3\).*\(3, 20, 24\)"):
        maker(images.transpose(0, 2, 1, 3), maps)
    with pytest.raises(ValueError, match=r"\(20, 24\)"):
        maker(images, maps[0])

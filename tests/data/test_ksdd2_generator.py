"""The KSDD2 demo generator's ground truth against KolektorSDD2's published region statistics
(src/data/generators/ksdd2.py, docs/data.md "The KSDD2 demo")."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import line

from src.data.generators.ksdd2 import ANNOTATION_MARGIN, annotate, defective


def test_annotation_is_a_filled_band_around_the_defect():
    """A thin bent scratch is annotated as a compact band a few pixels outside it, as
    KolektorSDD2's annotators outline defects, not as its own 1-px footprint."""
    footprint = np.zeros((200, 120), bool)
    for (y0, x0), (y1, x1) in (((40, 20), (100, 70)), ((100, 70), (150, 60))):
        rr, cc = line(y0, x0, y1, x1)
        footprint[rr, cc] = True
    region = annotate(footprint, np.random.default_rng(0))
    distance = ndimage.distance_transform_edt(~footprint)
    assert region[footprint].all()
    assert region[distance <= ANNOTATION_MARGIN[0] - 1].all()  # the margin's lower end
    assert not region[distance > ANNOTATION_MARGIN[1] + 1].any()  # and its upper end
    assert (ndimage.binary_fill_holes(region) == region).all()
    assert region.sum() > 5 * footprint.sum()


def test_region_sizes_and_counts_follow_kolektorsdd2():
    """300 defective surfaces: the annotated regions' median size, fill and count per image
    fall near the real dataset's (median 61 x 58 px, 1865 px, fill 0.7, 1.1 regions per
    image: dataset-ninja's statistics of the 394 regions)."""
    rng = np.random.default_rng(0)
    heights, widths, areas, fills, counts = [], [], [], [], []
    for _ in range(300):
        _, gt = defective(np.zeros((630, 230), np.float32), rng)
        labels, n = ndimage.label(gt, structure=np.ones((3, 3)))
        counts.append(n)
        for k, box in enumerate(ndimage.find_objects(labels), start=1):
            h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
            area = int((labels[box] == k).sum())
            heights.append(h)
            widths.append(w)
            areas.append(area)
            fills.append(area / (h * w))
    assert 45 <= np.median(heights) <= 75 and 45 <= np.median(widths) <= 75
    assert 1400 <= np.median(areas) <= 2600
    assert np.percentile(areas, 90) > 5000  # large imperfections, as in the real data
    assert np.percentile(fills, 10) >= 0.3 and 0.6 <= np.median(fills) <= 0.8
    assert min(counts) >= 1 and 1.0 <= np.mean(counts) <= 1.3

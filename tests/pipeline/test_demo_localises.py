"""Behaviour of the demo recipe's classifier (the one `make run` trains): it uses the tumour,
and Cfd-CAM with the demo's options points at the tumour.

The classifier is trained once with the demo config into the project's model store
(`.cache/classifiers`), so `make run` and this test share it; a checkout that already ran
either reuses it. Slow: the first run generates the demo data and trains (minutes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.evaluation.sampling import eval_indices
from tests.helpers.localisation import cam_localisation, painted_over, stored_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_brats):
    """The demo config, its test split and its trained classifier (trained if not stored;
    the data are the session's `demo_brats`, which are the checkout's own)."""
    cfg, datamodule, net = stored_classifier([], tmp_path_factory.mktemp("demo_run"))
    dataset = datamodule.dataset("test")
    # The slices the demo evaluates (its eval.limit and eval.positive_fraction): tumours ...
    chosen = eval_indices(dataset, cfg.eval.limit, cfg.eval.positive_fraction)
    items = [dataset[i] for i in chosen if dataset.labels[i].max() > 0.5]
    assert len(items) >= 12 and all(item["mask"].any() for item in items)
    # ... and its normal group: slices without any tumour pixel, enough for a spread.
    normal = [dataset[i] for i in chosen if dataset.labels[i].max() <= 0.5]
    assert len(normal) >= 3 and not any(item["mask"].any() for item in normal)
    assert len({item["id"].split("/")[0] for item in items}) >= 2  # several test cases
    return cfg, net, items


def _scores(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(net(images))[:, 0].numpy()


def test_the_classifier_scores_the_tumour_not_the_slice(demo):
    """Replacing the tumour by the median brain intensity of its slice removes the evidence;
    the same edit on the mirrored (healthy) side leaves the score where it was. A classifier
    that had learnt the slice position or the brain's shape would not tell the two apart."""
    _, net, items = demo
    images = torch.stack([item["image"] for item in items])
    edited, control = painted_over(items, brain_above=0.0)
    original = _scores(net, images)
    assert original.mean() > 0.6, original
    assert (original - _scores(net, edited)).mean() > 0.4
    assert abs((original - _scores(net, control)).mean()) < 0.2


# A release test (`make test-all`): Cfd-CAM at both scales on the 12 tumour slices costs
# ~1000 forwards per slice, minutes of CPU; `make run` computes the same maps.
@pytest.mark.release
def test_cfdcam_points_at_the_tumour(demo):
    """With the demo's own CAM options (multi-scale, confidence scaling), the map's maximum
    lies inside the tumour on most tumour slices, and the map's mass concentrates there far
    more than a map spread evenly over the slice would."""
    cfg, net, items = demo
    found = cam_localisation(cfg, net, items)
    assert found.pointing > 0.5, found.per_image
    assert found.mass > 2 * found.share, found

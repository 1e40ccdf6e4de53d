"""Behaviour of the KSDD2 demo's classifier (the one `python -m src.run data=demo_ksdd2`
trains): it scores the defects, and LTGrad-CAM with the demo's options (l = 5, delta = 20)
points at them.

The classifier is trained once with the demo config into the project's model store
(`.cache/classifiers`), so the demo run and this test share it. Slow: the first run
generates the demo data and trains (minutes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.localisation import cam_localisation, stored_classifier

# Trains the KSDD2 demo classifier on a clean checkout (minutes): `make test-all`.
pytestmark = [pytest.mark.slow, pytest.mark.release]

IMAGES = 24  # defective and clean test images each


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The KSDD2 demo config, its test images and its trained classifier."""
    run_dir = tmp_path_factory.mktemp("ksdd2_demo_run")
    cfg, datamodule, net = stored_classifier(["data=demo_ksdd2"], run_dir)
    dataset = datamodule.dataset("test")
    labels = np.asarray(dataset.labels).reshape(len(dataset), -1).max(1)
    defective = [dataset[i] for i in np.flatnonzero(labels > 0.5)[:IMAGES]]
    clean = [dataset[i] for i in np.flatnonzero(labels <= 0.5)[:IMAGES]]
    assert len(defective) == IMAGES and all(item["mask"].any() for item in defective)
    return cfg, net, defective, clean


def _scores(net: torch.nn.Module, items: list[dict]) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(net(torch.stack([item["image"] for item in items])))[:, 0].numpy()


def test_the_classifier_scores_the_defect_not_the_surface(demo):
    """Defective images score high and clean ones low; painting each defect over with the
    surface's median colour removes most of the evidence."""
    _, net, defective, clean = demo
    assert _scores(net, defective).mean() > 0.7
    assert _scores(net, clean).mean() < 0.3
    repaired = []
    for item in defective:
        image, defect = item["image"].clone(), item["mask"].bool()
        grown = torch.nn.functional.max_pool2d(defect[None, None].float(), 9, 1, 4)[0, 0] > 0
        image[:, grown] = image[:, ~grown].median(dim=1).values[:, None]
        repaired.append({**item, "image": image})
    assert (_scores(net, defective) - _scores(net, repaired)).mean() > 0.4


def test_ltgradcam_points_at_the_defect(demo):
    """With the demo's own CAM options the map's maximum lies on the defect on most defective
    images, and the map's mass concentrates there far more than an even spread would."""
    cfg, net, defective, _ = demo
    found = cam_localisation(cfg, net, defective)
    assert found.pointing > 0.6, found.per_image
    assert found.mass > 5 * found.share, found

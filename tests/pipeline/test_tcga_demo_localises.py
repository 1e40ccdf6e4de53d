"""Behaviour of the TCGA-LGG demo's classifier (the one `python -m src.run data=demo_tcga`
trains): it scores the tumour, not the slice, and Cfd-CAM with the demo's options points at
the tumour.

The classifier is trained once with the demo config into the project's model store
(`.cache/classifiers`), so the demo run and this test share it. Slow: the first run
generates the demo data and trains (minutes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.evaluation.sampling import eval_indices
from tests.helpers.localisation import cam_localisation, painted_over, stored_classifier

# Trains the TCGA-LGG demo classifier on a clean checkout (minutes): `make test-all`.
pytestmark = [pytest.mark.slow, pytest.mark.release]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The TCGA demo config, the tumour slices it evaluates and its trained classifier."""
    run_dir = tmp_path_factory.mktemp("tcga_demo_run")
    cfg, datamodule, net = stored_classifier(["data=demo_tcga"], run_dir)
    dataset = datamodule.dataset("test")
    chosen = eval_indices(dataset, cfg.eval.limit, cfg.eval.positive_fraction)
    items = [dataset[i] for i in chosen if dataset[i]["mask"].any()]
    assert len(items) >= 10
    assert len({item["id"].split("/")[0] for item in items}) >= 2  # several test patients
    return cfg, net, items


def _scores(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(net(images))[:, 0].numpy()


def test_the_classifier_scores_the_tumour_not_the_slice(demo):
    """Painting the tumour over with its slice's median brain colour removes the evidence; the
    same edit on the mirrored (healthy) side leaves the score where it was."""
    _, net, items = demo
    images = torch.stack([item["image"] for item in items])
    edited, control = painted_over(items, brain_above=0.05)
    original = _scores(net, images)
    assert original.mean() > 0.7, original
    assert (original - _scores(net, edited)).mean() > 0.4
    assert abs((original - _scores(net, control)).mean()) < 0.2


def test_cfdcam_points_at_the_tumour(demo):
    """With the demo's own CAM options (multi-scale, confidence scaling), the map's maximum
    lies inside the tumour on most tumour slices, and the map's mass concentrates there far
    more than a map spread evenly over the slice would."""
    cfg, net, items = demo
    found = cam_localisation(cfg, net, items)
    assert found.pointing > 0.5, found.per_image
    assert found.mass > 2 * found.share, found

"""`experiments.probe_scores`: the Platt scaling it fits on the validation split."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.probe_scores import platt_scaling


def test_platt_scaling_recovers_the_calibration_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, 20000)
    labels = rng.random(logits.size) < 1 / (1 + np.exp(-(0.5 * logits + 1.0)))
    a, b = platt_scaling(logits, labels)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(1.0, abs=0.08)


def test_a_calibrated_classifier_is_left_as_it_is():
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 1.5, 20000)
    labels = rng.random(logits.size) < 1 / (1 + np.exp(-logits))
    a, b = platt_scaling(logits, labels)
    assert a == pytest.approx(1.0, abs=0.08) and b == pytest.approx(0.0, abs=0.06)

"""Temperature scaling recovers a known temperature and improves calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from sweet.calibration import expected_calibration_error, fit_temperature, fit_temperatures, nll


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_fit_recovers_the_temperature_that_generated_the_labels(true_t):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, 3))
    probs = softmax(logits / true_t, axis=1)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_fitted_temperature_minimises_nll_and_reduces_ece():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(5000, 2))
    labels = np.array([rng.choice(2, p=p) for p in softmax(logits / 2.5, axis=1)])
    t = fit_temperature(logits, labels)
    assert nll(logits, labels, t) <= min(nll(logits, labels, 1.0), nll(logits, labels, t * 1.2), nll(logits, labels, t / 1.2))
    before = expected_calibration_error(softmax(logits, axis=1), labels)
    after = expected_calibration_error(softmax(logits / t, axis=1), labels)
    assert after < before / 2


def test_one_temperature_per_exit():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    ts = fit_temperatures([rng.normal(size=(500, 2)) for _ in range(4)], labels)
    assert len(ts) == 4 and all(t > 0 for t in ts)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), [0, 1])

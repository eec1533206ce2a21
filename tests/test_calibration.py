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


@pytest.mark.filterwarnings("ignore::sweet.calibration.TemperatureAtBoundWarning")  # random logits: T at 20
def test_one_temperature_per_exit():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    ts = fit_temperatures([rng.normal(size=(500, 2)) for _ in range(4)], labels)
    assert len(ts) == 4 and all(t > 0 for t in ts)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), [0, 1])


def _half_right(n: int = 400, scale: float = 5.0):
    """Confident logits that are right on exactly half the rows: the NLL falls all the way to T = infinity."""
    labels = np.arange(n) % 2
    pred = np.where(np.arange(n) % 4 < 2, labels, 1 - labels)
    return scale * np.eye(2)[pred], labels


def test_a_temperature_at_the_upper_bound_warns_and_says_what_it_means():
    from sweet.calibration import TemperatureAtBoundWarning

    logits, labels = _half_right()
    with pytest.warns(TemperatureAtBoundWarning) as caught:
        ts = fit_temperatures([logits, logits], labels, exit_layers=[2, 4])
    assert ts == [pytest.approx(20.0, rel=1e-3)] * 2
    first, last = (str(w.message) for w in caught)
    top = softmax(logits / ts[0], axis=1).max()  # 0.562: every row's confidence
    assert first.startswith("exit 1 of 2 (layer 2): temperature fitted at its upper bound 20 ")
    assert "near uniform (at most 0.563 on the calibration split; 1/2 = 0.500)" in first
    assert "every confidence threshold above 0.563 sends every row past this exit" in first
    assert top <= 0.563 and "\n" not in first
    assert last.startswith("exit 2 of 2 (layer 4): temperature fitted at its upper bound 20 ")
    assert "it is the last exit, so the rows that reach it still leave there" in last and "past" not in last


def test_a_temperature_at_the_lower_bound_warns_and_says_what_it_means():
    from sweet.calibration import TemperatureAtBoundWarning

    labels = np.arange(300) % 3
    logits = np.eye(3)[labels]  # every row right: the NLL falls all the way to T = 0
    with pytest.warns(TemperatureAtBoundWarning) as caught:
        ts = fit_temperatures([logits + 0.0, logits], labels)
    assert ts[1] == pytest.approx(0.05, rel=1e-3)
    assert [str(w.message).split(":")[0] for w in caught] == ["exit 1 of 2", "exit 2 of 2"]
    assert str(caught[1].message).startswith("exit 2 of 2: temperature fitted at its lower bound 0.05 ")
    assert "at least 0.999 on the calibration split) and every confidence threshold up to 0.999 sends every row out at " \
           "this exit" in str(caught[0].message)
    assert "at least 0.999 on the calibration split) and it is the last exit, so every row that reaches it leaves " \
           "there anyway" in str(caught[1].message)


def test_a_temperature_inside_the_bounds_does_not_warn():
    import warnings

    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(2000, 2))
    labels = np.array([rng.choice(2, p=p) for p in softmax(logits / 2.0, axis=1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 1.5 < fit_temperatures([logits], labels)[0] < 2.7

"""Exit decisions of the confidence policy, and threshold validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sweet import SweetError
from sweet.policies import ConfidencePolicy, check_threshold, decide


def _logits():
    # 3 samples, 3 exits, 2 labels. Confidence (softmax max) per exit:
    # sample 0: 0.73, 0.95, 0.99 ; sample 1: 0.5, 0.6, 0.88 ; sample 2: 0.99.., 1.0 (saturated), ...
    return [
        torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 30.0]]),
        torch.tensor([[3.0, 0.0], [0.0, 0.4055], [0.0, 100.0]]),
        torch.tensor([[0.0, 5.0], [2.0, 0.0], [0.0, 100.0]]),
    ]


def test_lowest_threshold_sends_everyone_out_at_the_first_exit():
    chosen, preds, _ = decide(ConfidencePolicy(), _logits(), 0.5)
    assert chosen.tolist() == [0, 0, 0]
    assert preds.tolist() == [0, 0, 1]


def test_threshold_one_runs_everyone_to_the_last_exit_even_when_saturated():
    chosen, preds, _ = decide(ConfidencePolicy(), _logits(), 1.0)
    assert chosen.tolist() == [2, 2, 2]
    assert preds.tolist() == [1, 0, 1]


def test_first_exit_reaching_the_threshold_is_taken():
    chosen, preds, conf = decide(ConfidencePolicy(), _logits(), 0.9)
    assert chosen.tolist() == [1, 2, 0]
    assert preds.tolist() == [0, 0, 1]
    assert conf[0] == pytest.approx(torch.softmax(torch.tensor([3.0, 0.0]), 0).max().item())
    assert conf[1] == pytest.approx(torch.softmax(torch.tensor([2.0, 0.0]), 0).max().item())


def test_temperature_changes_exits_but_not_predictions():
    logits = _logits()
    hot = decide(ConfidencePolicy([10.0, 10.0, 10.0]), logits, 0.9)
    cold = decide(ConfidencePolicy([0.1, 0.1, 0.1]), logits, 0.9)
    assert hot[0].tolist() != cold[0].tolist()
    for i in range(3):
        assert ConfidencePolicy([5.0] * 3).probabilities(i, logits[i]).argmax(-1).tolist() == logits[i].argmax(-1).tolist()


def test_numpy_logits_are_accepted():
    chosen, _, _ = decide(ConfidencePolicy(), [lg.numpy() for lg in _logits()], 0.9)
    assert chosen.tolist() == [1, 2, 0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf])
def test_threshold_outside_zero_one_or_nan_is_refused(bad):
    with pytest.raises(SweetError, match=r"threshold must be a number in \[0, 1\]"):
        check_threshold(bad)


def test_non_positive_temperature_is_refused():
    with pytest.raises(SweetError, match="temperatures must be positive"):
        ConfidencePolicy([1.0, 0.0])


def test_exit_counts_are_monotone_in_threshold():
    rng = np.random.default_rng(0)
    logits = [rng.normal(scale=s, size=(200, 3)).astype(np.float32) for s in (0.5, 1.0, 2.0, 4.0)]
    policy = ConfidencePolicy()
    mean_exit = [decide(policy, logits, t)[0].mean() for t in np.linspace(1 / 3, 1, 11)]
    assert all(b >= a for a, b in zip(mean_exit, mean_exit[1:]))

"""Cost-ratio formulas, the threshold grid, interpolation and area under the curve."""

from __future__ import annotations

import numpy as np
import pytest

from sweet.cost import (
    area_under_curve,
    cost_ratio,
    exit_costs,
    fixed_cost_points,
    interpolate,
    max_cost_ratio,
    threshold_grid,
)

BASE = [1, 4, 6, 12]


@pytest.mark.parametrize("method", ["early_exit", "sweet"])
def test_everyone_at_third_exit_costs_half_for_early_exit(method):
    assert cost_ratio([0, 0, 10, 0], BASE, method) == pytest.approx(6 / 12)


def test_everyone_at_third_exit_costs_eleven_twelfths_for_multi_model():
    assert cost_ratio([0, 0, 10, 0], BASE, "multi_model") == pytest.approx(11 / 12)


def test_multi_model_worst_case_is_23_twelfths():
    assert cost_ratio([0, 0, 0, 5], BASE, "multi_model") == pytest.approx(23 / 12)
    assert max_cost_ratio(BASE, "multi_model") == pytest.approx(23 / 12)
    assert max_cost_ratio(BASE, "early_exit") == 1.0


def test_mixed_exits_hand_computed():
    # 2 samples at exit 1 (1 layer), 1 at exit 2 (4), 1 at exit 4 (12): (2*1 + 4 + 12) / (12 * 4)
    assert cost_ratio([2, 1, 0, 1], BASE, "early_exit") == pytest.approx(18 / 48)
    # multi-model: 2*1 + 1*(1+4) + 1*(1+4+6+12) = 30
    assert cost_ratio([2, 1, 0, 1], BASE, "multi_model") == pytest.approx(30 / 48)
    # the default 6-layer ladder
    assert cost_ratio([1, 1, 1, 1], [1, 2, 4, 6], "sweet") == pytest.approx(13 / 24)
    assert list(exit_costs([1, 2, 4, 6], "multi_model")) == [1, 3, 7, 13]


def test_cost_ratio_rejects_bad_counts():
    with pytest.raises(ValueError):
        cost_ratio([1, 2], BASE, "sweet")
    with pytest.raises(ValueError):
        cost_ratio([0, 0, 0, 0], BASE, "sweet")


def test_threshold_grid_is_eleven_points_from_one_over_labels_to_one():
    g = threshold_grid(2)
    assert len(g) == 11 and g[0] == pytest.approx(0.5) and g[-1] == 1.0
    assert np.allclose(np.diff(g), 0.05)
    g3 = threshold_grid(3)
    assert g3[0] == pytest.approx(1 / 3) and g3[-1] == 1.0


def test_fixed_cost_points():
    assert fixed_cost_points(BASE, "sweet") == pytest.approx([1 / 12, 0.25, 0.5, 0.75, 1.0])
    assert fixed_cost_points(BASE, "multi_model") == pytest.approx([1 / 12, 0.25, 0.5, 0.75, 1.0, 1.375, 1.75])
    assert fixed_cost_points([1, 2, 4, 6], "early_exit") == pytest.approx([1 / 6, 0.25, 0.5, 0.75, 1.0])
    # a 2-exit multi-model can only reach (1 + 2) / 2 = 1.5
    assert fixed_cost_points([1, 2], "multi_model")[-1] == 1.375


def test_interpolation_is_linear_and_none_outside_the_curve():
    costs = [0.25, 0.5, 1.0]
    scores = [60.0, 70.0, 80.0]
    assert interpolate(costs, scores, [0.25, 0.375, 0.75, 1.0]) == pytest.approx([60.0, 65.0, 75.0, 80.0])
    assert interpolate(costs, scores, [0.1, 1.2]) == [None, None]


def test_interpolation_averages_points_with_the_same_cost():
    assert interpolate([0.5, 0.5, 1.0], [60.0, 70.0, 80.0], [0.5, 0.75]) == pytest.approx([65.0, 72.5])


def test_area_under_curve_is_the_mean_score_over_the_range():
    assert area_under_curve([0.1, 1.0], [70.0, 70.0], 0.1, 1.0) == pytest.approx(70.0)
    # linear 50 -> 100 over [0, 1]: mean 75; over [0.5, 1]: mean 87.5
    assert area_under_curve([0.0, 1.0], [50.0, 100.0], 0.0, 1.0) == pytest.approx(75.0)
    assert area_under_curve([0.0, 1.0], [50.0, 100.0], 0.5, 1.0) == pytest.approx(87.5)
    assert area_under_curve([0.2, 1.0], [50.0, 100.0], 0.1, 1.0) is None

"""What early exiting costs: the paper's cost ratio, the threshold grid, interpolation and area under
the speed-accuracy curve.

Cost ratio (paper, App. A, eq. 1): ``sum_i S_i * c_i / (L_M * N)`` where ``S_i`` samples leave at exit
``i``, ``N`` is the number of samples, ``L_M`` the depth of the full model (the last exit layer), and
``c_i`` what leaving at exit ``i`` costs in layers, as the method says (:meth:`sweet.methods.Method.exit_costs`):

* early_exit / sweet (one shared backbone): ``c_i = L_i`` (computation is reused by later exits);
* multi_model (one model per exit): ``c_i = L_1 + ... + L_i`` (a sample that reaches model ``i`` has run models
  1..i in full).

So with ladder [1, 4, 6, 12], a sample leaving at the third exit costs 6/12 for early-exit models and
11/12 for Multi-Model; Multi-Model's worst case is 23/12. 1.0 is the full model for every sample.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .methods import parse_method


def exit_costs(exit_layers: Sequence[int], method: str) -> np.ndarray:
    """Cost of leaving at each exit, in layers."""
    return np.asarray(parse_method(method).exit_costs(exit_layers), dtype=np.float64)


def cost_ratio(exit_counts: Sequence[int], exit_layers: Sequence[int], method: str) -> float:
    """Average cost per sample relative to running the full model once."""
    counts = np.asarray(exit_counts, dtype=np.float64)
    if counts.shape != (len(exit_layers),):
        raise ValueError(f"need one count per exit ({len(exit_layers)}), got {counts.shape}")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("exit counts must be non-negative and not all zero")
    return float((counts * exit_costs(exit_layers, method)).sum() / (exit_layers[-1] * counts.sum()))


def max_cost_ratio(exit_layers: Sequence[int], method: str) -> float:
    return float(exit_costs(exit_layers, method)[-1] / exit_layers[-1])


def threshold_grid(num_labels: int, n: int = 11) -> np.ndarray:
    """The paper's 11 confidence thresholds, evenly spaced in [1/#labels, 1]."""
    if num_labels < 2:
        raise ValueError("num_labels must be at least 2")
    return np.linspace(1.0 / num_labels, 1.0, n)


def fixed_cost_points(exit_layers: Sequence[int], method: str) -> list[float]:
    """Where curves are compared: the cheapest exit (1/12 for [1,4,6,12]), 1/4, 1/2, 3/4, 1 and the method's
    points above 1 (multi_model: 1 3/8 and 1 3/4, the paper's), kept only where the method can reach them."""
    base = sorted({exit_layers[0] / exit_layers[-1], 0.25, 0.5, 0.75, 1.0})
    points = base + list(parse_method(method).cost_points_above_one)
    top = max_cost_ratio(exit_layers, method)
    return [p for p in points if p <= top + 1e-12]


def _monotone_curve(costs: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sort by cost and average scores that share a cost (several thresholds can give the same cost)."""
    c = np.asarray(costs, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if c.shape != s.shape or c.size == 0:
        raise ValueError("costs and scores must be non-empty and of equal length")
    uc = np.unique(c)
    us = np.array([s[c == x].mean() for x in uc])
    return uc, us


def interpolate(costs: Sequence[float], scores: Sequence[float], points: Sequence[float]) -> list[float | None]:
    """Score at each cost point by linear interpolation of the curve; None outside the curve's range."""
    c, s = _monotone_curve(costs, scores)
    out: list[float | None] = []
    for p in points:
        if p < c[0] - 1e-12 or p > c[-1] + 1e-12:
            out.append(None)
        else:
            out.append(float(np.interp(p, c, s)))
    return out


def area_under_curve(costs: Sequence[float], scores: Sequence[float], lo: float, hi: float) -> float | None:
    """Area under the speed-accuracy curve over [lo, hi], divided by (hi - lo): the mean score over that
    cost range, comparable across methods when they use the same range. None if the curve does not
    cover the range."""
    if not hi > lo:
        raise ValueError("need hi > lo")
    c, s = _monotone_curve(costs, scores)
    if lo < c[0] - 1e-12 or hi > c[-1] + 1e-12:
        return None
    inner = (c > lo) & (c < hi)
    xs = np.concatenate([[lo], c[inner], [hi]])
    ys = np.interp(xs, c, s)
    return float(np.trapezoid(ys, xs) / (hi - lo))


def auc_range(exit_layers: Sequence[int]) -> tuple[float, float]:
    """The common cost range used for area under the curve: cheapest exit to the full model."""
    return exit_layers[0] / exit_layers[-1], 1.0

"""Made-up evaluation results for report tests, complete as a run writes them (built with the typed results of
:mod:`sweet.evaluation`, so they have every key of metrics.json's ``evaluation`` block)."""

from __future__ import annotations

from sweet.evaluation import CostScore, Curve, CurvePoint, Evaluation, ExitScore


def fake_evaluation(per_exit: dict[int, float], interpolated: dict[float, float | None],
                    curve: dict[float, float] | None = None, auc: float | None = None, *, split: str = "validation",
                    metric: str = "accuracy", n_examples: int = 100) -> dict:
    """``per_exit``: exit layer -> score; ``interpolated``: cost ratio -> score; ``curve``: cost ratio -> score
    (default: the interpolated points); ``auc`` (default: the mean of the per-exit scores)."""
    points = curve if curve is not None else {c: s for c, s in interpolated.items() if s is not None}
    costs = sorted(points)
    return Evaluation(
        n_examples=n_examples,
        metric=metric,
        per_exit=[ExitScore(layer, score) for layer, score in per_exit.items()],
        curve=Curve(
            policy={"name": "confidence", "temperatures": [1.0] * len(per_exit)},
            points=[CurvePoint(threshold=1.0 - i / 10, cost_ratio=c, ideal_speedup=1.0 / c, score=points[c],
                               exit_counts=[]) for i, c in enumerate(costs)],
            interpolated=[CostScore(c, s) for c, s in interpolated.items()],
            auc=auc if auc is not None else sum(per_exit.values()) / len(per_exit),
            auc_range=[costs[0], 1.0] if costs else [0.0, 1.0],
            split=split,
        ),
    ).to_dict()

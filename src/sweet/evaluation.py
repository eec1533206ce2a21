"""Scoring a multi-exit model: every exit on its own (the paper's Table 1) and the speed-accuracy curve
(Figures 4-6) with cost-correct accounting for each method.

This is the "compute every exit for every sample, then pick" path: exact and simple. For each
threshold it records the score, how many samples leave at each exit, and the cost ratio; then it
interpolates the curve at fixed cost points and takes the area under it (:mod:`sweet.cost`).

The results are typed (:class:`Evaluation`: :class:`ExitScore` per exit and a :class:`Curve` of
:class:`CurvePoint` s with its :class:`CostScore` s and AUC), built in one place (:func:`evaluate_logits`);
``to_dict()`` gives exactly the ``evaluation`` / ``selection`` / ``policies.NAME`` blocks of metrics.json and
``from_dict()`` reads them back (every metrics.json sweet has written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .cost import (
    area_under_curve,
    auc_range,
    cost_ratio,
    fixed_cost_points,
    interpolate,
)
from .encoding import Collator, Encoded, sorted_batches
from .errors import SweetError
from .metrics import score as task_score
from .policies import ExitPolicy, decide
from .precision import model_placement, to_device

# ------------------------------------------------------------------------------------------- the results


@dataclass(frozen=True)
class ExitScore:
    """One exit's score on every example (the paper's Table 1)."""

    exit_layer: int
    score: float

    def to_dict(self) -> dict:
        return {"exit_layer": self.exit_layer, "score": self.score}

    @classmethod
    def from_dict(cls, d: dict) -> "ExitScore":
        return cls(d["exit_layer"], d["score"])


@dataclass(frozen=True)
class CurvePoint:
    """The policy at one threshold: its score, its cost ratio (:func:`sweet.cost.cost_ratio`), 1 / cost, and how
    many examples left at each exit."""

    threshold: float
    cost_ratio: float
    ideal_speedup: float
    score: float
    exit_counts: list[int]

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "cost_ratio": self.cost_ratio, "ideal_speedup": self.ideal_speedup,
                "score": self.score, "exit_counts": self.exit_counts}

    @classmethod
    def from_dict(cls, d: dict) -> "CurvePoint":
        return cls(d["threshold"], d["cost_ratio"], d["ideal_speedup"], d["score"], d["exit_counts"])


@dataclass(frozen=True)
class CostScore:
    """The curve's score at a fixed cost ratio (linear interpolation); None where the curve does not reach it."""

    cost_ratio: float
    score: float | None

    def to_dict(self) -> dict:
        return {"cost_ratio": self.cost_ratio, "score": self.score}

    @classmethod
    def from_dict(cls, d: dict) -> "CostScore":
        return cls(d["cost_ratio"], d["score"])


@dataclass
class Curve:
    """One exit policy's speed-accuracy curve on one split: the points (one per threshold), the scores at the
    fixed cost ratios, and the area under the curve over ``auc_range`` (None where the curve does not cover it).
    ``to_dict()`` is a metrics.json ``policies.NAME`` block. ``split`` and ``placement`` (where a re-evaluation
    ran) are left out of it while None."""

    policy: dict
    points: list[CurvePoint]
    interpolated: list[CostScore]
    auc: float | None
    auc_range: list[float]
    split: str | None = None
    placement: dict | None = None

    def to_dict(self) -> dict:
        return {"policy": self.policy, "curve": [p.to_dict() for p in self.points],
                "interpolated": [q.to_dict() for q in self.interpolated], "auc": self.auc, "auc_range": self.auc_range,
                **({"split": self.split} if self.split is not None else {}),
                **({"placement": self.placement} if self.placement is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Curve":
        return cls(policy=d["policy"], points=[CurvePoint.from_dict(p) for p in d["curve"]],
                   interpolated=[CostScore.from_dict(q) for q in d["interpolated"]], auc=d["auc"],
                   auc_range=d["auc_range"], split=d.get("split"), placement=d.get("placement"))


@dataclass
class Evaluation:
    """Everything the paper reports for one model on one split: each exit's score and one policy's curve.
    ``to_dict()`` is metrics.json's ``evaluation`` (or ``selection``) block, keys in the order written since the
    first release; ``calibration_error`` (per exit, the expected calibration error before and after temperature
    scaling) is its ``ece_before_after_calibration``, left out while None."""

    n_examples: int
    metric: str
    per_exit: list[ExitScore]
    curve: Curve
    calibration_error: list[dict] | None = None

    def to_dict(self) -> dict:
        curve = self.curve.to_dict()
        return {"n_examples": self.n_examples, "metric": self.metric, "policy": curve.pop("policy"),
                "per_exit": [p.to_dict() for p in self.per_exit], **curve,
                **({"ece_before_after_calibration": self.calibration_error}
                   if self.calibration_error is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Evaluation":
        try:
            return cls(n_examples=d["n_examples"], metric=d["metric"],
                       per_exit=[ExitScore.from_dict(p) for p in d["per_exit"]], curve=Curve.from_dict(d),
                       calibration_error=d.get("ece_before_after_calibration"))
        except (KeyError, TypeError) as exc:
            raise SweetError(f"not an evaluation written by sweet (missing or malformed {exc})") from None

    @classmethod
    def of_run(cls, metrics: dict) -> "Evaluation":
        """The reported evaluation of a run, from its metrics (metrics.json or what :func:`sweet.runs.run` returns)."""
        return cls.from_dict(metrics["evaluation"])


# ------------------------------------------------------------------------------------------- computing them


@torch.inference_mode()
def collect_logits(
    model, encoded: Encoded, collator: Collator, batch_size: int = 64, progress: bool = True, desc: str = "predict",
    with_hidden: bool = False,
):
    """Logits of every exit for every example, in input order: a list of [N, K] float32 arrays.

    With ``with_hidden=True``, returns ``(logits, hidden)``: also each exit's pooled representation, a list of
    [N, hidden] float32 arrays (what the learned exit policy reads)."""
    was_training = model.training
    model.eval()
    placed = model_placement(model)  # fp32 unless prepared for inference (sweet.precision.prepare_for_inference)
    n = len(encoded)
    out = [np.zeros((n, model.config.num_labels), dtype=np.float32) for _ in range(model.num_exits)]
    hid = None
    batches = sorted_batches(encoded.lengths, batch_size)
    for rows in tqdm(batches, desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = collator(encoded, rows)
        batch.pop("labels", None)
        with placed.no_autocast():  # fp32, or weights already cast: whatever autocast context the caller opened
            result = model(**to_device(batch, placed.device), return_hidden=with_hidden)
        for i, lg in enumerate(result.logits):
            out[i][rows] = lg.float().cpu().numpy()
        if with_hidden:
            if hid is None:
                hid = [np.zeros((n, h.shape[-1]), dtype=np.float32) for h in result.hidden]
            for i, h in enumerate(result.hidden):
                hid[i][rows] = h.float().cpu().numpy()
    model.train(was_training)
    if with_hidden:
        return out, hid
    return out


def collect_outputs(model, encoded: Encoded, collator: Collator, batch_size: int, progress: bool, *,
                    hidden: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """``(logits, hidden)`` of every exit on the set to evaluate; ``hidden`` is None unless asked for (a policy with
    ``needs_hidden``, the learned one, reads it)."""
    if hidden:
        return collect_logits(model, encoded, collator, batch_size, progress, desc="evaluate", with_hidden=True)
    return collect_logits(model, encoded, collator, batch_size, progress, desc="evaluate"), None


def per_exit_scores(logits_per_exit: Sequence[np.ndarray], labels: Sequence[int], metric: str) -> list[float]:
    return [task_score(metric, labels, lg.argmax(1)) for lg in logits_per_exit]


def speed_accuracy_curve(
    logits_per_exit: Sequence[np.ndarray],
    labels: Sequence[int],
    *,
    exit_layers: Sequence[int],
    method: str,
    metric: str,
    policy: ExitPolicy,
    thresholds: Sequence[float],
    hidden_per_exit: Sequence[np.ndarray] | None = None,
) -> list[CurvePoint]:
    points = []
    for t in thresholds:
        chosen, preds, _ = decide(policy, logits_per_exit, float(t), hidden_per_exit)
        counts = np.bincount(chosen, minlength=len(exit_layers))
        cost = cost_ratio(counts, exit_layers, method)
        points.append(CurvePoint(threshold=float(t), cost_ratio=cost, ideal_speedup=1.0 / cost,
                                 score=task_score(metric, labels, preds), exit_counts=counts.tolist()))
    return points


def summarize_curve(points: Sequence[CurvePoint], exit_layers: Sequence[int], method: str, policy: dict,
                    split: str | None = None, placement: dict | None = None) -> Curve:
    """The curve with its scores at the method's fixed cost ratios and its area over the common cost range."""
    costs = [p.cost_ratio for p in points]
    scores = [p.score for p in points]
    fixed = fixed_cost_points(exit_layers, method)
    lo, hi = auc_range(exit_layers)
    return Curve(policy=policy, points=list(points),
                 interpolated=[CostScore(c, s) for c, s in zip(fixed, interpolate(costs, scores, fixed))],
                 auc=area_under_curve(costs, scores, lo, hi), auc_range=[lo, hi], split=split, placement=placement)


def evaluate_logits(
    logits_per_exit: Sequence[np.ndarray],
    labels: Sequence[int],
    *,
    exit_layers: Sequence[int],
    method: str,
    metric: str,
    num_labels: int,
    policy: ExitPolicy,
    n_thresholds: int = 11,
    hidden_per_exit: Sequence[np.ndarray] | None = None,
    split: str | None = None,
    placement: dict | None = None,
) -> Evaluation:
    """Everything the paper reports for one model on one split (named ``split``; ``placement``: where a
    re-evaluation ran). ``hidden_per_exit`` (each exit's pooled representation) is needed by policies with
    ``needs_hidden`` (the learned one)."""
    thresholds = policy.threshold_grid(num_labels, n_thresholds)
    points = speed_accuracy_curve(
        logits_per_exit, labels, exit_layers=exit_layers, method=method, metric=metric, policy=policy, thresholds=thresholds,
        hidden_per_exit=hidden_per_exit,
    )
    scores = per_exit_scores(logits_per_exit, labels, metric)
    return Evaluation(
        n_examples=int(len(labels)),
        metric=metric,
        per_exit=[ExitScore(int(layer), s) for layer, s in zip(exit_layers, scores)],
        curve=summarize_curve(points, exit_layers, method, policy.to_dict(), split=split, placement=placement),
    )


def format_report(metrics: dict) -> str:
    """A short human-readable summary (stdout)."""
    ev = Evaluation.of_run(metrics)
    head = f"{metrics['task']} | {metrics['method']} | {ev.curve.split} ({ev.n_examples} examples) | metric: {ev.metric}"
    lines = [head, "", "per-exit scores (each exit on every example):"]
    lines.append("  " + "  ".join(f"L{p.exit_layer:>2}: {p.score:6.2f}" for p in ev.per_exit))
    pname = ev.curve.policy.get("name", "confidence")
    lines += ["", f"speed-accuracy curve ({pname} policy{', calibrated' if pname == 'confidence' else ''}):",
              f"  {'threshold':>9} {'cost':>6} {'score':>7}  exits per layer"]
    for p in ev.curve.points:
        lines.append(f"  {p.threshold:9.3f} {p.cost_ratio:6.3f} {p.score:7.2f}  {p.exit_counts}")
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    interp = "  ".join(f"{q.cost_ratio:.3f}: {fmt(q.score)}" for q in ev.curve.interpolated)
    lines += ["", f"score at fixed cost ratios: {interp}"]
    lo, hi = ev.curve.auc_range
    lines.append(f"area under curve (mean score over cost {lo:.3f}..{hi:.3f}): {fmt(ev.curve.auc)}")
    return "\n".join(lines)

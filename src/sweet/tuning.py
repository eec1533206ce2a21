"""Thresholds from a budget: ``sweet tune RUN_DIR --max-drop 1.0`` or ``--target-cost 0.5``.

A user knows a budget ("at most one point below the full model", "half the compute"), not a threshold. The
threshold is chosen on the run's **calibration split** only -- never on the split the scores are reported on --
and then read on the evaluation split, so that the user sees what the calibration split predicted next to what
the evaluation split gives.

Two ways to get the calibration split's curve, named in the result (``how``):

``logits``  (the default when the run has its model) the model's logits on the calibration split, and a fine
            threshold grid (:data:`FINE_GRID` points over the policy's range, every one a real operating point).
            The evaluation split's score and cost are then computed at the chosen threshold from its logits.
``curve``   (a run without weights, e.g. a committed grid run, or ``--from-curve``) the curve stored in
            metrics.json (``selection``: the calibration split, 11 thresholds, confidence policy only). Between
            two stored thresholds the threshold, the cost and the score are taken as linear in one another (the
            same linear interpolation the curve's scores at fixed costs use), so the chosen threshold may lie
            between grid points; the evaluation-split numbers are read off the stored evaluation curve
            (``evaluation``) at that threshold the same way: an estimate, not a measurement.

The budgets (:class:`Budget`):

``max_drop``     points below the last exit's score (on the calibration split): the cheapest threshold whose
                 calibration score is at least ``last - max_drop`` (ties: the higher score).
``target_cost``  a cost ratio in (0, 1] (1 = the full model for every example): the best-scoring threshold whose
                 calibration cost is at most the target (ties: the lower cost).

The choice is written to ``RUN_DIR/threshold.json`` (:data:`~sweet.rundir.THRESHOLD_FILE`; atomically; a copy
goes into ``model/`` so that the model folder carries it), never into run_config.json. ``sweet predict``,
``sweet serve`` and :func:`sweet.load` use it when no threshold is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .cost import cost_ratio
from .datasource import run_splits
from .encoding import encode
from .errors import SweetError
from .evaluation import Evaluation, collect_outputs
from .io import atomic_write_json, read_json
from .metrics import score as task_score
from .modeling import CONFIG_NAME
from .policies import POLICIES, decide, make_policy
from .rundir import (
    METRICS_FILE,
    MODEL_DIR,
    RUN_CONFIG,
    THRESHOLD_FILE,
    effective_max_length,
    load_run,
    make_collator,
    refresh_model_card,
)

#: thresholds in the fine grid used when the calibration split's logits are at hand
FINE_GRID = 1001
#: tolerance of the budget comparisons (float noise in interpolated scores and costs)
_EPS = 1e-9


@dataclass(frozen=True)
class Budget:
    """Exactly one of ``max_drop`` (points below the last exit, >= 0) or ``target_cost`` (a cost ratio in (0, 1]);
    checked here, where it enters."""

    max_drop: float | None = None
    target_cost: float | None = None

    def __post_init__(self):
        if (self.max_drop is None) == (self.target_cost is None):
            raise SweetError("give exactly one budget: --max-drop POINTS or --target-cost RATIO")
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise SweetError(f"--max-drop must be a number of points >= 0, got {self.max_drop}")
        if self.target_cost is not None and not (math.isfinite(self.target_cost) and 0 < self.target_cost <= 1):
            raise SweetError(f"--target-cost must be a cost ratio in (0, 1] (1 = the full model), got {self.target_cost}")

    def to_dict(self) -> dict:
        return {"max_drop": self.max_drop} if self.max_drop is not None else {"target_cost": self.target_cost}

    def describe(self) -> str:
        if self.max_drop is not None:
            return f"--max-drop {self.max_drop:g}"
        return f"--target-cost {self.target_cost:g}"


@dataclass(frozen=True)
class Point:
    """One operating point of a policy: threshold, cost ratio and score."""

    threshold: float
    cost_ratio: float
    score: float


# ------------------------------------------------------------------------------------------- choosing


def segment_points(points: Sequence[Point], budget: Budget, reference: float) -> list[Point]:
    """The stored points plus, on each segment between neighbouring thresholds, the point where the segment
    meets the budget (score = ``reference - max_drop``, or cost = ``target_cost``), all three values linear
    along the segment."""
    pts = sorted(points, key=lambda p: p.threshold)
    out = list(pts)
    for a, b in zip(pts, pts[1:]):
        if budget.max_drop is not None:
            va, vb, target = a.score, b.score, reference - budget.max_drop
        else:
            va, vb, target = a.cost_ratio, b.cost_ratio, budget.target_cost
        if (va - target) * (vb - target) < 0:  # strictly crosses inside the segment
            lam = (target - va) / (vb - va)
            out.append(_along(a, b, lam))
    return out


def _along(a: Point, b: Point, lam: float) -> Point:
    return Point(a.threshold + lam * (b.threshold - a.threshold), a.cost_ratio + lam * (b.cost_ratio - a.cost_ratio),
                 a.score + lam * (b.score - a.score))


def choose(points: Sequence[Point], budget: Budget, reference: float) -> Point:
    """The point the budget picks among ``points`` (see the module docstring); a one-line error naming the closest
    point when none meets it."""
    if budget.max_drop is not None:
        floor = reference - budget.max_drop
        ok = [p for p in points if p.score >= floor - _EPS]
        if not ok:
            best = max(points, key=lambda p: (p.score, -p.cost_ratio))
            raise SweetError(f"no threshold keeps the score within {budget.max_drop:g} points of the last exit "
                             f"({reference:.2f}) on the calibration split; the closest is threshold {best.threshold:.4f} "
                             f"at score {best.score:.2f} (drop {reference - best.score:.2f}, cost {best.cost_ratio:.3f})")
        return min(ok, key=lambda p: (round(p.cost_ratio, 12), -p.score, p.threshold))
    ok = [p for p in points if p.cost_ratio <= budget.target_cost + _EPS]
    if not ok:
        best = min(points, key=lambda p: (p.cost_ratio, -p.score))
        raise SweetError(f"no threshold reaches cost {budget.target_cost:g} on the calibration split; the cheapest is "
                         f"threshold {best.threshold:.4f} at cost {best.cost_ratio:.3f} (score {best.score:.2f})")
    return max(ok, key=lambda p: (round(p.score, 12), -p.cost_ratio, -p.threshold))


def read_at(points: Sequence[Point], threshold: float) -> Point:
    """A stored curve read at ``threshold``: linear between the neighbouring stored thresholds."""
    pts = sorted(points, key=lambda p: p.threshold)
    if threshold <= pts[0].threshold:
        return pts[0]
    for a, b in zip(pts, pts[1:]):
        if threshold <= b.threshold:
            lam = 0.0 if b.threshold == a.threshold else (threshold - a.threshold) / (b.threshold - a.threshold)
            p = _along(a, b, lam)
            return Point(threshold, p.cost_ratio, p.score)
    return pts[-1]


def curve_points(evaluation: Evaluation) -> list[Point]:
    return [Point(p.threshold, p.cost_ratio, p.score) for p in evaluation.curve.points]


# ------------------------------------------------------------------------------------------- results


@dataclass
class TuneResult:
    """The chosen threshold, how it was chosen, and the numbers on both splits. ``to_dict()`` is threshold.json."""

    threshold: float
    policy: str
    budget: Budget
    how: str
    method_note: str
    metric: str
    calibration: dict
    evaluation: dict

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "policy": self.policy, "budget": self.budget.to_dict(),
                "chosen_on": "calibration", "how": self.how, "how_detail": self.method_note, "metric": self.metric,
                "calibration": self.calibration, "evaluation": self.evaluation}


def _split_numbers(name: str, n: int, last: float, at: Point) -> dict:
    return {"split": name, "n_examples": int(n), "last_exit_score": last, "score": at.score,
            "cost_ratio": at.cost_ratio, "drop": last - at.score}


def tune_from_curves(metrics: dict, budget: Budget) -> TuneResult:
    """Tune on a run's stored calibration curve (metrics.json ``selection``) and read its stored evaluation curve
    (``evaluation``); confidence policy only (the only one metrics.json stores on the calibration split)."""
    if "selection" not in metrics or "evaluation" not in metrics:
        raise SweetError("the run's metrics.json has no calibration-split curve ('selection'); it was made by an "
                         "older sweet: re-run it, or tune a run that has its model/")
    cal, ev = Evaluation.from_dict(metrics["selection"]), Evaluation.of_run(metrics)
    if cal.curve.split == ev.curve.split:
        raise SweetError("the run's calibration curve is on its evaluation split; refusing to tune on it")
    ref = cal.per_exit[-1].score
    chosen = choose(segment_points(curve_points(cal), budget, ref), budget, ref)
    at_eval = read_at(curve_points(ev), chosen.threshold)
    n = len(cal.curve.points)
    return TuneResult(
        threshold=float(chosen.threshold), policy="confidence", budget=budget, how="curve",
        method_note=(f"the stored calibration-split curve ({n} thresholds), linear between neighbouring thresholds; "
                     "evaluation numbers read off the stored evaluation-split curve the same way"),
        metric=cal.metric, calibration=_split_numbers("calibration", cal.n_examples, ref, chosen),
        evaluation=_split_numbers(ev.curve.split or "evaluation", ev.n_examples, ev.per_exit[-1].score, at_eval))


def tune_from_logits(cal_logits, cal_labels, eval_logits, eval_labels, *, policy, exit_layers, method: str,
                     metric: str, num_labels: int, budget: Budget, eval_split: str, cal_hidden=None,
                     eval_hidden=None, n_grid: int = FINE_GRID) -> TuneResult:
    """Tune on the calibration split's logits over a fine threshold grid; score the evaluation split's logits at
    the chosen threshold. Every number is a real operating point."""

    def at(logits, labels, hidden, t) -> Point:
        chosen, preds, _ = decide(policy, logits, float(t), hidden)
        counts = np.bincount(chosen, minlength=len(exit_layers))
        return Point(float(t), cost_ratio(counts, exit_layers, method), task_score(metric, labels, preds))

    grid = np.unique(np.round(policy.threshold_grid(num_labels, n_grid), 12))
    cal_points = [at(cal_logits, cal_labels, cal_hidden, t) for t in grid]
    ref = task_score(metric, cal_labels, np.asarray(cal_logits[-1]).argmax(-1))
    chosen = choose(cal_points, budget, ref)
    at_eval = at(eval_logits, eval_labels, eval_hidden, chosen.threshold)
    eval_last = task_score(metric, eval_labels, np.asarray(eval_logits[-1]).argmax(-1))
    return TuneResult(
        threshold=float(chosen.threshold), policy=policy.name, budget=budget, how="logits",
        method_note=(f"the model's logits on the calibration split over {len(grid)} thresholds; evaluation numbers "
                     "computed from its logits on the evaluation split at the chosen threshold"),
        metric=metric, calibration=_split_numbers("calibration", len(cal_labels), ref, chosen),
        evaluation=_split_numbers(eval_split, len(eval_labels), eval_last, at_eval))


# ------------------------------------------------------------------------------------------- a run


def tune_run(run_dir: str | Path, budget: Budget, policy: str = "confidence", *, from_curve: bool = False,
             data_dir: str | None = None, write: bool = True, progress: bool = False) -> TuneResult:
    """Choose ``run_dir``'s threshold for ``policy`` under ``budget`` on its calibration split (from the model's
    logits when it has its model, else from the stored curve), and (``write``) store it as the run's default."""
    run_dir = Path(run_dir)
    if policy not in POLICIES:
        raise SweetError(f"unknown exit policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    if not (run_dir / RUN_CONFIG).is_file():
        raise SweetError(f"{run_dir} is not a sweet run directory ({RUN_CONFIG} is missing); tuning needs the run's "
                         "calibration split")
    has_model = (run_dir / MODEL_DIR / CONFIG_NAME).is_file()
    if from_curve or not has_model:
        if policy != "confidence":
            raise SweetError(f"the stored calibration curve is for the confidence policy only; tuning --policy {policy} "
                             "needs the run's model/ (it has none)" if not has_model else
                             f"the stored calibration curve is for the confidence policy only; drop --from-curve to "
                             f"tune --policy {policy} on the model's logits")
        if not (run_dir / METRICS_FILE).is_file():
            raise SweetError(f"{run_dir} has neither a model/ nor a {METRICS_FILE}: there is nothing to tune on "
                             "(an unfinished run?)")
        result = tune_from_curves(read_json(run_dir / METRICS_FILE), budget)
    else:
        result = _tune_with_model(run_dir, budget, policy, data_dir, progress)
    if write:
        write_threshold(run_dir, result)
    return result


def _tune_with_model(run_dir: Path, budget: Budget, policy_name: str, data_dir: str | None,
                     progress: bool) -> TuneResult:
    cfg, model, tokenizer, task = load_run(run_dir)
    policy = make_policy(policy_name, model)
    splits = run_splits(cfg, data_dir)
    collator = make_collator(tokenizer, model)
    max_length = effective_max_length(cfg.max_length, tokenizer, model)
    outputs = {}
    for name, part in (("calibration", splits.calibration), ("evaluation", splits.evaluation)):
        enc = encode(tokenizer, part, max_length, warn=False)
        outputs[name] = collect_outputs(model, enc, collator, cfg.eval_batch_size, progress, hidden=policy.needs_hidden)
    (cal_logits, cal_hidden), (ev_logits, ev_hidden) = outputs["calibration"], outputs["evaluation"]
    return tune_from_logits(cal_logits, np.asarray(splits.calibration.labels), ev_logits,
                            np.asarray(splits.evaluation.labels), policy=policy, exit_layers=model.exit_layers,
                            method=model.config.method, metric=task.metric, num_labels=task.num_labels, budget=budget,
                            eval_split=splits.evaluation_name, cal_hidden=cal_hidden, eval_hidden=ev_hidden)


# ------------------------------------------------------------------------------------------- the stored choice


def write_threshold(run_dir: str | Path, result: TuneResult) -> Path:
    """``RUN_DIR/threshold.json`` (atomic); where the run has its model, a copy in ``RUN_DIR/model/`` (so that the
    model folder carries its default threshold) and the model card refreshed with it."""
    run_dir = Path(run_dir)
    record = result.to_dict()
    path = atomic_write_json(run_dir / THRESHOLD_FILE, record)
    model_dir = run_dir / MODEL_DIR
    if (model_dir / CONFIG_NAME).is_file():
        atomic_write_json(model_dir / THRESHOLD_FILE, record)
        refresh_model_card(run_dir)
    return path


def format_tune(result: TuneResult) -> str:
    """The table ``sweet tune`` prints: the calibration split's prediction next to the evaluation split."""
    c, e = result.calibration, result.evaluation
    lines = [f"threshold {result.threshold:.4f} ({result.policy} policy), chosen for {result.budget.describe()} on the "
             f"calibration split ({result.how}: {result.method_note})", "",
             f"  {'split':<26} {'examples':>8} {'last exit':>9} {'score':>7} {'drop':>6} {'cost':>6}"]
    for row, label in ((c, "calibration (predicted)"), (e, f"{e['split']} (measured)" if result.how == "logits"
                                                        else f"{e['split']} (read)")):
        lines.append(f"  {label:<26} {row['n_examples']:>8} {row['last_exit_score']:>9.2f} {row['score']:>7.2f} "
                     f"{row['drop']:>6.2f} {row['cost_ratio']:>6.3f}")
    lines.append(f"\nmetric: {result.metric}; drop = last exit's score - score at the threshold (points)")
    return "\n".join(lines)

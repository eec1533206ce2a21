"""Scoring a multi-exit model: every exit on its own (the paper's Table 1) and the speed-accuracy curve
(Figures 4-6) with cost-correct accounting for each method.

This is the "compute every exit for every sample, then pick" path: exact and simple. For each
threshold it records the score, how many samples leave at each exit, and the cost ratio; then it
interpolates the curve at fixed cost points and takes the area under it (:mod:`sweet.cost`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import Collator, Encoded, sorted_batches
from .cost import area_under_curve, auc_range, cost_ratio, fixed_cost_points, interpolate
from .metrics import score as task_score
from .policies import ExitPolicy, decide


@torch.inference_mode()
def collect_logits(
    model, encoded: Encoded, collator: Collator, batch_size: int = 64, progress: bool = True, desc: str = "predict",
    with_hidden: bool = False,
):
    """Logits of every exit for every example, in input order: a list of [N, K] float32 arrays.

    With ``with_hidden=True``, returns ``(logits, hidden)``: also each exit's pooled representation, a list of
    [N, hidden] float32 arrays (what the learned exit policy reads)."""
    from .precision import model_placement, to_device

    was_training = model.training
    model.eval()
    where = model_placement(model)  # fp32 unless prepared for inference (sweet.precision.prepare_for_inference)
    n = len(encoded)
    out = [np.zeros((n, model.config.num_labels), dtype=np.float32) for _ in range(model.num_exits)]
    hid = None
    batches = sorted_batches(encoded.lengths, batch_size)
    for rows in tqdm(batches, desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = collator(encoded, rows)
        batch.pop("labels", None)
        with where.no_autocast():  # fp32, or weights already cast: whatever autocast context the caller opened
            result = model(**to_device(batch, where.device), return_hidden=with_hidden)
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
) -> list[dict]:
    curve = []
    for t in thresholds:
        chosen, preds, _ = decide(policy, logits_per_exit, float(t), hidden_per_exit)
        counts = np.bincount(chosen, minlength=len(exit_layers))
        cost = cost_ratio(counts, exit_layers, method)
        curve.append(
            {
                "threshold": float(t),
                "cost_ratio": cost,
                "ideal_speedup": 1.0 / cost,
                "score": task_score(metric, labels, preds),
                "exit_counts": counts.tolist(),
            }
        )
    return curve


def summarize_curve(curve: Sequence[dict], exit_layers: Sequence[int], method: str) -> dict:
    costs = [p["cost_ratio"] for p in curve]
    scores = [p["score"] for p in curve]
    points = fixed_cost_points(exit_layers, method)
    lo, hi = auc_range(exit_layers)
    return {
        "interpolated": [{"cost_ratio": p, "score": s} for p, s in zip(points, interpolate(costs, scores, points))],
        "auc": area_under_curve(costs, scores, lo, hi),
        "auc_range": [lo, hi],
    }


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
) -> dict:
    """Everything the paper reports for one model on one split. ``hidden_per_exit`` (each exit's pooled
    representation) is needed by policies with ``needs_hidden`` (the learned one)."""
    thresholds = policy.threshold_grid(num_labels, n_thresholds)
    curve = speed_accuracy_curve(
        logits_per_exit, labels, exit_layers=exit_layers, method=method, metric=metric, policy=policy, thresholds=thresholds,
        hidden_per_exit=hidden_per_exit,
    )
    return {
        "n_examples": int(len(labels)),
        "metric": metric,
        "policy": policy.to_dict(),
        "per_exit": [{"exit_layer": int(layer), "score": s} for layer, s in zip(exit_layers, per_exit_scores(logits_per_exit, labels, metric))],
        "curve": curve,
        **summarize_curve(curve, exit_layers, method),
    }


def format_report(metrics: dict) -> str:
    """A short human-readable summary (stdout)."""
    ev = metrics["evaluation"]
    head = f"{metrics['task']} | {metrics['method']} | {ev['split']} ({ev['n_examples']} examples) | metric: {ev['metric']}"
    lines = [head, "", "per-exit scores (each exit on every example):"]
    lines.append("  " + "  ".join(f"L{p['exit_layer']:>2}: {p['score']:6.2f}" for p in ev["per_exit"]))
    pname = ev.get("policy", {}).get("name", "confidence")
    lines += ["", f"speed-accuracy curve ({pname} policy{', calibrated' if pname == 'confidence' else ''}):",
              f"  {'threshold':>9} {'cost':>6} {'score':>7}  exits per layer"]
    for p in ev["curve"]:
        lines.append(f"  {p['threshold']:9.3f} {p['cost_ratio']:6.3f} {p['score']:7.2f}  {p['exit_counts']}")
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    interp = "  ".join(f"{q['cost_ratio']:.3f}: {fmt(q['score'])}" for q in ev["interpolated"])
    lines += ["", f"score at fixed cost ratios: {interp}"]
    auc = ev["auc"]
    lo, hi = ev["auc_range"]
    lines.append(f"area under curve (mean score over cost {lo:.3f}..{hi:.3f}): {fmt(auc)}")
    return "\n".join(lines)

"""Aggregation over seeds: t-intervals, curves on a common cost grid, averages over tasks, the comparison
with the better of Early-Exit and SWEET, and the training-set size sweep's gaps.

Every number is a mean over seeds with a 95% confidence interval from the t-distribution (:func:`t_interval`)
and the standard deviation over seeds. Averages over tasks are taken per seed first, then the interval is over
those per-seed averages; a second interval takes the tasks as the unit (over the per-task means, df = tasks - 1). The inputs
are the metrics of finished runs (``metrics.json``, as collected by :func:`sweet.experiments.report.collect`),
whose ``evaluation`` is read as a typed :class:`~sweet.evaluation.Evaluation`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

from ..cost import interpolate
from ..evaluation import CostScore, CurvePoint, Evaluation

CONFIDENCE = 0.95
#: gaps are differences of scores in percent: anything smaller than this is float noise around an exact tie (e.g.
#: +20, 0, -11 and -9 examples of 872 at four exits average to 0, or to a float a few 1e-17 off it)
TIE = 1e-9
CURVE_POINTS = 61
GAP_BASELINE = "early_exit"  # a size sweep's gaps: every other method minus this one, per exit

# ------------------------------------------------------------------------------------------ statistics


def snap(x: float | None) -> float | None:
    """``x``, or exactly 0.0 where it is within :data:`TIE` of 0 (float noise around a tie), so that every consumer
    of a gap compares against a clean 0."""
    return None if x is None else 0.0 if abs(x) < TIE else x


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean and two-sided t confidence interval over ``values`` (one per seed). With one value the
    interval is undefined (``ci`` None)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "ci": None, "low": None, "high": None, "std": None, "n": 0, "values": []}
    mean = snap(float(x.mean()))
    if n == 1:
        return {"mean": mean, "ci": None, "low": None, "high": None, "std": None, "n": 1, "values": x.tolist()}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return {"mean": mean, "ci": half, "low": snap(mean - half), "high": snap(mean + half), "std": std, "n": n,
            "values": x.tolist()}


def curve_on_grid(curve: Sequence[CurvePoint | CostScore], grid: Sequence[float]) -> list[float | None]:
    """One seed's speed-accuracy curve (its points, or any (cost ratio, score) points), linearly interpolated on a
    common cost grid."""
    return interpolate([p.cost_ratio for p in curve], [p.score for p in curve], grid)


def aggregate_curves(curves: Sequence[Sequence[CurvePoint | CostScore]], n_points: int = CURVE_POINTS) -> dict:
    """Mean and CI band of several seeds' curves on the cost range that all of them cover."""
    lo = max(min(p.cost_ratio for p in c) for c in curves)
    hi = min(max(p.cost_ratio for p in c) for c in curves)
    grid = np.linspace(lo, hi, n_points).tolist() if hi > lo else [lo]
    per_seed = [curve_on_grid(c, grid) for c in curves]
    band = [t_interval([s[i] for s in per_seed]) for i in range(len(grid))]
    return {"cost": grid, "per_seed": per_seed, "mean": [s["mean"] for s in band], "low": [s["low"] for s in band],
            "high": [s["high"] for s in band], "n": len(curves)}


def stat_row(stats: dict) -> dict:
    return {k: stats[k] for k in ("mean", "ci", "low", "high", "std", "n", "values")}


def method_summary(runs: list[dict], learning_rate: float, at_top: bool, selected_method: str | None = None) -> dict:
    """One (task, method) cell of a report: its runs (one per seed, at the chosen learning rate) summarised, every
    per-exit score, interpolated point and AUC as mean, 95% interval and SD over seeds; the averaged curve;
    ``selected_method``: the method whose runs stand for a selected entry (``grad_scale@selected``)."""
    evs = [Evaluation.of_run(r) for r in runs]
    exits = [p.exit_layer for p in evs[0].per_exit]
    per_exit = [{"exit_layer": layer, **stat_row(t_interval([ev.per_exit[i].score for ev in evs]))}
                for i, layer in enumerate(exits)]
    points = [q.cost_ratio for q in evs[0].curve.interpolated]
    interp = [{"cost_ratio": c, **stat_row(t_interval([ev.curve.interpolated[i].score for ev in evs]))}
              for i, c in enumerate(points)]
    return {
        "learning_rate": learning_rate,
        "learning_rate_at_top": at_top,
        **({"selected_method": selected_method} if selected_method else {}),
        "seeds": [r["seed"] for r in runs],
        "metric": evs[0].metric,
        "evaluation_split": evs[0].curve.split,
        "n_examples": evs[0].n_examples,
        "exit_layers": exits,
        "per_exit": per_exit,
        "interpolated": interp,
        "auc": stat_row(t_interval([ev.curve.auc for ev in evs])),
        "selection_auc": stat_row(t_interval([r["selection"]["auc"] for r in runs])),
        "curve": aggregate_curves([ev.curve.points for ev in evs]),
        "runs": [r["_dir"] for r in runs],
    }


# ------------------------------------------------------------------------------------------ comparisons


#: the two methods every other one is held against (issue #8: never worse than either, at any cost)
VERSUS = ("early_exit", "sweet")


def versus_best(chosen: dict, tasks: list[str], methods: list[str]) -> dict | None:
    """Every method other than EE and SWEET against both, at each fixed cost point and by AUC, averaged over
    tasks: ``gap_to_best`` = its mean minus the better of the EE and SWEET means (the goal: >= 0 everywhere),
    and the paired per-seed differences to each (same seed = same training sample), mean and CI over seeds.
    None unless the grid has EE, SWEET and at least one other single-size method on the same tasks."""
    others = [m for m in methods if m not in VERSUS]
    if not others or not all(m in methods for m in VERSUS):
        return None

    def per_seed(method: str) -> dict[int, dict] | None:
        have = [t for t in tasks if chosen.get((t, method))]
        if have != [t for t in tasks if chosen.get((t, VERSUS[0]))]:
            return None
        seeds = set.intersection(*({r["seed"] for r in chosen[(t, method)]} for t in have))
        out = {}
        for s in sorted(seeds):
            evs = [Evaluation.of_run(next(r for r in chosen[(t, method)] if r["seed"] == s)) for t in have]
            by_cost = [{q.cost_ratio: q.score for q in ev.curve.interpolated} for ev in evs]
            out[s] = {"auc": float(np.mean([ev.curve.auc for ev in evs])),
                      "interp": {c: None if any(t.get(c) is None for t in by_cost) else float(np.mean([t[c] for t in by_cost]))
                                 for c in by_cost[0]}}
        return out

    base = {b: per_seed(b) for b in VERSUS}
    if any(not v for v in base.values()):
        return None
    costs = list(next(iter(base[VERSUS[0]].values()))["interp"])
    result = {"baselines": list(VERSUS), "cost_ratios": costs, "methods": {}}
    for m in others:
        mine = per_seed(m)
        if not mine:
            continue
        def at(d: dict[int, dict], c: float) -> dict[int, float]:  # seed -> score at cost c, where it has one
            return {s: v["interp"][c] for s, v in d.items() if v["interp"].get(c) is not None}

        points = [versus_point(at(mine, c), {b: at(base[b], c) for b in VERSUS}) | {"cost_ratio": c} for c in costs]
        auc = versus_point({s: v["auc"] for s, v in mine.items()}, {b: {s: v["auc"] for s, v in base[b].items()}
                                                                      for b in VERSUS})
        result["methods"][m] = {"points": points, "auc": auc,
                                "never_worse": all(p["gap_to_best"] is not None and p["gap_to_best"] >= 0 for p in points)}
    return result if result["methods"] else None


def versus_point(mine: dict[int, float], bases: dict[str, dict[int, float]]) -> dict:
    """Means over the seeds that the method and every baseline share (a partial grid compares like with like)."""
    seeds = sorted(set(mine).intersection(*(set(v) for v in bases.values())))
    out: dict = {"seeds": seeds, "mean": float(np.mean([mine[s] for s in seeds])) if seeds else None}
    out["gap_to_best"] = (snap(out["mean"] - max(float(np.mean([v[s] for s in seeds])) for v in bases.values()))
                          if seeds else None)
    for b, v in bases.items():
        out[f"vs_{b}"] = stat_row(t_interval([mine[s] - v[s] for s in seeds]))
    return out


def is_size_sweep(spec: dict) -> bool:
    """Whether a stored spec (a dict) is a training-set size sweep (``n_train`` a list of 2+ sizes)."""
    return isinstance(spec.get("n_train"), list) and len(spec["n_train"]) > 1


def selection_key(task: str, method: str, backbone: str, size: int | None) -> tuple:
    return (task, method, backbone) + ((size,) if size is not None else ())


def chosen_runs(records: list[dict], selection: dict, size: int | None) -> dict[tuple[str, str], list[dict]]:
    """(task, method) -> the runs at the chosen learning rate (at training size ``size`` in a sweep), by seed."""
    chosen: dict[tuple[str, str], list[dict]] = {}
    for key, sel in selection.items():
        task, method = key[0], key[1]
        if size is not None and key[3] != size:
            continue
        runs = [r for r in records if r["task"] == task and r["method"] == method
                and float(r["learning_rate"]) == sel["chosen"] and (size is None or r["n_train"] == size)]
        chosen[(task, method)] = sorted(runs, key=lambda r: r["seed"])
    return chosen


def size_sweep(chosen_by_size: dict, selection: dict, tasks: list[str], methods: list[str]) -> dict:
    """A training-set size sweep: per size, task and method the per-exit scores (mean and CI over seeds); per
    task the gap of every other method to Early-Exit per exit and size, as the per-seed paired difference (same
    seed, so the same training sample) in percentage points, mean and CI over the seeds both methods have."""
    sizes = sorted(chosen_by_size)
    per_size = []
    for size in sizes:
        by_task: dict[str, dict] = {}
        for task in tasks:
            for method in methods:
                runs = chosen_by_size[size].get((task, method))
                if not runs:
                    continue
                evs = [Evaluation.of_run(r) for r in runs]
                by_task.setdefault(task, {})[method] = {
                    "learning_rate": selection[selection_key(task, runs[0]["method"], runs[0]["backbone"], size)]["chosen"],
                    **({"selected_method": runs[0]["method"]} if runs[0]["method"] != method else {}),
                    "seeds": [r["seed"] for r in runs],
                    "n_train_drawn": [r.get("_n_train_drawn") for r in runs],
                    "metric": evs[0].metric,
                    "exit_layers": [p.exit_layer for p in evs[0].per_exit],
                    "per_exit": [{"exit_layer": p.exit_layer, **stat_row(t_interval([ev.per_exit[i].score for ev in evs]))}
                                 for i, p in enumerate(evs[0].per_exit)],
                    "auc": stat_row(t_interval([ev.curve.auc for ev in evs])),
                    "runs": [r["_dir"] for r in runs],
                }
        per_size.append({"n_train": size, "per_task": by_task})
    gaps: dict[str, list[dict]] = {}
    for task in tasks:
        points = []
        for method in methods:
            if method == GAP_BASELINE:
                continue
            for size in sizes:
                base = {r["seed"]: r for r in chosen_by_size[size].get((task, GAP_BASELINE), [])}
                other = {r["seed"]: r for r in chosen_by_size[size].get((task, method), [])}
                seeds = sorted(set(base) & set(other))
                if not seeds:
                    continue
                for layer in _common_exits(base[seeds[0]], other[seeds[0]]):
                    diffs = [_exit_score(other[s], layer) - _exit_score(base[s], layer) for s in seeds]
                    points.append({"method": method, "baseline": GAP_BASELINE, "n_train": size, "exit_layer": layer,
                                   "seeds": seeds, **stat_row(t_interval(diffs))})
        if points:
            gaps[task] = points
    return {
        "sizes": sizes,
        "main_size": sizes[-1],
        "baseline": GAP_BASELINE,
        "gap": "per seed, the method's score minus Early-Exit's at the same exit (percentage points); "
               "mean and 95% t-interval over the seeds both have",
        "per_size": per_size,
        "gaps": gaps,
    }


def _common_exits(a: dict, b: dict) -> list[int]:
    other = {p.exit_layer for p in Evaluation.of_run(b).per_exit}
    return [p.exit_layer for p in Evaluation.of_run(a).per_exit if p.exit_layer in other]


def _exit_score(record: dict, layer: int) -> float:
    return next(p.score for p in Evaluation.of_run(record).per_exit if p.exit_layer == layer)


def average_over_tasks(per_task: dict, chosen: dict, tasks: list[str], methods: list[str],
                       seeds: list[int] | None = None) -> dict:
    """Per method: per-exit scores, interpolated scores and AUC averaged over tasks, per seed first, with the
    interval over seeds; each also with ``over_tasks``, the interval with tasks as the unit (the t-interval over
    the per-task means over seeds, df = tasks - 1). ``seeds``: only these seeds (default: those the method has on
    every task)."""
    out = {}
    for method in methods:
        have = [t for t in tasks if method in per_task[t]]
        if not have:
            continue
        common = set.intersection(*(set(per_task[t][method]["seeds"]) for t in have))
        use = sorted(common if seeds is None else common & set(seeds))
        if not use:
            continue
        by_seed = {t: {r["seed"]: Evaluation.of_run(r) for r in chosen[(t, method)]} for t in have}

        def avg(get) -> dict:  # seeds as the unit; and ``over_tasks``: tasks as the unit (their means over seeds)
            return {**stat_row(t_interval([float(np.mean([get(by_seed[t][s]) for t in have])) for s in use])),
                    "over_tasks": stat_row(t_interval([float(np.mean([get(by_seed[t][s]) for s in use])) for t in have]))}

        first = per_task[have[0]][method]
        per_exit = [{"exit_layer": layer, **avg(lambda ev, i=i: ev.per_exit[i].score)}
                    for i, layer in enumerate(first["exit_layers"])]
        interp = []
        for i, q in enumerate(first["interpolated"]):
            vals = [by_seed[t][s].curve.interpolated[i].score for t in have for s in use]
            if any(v is None for v in vals):
                interp.append({"cost_ratio": q["cost_ratio"], **stat_row(t_interval([])),
                               "over_tasks": stat_row(t_interval([]))})
            else:
                interp.append({"cost_ratio": q["cost_ratio"], **avg(lambda ev, i=i: ev.curve.interpolated[i].score)})
        # the average curve: each task's curve on a common cost grid, averaged over tasks per seed
        lo = max(min(p.cost_ratio for p in by_seed[t][s].curve.points) for t in have for s in use)
        hi = min(max(p.cost_ratio for p in by_seed[t][s].curve.points) for t in have for s in use)
        grid = np.linspace(lo, hi, CURVE_POINTS).tolist() if hi > lo else [lo]
        seed_curves = [np.mean([curve_on_grid(by_seed[t][s].curve.points, grid) for t in have], axis=0)
                       for s in use]
        band = [t_interval([c[i] for c in seed_curves]) for i in range(len(grid))]
        out[method] = {
            "tasks": have,
            "seeds": use,
            "per_exit": per_exit,
            "interpolated": interp,
            "auc": avg(lambda ev: ev.curve.auc),
            "curve": {"cost": grid, "mean": [x["mean"] for x in band], "low": [x["low"] for x in band],
                      "high": [x["high"] for x in band], "n": len(use)},
        }
    return out


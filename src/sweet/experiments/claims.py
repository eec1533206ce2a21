"""The paper's claims, checked on a grid: paired gaps between methods, with confidence intervals over seeds.

The paper ("Finding the SWEET Spot", Sections 3-4) makes claims about the *differences* between methods: Multi-Model's
individual classifiers beat Early-Exit's (+2.3 on average), SWEET's beat Early-Exit's (+1.1 on average, most at the
first exit) except the last two, and on the speed-accuracy curve SWEET beats Early-Exit at fast speeds and trails
it slightly at slow ones. A difference is measured here the way the paper's protocol allows: per seed (the same
seed draws the same training sample for every method), the mean over tasks of method A's score minus method B's,
then the mean and 95% t-interval over seeds (:func:`~sweet.experiments.aggregate.t_interval`).

Each claim gets a verdict from that interval: ``supported`` (the interval lies on the claimed side of 0),
``contradicted`` (it lies on the other side), ``inconclusive`` (it contains 0), or, with a single seed, the sign
of the one gap marked ``one seed``. A "comparable or better" claim (direction ``>=0``) states both what passes and
what does not: ``supported (better)`` where the interval lies above 0, ``supported (comparable)`` where it contains
0 and A is ahead (mean gap >= 0) at one point of the scope at least, ``behind at every point`` where A's mean gap
is below 0 at every exit or cost of the scope (even if the interval reaches 0; not supported), ``contradicted``
where the whole interval lies below 0. "Fast" cost ratios are those up to 1/2 of the full model (the paper: "up
to a speedup ratio of 1/2"), "slow" those from 3/4 to 1.

Every claim is judged three ways: with seeds as the unit (above); with tasks as the unit (per task the mean
over seeds of the gap, then the t-interval over tasks, df = tasks - 1: it counts the variation between tasks,
which the interval over seeds averages away); and with seeds as the unit at the Bonferroni level for the number
of claims checked (``1 - 0.05 / claims``; ten claims tested at 95% each would give about one in two a verdict by
chance if every true gap were 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluation import Evaluation
from .aggregate import CONFIDENCE, snap, stat_row, t_interval

FAST_MAX = 0.5  # cost ratios up to this are "fast speeds"
SLOW_MIN = 0.75  # cost ratios from this up to 1 are "slow speeds"


@dataclass(frozen=True)
class Claim:
    key: str
    a: str  # method A (the gap is A - B)
    b: str
    scope: str  # "exits", "first_exit", "last_two_exits", "fast", "slow"
    direction: str  # ">0", "<0" or ">=0" (comparable or better)
    text: str  # the claim in words
    paper: str  # what the paper reports

    def verdict(self, stats: dict, point_gaps: list[float] | None = None, unit: str = "seed") -> str:
        """The verdict from a gap's interval; ``point_gaps``: the mean gap at each exit or cost of the scope (a
        "comparable or better" claim is not supported where A is behind at every one of them); ``unit``: what
        the interval is over (named when there is only one)."""
        mean, low, high = stats["mean"], stats["low"], stats["high"]
        if mean is None:
            return "no data"
        if low is None:  # one seed (or one task): no interval
            if mean == 0 and self.direction != ">=0":
                return f"one {unit}: no difference (gap 0)"
            side = mean < 0 if self.direction == "<0" else mean >= 0 if self.direction == ">=0" else mean > 0
            return f"one {unit}: {'same' if side else 'opposite'} sign as claimed"
        if self.direction == ">0":
            return "supported" if low > 0 else "contradicted" if high < 0 else "inconclusive"
        if self.direction == "<0":
            return "supported" if high < 0 else "contradicted" if low > 0 else "inconclusive"
        # ">=0": comparable or better
        if high < 0:
            return "contradicted"
        if low > 0:
            return "supported (better)"
        if point_gaps and all(g < 0 for g in point_gaps):
            return "behind at every point"
        return "supported (comparable)"


CLAIMS = (
    Claim("mm_vs_ee_exits", "multi_model", "early_exit", "exits", ">0",
          "Multi-Model's individual classifiers beat Early-Exit's (mean over exits)",
          "+2.3 on average (BERT +1.7, DeBERTa +3.0)"),
    Claim("mm_vs_ee_first_exit", "multi_model", "early_exit", "first_exit", ">0",
          "Multi-Model's first classifier beats Early-Exit's (the paper's largest gap)",
          "+3.5 (BERT), +7.0 (DeBERTa) at the first exit"),
    Claim("sweet_vs_ee_exits", "sweet", "early_exit", "exits", ">0",
          "SWEET's individual classifiers beat Early-Exit's (mean over exits)",
          "+1.1 on average (BERT +1.2, DeBERTa +1.0)"),
    Claim("sweet_vs_ee_first_exit", "sweet", "early_exit", "first_exit", ">0",
          "SWEET's first classifier beats Early-Exit's (the paper's largest gain)",
          "+3.4 (BERT), +6.2 (DeBERTa) at the first exit"),
    Claim("sweet_vs_ee_late_exits", "sweet", "early_exit", "last_two_exits", "<0",
          "SWEET's last two classifiers are below Early-Exit's",
          "-0.9 on average"),
    Claim("sweet_vs_ee_fast", "sweet", "early_exit", "fast", ">0",
          "SWEET's curve beats Early-Exit's at fast speeds (cost <= 1/2)",
          "better for all 4 models at the fastest speeds; 5 of 7 tasks (BERT-base)"),
    Claim("sweet_vs_mm_fast", "sweet", "multi_model", "fast", ">=0",
          "SWEET's curve matches or beats Multi-Model's at fast speeds (cost <= 1/2)",
          "comparable to, or better than, Multi-Model"),
    Claim("sweet_vs_ee_slow", "sweet", "early_exit", "slow", "<0",
          "SWEET's curve is slightly below Early-Exit's at slow speeds (cost 3/4 to 1)",
          "Early-Exit better for 3 of 4 models; comparable on 5 of 7 tasks (BERT-base)"),
    Claim("mm_vs_ee_fast", "multi_model", "early_exit", "fast", ">0",
          "Multi-Model's curve beats Early-Exit's at fast speeds (cost <= 1/2)",
          "better up to 1/4 of the run time"),
    Claim("mm_vs_ee_slow", "multi_model", "early_exit", "slow", "<0",
          "Multi-Model's curve is below Early-Exit's at slow speeds (cost 3/4 to 1)",
          "Early-Exit dominates beyond 1/4 of the run time"),
)


def _by_seed(chosen: dict, task: str, method: str) -> dict[int, dict]:
    return {int(r["seed"]): r for r in chosen.get((task, method)) or []}


def _per_exit(record: dict) -> dict[int, float]:
    return {p.exit_layer: p.score for p in Evaluation.of_run(record).per_exit}


def _per_cost(record: dict) -> dict[float, float]:
    return {q.cost_ratio: q.score for q in Evaluation.of_run(record).curve.interpolated if q.score is not None}


def paired_gaps(chosen: dict, tasks: list[str], a: str, b: str, seeds: list[int] | None = None) -> dict | None:
    """Per exit and per fixed cost ratio, A minus B: per seed the mean over tasks, then the interval over seeds.
    Uses the tasks where both methods have runs and the seeds both have on every one of those tasks (``seeds``:
    only these of them)."""
    have = [t for t in tasks if chosen.get((t, a)) and chosen.get((t, b))]
    if not have:
        return None
    common = set.intersection(*(set(_by_seed(chosen, t, a)) & set(_by_seed(chosen, t, b)) for t in have))
    seeds = sorted(common if seeds is None else common & set(seeds))
    if not seeds:
        return None
    runs = {(t, s): (_by_seed(chosen, t, a)[s], _by_seed(chosen, t, b)[s]) for t in have for s in seeds}
    exits = [x for x in _per_exit(runs[(have[0], seeds[0])][0]) if x in _per_exit(runs[(have[0], seeds[0])][1])]
    costs = [c for c in sorted(set.intersection(*(set(_per_cost(ra)) & set(_per_cost(rb)) for ra, rb in runs.values())))
             if c <= 1.0]  # Multi-Model's costs above 1 have no Early-Exit counterpart

    def gap(get) -> dict:  # per seed: mean over tasks of A - B; ``over_tasks``: per task the mean over seeds
        return {**stat_row(t_interval([float(np.mean([get(runs[(t, s)][0]) - get(runs[(t, s)][1]) for t in have]))
                                       for s in seeds])),
                "over_tasks": stat_row(t_interval([float(np.mean([get(runs[(t, s)][0]) - get(runs[(t, s)][1])
                                                                  for s in seeds])) for t in have]))}

    return {
        "a": a, "b": b, "tasks": have, "seeds": seeds,
        "per_exit": [{"exit_layer": x, **gap(lambda r, x=x: _per_exit(r)[x])} for x in exits],
        "per_cost": [{"cost_ratio": c, **gap(lambda r, c=c: _per_cost(r)[c])} for c in costs],
        "_runs": runs, "_exits": exits, "_costs": costs,
    }


def _scope(gaps: dict, scope: str) -> tuple[list, str]:
    """What a claim averages over: exit layers or cost ratios, and a label."""
    exits, costs = gaps["_exits"], gaps["_costs"]
    if scope == "exits":
        return [("exit", x) for x in exits], "all exits"
    if scope == "first_exit":
        return [("exit", exits[0])], f"exit L{exits[0]}"
    if scope == "last_two_exits":
        return [("exit", x) for x in exits[-2:]], "exits " + ", ".join(f"L{x}" for x in exits[-2:])
    if scope == "fast":
        return [("cost", c) for c in costs if c <= FAST_MAX], "costs <= 1/2"
    return [("cost", c) for c in costs if c >= SLOW_MIN], "costs 3/4 to 1"


def check_claims(chosen: dict, tasks: list[str], seeds: list[int] | None = None) -> dict | None:
    """Every claim of :data:`CLAIMS` whose two methods the grid ran: the gap over its scope (per seed the mean
    over tasks and over the scope's exits or costs; then the interval over seeds), the same with tasks as the
    unit (``gap_over_tasks``) and at the Bonferroni level (``gap_bonferroni``), the mean gap at each point of the
    scope, and a verdict for each; plus the paired gaps per exit and per cost for each pair of methods.
    ``seeds``: only these seeds (default: those both methods of a pair have on every task). None when no pair of
    the paper's methods is there."""
    pairs: dict[tuple[str, str], dict] = {}
    out = []
    for claim in CLAIMS:
        key = (claim.a, claim.b)
        if key not in pairs:
            g = paired_gaps(chosen, tasks, *key, seeds=seeds)
            if g is None:
                continue
            pairs[key] = g
        g = pairs[key]
        points, scope_name = _scope(g, claim.scope)
        if not points:
            continue

        def score(r: dict, kind: str, v: float) -> float:
            return _per_exit(r)[v] if kind == "exit" else _per_cost(r)[v]

        def diff(t: str, s: int, at: list) -> float:  # A - B on task t, seed s, averaged over the points ``at``
            a, b = g["_runs"][(t, s)]
            return float(np.mean([score(a, kind, v) for kind, v in at])) - float(np.mean([score(b, kind, v) for kind, v in at]))

        per_seed = [float(np.mean([diff(t, s, points) for t in g["tasks"]])) for s in g["seeds"]]
        per_task = [float(np.mean([diff(t, s, points) for s in g["seeds"]])) for t in g["tasks"]]
        point_gaps = [snap(float(np.mean([diff(t, s, [p]) for t in g["tasks"] for s in g["seeds"]]))) for p in points]
        stats, over_tasks = stat_row(t_interval(per_seed)), stat_row(t_interval(per_task))
        out.append({"key": claim.key, "claim": claim.text, "paper": claim.paper, "a": claim.a, "b": claim.b,
                    "over": scope_name, "direction": claim.direction, "tasks": g["tasks"], "seeds": g["seeds"],
                    "points": [{"exit_layer" if kind == "exit" else "cost_ratio": v, "gap": x}
                               for (kind, v), x in zip(points, point_gaps)],
                    "gap": stats, "verdict": claim.verdict(stats, point_gaps),
                    "gap_over_tasks": over_tasks, "verdict_over_tasks": claim.verdict(over_tasks, point_gaps, unit="task"),
                    "_claim": claim, "_per_seed": per_seed, "_point_gaps": point_gaps})
    if not out:
        return None
    bonferroni = 1 - (1 - CONFIDENCE) / len(out)
    for c in out:
        stats = stat_row(t_interval(c.pop("_per_seed"), confidence=bonferroni))
        c["gap_bonferroni"] = stats
        c["verdict_bonferroni"] = c.pop("_claim").verdict(stats, c.pop("_point_gaps"))
    return {
        "how": "per seed, the mean over tasks of A minus B (same seed = same training sample), then the mean and "
               "95% t-interval over seeds; over tasks: per task the mean over seeds of A minus B, then the t-interval "
               "over tasks (df = tasks - 1); Bonferroni: the interval over seeds at 1 - 0.05 / claims; "
               "fast = cost ratio <= 1/2, slow = 3/4 to 1",
        "n_claims": len(out),
        "bonferroni_confidence": bonferroni,
        "claims": out,
        "pairs": [{k: v for k, v in g.items() if not k.startswith("_")} for g in pairs.values()],
    }

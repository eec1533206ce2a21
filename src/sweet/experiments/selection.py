"""Model selection on the held-out calibration split: the learning rate, the gradient scale alpha, and a
parameterised method's parameter.

The learning rate is chosen per (task, method, backbone) -- and per training size in a sweep -- by the area
under the speed-accuracy curve measured on the calibration split (``metrics.json`` -> ``selection``), averaged
over seeds -- or, for a grid with ``lr_selection = "first_seed"``, on the first seed alone; never on the split the
scores are reported on (:func:`select_learning_rates`). The gradient scale
alpha is chosen per task the same way, among the methods on the gradient-scaling line that the grid ran
(:func:`select_alpha`; the report's ``grad_scale@selected``). A parameterised method's parameter (``NAME@P``, several
values of one family ``NAME``) is chosen per task on one seed by its worst deficit against the better of Early-Exit
and SWEET over the five fixed costs (:func:`select_method_parameters`; a grid's ``param_selection =
"first_seed_worst_deficit"``): AUC would drift toward Early-Exit.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import SweetError
from ..evaluation import Evaluation
from ..methods import SELECTED_ALPHA, parse_method

SELECTION_CRITERION = "mean over seeds of the area under the speed-accuracy curve on the calibration split"
#: the baselines a parameter is chosen against: at each fixed cost, the better of the two
DEFICIT_BASELINES = ("early_exit", "sweet")


def worst_deficit_criterion(seed: int) -> str:
    return (f"worst deficit, over the five fixed costs of the calibration split of seed {seed}, of the value's score "
            "against the better of early_exit and sweet (the largest wins; ties go to the smaller parameter)")


def first_seed_criterion(seed: int) -> str:
    return (f"area under the speed-accuracy curve on the calibration split of seed {seed} (the first seed); the "
            "other seeds ran at the chosen rate only")


def _selection_candidate(aucs: dict[int, float | None], all_seeds: set[int]) -> dict:
    """One candidate of a selection on the calibration split: its seeds' selection AUCs and their mean. It is
    eligible only with an AUC for every seed that any candidate has (a half-finished one cannot win on fewer)."""
    values = [aucs[s] for s in sorted(aucs) if aucs[s] is not None]
    return {
        "seeds": sorted(aucs),
        "selection_aucs": [aucs[s] for s in sorted(aucs)],
        "mean_selection_auc": sum(values) / len(values) if values else None,
        "eligible": set(aucs) == all_seeds and len(values) == len(all_seeds),
    }


def select_learning_rates(records: Sequence[dict], by_size: bool = False, on_seed: int | None = None,
                          only_rates: Sequence[float] | None = None) -> dict[tuple, dict]:
    """Choose the learning rate per (task, method, backbone) by the area under the speed-accuracy curve on
    the held-out calibration split (``metrics['selection']['auc']``), averaged over seeds. The reported
    split is never looked at. Ties go to the smaller learning rate. A learning rate is only a candidate
    with the same seeds as the others (a half-finished learning rate cannot win on fewer seeds).

    ``by_size`` (a training-set size sweep): per (task, method, backbone, n_train), keyed by that 4-tuple,
    with the record's ``n_train`` as the size.

    ``on_seed`` (a grid with ``lr_selection = "first_seed"``): the rates are compared on that seed's AUC alone
    (a rate without a run of that seed cannot win); the other seeds' runs exist at the chosen rate only.

    ``only_rates``: only these learning rates are candidates (the runs at any other rate are left out), e.g. the
    choice a grid made before its rates were extended (:mod:`~sweet.experiments.moved`)."""
    allowed = None if only_rates is None else {float(lr) for lr in only_rates}
    groups: dict[tuple, dict[float, dict[int, float]]] = {}
    for m in records:
        sel = m.get("selection")
        run_label = f"{m.get('task')}/{m.get('method')}/lr={m.get('learning_rate')}/seed={m.get('seed')}"
        if not sel:
            raise SweetError(f"run {run_label} has no 'selection' metrics (made by an older sweet); re-run it")
        if sel.get("split") == m.get("evaluation", {}).get("split"):
            raise SweetError(f"run {run_label}: the selection split is the reported split; refusing to select on it")
        if allowed is not None and float(m["learning_rate"]) not in allowed:
            continue
        key = (m["task"], m["method"], m["backbone"]) + ((int(m["n_train"]),) if by_size else ())
        groups.setdefault(key, {}).setdefault(float(m["learning_rate"]), {})[int(m["seed"])] = sel["auc"]
    out = {}
    for key, by_lr in sorted(groups.items()):
        if on_seed is None:
            all_seeds = set().union(*(set(s) for s in by_lr.values()))
            judged = by_lr
        else:
            all_seeds = {on_seed}
            judged = {lr: {s: a for s, a in aucs.items() if s == on_seed} for lr, aucs in by_lr.items()}
        candidates = [{"learning_rate": lr, **_selection_candidate(judged[lr], all_seeds)} for lr in sorted(by_lr)]
        eligible = [c for c in candidates if c["eligible"]]
        if not eligible:
            size = f"/n={key[3]}" if by_size else ""
            which = "every seed" if on_seed is None else f"seed {on_seed}"
            raise SweetError(f"{key[0]}/{key[1]}{size}: no learning rate has a selection AUC for {which}")
        best = max(eligible, key=lambda c: (c["mean_selection_auc"], -c["learning_rate"]))
        out[key] = {
            "task": key[0], "method": key[1], "backbone": key[2], **({"n_train": key[3]} if by_size else {}),
            "chosen": best["learning_rate"],
            "criterion": SELECTION_CRITERION if on_seed is None else first_seed_criterion(on_seed),
            "candidates": candidates,
        }
    return out


def select_alpha(chosen: dict[tuple[str, str], list[dict]]) -> dict[str, dict]:
    """Choose the gradient scale alpha per task the way the learning rate is chosen: by the mean over seeds of
    the area under the speed-accuracy curve on the calibration split, never the reported split. The candidates
    are the methods on the gradient-scaling line that the grid ran for that task (``sweet`` = 0,
    ``grad_scale@ALPHA``, ``early_exit`` = 1), each at its own chosen learning rate.

    ``chosen``: (task, method) -> that method's runs at its chosen learning rate. Returns task -> the choice
    (``chosen``: the method, ``alpha``, and every candidate's selection AUCs). A candidate is eligible only with
    every seed that any candidate has; ties go to the smaller alpha. A task gets a choice only where it has a
    ``grad_scale@ALPHA`` run and at least two candidates: otherwise there is nothing to choose between."""
    by_task: dict[str, list[tuple[float, str, list[dict]]]] = {}
    for (task, method), runs in chosen.items():
        if method == SELECTED_ALPHA or not runs:
            continue
        alpha = parse_method(method).alpha
        if alpha is not None:
            by_task.setdefault(task, []).append((alpha, method, runs))
    out = {}
    for task, cands in sorted(by_task.items()):
        if len(cands) < 2 or not any(parse_method(m).alpha_is_parameter for _, m, _ in cands):
            continue
        all_seeds = set().union(*({int(r["seed"]) for r in runs} for _, _, runs in cands))
        candidates = [{"alpha": alpha, "method": method, "learning_rate": float(runs[0]["learning_rate"]),
                       **_selection_candidate({int(r["seed"]): r["selection"]["auc"] for r in runs}, all_seeds)}
                      for alpha, method, runs in sorted(cands)]
        eligible = [c for c in candidates if c["eligible"]]
        if not eligible:
            continue
        best = max(eligible, key=lambda c: (c["mean_selection_auc"], -c["alpha"]))
        out[task] = {
            "task": task,
            "chosen": best["method"],
            "alpha": best["alpha"],
            "criterion": SELECTION_CRITERION,
            "candidates": candidates,
        }
    return out


def _calibration_scores(m: dict) -> dict[float, float | None]:
    """A run's scores at its fixed costs on the calibration split (metrics.json ``selection``; what the report
    reads on the reported split), keyed by the cost ratio rounded to 9 digits. Refuses a run whose selection
    split is its reported split, as :func:`select_learning_rates` does."""
    label = f"{m.get('task')}/{m.get('method')}/lr={m.get('learning_rate')}/seed={m.get('seed')}"
    sel = m.get("selection")
    if not sel:
        raise SweetError(f"run {label} has no 'selection' metrics (made by an older sweet); re-run it")
    if sel.get("split") == m.get("evaluation", {}).get("split"):
        raise SweetError(f"run {label}: the selection split is the reported split; refusing to select on it")
    return {round(q.cost_ratio, 9): q.score for q in Evaluation.from_dict(sel).curve.interpolated}


def select_method_parameters(records: Sequence[dict], baselines: Sequence[dict], seed: int) -> dict[tuple, dict]:
    """Choose each parameterised method's parameter per (task, family, backbone) on one seed's calibration split.

    ``records``: metrics of the runs of parameterised methods (``NAME@P``; the family is ``NAME``, its values the
    ``P`` s ran); ``baselines``: metrics of Early-Exit's and SWEET's runs (each at its chosen learning rate). Only
    runs of ``seed`` count. For each value: at each of the five fixed costs (the cheapest exit, 1/4, 1/2, 3/4, 1:
    the baselines' fixed costs up to 1), its score minus the better of the two baselines' scores at that cost; its
    worst deficit is the minimum over the costs. The value with the largest worst deficit wins; ties go to the
    smaller parameter. A value without a score at every cost cannot win.

    Returns (task, family, backbone) -> the choice: ``chosen`` (the method, e.g. ``own@0.5``), ``param``,
    ``criterion``, ``cost_ratios``, ``baseline`` (the better baseline's score at each cost) and every candidate's
    ``scores``, ``deficits`` and ``worst_deficit``. A (task, family, backbone) gets a choice only where the family
    ran 2+ values on that seed and both baselines have a run of that seed: otherwise there is nothing to choose
    between, or nothing to choose against. Two runs of the same method and seed (two learning rates) are refused:
    pass the runs at the chosen rate."""
    base: dict[tuple, dict[str, dict]] = {}
    for m in baselines:
        if int(m["seed"]) != seed or m["method"] not in DEFICIT_BASELINES:
            continue
        slot = base.setdefault((m["task"], m["backbone"]), {})
        if m["method"] in slot:
            raise SweetError(f"{m['task']}/{m['method']}/seed={seed}: two baseline runs; pass the one at the chosen "
                             "learning rate")
        slot[m["method"]] = m
    families: dict[tuple, dict[float, dict]] = {}
    for m in records:
        if int(m["seed"]) != seed or m["method"] == SELECTED_ALPHA:
            continue
        method = parse_method(m["method"])
        if method.param is None:
            continue
        values = families.setdefault((m["task"], method.name, m["backbone"]), {})
        if method.param in values:
            raise SweetError(f"{m['task']}/{method.canonical}/seed={seed}: two runs; pass the one at the chosen "
                             "learning rate")
        values[method.param] = m
    out = {}
    for (task, family, backbone), values in sorted(families.items()):
        refs = base.get((task, backbone), {})
        if len(values) < 2 or set(refs) != set(DEFICIT_BASELINES):
            continue
        ref_scores = {b: _calibration_scores(refs[b]) for b in DEFICIT_BASELINES}
        costs = sorted(c for c in ref_scores[DEFICIT_BASELINES[0]] if c <= 1.0 + 1e-9)
        best_base = []
        for c in costs:
            have = [ref_scores[b].get(c) for b in DEFICIT_BASELINES]
            best_base.append(None if any(v is None for v in have) else max(have))
        candidates = []
        for param, m in sorted(values.items()):
            mine = _calibration_scores(m)
            scores = [mine.get(c) for c in costs]
            deficits = [None if s is None or b is None else s - b for s, b in zip(scores, best_base)]
            worst = None if any(d is None for d in deficits) else min(deficits)
            candidates.append({"method": m["method"], "param": param, "learning_rate": float(m["learning_rate"]),
                               "scores": scores, "deficits": deficits, "worst_deficit": worst,
                               "eligible": worst is not None})
        eligible = [c for c in candidates if c["eligible"]]
        if not eligible:
            raise SweetError(f"{task}/{family}/seed={seed}: no value has a calibration-split score at every fixed cost "
                             f"({', '.join(f'{c:g}' for c in costs)}) where both baselines have one")
        best = max(eligible, key=lambda c: (c["worst_deficit"], -c["param"]))
        out[(task, family, backbone)] = {
            "task": task, "family": family, "backbone": backbone, "seed": seed,
            "chosen": best["method"], "param": best["param"],
            "criterion": worst_deficit_criterion(seed),
            "cost_ratios": costs, "baseline": best_base,
            "candidates": candidates,
        }
    return out

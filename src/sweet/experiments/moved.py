"""What moved when a grid's learning rates were searched further: every claim judged twice from the same run
directories, with the rates chosen from the set the grid searched first and from the full set, and why each gap
moved.

A grid whose rates were extended (the paper grid: {5e-5, 1e-4}, then {5e-5, 1e-4, 2e-4, 3e-4}, issue #25) keeps
every run of the earlier choice: with ``lr_selection = "first_seed"`` the first seed ran every earlier rate, and a
later seed's run at an earlier choice stays in the grid directory when the choice changes, unlisted in the
manifest (:func:`~sweet.experiments.gridload.unlisted_runs`). The earlier choice is the grid's own rule
(:func:`~sweet.experiments.gridload.choose_learning_rates`) restricted to the earlier rates, and the claims are the
report's (:func:`~sweet.experiments.claims.check_claims`), judged on the runs of each choice over the same tasks
and seeds.

Why a gap moved: a claim's gap (A - B) is the mean over tasks of each task's mean gap over seeds and the claim's
scope, so the change is the sum over tasks of (the task's new mean gap - its earlier one) / tasks. A task
contributes only where a chosen rate of A or B changed there; its contribution splits into A's part (the change of
A's mean score over the scope, / tasks) and B's (minus the change of B's). The earlier rate set is read from the
grid's launch records (:func:`earlier_rates`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..evaluation import Evaluation
from ..io import read_json
from ..methods import method_label
from .aggregate import chosen_runs
from .cells import TASK_LABELS, fmt_gap, md_table, task_list
from .claims import CLAIMS, check_claims
from .gridload import choose_learning_rates, unlisted_runs
from .store import LAUNCHES_FILE

HOW = ("every claim judged twice from the same run directories: with each (task, method)'s learning rate chosen by "
       "the grid's rule from the rates it searched first, and from the full set (the report's tables); over the same "
       "tasks and seeds. A claim's change is the sum over tasks of (the task's new mean gap over seeds and the "
       "claim's scope - its earlier one) / tasks; within a task, A's part is the change of A's mean score / tasks "
       "and B's part minus the change of B's")
#: how many tasks a paragraph names as the largest contributors
LARGEST = 2


def earlier_rates(launches: Sequence[dict], rates: Sequence[float]) -> list[float] | None:
    """The learning rates a grid searched before it was extended to its current set ``rates``: of the ``--lrs`` sets
    its launches gave before the first one that gave the current set, the latest that is a proper subset of it (a
    later launch that dropped a rate again does not count as the earlier set). None where there is none (the rates
    were never extended, or were set in a spec file, which launches do not record)."""
    current = sorted(float(x) for x in rates)
    given = []
    for launch in launches:
        words = shlex.split(launch.get("command") or "")
        for i, word in enumerate(words):
            value = words[i + 1] if word == "--lrs" and i + 1 < len(words) else (
                word.split("=", 1)[1] if word.startswith("--lrs=") else None)
            if value is not None:
                try:
                    given.append(sorted(float(x) for x in value.split(",") if x.strip()))
                except ValueError:
                    continue
    if current not in given:
        return None
    smaller = [g for g in given[:given.index(current)] if set(g) < set(current)]
    return smaller[-1] if smaller else None


def _scope(old: dict, new: dict, tasks: list[str], seeds: list[int] | None) -> tuple[list[str], list[int]]:
    """Where both choices are judged: the tasks of ``tasks`` where both have runs of every claimed method at every
    seed of ``seeds`` (a task that lacks a seed is left out, as the report's averages leave it out); where no task
    has them all, every task with runs and the seeds all of those runs share."""
    methods = {m for c in CLAIMS for m in (c.a, c.b) if any(k[1] == m and v for k, v in new.items())}
    have = [t for t in tasks if all(old.get((t, m)) and new.get((t, m)) for m in methods)]
    seeds_of = {t: set.intersection(*({int(r["seed"]) for r in side[(t, m)]} for m in methods for side in (old, new)))
                for t in have} if methods else {}
    if seeds is not None:
        complete = [t for t in have if set(seeds) <= seeds_of[t]]
        if complete:
            return complete, sorted(seeds)
    common = set.intersection(*seeds_of.values()) if seeds_of else set()
    return have, sorted(common if seeds is None else common & set(seeds))


def _scope_score(run: dict, points: list[dict]) -> float:
    """A run's mean score over a claim's points (exits or fixed costs)."""
    ev = Evaluation.of_run(run)
    exits = {p.exit_layer: p.score for p in ev.per_exit}
    costs = {q.cost_ratio: q.score for q in ev.curve.interpolated}
    return float(np.mean([exits[p["exit_layer"]] if "exit_layer" in p else costs[p["cost_ratio"]] for p in points]))


def _cell_change(old: dict, new: dict, task: str, method: str, seeds: list[int], points: list[dict]) -> float:
    """The change of a (task, method)'s mean score over seeds and the claim's points, earlier -> new choice."""
    def mean(side: dict) -> float:
        by_seed = {int(r["seed"]): r for r in side[(task, method)]}
        return float(np.mean([_scope_score(by_seed[s], points) for s in seeds]))
    return mean(new) - mean(old)


def _explain(before: dict, after: dict, old: dict, new: dict, changed: dict[tuple[str, str], tuple]) -> dict:
    """One claim's earlier and new judgement, the change of its gap, and each task's contribution to it."""
    tasks, seeds, n = after["tasks"], after["seeds"], len(after["tasks"])
    per_task_old = dict(zip(before["tasks"], before["gap_over_tasks"]["values"]))
    per_task_new = dict(zip(tasks, after["gap_over_tasks"]["values"]))
    contributions = []
    for t in tasks:
        cells = [m for m in (after["a"], after["b"]) if (t, m) in changed]
        if not cells:
            continue
        parts = [{"method": m, "earlier": changed[(t, m)][0], "now": changed[(t, m)][1],
                  "part": (1 if m == after["a"] else -1) * _cell_change(old, new, t, m, seeds, after["points"]) / n}
                 for m in cells]
        contributions.append({"task": t, "contribution": (per_task_new[t] - per_task_old[t]) / n, "cells": parts})
    order = sorted(contributions, key=lambda c: -abs(c["contribution"]))

    def judged(c: dict) -> dict:
        return {k: c[k] for k in ("gap", "verdict", "gap_over_tasks", "verdict_over_tasks", "gap_bonferroni",
                                  "verdict_bonferroni", "points")}

    return {"key": after["key"], "claim": after["claim"], "a": after["a"], "b": after["b"], "over": after["over"],
            "direction": after["direction"], "tasks": tasks, "seeds": seeds,
            "earlier": judged(before), "now": judged(after),
            "change": after["gap"]["mean"] - before["gap"]["mean"],
            "verdict_moved": before["verdict"] != after["verdict"],
            "contributions": contributions,
            "largest": [c["task"] for c in order[:LARGEST]]}


def moved_section(grid_dir: str | Path, grid: dict, records: list[dict], selection: dict, chosen: dict,
                  grid_tasks: list[str], scope: tuple[list[str], list[int] | None]) -> dict | None:
    """The report's ``moved`` section for a grid directory (:func:`build_moved`), with the earlier rate set read
    from its launch records (:func:`earlier_rates`); None where its rates were never extended."""
    path = Path(grid_dir) / LAUNCHES_FILE
    earlier = earlier_rates(read_json(path) if path.is_file() else [], grid["spec"].get("learning_rates") or [])
    if not earlier:
        return None
    unlisted, left_out = unlisted_runs(grid_dir, grid, rates=earlier)
    return build_moved(records, unlisted, left_out, grid["spec"], selection, chosen, grid_tasks, scope, earlier)


def build_moved(records: list[dict], unlisted: list[dict], left_out: list[str], spec: dict, selection: dict,
                chosen: dict, grid_tasks: list[str], scope: tuple[list[str], list[int] | None],
                earlier: Sequence[float] | None) -> dict | None:
    """The report's ``moved`` section, or None where there is nothing to compare (no earlier rate set, or a size
    sweep). ``records``: the manifest's finished runs (their ``backbone`` already set by the report's selection);
    ``unlisted``/``left_out``: :func:`~sweet.experiments.gridload.unlisted_runs`; ``selection``/``chosen``: the
    report's choice from the full set and its runs; ``grid_tasks``: the tasks with runs; ``scope``: the tasks and
    seeds of the report's averages and claims (both choices are judged there, where both have the runs)."""
    if not earlier or isinstance(spec.get("n_train"), list) and len(spec["n_train"]) > 1:
        return None
    pool = records + unlisted
    before_sel = choose_learning_rates(pool, spec, only_rates=list(earlier))
    old = chosen_runs(pool, before_sel, None)
    grid_seeds = [int(s) for s in spec["seeds"]]
    missing = []
    for key, sel in sorted(before_sel.items()):
        have = {int(r["seed"]) for r in old.get((key[0], key[1]), [])}
        if not set(grid_seeds) <= have:
            missing.append({"task": key[0], "method": key[1], "learning_rate": sel["chosen"],
                            "seeds": [s for s in grid_seeds if s not in have]})
    changed_rows, changed, provisional = [], {}, []
    for key, sel in sorted(selection.items()):
        unfinished = [lr for lr in spec["learning_rates"] if lr not in {c["learning_rate"] for c in sel["candidates"]}]
        if unfinished:  # a rate of the full set has no run on the selecting seed yet: the choice may still change
            provisional.append({"task": key[0], "method": key[1], "unfinished_rates": unfinished})
        prior = before_sel.get(key)
        if prior is None or prior["chosen"] == sel["chosen"]:
            continue
        auc = {c["learning_rate"]: c["mean_selection_auc"] for c in sel["candidates"]}
        changed[(key[0], key[1])] = (prior["chosen"], sel["chosen"])
        changed_rows.append({"task": key[0], "method": key[1], "earlier": prior["chosen"], "now": sel["chosen"],
                             "selection_auc_earlier": auc.get(prior["chosen"]), "selection_auc_now": auc[sel["chosen"]],
                             "unfinished_rates": unfinished})
    scope_tasks, scope_seeds = _scope(old, chosen, *scope)
    unlisted_ids = {id(r) for r in unlisted}
    out = {"how": HOW, "earlier_rates": sorted(float(x) for x in earlier),
           "rates": sorted(float(x) for x in spec["learning_rates"]),
           "earlier_runs": {"n": sum(len(v) for v in old.values()),
                            "unlisted": sum(1 for v in old.values() for r in v if id(r) in unlisted_ids),
                            "missing": missing, "left_out": left_out},
           "earlier_learning_rates": [{"task": k[0], "method": k[1], "chosen": s["chosen"], "at_top": s["at_top"]}
                                      for k, s in sorted(before_sel.items())],
           "n_choices": len(selection), "changed": changed_rows,
           "provisional": provisional,
           "scope": {"tasks": scope_tasks, "seeds": scope_seeds, "claims_tasks": list(scope[0]),
                     "claims_seeds": None if scope[1] is None else list(scope[1])},
           "claims": []}
    before = check_claims(old, scope_tasks, scope_seeds) if scope_tasks and scope_seeds else None
    after = check_claims(chosen, scope_tasks, scope_seeds) if before else None
    if not after:
        return out
    before_by_key = {c["key"]: c for c in before["claims"]}
    out["claims"] = [_explain(before_by_key[c["key"]], c, old, chosen, changed) for c in after["claims"]
                     if c["key"] in before_by_key]
    claimed = {m for c in CLAIMS for m in (c.a, c.b)}
    complete = [t for t in grid_tasks if all(set(grid_seeds) <= {int(r["seed"]) for r in runs}
                                             for (task, m), runs in old.items() if task == t and m in claimed)]
    if complete != scope_tasks or grid_seeds != scope_seeds:  # the earlier choice where it is complete
        full = check_claims(old, complete, grid_seeds)
        if full:
            out["earlier_all_tasks"] = {"tasks": complete, "seeds": grid_seeds,
                                        "claims": [{k: c[k] for k in ("key", "gap", "verdict", "gap_over_tasks",
                                                                      "verdict_over_tasks")} for c in full["claims"]]}
    return out


def _rates(rates: Sequence[float]) -> str:
    return "{" + ", ".join(f"{x:g}" for x in rates) + "}"


def _why(c: dict) -> str:
    """The clause or two that say why a claim's gap moved: the rate changes on its tasks, each task's share."""
    a, b = method_label(c["a"]), method_label(c["b"])
    if not c["contributions"]:
        return f"No chosen rate of {a} or {b} changed on these tasks, so nothing moved."
    parts = []
    for t in c["contributions"]:
        cells = ", ".join(f"{method_label(x['method'])} {x['earlier']:g} → {x['now']:g} {x['part']:+.2f}"
                          for x in t["cells"])
        parts.append(f"{TASK_LABELS.get(t['task'], t['task'])} {t['contribution']:+.2f} ({cells})")
    by_task = {t["task"]: t["contribution"] for t in c["contributions"]}
    largest = " and ".join(f"{TASK_LABELS.get(t, t)} ({by_task[t]:+.2f})" for t in c["largest"])
    return "By task: " + "; ".join(parts) + f". Largest: {largest}."


def moved_markdown(moved: dict) -> list[str]:
    """The section: how both choices are judged, whether the earlier choice's runs are all there, the rate choices
    that changed, each claim judged both ways, and a paragraph per claim on what moved and why."""
    old_set, new_set = _rates(moved["earlier_rates"]), _rates(moved["rates"])
    scope, runs = moved["scope"], moved["earlier_runs"]
    lines = ["## What moved when the learning rates were extended", "",
             (f"Every claim judged twice from the same run directories: with each task's and method's learning rate "
             f"chosen from {old_set} alone (the rates the grid searched first, as its earlier report did) and from "
             f"{new_set} (the tables above), by the same rule on the calibration split and with the same claims "
             "code, over the same tasks and seeds. A claim's gap moves only where a chosen rate of one of its two "
             "methods changed: each task contributes the change of its mean gap (over seeds and the claim's scope) "
             "divided by the number of tasks, and the contributions sum to the change of the gap. In the paragraphs "
             "below, *By task* gives each task's contribution and, in parentheses, the part of each rate that "
             "changed there (A's: the change of A's mean score / tasks; B's: minus the change of B's)."), ""]
    text = (f"The earlier choice's runs: {runs['n']}, {runs['unlisted']} of them no longer listed in the manifest "
            "(a later seed at a rate the extended search replaced, or at a choice still waiting for it), read from "
            "their run directories where each has the config of the listed run of the same task, method and rate "
            "but for the seed. ")
    if runs["missing"]:
        text += "**Missing** from the earlier choice: " + "; ".join(
            f"{TASK_LABELS.get(m['task'], m['task'])} {method_label(m['method'])} at {m['learning_rate']:g}, "
            f"seed(s) {', '.join(map(str, m['seeds']))}" for m in runs["missing"]) + "."
    else:
        text += "None is missing: every seed of every task and method at its earlier choice."
    if runs["left_out"]:
        text += " Run directories not used: " + "; ".join(runs["left_out"]) + "."
    lines += [text, ""]
    same = scope["tasks"] == scope["claims_tasks"] and scope["seeds"] == (scope["claims_seeds"] or scope["seeds"])
    lines += [f"Judged over {task_list(scope['tasks'])}, seeds {', '.join(map(str, scope['seeds']))}"
              + (" (the claims table's tasks and seeds)." if same else
                 f"; the claims table above is over {task_list(scope['claims_tasks'])}: here only the tasks and "
                 "seeds where both choices have every run."), ""]
    rows = [[TASK_LABELS.get(r["task"], r["task"]), method_label(r["method"]), f"{r['earlier']:g}", f"{r['now']:g}",
             ("n/a" if r["selection_auc_earlier"] is None else f"{r['selection_auc_earlier']:.2f}")
             + f" → {r['selection_auc_now']:.2f}",
             ("provisional: " + ", ".join(f"{x:g}" for x in r["unfinished_rates"]) + " not finished")
             if r["unfinished_rates"] else ""] for r in moved["changed"]]
    pending = moved.get("provisional", [])
    lines += [f"Learning-rate choices that changed: {len(moved['changed'])} of {moved['n_choices']}"
              + (f" ({len(pending)} of the {moved['n_choices']} still provisional: a rate of the full set has not "
                 f"finished on the selecting seed for {task_list(list(dict.fromkeys(p['task'] for p in pending)))})"
                 if pending else "") + ".", ""]
    if rows:
        lines += [*md_table(["task", "method", f"from {old_set}", f"from {new_set}",
                             "selection AUC (earlier → now)", "note"], rows), ""]
    if not moved["claims"]:
        return lines + ["No claim has runs of both choices on a common task and seed yet.", ""]
    full = {c["key"]: c for c in (moved.get("earlier_all_tasks") or {}).get("claims", [])}
    head = ["claim", "gap", "over", f"from {old_set}", "verdict", f"from {new_set}", "verdict", "change", "largest"]
    if full:
        n_full = len(moved["earlier_all_tasks"]["tasks"])
        head.insert(5, f"from {old_set}, all {n_full} tasks")
    table = []
    for c in moved["claims"]:
        row = [c["claim"], f"{method_label(c['a'])} − {method_label(c['b'])}", c["over"],
               fmt_gap(c["earlier"]["gap"], 2), c["earlier"]["verdict"], fmt_gap(c["now"]["gap"], 2),
               c["now"]["verdict"], f"{c['change']:+.2f}",
               ", ".join(TASK_LABELS.get(t, t) for t in c["largest"]) or "–"]
        if full:
            f = full.get(c["key"])
            row.insert(5, f"{fmt_gap(f['gap'], 2)} *{f['verdict']}*" if f else "n/a")
        table.append(row)
    lines += ["Seeds as the unit (mean ± 95% half-width (SD)):", "", *md_table(head, table), ""]
    if full:
        lines += [(f"*all {n_full} tasks*: the earlier choice over every task where it has every seed "
                   f"({task_list(moved['earlier_all_tasks']['tasks'])}): the runs the earlier report judged, under "
                   "today's rules."), ""]
    lines += ["What moved and why:", ""]
    for c in moved["claims"]:
        e, n = c["earlier"], c["now"]
        lines.append(
            f"- **{c['claim']}** ({method_label(c['a'])} − {method_label(c['b'])}, {c['over']}): "
            f"{fmt_gap(e['gap'], 2)} *{e['verdict']}* → {fmt_gap(n['gap'], 2)} *{n['verdict']}* "
            f"(tasks as the unit: *{e['verdict_over_tasks']}* → *{n['verdict_over_tasks']}*); the gap moved "
            f"{c['change']:+.2f}, {'the verdict moved' if c['verdict_moved'] else 'the verdict held'}. {_why(c)}")
    return lines + [""]

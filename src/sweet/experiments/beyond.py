"""Beyond the paper (issue #26 parts 2-3): methods aimed at "never worse than the better of Early-Exit and SWEET",
held to the issue's research target.

The beyond grid (``docs/results/paper/beyond``) runs parameterised methods (``NAME@P``: a *family* ``NAME`` with
several values ``P``, e.g. ``own@RHO`` and ``ee_anchor@F``). Seed 0 runs every value; per task the value with the
largest worst deficit against max(EE, SWEET) over the five fixed costs of the calibration split is chosen
(:func:`~sweet.experiments.selection.select_method_parameters`, against the main grid's EE and SWEET runs of that
seed), and seeds 1-2 run only that value. The section's row for a family, ``NAME@chosen``, is per task the runs of
its chosen value (a family that ran one value on a task: that value). The main grid's gradient-scaling rows
(``grad_scale@selected``, ``grad_scale@ALPHA``) are held to the same standard.

Each row is compared with the main grid's EE and SWEET runs of the same task and seed
(:func:`~sweet.experiments.aggregate.versus_best`): its mean at each fixed cost and the better of the EE and SWEET
means (bold where it is at least both), the paired differences per seed against each with their 95% intervals,
and the same for the AUC. The verdict (:func:`target_verdict`) is the research target of issue #26, computed: at
each of the five fixed costs the mean over tasks is >= the better of EE's and SWEET's; no paired interval against
either lies wholly below 0 at any of those costs; the AUC is >= both. It is judged on the tasks the method ran (the
screened tasks, or all the main grid's), and says which.
"""

from __future__ import annotations

from pathlib import Path

from ..methods import SELECTED_ALPHA, method_label, parse_method
from .aggregate import VERSUS, versus_best
from .cells import TASK_LABELS, cost_label, fmt_gap, md_table, task_list
from .gridload import (
    SiblingGrid,
    grid_status_text,
    not_run_yet,
    not_run_yet_line,
    sibling_header,
)
from .selection import select_method_parameters
from .spec import task_entry_name

FILLS = ("the methods beyond the paper on SST-2, MNLI and QNLI (issue #26 part 3): `own@RHO` and `ee_anchor@F` at "
         "0.25, 0.5 and 0.75 on seed 0, the value with the best worst deficit against max(EE, SWEET) on the "
         "calibration split chosen per task, then seeds 1-2 at that value (spec.toml in the grid directory)")
TARGET = ("at each of the five fixed costs the mean over tasks is at least the better of Early-Exit's and SWEET's means; "
          "no paired interval (by seed) against either lies wholly below 0 at any of those costs; the AUC is at least "
          "both")
CHOSEN = "chosen"  # a family's row: NAME@chosen


def family_row(family: str) -> str:
    return f"{family}@{CHOSEN}"


def grad_scale_rows(main_chosen: dict) -> list[str]:
    """The main grid's gradient-scaling rows: ``grad_scale@selected`` and every ``grad_scale@ALPHA`` it ran."""
    names = dict.fromkeys(m for (_, m), runs in main_chosen.items() if runs)
    return [m for m in names if m == SELECTED_ALPHA or parse_method(m).alpha_is_parameter]


def build_beyond(main_chosen: dict, main_tasks: list[str], sibling: SiblingGrid | None, grid_dir: str | Path) -> dict:
    """The beyond-the-paper section of report.json. ``main_chosen``: the main grid's (task, method) -> runs at the
    chosen learning rate (EE, SWEET and the gradient-scaling rows come from there); ``main_tasks``: the tasks of
    its averages; ``sibling``: the beyond grid (None: not run yet, and only the gradient-scaling rows are judged)."""
    rows = grad_scale_rows(main_chosen)
    chosen = {k: v for k, v in main_chosen.items() if k[1] in VERSUS or k[1] in rows}
    if sibling is None:
        section = not_run_yet(grid_dir, FILLS)
        section["scopes"] = _scopes(chosen, rows, main_tasks, [])
        section["verdict"] = overall_verdict(section["scopes"], [])
        return section
    seed = int(sibling.spec["seeds"][0])
    records = [r for runs in sibling.chosen.values() for r in runs]
    baselines = [r for (_, m), runs in main_chosen.items() if m in VERSUS for r in runs]
    picks = select_method_parameters(records, baselines, seed)
    tasks = [t for t in map(task_entry_name, sibling.spec["tasks"]) if any(t == k[0] for k in sibling.chosen)]
    families: dict[str, dict[str, str]] = {}  # family -> task -> the method whose runs stand for it
    for m in sibling.spec["methods"]:
        method = parse_method(m)
        if method.param is None:
            continue
        for task in tasks:
            ran = [x for (t, x), runs in sibling.chosen.items() if t == task and runs
                   and parse_method(x).name == method.name]
            pick = next((p["chosen"] for (t, f, _), p in picks.items() if t == task and f == method.name), None)
            if pick is not None or len(ran) == 1:
                families.setdefault(method.name, {})[task] = pick or ran[0]
    for family, by_task in families.items():
        for task, m in by_task.items():
            chosen[(task, family_row(family))] = sibling.chosen[(task, m)]
    new_rows = [family_row(f) for f in families]
    section = {**sibling_header(sibling), "tasks": tasks, "selection_seed": seed,
               "selection": sorted(picks.values(), key=lambda p: (tasks.index(p["task"]) if p["task"] in tasks
                                                                   else len(tasks), p["family"])),
               "families": {f: {"row": family_row(f), "per_task": by_task} for f, by_task in families.items()},
               "scopes": _scopes(chosen, new_rows + rows, main_tasks, screen_tasks(sibling.spec, tasks)),
               "provenance": sibling.provenance()}
    section["verdict"] = overall_verdict(section["scopes"], new_rows)
    return section


def screen_tasks(spec: dict, tasks: list[str]) -> list[str]:
    """The screen: those of ``tasks`` (the ones the beyond grid has runs of) on which its spec runs every method.
    A full test runs the family ahead on the screen on more tasks (``task_methods``), so every family is compared
    on the screen and the one taken further on the main grid's tasks too."""
    only = spec.get("task_methods") or {}
    return [t for t in tasks if set(only.get(t, spec["methods"])) >= set(spec["methods"])]


def _scopes(chosen: dict, rows: list[str], main_tasks: list[str], screened: list[str]) -> list[dict]:
    """The comparison on the screened tasks (:func:`screen_tasks`) and on the main grid's tasks, each with the
    rows that ran every one of its tasks, and every row's verdict."""
    out = []
    for name, tasks in (("screened", [t for t in screened if t in main_tasks]), ("main", main_tasks)):
        if not tasks or any(s["tasks"] == tasks for s in out):
            continue
        vs = versus_best(chosen, tasks, list(VERSUS) + rows)
        if vs is None:
            continue
        out.append({"name": name, "tasks": tasks, "versus": vs, "per_task": per_task_gaps(chosen, tasks, vs),
                    "verdicts": {m: target_verdict(d, tasks, main_tasks) for m, d in vs["methods"].items()}})
    return out


def per_task_gaps(chosen: dict, tasks: list[str], vs: dict) -> dict:
    """Where a scope's gaps come from: per row and task, its paired mean difference to EE and to SWEET at each
    fixed cost and in AUC, over the seeds the row is judged on (:func:`versus_best` on that task alone). Their
    mean over the tasks is the scope's paired mean."""
    out: dict = {}
    for m, d in vs["methods"].items():
        seeds = set(d["auc"]["seeds"])
        runs = {k: [r for r in v if r["seed"] in seeds] for k, v in chosen.items() if k[1] in (m, *VERSUS)}
        for t in tasks:
            one = versus_best(runs, [t], [*VERSUS, m])
            if one is None:
                continue
            row = one["methods"][m]
            out.setdefault(m, {})[t] = {f"vs_{b}": [p[f"vs_{b}"]["mean"] for p in row["points"]]
                                        + [row["auc"][f"vs_{b}"]["mean"]] for b in VERSUS}
    return out


def target_verdict(row: dict, tasks: list[str], main_tasks: list[str]) -> dict:
    """A row of :func:`~sweet.experiments.aggregate.versus_best` against the research target (:data:`TARGET`):
    ``meets`` True, False, or None where it cannot be judged (one seed: no interval); ``failures`` what fails."""
    failures, unjudged = [], []
    for p in row["points"]:
        at = f"cost {cost_label(p['cost_ratio'])}"
        if p["gap_to_best"] is None:
            unjudged.append(f"no score at {at}")
            continue
        if p["gap_to_best"] < 0:
            failures.append(f"{at}: mean {p['gap_to_best']:+.2f} below the better of EE and SWEET")
        for b in VERSUS:
            stats = p[f"vs_{b}"]
            if stats["ci"] is None:
                unjudged.append(f"{at}: one seed, no interval against {method_label(b)}")
            elif stats["high"] < 0:
                failures.append(f"{at}: paired interval against {method_label(b)} wholly below 0 ({fmt_gap(stats, 2)})")
    auc = row["auc"]
    if auc["gap_to_best"] is not None and auc["gap_to_best"] < 0:
        below = [method_label(b) for b in VERSUS if auc[f"vs_{b}"]["mean"] is not None and auc[f"vs_{b}"]["mean"] < 0]
        failures.append(f"AUC {auc['gap_to_best']:+.2f} below the better of EE and SWEET (below {', '.join(below)})")
    meets = False if failures else (None if unjudged else True)
    scope = ("" if set(tasks) >= set(main_tasks) else
             f" (on {task_list(tasks)} only; the target is stated on the average over all {len(main_tasks)} tasks of "
             "the main grid, which a full test must confirm)")
    text = ("meets the target" + scope if meets else
            "not judged yet: " + "; ".join(dict.fromkeys(unjudged)) if meets is None else
            f"misses the target{scope}: " + "; ".join(failures))
    return {"meets": meets, "failures": failures, "unjudged": list(dict.fromkeys(unjudged)), "text": text}


def overall_verdict(scopes: list[dict], new_rows: list[str]) -> str:
    """One sentence per scope: which rows meet the target, computed from their verdicts."""
    if not scopes:
        return "Nothing to judge yet: no row ran every task of a scope beside the main grid's Early-Exit and SWEET."
    out = []
    for s in scopes:
        v = s["verdicts"]
        meet = [m for m in v if v[m]["meets"]]
        open_ = [m for m in v if v[m]["meets"] is None]
        text = (f"On {task_list(s['tasks'])}: " + (", ".join(method_label(m) for m in meet)
                                                    + (" meets" if len(meet) == 1 else " meet") + " the target"
                                                    if meet else "no method meets the target"))
        if open_:
            text += " (not judged yet: " + ", ".join(method_label(m) for m in open_) + ")"
        missing = [m for m in new_rows if m not in v]
        if missing:
            text += " (not compared here, without runs on every one of these tasks: " + ", ".join(missing) + ")"
        out.append(text + ".")
    return " ".join(out)


def versus_paired_lines(vs: dict) -> list[str]:
    """The paired differences per seed against Early-Exit and against SWEET at each cost and for the AUC (the
    main report's comparison uses them too)."""
    head = ["method"] + [cost_label(c) for c in vs["cost_ratios"]] + ["AUC"]
    ee_rows, sw_rows = [], []
    for m, d in vs["methods"].items():
        ee_rows.append([method_label(m)] + [fmt_gap(p["vs_early_exit"]) for p in d["points"]] + [fmt_gap(d["auc"]["vs_early_exit"])])
        sw_rows.append([method_label(m)] + [fmt_gap(p["vs_sweet"]) for p in d["points"]] + [fmt_gap(d["auc"]["vs_sweet"])])
    return ["Paired differences per seed (same seed = same training sample), mean ± 95% CI half-width over seeds, "
            "against Early-Exit:", "", *md_table(head, ee_rows), "", "and against SWEET:", "", *md_table(head, sw_rows),
            ""]


def _means_table(vs: dict) -> list[str]:
    """Each row's mean at each cost and its AUC beside the better of EE and SWEET; bold where >= both."""
    costs = vs["cost_ratios"]
    methods = vs["methods"]
    first = next(iter(methods.values()))

    def base(d: dict, b: str) -> str:
        return "–" if d["mean"] is None else f"{d['mean'] - d[f'vs_{b}']['mean']:.1f}"

    def best(d: dict) -> str:
        return "–" if d["gap_to_best"] is None else f"{d['mean'] - d['gap_to_best']:.1f}"

    def cell(d: dict) -> str:
        if d["mean"] is None:
            return "–"
        return f"**{d['mean']:.1f}**" if d["gap_to_best"] is not None and d["gap_to_best"] >= 0 else f"{d['mean']:.1f}"

    head = ["method"] + [cost_label(c) for c in costs] + ["AUC", "seeds"]
    rows = [[method_label(b)] + [base(p, b) for p in first["points"]] + [base(first["auc"], b), ""] for b in VERSUS]
    rows.append(["better of EE and SWEET"] + [best(p) for p in first["points"]] + [best(first["auc"]), ""])
    rows += [[method_label(m)] + [cell(p) for p in d["points"]] + [cell(d["auc"]), ", ".join(map(str, d["auc"]["seeds"]))]
             for m, d in methods.items()]
    seeds = {tuple(d["auc"]["seeds"]) for d in methods.values()}
    note = ("" if len(seeds) == 1 else " The EE and SWEET rows are over the first row's seeds; every row is judged "
            "against EE and SWEET on its own seeds (the last column).")
    return [*md_table(head, rows), "", "Mean over seeds of the mean over tasks; bold: at least the better of EE and "
            "SWEET (on the same seeds)." + note, ""]


def _per_task_lines(scope: dict) -> list[str]:
    """The paired means per task (:func:`per_task_gaps`), one row per method and task: "vs EE / vs SWEET"."""
    per_task = scope.get("per_task") or {}
    if len(scope["tasks"]) < 2 or not per_task:
        return []

    def cell(a: float | None, b: float | None) -> str:  # round first: -0.04 is "+0.0", not "-0.0"
        return " / ".join("–" if x is None else f"{round(x, 1) + 0.0:+.1f}" for x in (a, b))

    costs = scope["versus"]["cost_ratios"]
    rows = [[method_label(m), TASK_LABELS.get(t, t)] + [cell(a, b) for a, b in zip(g["vs_early_exit"], g["vs_sweet"])]
            for m, by_task in per_task.items() for t, g in by_task.items()]
    return ["Per task (where the differences come from): the paired mean difference against EE / against SWEET; "
            "their mean over the tasks is the paired mean above:", "",
            *md_table(["method", "task"] + [cost_label(c) for c in costs] + ["AUC"], rows), ""]


def _selection_lines(section: dict) -> list[str]:
    rows = []
    for p in section["selection"]:
        cells = []
        for c in p["candidates"]:
            worst = "n/a" if c["worst_deficit"] is None else f"{c['worst_deficit']:+.2f}"
            text = f"{c['param']:g}: {worst}"
            cells.append(f"**{text}**" if c["method"] == p["chosen"] else text)
        rows.append([TASK_LABELS.get(p["task"], p["task"]), p["family"], f"{p['param']:g}", "; ".join(cells),
                     ", ".join(cost_label(c) for c in p["cost_ratios"])])
    if not rows:
        return ["No parameter chosen yet (a family needs 2+ values and EE's and SWEET's runs of the selection seed).",
                ""]
    return [f"Per task, each value's worst deficit (minimum over the costs of its calibration-split score minus the "
            f"better of EE's and SWEET's, seed {section['selection_seed']}); the largest wins, ties to the smaller "
            "value; the chosen one in bold:", "",
            *md_table(["task", "family", "chosen", "candidates (value: worst deficit)", "costs"], rows), ""]


def beyond_markdown(section: dict) -> list[str]:
    lines = ["## Beyond the paper: never worse than the better of Early-Exit and SWEET? (issue #26)", "",
             f"Research target: {TARGET}. EE and SWEET are the main grid's runs at their chosen learning rates, "
             "paired by seed with each row's runs.", ""]
    if section["state"] == "not run yet":
        lines += [not_run_yet_line(section), ""]
    else:
        lines += [grid_status_text(section) + ".", "", "### The parameter chosen per task", "",
                  *_selection_lines(section)]
    lines += [f"**Verdict.** {section['verdict']}", ""]
    for scope in section["scopes"]:
        vs = scope["versus"]
        lines += [f"### Against the better of EE and SWEET on {task_list(scope['tasks'])}", "", *_means_table(vs),
                  *versus_paired_lines(vs), *_per_task_lines(scope), "Against the research target:", ""]
        lines += [f"- {method_label(m)}: {v['text']}." for m, v in scope["verdicts"].items()] + [""]
    return lines


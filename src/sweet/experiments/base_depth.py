"""The paper's depth (issue #26 part 1): a 12-layer backbone on the paper's ladder, as its own report section.

The BASE grid (``docs/results/paper/base``) runs MPNet-12 (all-mpnet-base-v2) with exits after layers
``[1, 4, 6, 12]``: SST-2 with Early-Exit, SWEET and Multi-Model, MNLI with Early-Exit and SWEET, 3 seeds, one
learning rate. The section gives its Table 1 rows (mean ± 95% CI, SD over seeds), its scores at the fixed costs,
and the paper's claims judged on it by the same code as the main grid's (:func:`~sweet.experiments.claims.
check_claims`): each claim is judged over the tasks where both of its methods ran, so Multi-Model's claims are
judged on SST-2 alone. Every claim that cannot be judged, or is judged with less than the full grid, is named
with the reason (:func:`claim_coverage`).
"""

from __future__ import annotations

from pathlib import Path

from ..methods import method_label
from .aggregate import average_over_tasks, method_summary, selection_key
from .cells import FLOOR_LEGEND, TASK_LABELS, exit_table, interp_table, metric_label, task_list
from .claims import CLAIMS, check_claims
from .claims_tables import claims_markdown
from .floors import evaluation_classes, mark_floors
from .gridload import (
    SiblingGrid,
    grid_status_text,
    not_run_yet,
    not_run_yet_line,
    sibling_header,
)
from .spec import task_entry_name

FILLS = ("MPNet-12 (all-mpnet-base-v2, the `.[mpnet]` extra) with exits [1, 4, 6, 12]: SST-2 with Early-Exit, SWEET "
         "and Multi-Model, MNLI with Early-Exit and SWEET, 6K examples x 2 epochs, batch 16, 3 seeds, learning rate "
         "5e-5 (issue #26 part 1; spec.toml in the grid directory)")


def build_base_depth(sibling: SiblingGrid | None, grid_dir: str | Path) -> dict:
    """The BASE-depth section of report.json (``sibling`` None: not run yet)."""
    if sibling is None:
        return not_run_yet(grid_dir, FILLS)
    spec, chosen = sibling.spec, sibling.chosen
    tasks = [t for t in map(task_entry_name, spec["tasks"]) if any(chosen.get((t, m)) for m in spec["methods"])]
    methods = [m for m in spec["methods"] if any(chosen.get((t, m)) for t in tasks)]
    per_task: dict[str, dict] = {}
    for task in tasks:
        for method in methods:
            runs = chosen.get((task, method))
            if runs:
                sel = sibling.selection[selection_key(task, method, runs[0]["backbone"], None)]
                per_task.setdefault(task, {})[method] = method_summary(runs, sel["chosen"], sel["at_top"])
    floors = mark_floors(per_task, evaluation_classes(sibling.grid_dir, sibling.records, tasks))
    # the average over tasks: the methods that ran every task, over the seeds they all have on every task
    avg_methods = [m for m in methods if all(m in per_task[t] for t in tasks)]
    shared = [set(per_task[t][m]["seeds"]) for t in tasks for m in avg_methods]
    avg_seeds = sorted(set.intersection(*shared)) if shared else []
    average = average_over_tasks(per_task, chosen, tasks, avg_methods, seeds=avg_seeds) if avg_seeds else {}
    claims = check_claims(chosen, tasks)
    first = next(iter(next(iter(per_task.values())).values()))
    return {**sibling_header(sibling), "backbone": spec["backbone"], "exit_layers": first["exit_layers"],
            "tasks": tasks, "methods": methods, "per_task": per_task,
            "average": average, "average_scope": {"tasks": tasks, "methods": avg_methods, "seeds": avg_seeds},
            "floors": floors, "paper_claims": claims,
            "claim_coverage": claim_coverage(claims, chosen, spec["methods"], tasks),
            "provenance": sibling.provenance()}


def claim_coverage(claims: dict | None, chosen: dict, grid_methods: list[str], tasks: list[str]) -> list[dict]:
    """Per claim of :data:`~sweet.experiments.claims.CLAIMS`: whether the grid judges it, and why not (a method not
    in the grid, or not finished; no task or seed both methods share), or what limits it (judged on fewer tasks
    than the grid's, one seed, one task)."""
    judged = {c["key"]: c for c in (claims or {}).get("claims", [])}
    out = []
    for claim in CLAIMS:
        c = judged.get(claim.key)
        if c is not None:
            notes = []
            if len(c["tasks"]) < len(tasks):
                ran = {m: [t for t in tasks if chosen.get((t, m))] for m in (claim.a, claim.b)}
                short = [m for m, ts in ran.items() if len(ts) < len(tasks)]
                notes.append(f"over {task_list(c['tasks'])} only: "
                             + ", ".join(f"{method_label(m)} ran on {task_list(ran[m]) or 'no task'}" for m in short))
            if len(c["seeds"]) < 2:
                notes.append("one seed: no interval, only the sign")
            if len(c["tasks"]) < 2:
                notes.append("one task: no interval with tasks as the unit")
            out.append({"key": claim.key, "claim": claim.text, "judged": True, "verdict": c["verdict"], "notes": notes})
            continue
        reasons = []
        for m in (claim.a, claim.b):
            if m not in grid_methods:
                reasons.append(f"{method_label(m)} is not in this grid")
            elif not any(chosen.get((t, m)) for t in tasks):
                reasons.append(f"{method_label(m)} has no finished run yet")
        if not reasons:
            both = [t for t in tasks if chosen.get((t, claim.a)) and chosen.get((t, claim.b))]
            reasons.append("no task where both ran" if not both else "no seed both have finished on every task they share")
        out.append({"key": claim.key, "claim": claim.text, "judged": False, "why": "; ".join(reasons)})
    return out


def base_depth_markdown(section: dict) -> list[str]:
    lines = ["## At the paper's depth: a 12-layer backbone (issue #26)", ""]
    if section["state"] == "not run yet":
        return lines + [not_run_yet_line(section), ""]
    spec = section["spec"]
    methods = section["methods"]
    lines += [grid_status_text(section) + f". Backbone `{section['backbone']}`, exits after layers {section['exit_layers']}, {spec['n_train']} "
              f"training examples per seed, {spec['epochs']} epoch(s), seeds {spec['seeds']}, learning rate(s) "
              f"{', '.join(f'{x:g}' for x in spec.get('learning_rates') or [])}. Cells: mean over seeds ± the "
              "half-width of the 95% confidence interval (SD over seeds). " + FLOOR_LEGEND, ""]
    avg = section["average"]
    if avg:
        scope = section["average_scope"]
        lines += [f"### Individual exits, average over {task_list(scope['tasks'])} (Table 1 rows)", "",
                  f"The methods that ran every task ({', '.join(method_label(m) for m in scope['methods'])}); per seed "
                  f"the mean over tasks, then the interval over seeds {', '.join(map(str, scope['seeds']))}.", "",
                  *exit_table(avg, scope["methods"]), "", "At the fixed costs:", "",
                  *interp_table(avg, scope["methods"]), ""]
    for task, by_method in section["per_task"].items():
        first = next(iter(by_method.values()))
        lines += [f"### {TASK_LABELS.get(task, task)}", "",
                  f"{metric_label(first['metric'])} on the {first['evaluation_split']} split ({first['n_examples']} "
                  "examples). Individual exits (Table 1 rows):", "", *exit_table(by_method, methods), "",
                  "At the fixed costs:", "", *interp_table(by_method, methods), ""]
    cov = section["claim_coverage"]
    lines += ["### Which of the paper's claims this grid can judge", ""]
    for c in cov:
        if c["judged"]:
            lines.append(f"- {c['claim']}: judged (*{c['verdict']}*)"
                         + (f"; {'; '.join(c['notes'])}" if c["notes"] else "") + ".")
        else:
            lines.append(f"- {c['claim']}: **not judged**: {c['why']}.")
    lines.append("")
    if section["paper_claims"]:
        lines += [line.replace("## ", "### ", 1) if line.startswith("## ") else line
                  for line in claims_markdown(section["paper_claims"])]
    return lines

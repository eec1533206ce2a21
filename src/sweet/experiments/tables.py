"""The report's Markdown: :func:`render_markdown` lays out the page, with the sections of its own (the size sweep,
the chosen learning rates, the comparison with the better of Early-Exit and SWEET, provenance); the cells and the
shared tables are in :mod:`~sweet.experiments.cells`, the floors and claims in
:mod:`~sweet.experiments.claims_tables`."""

from __future__ import annotations

from ..methods import SELECTED_ALPHA, method_label
from .ablation import ablation_markdown
from .base_depth import base_depth_markdown
from .beyond import beyond_markdown, versus_paired_lines
from .cells import (
    FLOOR_LEGEND,
    TASK_LABELS,
    average_tables,
    cost_label,
    exit_table,
    fmt,
    fmt_gap,
    gap_label,
    interp_table,
    md_table,
    metric_label,
    task_list,
)
from .claims_tables import claims_markdown, floors_markdown
from .moved import moved_markdown
from .spec import GridSpec, lr_selection_seed, spec_to_toml
from .store import machine_label

REPORT_MD = "report.md"
REPORT_JSON = "report.json"  # every number of the report
__all__ = ["REPORT_JSON", "REPORT_MD", "TASK_LABELS", "cost_label", "gap_label", "metric_label", "render_markdown"]


def _size_sweep_markdown(sweep: dict, figures: dict[str, str], methods: list[str]) -> list[str]:
    sizes = sweep["sizes"]
    lines = ["## Training-set size sweep (Appendix)", "",
             f"The same comparison at {len(sizes)} training sizes: {', '.join(str(n) for n in sizes)} examples "
             "per seed. The learning rate is chosen per task, method and size on the calibration split. The "
             f"sections after this one are at the largest size, {sweep['main_size']}.", ""]
    tasks = list(dict.fromkeys(t for ps in sweep["per_size"] for t in ps["per_task"]))
    for task in tasks:
        label = TASK_LABELS.get(task, task)
        rows, layers = [], None
        for ps in sweep["per_size"]:
            by_method = ps["per_task"].get(task, {})
            for m in methods:
                if m in by_method:
                    layers = layers or by_method[m]["exit_layers"]
                    rows.append([str(ps["n_train"]), method_label(m)] + [fmt(p) for p in by_method[m]["per_exit"]])
        lines += [f"### {label}: individual exits per training size", "",
                  *md_table(["size", "method"] + [f"exit L{x}" for x in layers or []], rows), ""]
        drawn = {n for ps in sweep["per_size"] for by_m in ps["per_task"].get(task, {}).values()
                 for n in by_m["n_train_drawn"]} - set(sizes) - {None}
        if drawn:
            lines += [f"**Note**: some runs drew fewer examples than their size ({', '.join(map(str, sorted(drawn)))}): "
                      "the pool is smaller than that size.", ""]
        points = sweep["gaps"].get(task)
        if not points:
            continue
        gap_layers = list(dict.fromkeys(p["exit_layer"] for p in points))
        at = {(p["method"], p["n_train"], p["exit_layer"]): p for p in points}
        gap_rows = [[str(n), gap_label(m)] + [fmt_gap(at.get((m, n, x))) for x in gap_layers]
                    for m in dict.fromkeys(p["method"] for p in points) for n in sizes
                    if any((m, n, x) in at for x in gap_layers)]
        lines += [f"### {label}: gap to Early-Exit per exit (percentage points)", "",
                  "Per seed, the method's score minus Early-Exit's at the same exit (the same seed draws the same "
                  "training sample for every method); the mean over seeds ± the half-width of the 95% confidence "
                  "interval of those paired differences. Positive: better than Early-Exit.", "",
                  *md_table(["size", "gap"] + [f"exit L{x}" for x in gap_layers], gap_rows), ""]
        if f"gap-{task}" in figures:
            lines += [f"![{task}: gap to Early-Exit vs training size]({figures[f'gap-{task}']})", ""]
    return lines


def _scope_note(report: dict) -> str:
    """For a partial grid: which tasks and seeds the averages (and the comparisons below them) are over."""
    scope = report.get("average_scope") or {}
    if not scope.get("left_out"):
        return ""
    left = ", ".join(TASK_LABELS.get(t, t) for t in scope["left_out"])
    seeds = ", ".join(map(str, scope["seeds"]))
    return (f" **Partial grid:** the averages, the comparisons and the claims below are over the tasks where every "
            f"method has finished every seed of the grid (or, before any task has, the seeds they all share; here: "
            f"{seeds}); left out: {left} (see *Per task*).")


def _candidate_cell(value: str, candidate: dict, chosen: bool) -> str:
    """One candidate of a selection on the calibration split: 'VALUE: mean AUC', bold if it was chosen."""
    auc = candidate["mean_selection_auc"]
    text = f"{value}: " + ("n/a" if auc is None else f"{auc:.2f}") + ("" if candidate["eligible"] else " (incomplete)")
    return f"**{text}**" if chosen else text


def render_markdown(report: dict, figures: dict[str, str]) -> str:
    """report.md from report.json, written top to bottom, one section after another, in the order a reader meets
    them (long on purpose: splitting it would scatter the page's order over many functions)."""
    spec = report["grid"]["spec"]
    prov = report["provenance"]
    methods = [m for m in report["methods"] if m in report["average"]]
    status = report["status"]
    selecting_seed = lr_selection_seed(spec)  # None: the mean over seeds chose the rates
    sweep = report.get("size_sweep")
    lines = [f"# Grid report: {report['grid']['name']}", ""]
    cmds = [x["command"] for x in prov["launches"] if x.get("command")]
    if cmds:
        lines += ["Produced by (grid launches, in order):", "", "```bash", *dict.fromkeys(cmds), "```", ""]
    if prov.get("report_command"):
        lines += ["Report: `" + prov["report_command"] + "`", ""]
    lines += [
        f"- Runs: {status['n_finished']} of {status['n_runs']} finished"
        + ("" if not status["missing"] else f" (**incomplete**: {len(status['missing'])} missing)") + ".",
        f"- Grid wall time: {prov['grid_wall_seconds'] / 60:.1f} min over {len(prov['launches'])} launch(es) on "
        f"{len(prov.get('machines') or [])} machine(s); "
        f"sum of run times: {prov['run_seconds_total'] / 60:.1f} min.",
        f"- Backbone `{spec['backbone']}`, exits after layers "
        f"{spec['exit_layers'] or next(iter(next(iter(report['per_task'].values())).values()))['exit_layers']}, "
        + (f"training sizes {', '.join(str(n) for n in sweep['sizes'])} per seed (a size sweep; outside its section "
           f"the tables are at the largest size, {sweep['main_size']})" if sweep else
           f"{spec['n_train']} training examples per seed")
        + f", {spec['epochs']} epoch(s), seeds {spec['seeds']}, "
        f"learning rates {', '.join(f'{x:g}' for x in spec['learning_rates'])}.",
        "- Scores in percent: accuracy, CoLA Matthews correlation x100. Each cell is the mean over seeds "
        "± the half-width of the 95% confidence interval (t-distribution over seeds), then in parentheses the standard "
        "deviation over seeds (SD), as in the paper's tables. Averages over tasks also have an interval with tasks "
        "as the unit.",
        "- " + FLOOR_LEGEND,
        f"- The learning rate is chosen per task{', method and training size' if sweep else ' and method'} by the "
        "area under the speed-accuracy curve on the "
        "held-out calibration split (never the reported split); only runs at the chosen rate enter the tables. "
        + (f"Rule: only the first seed ({selecting_seed}) ran every rate, and the rate is chosen on its AUC alone; "
           "the other seeds ran at the chosen rate only." if selecting_seed is not None else
           "Rule: every seed ran every rate; the mean AUC over seeds decides."),
        "",
        *(_size_sweep_markdown(sweep, figures, report["methods"]) if sweep else []),
        *average_tables(report["average"], methods,
                         f"Tasks: {task_list(next(iter(report['average'].values()))['tasks'])}." + _scope_note(report)),
    ]
    if "average" in figures:
        lines += [f"![average over tasks]({figures['average']})", ""]
    if report.get("ablation"):
        lines += ablation_markdown(report["ablation"])
    if report.get("floors"):
        lines += floors_markdown(report, methods)
    if report.get("versus_best"):
        lines += _versus_markdown(report["versus_best"])
    if report.get("paper_claims"):
        lines += claims_markdown(report["paper_claims"], report.get("floor_free"), report.get("floors"))
    if report.get("moved"):
        lines += moved_markdown(report["moved"])
    if report.get("base_depth"):
        lines += base_depth_markdown(report["base_depth"])
    if report.get("beyond"):
        lines += beyond_markdown(report["beyond"])
    lines += ["## Per task", ""]
    for task, by_method in report["per_task"].items():
        first = next(iter(by_method.values()))
        lines += [f"### {TASK_LABELS.get(task, task)}", "",
                  f"{metric_label(first['metric'])} on the {first['evaluation_split']} split "
                  f"({first['n_examples']} examples).", "", "Individual exits:", "",
                  *exit_table(by_method, methods), "", "At fixed cost ratios:", "",
                  *interp_table(by_method, methods), ""]
        if task in figures:
            lines += [f"![{task}]({figures[task]})", ""]
    at_top = {(sel["task"], sel["method"], sel.get("n_train")): sel.get("at_top") for sel in report["learning_rates"]}

    def rate(by_method: dict, task: str, m: str, size: int | None = None) -> str:  # ↑: the top of the rates searched
        if m not in by_method:
            return "n/a"
        entry = by_method[m]
        return f"{entry['learning_rate']:g}" + (" ↑" if at_top.get((task, entry.get("selected_method", m), size)) else "")

    if sweep:  # one row per task and training size
        lr_table = md_table(["task", "size"] + [method_label(m) for m in methods],
                          [[TASK_LABELS.get(t, t), str(ps["n_train"])]
                           + [rate(ps["per_task"][t], t, m, ps["n_train"]) for m in methods]
                           for t in report["per_task"] for ps in sweep["per_size"] if t in ps["per_task"]])
    else:
        lr_table = md_table(["task"] + [method_label(m) for m in methods],
                          [[TASK_LABELS.get(t, t)] + [rate(report["per_task"][t], t, m) for m in methods]
                           for t in report["per_task"]])
    n_top = sum(1 for sel in report["learning_rates"] if sel.get("at_top"))
    lines += ["## Chosen learning rates (Table 2)", "",
              *lr_table, "",
              f"↑: the chosen rate is the top of the rates searched for that cell (here {n_top} of "
              f"{len(report['learning_rates'])} choices): a higher rate was not tried and might do better.",
              "", "Selection AUC (calibration split, " + (f"seed {selecting_seed}" if selecting_seed is not None
                                                   else "mean over seeds") + ") for every candidate; the chosen one in bold:", ""]
    rows = []
    for sel in report["learning_rates"]:
        cells = [_candidate_cell(f"{c['learning_rate']:g}", c, c["learning_rate"] == sel["chosen"])
                 for c in sel["candidates"]]
        rows.append([TASK_LABELS.get(sel["task"], sel["task"])] + ([str(sel["n_train"])] if sweep else [])
                    + [method_label(sel["method"]), "; ".join(cells)])
    lines += md_table(["task"] + (["size"] if sweep else []) + ["method", "candidates"], rows)
    if report.get("alpha_selection"):
        lines += ["", "## Gradient scale α chosen on the calibration split (`grad_scale@selected`)", "",
                  "Per task" + (" and training size" if sweep else "") + ", the method on the gradient-scaling line "
                  "(SWEET = α 0, `grad_scale@α`, Early-Exit = α 1; each at its chosen learning rate) with the highest "
                  "selection AUC (calibration split, mean over seeds); ties go to the smaller α. Its runs are the "
                  f"`{method_label(SELECTED_ALPHA)}` rows above. The chosen one in bold:", ""]
        rows = []
        for pick in report["alpha_selection"]:
            cells = [_candidate_cell(f"{c['alpha']:g}", c, c["method"] == pick["chosen"]) for c in pick["candidates"]]
            rows.append([TASK_LABELS.get(pick["task"], pick["task"])] + ([str(pick["n_train"])] if sweep else [])
                        + [f"{pick['alpha']:g} ({method_label(pick['chosen'])})", "; ".join(cells)])
        lines += md_table(["task"] + (["size"] if sweep else []) + ["chosen α", "candidates (α: selection AUC)"], rows)
    lines += ["", "## Provenance", "", "Spec (`spec.toml` in the grid directory):", "", "```toml"]
    lines += [spec_to_toml(GridSpec(**spec)).rstrip(), "```", "", "Data files:", ""]
    for task, files in prov["data_files"].items():
        for role, f in files.items():
            if isinstance(f, dict):
                lines.append(f"- {TASK_LABELS.get(task, task)} {role}: `{f['path']}` (sha256 `{(f['sha256'] or '')[:16]}…`)")
            else:
                lines.append(f"- {TASK_LABELS.get(task, task)}: {role} {f}")
    lines += ["", "Software of the runs:", ""]
    for env in prov["run_environments"]:
        lines.append("- " + ", ".join(f"{k} {v}" for k, v in env.items()))
    secs = prov.get("mean_run_seconds", {})
    methods = [m for m in methods if m != SELECTED_ALPHA]  # its runs are another method's: timed there
    if sweep and prov.get("mean_run_seconds_by_size"):
        lines += ["", "Mean wall time of one run (seconds; training, calibration, evaluation, saving):", ""]
        lines += md_table(["task", "size"] + [method_label(m) for m in methods],
                        [[TASK_LABELS.get(t, t), str(x["n_train"])]
                         + [f"{x['mean_seconds'][m]:.0f}" if m in x["mean_seconds"] else "n/a" for m in methods]
                         for t, rows_t in prov["mean_run_seconds_by_size"].items() for x in rows_t])
    elif secs:
        lines += ["", "Mean wall time of one run (seconds; training, calibration, evaluation, saving):", ""]
        lines += md_table(["task"] + [method_label(m) for m in methods],
                        [[TASK_LABELS.get(t, t)] + [f"{secs[t][m]:.0f}" if m in secs[t] else "n/a" for m in methods]
                         for t in secs])
    lines += ["", "Launches:", ""]
    for x in prov["launches"]:
        lines.append(f"- {x.get('started')} → {x.get('finished') or x.get('last_update')} ({x.get('status')}), "
                     f"back-end {x.get('backend')}: {x.get('executed')} run(s) executed, {x.get('skipped')} already "
                     f"finished, wall {float(x.get('wall_seconds') or 0) / 60:.1f} min"
                     + (f", on {machine_label(x['machine'])}: {x['machine']['cpus']} CPUs ({x['machine']['cpu']}"
                        + (f"; GPU {x['machine']['gpu']}" if x['machine'].get('gpu') else "") + ")"
                        if x.get("machine") else "")
                     + (f", code {x['code']['commit'][:7]}" + (" with uncommitted changes" if x["code"].get("dirty")
                                                               else "")
                        if (x.get("code") or {}).get("commit") else ""))
    runs = report["grid"].get("runs_from_report")
    runs = f"[{runs}/]({runs}/)" if runs else f"`{report['grid']['grid_dir']}/runs/`"
    lines += ["", f"Per-run files (config, splits, training log, model, metrics): {runs}. "
              f"All numbers above: `{REPORT_JSON}`.", ""]
    return "\n".join(lines)


def _versus_markdown(vs: dict) -> list[str]:
    costs = vs["cost_ratios"]
    head = ["method"] + [cost_label(c) for c in costs] + ["AUC", "never worse?"]
    gap_rows = []
    for m, d in vs["methods"].items():
        def gap(p):
            g = p.get("gap_to_best")
            return "–" if g is None else (f"**{g:+.1f}**" if g >= 0 else f"{g:+.1f}")
        gap_rows.append([method_label(m)] + [gap(p) for p in d["points"]] + [gap(d["auc"]),
                        "yes" if d["never_worse"] else "no"])
    return [
        "## Against the better of Early-Exit and SWEET",
        "",
        "Each method's mean score (over seeds, averaged over tasks) minus the better of the EE and SWEET means at the "
        "same cost, in points; bold where it is at least as good as both. A row bold everywhere is a method never "
        "worse than either at any cost.",
        "",
        *md_table(head, gap_rows),
        "",
        *versus_paired_lines(vs),
    ]

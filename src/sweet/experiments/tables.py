"""The report's Markdown: number formatting, tables (Table 1, fixed costs, chosen learning rates, the comparison
with the better of Early-Exit and SWEET, the size sweep) and :func:`render_markdown`, which lays out the page."""

from __future__ import annotations

from fractions import Fraction

from ..methods import SELECTED_ALPHA, method_label
from .aggregate import GAP_BASELINE
from .spec import GridSpec, lr_selection_seed, spec_to_toml
from .store import machine_label

REPORT_MD = "report.md"
REPORT_JSON = "report.json"  # every number of the report
TASK_LABELS = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "mnli": "MNLI", "qnli": "QNLI", "qqp": "QQP",
               "rte": "RTE"}


def _fmt(stats: dict | None, digits: int = 1, sign: str = "") -> str:
    """Mean ± CI half-width (just the mean with one seed); ``sign="+"`` writes the sign of a difference."""
    if not stats or stats.get("mean") is None:
        return "n/a"
    mean = f"{stats['mean']:{sign}.{digits}f}"
    return mean if stats.get("ci") is None else f"{mean} ± {stats['ci']:.{digits}f}"


def cost_label(c: float) -> str:
    f = Fraction(c).limit_denominator(24)
    if abs(float(f) - c) > 1e-9:
        return f"{c:.3f}"
    if f.denominator == 1:
        return str(f.numerator)
    if f > 1:
        whole = f.numerator // f.denominator
        rest = f - whole
        return f"{whole} {rest.numerator}/{rest.denominator}"
    return f"{f.numerator}/{f.denominator}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _exit_table(by_method: dict, methods: list[str]) -> list[str]:
    layers = next(iter(by_method.values()))["per_exit"]
    header = ["method"] + [f"exit L{p['exit_layer']}" for p in layers]
    rows = [[method_label(m)] + [_fmt(p) for p in by_method[m]["per_exit"]] for m in methods if m in by_method]
    return _table(header, rows)


def _interp_table(by_method: dict, methods: list[str]) -> list[str]:
    costs = sorted({q["cost_ratio"] for m in by_method.values() for q in m["interpolated"]})
    header = ["method"] + [f"cost {cost_label(c)}" for c in costs] + ["AUC"]
    rows = []
    for m in methods:
        if m not in by_method:
            continue
        at = {q["cost_ratio"]: q for q in by_method[m]["interpolated"]}
        rows.append([method_label(m)] + [_fmt(at.get(c)) if c in at else "–" for c in costs]
                    + [_fmt(by_method[m]["auc"])])
    return _table(header, rows)


def _fmt_gap(stats: dict | None, digits: int = 1) -> str:
    """A difference: signed mean ± CI half-width."""
    return _fmt(stats, digits, sign="+")


def gap_label(method: str, baseline: str = GAP_BASELINE) -> str:
    return f"{method_label(method)} − {method_label(baseline)}"


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
                    rows.append([str(ps["n_train"]), method_label(m)] + [_fmt(p) for p in by_method[m]["per_exit"]])
        lines += [f"### {label}: individual exits per training size", "",
                  *_table(["size", "method"] + [f"exit L{x}" for x in layers or []], rows), ""]
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
        gap_rows = [[str(n), gap_label(m)] + [_fmt_gap(at.get((m, n, x))) for x in gap_layers]
                    for m in dict.fromkeys(p["method"] for p in points) for n in sizes
                    if any((m, n, x) in at for x in gap_layers)]
        lines += [f"### {label}: gap to Early-Exit per exit (percentage points)", "",
                  "Per seed, the method's score minus Early-Exit's at the same exit (the same seed draws the same "
                  "training sample for every method); the mean over seeds ± the half-width of the 95% confidence "
                  "interval of those paired differences. Positive: better than Early-Exit.", "",
                  *_table(["size", "gap"] + [f"exit L{x}" for x in gap_layers], gap_rows), ""]
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


def metric_label(metric: str) -> str:
    return {"accuracy": "accuracy (%)", "matthews": "Matthews corr. (x100)"}.get(metric, metric)


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
        "± the half-width of the 95% confidence interval (t-distribution over seeds).",
        f"- The learning rate is chosen per task{', method and training size' if sweep else ' and method'} by the "
        "area under the speed-accuracy curve on the "
        "held-out calibration split (never the reported split); only runs at the chosen rate enter the tables. "
        + (f"Rule: only the first seed ({selecting_seed}) ran every rate, and the rate is chosen on its AUC alone; "
           "the other seeds ran at the chosen rate only." if selecting_seed is not None else
           "Rule: every seed ran every rate; the mean AUC over seeds decides."),
        "",
        *(_size_sweep_markdown(sweep, figures, report["methods"]) if sweep else []),
        "## Individual exit scores, average over tasks (Table 1)",
        "",
        f"Tasks: {', '.join(TASK_LABELS.get(t, t) for t in next(iter(report['average'].values()))['tasks'])}. "
        "Per seed, the mean over tasks; then the interval over seeds."
        + _scope_note(report),
        "",
        *_exit_table(report["average"], methods),
        "",
        "## Scores at fixed cost ratios, average over tasks (Figures 4/5)",
        "",
        "The speed-accuracy curve (confidence-based early exit, calibrated, 11 thresholds) linearly interpolated "
        "at fixed cost ratios. Multi-Model pays for every model it runs, so it reaches costs above 1. "
        "AUC: the mean score over costs from the first exit to 1.",
        "",
        *_interp_table(report["average"], methods),
        "",
    ]
    if "average" in figures:
        lines += [f"![average over tasks]({figures['average']})", ""]
    if report.get("versus_best"):
        lines += _versus_markdown(report["versus_best"])
    if report.get("paper_claims"):
        lines += _claims_markdown(report["paper_claims"])
    lines += ["## Per task", ""]
    for task, by_method in report["per_task"].items():
        first = next(iter(by_method.values()))
        lines += [f"### {TASK_LABELS.get(task, task)}", "",
                  f"{metric_label(first['metric'])} on the {first['evaluation_split']} split "
                  f"({first['n_examples']} examples).", "", "Individual exits:", "",
                  *_exit_table(by_method, methods), "", "At fixed cost ratios:", "",
                  *_interp_table(by_method, methods), ""]
        if task in figures:
            lines += [f"![{task}]({figures[task]})", ""]
    if sweep:  # one row per task and training size
        lr_table = _table(["task", "size"] + [method_label(m) for m in methods],
                          [[TASK_LABELS.get(t, t), str(ps["n_train"])]
                           + [f"{ps['per_task'][t][m]['learning_rate']:g}" if m in ps["per_task"][t] else "n/a"
                              for m in methods]
                           for t in report["per_task"] for ps in sweep["per_size"] if t in ps["per_task"]])
    else:
        lr_table = _table(["task"] + [method_label(m) for m in methods],
                          [[TASK_LABELS.get(t, t)] + [f"{report['per_task'][t][m]['learning_rate']:g}"
                                                      if m in report["per_task"][t] else "n/a" for m in methods]
                           for t in report["per_task"]])
    lines += ["## Chosen learning rates (Table 2)", "",
              *lr_table,
              "", "Selection AUC (calibration split, " + (f"seed {selecting_seed}" if selecting_seed is not None
                                                   else "mean over seeds") + ") for every candidate; the chosen one in bold:", ""]
    rows = []
    for sel in report["learning_rates"]:
        cells = [_candidate_cell(f"{c['learning_rate']:g}", c, c["learning_rate"] == sel["chosen"])
                 for c in sel["candidates"]]
        rows.append([TASK_LABELS.get(sel["task"], sel["task"])] + ([str(sel["n_train"])] if sweep else [])
                    + [method_label(sel["method"]), "; ".join(cells)])
    lines += _table(["task"] + (["size"] if sweep else []) + ["method", "candidates"], rows)
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
        lines += _table(["task"] + (["size"] if sweep else []) + ["chosen α", "candidates (α: selection AUC)"], rows)
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
        lines += _table(["task", "size"] + [method_label(m) for m in methods],
                        [[TASK_LABELS.get(t, t), str(x["n_train"])]
                         + [f"{x['mean_seconds'][m]:.0f}" if m in x["mean_seconds"] else "n/a" for m in methods]
                         for t, rows_t in prov["mean_run_seconds_by_size"].items() for x in rows_t])
    elif secs:
        lines += ["", "Mean wall time of one run (seconds; training, calibration, evaluation, saving):", ""]
        lines += _table(["task"] + [method_label(m) for m in methods],
                        [[TASK_LABELS.get(t, t)] + [f"{secs[t][m]:.0f}" if m in secs[t] else "n/a" for m in methods]
                         for t in secs])
    lines += ["", "Launches:", ""]
    for x in prov["launches"]:
        lines.append(f"- {x.get('started')} → {x.get('finished') or x.get('last_update')} ({x.get('status')}), "
                     f"back-end {x.get('backend')}: {x.get('executed')} run(s) executed, {x.get('skipped')} already "
                     f"finished, wall {float(x.get('wall_seconds') or 0) / 60:.1f} min"
                     + (f", on {machine_label(x['machine'])}: {x['machine']['cpus']} CPUs ({x['machine']['cpu']}"
                        + (f"; GPU {x['machine']['gpu']}" if x['machine'].get('gpu') else "") + ")"
                        if x.get("machine") else ""))
    runs = report["grid"].get("runs_from_report")
    runs = f"[{runs}/]({runs}/)" if runs else f"`{report['grid']['grid_dir']}/runs/`"
    lines += ["", f"Per-run files (config, splits, training log, model, metrics): {runs}. "
              f"All numbers above: `{REPORT_JSON}`.", ""]
    return "\n".join(lines)


def _claims_markdown(pc: dict) -> list[str]:
    """The paper's claims, each with our paired gap (mean ± CI over seeds) and a verdict; then the paired gaps per
    exit and per fixed cost for every pair of methods the claims compare."""
    rows = [[c["claim"], f"{method_label(c['a'])} − {method_label(c['b'])}", c["over"], c["paper"],
             _fmt_gap(c["gap"], 2), f"{len(c['seeds'])} seed(s), {len(c['tasks'])} task(s)", c["verdict"]]
            for c in pc["claims"]]
    lines = ["## The paper's claims, checked", "",
             "Per seed, the mean over tasks of method A's score minus method B's (the same seed draws the same "
             "training sample for both); then the mean over seeds ± the half-width of the 95% t-interval. "
             "Verdict: *supported* where the interval lies on the claimed side of 0, *contradicted* where it lies "
             "on the other side, *inconclusive* where it contains 0; a \"comparable or better\" claim is *supported* "
             "unless the whole interval lies below 0. Fast speeds: cost ratio ≤ 1/2; slow: 3/4 to 1. "
             "The paper's numbers are for BERT and DeBERTa BASE/LARGE (12/24 layers) with the GLUE validation "
             "sets; ours are for this grid's backbone and splits.", "",
             *_table(["claim", "gap", "over", "paper", "ours (points)", "n", "verdict"], rows), ""]
    for g in pc["pairs"]:
        label = f"{method_label(g['a'])} − {method_label(g['b'])}"
        head = [f"exit L{p['exit_layer']}" for p in g["per_exit"]] + [f"cost {cost_label(p['cost_ratio'])}"
                                                                       for p in g["per_cost"]]
        cells = [_fmt_gap(p, 2) for p in g["per_exit"]] + [_fmt_gap(p, 2) for p in g["per_cost"]]
        lines += [f"Paired gap {label} (points; {len(g['seeds'])} seed(s), tasks: "
                  f"{', '.join(TASK_LABELS.get(t, t) for t in g['tasks'])}):", "", *_table(head, [cells]), ""]
    return lines


def _versus_markdown(vs: dict) -> list[str]:
    costs = vs["cost_ratios"]
    head = ["method"] + [cost_label(c) for c in costs] + ["AUC", "never worse?"]
    gap_rows, ee_rows, sw_rows = [], [], []
    for m, d in vs["methods"].items():
        def gap(p):
            g = p.get("gap_to_best")
            return "–" if g is None else (f"**{g:+.1f}**" if g >= 0 else f"{g:+.1f}")
        gap_rows.append([method_label(m)] + [gap(p) for p in d["points"]] + [gap(d["auc"]),
                        "yes" if d["never_worse"] else "no"])
        ee_rows.append([method_label(m)] + [_fmt_gap(p["vs_early_exit"]) for p in d["points"]] + [_fmt_gap(d["auc"]["vs_early_exit"])])
        sw_rows.append([method_label(m)] + [_fmt_gap(p["vs_sweet"]) for p in d["points"]] + [_fmt_gap(d["auc"]["vs_sweet"])])
    return [
        "## Against the better of Early-Exit and SWEET",
        "",
        "Each method's mean score (over seeds, averaged over tasks) minus the better of the EE and SWEET means at the "
        "same cost, in points; bold where it is at least as good as both. A row bold everywhere is a method never "
        "worse than either at any cost.",
        "",
        *_table(head, gap_rows),
        "",
        "Paired differences per seed (same seed = same training sample), mean ± 95% CI half-width over seeds, "
        "against Early-Exit:",
        "",
        *_table(head[:-1], ee_rows),
        "",
        "and against SWEET:",
        "",
        *_table(head[:-1], sw_rows),
        "",
    ]


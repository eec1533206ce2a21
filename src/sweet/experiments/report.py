"""The grid report: collect a grid's finished runs, select, aggregate, write Markdown + JSON + PNG.

Every number is a mean over seeds with a 95% confidence interval from the t-distribution
(:func:`~sweet.experiments.aggregate.t_interval`): ``mean +- t_{0.975, n-1} * s / sqrt(n)``, ``s`` the sample
standard deviation (reported too, as the paper's tables do).
Averages over tasks are taken per seed first (the mean over tasks of seed *s*'s scores), then the
interval is over those per-seed averages, so it is still an interval over seeds. Each average and each claim
also has an interval with tasks as the unit (over the per-task means, df = tasks - 1).

Floor cells (:mod:`~sweet.experiments.floors`: an exit that predicts one class on a seed, or sits within one
binomial standard error of the majority rate) are marked, and the averages and claims are repeated over the
tasks where no method has one (``floor_free`` in the JSON). A learning rate chosen at the top of the searched
set is flagged (``at_top``).

Only runs at the chosen learning rate enter the tables; the learning rate is chosen per (task, method,
backbone) on the calibration split (:func:`~sweet.experiments.selection.select_learning_rates`): by the mean over
seeds, or in a grid with ``lr_selection = "first_seed"`` by the first seed alone.

Where a grid ran the gradient-scaling line (``grad_scale@ALPHA`` with ``sweet`` = 0 and/or ``early_exit`` = 1
beside it), the report adds one more row, ``grad_scale@selected``: per task, the alpha with the best
calibration-split AUC (:func:`~sweet.experiments.selection.select_alpha`), scored like any other method. It is
what a user who picks alpha on held-out data gets, and the tables hold it to the same standard (``alpha_selection`` in the
JSON lists every candidate).

A training-set size sweep (``n_train`` a list in the spec) chooses the learning rate per (task, method,
backbone, size) and adds a section (``size_sweep`` in the JSON): per size the per-exit scores, and per exit
the gap of every other method (SWEET, Multi-Model) to Early-Exit -- the per-seed paired difference in
percentage points, mean and t-interval over seeds -- with a plot of the gap against the size. The other
tables are at the largest size.

The paper grid's report (and any report given ``siblings``) has three more sections, each fed by a grid of its own
(:mod:`~sweet.experiments.gridload`): the ladder ablation (:mod:`~sweet.experiments.ablation`, paired by seed with
this grid's runs), the paper's depth (:mod:`~sweet.experiments.base_depth`) and the methods beyond the paper
(:mod:`~sweet.experiments.beyond`, held against this grid's EE and SWEET). A section whose grid has no finished run
says "not run yet".

A grid whose learning rates were extended (its launch records give an earlier ``--lrs`` set) gets a section on what
moved (:mod:`~sweet.experiments.moved`, ``moved`` in the JSON): every claim judged with the rates chosen from the
earlier set and from the full set, from the same run directories, and each task's contribution to each change.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
from pathlib import Path

from ..io import atomic_write_json, atomic_write_text, read_json
from ..methods import SELECTED_ALPHA
from .ablation import build_ablation
from .aggregate import (
    CONFIDENCE,
    average_over_tasks,
    chosen_runs,
    is_size_sweep,
    method_summary,
    selection_key,
    size_sweep,
    versus_best,
)
from .base_depth import build_base_depth
from .beyond import build_beyond
from .claims import check_claims
from .floors import HOW as FLOORS_HOW
from .floors import evaluation_classes, floor_free_tasks, mark_floors
from .gridload import (
    SIBLINGS,
    choose_learning_rates,
    collect,
    load_sibling,
    runs_link,
    sibling_grid_dirs,
)
from .moved import moved_section
from .plots import plot_curves, plot_gaps
from .selection import select_alpha
from .spec import task_entry_name
from .store import LAUNCHES_FILE, machine_label
from .tables import REPORT_JSON, REPORT_MD, TASK_LABELS, metric_label, render_markdown


def build_report(grid_dir: str | Path, partial: bool = False, command: str | None = None,
                 siblings: dict[str, str | Path | None] | None = None) -> dict:
    """Everything the report shows, as one JSON-able dict. ``siblings``: the grid directory of each extra section
    (keys of :data:`~sweet.experiments.gridload.SIBLINGS`; default: for the paper grid, the sibling directories).

    Long on purpose: it assembles report.json in the order the report reads (status, selection, tables, claims, provenance)."""
    grid_dir = Path(grid_dir)
    grid, records, missing = collect(grid_dir, partial)
    spec = grid["spec"]
    sized = is_size_sweep(spec)
    selection = choose_learning_rates(records, spec)
    methods = [m for m in spec["methods"] if any(r["method"] == m for r in records)]
    tasks = [t for t in map(task_entry_name, spec["tasks"]) if any(r["task"] == t for r in records)]

    sizes = sorted({r["n_train"] for r in records}) if sized else [None]
    chosen_by_size = {size: chosen_runs(records, selection, size) for size in sizes}
    alpha_selection = []
    for size, chosen in chosen_by_size.items():  # grad_scale@selected: the runs of the alpha chosen per task
        for task, pick in select_alpha(chosen).items():
            chosen[(task, SELECTED_ALPHA)] = chosen[(task, pick["chosen"])]
            alpha_selection.append(pick | ({"n_train": size} if sized else {}))
    if alpha_selection:
        methods.append(SELECTED_ALPHA)
    chosen = chosen_by_size[sizes[-1]]  # the main tables: the (largest) size

    per_task: dict[str, dict] = {}
    for task in tasks:
        per_task[task] = {}
        for method in methods:
            runs = chosen.get((task, method))
            if not runs:
                continue
            sel = selection[selection_key(task, runs[0]["method"], runs[0]["backbone"], sizes[-1])]
            per_task[task][method] = method_summary(runs, sel["chosen"], sel["at_top"],
                                                    runs[0]["method"] if method == SELECTED_ALPHA else None)

    # averages compare like with like: the tasks where every method has every seed of the grid (in a finished grid:
    # all of them). In a partial grid the unfinished tasks are left out and named; a task that has only its first
    # seed so far must not shrink the others' averages to that seed. Before any task has every seed: the tasks
    # where every method has runs, and the seeds they all have there.
    grid_seeds = set(spec["seeds"])
    avg_tasks = ([t for t in tasks if all(m in per_task[t] and grid_seeds <= set(per_task[t][m]["seeds"])
                                          for m in methods)]
                 or [t for t in tasks if all(m in per_task[t] for m in methods)] or tasks)
    shared = [set(per_task[t][m]["seeds"]) for t in avg_tasks for m in methods if m in per_task[t]]
    avg_seeds = sorted(set.intersection(*shared)) if shared else []
    average = average_over_tasks(per_task, chosen, avg_tasks, methods, seeds=avg_seeds or None)
    floors = mark_floors(per_task, evaluation_classes(grid_dir, records, tasks))
    free = floor_free_tasks(floors, avg_tasks)
    versus = versus_best(chosen, avg_tasks, methods)
    report = {
        "grid": {"name": spec["name"], "grid_dir": str(grid_dir), "spec": spec},
        "methods": methods,
        "status": {"n_runs": len(records) + len(missing), "n_finished": len(records), "missing": missing},
        "confidence": CONFIDENCE,
        "interval": "two-sided t-distribution over seeds: mean +- t(0.975, n-1) * sd / sqrt(n)",
        "learning_rates": [
            {k: v for k, v in sel.items()} for sel in selection.values()
        ],
        **({"alpha_selection": alpha_selection} if alpha_selection else {}),
        "average": average,
        "average_scope": {"tasks": avg_tasks, "seeds": avg_seeds,
                          "left_out": [t for t in tasks if t not in avg_tasks]},
        "per_task": per_task,
        "floors": {"how": FLOORS_HOW, "tasks": floors, "floor_free_tasks": free,
                   "floor_tasks": [t for t in avg_tasks if t not in free]},
        "provenance": _provenance(grid_dir, grid, records, command),
    }
    if versus:
        report["versus_best"] = versus
    claims = check_claims(chosen, avg_tasks, seeds=avg_seeds or None)
    if claims:
        report["paper_claims"] = claims
    if free and free != avg_tasks:  # the averages and claims again, over the tasks where no method has a floor cell
        report["floor_free"] = {"tasks": free, "average": average_over_tasks(per_task, chosen, free, methods,
                                                                             seeds=avg_seeds or None)}
        free_claims = check_claims(chosen, free, seeds=avg_seeds or None)
        if free_claims:
            report["floor_free"]["paper_claims"] = free_claims
    # the claims judged with the rates chosen from the set the grid searched first, and what moved
    moved = moved_section(grid_dir, grid, records, selection, chosen, tasks, (avg_tasks, avg_seeds or None))
    if moved:
        report["moved"] = moved
    if sized:
        report["size_sweep"] = size_sweep(chosen_by_size, selection, tasks, methods)
    for key, where in sibling_grid_dirs(grid_dir, spec["name"], siblings).items():
        sibling = load_sibling(where, partial)
        report[key] = (build_ablation(chosen, sibling, where) if key == "ablation" else
                       build_base_depth(sibling, where) if key == "base_depth" else
                       build_beyond(chosen, avg_tasks, sibling, where))
    return report


def _provenance(grid_dir: Path, grid: dict, records: list[dict], command: str | None) -> dict:
    launches = read_json(grid_dir / LAUNCHES_FILE) if (grid_dir / LAUNCHES_FILE).is_file() else []
    envs = []
    for r in records:
        env = {k: v for k, v in r["_environment"].items() if k != "threads"}
        if env and env not in envs:
            envs.append(env)
    versions = {}
    for pkg in ("sweet", "torch", "transformers", "numpy", "scipy", "matplotlib", "ray"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    data = {}
    for task, info in grid.get("data", {}).items():
        files = info.get("files", {})
        data[task] = {role: {"path": path, "sha256": info.get("sha256", {}).get(role)} for role, path in files.items()} \
            or {"source": info.get("source")}
    compute = sum(r["timing"]["total_seconds"] for r in records)
    by_method: dict[str, dict[str, list[float]]] = {}
    for r in records:
        by_method.setdefault(r["task"], {}).setdefault(r["method"], []).append(r["timing"]["total_seconds"])
    return {
        "spec": grid["spec"],
        "seeds": grid["spec"]["seeds"],
        "data_files": data,
        "run_environments": envs,
        "report_environment": {"python": platform.python_version(), **versions},
        "launches": launches,
        "grid_wall_seconds": round(sum(float(x.get("wall_seconds") or 0) for x in launches), 1),
        # launches from before machines were recorded count as one unknown machine
        "machines": sorted({machine_label(x.get("machine")) for x in launches}),
        "run_seconds_total": round(compute, 1),
        "mean_run_seconds": {t: {m: round(sum(v) / len(v), 1) for m, v in ms.items()} for t, ms in by_method.items()},
        **({"mean_run_seconds_by_size": _mean_seconds_by_size(records)} if is_size_sweep(grid["spec"]) else {}),
        "report_command": command,
        "runs": sorted(r["_dir"] for r in records),
    }


def _mean_seconds_by_size(records: list[dict]) -> dict[str, list[dict]]:
    """A size sweep: task -> [{n_train, mean_seconds: {method: s}}], sizes ascending."""
    acc: dict[str, dict[int, dict[str, list[float]]]] = {}
    for r in records:
        acc.setdefault(r["task"], {}).setdefault(r["n_train"], {}).setdefault(r["method"], []).append(
            r["timing"]["total_seconds"])
    return {t: [{"n_train": n, "mean_seconds": {m: round(sum(v) / len(v), 1) for m, v in by_size[n].items()}}
                for n in sorted(by_size)] for t, by_size in acc.items()}


def write_report(grid_dir: str | Path, output: str | Path | None = None, partial: bool = False,
                 command: str | None = None, siblings: dict[str, str | Path | None] | None = None) -> dict:
    """Write report.md, report.json and one PNG per task (plus the average, and in a training-set size sweep
    one gap-vs-size PNG per task) into ``output`` (default: GRID_DIR/report). Returns the report dict.
    ``siblings``: the extra sections' grid directories (see :func:`build_report`)."""
    grid_dir = Path(grid_dir)
    out = Path(output) if output is not None else grid_dir / "report"
    report = build_report(grid_dir, partial=partial, command=command, siblings=siblings)
    # the report's link to the runs, relative to the report (a clone elsewhere, or a reader on GitHub, can follow it)
    report["grid"]["runs_from_report"] = os.path.relpath(grid_dir.resolve() / "runs", out.resolve())
    for key in SIBLINGS:
        if key in report:
            runs_link(report[key], out)
    figures = write_figures(report, out)
    report["figures"] = figures
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, render_markdown(report, figures))
    return report


def write_figures(report: dict, out: str | Path) -> dict[str, str]:
    """The report's PNGs into ``out``: one speed-accuracy figure per task, the average over tasks, and in a size
    sweep one gap-vs-size figure per task. Returns {task, 'average' or 'gap-TASK': file name}. Needs only the
    report dict (a stored report.json redraws its figures)."""
    out = Path(out)
    methods = report["methods"]
    figures: dict[str, str] = {}
    for task, by_method in report["per_task"].items():
        first = next(iter(by_method.values()))
        name = f"curve-{task}.png"
        plot_curves(by_method, methods, f"{TASK_LABELS.get(task, task)} ({first['evaluation_split']}, "
                    f"mean and 95% CI over {len(first['seeds'])} seeds)", metric_label(first["metric"]), out / name,
                    bounds=(0.0, 100.0) if first["metric"] == "accuracy" else (-100.0, 100.0))
        figures[task] = name
    if report["average"]:
        plot_curves(report["average"], methods, "average over tasks (mean and 95% CI over seeds)", "score", out /
                    "curve-average.png")
        figures["average"] = "curve-average.png"
    for task, points in report.get("size_sweep", {}).get("gaps", {}).items():
        n_seeds = max(p["n"] for p in points)
        name = f"gap-vs-size-{task}.png"
        plot_gaps(points, f"{TASK_LABELS.get(task, task)}: gap to Early-Exit per exit vs training size\n"
                  + (f"(mean and 95% CI over {n_seeds} seeds)" if n_seeds > 1 else "(one seed: no interval)"),
                  out / name)
        figures[f"gap-{task}"] = name
    return figures

"""How far `sweet tune --max-drop` lands on the evaluation split: the paper grid's Early-Exit and SWEET runs at their
chosen learning rates (what `sweet report`'s selection picks), every seed. Each run is tuned on its stored
calibration-split curve (metrics.json `selection`: the grid commits no weights) and the evaluation-split curve
(`evaluation`) is read at the chosen threshold, both as `sweet tune RUN --from-curve` does (sweet.tuning). Nothing
is written into the grid: the runs are read, the results go to OUT/README.md and OUT/tune.json.

    python benchmarks/tune_report.py docs/results/paper/grid --max-drop 1.0 --output docs/results/tune
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

from sweet.experiments.aggregate import chosen_runs
from sweet.experiments.report import collect
from sweet.experiments.selection import select_learning_rates
from sweet.experiments.spec import lr_selection_seed
from sweet.io import atomic_write_json, atomic_write_text
from sweet.tuning import Budget, tune_from_curves

METHODS = ("early_exit", "sweet")
LABELS = {"early_exit": "EE", "sweet": "SWEET"}


def _mean(per_seed: list[dict], key: str, split: str) -> float:
    return statistics.fmean(s[split][key] for s in per_seed)


def tune_grid(grid_dir: Path, budget: Budget) -> dict:
    grid, records, missing = collect(grid_dir, partial=True)
    for m in records:  # the manifest's backbone string is the grouping key, as in sweet report
        m["backbone"] = m["_backbone_spec"]
    selection = select_learning_rates(records, on_seed=lr_selection_seed(grid["spec"]))
    chosen = chosen_runs(records, selection, None)
    tasks = [t for t in grid["spec"]["tasks"] if isinstance(t, str)]
    rows = []
    for task in tasks:
        for method in METHODS:
            runs = chosen.get((task, method), [])
            per_seed = []
            for m in runs:
                r = tune_from_curves(m, budget)
                per_seed.append({"seed": m["seed"], "dir": m["_dir"], "threshold": r.threshold,
                                 "calibration": r.calibration, "evaluation": r.evaluation})
            if not per_seed:
                continue
            rows.append({"task": task, "method": method, "learning_rate": float(runs[0]["learning_rate"]),
                         "metric": runs[0]["evaluation"]["metric"], "seeds": [s["seed"] for s in per_seed],
                         "mean_threshold": statistics.fmean(s["threshold"] for s in per_seed),
                         "calibration_drop": _mean(per_seed, "drop", "calibration"), "calibration_cost": _mean(per_seed, "cost_ratio", "calibration"),
                         "evaluation_drop": _mean(per_seed, "drop", "evaluation"), "evaluation_cost": _mean(per_seed, "cost_ratio", "evaluation"),
                         "per_seed": per_seed})
    lo, hi = budget.max_drop - 1.0, budget.max_drop + 1.0
    for row in rows:
        row["within_target"] = lo <= row["evaluation_drop"] <= hi
    by_task, by_task_mean = {}, {}
    for task in tasks:
        task_rows = [r for r in rows if r["task"] == task]
        if task_rows:
            by_task[task] = all(r["within_target"] for r in task_rows)
            by_task_mean[task] = lo <= statistics.fmean(r["evaluation_drop"] for r in task_rows) <= hi
    return {"budget": budget.to_dict(), "target": {"evaluation_drop_in": [max(lo, 0.0), hi], "tasks_at_least": 6},
            "grid": str(grid_dir), "missing_runs": len(missing), "rows": rows,
            "rows_within_target": sum(r["within_target"] for r in rows),
            "tasks_within_target": by_task, "tasks_within_target_mean_of_methods": by_task_mean}


def render(report: dict, command: str) -> str:
    b = report["budget"]["max_drop"]
    lo, hi = report["target"]["evaluation_drop_in"]
    n_tasks = len(report["tasks_within_target"])
    ok = sum(report["tasks_within_target"].values())
    ok_mean = sum(report["tasks_within_target_mean_of_methods"].values())
    seeds = sorted({len(r["seeds"]) for r in report["rows"]})
    lines = ["# `sweet tune --max-drop` on the paper grid", "",
             f"Budget: at most **{b:g} point(s)** below the last exit, chosen on the calibration split. Target: the "
             f"evaluation split's drop, averaged over seeds, within [{lo:g}, {hi:g}] points on at least 6 of the 7 "
             "tasks. Where the drop lands:", "",
             f"- per task and method: **{report['rows_within_target']} of {len(report['rows'])}** (task, method) pairs "
             "within the target;",
             f"- per task, both EE and SWEET within it: **{ok} of {n_tasks} tasks** (target not met in this reading);"
             if ok < 6 else f"- per task, both EE and SWEET within it: **{ok} of {n_tasks} tasks**;",
             f"- per task, the mean of EE and SWEET within it: **{ok_mean} of {n_tasks} tasks**.", "",
             _misses(report["rows"], lo) + f"Seeds per row: {', '.join(map(str, seeds))} -- "
             + (f"the committed grid selects the rate on its first seed and {report['missing_runs']} of its runs (the "
                "other seeds at the chosen rates among them) are not finished yet; the table uses every finished seed "
                "at the rate `sweet report` chooses." if report["missing_runs"] else
                "the grid is finished: every seed at the rate `sweet report` chooses."), "",
             "Each run is tuned on its stored calibration-split curve (11 thresholds, linear between neighbouring "
             "thresholds) and the stored evaluation-split curve is read at the chosen threshold the same way: the "
             "grid commits no weights, so this is what `sweet tune RUN --from-curve` gives. The evaluation numbers "
             "are read off the curve, not measured at the exact threshold. Runs: Early-Exit and SWEET at the learning "
             "rate `sweet report`'s selection chooses (calibration-split AUC), every seed the grid has.", "",
             f"Made by `{command}`; numbers per seed in [tune.json](tune.json). One trained run tuned from its logits "
             "next to its stored curve: [sst2-run.md](sst2-run.md).", "",
             "| task | method | lr | seeds | mean threshold | calibration drop | calibration cost | evaluation drop | "
             "evaluation cost | evaluation drop per seed | in target |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        seeds = ", ".join(f"{s['evaluation']['drop']:+.2f}" for s in r["per_seed"])
        lines.append(f"| {r['task']} | {LABELS.get(r['method'], r['method'])} | {r['learning_rate']:g} | "
                     f"{len(r['seeds'])} | {r['mean_threshold']:.3f} | {r['calibration_drop']:.2f} | "
                     f"{r['calibration_cost']:.3f} | {r['evaluation_drop']:+.2f} | {r['evaluation_cost']:.3f} | {seeds} | "
                     f"{'yes' if r['within_target'] else 'no'} |")
    lines += ["", "Drop: the last exit's score minus the score at the threshold, in points of the task's metric "
              "(accuracy; CoLA: Matthews correlation x 100); negative means the threshold scored above the last exit. "
              "Cost: the cost ratio (1 = the full model for every example)."]
    return "\n".join(lines) + "\n"


def _misses(rows: list[dict], lo: float) -> str:
    misses = [r for r in rows if not r["within_target"]]
    if not misses:
        return ""
    safe = [r for r in misses if r["evaluation_drop"] < lo]
    names = ", ".join(f"{r['task']} {LABELS.get(r['method'], r['method'])} ({r['evaluation_drop']:+.2f})" for r in misses)
    if len(safe) == len(misses):
        return (f"Every miss ({names}) is on the safe side: the score at the chosen threshold was above the last "
                "exit's (a drop below 0), so the budget was kept with room to spare. ")
    return f"Misses: {names}. "


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path)
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--output", type=Path, default=Path("docs/results/tune"))
    args = ap.parse_args()
    command = "python benchmarks/tune_report.py " + shlex.join(sys.argv[1:])
    report = tune_grid(args.grid, Budget(max_drop=args.max_drop))
    report["command"] = command
    atomic_write_json(args.output / "tune.json", report)
    atomic_write_text(args.output / "README.md", render(report, command))
    print(render(report, command))


if __name__ == "__main__":
    main()

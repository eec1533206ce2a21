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
            mean = lambda key, split: statistics.fmean(s[split][key] for s in per_seed)  # noqa: E731
            rows.append({"task": task, "method": method, "learning_rate": float(runs[0]["learning_rate"]),
                         "metric": runs[0]["evaluation"]["metric"], "seeds": [s["seed"] for s in per_seed],
                         "mean_threshold": statistics.fmean(s["threshold"] for s in per_seed),
                         "calibration_drop": mean("drop", "calibration"), "calibration_cost": mean("cost_ratio", "calibration"),
                         "evaluation_drop": mean("drop", "evaluation"), "evaluation_cost": mean("cost_ratio", "evaluation"),
                         "per_seed": per_seed})
    lo, hi = budget.max_drop - 1.0, budget.max_drop + 1.0
    for row in rows:
        row["within_target"] = lo <= row["evaluation_drop"] <= hi
    by_task = {}
    for task in tasks:
        task_rows = [r for r in rows if r["task"] == task]
        if task_rows:
            by_task[task] = all(r["within_target"] for r in task_rows)
    return {"budget": budget.to_dict(), "target": {"evaluation_drop_in": [max(lo, 0.0), hi], "tasks_at_least": 6},
            "grid": str(grid_dir), "missing_runs": len(missing), "rows": rows, "tasks_within_target": by_task}


def render(report: dict, command: str) -> str:
    b = report["budget"]["max_drop"]
    lo, hi = report["target"]["evaluation_drop_in"]
    ok = sum(report["tasks_within_target"].values())
    lines = ["# `sweet tune --max-drop` on the paper grid", "",
             f"Budget: at most **{b:g} points** below the last exit, chosen on the calibration split. Target: the "
             f"evaluation split's drop, averaged over seeds, within [{lo:g}, {hi:g}] points on at least 6 of the 7 "
             f"tasks (for both methods of a task). **{ok} of {len(report['tasks_within_target'])} tasks** are.", "",
             "Each run is tuned on its stored calibration-split curve (11 thresholds, linear between neighbouring "
             "thresholds) and the stored evaluation-split curve is read at the chosen threshold the same way: the "
             "grid commits no weights, so this is what `sweet tune RUN --from-curve` gives. The evaluation numbers "
             "are read off the curve, not measured at the exact threshold. Runs: Early-Exit and SWEET at the learning "
             "rate `sweet report`'s selection chooses (calibration-split AUC), every seed the grid has.", "",
             f"Made by `{command}`; numbers per seed in [tune.json](tune.json).", "",
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

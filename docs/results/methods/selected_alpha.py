"""``grad_scale@selected`` on the grids that predate it: alpha chosen per task on the calibration split.

The quick-protocol grids of issue #8 (``report.json`` here and in ``confirm/``) were reported before the report
learned to add the ``grad_scale@selected`` row, and their run directories are gone. Their report.json files keep
what the row needs: every run's calibration-split AUC (``learning_rates`` -> ``selection_aucs``) and every run's
reported scores (``per_task`` -> ``values``, per seed). This script applies the report's own rule
(:func:`sweet.experiments.select_alpha`) and the report's own comparison (:func:`sweet.experiments.versus_point`) to them and
writes the same gap-to-the-better-of-EE-and-SWEET table as ``sweet report`` does for a new grid.

    python docs/results/methods/selected_alpha.py docs/results/methods/report.json \
        docs/results/methods/confirm/report.json --output docs/results/methods/selected-alpha.json
"""

from __future__ import annotations

import argparse

import numpy as np

from sweet.experiments import VERSUS, cost_label, select_alpha, versus_point
from sweet.io import atomic_write_json, read_json
from sweet.methods import SELECTED_ALPHA, parse_method


def per_seed_scores(entry: dict) -> dict[int, dict]:
    """seed -> {"interp": {cost: score}, "auc": score} from one per_task[task][method] entry."""
    seeds = entry["seeds"]
    out = {s: {"interp": {}, "auc": None} for s in seeds}
    for q in entry["interpolated"]:
        if len(q["values"]) == len(seeds):  # t_interval drops missing values: then the cost is not compared
            for s, v in zip(seeds, q["values"]):
                out[s]["interp"][q["cost_ratio"]] = v
    for s, v in zip(seeds, entry["auc"]["values"]):
        out[s]["auc"] = v
    return out


def analyse(report: dict) -> dict:
    lr_sel = {(x["task"], x["method"]): x for x in report["learning_rates"]}
    chosen = {}  # (task, method) -> minimal run records: what select_alpha reads
    for (task, method), x in lr_sel.items():
        if parse_method(method).alpha is None:
            continue
        cand = next(c for c in x["candidates"] if c["learning_rate"] == x["chosen"])
        chosen[(task, method)] = [{"task": task, "method": method, "seed": s, "learning_rate": x["chosen"],
                                   "selection": {"auc": a}} for s, a in zip(cand["seeds"], cand["selection_aucs"])]
    picks = select_alpha(chosen)
    tasks = list(report["per_task"])
    scores = {(t, m): per_seed_scores(e) for t, by_m in report["per_task"].items() for m, e in by_m.items()}
    for t, pick in picks.items():
        scores[(t, SELECTED_ALPHA)] = scores[(t, pick["chosen"])]

    def averaged(method: str) -> dict[int, dict]:
        seeds = sorted(set.intersection(*(set(scores[(t, method)]) for t in tasks)))
        costs = set.intersection(*(set(scores[(t, method)][s]["interp"]) for t in tasks for s in seeds))
        return {s: {"interp": {c: float(np.mean([scores[(t, method)][s]["interp"][c] for t in tasks])) for c in costs},
                    "auc": float(np.mean([scores[(t, method)][s]["auc"] for t in tasks]))} for s in seeds}

    base = {b: averaged(b) for b in VERSUS}
    costs = sorted(next(iter(base[VERSUS[0]].values()))["interp"])
    rows = {}
    for m in [SELECTED_ALPHA] + sorted({m for (_, m) in chosen if m.startswith("grad_scale@")}):
        mine = averaged(m)
        points = [versus_point({s: v["interp"][c] for s, v in mine.items()},
                               {b: {s: v["interp"][c] for s, v in base[b].items()} for b in VERSUS}) | {"cost_ratio": c}
                  for c in costs]
        auc = versus_point({s: v["auc"] for s, v in mine.items()}, {b: {s: v["auc"] for s, v in base[b].items()}
                                                                   for b in VERSUS})
        rows[m] = {"points": points, "auc": auc}
    return {"grid": report["grid"]["name"], "tasks": tasks, "alpha_selection": list(picks.values()),
            "cost_ratios": costs, "methods": rows}


def markdown(result: dict) -> str:
    costs = result["cost_ratios"]
    lines = [f"### {result['grid']} ({', '.join(result['tasks'])})", "",
             "Chosen: " + ", ".join(f"{p['task']} α = {p['alpha']:g}" for p in result["alpha_selection"]), "",
             "| method | " + " | ".join(cost_label(c) for c in costs) + " | AUC |",
             "|---" * (len(costs) + 2) + "|"]
    for m, d in result["methods"].items():
        cells = [f"{p['gap_to_best']:+.1f}" for p in d["points"]] + [f"{d['auc']['gap_to_best']:+.1f}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="report.json files of grids with the gradient-scaling line")
    ap.add_argument("--output", help="write the results as JSON here")
    args = ap.parse_args()
    results = [analyse(read_json(p)) | {"report": p} for p in args.reports]
    for r in results:
        print(markdown(r), end="\n\n")
    if args.output:
        atomic_write_json(args.output, {"command": "python docs/results/methods/selected_alpha.py " + " ".join(args.reports),
                                        "results": results})


if __name__ == "__main__":
    main()

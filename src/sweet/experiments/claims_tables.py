"""The floors and the paper's claims in report.md: per task the majority rate and the floor cells, the averages
over the tasks free of them, and the claims judged with seeds and with tasks as the unit, at the Bonferroni level
and without the floor tasks, with how each verdict moves between those ways of judging it."""

from __future__ import annotations

from ..methods import method_label
from .cells import TASK_LABELS, average_tables, cost_label, fmt_gap, md_table, task_list, unit_stats

def floors_markdown(report: dict, methods: list[str]) -> list[str]:
    """Per task the evaluation split's majority rate and the floor cells; the tasks free of them, and the averages
    over those tasks."""
    fl = report["floors"]
    rows = []
    for task, f in fl["tasks"].items():
        ev = f["evaluation"]
        split = f"{ev['split']} ({ev['n']})" if ev["known"] else f"unknown: {ev['why']}"
        floor = "–" if f["floor"] is None else f"{f['floor']:.1f} ± {f['standard_error']:.1f}"
        cells = "; ".join(f"{method_label(c['method'])} L{c['exit_layer']}"
                          + (f" †{len(c['one_class_seeds'])}" if c["one_class_seeds"] else "")
                          + (" ‡" if c["at_majority"] else "") for c in f["floor_cells"]) or "none"
        rows.append([TASK_LABELS.get(task, task), split, "–" if not ev["known"] else f"{ev['majority_rate']:.1f}",
                     floor, f["tests"], cells, ", ".join(method_label(m) for m in f["not_learned_by"]) or "–"])
    lines = ["## Floors", "",
             fl["how"] + " The floor for Matthews correlation is 0. Tasks whose class counts are unknown (the data "
             "is not at hand) are tested for what needs none.", "",
             *md_table(["task", "evaluation split (n)", "majority rate", "floor ± 1 SE", "tests", "floor cells "
                      "(method, exit; † seeds with one class, ‡ at the majority rate)", "not learned by (best exit "
                      "at the floor)"], rows), ""]
    free, floored = fl["floor_free_tasks"], fl["floor_tasks"]
    if not floored:
        return lines + ["No task of the averages has a floor cell.", ""]
    lines += [f"Tasks of the averages with a floor cell: {task_list(floored)}. "
              + (f"Without them: {task_list(free)}." if free else "Every task has one: no average without them."), ""]
    ff = report.get("floor_free")
    if ff and ff.get("average"):
        tables = average_tables(ff["average"], methods, f"Tasks: {task_list(free)} (no method has a floor cell).")
        lines += [line.replace("## ", "### ", 1).replace("average over tasks", f"average over {task_list(free)}")
                  if line.startswith("## ") else line for line in tables]
    return lines


DECISIVE = ("supported", "supported (better)", "contradicted")  # verdicts that an interval decides


def _multiplicity(pc: dict) -> str:
    k = pc["n_claims"]
    decided = [c for c in pc["claims"] if c["verdict"] in DECISIVE]
    kept = [c for c in decided if c["verdict_bonferroni"] == c["verdict"]]
    return (f"**Multiple comparisons.** {k} claims are tested here, each with its own 95% interval and no correction. "
            f"If every true gap were 0 and the claims were independent, each would still get a verdict (supported or "
            f"contradicted) with probability 5%: about {0.05 * k:.1f} of the {k} by chance, and at least one with "
            f"probability {1 - 0.95 ** k:.0%}. The claims share runs, so they are not independent, but a single "
            f"verdict near the edge of its interval is weak evidence. The Bonferroni column holds each interval over "
            f"seeds at {100 * pc['bonferroni_confidence']:.1f}% (1 − 0.05/{k}), which keeps the chance of any false "
            f"verdict among the {k} at 5% or less: {len(kept)} of the {len(decided)} verdicts that the 95% interval "
            "decides keep it.")


def _claim_rows(pc: dict) -> list[list[str]]:
    return [[c["claim"], f"{method_label(c['a'])} − {method_label(c['b'])}", c["over"], c["paper"],
             fmt_gap(c["gap"], 2), c["verdict"], fmt_gap(c["gap_over_tasks"], 2), c["verdict_over_tasks"],
             c["verdict_bonferroni"]] for c in pc["claims"]]


def _claim_head(pc: dict) -> list[str]:
    n_seeds = max(len(c["seeds"]) for c in pc["claims"])
    n_tasks = max(len(c["tasks"]) for c in pc["claims"])
    return ["claim", "gap", "over", "paper", f"ours, seeds as unit ({n_seeds})", "verdict",
            f"ours, tasks as unit ({n_tasks})", "verdict", f"verdict at {100 * pc['bonferroni_confidence']:.1f}%"]


def _point_text(c: dict) -> str:
    return ", ".join((f"L{p['exit_layer']}" if "exit_layer" in p else cost_label(p["cost_ratio"])) + f" {p['gap']:+.2f}"
                     for p in c["points"])


def claims_markdown(pc: dict, floor_free: dict | None = None, floors: dict | None = None) -> list[str]:
    """The paper's claims, each with our paired gap (mean ± CI (SD) over seeds, and over tasks) and its verdicts,
    again over the tasks without a floor cell; a line per claim on how the verdict moves between the ways of
    judging it; then the paired gaps per exit and per fixed cost for every pair of methods the claims compare."""
    free_pc = (floor_free or {}).get("paper_claims")
    lines = ["## The paper's claims, checked", "",
             "Per seed, the mean over tasks of method A's score minus method B's (the same seed draws the same "
             "training sample for both); then the mean over seeds ± the half-width of the 95% t-interval (SD over "
             "seeds). With tasks as the unit: per task the mean over seeds of A − B, then the t-interval over tasks "
             "(df = tasks − 1). Verdict: *supported* where the interval lies on the claimed side of 0, "
             "*contradicted* where it lies on the other side, *inconclusive* where it contains 0. A \"comparable or "
             "better\" claim passes as *supported (better)* where the interval lies above 0 and as *supported "
             "(comparable)* where it contains 0 and A is ahead (mean gap ≥ 0) at one exit or cost of the scope at "
             "least; it does not pass where A is *behind at every point* of the scope (its mean gap below 0 at each "
             "one, even if the interval reaches 0) or where the whole interval lies below 0 (*contradicted*). Fast "
             "speeds: cost ratio ≤ 1/2; slow: 3/4 to 1. The paper's numbers are for BERT and DeBERTa BASE/LARGE "
             "(12/24 layers) with the GLUE validation sets; ours are for this grid's backbone and splits.", "",
             _multiplicity(pc), "",
             f"All tasks of the averages ({task_list(max((c['tasks'] for c in pc['claims']), key=len))}):", "",
             *md_table(_claim_head(pc), _claim_rows(pc)), ""]
    if free_pc:
        lines += [f"Over the tasks where no method has a floor cell ({task_list(floor_free['tasks'])}; left out: "
                  f"{task_list((floors or {}).get('floor_tasks', []))}):", "",
                  *md_table(_claim_head(free_pc), _claim_rows(free_pc)), ""]
    lines += ["How each verdict moves between the ways of judging it (*points*: the mean gap at each exit or cost of "
              "the claim's scope):", ""]
    free_by_key = {c["key"]: c for c in (free_pc or {}).get("claims", [])}
    for c in pc["claims"]:
        text = (f"- **{c['claim']}** ({method_label(c['a'])} − {method_label(c['b'])}, {c['over']}; points: "
                f"{_point_text(c)}): {fmt_gap(c['gap'], 2)} over seeds, *{c['verdict']}*; with tasks as the unit "
                f"{fmt_gap(c['gap_over_tasks'], 2)}, *{c['verdict_over_tasks']}*; at the Bonferroni level "
                f"*{c['verdict_bonferroni']}*")
        f = free_by_key.get(c["key"])
        if f:
            text += (f"; without the floor tasks {fmt_gap(f['gap'], 2)} over seeds, *{f['verdict']}*, "
                     f"{fmt_gap(f['gap_over_tasks'], 2)} over tasks, *{f['verdict_over_tasks']}*")
        verdicts = {c["verdict"], c["verdict_over_tasks"], c["verdict_bonferroni"]} | (
            {f["verdict"], f["verdict_over_tasks"]} if f else set())
        lines.append(text + (". The same verdict every way." if len(verdicts) == 1 else "."))
    lines.append("")
    for g in pc["pairs"]:
        label = f"{method_label(g['a'])} − {method_label(g['b'])}"
        head = ["unit"] + [f"exit L{p['exit_layer']}" for p in g["per_exit"]] + [f"cost {cost_label(p['cost_ratio'])}"
                                                                                 for p in g["per_cost"]]
        rows = [[name] + [fmt_gap(unit_stats(p, unit), 2) for p in g["per_exit"] + g["per_cost"]]
                for name, unit in (("seeds", None), ("tasks", "over_tasks"))]
        lines += [f"Paired gap {label} (points; {len(g['seeds'])} seed(s), tasks: {task_list(g['tasks'])}):", "",
                  *md_table(head, rows), ""]
    return lines

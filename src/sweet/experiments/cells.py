"""The report's cells and tables: a mean ± CI half-width (SD), a paired gap, floor markers, cost and task labels,
Markdown tables, and the per-exit, fixed-cost and average tables that every section of report.md uses."""

from __future__ import annotations

from fractions import Fraction

from ..methods import method_label
from .aggregate import GAP_BASELINE

TASK_LABELS = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "mnli": "MNLI", "qnli": "QNLI", "qqp": "QQP",
               "rte": "RTE"}


def fmt(stats: dict | None, digits: int = 1, sign: str = "") -> str:
    """Mean ± CI half-width (SD s) (just the mean with one value); ``sign="+"`` writes the sign of a difference."""
    if not stats or stats.get("mean") is None:
        return "n/a"
    mean = f"{stats['mean']:{sign}.{digits}f}"
    if stats.get("ci") is None:
        return mean
    return f"{mean} ± {stats['ci']:.{digits}f} (SD {stats['std']:.{digits}f})"


def unit_stats(stats: dict | None, unit: str | None) -> dict | None:
    """``stats`` (seeds as the unit) or, with ``unit="over_tasks"``, its interval with tasks as the unit."""
    return stats if unit is None or stats is None else stats.get(unit)


def floor_mark(cell: dict) -> str:
    """The floor markers of an exit cell: † one class on k of n seeds, ‡ at the majority rate."""
    f = cell.get("floor") or {}
    marks = ""
    if f.get("one_class_seeds"):
        marks += f" †{len(f['one_class_seeds'])}/{cell['n']}"
    if f.get("at_majority"):
        marks += " ‡"
    return marks


FLOOR_LEGEND = ("† k/n: the exit predicts one class on k of the n seeds (its score equals the score of predicting "
                "one class everywhere); ‡: its mean is within one binomial standard error of the majority rate (or "
                "below it). See *Floors*.")


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


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def exit_table(by_method: dict, methods: list[str], unit: str | None = None) -> list[str]:
    """Per-exit scores, one row per method, with their floor markers (per-task cells have them)."""
    layers = next(iter(by_method.values()))["per_exit"]
    header = ["method"] + [f"exit L{p['exit_layer']}" for p in layers]
    rows = [[method_label(m)] + [fmt(unit_stats(p, unit)) + floor_mark(p) for p in by_method[m]["per_exit"]]
            for m in methods if m in by_method]
    return md_table(header, rows)


def interp_table(by_method: dict, methods: list[str], unit: str | None = None) -> list[str]:
    costs = sorted({q["cost_ratio"] for m in by_method.values() for q in m["interpolated"]})
    header = ["method"] + [f"cost {cost_label(c)}" for c in costs] + ["AUC"]
    rows = []
    for m in methods:
        if m not in by_method:
            continue
        at = {q["cost_ratio"]: q for q in by_method[m]["interpolated"]}
        rows.append([method_label(m)] + [fmt(unit_stats(at.get(c), unit)) if c in at else "–" for c in costs]
                    + [fmt(unit_stats(by_method[m]["auc"], unit))])
    return md_table(header, rows)


def average_tables(average: dict, methods: list[str], tasks_text: str) -> list[str]:
    """Table 1 and the fixed-cost table over tasks, each with seeds and then tasks as the unit (no interval with
    tasks as the unit over one task)."""
    n_tasks = len(next(iter(average.values()))["tasks"])
    several = n_tasks > 1
    unit_note = (f"With tasks as the unit: per task the mean over seeds, then the mean over the {n_tasks} tasks ± the "
                 f"half-width of the 95% t-interval over tasks (df {n_tasks - 1}), SD across the task means. It "
                 "counts how much the tasks disagree, which the interval over seeds averages away."
                 if several else "With one task there is no interval with tasks as the unit.")
    return [
        "## Individual exit scores, average over tasks (Table 1)", "",
        f"{tasks_text} Per seed, the mean over tasks; then the mean over seeds ± the 95% interval over seeds "
        "(SD across the seeds' averages).", "",
        *exit_table(average, methods), "", unit_note, "",
        *(exit_table(average, methods, unit="over_tasks") + [""] if several else []),
        "## Scores at fixed cost ratios, average over tasks (Figures 4/5)", "",
        "The speed-accuracy curve (confidence-based early exit, calibrated, 11 thresholds) linearly interpolated "
        "at fixed cost ratios. Multi-Model pays for every model it runs, so it reaches costs above 1. "
        "AUC: the mean score over costs from the first exit to 1. Seeds as the unit:", "",
        *interp_table(average, methods), "",
        *(["Tasks as the unit:", "", *interp_table(average, methods, unit="over_tasks"), ""] if several else []),
    ]


def fmt_gap(stats: dict | None, digits: int = 1) -> str:
    """A difference: signed mean ± CI half-width."""
    return fmt(stats, digits, sign="+")


def gap_label(method: str, baseline: str = GAP_BASELINE) -> str:
    return f"{method_label(method)} − {method_label(baseline)}"


def metric_label(metric: str) -> str:
    return {"accuracy": "accuracy (%)", "matthews": "Matthews corr. (x100)"}.get(metric, metric)


def task_list(tasks: list[str]) -> str:
    return ", ".join(TASK_LABELS.get(t, t) for t in tasks)

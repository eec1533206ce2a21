"""The grid report: learning-rate selection, aggregation over seeds, Markdown + JSON + PNG.

Every number is a mean over seeds with a 95% confidence interval from the t-distribution
(:func:`t_interval`): ``mean +- t_{0.975, n-1} * s / sqrt(n)``, ``s`` the sample standard deviation.
Averages over tasks are taken per seed first (the mean over tasks of seed *s*'s scores), then the
interval is over those per-seed averages, so it is still an interval over seeds.

Only runs at the chosen learning rate enter the tables; the learning rate is chosen per (task, method,
backbone) on the calibration split (:func:`sweet.grid.select_learning_rates`).

Where a grid ran the gradient-scaling line (``grad_scale@ALPHA`` with ``sweet`` = 0 and/or ``early_exit`` = 1
beside it), the report adds one more row, ``grad_scale@selected``: per task, the alpha with the best
calibration-split AUC (:func:`sweet.grid.select_alpha`), scored like any other method. It is what a user who
picks alpha on held-out data gets, and the tables hold it to the same standard (``alpha_selection`` in the
JSON lists every candidate).

A training-set size sweep (``n_train`` a list in the spec) chooses the learning rate per (task, method,
backbone, size) and adds a section (``size_sweep`` in the JSON): per size the per-exit scores, and per exit
the gap of every other method (SWEET, Multi-Model) to Early-Exit -- the per-seed paired difference in
percentage points, mean and t-interval over seeds -- with a plot of the gap against the size. The other
tables are at the largest size.
"""

from __future__ import annotations

import math
import platform
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import SweetError
from .io import atomic_save_figure, atomic_write_json, atomic_write_text, read_json
from .methods import SELECTED_ALPHA, method_label
from .runs import METRICS, RUN_CONFIG

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
CONFIDENCE = 0.95
CURVE_POINTS = 61
METHOD_COLORS = {SELECTED_ALPHA: "black", "early_exit": "tab:blue", "sweet": "tab:red", "multi_model": "tab:green",
                 "grad_scale": "tab:purple", "grad_scale_first": "tab:cyan", "pcgrad": "tab:orange",
                 "sweet_then_ee": "tab:brown", "ee_then_sweet": "tab:pink", "distill": "tab:olive"}


def method_color(method: str) -> str | None:
    """One colour per method family, or for the full name (``grad_scale@selected``); None: matplotlib's cycle,
    e.g. for a second grad_scale alpha."""
    return METHOD_COLORS.get(method, METHOD_COLORS.get(method.partition("@")[0]))
TASK_LABELS = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "mnli": "MNLI", "qnli": "QNLI", "qqp": "QQP",
               "rte": "RTE"}
GAP_BASELINE = "early_exit"  # a size sweep's gaps: every other method minus this one, per exit


# ------------------------------------------------------------------------------------------ statistics


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean and two-sided t confidence interval over ``values`` (one per seed). With one value the
    interval is undefined (``ci`` None)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "ci": None, "low": None, "high": None, "std": None, "n": 0, "values": []}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "ci": None, "low": None, "high": None, "std": None, "n": 1, "values": x.tolist()}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return {"mean": mean, "ci": half, "low": mean - half, "high": mean + half, "std": std, "n": n,
            "values": x.tolist()}


def curve_on_grid(curve: Sequence[dict], grid: Sequence[float]) -> list[float | None]:
    """One seed's speed-accuracy curve, linearly interpolated on a common cost grid."""
    from .cost import interpolate

    return interpolate([p["cost_ratio"] for p in curve], [p["score"] for p in curve], grid)


def aggregate_curves(curves: Sequence[Sequence[dict]], n_points: int = CURVE_POINTS) -> dict:
    """Mean and CI band of several seeds' curves on the cost range that all of them cover."""
    lo = max(min(p["cost_ratio"] for p in c) for c in curves)
    hi = min(max(p["cost_ratio"] for p in c) for c in curves)
    grid = np.linspace(lo, hi, n_points).tolist() if hi > lo else [lo]
    per_seed = [curve_on_grid(c, grid) for c in curves]
    stats = [t_interval([s[i] for s in per_seed]) for i in range(len(grid))]
    return {"cost": grid, "per_seed": per_seed, "mean": [s["mean"] for s in stats], "low": [s["low"] for s in stats],
            "high": [s["high"] for s in stats], "n": len(curves)}


def _stat_row(stats: dict) -> dict:
    return {k: stats[k] for k in ("mean", "ci", "low", "high", "std", "n", "values")}


# ------------------------------------------------------------------------------------------ collecting


def collect(grid_dir: str | Path, partial: bool = False) -> tuple[dict, list[dict], list[str]]:
    """The grid manifest, the metrics of every finished run (with its directory), and the missing runs."""
    from .grid import load_grid

    grid_dir = Path(grid_dir)
    grid = load_grid(grid_dir)
    records, missing = [], []
    for entry in grid["runs"]:
        path = grid_dir / entry["dir"] / METRICS
        if not path.is_file():
            missing.append(entry["dir"])
            continue
        m = read_json(path)
        m["_dir"] = entry["dir"]
        m["_backbone_spec"] = entry["backbone"]
        # the requested training size (older manifests lack it: then the spec's single size)
        m["_n_train"] = int(entry.get("n_train", grid["spec"]["n_train"] if isinstance(grid["spec"]["n_train"], int)
                                      else m.get("n_train")))
        cfg_path = grid_dir / entry["dir"] / RUN_CONFIG
        m["_environment"] = read_json(cfg_path).get("environment", {}) if cfg_path.is_file() else {}
        records.append(m)
    if missing and not partial:
        raise SweetError(f"{len(missing)} of {len(grid['runs'])} runs in {grid_dir} are not finished (first: {missing[0]}); "
                         "finish the grid with 'sweet grid --output GRID_DIR' or pass --partial to report what is there")
    if not records:
        raise SweetError(f"no finished runs in {grid_dir}")
    return grid, records, missing


def build_report(grid_dir: str | Path, partial: bool = False, command: str | None = None) -> dict:
    """Everything the report shows, as one JSON-able dict."""
    from .grid import select_alpha, select_learning_rates

    grid_dir = Path(grid_dir)
    grid, records, missing = collect(grid_dir, partial)
    spec = grid["spec"]
    sized = is_size_sweep(spec)
    for m in records:  # the manifest's backbone string is the grouping key (metrics hold the resolved path)
        m["backbone"] = m["_backbone_spec"]
        if sized:  # and in a size sweep the requested size (metrics hold the size drawn: the same, or less)
            m["_n_train_drawn"] = m.get("n_train")
            m["n_train"] = m["_n_train"]
    selection = select_learning_rates(records, by_size=sized)
    methods = [m for m in spec["methods"] if any(r["method"] == m for r in records)]
    tasks = [t for t in spec["tasks"] if any(r["task"] == t for r in records)]

    sizes = sorted({r["n_train"] for r in records}) if sized else [None]
    chosen_by_size = {size: _chosen_runs(records, selection, size) for size in sizes}
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
            ev0 = runs[0]["evaluation"]
            exits = [p["exit_layer"] for p in ev0["per_exit"]]
            per_exit = [{"exit_layer": layer, **_stat_row(t_interval([r["evaluation"]["per_exit"][i]["score"] for r in runs]))}
                        for i, layer in enumerate(exits)]
            points = [q["cost_ratio"] for q in ev0["interpolated"]]
            interp = [{"cost_ratio": c, **_stat_row(t_interval([r["evaluation"]["interpolated"][i]["score"] for r in runs]))}
                      for i, c in enumerate(points)]
            per_task[task][method] = {
                "learning_rate": selection[_sel_key(task, runs[0]["method"], runs[0]["backbone"], sizes[-1])]["chosen"],
                **({"selected_method": runs[0]["method"]} if method == SELECTED_ALPHA else {}),
                "seeds": [r["seed"] for r in runs],
                "metric": ev0["metric"],
                "evaluation_split": ev0["split"],
                "n_examples": ev0["n_examples"],
                "exit_layers": exits,
                "per_exit": per_exit,
                "interpolated": interp,
                "auc": _stat_row(t_interval([r["evaluation"]["auc"] for r in runs])),
                "selection_auc": _stat_row(t_interval([r["selection"]["auc"] for r in runs])),
                "curve": aggregate_curves([r["evaluation"]["curve"] for r in runs]),
                "runs": [r["_dir"] for r in runs],
            }

    average = _average_over_tasks(per_task, chosen, tasks, methods)
    versus = _versus_best(chosen, tasks, methods)
    report = {
        "grid": {"name": spec["name"], "grid_dir": str(grid_dir.resolve()), "spec": spec},
        "methods": methods,
        "status": {"n_runs": len(grid["runs"]), "n_finished": len(records), "missing": missing},
        "confidence": CONFIDENCE,
        "interval": "two-sided t-distribution over seeds: mean +- t(0.975, n-1) * sd / sqrt(n)",
        "learning_rates": [
            {k: v for k, v in sel.items()} for sel in selection.values()
        ],
        **({"alpha_selection": alpha_selection} if alpha_selection else {}),
        "average": average,
        "per_task": per_task,
        "provenance": _provenance(grid_dir, grid, records, command),
    }
    if versus:
        report["versus_best"] = versus
    if sized:
        report["size_sweep"] = _size_sweep(chosen_by_size, selection, tasks, methods)
    return report


#: the two methods every other one is held against (issue #8: never worse than either, at any cost)
VERSUS = ("early_exit", "sweet")


def _versus_best(chosen: dict, tasks: list[str], methods: list[str]) -> dict | None:
    """Every method other than EE and SWEET against both, at each fixed cost point and by AUC, averaged over
    tasks: ``gap_to_best`` = its mean minus the better of the EE and SWEET means (the goal: >= 0 everywhere),
    and the paired per-seed differences to each (same seed = same training sample), mean and CI over seeds.
    None unless the grid has EE, SWEET and at least one other single-size method on the same tasks."""
    others = [m for m in methods if m not in VERSUS]
    if not others or not all(m in methods for m in VERSUS):
        return None

    def per_seed(method: str) -> dict[int, dict] | None:
        have = [t for t in tasks if chosen.get((t, method))]
        if have != [t for t in tasks if chosen.get((t, VERSUS[0]))]:
            return None
        seeds = set.intersection(*({r["seed"] for r in chosen[(t, method)]} for t in have))
        out = {}
        for s in sorted(seeds):
            runs = [next(r for r in chosen[(t, method)] if r["seed"] == s) for t in have]
            by_cost = [{q["cost_ratio"]: q["score"] for q in r["evaluation"]["interpolated"]} for r in runs]
            out[s] = {"auc": float(np.mean([r["evaluation"]["auc"] for r in runs])),
                      "interp": {c: None if any(t.get(c) is None for t in by_cost) else float(np.mean([t[c] for t in by_cost]))
                                 for c in by_cost[0]}}
        return out

    base = {b: per_seed(b) for b in VERSUS}
    if any(not v for v in base.values()):
        return None
    costs = list(next(iter(base[VERSUS[0]].values()))["interp"])
    result = {"baselines": list(VERSUS), "cost_ratios": costs, "methods": {}}
    for m in others:
        mine = per_seed(m)
        if not mine:
            continue
        def at(d: dict[int, dict], c: float) -> dict[int, float]:  # seed -> score at cost c, where it has one
            return {s: v["interp"][c] for s, v in d.items() if v["interp"].get(c) is not None}

        points = [_versus_point(at(mine, c), {b: at(base[b], c) for b in VERSUS}) | {"cost_ratio": c} for c in costs]
        auc = _versus_point({s: v["auc"] for s, v in mine.items()}, {b: {s: v["auc"] for s, v in base[b].items()}
                                                                      for b in VERSUS})
        result["methods"][m] = {"points": points, "auc": auc,
                                "never_worse": all(p["gap_to_best"] is not None and p["gap_to_best"] >= 0 for p in points)}
    return result if result["methods"] else None


def _versus_point(mine: dict[int, float], bases: dict[str, dict[int, float]]) -> dict:
    """Means over the seeds that the method and every baseline share (a partial grid compares like with like)."""
    seeds = sorted(set(mine).intersection(*(set(v) for v in bases.values())))
    out: dict = {"seeds": seeds, "mean": float(np.mean([mine[s] for s in seeds])) if seeds else None}
    out["gap_to_best"] = (out["mean"] - max(float(np.mean([v[s] for s in seeds])) for v in bases.values())
                          if seeds else None)
    for b, v in bases.items():
        out[f"vs_{b}"] = _stat_row(t_interval([mine[s] - v[s] for s in seeds]))
    return out


def is_size_sweep(spec: dict) -> bool:
    """Whether a stored spec (a dict) is a training-set size sweep (``n_train`` a list of 2+ sizes)."""
    return isinstance(spec.get("n_train"), list) and len(spec["n_train"]) > 1


def _sel_key(task: str, method: str, backbone: str, size: int | None) -> tuple:
    return (task, method, backbone) + ((size,) if size is not None else ())


def _chosen_runs(records: list[dict], selection: dict, size: int | None) -> dict[tuple[str, str], list[dict]]:
    """(task, method) -> the runs at the chosen learning rate (at training size ``size`` in a sweep), by seed."""
    chosen: dict[tuple[str, str], list[dict]] = {}
    for key, sel in selection.items():
        task, method = key[0], key[1]
        if size is not None and key[3] != size:
            continue
        runs = [r for r in records if r["task"] == task and r["method"] == method
                and float(r["learning_rate"]) == sel["chosen"] and (size is None or r["n_train"] == size)]
        chosen[(task, method)] = sorted(runs, key=lambda r: r["seed"])
    return chosen


def _size_sweep(chosen_by_size: dict, selection: dict, tasks: list[str], methods: list[str]) -> dict:
    """A training-set size sweep: per size, task and method the per-exit scores (mean and CI over seeds); per
    task the gap of every other method to Early-Exit per exit and size, as the per-seed paired difference (same
    seed, so the same training sample) in percentage points, mean and CI over the seeds both methods have."""
    sizes = sorted(chosen_by_size)
    per_size = []
    for size in sizes:
        by_task: dict[str, dict] = {}
        for task in tasks:
            for method in methods:
                runs = chosen_by_size[size].get((task, method))
                if not runs:
                    continue
                ev0 = runs[0]["evaluation"]
                by_task.setdefault(task, {})[method] = {
                    "learning_rate": selection[_sel_key(task, runs[0]["method"], runs[0]["backbone"], size)]["chosen"],
                    "seeds": [r["seed"] for r in runs],
                    "n_train_drawn": [r.get("_n_train_drawn") for r in runs],
                    "metric": ev0["metric"],
                    "exit_layers": [p["exit_layer"] for p in ev0["per_exit"]],
                    "per_exit": [{"exit_layer": p["exit_layer"],
                                  **_stat_row(t_interval([r["evaluation"]["per_exit"][i]["score"] for r in runs]))}
                                 for i, p in enumerate(ev0["per_exit"])],
                    "auc": _stat_row(t_interval([r["evaluation"]["auc"] for r in runs])),
                    "runs": [r["_dir"] for r in runs],
                }
        per_size.append({"n_train": size, "per_task": by_task})
    gaps: dict[str, list[dict]] = {}
    for task in tasks:
        points = []
        for method in methods:
            if method == GAP_BASELINE:
                continue
            for size in sizes:
                base = {r["seed"]: r for r in chosen_by_size[size].get((task, GAP_BASELINE), [])}
                other = {r["seed"]: r for r in chosen_by_size[size].get((task, method), [])}
                seeds = sorted(set(base) & set(other))
                if not seeds:
                    continue
                for layer in _common_exits(base[seeds[0]], other[seeds[0]]):
                    diffs = [_exit_score(other[s], layer) - _exit_score(base[s], layer) for s in seeds]
                    points.append({"method": method, "baseline": GAP_BASELINE, "n_train": size, "exit_layer": layer,
                                   "seeds": seeds, **_stat_row(t_interval(diffs))})
        if points:
            gaps[task] = points
    return {
        "sizes": sizes,
        "main_size": sizes[-1],
        "baseline": GAP_BASELINE,
        "gap": "per seed, the method's score minus Early-Exit's at the same exit (percentage points); "
               "mean and 95% t-interval over the seeds both have",
        "per_size": per_size,
        "gaps": gaps,
    }


def _common_exits(a: dict, b: dict) -> list[int]:
    other = {p["exit_layer"] for p in b["evaluation"]["per_exit"]}
    return [p["exit_layer"] for p in a["evaluation"]["per_exit"] if p["exit_layer"] in other]


def _exit_score(record: dict, layer: int) -> float:
    return next(p["score"] for p in record["evaluation"]["per_exit"] if p["exit_layer"] == layer)


def _average_over_tasks(per_task: dict, chosen: dict, tasks: list[str], methods: list[str]) -> dict:
    """Per method: per-exit scores, interpolated scores and AUC averaged over tasks, per seed first."""
    out = {}
    for method in methods:
        have = [t for t in tasks if method in per_task[t]]
        if not have:
            continue
        seeds = sorted(set.intersection(*(set(per_task[t][method]["seeds"]) for t in have)))
        by_seed = {t: {r["seed"]: r for r in chosen[(t, method)]} for t in have}

        def avg(get) -> dict:
            return _stat_row(t_interval([float(np.mean([get(by_seed[t][s]) for t in have])) for s in seeds]))

        first = per_task[have[0]][method]
        per_exit = [{"exit_layer": layer, **avg(lambda r, i=i: r["evaluation"]["per_exit"][i]["score"])}
                    for i, layer in enumerate(first["exit_layers"])]
        interp = []
        for i, q in enumerate(first["interpolated"]):
            vals = [by_seed[t][s]["evaluation"]["interpolated"][i]["score"] for t in have for s in seeds]
            if any(v is None for v in vals):
                interp.append({"cost_ratio": q["cost_ratio"], **_stat_row(t_interval([]))})
            else:
                interp.append({"cost_ratio": q["cost_ratio"], **avg(lambda r, i=i: r["evaluation"]["interpolated"][i]["score"])})
        # the average curve: each task's curve on a common cost grid, averaged over tasks per seed
        lo = max(min(p["cost_ratio"] for p in by_seed[t][s]["evaluation"]["curve"]) for t in have for s in seeds)
        hi = min(max(p["cost_ratio"] for p in by_seed[t][s]["evaluation"]["curve"]) for t in have for s in seeds)
        grid = np.linspace(lo, hi, CURVE_POINTS).tolist() if hi > lo else [lo]
        seed_curves = [np.mean([curve_on_grid(by_seed[t][s]["evaluation"]["curve"], grid) for t in have], axis=0)
                       for s in seeds]
        stats = [t_interval([c[i] for c in seed_curves]) for i in range(len(grid))]
        out[method] = {
            "tasks": have,
            "seeds": seeds,
            "per_exit": per_exit,
            "interpolated": interp,
            "auc": avg(lambda r: r["evaluation"]["auc"]),
            "curve": {"cost": grid, "mean": [x["mean"] for x in stats], "low": [x["low"] for x in stats],
                      "high": [x["high"] for x in stats], "n": len(seeds)},
        }
    return out


def _provenance(grid_dir: Path, grid: dict, records: list[dict], command: str | None) -> dict:
    import importlib.metadata as md

    from .grid import LAUNCHES_FILE

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


# ------------------------------------------------------------------------------------------ writing


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


def plot_curves(by_method: dict, methods: list[str], title: str, ylabel: str, path: Path,
                bounds: tuple[float, float] = (-100.0, 100.0)) -> Path:
    """All methods on one plot: the mean curve over seeds and its 95% CI band (clipped to the metric's range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    used: set = set()
    for m in methods:
        if m not in by_method:
            continue
        c = by_method[m]["curve"]
        x = np.asarray(c["cost"])
        mean = np.asarray([np.nan if v is None else v for v in c["mean"]], dtype=float)
        label = f"{method_label(m)} (n={c['n']})"
        color = method_color(m)
        color = None if color in used else color  # e.g. a second grad_scale alpha: the next colour of the cycle
        (line,) = ax.plot(x, mean, color=color, label=label, linewidth=1.8)
        color = line.get_color()
        used.add(color)
        if all(v is not None for v in c["low"]):
            low = np.clip(np.asarray(c["low"], dtype=float), *bounds)
            high = np.clip(np.asarray(c["high"], dtype=float), *bounds)
            ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("cost ratio (1 = the full model for every example)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return atomic_save_figure(fig, path)  # atomic, like every other result file


def _fmt_gap(stats: dict | None, digits: int = 1) -> str:
    """A difference: signed mean ± CI half-width."""
    return _fmt(stats, digits, sign="+")


def _gap_label(method: str, baseline: str = GAP_BASELINE) -> str:
    return f"{method_label(method)} − {method_label(baseline)}"


def plot_gaps(points: list[dict], title: str, path: Path) -> Path:
    """A size sweep: one panel per exit, the gap to Early-Exit (percentage points) against the training size
    (log scale), one line per method with its 95% CI over seeds (error bars; none with one seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    layers = list(dict.fromkeys(p["exit_layer"] for p in points))
    methods = list(dict.fromkeys(p["method"] for p in points))
    sizes = sorted({p["n_train"] for p in points})
    colors = {m: method_color(m) or f"C{i}" for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(layers), figsize=(max(4.5, 2.7 * len(layers)), 3.6), dpi=100, sharey=True,
                             squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for j, m in enumerate(methods):
            pts = sorted((p for p in points if p["method"] == m and p["exit_layer"] == layer), key=lambda p: p["n_train"])
            if not pts:
                continue
            shift = 10 ** ((j - (len(methods) - 1) / 2) * 0.012)  # side by side, so the error bars do not overlap
            x = np.asarray([p["n_train"] for p in pts], dtype=float) * shift
            y = np.asarray([p["mean"] for p in pts], dtype=float)
            err = [0.0 if p["ci"] is None else p["ci"] for p in pts]
            ax.errorbar(x, y, yerr=err if any(err) else None, color=colors[m], marker="o", markersize=4, capsize=3,
                        linewidth=1.6, label=_gap_label(m, pts[0]["baseline"]))
        ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{n:,}" for n in sizes], fontsize=8)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"exit L{layer}", fontsize=9)
        ax.set_xlabel("training examples")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gap to EE (percentage points)")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path)  # atomic, like every other result file


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
        gap_rows = [[str(n), _gap_label(m)] + [_fmt_gap(at.get((m, n, x))) for x in gap_layers]
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


def _metric_label(metric: str) -> str:
    return {"accuracy": "accuracy (%)", "matthews": "Matthews corr. (x100)"}.get(metric, metric)


def _candidate_cell(value: str, candidate: dict, chosen: bool) -> str:
    """One candidate of a selection on the calibration split: 'VALUE: mean AUC', bold if it was chosen."""
    auc = candidate["mean_selection_auc"]
    text = f"{value}: " + ("n/a" if auc is None else f"{auc:.2f}") + ("" if candidate["eligible"] else " (incomplete)")
    return f"**{text}**" if chosen else text


def render_markdown(report: dict, figures: dict[str, str]) -> str:
    spec = report["grid"]["spec"]
    prov = report["provenance"]
    methods = [m for m in report["methods"] if m in report["average"]]
    status = report["status"]
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
        f"- Grid wall time: {prov['grid_wall_seconds'] / 60:.1f} min over {len(prov['launches'])} launch(es); "
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
        "held-out calibration split (never the reported split); only runs at the chosen rate enter the tables.",
        "",
        *(_size_sweep_markdown(sweep, figures, report["methods"]) if sweep else []),
        "## Individual exit scores, average over tasks (Table 1)",
        "",
        f"Tasks: {', '.join(TASK_LABELS.get(t, t) for t in next(iter(report['average'].values()))['tasks'])}. "
        "Per seed, the mean over tasks; then the interval over seeds.",
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
    lines += ["## Per task", ""]
    for task, by_method in report["per_task"].items():
        first = next(iter(by_method.values()))
        lines += [f"### {TASK_LABELS.get(task, task)}", "",
                  f"{_metric_label(first['metric'])} on the {first['evaluation_split']} split "
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
              "", "Selection AUC (calibration split, mean over seeds) for every candidate; the chosen one in bold:", ""]
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
    from .grid import GridSpec, spec_to_toml

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
                     f"finished, wall {float(x.get('wall_seconds') or 0) / 60:.1f} min")
    lines += ["", f"Per-run files (config, splits, training log, model, metrics): `{report['grid']['grid_dir']}/runs/`. "
              f"All numbers above: `{REPORT_JSON}`.", ""]
    return "\n".join(lines)


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


def write_report(grid_dir: str | Path, output: str | Path | None = None, partial: bool = False,
                 command: str | None = None) -> dict:
    """Write report.md, report.json and one PNG per task (plus the average, and in a training-set size sweep
    one gap-vs-size PNG per task) into ``output`` (default: GRID_DIR/report). Returns the report dict."""
    grid_dir = Path(grid_dir)
    out = Path(output) if output is not None else grid_dir / "report"
    report = build_report(grid_dir, partial=partial, command=command)
    methods = report["methods"]
    figures: dict[str, str] = {}
    for task, by_method in report["per_task"].items():
        first = next(iter(by_method.values()))
        name = f"curve-{task}.png"
        plot_curves(by_method, methods, f"{TASK_LABELS.get(task, task)} ({first['evaluation_split']}, "
                    f"mean and 95% CI over {len(first['seeds'])} seeds)", _metric_label(first["metric"]), out / name,
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
    report["figures"] = figures
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, render_markdown(report, figures))
    return report

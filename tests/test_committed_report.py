"""The committed paper report (docs/results/paper/report.json) against its grid, recomputed here from the run
directories' metrics.json without the report code: the learning rate chosen on seed 0's calibration AUC, every
per-task exit cell (mean, SD, 95% half-width over seeds), the average over tasks (seeds and tasks as the unit),
every claim's gap (over seeds and over tasks, and the mean gap at each point of its scope), the floor markers,
the flags on learning rates at the top of the searched set, and the claims judged with the rates chosen from the
earlier set (every run directory on disk, listed in the manifest or not) with the contributions to each change,
the ladder ablation (both ladders' cells, SWEET − EE per exit and its change, the default-ladder rule) and the
beyond-the-paper screen (each family's value chosen by its worst deficit, every row against EE and SWEET).

:func:`check_report` takes a report directory, so the same checks run on any report written by ``sweet report``
with its grid beside it (the report's ``runs_from_report`` leads to the runs)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
REPORT_DIR = ROOT / "docs" / "results" / "paper"
GLUE = Path(os.environ.get("SWEET_GLUE_DIR") or ROOT.parent / "shared" / "glue")
TOL = 1e-9


def _interval(values: list[float], confidence: float = 0.95) -> dict:
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return {"mean": float(x.mean()) if x.size else None, "std": None, "ci": None}
    sd = float(np.std(x, ddof=1))
    return {"mean": float(x.mean()), "std": sd,
            "ci": float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * sd / math.sqrt(x.size)}


def _same(ours: dict, theirs: dict, what: str) -> None:
    for k in ("mean", "std", "ci"):
        if ours[k] is None:
            assert theirs[k] is None, (what, k)
        else:
            assert theirs[k] == pytest.approx(ours[k], abs=TOL), (what, k, ours[k], theirs[k])


def _runs(grid_dir: Path, on_disk: bool = False) -> list[dict]:
    """The finished runs of the grid's manifest (``on_disk``: every run directory), read straight from their
    metrics.json."""
    manifest = json.loads((grid_dir / "grid.json").read_text(encoding="utf-8"))
    dirs = ([p.parent.relative_to(grid_dir).as_posix() for p in sorted((grid_dir / "runs").rglob("metrics.json"))]
            if on_disk else [entry["dir"] for entry in manifest["runs"]])
    out = []
    for rel in dirs:
        path = grid_dir / rel / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text(encoding="utf-8"))
            out.append({"dir": rel, "task": m["task"], "method": m["method"], "seed": m["seed"],
                        "lr": float(m["learning_rate"]),
                        "selection_auc": m["selection"]["auc"], "exits": {p["exit_layer"]: p["score"]
                                                                        for p in m["evaluation"]["per_exit"]},
                        "costs": {q["cost_ratio"]: q["score"] for q in m["evaluation"]["interpolated"]
                                  if q["score"] is not None},
                        "calibration_costs": {q["cost_ratio"]: q["score"] for q in m["selection"]["interpolated"]
                                              if q["score"] is not None},
                        "auc": m["evaluation"]["auc"], "n_examples": m["evaluation"]["n_examples"]})
    return out


def _chosen(runs: list[dict], spec: dict, only: list[float] | None = None) -> tuple[dict, dict]:
    """(task, method) -> runs at the rate chosen by seed 0's calibration AUC (ties: the smaller rate; ``only``:
    from these rates), by seed; and (task, method) -> (chosen rate, the rates searched)."""
    assert spec["lr_selection"] == "first_seed"
    first = spec["seeds"][0]
    out, rates = {}, {}
    for key in sorted({(r["task"], r["method"]) for r in runs}):
        cands = {r["lr"]: r["selection_auc"] for r in runs if (r["task"], r["method"]) == key and r["seed"] == first
                 and (only is None or r["lr"] in only)}
        lr = max(cands, key=lambda x: (cands[x], -x))
        rates[key] = (lr, sorted(cands))
        out[key] = {r["seed"]: r for r in runs if (r["task"], r["method"]) == key and r["lr"] == lr}
    return out, rates


def _claim_points(claim: dict) -> list[tuple[str, float]]:
    return [("exits", p["exit_layer"]) if "exit_layer" in p else ("costs", p["cost_ratio"]) for p in claim["points"]]


def check_claims(chosen: dict, pc: dict, tasks: list[str], seeds: list[int]) -> int:
    checked = 0
    for c in pc["claims"]:
        assert c["tasks"] == tasks and c["seeds"] == seeds, c["key"]
        points = _claim_points(c)

        def gap(t: str, s: int, at: list) -> float:
            a, b = chosen[(t, c["a"])][s], chosen[(t, c["b"])][s]
            return float(np.mean([a[kind][v] for kind, v in at]) - np.mean([b[kind][v] for kind, v in at]))

        # the scope: the first exit, the last two, all exits, costs <= 1/2, costs 3/4 to 1 (of those both have)
        a0, b0 = chosen[(tasks[0], c["a"])][seeds[0]], chosen[(tasks[0], c["b"])][seeds[0]]
        exits = [x for x in a0["exits"] if x in b0["exits"]]
        costs = sorted(x for x in set(a0["costs"]) & set(b0["costs"]) if x <= 1.0)
        scope = {"all exits": [("exits", x) for x in exits], f"exit L{exits[0]}": [("exits", exits[0])],
                 "costs <= 1/2": [("costs", x) for x in costs if x <= 0.5],
                 "costs 3/4 to 1": [("costs", x) for x in costs if x >= 0.75]}.get(
            c["over"], [("exits", x) for x in exits[-2:]])
        assert points == scope, c["key"]
        _same(_interval([float(np.mean([gap(t, s, points) for t in tasks])) for s in seeds]), c["gap"], c["key"])
        _same(_interval([float(np.mean([gap(t, s, points) for s in seeds])) for t in tasks]), c["gap_over_tasks"],
              c["key"] + " over tasks")
        for p, (kind, v) in zip(c["points"], points):
            assert p["gap"] == pytest.approx(np.mean([gap(t, s, [(kind, v)]) for t in tasks for s in seeds]), abs=TOL)
        checked += 1
    return checked


def check_moved(grid_dir: Path, spec: dict, chosen: dict, rates: dict, moved: dict) -> int:
    """The "what moved" section: the earlier choice (seed 0's calibration AUC among the earlier rates, over every
    run directory on disk), the choices that changed, both judgements of every claim, and the contributions."""
    left_out = {x.split(" (")[0] for x in moved["earlier_runs"]["left_out"]}
    old_chosen, old_rates = _chosen([r for r in _runs(grid_dir, on_disk=True) if r["dir"] not in left_out], spec,
                                    only=moved["earlier_rates"])
    assert {(e["task"], e["method"]): e["chosen"] for e in moved["earlier_learning_rates"]} == \
        {k: v[0] for k, v in old_rates.items()}
    changed = {k: (old_rates[k][0], rates[k][0]) for k in rates if old_rates[k][0] != rates[k][0]}
    assert {(r["task"], r["method"]): (r["earlier"], r["now"]) for r in moved["changed"]} == changed
    missing = [(t, m) for (t, m), by_seed in old_chosen.items() if not set(spec["seeds"]) <= set(by_seed)]
    assert sorted((x["task"], x["method"]) for x in moved["earlier_runs"]["missing"]) == sorted(missing)
    tasks, seeds = moved["scope"]["tasks"], moved["scope"]["seeds"]
    for side, runs in (("earlier", old_chosen), ("now", chosen)):
        check_claims(runs, {"claims": [{**c, **c[side]} for c in moved["claims"]]}, tasks, seeds)
    for c in moved["claims"]:
        assert {t["task"] for t in c["contributions"]} == {t for t in tasks if (t, c["a"]) in changed
                                                            or (t, c["b"]) in changed}
        assert sum(t["contribution"] for t in c["contributions"]) == pytest.approx(
            c["now"]["gap"]["mean"] - c["earlier"]["gap"]["mean"], abs=TOL)
    return len(moved["claims"])


def check_ablation(report_dir: Path, section: dict, main_chosen: dict) -> Counter:
    """The ladder ablation, recomputed from its grid's run directories and the main grid's chosen runs: each
    ablation run sits at the main grid's chosen rate on the ablation's ladder; per task and method the cells of
    both ladders over the paired seeds and the paired AUC change; SWEET − EE per exit on both ladders and its
    change, per task and over tasks (per seed first); the default-ladder rule's per-task AUCs; the provenance's
    exit layers."""
    counts: Counter = Counter()
    grid_dir = (report_dir / section["runs_from_report"]).parent
    abl: dict = {}
    for r in _runs(grid_dir):
        abl.setdefault((r["task"], r["method"]), {})[r["seed"]] = r
    main_ladder, abl_ladder = section["ladders"]["main"], section["ladders"]["ablation"]
    assert {tuple(p["exit_layers"]) for p in section["provenance"]["runs"]} == {tuple(abl_ladder)}
    assert len(section["provenance"]["runs"]) == sum(len(v) for v in abl.values())

    def scores(r: dict) -> list[float]:
        return [r["exits"][x] for x in sorted(r["exits"])]

    pairs: dict = {}
    for (task, method), by_seed in abl.items():
        assert {r["lr"] for r in by_seed.values()} == {main_chosen[(task, method)][0]["lr"]}, (task, method)
        main = main_chosen[(task, method)]
        seeds = sorted(set(main) & set(by_seed))
        entry = section["per_task"][task][method]
        assert entry["seeds"] == seeds
        if not seeds:
            continue
        pairs[(task, method)] = {"main": main, "ablation": by_seed, "seeds": seeds}
        for ladder, runs, layers in (("main", main, main_ladder), ("ablation", by_seed, abl_ladder)):
            assert entry[ladder]["exit_layers"] == layers == sorted(runs[seeds[0]]["exits"])
            for i, cell in enumerate(entry[ladder]["per_exit"]):
                _same(_interval([scores(runs[s])[i] for s in seeds]), cell, f"ablation {task}/{method}/{ladder}/{i}")
                counts["ablation cells"] += 1
            _same(_interval([runs[s]["auc"] for s in seeds]), entry[ladder]["auc"], f"ablation {task}/{method} AUC")
        _same(_interval([by_seed[s]["auc"] - main[s]["auc"] for s in seeds]), entry["auc_change"],
              f"ablation {task}/{method} AUC change")

    def gap(ladder: str, t: str, s: int, i: int) -> float:
        return scores(pairs[(t, "sweet")][ladder][s])[i] - scores(pairs[(t, "early_exit")][ladder][s])[i]

    sv = section["sweet_vs_ee"]
    blocks = [(sv["average"], "over tasks")] + [(b, t) for t, b in sv["per_task"].items()]
    for block, what in blocks:
        tasks, seeds = block["tasks"], block["seeds"]
        for t in tasks:
            assert set(seeds) <= set(pairs[(t, "sweet")]["seeds"]) & set(pairs[(t, "early_exit")]["seeds"])
        for i in range(len(block["main"])):
            for ladder in ("main", "ablation"):
                _same(_interval([np.mean([gap(ladder, t, s, i) for t in tasks]) for s in seeds]), block[ladder][i],
                      f"SWEET - EE {what} {ladder} exit {i + 1}")
            _same(_interval([np.mean([gap("ablation", t, s, i) - gap("main", t, s, i) for t in tasks])
                             for s in seeds]), block["change"][i], f"SWEET - EE {what} change exit {i + 1}")
            counts["ablation SWEET - EE gaps"] += 1

    for row in section["default_ladder"]["per_task"]:
        t = row["task"]
        for ladder, key in (("main", "main_auc"), ("ablation", "ablation_auc")):
            want = np.mean([np.mean([pairs[(t, m)][ladder][s]["auc"] for s in pairs[(t, m)]["seeds"]])
                            for m in row["methods"]])
            assert row[key] == pytest.approx(want, abs=TOL), (t, ladder)
        assert row["higher"] == (row["ablation_auc"] > row["main_auc"])
        counts["ablation default-ladder tasks"] += 1
    return counts


def check_beyond(report_dir: Path, section: dict, main_chosen: dict) -> Counter:
    """The beyond-the-paper section, recomputed from its grid's run directories and the main grid's chosen runs:
    every run at Early-Exit's chosen rate for its task; each family's value chosen on the selection seed by its
    worst calibration-split deficit against the better of EE and SWEET over the fixed costs (ties: the smaller
    value), with only that value run on later seeds; and every row against EE and SWEET at each fixed cost and by
    AUC (means over seeds of means over tasks, the gap to the better baseline, paired intervals by seed)."""
    counts: Counter = Counter()
    grid_dir = (report_dir / section["runs_from_report"]).parent
    seed0 = section["selection_seed"]
    by: dict = {}  # (task, method) -> seed -> run
    for r in _runs(grid_dir):
        by.setdefault((r["task"], r["method"]), {})[r["seed"]] = r
    for (task, method), by_seed in by.items():
        assert {r["lr"] for r in by_seed.values()} == {main_chosen[(task, "early_exit")][seed0]["lr"]}, (task, method)
    assert len(section["provenance"]["runs"]) == sum(len(v) for v in by.values())

    for sel in section["selection"]:
        task, family = sel["task"], sel["family"]
        ee, sw = (main_chosen[(task, b)][seed0]["calibration_costs"] for b in ("early_exit", "sweet"))
        costs = sorted(c for c in ee if c <= 1.0 + 1e-9)
        assert sel["cost_ratios"] == pytest.approx(costs, abs=1e-8)
        best_base = [max(ee[c], sw[c]) for c in costs]
        assert sel["baseline"] == pytest.approx(best_base, abs=TOL)
        values = {m: d[seed0] for (t, m), d in by.items() if t == task and m.split("@")[0] == family and seed0 in d}
        assert sorted(c["method"] for c in sel["candidates"]) == sorted(values)
        worst = {}
        for cand in sel["candidates"]:
            scores = [values[cand["method"]]["calibration_costs"][c] for c in costs]
            assert cand["scores"] == pytest.approx(scores, abs=TOL)
            worst[cand["method"]] = min(x - b for x, b in zip(scores, best_base))
            assert cand["worst_deficit"] == pytest.approx(worst[cand["method"]], abs=TOL)
        chosen = max(worst, key=lambda m: (worst[m], -float(m.split("@")[1])))
        assert sel["chosen"] == chosen == section["families"][family]["per_task"][task]
        for m in values:  # seeds after the selection seed run the chosen value only
            assert m == chosen or set(by[(task, m)]) == {seed0}, m
        counts["beyond selections"] += 1

    for scope in section["scopes"]:
        tasks, costs = scope["tasks"], scope["versus"]["cost_ratios"]
        base = {b: {t: main_chosen[(t, b)] for t in tasks} for b in scope["versus"]["baselines"]}
        for row, got in scope["versus"]["methods"].items():
            if row == "grad_scale@selected":  # its α choice is checked with the per-task cells
                continue
            family = row.removesuffix("@chosen")
            mine = ({t: by[(t, section["families"][family]["per_task"][t])] for t in tasks} if row.endswith("@chosen")
                    else {t: main_chosen[(t, row)] for t in tasks})

            def avg(runs: dict, s: int, c: float | None) -> float | None:
                x = [runs[t][s]["auc"] if c is None else runs[t][s]["costs"].get(c) for t in tasks]
                return None if any(v is None for v in x) else float(np.mean(x))

            for c, point in [*zip(costs, got["points"]), (None, got["auc"])]:
                seeds = sorted(set.intersection(*(set(d) for d in mine.values()),
                                                *(set(d) for runs in base.values() for d in runs.values())))
                seeds = [s for s in seeds if avg(mine, s, c) is not None
                         and all(avg(runs, s, c) is not None for runs in base.values())]
                assert point["seeds"] == seeds, (scope["name"], row, c)
                mean = float(np.mean([avg(mine, s, c) for s in seeds]))
                assert point["mean"] == pytest.approx(mean, abs=TOL)
                assert point["gap_to_best"] == pytest.approx(
                    mean - max(np.mean([avg(runs, s, c) for s in seeds]) for runs in base.values()), abs=TOL)
                for b, runs in base.items():
                    _same(_interval([avg(mine, s, c) - avg(runs, s, c) for s in seeds]), point[f"vs_{b}"],
                          f"beyond {scope['name']} {row} vs {b} at {c}")
                counts["beyond versus points"] += 1
    return counts


def check_report(report_dir: Path, data_dir: Path | None = None) -> dict:
    """Every check of this module on one report directory; returns how many of each it made."""
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    grid_dir = (report_dir / report["grid"]["runs_from_report"]).parent
    spec = json.loads((grid_dir / "grid.json").read_text(encoding="utf-8"))["spec"]
    runs = _runs(grid_dir)
    chosen, rates = _chosen(runs, spec)
    counts = Counter()

    # learning rates: the choice, and the flag at the top of the rates searched
    for sel in report["learning_rates"]:
        lr, searched = rates[(sel["task"], sel["method"])]
        assert sel["chosen"] == lr and sel["searched"] == searched
        assert sel["at_top"] == (lr == max(searched))
        counts["learning rates"] += 1

    # per-task cells: mean, SD and 95% half-width over seeds; floor markers
    floors = report["floors"]["tasks"]
    for task, by_method in report["per_task"].items():
        ev = floors[task]["evaluation"]
        for method, entry in by_method.items():
            if method == "grad_scale@selected":
                method = entry["selected_method"]
            by_seed = chosen[(task, method)]
            assert entry["seeds"] == sorted(by_seed) and entry["learning_rate"] == rates[(task, method)][0]
            for cell in entry["per_exit"]:
                values = [by_seed[s]["exits"][cell["exit_layer"]] for s in sorted(by_seed)]
                _same(_interval(values), cell, f"{task}/{method}/L{cell['exit_layer']}")
                if ev["known"]:
                    n, k = ev["n"], ev["counts"]
                    assert sum(k) == n == by_seed[min(by_seed)]["n_examples"]
                    constant = [100.0 * x / n for x in k] if entry["metric"] == "accuracy" else [0.0]
                    one = [s for s, v in zip(sorted(by_seed), values) if any(abs(v - c) < 1e-6 for c in constant)]
                    p = max(k) / n
                    floor, se = (100 * p, 100 * math.sqrt(p * (1 - p) / n)) if entry["metric"] == "accuracy" else \
                        (0.0, 100 / math.sqrt(n))
                    assert cell["floor"]["one_class_seeds"] == one, (task, method, cell["exit_layer"])
                    assert cell["floor"]["at_majority"] == (float(np.mean(values)) <= floor + se)
                counts["per-task exit cells"] += 1
            _same(_interval([by_seed[s]["auc"] for s in sorted(by_seed)]), entry["auc"], f"{task}/{method}/AUC")

    # the averages: the tasks where every method has every seed of the grid
    scope = report["average_scope"]
    methods = [m for m in spec["methods"] if any(r["method"] == m for r in runs)]
    for t in scope["tasks"]:
        assert all(set(spec["seeds"]) <= set(chosen[(t, m)]) for m in methods), t
    for t in scope["left_out"]:
        assert any(not set(spec["seeds"]) <= set(chosen.get((t, m), {})) for m in methods), t

    def check_average(average: dict, tasks: list[str], seeds: list[int]) -> None:
        for method in methods:
            got = average[method]
            assert got["tasks"] == tasks and got["seeds"] == seeds
            for cell in got["per_exit"]:
                x = cell["exit_layer"]
                per = {(t, s): chosen[(t, method)][s]["exits"][x] for t in tasks for s in seeds}
                _same(_interval([np.mean([per[(t, s)] for t in tasks]) for s in seeds]), cell, f"avg {method} L{x}")
                _same(_interval([np.mean([per[(t, s)] for s in seeds]) for t in tasks]), cell["over_tasks"],
                      f"avg {method} L{x} over tasks")
                counts["average cells"] += 1

    check_average(report["average"], scope["tasks"], scope["seeds"])
    free = [t for t in scope["tasks"] if not floors[t]["floor_cells"]]
    assert report["floors"]["floor_free_tasks"] == free
    if report.get("paper_claims"):
        counts["claims"] += check_claims(chosen, report["paper_claims"], scope["tasks"], scope["seeds"])
    if free != scope["tasks"] and free:
        check_average(report["floor_free"]["average"], free, scope["seeds"])
        if report["floor_free"].get("paper_claims"):
            counts["claims without floor tasks"] += check_claims(chosen, report["floor_free"]["paper_claims"], free,
                                                                 scope["seeds"])

    ablation = report.get("ablation")
    if ablation and ablation.get("state") != "not run yet":
        counts.update(check_ablation(report_dir, ablation, chosen))
    beyond = report.get("beyond")
    if beyond and beyond.get("state") != "not run yet":
        counts.update(check_beyond(report_dir, beyond, chosen))

    if report.get("moved"):
        counts["claims judged both ways"] += check_moved(grid_dir, spec, chosen, rates, report["moved"])

    # the class counts behind the floors, read straight from the data where a task's dev.tsv has a label column
    for task, folder in (("sst2", "SST-2"), ("rte", "RTE")):
        path = None if data_dir is None else data_dir / folder / "dev.tsv"
        if task in floors and path is not None and path.is_file() and floors[task]["evaluation"]["known"]:
            with open(path, encoding="utf-8", newline="") as f:
                labels = [row["label"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
            assert sorted(Counter(labels).values()) == sorted(floors[task]["evaluation"]["counts"])
            counts["class counts from the data"] += 1
    return dict(counts)


def test_the_committed_report_recomputes_from_the_run_directories():
    counts = check_report(REPORT_DIR, GLUE if (GLUE / "SST-2").is_dir() else None)
    assert counts["learning rates"] >= 28 and counts["per-task exit cells"] >= 28 * 4
    assert counts["average cells"] >= 4 and counts.get("claims", 0) >= 1
    assert counts.get("claims judged both ways", 0) >= 1  # the rates were extended: the claims are judged both ways
    assert counts["ablation cells"] >= 2 * 4 and counts["ablation SWEET - EE gaps"] >= 4  # the ladder ablation
    assert counts["beyond selections"] >= 2 and counts["beyond versus points"] >= 2 * 6  # beyond the paper

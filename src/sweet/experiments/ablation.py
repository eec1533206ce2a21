"""The ladder ablation (issue #25 step 3): the main grid's methods on a second exit ladder, paired by seed.

The ablation grid (``docs/results/paper/ablation``) runs Early-Exit, SWEET and Multi-Model on the paper's
proportions for 6 layers, ``[1, 2, 3, 6]``, at the learning rates the main grid chose. Each of its runs is paired
with the main grid's run of the same task, method and seed (the same seed draws the same training sample), so
every difference below is a per-seed paired difference, mean and 95% t-interval over the seeds both have
(:func:`~sweet.experiments.aggregate.t_interval`). Exits are compared by number (exit 3 is layer 4 on
``[1, 2, 4, 6]`` and layer 3 on ``[1, 2, 3, 6]``). Averages over tasks are taken per seed first, as in the main
tables, over the tasks where the pair exists.

What it answers, each from the numbers:

- does SWEET's late deficit (SWEET − EE at exits 3 and 4) shrink on the ablation's ladder? The paired change
  (ablation's gap − main's gap, per seed) decides: *yes* where its interval lies above 0, *no* where it lies
  below, *not shown* where it contains 0;
- where SWEET's middle exits stand: their rise over SWEET's exit 1 (EE's beside it) and their gap to EE;
- the default-ladder rule: the default stays the main grid's ladder unless the mean AUC (over seeds, then over
  the methods both ladders ran) is higher on the ablation's ladder on every task of the ablation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation import Evaluation
from ..methods import method_label
from .aggregate import stat_row, t_interval
from .cells import TASK_LABELS, fmt, fmt_gap, md_table, task_list
from .gridload import (
    SiblingGrid,
    grid_status_text,
    not_run_yet,
    not_run_yet_line,
    sibling_header,
)
from .spec import task_entry_name

FILLS = ("the proportional ladder [1, 2, 3, 6] on SST-2, MNLI and QNLI: Early-Exit, SWEET and Multi-Model, 3 seeds, "
         "6K examples x 2 epochs, at the learning rates the main grid chose (issue #25 step 3; spec.toml in the "
         "grid directory)")
EE, SWEET = "early_exit", "sweet"
LADDERS = ("main", "ablation")


def _by_seed(runs: list[dict] | None) -> dict[int, dict]:
    return {int(r["seed"]): r for r in runs or []}


def _exits(r: dict) -> list[float]:
    return [p.score for p in Evaluation.of_run(r).per_exit]


def _layers(r: dict) -> list[int]:
    return [p.exit_layer for p in Evaluation.of_run(r).per_exit]


def _auc(r: dict) -> float:
    return Evaluation.of_run(r).curve.auc


def _over(values_by_seed: dict[int, list[float]]) -> dict:
    """Per seed the mean over tasks of the values given; then the interval over seeds."""
    return stat_row(t_interval([float(np.mean(v)) for _, v in sorted(values_by_seed.items())]))


def _per_exit(n: int, tasks: list[str], seeds: list[int], get) -> list[dict]:
    """Per exit number 1..n: ``get(task, seed, i)`` averaged over ``tasks`` per seed, with the interval over seeds."""
    return [{"exit": i + 1, **_over({s: [get(t, s, i) for t in tasks] for s in seeds})} for i in range(n)]


def _n_exits(pairs: dict, tasks: list[str], methods: list[str]) -> int:
    return min(len(_exits(next(iter(pairs[t][m][ladder].values()))))
               for t in tasks for m in methods for ladder in LADDERS)


def build_ablation(main_chosen: dict, sibling: SiblingGrid | None, grid_dir: str | Path) -> dict:
    """The ablation section of report.json; ``main_chosen``: the main grid's (task, method) -> runs at the chosen
    learning rate; ``sibling``: the ablation grid (None: not run yet)."""
    if sibling is None:
        return not_run_yet(grid_dir, FILLS)
    chosen, spec = sibling.chosen, sibling.spec
    tasks = [t for t in map(task_entry_name, spec["tasks"]) if any(chosen.get((t, m)) for m in spec["methods"])]
    methods = [m for m in spec["methods"] if any(chosen.get((t, m)) for t in tasks)]
    pairs: dict[str, dict[str, dict]] = {}  # task -> method -> {"main": seed -> run, "ablation": seed -> run}
    per_task: dict[str, dict] = {}
    for task in tasks:
        for method in methods:
            main, abl = _by_seed(main_chosen.get((task, method))), _by_seed(chosen.get((task, method)))
            seeds = sorted(set(main) & set(abl))
            entry: dict = {"seeds": seeds, "main_seeds": sorted(main), "ablation_seeds": sorted(abl)}
            if seeds:
                pairs.setdefault(task, {})[method] = {"main": {s: main[s] for s in seeds},
                                                      "ablation": {s: abl[s] for s in seeds}}
                for ladder, runs in (("main", main), ("ablation", abl)):
                    scores = [_exits(runs[s]) for s in seeds]
                    entry[ladder] = {
                        "exit_layers": _layers(runs[seeds[0]]),
                        "learning_rate": float(runs[seeds[0]]["learning_rate"]),
                        "per_exit": [{"exit": i + 1, "exit_layer": x, **stat_row(t_interval([v[i] for v in scores]))}
                                     for i, x in enumerate(_layers(runs[seeds[0]]))],
                        "auc": stat_row(t_interval([_auc(runs[s]) for s in seeds])),
                        "runs": [runs[s]["_dir"] for s in seeds],
                    }
                entry["auc_change"] = stat_row(t_interval([_auc(abl[s]) - _auc(main[s]) for s in seeds]))
            per_task.setdefault(task, {})[method] = entry
    section = {**sibling_header(sibling), "tasks": tasks, "methods": methods,
               "ladders": _ladders(pairs), "pairing": "by seed: each ablation run against the main grid's run of the "
               "same task, method and seed", "per_task": per_task}
    section["average"] = _average(pairs, methods)
    section["sweet_vs_ee"] = _sweet_vs_ee(pairs)
    section["middle_exits"] = _middle(pairs)
    section["default_ladder"] = _default_ladder(per_task, tasks, methods, sibling.status()["partial"],
                                                section["ladders"])
    section["answers"] = {"late_deficit": late_deficit_answer(section), "middle_exits": middle_answer(section),
                          "default_ladder": section["default_ladder"]["text"]}
    section["provenance"] = sibling.provenance()
    return section


def _ladders(pairs: dict) -> dict[str, list[int] | None]:
    for by_method in pairs.values():
        for p in by_method.values():
            return {ladder: _layers(next(iter(p[ladder].values()))) for ladder in LADDERS}
    return {ladder: None for ladder in LADDERS}


def _complete(pairs: dict, methods: list[str]) -> tuple[list[str], list[int]]:
    """The tasks where every one of ``methods`` has paired runs, and the seeds they all share there."""
    tasks = [t for t in pairs if all(m in pairs[t] for m in methods)]
    if not tasks:
        return [], []
    return tasks, sorted(set.intersection(*(set(pairs[t][m]["main"]) for t in tasks for m in methods)))


def _average(pairs: dict, methods: list[str]) -> dict:
    """Per method and ladder the per-exit scores and AUC averaged over the tasks it has pairs on (per seed)."""
    out = {}
    for m in methods:
        tasks, seeds = _complete(pairs, [m])
        if not seeds:
            continue
        out[m] = {"tasks": tasks, "seeds": seeds}
        n = _n_exits(pairs, tasks, [m])
        for ladder in LADDERS:
            runs = {t: pairs[t][m][ladder] for t in tasks}
            out[m][ladder] = {
                "exit_layers": _layers(runs[tasks[0]][seeds[0]]),
                "per_exit": _per_exit(n, tasks, seeds, lambda t, s, i, runs=runs: _exits(runs[t][s])[i]),
                "auc": _over({s: [_auc(runs[t][s]) for t in tasks] for s in seeds}),
            }
        out[m]["auc_change"] = _over({s: [_auc(pairs[t][m]["ablation"][s]) - _auc(pairs[t][m]["main"][s])
                                          for t in tasks] for s in seeds})
    return out


def _sweet_vs_ee(pairs: dict) -> dict | None:
    """SWEET − EE per exit on each ladder and the change between ladders, per seed (the seeds where both methods
    ran both ladders), averaged over the tasks that have them, and per task."""
    tasks, seeds = _complete(pairs, [EE, SWEET])
    if not seeds:
        return None

    def gap(ladder: str, t: str, s: int, i: int) -> float:
        return _exits(pairs[t][SWEET][ladder][s])[i] - _exits(pairs[t][EE][ladder][s])[i]

    def block(ts: list[str], ss: list[int]) -> dict:
        n = _n_exits(pairs, ts, [EE, SWEET])
        return {"tasks": ts, "seeds": ss,
                "main": _per_exit(n, ts, ss, lambda t, s, i: gap("main", t, s, i)),
                "ablation": _per_exit(n, ts, ss, lambda t, s, i: gap("ablation", t, s, i)),
                "change": _per_exit(n, ts, ss, lambda t, s, i: gap("ablation", t, s, i) - gap("main", t, s, i))}

    per_task = {}
    for t in pairs:
        if EE in pairs[t] and SWEET in pairs[t]:
            ss = sorted(set(pairs[t][EE]["main"]) & set(pairs[t][SWEET]["main"]))
            if ss:
                per_task[t] = block([t], ss)
    return {"average": block(tasks, seeds), "per_task": per_task,
            "how": "per seed, SWEET's score minus Early-Exit's at the same exit number on the same ladder; change: "
                   "the ablation ladder's gap minus the main ladder's, per seed; mean and 95% t-interval over seeds"}


def _middle(pairs: dict) -> dict | None:
    """Per method (EE, SWEET) and ladder: each exit's rise over the method's own exit 1, per seed, averaged over
    the tasks where both methods ran both ladders."""
    tasks, seeds = _complete(pairs, [EE, SWEET])
    if not seeds:
        return None
    out: dict = {"tasks": tasks, "seeds": seeds}
    n = _n_exits(pairs, tasks, [EE, SWEET])
    for m in (EE, SWEET):
        for ladder in LADDERS:
            runs = {t: pairs[t][m][ladder] for t in tasks}
            out.setdefault(m, {})[ladder] = _per_exit(
                n, tasks, seeds, lambda t, s, i, runs=runs: _exits(runs[t][s])[i] - _exits(runs[t][s])[0])
    return out


def _default_ladder(per_task: dict, tasks: list[str], methods: list[str], partial: bool, ladders: dict) -> dict:
    """The rule of issue #25: the default stays the main ladder unless the ablation's mean AUC (over seeds; here
    also over the methods both ladders ran) is higher on every task of the ablation."""
    rows = []
    for t in tasks:
        both = [m for m in methods if per_task[t][m]["seeds"]]
        if both:
            main = float(np.mean([per_task[t][m]["main"]["auc"]["mean"] for m in both]))
            abl = float(np.mean([per_task[t][m]["ablation"]["auc"]["mean"] for m in both]))
            rows.append({"task": t, "methods": both, "main_auc": main, "ablation_auc": abl, "higher": abl > main})
    main_l, abl_l = ladders["main"], ladders["ablation"]
    complete = len(rows) == len(tasks) and all(r["methods"] == methods for r in rows) and rows
    if not complete:
        decision = "undecided"
        text = (f"Not decided yet: the rule needs every method of the ablation on both ladders on every task; so far "
                f"{len(rows)} of {len(tasks)} task(s). The default stays {main_l} meanwhile.")
    else:
        wins = [r for r in rows if r["higher"]]
        decision = "switch" if len(wins) == len(rows) else "keep"
        detail = ", ".join(f"{TASK_LABELS.get(r['task'], r['task'])} {r['ablation_auc'] - r['main_auc']:+.2f}"
                           for r in rows)
        text = ((f"Switch the default to {abl_l}: " if decision == "switch" else f"The default stays {main_l}: ")
                + f"the mean AUC is higher with {abl_l} on {len(wins)} of {len(rows)} tasks (AUC with {abl_l} minus "
                f"with {main_l}, mean over seeds and over {', '.join(method_label(m) for m in methods)}: {detail})"
                + ("; the rule asks for all of them." if decision == "keep" else ".")
                + (" Provisional: the ablation grid is unfinished." if partial else ""))
    return {"rule": f"the default stays {main_l} unless the mean AUC over seeds (and over the methods both ladders "
                    f"ran) is higher with {abl_l} on every task of the ablation",
            "per_task": rows, "decision": decision, "text": text}


def _change_words(change: dict) -> tuple[str, str]:
    """The answer read from a paired change of SWEET − EE (positive: SWEET's gap narrows): a word, and why."""
    if change["ci"] is None:
        return ("One seed only", f"one seed, no interval: the gap {'narrows' if change['mean'] > 0 else 'widens'} by "
                                 f"{abs(change['mean']):.2f}")
    if change["low"] > 0:
        return "Yes", "it narrows: the paired change lies above 0"
    if change["high"] < 0:
        return "No", "it widens: the paired change lies below 0"
    return "Not shown", "the paired change's interval contains 0"


def late_deficit_answer(section: dict) -> str:
    """"Does SWEET's late deficit shrink when its last exit owns half the layers?", answered from the paired
    gaps at exits 3 and 4 averaged over tasks."""
    sv = section.get("sweet_vs_ee")
    if not sv:
        return "Not answered yet: no task has Early-Exit and SWEET on both ladders with a shared seed."
    avg, (main_l, abl_l) = sv["average"], (section["ladders"]["main"], section["ladders"]["ablation"])
    parts = []
    for i in (3, 4):
        if i > len(avg["change"]):
            continue
        m, a, c = avg["main"][i - 1], avg["ablation"][i - 1], avg["change"][i - 1]
        where = f"exit {i} (L{main_l[i - 1]} → L{abl_l[i - 1]})"
        deficit = "" if m["mean"] < 0 else " (no deficit on the main ladder: SWEET − EE ≥ 0 there)"
        parts.append(f"at {where} SWEET − EE is {fmt_gap(m, 2)} on {main_l} and {fmt_gap(a, 2)} on {abl_l}{deficit}; "
                     f"change {fmt_gap(c, 2)}: {_change_words(c)[1]}")
    seeds = ", ".join(map(str, avg["seeds"]))
    return (f"{_change_words(avg['change'][-1])[0]} at the last exit (over {task_list(avg['tasks'])}, seeds {seeds}; "
            f"the last exit owns "
            f"{main_l[-1] - main_l[-2]} of {main_l[-1]} layers under SWEET on {main_l} and {abl_l[-1] - abl_l[-2]} of "
            f"{abl_l[-1]} on {abl_l}): " + "; ".join(parts) + ".")


def middle_answer(section: dict) -> str:
    mid, sv = section.get("middle_exits"), section.get("sweet_vs_ee")
    if not mid or not sv:
        return "Not answered yet: no task has Early-Exit and SWEET on both ladders with a shared seed."
    out = []
    for ladder in LADDERS:
        layers = section["ladders"][ladder]
        rise = mid[SWEET][ladder]
        ee_rise = mid[EE][ladder]
        gaps = sv["average"][ladder]
        idx = [i for i in (2, 3) if i <= len(rise)]
        out.append(f"on {layers} SWEET's exits " + " and ".join(f"{i} (L{layers[i - 1]})" for i in idx)
                   + " rise " + " and ".join(fmt_gap(rise[i - 1], 2) for i in idx) + " over its exit 1 (EE: "
                   + ", ".join(fmt_gap(ee_rise[i - 1], 2) for i in idx) + ") and stand "
                   + " and ".join(fmt_gap(gaps[i - 1], 2) for i in idx) + " against EE's")
    return "Over " + task_list(mid["tasks"]) + ": " + "; ".join(out) + "."


def ablation_markdown(section: dict) -> list[str]:
    lines = ["## Ladder ablation: the paper's exit proportions (issue #25)", ""]
    if section["state"] == "not run yet":
        return lines + [not_run_yet_line(section), ""]
    lad = section["ladders"]
    lines += [grid_status_text(section) + f". Ladders: the main grid's {lad['main']} against the ablation's "
              f"{lad['ablation']}, each ablation run paired by seed with the main grid's run of the same task and "
              "method (same seed, same training sample). Exits are compared by number. Cells: mean over the paired "
              "seeds ± 95% CI half-width (SD); averages over tasks per seed first.", "",
              f"**Does SWEET's late deficit shrink when its last exit owns half the layers?** "
              f"{section['answers']['late_deficit']}", "",
              f"**SWEET's middle exits.** {section['answers']['middle_exits']}", "",
              f"**Default ladder.** {section['answers']['default_ladder']}", ""]
    if section["average"]:
        lines += ["### Both ladders, average over tasks", "", *_ladder_table(section["average"], lad), ""]
    sv = section.get("sweet_vs_ee")
    if sv:
        lines += ["### SWEET − EE per exit, paired by seed", "", sv["how"] + ".", "",
                  *_gap_table(sv["average"], lad), ""]
        for t, b in sv["per_task"].items():
            lines += [f"{TASK_LABELS.get(t, t)}:", "", *_gap_table(b, lad), ""]
    for t, by_method in section["per_task"].items():
        rows = {m: e for m, e in by_method.items() if e["seeds"]}
        if rows:
            lines += [f"### {TASK_LABELS.get(t, t)}", "", *_ladder_table(rows, lad), ""]
        waiting = [m for m, e in by_method.items() if not e["seeds"]]
        if waiting:
            lines += ["No seed paired yet: " + ", ".join(f"{method_label(m)} (main seeds {by_method[m]['main_seeds']}, "
                                                        f"ablation seeds {by_method[m]['ablation_seeds']})"
                                                        for m in waiting) + ".", ""]
    dl = section["default_ladder"]
    if dl["per_task"]:
        lines += ["### The default-ladder rule", "", f"Rule: {dl['rule']}.", "",
                  *md_table(["task", "methods", f"mean AUC {lad['main']}", f"mean AUC {lad['ablation']}", "higher with"],
                            [[TASK_LABELS.get(r["task"], r["task"]), ", ".join(method_label(m) for m in r["methods"]),
                              f"{r['main_auc']:.2f}", f"{r['ablation_auc']:.2f}",
                              str(lad["ablation"] if r["higher"] else lad["main"])] for r in dl["per_task"]]), ""]
    prov = section["provenance"]
    lines += [f"Runs of the ablation (exit layers in `report.json`, `ablation.provenance.runs`): "
              f"{len(prov['runs'])}; grid wall time {prov['grid_wall_seconds'] / 60:.1f} min.", ""]
    return lines


def _ladder_table(by_method: dict, ladders: dict) -> list[str]:
    n = max(len(e[ladder]["per_exit"]) for e in by_method.values() for ladder in LADDERS)
    rows = []
    for m, e in by_method.items():
        for ladder in LADDERS:
            rows.append([method_label(m), str(e[ladder]["exit_layers"])]
                        + [fmt(p) for p in e[ladder]["per_exit"]] + [fmt(e[ladder]["auc"])])
        rows.append([method_label(m), "AUC change (paired)"] + [""] * n + [fmt_gap(e["auc_change"], 2)])
    return md_table(["method", "ladder"] + [f"exit {i + 1}" for i in range(n)] + ["AUC"], rows)


def _gap_table(block: dict, ladders: dict) -> list[str]:
    n = len(block["main"])
    head = ["SWEET − EE"] + [f"exit {i + 1}" for i in range(n)]
    return md_table(head, [[f"{ladders['main']}"] + [fmt_gap(p, 2) for p in block["main"]],
                           [f"{ladders['ablation']}"] + [fmt_gap(p, 2) for p in block["ablation"]],
                           ["change (ablation − main)"] + [fmt_gap(p, 2) for p in block["change"]]]) + [
        "", f"({len(block['seeds'])} seed(s): {', '.join(map(str, block['seeds']))}; tasks: {task_list(block['tasks'])})"]

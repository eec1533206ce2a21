"""Floors: the cells of a grid report whose scores say nothing about the method, and the tasks free of them.

A score at the floor is one a model reaches without learning the task. Two signs mark an exit's cell (a task,
a method, an exit) as a floor cell:

- **one class**: on some seed the exit predicts a single class. ``metrics.json`` holds each exit's score, not its
  predictions (the per-class tables and confusion matrices of a run cover only its early-exit predictions), so
  this is detected from the score: it equals, to 1e-6 points, the score of predicting one class for every
  example of the evaluation split (accuracy: that class's share of the split; Matthews correlation: 0; F1 of a
  positive class: 2p / (1 + p) for the positive class, 0 for the others; macro F1: that over the number of
  classes). A mixed prediction that lands exactly on that score is counted too: it is no better than the
  constant one.
- **at the majority rate**: the cell's mean over seeds is within one binomial standard error of the majority
  rate, ``100 * sqrt(p (1 - p) / n)`` with ``p`` the majority class's share and ``n`` the size of the evaluation
  split (or below it). For Matthews correlation the floor is 0 and its standard error with no association
  ``100 / sqrt(n)``. Other metrics have no such test. A method whose *best* exit on a task is at the majority
  rate has not learned that task; then every exit of it is at the majority rate.

The class counts come from the data the runs recorded (:func:`evaluation_classes`): the same loader and split
code as the runs, on the data files whose SHA-256 the runs stored. Where the data is not there (a clone without
it) or has changed, the class shares are unknown and only the Matthews correlation's 0 can be tested; the report
says so per task.

:func:`floor_free_tasks` names the tasks where no method has a floor cell: the report repeats its averages and
claims over them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from ..data import load_task, make_splits
from ..datasource import load_run_data
from ..errors import SweetError
from ..io import sha256_file
from ..rundir import RUN_CONFIG, load_run_config

SCORE_TOLERANCE = 1e-6  # points: a score this close to a constant prediction's score is that score

HOW = ("A floor cell: the exit predicts one class on a seed (detected from its score, which equals the score of "
       "predicting one class everywhere on the evaluation split: metrics.json holds no per-exit predictions), or the "
       "mean over seeds is within one binomial standard error, 100 sqrt(p(1-p)/n), of the majority rate p of the "
       "evaluation split of n examples (Matthews correlation: within 100/sqrt(n) of 0), or below it.")


def constant_scores(metric: str, counts: list[int]) -> list[float]:
    """The score, in percent, of predicting class ``c`` for every example, for each class ``c`` (``counts``: the
    evaluation split's examples per class, in label-id order). Raises ValueError for a metric it cannot score."""
    n = sum(counts)
    shares = [k / n for k in counts]
    kind, _, positive = metric.partition(":")
    if kind == "accuracy":
        return [100.0 * p for p in shares]
    if kind == "matthews":
        return [0.0 for _ in counts]
    if kind == "f1":
        pos = int(positive or 1)
        return [100.0 * 2 * shares[pos] / (1 + shares[pos]) if c == pos else 0.0 for c in range(len(counts))]
    if kind == "f1_macro":
        return [100.0 * 2 * p / (1 + p) / len(counts) for p in shares]
    raise ValueError(f"unknown metric '{metric}'")


def majority_floor(metric: str, counts: list[int]) -> tuple[float, float] | None:
    """(floor, one standard error) in points for the "at the majority rate" test; None for a metric without one."""
    n = sum(counts)
    if metric == "accuracy":
        p = max(counts) / n
        return 100.0 * p, 100.0 * math.sqrt(p * (1 - p) / n)
    if metric == "matthews":
        return 0.0, 100.0 / math.sqrt(n)
    return None


def _unknown(why: str) -> dict:
    return {"known": False, "why": why}


def _task_classes(grid_dir: Path, record: dict) -> dict:
    """The evaluation split's class counts for one task, from the data that ``record``'s run recorded."""
    cfg_path = grid_dir / record["_dir"] / RUN_CONFIG
    if not cfg_path.is_file():
        return _unknown(f"the run has no {RUN_CONFIG}")
    try:
        config = load_run_config(cfg_path.parent)
    except SweetError as exc:
        return _unknown(str(exc))
    if config.data_source != "local" and not config.own_data:
        return _unknown(f"data source '{config.data_source}' (the report reads local data files only)")
    if config.data_dir and not Path(config.data_dir).is_dir():  # moved: the data directory of this machine
        config = dataclasses.replace(config, data_dir=None)
    try:
        data = load_run_data(config) if config.own_data else load_task(config.task, config.data_dir, source="local")
        stored = config.extra.get("data_sha256") or {}
        for role, path in data.files.items():
            if role in stored and sha256_file(path) != stored[role]:
                return _unknown(f"the data file '{role}' ({path}) is not the one the runs used (SHA-256 differs)")
        splits = make_splits(data, config.n_train, config.seed, config.calibration_size, config.heldout_eval_size)
    except (SweetError, OSError) as exc:
        return _unknown(f"the data is not readable here ({exc})")
    labels = np.asarray(splits.evaluation.labels, dtype=np.int64)
    n_examples = record["evaluation"]["n_examples"]
    if labels.size != n_examples:
        return _unknown(f"the data gives {labels.size} evaluation examples, the runs scored {n_examples}")
    counts = np.bincount(labels, minlength=data.task.num_labels).tolist()
    return {"known": True, "split": splits.evaluation_name, "n": int(labels.size), "labels": list(data.task.label_names),
            "counts": counts, "majority_rate": 100.0 * max(counts) / labels.size}


def evaluation_classes(grid_dir: str | Path, records: list[dict], tasks: list[str]) -> dict[str, dict]:
    """Per task, the class counts of the split its scores are reported on (``known`` False with ``why`` where the
    data is not at hand). Read once per task, from its first run (every run of a task shares the split)."""
    out = {}
    for task in tasks:
        first = min((r for r in records if r["task"] == task), key=lambda r: r["_dir"])
        out[task] = _task_classes(Path(grid_dir), first)
    return out


def mark_floors(per_task: dict, classes: dict[str, dict]) -> dict:
    """Add ``floor`` to every exit cell of ``per_task`` (task -> method -> its per-task entry): the seeds on which the
    exit predicts one class (``one_class_seeds``), whether its mean is at the majority rate (``at_majority``; None
    where that cannot be tested) and ``floor`` (either). Returns the summary for report.json: per task the split's
    classes, the floor and its standard error, the floor cells and the methods that did not learn the task."""
    summary: dict[str, dict] = {}
    for task, by_method in per_task.items():
        info = classes.get(task) or _unknown("no run")
        metric = next(iter(by_method.values()))["metric"]
        constants = None
        floor = None
        if info["known"]:
            try:
                constants = constant_scores(metric, info["counts"])
            except ValueError:
                constants = None
            floor = majority_floor(metric, info["counts"])
        elif metric == "matthews":
            constants = [0.0]  # predicting one class gives 0 whatever the class counts
        cells, not_learned = [], []
        for method, entry in by_method.items():
            for cell in entry["per_exit"]:
                one = ([s for s, v in zip(entry["seeds"], cell["values"])
                        if any(abs(v - c) <= SCORE_TOLERANCE for c in constants)] if constants is not None else [])
                at = None if floor is None else bool(cell["mean"] <= floor[0] + floor[1])
                cell["floor"] = {"one_class_seeds": one, "at_majority": at, "floor": bool(one) or bool(at)}
                if cell["floor"]["floor"]:
                    cells.append({"method": method, "exit_layer": cell["exit_layer"], **cell["floor"]})
            best = max(c["mean"] for c in entry["per_exit"])
            if floor is not None and best <= floor[0] + floor[1]:
                not_learned.append(method)
        summary[task] = {
            "metric": metric,
            "evaluation": info,
            "floor": None if floor is None else floor[0],
            "standard_error": None if floor is None else floor[1],
            "tests": ("one class, at the majority rate" if floor is not None else
                      "one class" if constants is not None else "none (class counts unknown)"),
            "floor_cells": cells,
            "not_learned_by": not_learned,
        }
    return summary


def floor_free_tasks(summary: dict, tasks: list[str]) -> list[str]:
    """The tasks of ``tasks`` where no method has a floor cell."""
    return [t for t in tasks if t in summary and not summary[t]["floor_cells"]]

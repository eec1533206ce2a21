"""Floors (sweet.experiments.floors): the score of predicting one class, the majority rate and its standard error,
the floor markers of a report's cells, the class counts read from the runs' data, and the averages and claims
repeated over the tasks without a floor cell."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from sweet.experiments import GRID_FILE, spec_from_dict, write_report
from sweet.experiments.floors import constant_scores, evaluation_classes, floor_free_tasks, majority_floor, mark_floors
from sweet.io import atomic_write_json, read_json

from .fake_results import fake_evaluation
from .test_grid import local_grid  # noqa: F401  (a fixture: sst2 + rte, early_exit + multi_model, seeds 0-1)


def test_the_score_of_predicting_one_class_everywhere():
    assert constant_scores("accuracy", [60, 40]) == pytest.approx([60.0, 40.0])
    assert constant_scores("matthews", [60, 40]) == [0.0, 0.0]
    # F1 of the positive class (id 1): predicting it everywhere gives precision p, recall 1
    assert constant_scores("f1", [60, 40]) == pytest.approx([0.0, 100 * 2 * 0.4 / 1.4])
    assert constant_scores("f1:0", [60, 40]) == pytest.approx([100 * 2 * 0.6 / 1.6, 0.0])
    assert constant_scores("f1_macro", [50, 30, 20]) == pytest.approx([100 * 2 * p / (1 + p) / 3 for p in (0.5, 0.3, 0.2)])
    with pytest.raises(ValueError):
        constant_scores("bleu", [1, 2])


def test_the_majority_rate_and_one_binomial_standard_error():
    floor, se = majority_floor("accuracy", [146, 131])  # RTE's validation split
    assert floor == pytest.approx(100 * 146 / 277) and se == pytest.approx(100 * math.sqrt(146 / 277 * 131 / 277 / 277))
    assert se == pytest.approx(3.0, abs=0.01)
    assert majority_floor("matthews", [700, 343]) == pytest.approx((0.0, 100 / math.sqrt(1043)))
    assert majority_floor("f1", [60, 40]) is None


def _cell(layer: int, values: list[float]) -> dict:
    return {"exit_layer": layer, "mean": sum(values) / len(values), "values": values, "n": len(values)}


def _entry(metric: str, cells: list[dict]) -> dict:
    return {"metric": metric, "seeds": [0, 1, 2], "per_exit": cells}


def test_cells_are_marked_one_class_or_at_the_majority_rate_and_tasks_without_them_named():
    # task a: 100 examples, 60 / 40 -> floor 60, SE 4.9. EE exit 1 predicts the majority class on seeds 0 and 2;
    # exit 2 at 64 (within 1 SE: at the majority rate); exit 3 learned. MM learned everywhere.
    # task m: Matthews correlation, class counts unknown: only the 0 of one class can be seen.
    per_task = {
        "a": {"early_exit": _entry("accuracy", [_cell(1, [60.0, 61.0, 60.0]), _cell(2, [64.0, 64.5, 63.5]),
                                               _cell(3, [80.0, 82.0, 81.0])]),
              "multi_model": _entry("accuracy", [_cell(1, [70.0, 71.0, 72.0]), _cell(2, [75.0, 76.0, 77.0]),
                                                 _cell(3, [80.0, 80.0, 81.0])])},
        "b": {"early_exit": _entry("accuracy", [_cell(1, [52.0, 53.0, 51.0]), _cell(2, [53.0, 55.0, 54.0])])},
        "m": {"early_exit": _entry("matthews", [_cell(1, [0.0, 12.0, 0.0]), _cell(2, [20.0, 22.0, 24.0])])},
        "c": {"early_exit": _entry("accuracy", [_cell(1, [70.0, 71.0, 72.0])])},
    }
    classes = {"a": {"known": True, "split": "validation", "n": 100, "counts": [60, 40], "majority_rate": 60.0},
               "b": {"known": True, "split": "validation", "n": 100, "counts": [50, 50], "majority_rate": 50.0},
               "c": {"known": True, "split": "validation", "n": 100, "counts": [50, 50], "majority_rate": 50.0},
               "m": {"known": False, "why": "the data is not readable here"}}
    summary = mark_floors(per_task, classes)
    ee = per_task["a"]["early_exit"]["per_exit"]
    assert ee[0]["floor"] == {"one_class_seeds": [0, 2], "at_majority": True, "floor": True}
    assert ee[1]["floor"] == {"one_class_seeds": [], "at_majority": True, "floor": True}
    assert ee[2]["floor"] == {"one_class_seeds": [], "at_majority": False, "floor": False}
    assert summary["a"]["floor"] == 60.0 and summary["a"]["standard_error"] == pytest.approx(100 * math.sqrt(0.24 / 100))
    assert [(c["method"], c["exit_layer"]) for c in summary["a"]["floor_cells"]] == [("early_exit", 1), ("early_exit", 2)]
    assert summary["a"]["not_learned_by"] == []
    # task b: the best exit (54) is within one SE (5.0) of the majority rate (50): not learned
    assert summary["b"]["not_learned_by"] == ["early_exit"]
    # unknown class counts: Matthews correlation 0 still marks one class; no majority-rate test
    m = per_task["m"]["early_exit"]["per_exit"][0]["floor"]
    assert m == {"one_class_seeds": [0, 2], "at_majority": None, "floor": True}
    assert summary["m"]["tests"] == "one class" and summary["m"]["floor"] is None
    assert floor_free_tasks(summary, ["a", "b", "m", "c"]) == ["c"]


def test_class_counts_come_from_the_runs_data_and_are_unknown_without_it(local_grid, tmp_path):  # noqa: F811
    from sweet.experiments import collect

    _, grid_dir, _ = local_grid
    _, records, _ = collect(grid_dir)
    classes = evaluation_classes(grid_dir, records, ["sst2", "rte"])
    for task in ("sst2", "rte"):
        n = next(r["evaluation"]["n_examples"] for r in records if r["task"] == task)
        assert classes[task]["known"] and sum(classes[task]["counts"]) == classes[task]["n"] == n
        assert classes[task]["majority_rate"] == pytest.approx(100 * max(classes[task]["counts"]) / n)
    # a run whose data file changed since it ran: the counts would not be its split's
    copy = tmp_path / "copy"
    shutil.copytree(grid_dir, copy, ignore=shutil.ignore_patterns("model"))
    first = min((r for r in records if r["task"] == "rte"), key=lambda r: r["_dir"])
    cfg_path = copy / first["_dir"] / "run_config.json"
    cfg = read_json(cfg_path)
    cfg["extra"]["data_sha256"] = {role: "0" * 64 for role in cfg["extra"]["data_sha256"]}
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    (copy / min((r for r in records if r["task"] == "sst2"), key=lambda r: r["_dir"])["_dir"] / "run_config.json").unlink()
    changed = evaluation_classes(copy, records, ["sst2", "rte"])
    assert not changed["rte"]["known"] and "SHA-256 differs" in changed["rte"]["why"]
    assert not changed["sst2"]["known"] and "run_config.json" in changed["sst2"]["why"]


def _fake_grid(grid_dir, scores: dict) -> None:
    """(task, method, seed) -> per-exit scores at exits 1, 2; CoLA scores are Matthews correlations."""
    spec = spec_from_dict({"name": "fake", "tasks": sorted({k[0] for k in scores}), "methods": ["early_exit", "sweet"],
                           "seeds": [0, 1], "learning_rates": [1e-4], "n_train": 100, "exit_layers": [1, 2]})
    runs = []
    for (task, method, seed), (s1, s2) in scores.items():
        metric = "matthews" if task == "cola" else "accuracy"
        ev = fake_evaluation({1: s1, 2: s2}, {0.5: s1, 1.0: s2}, metric=metric)
        rel = f"runs/{task}/{method}/lr0.0001/seed{seed}-fake"
        atomic_write_json(grid_dir / rel / "metrics.json",
                          {"task": task, "method": method, "backbone": "default", "learning_rate": 1e-4, "seed": seed,
                           "n_train": 100, "exit_layers": [1, 2], "evaluation": ev,
                           "selection": {"split": "calibration", "auc": 50.0}, "timing": {"total_seconds": 1.0}})
        runs.append({"dir": rel, "key": "fake", "task": task, "method": method, "seed": seed, "learning_rate": 1e-4,
                     "backbone": "default"})
    atomic_write_json(grid_dir / GRID_FILE, {"spec": spec.to_dict(), "data": {}, "runs": runs})


def test_the_report_repeats_averages_and_claims_without_the_floor_tasks(tmp_path):
    # CoLA: Early-Exit's exit 1 has Matthews correlation 0 on both seeds (one class); SST-2 and QNLI learned
    scores = {("sst2", "early_exit", 0): (70.0, 80.0), ("sst2", "early_exit", 1): (72.0, 82.0),
              ("sst2", "sweet", 0): (74.0, 78.0), ("sst2", "sweet", 1): (75.0, 79.0),
              ("qnli", "early_exit", 0): (60.0, 70.0), ("qnli", "early_exit", 1): (62.0, 71.0),
              ("qnli", "sweet", 0): (63.0, 69.0), ("qnli", "sweet", 1): (65.0, 68.0),
              ("cola", "early_exit", 0): (0.0, 20.0), ("cola", "early_exit", 1): (0.0, 22.0),
              ("cola", "sweet", 0): (10.0, 18.0), ("cola", "sweet", 1): (12.0, 19.0)}
    _fake_grid(tmp_path / "g", scores)
    rep = write_report(tmp_path / "g", tmp_path / "rep")
    fl = rep["floors"]
    assert fl["tasks"]["cola"]["floor_cells"] == [{"method": "early_exit", "exit_layer": 1, "one_class_seeds": [0, 1],
                                                   "at_majority": None, "floor": True}]
    assert fl["tasks"]["sst2"]["tests"] == "none (class counts unknown)"  # no run_config.json: no data to read
    assert fl["floor_free_tasks"] == ["qnli", "sst2"] and fl["floor_tasks"] == ["cola"]
    free = rep["floor_free"]
    assert free["tasks"] == ["qnli", "sst2"]
    # SWEET - EE at exit 1 without CoLA: seed 0 (4 + 3) / 2 = 3.5, seed 1 (3 + 3) / 2 = 3; per task 3.5 and 3
    first = next(c for c in free["paper_claims"]["claims"] if c["key"] == "sweet_vs_ee_first_exit")
    assert first["gap"]["values"] == pytest.approx([3.5, 3.0]) and first["gap_over_tasks"]["values"] == pytest.approx([3.0, 3.5])
    assert free["average"]["early_exit"]["per_exit"][0]["values"] == pytest.approx([65.0, 67.0])
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "## Floors" in md and "Without them: QNLI, SST-2." in md
    assert "| EE | 0.0 ± 0.0 (SD 0.0) †2/2 |" in md  # CoLA's per-task row: the marker next to the cell
    assert "### Individual exit scores, average over QNLI, SST-2 (Table 1)" in md
    assert "Over the tasks where no method has a floor cell (QNLI, SST-2; left out: CoLA)" in md
    assert "**Multiple comparisons.** 5 claims are tested here" in md

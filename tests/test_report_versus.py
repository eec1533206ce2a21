"""The report's comparison of every other method with the better of Early-Exit and SWEET (issue #8's goal)."""

from __future__ import annotations

import pytest

from sweet.errors import SweetError
from sweet.experiments import GRID_FILE, select_alpha, spec_from_dict
from sweet.methods import SELECTED_ALPHA, parse_method
from sweet.io import atomic_write_json
from sweet.experiments import write_report

from .fake_results import fake_evaluation
from .test_grid_sizes import T975_1

COSTS = (0.25, 0.5, 1.0)
# (task, method, seed) -> interpolated scores at COSTS; AUC is their mean
SCORES = {
    ("sst2", "early_exit", 0): (60.0, 70.0, 80.0), ("sst2", "early_exit", 1): (62.0, 72.0, 82.0),
    ("sst2", "sweet", 0): (66.0, 69.0, 78.0), ("sst2", "sweet", 1): (66.0, 71.0, 80.0),
    ("sst2", "grad_scale@0.5", 0): (65.0, 71.0, 81.0), ("sst2", "grad_scale@0.5", 1): (67.0, 73.0, 83.0),
    ("qqp", "early_exit", 0): (50.0, 60.0, 70.0), ("qqp", "early_exit", 1): (50.0, 60.0, 70.0),
    ("qqp", "sweet", 0): (54.0, 60.0, 68.0), ("qqp", "sweet", 1): (56.0, 60.0, 68.0),
    ("qqp", "grad_scale@0.5", 0): (55.0, 61.0, 69.0), ("qqp", "grad_scale@0.5", 1): (55.0, 59.0, 71.0),
}
# (task, method) -> calibration-split (selection) AUC of every seed's run; 50 where not given
SELECTION: dict[tuple[str, str], float] = {}


def _metrics(task, method, seed, scores):
    evaluation = fake_evaluation(dict(zip((1, 2, 4), scores)), dict(zip(COSTS, scores)))
    return {"task": task, "method": method, "backbone": "default", "learning_rate": 1e-4, "seed": seed,
            "n_train": 100, "exit_layers": [1, 2, 4], "evaluation": evaluation,
            "selection": {"split": "calibration", "auc": SELECTION.get((task, method), 50.0)}, "timing": {"total_seconds": 10.0}}


def _grid(grid_dir, methods):
    spec = spec_from_dict({"name": "fake", "tasks": ["sst2", "qqp"], "methods": methods, "seeds": [0, 1],
                           "learning_rates": [1e-4], "n_train": 100, "exit_layers": [1, 2, 4]})
    runs = []
    for (task, method, seed), scores in SCORES.items():
        if method not in methods:
            continue
        rel = f"runs/{task}/{method}/lr0.0001/seed{seed}-fake"
        atomic_write_json(grid_dir / rel / "metrics.json", _metrics(task, method, seed, scores))
        runs.append({"dir": rel, "key": "fake", "task": task, "method": method, "seed": seed, "learning_rate": 1e-4,
                     "backbone": "default"})
    atomic_write_json(grid_dir / GRID_FILE, {"spec": spec.to_dict(), "data": {}, "runs": runs})


def test_gap_to_the_better_of_ee_and_sweet_and_paired_differences(tmp_path):
    _grid(tmp_path / "g", ["early_exit", "sweet", "grad_scale@0.5"])
    rep = write_report(tmp_path / "g", tmp_path / "rep")
    vs = rep["versus_best"]
    assert vs["baselines"] == ["early_exit", "sweet"] and vs["cost_ratios"] == list(COSTS)
    gs = vs["methods"]["grad_scale@0.5"]
    # averages over tasks per seed; then over seeds. At cost 1/4: EE (55, 56) -> 55.5, SWEET (60, 61) -> 60.5,
    # GS (60, 61) -> 60.5: gap to the best 0.0 (at least as good); vs EE +5 (+5, +5); vs SWEET 0 (0, 0)
    p = gs["points"][0]
    assert p["mean"] == pytest.approx(60.5) and p["gap_to_best"] == pytest.approx(0.0)
    assert p["vs_early_exit"]["values"] == pytest.approx([5.0, 5.0]) and p["vs_sweet"]["values"] == pytest.approx([0.0, 0.0])
    # at 1/2: EE (65, 66) 65.5, SWEET (64.5, 65.5) 65, GS (66, 66) 66: +0.5; paired vs EE (+1, 0): CI t*0.5
    p = gs["points"][1]
    assert p["gap_to_best"] == pytest.approx(0.5)
    assert p["vs_early_exit"]["mean"] == pytest.approx(0.5) and p["vs_early_exit"]["ci"] == pytest.approx(T975_1 * 0.5)
    # at 1: EE (75, 76) 75.5, GS (75, 77) 76: +0.5 -> never worse anywhere
    assert gs["points"][2]["gap_to_best"] == pytest.approx(0.5)
    assert gs["never_worse"] is True
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Against the better of Early-Exit and SWEET" in md
    assert "| GS α=0.5 | **+0.0** | **+0.5** | **+0.5** |" in md


def test_a_method_worse_somewhere_is_flagged_and_no_section_without_both_baselines(tmp_path, monkeypatch):
    monkeypatch.setitem(SCORES, ("qqp", "grad_scale@0.5", 1), (40.0, 59.0, 71.0))
    _grid(tmp_path / "g", ["early_exit", "sweet", "grad_scale@0.5"])
    gs = write_report(tmp_path / "g", tmp_path / "rep")["versus_best"]["methods"]["grad_scale@0.5"]
    # at 1/4, GS per seed: (65 + 55) / 2 = 60 and (67 + 40) / 2 = 53.5 -> 56.75; the better baseline is SWEET at 60.5
    assert gs["points"][0]["gap_to_best"] == pytest.approx(56.75 - 60.5)
    assert gs["never_worse"] is False
    assert "| GS α=0.5 | -3.8 |" in (tmp_path / "rep" / "report.md").read_text()
    _grid(tmp_path / "h", ["early_exit", "grad_scale@0.5"])
    rep = write_report(tmp_path / "h", tmp_path / "rep2")
    assert "versus_best" not in rep
    assert "Against the better" not in (tmp_path / "rep2" / "report.md").read_text()


def test_a_partial_grid_compares_on_the_shared_seeds_only(tmp_path):
    _grid(tmp_path / "g", ["early_exit", "sweet", "grad_scale@0.5"])
    grid = __import__("json").loads((tmp_path / "g" / GRID_FILE).read_text())
    drop = [r["dir"] for r in grid["runs"] if r["method"] == "grad_scale@0.5" and r["seed"] == 1]
    for d in drop:
        (tmp_path / "g" / d / "metrics.json").unlink()
    gs = write_report(tmp_path / "g", tmp_path / "rep", partial=True)["versus_best"]["methods"]["grad_scale@0.5"]
    # seed 0 only: at 1/4 EE 55, SWEET 60, GS 60 -> gap 0 (with both seeds of the baselines it would read -0.5)
    assert gs["points"][0]["seeds"] == [0] and gs["points"][0]["gap_to_best"] == pytest.approx(0.0)


# ------------------------------------------------------------------ alpha chosen on the calibration split


def _runs(method, seeds, sel_auc, reported=50.0):
    return [{"task": "t", "method": method, "seed": s, "learning_rate": 1e-4,
             "selection": {"split": "calibration", "auc": sel_auc}, "evaluation": {"auc": reported}} for s in seeds]


def test_alpha_is_on_the_gradient_scaling_line_only():
    assert parse_method("sweet").alpha == 0.0 and parse_method("early_exit").alpha == 1.0
    assert parse_method("grad_scale@0.25").alpha == 0.25 and parse_method("grad_scale").alpha == 0.5
    for other in ("multi_model", "pcgrad", "distill@1", "sweet_then_ee@0.5", "ee_then_sweet@0.5"):
        assert parse_method(other).alpha is None
    with pytest.raises(SweetError):  # the report's entry is not a method one can train
        parse_method(SELECTED_ALPHA)


def test_alpha_is_chosen_by_the_calibration_auc_never_by_the_reported_split():
    chosen = {("t", "early_exit"): _runs("early_exit", [0, 1], 70.0, reported=99.0),
              ("t", "sweet"): _runs("sweet", [0, 1], 71.0, reported=10.0),
              ("t", "grad_scale@0.5"): _runs("grad_scale@0.5", [0, 1], 72.0, reported=10.0),
              ("t", "pcgrad"): _runs("pcgrad", [0, 1], 90.0),        # not on the line: never a candidate
              ("t", "multi_model"): _runs("multi_model", [0, 1], 90.0)}
    pick = select_alpha(chosen)["t"]
    assert pick["chosen"] == "grad_scale@0.5" and pick["alpha"] == 0.5
    assert [c["alpha"] for c in pick["candidates"]] == [0.0, 0.5, 1.0]
    assert [c["mean_selection_auc"] for c in pick["candidates"]] == [71.0, 72.0, 70.0]


def test_alpha_ties_go_to_the_smaller_alpha_and_incomplete_candidates_cannot_win():
    chosen = {("t", "grad_scale@0.75"): _runs("grad_scale@0.75", [0, 1], 70.0),
              ("t", "grad_scale@0.25"): _runs("grad_scale@0.25", [0, 1], 70.0),
              ("t", "early_exit"): _runs("early_exit", [0], 99.0)}  # one seed of two: not eligible
    pick = select_alpha(chosen)["t"]
    assert pick["chosen"] == "grad_scale@0.25"
    assert [c["eligible"] for c in pick["candidates"]] == [True, True, False]


def test_no_alpha_choice_without_a_grad_scale_run_or_a_second_candidate():
    assert select_alpha({("t", "early_exit"): _runs("early_exit", [0], 1.0),
                         ("t", "sweet"): _runs("sweet", [0], 2.0)}) == {}
    assert select_alpha({("t", "grad_scale@0.5"): _runs("grad_scale@0.5", [0], 1.0),
                         ("t", "pcgrad"): _runs("pcgrad", [0], 2.0)}) == {}


def test_report_scores_the_alpha_chosen_per_task_like_any_other_method(tmp_path, monkeypatch):
    # SST-2: SWEET has the best calibration AUC; QQP: grad_scale@0.5 does (the reported scores do not matter)
    monkeypatch.setitem(SELECTION, ("sst2", "sweet"), 80.0)
    monkeypatch.setitem(SELECTION, ("qqp", "grad_scale@0.5"), 80.0)
    _grid(tmp_path / "g", ["early_exit", "sweet", "grad_scale@0.5"])
    rep = write_report(tmp_path / "g", tmp_path / "rep")
    assert rep["methods"][-1] == SELECTED_ALPHA
    picks = {p["task"]: p["chosen"] for p in rep["alpha_selection"]}
    assert picks == {"sst2": "sweet", "qqp": "grad_scale@0.5"}
    sel = rep["per_task"]["sst2"][SELECTED_ALPHA]
    assert sel["selected_method"] == "sweet" and sel["runs"] == rep["per_task"]["sst2"]["sweet"]["runs"]
    assert rep["per_task"]["qqp"][SELECTED_ALPHA]["selected_method"] == "grad_scale@0.5"
    # average over tasks per seed: at cost 1/4, SST-2's SWEET (66, 66) with QQP's GS (55, 55) -> 60.5
    avg = rep["average"][SELECTED_ALPHA]["interpolated"][0]
    assert avg["values"] == pytest.approx([60.5, 60.5])
    # held against EE and SWEET like any candidate: 60.5 vs SWEET's 60.5 at 1/4
    vs = rep["versus_best"]["methods"][SELECTED_ALPHA]
    assert vs["points"][0]["gap_to_best"] == pytest.approx(0.0)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Gradient scale α chosen on the calibration split (`grad_scale@selected`)" in md
    assert "| SST-2 | 0 (SWEET) | **0: 80.00**; 0.5: 50.00; 1: 50.00 |" in md
    assert "| GS α selected |" in md
    assert (tmp_path / "rep" / "curve-average.png").is_file()


def test_no_selected_alpha_row_without_the_scaling_line(tmp_path):
    _grid(tmp_path / "g", ["early_exit", "sweet"])
    rep = write_report(tmp_path / "g", tmp_path / "rep")
    assert SELECTED_ALPHA not in rep["methods"] and "alpha_selection" not in rep
    assert "grad_scale@selected" not in (tmp_path / "rep" / "report.md").read_text()

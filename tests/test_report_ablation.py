"""The paper report's ladder-ablation section (issue #25 step 3), on synthetic grids: pairing by seed with the main
grid, SWEET − EE on both ladders, the answer to "does the late deficit shrink?", the default-ladder rule, the
runs' exit layers in report.json, and the section's "not run yet" and partial states."""

from __future__ import annotations

import pytest

from sweet.errors import SweetError
from sweet.experiments import write_report
from sweet.experiments.aggregate import t_interval

from .fake_grids import write_grid

TASKS = ("sst2", "qnli")


def _main_runs() -> dict:
    runs = {}
    for t in TASKS:
        for s in (0, 1, 2):
            runs[(t, "early_exit", s)] = {"exits": [70 + s, 75 + s, 80 + s, 85 + s]}
            runs[(t, "sweet", s)] = {"exits": [72 + s, 73 + s, 74 + s, 80 + s]}  # SWEET − EE: +2, -2, -6, -5
            runs[(t, "multi_model", s)] = {"exits": [74 + s, 78 + s, 82 + s, 85 + s]}
    return runs


def _ablation_runs(seeds=(0, 1, 2)) -> dict:
    runs = {}
    for t in TASKS:
        for s in seeds:
            runs[(t, "early_exit", s)] = {"exits": [70 + s, 75 + s, 79 + s, 85 + s]}
            # SWEET − EE: +2, -1, -3, -4 + 0.5 s: the last exit's deficit narrows by 1 + 0.5 s against the main ladder
            runs[(t, "sweet", s)] = {"exits": [72 + s, 74 + s, 76 + s, 81 + 1.5 * s]}
            runs[(t, "multi_model", s)] = {"exits": [74 + s, 78 + s, 81 + s, 85 + s]}
    return runs


def _paper(tmp_path, ablation: dict | None = None, **kw):
    write_grid(tmp_path / "paper" / "grid", _main_runs(), name="paper")
    if ablation is not None:
        # as the committed spec: each method at the rate the main grid chose for it
        write_grid(tmp_path / "paper" / "ablation", ablation, name="ablation", exit_layers=(1, 2, 3, 6),
                   spec_extra={"learning_rates_from": str(tmp_path / "paper" / "grid")}, **kw)
    return tmp_path / "paper" / "grid"


def test_the_ablation_is_paired_by_seed_with_the_main_grid(tmp_path):
    # the ablation ran a seed the main grid did not: it is left out of every paired number
    grid = _paper(tmp_path, _ablation_runs(seeds=(0, 1, 2, 3)))
    ab = write_report(grid, tmp_path / "rep")["ablation"]
    assert ab["state"] == "finished" and ab["ladders"] == {"main": [1, 2, 4, 6], "ablation": [1, 2, 3, 6]}
    e = ab["per_task"]["sst2"]["sweet"]
    assert e["seeds"] == [0, 1, 2] and e["ablation_seeds"] == [0, 1, 2, 3] and e["main_seeds"] == [0, 1, 2]
    assert [p["exit_layer"] for p in e["ablation"]["per_exit"]] == [1, 2, 3, 6]
    assert e["ablation"]["per_exit"][3]["values"] == pytest.approx([81.0, 82.5, 84.0])
    # AUC (the mean of the exits here): per seed ablation minus main, paired
    main_auc = [(72 + 73 + 74 + 80) / 4 + s for s in (0, 1, 2)]
    abl_auc = [(72 + 74 + 76 + 81) / 4 + s + 0.125 * s for s in (0, 1, 2)]
    assert e["auc_change"]["values"] == pytest.approx([a - m for a, m in zip(abl_auc, main_auc)])
    # SWEET − EE at the last exit, per seed and averaged over both tasks: main -5 every seed; ablation -4 + 0.5 s
    avg = ab["sweet_vs_ee"]["average"]
    assert avg["tasks"] == list(TASKS) and avg["seeds"] == [0, 1, 2]
    assert avg["main"][3]["values"] == pytest.approx([-5.0, -5.0, -5.0])
    assert avg["ablation"][3]["values"] == pytest.approx([-4.0, -3.5, -3.0])
    change = avg["change"][3]
    assert change["values"] == pytest.approx([1.0, 1.5, 2.0])
    assert change["ci"] == pytest.approx(t_interval([1.0, 1.5, 2.0])["ci"]) and change["low"] > 0
    assert avg["change"][2]["values"] == pytest.approx([3.0, 3.0, 3.0])  # exit 3: -6 (L4) -> -3 (L3)


def test_the_late_deficit_answer_is_computed_from_the_paired_change(tmp_path, monkeypatch):
    grid = _paper(tmp_path, _ablation_runs())
    rep = write_report(grid, tmp_path / "rep")
    answer = rep["ablation"]["answers"]["late_deficit"]
    assert answer.startswith("Yes at the last exit") and "change +1.50 ± 1.24" in answer
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Ladder ablation: the paper's exit proportions (issue #25)" in md
    assert "**Does SWEET's late deficit shrink when its last exit owns half the layers?** Yes" in md
    # the same ablation where SWEET's last exit moves with the seed the other way: the change's interval contains 0
    runs = _ablation_runs()
    for t in TASKS:
        for s, x in zip((0, 1, 2), (-1.0, 3.0, -1.5)):
            runs[(t, "sweet", s)]["exits"][3] = 80 + s + x
    grid = _paper(tmp_path / "b", runs)
    answer = write_report(grid, tmp_path / "b" / "rep")["ablation"]["answers"]["late_deficit"]
    assert answer.startswith("Not shown at the last exit")
    # SWEET's middle exits: their rise over its exit 1 on each ladder, EE's beside it
    mid = rep["ablation"]["middle_exits"]
    assert mid["sweet"]["main"][1]["mean"] == pytest.approx(1.0) and mid["sweet"]["ablation"][2]["mean"] == pytest.approx(4.0)
    assert mid["early_exit"]["main"][2]["mean"] == pytest.approx(10.0)
    assert "SWEET's exits 2 (L2) and 3 (L4) rise +1.00" in rep["ablation"]["answers"]["middle_exits"]


def test_the_default_ladder_switches_only_if_the_auc_is_higher_on_every_task(tmp_path):
    grid = _paper(tmp_path, _ablation_runs())
    rule = write_report(grid, tmp_path / "rep")["ablation"]["default_ladder"]
    # per task, the mean over EE, SWEET and MM of the mean AUC over seeds: ablation minus main = (-0.25 + 1.125 - 0.25) / 3
    assert [r["higher"] for r in rule["per_task"]] == [True, True] and rule["decision"] == "switch"
    assert rule["text"].startswith("Switch the default to [1, 2, 3, 6]")
    runs = _ablation_runs()
    for s in (0, 1, 2):
        runs[("qnli", "early_exit", s)]["exits"][1] = 70 + s  # QNLI's EE loses 5 points at exit 2 on the ablation
    grid = _paper(tmp_path / "b", runs)
    rule = write_report(grid, tmp_path / "b" / "rep")["ablation"]["default_ladder"]
    assert [r["higher"] for r in rule["per_task"]] == [True, False] and rule["decision"] == "keep"
    assert rule["text"].startswith("The default stays [1, 2, 4, 6]: the mean AUC is higher with [1, 2, 3, 6] on 1 of 2")


def test_report_json_holds_the_ablation_runs_with_their_exit_layers(tmp_path):
    grid = _paper(tmp_path, _ablation_runs())
    rep = write_report(grid, tmp_path / "rep")
    runs = rep["ablation"]["provenance"]["runs"]
    assert len(runs) == 18 and {tuple(r["exit_layers"]) for r in runs} == {(1, 2, 3, 6)}
    assert {(r["task"], r["method"], r["seed"]) for r in runs} == set(_ablation_runs())
    assert rep["ablation"]["runs_from_report"] == "../paper/ablation/runs"


def test_not_run_yet_for_the_paper_grid_and_no_section_for_another_grid(tmp_path):
    grid = _paper(tmp_path)  # no ablation directory
    rep = write_report(grid, tmp_path / "rep")
    for key in ("ablation", "base_depth", "beyond"):
        assert rep[key]["state"] == "not run yet"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Not run yet: `" + str(tmp_path / "paper" / "ablation") + "` has no finished run. It will hold the " \
           "proportional ladder [1, 2, 3, 6]" in md
    # a directory with a manifest but no finished run is not run yet too
    write_grid(tmp_path / "paper" / "ablation", {}, name="ablation", exit_layers=(1, 2, 3, 6),
               unfinished=(("sst2", "early_exit", 0),))
    assert write_report(grid, tmp_path / "rep")["ablation"]["state"] == "not run yet"
    # a grid that is not the paper grid has the sections only when given
    other = write_grid(tmp_path / "other" / "grid", _main_runs(), name="custom")
    write_grid(tmp_path / "other" / "ablation", _ablation_runs(), name="ablation", exit_layers=(1, 2, 3, 6))
    rep = write_report(other, tmp_path / "rep2")
    assert not {"ablation", "base_depth", "beyond"} & set(rep)
    rep = write_report(other, tmp_path / "rep2", siblings={"ablation": tmp_path / "other" / "ablation"})
    assert rep["ablation"]["state"] == "finished" and "beyond" not in rep


def test_an_unfinished_ablation_needs_partial_and_is_marked(tmp_path):
    runs = _ablation_runs()
    del runs[("qnli", "sweet", 2)]
    grid = _paper(tmp_path, runs, unfinished=(("qnli", "sweet", 2),))
    with pytest.raises(SweetError, match="1 of 18 runs in .*ablation are not finished"):
        write_report(grid, tmp_path / "rep")
    ab = write_report(grid, tmp_path / "rep", partial=True)["ablation"]
    assert ab["state"] == "partial" and ab["status"]["missing"] == ["runs/qnli/sweet/lr0.0001/seed2-fake"]
    assert ab["per_task"]["qnli"]["sweet"]["seeds"] == [0, 1]
    # the average over tasks uses the seeds every task shares
    assert ab["sweet_vs_ee"]["average"]["seeds"] == [0, 1]
    assert "Provisional" in ab["default_ladder"]["text"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "17 of 18 runs finished (**incomplete**: 1 missing" in md

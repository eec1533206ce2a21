"""The paper report's BASE-depth section (issue #26 part 1), on synthetic grids: Table 1 rows and fixed-cost scores of
the 12-layer grid, the paper's claims judged by the main grid's claims code (Multi-Model's on SST-2 only), and every
claim that cannot be judged named with the reason."""

from __future__ import annotations

import pytest

from sweet.experiments import write_report

from .fake_grids import write_grid

BASE_LADDER = (1, 4, 6, 12)


def _main(tmp_path):
    runs = {("sst2", m, s): {"exits": [70.0 + s, 75.0, 80.0, 85.0]} for m in ("early_exit", "sweet") for s in (0, 1, 2)}
    return write_grid(tmp_path / "paper" / "grid", runs, name="paper")


def _base_runs(with_mm: bool = True) -> dict:
    runs = {}
    for s in (0, 1, 2):
        runs[("sst2", "early_exit", s)] = {"exits": [60.0 + s, 70.0 + s, 80.0 + s, 88.0 + s]}
        runs[("sst2", "sweet", s)] = {"exits": [65.0 + s, 72.0 + s, 79.0 + s, 87.0 + s]}
        if with_mm:
            runs[("sst2", "multi_model", s)] = {"exits": [68.0 + s, 75.0 + s, 82.0 + s, 88.0 + s]}
        runs[("mnli", "early_exit", s)] = {"exits": [50.0 + s, 60.0 + s, 70.0 + s, 75.0 + s]}
        runs[("mnli", "sweet", s)] = {"exits": [53.0 + 2 * s, 61.0 + s, 69.0 + s, 74.0 + s]}
    return runs


def _base(tmp_path, runs: dict, **kw):
    return write_grid(tmp_path / "paper" / "base", runs, name="base", exit_layers=BASE_LADDER, backbone="mpnet", **kw)


def test_table_1_rows_fixed_costs_and_the_claims_on_the_base_grid(tmp_path):
    grid = _main(tmp_path)
    _base(tmp_path, _base_runs())
    rep = write_report(grid, tmp_path / "rep")
    base = rep["base_depth"]
    assert base["state"] == "finished" and base["exit_layers"] == list(BASE_LADDER) and base["backbone"] == "mpnet"
    assert set(base["per_task"]["sst2"]) == {"early_exit", "sweet", "multi_model"}
    assert set(base["per_task"]["mnli"]) == {"early_exit", "sweet"}
    sweet_l1 = base["per_task"]["sst2"]["sweet"]["per_exit"][0]
    assert sweet_l1["mean"] == pytest.approx(66.0) and sweet_l1["std"] == pytest.approx(1.0)
    # the average over tasks: only the methods that ran every task
    assert base["average_scope"]["methods"] == ["early_exit", "sweet"]
    assert base["average"]["sweet"]["per_exit"][0]["values"] == pytest.approx([59.0, 60.5, 62.0])
    # the claims, by the main grid's code: SWEET vs EE over both tasks, Multi-Model's over SST-2 alone
    claims = {c["key"]: c for c in base["paper_claims"]["claims"]}
    first = claims["sweet_vs_ee_first_exit"]
    assert first["tasks"] == ["sst2", "mnli"]
    # per seed: ((65 - 60) + (53 + 2 s - 50 - s)) / 2 = (5 + 3 + s) / 2
    assert first["gap"]["mean"] == pytest.approx(4.5) and first["verdict"] == "supported"
    assert claims["mm_vs_ee_first_exit"]["tasks"] == ["sst2"]
    coverage = {c["key"]: c for c in base["claim_coverage"]}
    assert all(c["judged"] for c in coverage.values())
    assert coverage["mm_vs_ee_exits"]["notes"][0] == "over SST-2 only: MM ran on SST-2"
    assert "one task: no interval with tasks as the unit" in coverage["mm_vs_ee_exits"]["notes"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## At the paper's depth: a 12-layer backbone (issue #26)" in md
    assert "### Individual exits, average over SST-2, MNLI (Table 1 rows)" in md
    assert "### The paper's claims, checked" in md
    assert "| exit L1 | exit L4 | exit L6 | exit L12 |" in md


def test_claims_that_cannot_be_judged_say_why(tmp_path):
    grid = _main(tmp_path)
    _base(tmp_path, _base_runs(with_mm=False))  # Multi-Model is not in this grid at all
    base = write_report(grid, tmp_path / "rep")["base_depth"]
    coverage = {c["key"]: c for c in base["claim_coverage"]}
    assert not coverage["mm_vs_ee_first_exit"]["judged"]
    assert coverage["mm_vs_ee_first_exit"]["why"] == "MM is not in this grid"
    assert coverage["sweet_vs_mm_fast"]["why"] == "MM is not in this grid"
    assert coverage["sweet_vs_ee_exits"]["judged"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Multi-Model's first classifier beats Early-Exit's (the paper's largest gap): **not judged**: MM is not in " \
           "this grid." in md
    # Multi-Model in the grid but not finished yet (a partial grid)
    runs = _base_runs(with_mm=False)
    _base(tmp_path / "b", runs, unfinished=tuple(("sst2", "multi_model", s) for s in (0, 1, 2)))
    grid = _main(tmp_path / "b")
    base = write_report(grid, tmp_path / "b" / "rep", partial=True)["base_depth"]
    coverage = {c["key"]: c for c in base["claim_coverage"]}
    assert coverage["mm_vs_ee_exits"]["why"] == "MM has no finished run yet" and base["state"] == "partial"
    # one seed: judged by its sign only, and said so
    one = {k: v for k, v in _base_runs().items() if k[2] == 0}
    _base(tmp_path / "c", one, seeds=(0,))
    grid = _main(tmp_path / "c")
    coverage = {c["key"]: c for c in write_report(grid, tmp_path / "c" / "rep")["base_depth"]["claim_coverage"]}
    assert "one seed: no interval, only the sign" in coverage["sweet_vs_ee_exits"]["notes"]

"""The paper report's beyond-the-paper section (issue #26 part 3), on synthetic grids with ``grad_scale@A`` and
``sweet_then_ee@F`` standing in for the new method families: the parameter chosen per task by the selection code,
the versus-best table (bold where at least both EE and SWEET), the paired intervals, and the verdict against the
research target (a method behind at one cost misses it), for the families and for the main grid's grad_scale."""

from __future__ import annotations

import numpy as np
import pytest

from sweet.experiments import versus_point, write_report
from sweet.experiments.beyond import _per_task_lines, target_verdict

from .fake_grids import write_grid

EE_COSTS = [70.0, 75.0, 80.0, 85.0, 86.0]
SWEET_COSTS = [74.0, 76.0, 78.0, 80.0, 81.0]
BEST = [74.0, 76.0, 80.0, 85.0, 86.0]  # the better of the two at each cost


def _shift(xs, s):
    return [x + s for x in xs]


def _main(tmp_path, tasks=("sst2", "qnli")):
    runs = {}
    for t in tasks:
        for s in (0, 1, 2):
            runs[(t, "early_exit", s)] = {"exits": _shift([70, 75, 80, 85], s), "costs": _shift(EE_COSTS, s)}
            runs[(t, "sweet", s)] = {"exits": _shift([74, 76, 78, 80], s), "costs": _shift(SWEET_COSTS, s)}
            # behind the better of EE and SWEET by 1 at costs 1/6 and 3/4
            runs[(t, "grad_scale@0.5", s)] = {"exits": _shift([73, 76, 80, 84], s),
                                              "costs": _shift([73, 76, 80, 84, 86], s)}
    return write_grid(tmp_path / "paper" / "grid", runs, name="paper")


def _beyond_runs(seeds_after=(1, 2)) -> dict:
    runs = {}
    for t in ("sst2", "qnli"):
        # grad_scale family: 0.25 ties the better baseline on the calibration split (worst deficit 0), 0.75 is 1
        # behind at 1/2 (worst -1): 0.25 is chosen; on the reported split it ties the best everywhere
        runs[(t, "grad_scale@0.25", 0)] = {"exits": [74, 76, 80, 85], "costs": BEST}
        runs[(t, "grad_scale@0.75", 0)] = {"exits": [75, 77, 79, 86], "costs": [75, 77, 79, 86, 87]}
        # sweet_then_ee family: both values tie on the calibration split: the smaller, 0.25, is chosen; on the
        # reported split it is ahead everywhere but at 3/4, where it is 0.5 behind EE
        for f in (0.25, 0.75):
            runs[(t, f"sweet_then_ee@{f:g}", 0)] = {"exits": [75, 77, 81, 84.5], "costs": [75, 77, 81, 84.5, 87],
                                                     "calibration": BEST}
        for s in seeds_after:
            runs[(t, "grad_scale@0.25", s)] = {"exits": _shift([74, 76, 80, 85], s), "costs": _shift(BEST, s)}
            runs[(t, "sweet_then_ee@0.25", s)] = {"exits": _shift([75, 77, 81, 84.5], s),
                                                  "costs": _shift([75, 77, 81, 84.5, 87], s)}
    return runs


def _beyond(tmp_path, runs, spec_extra_more=None, **kw):
    # as the committed spec: EE's chosen rate per task, the parameter chosen on seed 0 by its worst deficit
    return write_grid(tmp_path / "paper" / "beyond", runs, name="beyond",
                      spec_extra={"learning_rates_from": str(tmp_path / "paper" / "grid"),
                                  "learning_rate_method": "early_exit", "param_selection": "first_seed_worst_deficit",
                                  **(spec_extra_more or {})},
                      **kw)


def test_the_parameter_is_chosen_per_task_and_its_runs_stand_for_the_family(tmp_path):
    grid = _main(tmp_path)
    _beyond(tmp_path, _beyond_runs())
    by = write_report(grid, tmp_path / "rep")["beyond"]
    picks = {(p["task"], p["family"]): p for p in by["selection"]}
    assert picks[("sst2", "grad_scale")]["chosen"] == "grad_scale@0.25"
    assert [c["worst_deficit"] for c in picks[("sst2", "grad_scale")]["candidates"]] == pytest.approx([0.0, -1.0])
    assert picks[("qnli", "sweet_then_ee")]["chosen"] == "sweet_then_ee@0.25"  # a tie: the smaller value
    assert by["families"]["grad_scale"] == {"row": "grad_scale@chosen",
                                            "per_task": {"sst2": "grad_scale@0.25", "qnli": "grad_scale@0.25"}}
    scope = by["scopes"][0]
    assert scope["tasks"] == ["sst2", "qnli"] and len(by["scopes"]) == 1
    row = scope["versus"]["methods"]["grad_scale@chosen"]
    assert row["auc"]["seeds"] == [0, 1, 2]
    # paired by seed with the main grid's EE: at 1/6 the family's 74 + s against EE's 70 + s, every seed
    assert row["points"][0]["vs_early_exit"]["values"] == pytest.approx([4.0, 4.0, 4.0])


def test_bold_where_at_least_both_and_the_verdict_against_the_target(tmp_path):
    grid = _main(tmp_path)
    _beyond(tmp_path, _beyond_runs())
    by = write_report(grid, tmp_path / "rep")["beyond"]
    verdicts = by["scopes"][0]["verdicts"]
    # ties the better of EE and SWEET at every cost, AUC above both: meets the target
    assert verdicts["grad_scale@chosen"]["meets"] is True and verdicts["grad_scale@chosen"]["text"] == "meets the target"
    # ahead everywhere but 0.5 behind at 3/4: misses it, naming the cost
    ste = verdicts["sweet_then_ee@chosen"]
    assert ste["meets"] is False and ste["failures"] == [
        "cost 3/4: mean -0.50 below the better of EE and SWEET",
        "cost 3/4: paired interval against EE wholly below 0 (-0.50 ± 0.00 (SD 0.00))"]
    # the main grid's grad_scale, held to the same standard
    gs = verdicts["grad_scale@0.5"]
    assert gs["meets"] is False and list(dict.fromkeys(f.split(":")[0] for f in gs["failures"])) == ["cost 1/6", "cost 3/4"]
    assert by["verdict"] == "On SST-2, QNLI: grad_scale@chosen meets the target."
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| grad_scale@chosen | **75.0** | **77.0** | **81.0** | **86.0** | **87.0** |" in md
    assert "| sweet_then_ee@chosen | **76.0** | **78.0** | **82.0** | 85.5 | **88.0** |" in md
    assert "| better of EE and SWEET | 75.0 | 77.0 | 81.0 | 86.0 | 87.0 |" in md
    assert "- GS α=0.5: misses the target: cost 1/6: mean -1.00 below the better of EE and SWEET" in md
    assert "### The parameter chosen per task" in md and "**0.25: +0.00**; 0.75: -1.00" in md


def test_the_verdict_needs_intervals_and_names_a_scope_short_of_the_main_tasks(tmp_path):
    # seeds 1-2 not run yet: one seed, no interval: not judged
    grid = _main(tmp_path)
    _beyond(tmp_path, _beyond_runs(seeds_after=()), unfinished=(("sst2", "grad_scale@0.25", 1),))
    by = write_report(grid, tmp_path / "rep", partial=True)["beyond"]
    v = by["scopes"][0]["verdicts"]["grad_scale@chosen"]
    assert v["meets"] is None and v["text"].startswith("not judged yet: cost 1/6: one seed, no interval against EE")
    assert by["state"] == "partial" and "(not judged yet: grad_scale@chosen)" in by["verdict"]
    # the main grid ran a third task: the families are judged on the screened tasks only, and it says so
    grid = _main(tmp_path / "b", tasks=("sst2", "qnli", "mrpc"))
    _beyond(tmp_path / "b", _beyond_runs())
    by = write_report(grid, tmp_path / "b" / "rep")["beyond"]
    assert [s["name"] for s in by["scopes"]] == ["screened", "main"]
    assert by["scopes"][0]["verdicts"]["grad_scale@chosen"]["text"] == (
        "meets the target (on SST-2, QNLI only; the target is stated on the average over all 3 tasks of the main "
        "grid, which a full test must confirm)")
    assert set(by["scopes"][1]["verdicts"]) == {"grad_scale@0.5", "grad_scale@selected"}


def test_a_full_test_keeps_the_screen_and_judges_the_family_taken_further_on_every_task(tmp_path):
    # as the committed spec: the screen (sst2, qnli) runs both families; the full test runs one family on mrpc
    grid = _main(tmp_path, tasks=("sst2", "qnli", "mrpc"))
    runs = _beyond_runs()
    runs[("mrpc", "grad_scale@0.25", 0)] = {"exits": [74, 76, 80, 85], "costs": BEST}
    runs[("mrpc", "grad_scale@0.75", 0)] = {"exits": [75, 77, 79, 86], "costs": [75, 77, 79, 86, 87]}
    for s in (1, 2):
        runs[("mrpc", "grad_scale@0.25", s)] = {"exits": _shift([74, 76, 80, 85], s), "costs": _shift(BEST, s)}
    only = {"mrpc": ["grad_scale@0.25", "grad_scale@0.75"]}
    _beyond(tmp_path, runs, spec_extra_more={"task_methods": only})
    by = write_report(grid, tmp_path / "rep")["beyond"]
    assert [(s["name"], s["tasks"]) for s in by["scopes"]] == [("screened", ["sst2", "qnli"]),
                                                               ("main", ["sst2", "qnli", "mrpc"])]
    assert set(by["scopes"][0]["verdicts"]) == {"grad_scale@chosen", "sweet_then_ee@chosen", "grad_scale@0.5",
                                                "grad_scale@selected"}
    main = by["scopes"][1]["verdicts"]
    assert "sweet_then_ee@chosen" not in main and main["grad_scale@chosen"]["text"] == "meets the target"
    assert by["families"]["grad_scale"]["per_task"]["mrpc"] == "grad_scale@0.25"
    assert by["verdict"].endswith("On SST-2, QNLI, MRPC: grad_scale@chosen meets the target (not compared here, "
                                  "without runs on every one of these tasks: sweet_then_ee@chosen).")


def test_the_per_task_differences_say_where_a_scopes_gap_comes_from(tmp_path):
    grid = _main(tmp_path)
    runs = _beyond_runs()
    for s in (0, 1, 2):  # QNLI's chosen sweet_then_ee 2 points lower on the reported split (not the calibration split)
        r = runs[("qnli", "sweet_then_ee@0.25", s)]
        runs[("qnli", "sweet_then_ee@0.25", s)] = {**r, "exits": _shift(r["exits"], -2), "costs": _shift(r["costs"], -2)}
    _beyond(tmp_path, runs)
    scope = write_report(grid, tmp_path / "rep")["beyond"]["scopes"][0]
    ste = scope["per_task"]["sweet_then_ee@chosen"]
    # against EE (costs 70 75 80 85 86): SST-2 75 77 81 84.5 87, QNLI 2 lower; against SWEET (74 76 78 80 81)
    assert ste["sst2"]["vs_early_exit"][:5] == pytest.approx([5.0, 2.0, 1.0, -0.5, 1.0])
    assert ste["qnli"]["vs_early_exit"][:5] == pytest.approx([3.0, 0.0, -1.0, -2.5, -1.0])
    assert ste["qnli"]["vs_sweet"][:5] == pytest.approx([-1.0, -1.0, 1.0, 2.5, 4.0])
    # their mean over the tasks is the scope's paired mean, at each cost and in AUC
    row = scope["versus"]["methods"]["sweet_then_ee@chosen"]
    for b in ("early_exit", "sweet"):
        means = [p[f"vs_{b}"]["mean"] for p in row["points"]] + [row["auc"][f"vs_{b}"]["mean"]]
        assert [(x + y) / 2 for x, y in zip(ste["sst2"][f"vs_{b}"], ste["qnli"][f"vs_{b}"])] == pytest.approx(means)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Per task (where the differences come from)" in md
    assert "| sweet_then_ee@chosen | QNLI | +3.0 / -1.0 | +0.0 / -1.0 | -1.0 / +1.0 | -2.5 / +2.5 | -1.0 / +4.0 |" in md
    # a difference that rounds to zero is written "+0.0", never "-0.0"
    tiny = {"tasks": ["sst2", "qnli"], "versus": {"cost_ratios": [1.0]},
            "per_task": {"own@chosen": {"sst2": {"vs_early_exit": [-0.04, -0.04], "vs_sweet": [0.06, -0.06]}}}}
    assert _per_task_lines(tiny)[4] == "| own@chosen | SST-2 | +0.0 / +0.1 | +0.0 / -0.1 |"


def test_not_run_yet_still_judges_the_main_grids_grad_scale(tmp_path):
    grid = _main(tmp_path)
    by = write_report(grid, tmp_path / "rep")["beyond"]
    assert by["state"] == "not run yet" and by["scopes"][0]["verdicts"]["grad_scale@0.5"]["meets"] is False
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Not run yet: `" in md and "`own@RHO` and `ee_anchor@F`" in md


def test_an_interval_wholly_below_zero_fails_even_where_the_mean_ties():
    tie = {"mean": 80.0, "gap_to_best": 0.0, "seeds": [0, 1, 2],
           "vs_early_exit": {"mean": 0.0, "ci": 0.5, "low": -0.5, "high": 0.5, "std": 0.2},
           "vs_sweet": {"mean": -0.2, "ci": 0.1, "low": -0.3, "high": -0.1, "std": 0.04}}
    row = {"points": [dict(tie, cost_ratio=c) for c in (0.25, 1.0)], "auc": tie}
    v = target_verdict(row, ["sst2"], ["sst2"])
    assert v["meets"] is False and v["failures"][0].startswith("cost 1/4: paired interval against SWEET wholly below 0")


def test_an_exact_tie_off_by_float_noise_meets_the_target():
    # the same examples right as the better baseline (EE), averaged over four tasks of 872 examples: a gap of 0
    # that floats carry as ~1e-14 below it; versus_point makes it exactly 0, so the target does not fail on it
    ee_counts, mine_counts = [770, 727, 702, 653], [790, 727, 691, 644]
    ee = {s: float(np.mean([c / 872 * 100 for c in ee_counts])) for s in range(3)}
    mine = {s: float(np.mean([c / 872 * 100 for c in mine_counts])) for s in range(3)}
    assert mine[0] - ee[0] != 0.0
    tie = versus_point(mine, {"early_exit": ee, "sweet": {s: v - 1.0 for s, v in ee.items()}})
    assert tie["gap_to_best"] == 0.0 and (tie["vs_early_exit"]["low"], tie["vs_early_exit"]["high"]) == (0.0, 0.0)
    row = {"points": [dict(tie, cost_ratio=c) for c in (0.25, 1.0)], "auc": tie}
    v = target_verdict(row, ["sst2"], ["sst2"])
    assert v["meets"] is True and v["failures"] == []
    behind = dict(tie, gap_to_best=-0.01)  # a real (if small) deficit still fails
    assert target_verdict({"points": [dict(behind, cost_ratio=0.25)], "auc": tie}, ["sst2"], ["sst2"])["meets"] is False

"""The paper's claims checked on a grid: paired gaps (per seed the mean over tasks, then a t-interval over
seeds), the scopes (exits, first exit, last two exits, fast and slow costs) and the verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from sweet.experiments import CLAIMS, Claim, check_claims, paired_gaps, t_interval, write_report
from sweet.io import read_json

from .fake_results import fake_evaluation
from .test_grid import local_grid  # noqa: F401  (a fixture: sst2 + rte, early_exit + multi_model, seeds 0-1)


def _run(seed: int, exits: dict[int, float], costs: dict[float, float]) -> dict:
    return {"seed": seed, "evaluation": fake_evaluation(exits, costs)}


def _grid(gap_by_seed: dict[int, float], tasks=("a", "b")) -> dict:
    """EE scores 70 everywhere; SWEET = EE + gap at exit 1 and the fast costs, - gap at the last two exits."""
    chosen = {}
    for t in tasks:
        chosen[(t, "early_exit")] = [_run(s, {1: 70, 2: 70, 4: 70, 6: 70}, {0.25: 70, 0.5: 70, 0.75: 70, 1.0: 70})
                                     for s in gap_by_seed]
        chosen[(t, "sweet")] = [_run(s, {1: 70 + g, 2: 70, 4: 70 - g, 6: 70 - g},
                                     {0.25: 70 + g, 0.5: 70 + g, 0.75: 70 - g, 1.0: 70 - g})
                                for s, g in gap_by_seed.items()]
    return chosen


def test_gaps_are_paired_per_seed_and_averaged_over_the_scope():
    res = check_claims(_grid({0: 3.0, 1: 5.0, 2: 4.0}), ["a", "b"])
    by_key = {c["key"]: c for c in res["claims"]}
    assert set(by_key) == {"sweet_vs_ee_exits", "sweet_vs_ee_first_exit", "sweet_vs_ee_late_exits",
                           "sweet_vs_ee_fast", "sweet_vs_ee_slow"}  # no Multi-Model in this grid
    first = by_key["sweet_vs_ee_first_exit"]["gap"]
    ref = t_interval([3.0, 5.0, 4.0])
    assert first["values"] == pytest.approx([3.0, 5.0, 4.0]) and first["ci"] == pytest.approx(ref["ci"])
    assert by_key["sweet_vs_ee_first_exit"]["verdict"] == "supported"
    # mean over exits: (g + 0 - g - g) / 4 = -g / 4 per seed
    assert by_key["sweet_vs_ee_exits"]["gap"]["values"] == pytest.approx([-0.75, -1.25, -1.0])
    assert by_key["sweet_vs_ee_exits"]["verdict"] == "contradicted"
    assert by_key["sweet_vs_ee_late_exits"]["verdict"] == "supported"  # claimed below EE, and it is
    assert by_key["sweet_vs_ee_fast"]["gap"]["values"] == pytest.approx([3.0, 5.0, 4.0])
    assert by_key["sweet_vs_ee_slow"]["over"] == "costs 3/4 to 1" and by_key["sweet_vs_ee_slow"]["verdict"] == "supported"
    pair = res["pairs"][0]
    assert [p["exit_layer"] for p in pair["per_exit"]] == [1, 2, 4, 6]
    assert [p["cost_ratio"] for p in pair["per_cost"]] == [0.25, 0.5, 0.75, 1.0]


def test_verdicts_follow_the_interval_and_say_when_there_is_one_seed():
    claim = Claim("x", "sweet", "early_exit", "exits", ">0", "", "")
    assert claim.verdict(t_interval([1.0, 2.0, 1.5])) == "supported"
    assert claim.verdict(t_interval([-1.0, -2.0, -1.5])) == "contradicted"
    assert claim.verdict(t_interval([-1.0, 2.0, 0.5])) == "inconclusive"
    assert claim.verdict(t_interval([0.7])) == "one seed: same sign as claimed"
    assert claim.verdict(t_interval([])) == "no data"
    assert claim.verdict(t_interval([0.7]), unit="task") == "one task: same sign as claimed"
    # an exact tie whose float sum is not quite 0 (the MPNet grid's first SST-2 seed: exit gaps of +20, 0, -11 and
    # -9 examples of 872) is no difference, not the opposite sign; likewise an interval of exact ties
    tie = [20 / 8.72, 0.0, -11 / 8.72, -9 / 8.72]
    assert sum(tie) / 4 != 0.0
    assert claim.verdict(t_interval([sum(tie) / 4])) == "one seed: no difference (gap 0)"
    assert Claim("z", "sweet", "early_exit", "slow", "<0", "", "").verdict(t_interval([sum(tie) / 4])) == \
        "one seed: no difference (gap 0)"
    assert claim.verdict(t_interval([sum(tie) / 4] * 3)) == "inconclusive"
    # "comparable or better" states what passes and what does not
    comparable = Claim("y", "sweet", "multi_model", "fast", ">=0", "", "")
    assert comparable.verdict(t_interval([1.0, 2.0, 1.5])) == "supported (better)"
    assert comparable.verdict(t_interval([-1.0, 2.0, 0.5])) == "supported (comparable)"
    assert comparable.verdict(t_interval([-1.0, 2.0, 0.5]), point_gaps=[-0.5, 0.2]) == "supported (comparable)"
    # behind at every point of the scope: not comparable, even though the interval reaches 0
    assert comparable.verdict(t_interval([-1.0, 2.0, -2.5]), point_gaps=[-0.9, -0.6, -0.1]) == "behind at every point"
    assert comparable.verdict(t_interval([-1.0, -2.0, -1.5])) == "contradicted"
    assert comparable.verdict(t_interval([0.0])) == "one seed: same sign as claimed"  # a tie is comparable
    # a point where A ties is not a point where A is behind (check_claims snaps float noise to 0: see below)
    assert comparable.verdict(t_interval([-1.0, 2.0, -2.5]), point_gaps=[0.0, -0.6]) == "supported (comparable)"
    assert comparable.verdict(t_interval([-0.1])) == "one seed: opposite sign as claimed"
    assert {c.key for c in CLAIMS} >= {"mm_vs_ee_exits", "sweet_vs_ee_exits", "sweet_vs_ee_fast", "sweet_vs_mm_fast"}


def test_an_exact_tie_is_a_gap_of_exactly_0_where_the_gaps_are_made():
    # correct-example counts of 872 at exits 1, 2, 4, 6: SWEET +20, 0, -11, -9 against EE, a tie over the four exits
    # that floats carry as ~1e-14 below 0; the claim reads it as no difference, not as the opposite sign
    ee, sw = ([c / 872 * 100 for c in counts] for counts in ([770, 727, 702, 653], [790, 727, 691, 644]))
    assert np.mean(sw) - np.mean(ee) != 0.0
    chosen = {("a", m): [_run(0, dict(zip((1, 2, 4, 6), scores)), {1.0: scores[-1]})]
              for m, scores in (("early_exit", ee), ("sweet", sw))}
    exits = next(c for c in check_claims(chosen, ["a"])["claims"] if c["key"] == "sweet_vs_ee_exits")
    assert exits["gap"]["mean"] == 0.0 and exits["verdict"] == "one seed: no difference (gap 0)"
    # three seeds of the same tie: an interval of exactly [0, 0], inconclusive rather than a sign
    three = t_interval([float(np.mean(sw) - np.mean(ee))] * 3)
    assert (three["mean"], three["low"], three["high"]) == (0.0, 0.0, 0.0)


def test_only_tasks_and_seeds_both_methods_have_are_compared():
    chosen = _grid({0: 2.0, 1: 4.0}, tasks=("a", "b"))
    chosen[("b", "sweet")] = chosen[("b", "sweet")][:1]  # task b: SWEET has seed 0 only
    chosen[("c", "early_exit")] = chosen[("a", "early_exit")]  # task c: no SWEET at all
    g = paired_gaps(chosen, ["a", "b", "c"], "sweet", "early_exit")
    assert g["tasks"] == ["a", "b"] and g["seeds"] == [0]
    assert paired_gaps(chosen, ["a"], "multi_model", "early_exit") is None


def test_claims_can_be_held_to_given_seeds():
    chosen = _grid({0: 2.0, 1: 4.0, 2: 9.0})
    assert paired_gaps(chosen, ["a", "b"], "sweet", "early_exit", seeds=[0, 1, 7])["seeds"] == [0, 1]
    res = check_claims(chosen, ["a", "b"], seeds=[0, 1])
    first = next(c for c in res["claims"] if c["key"] == "sweet_vs_ee_first_exit")
    assert first["seeds"] == [0, 1] and first["gap"]["values"] == pytest.approx([2.0, 4.0])
    assert check_claims(chosen, ["a", "b"], seeds=[5]) is None  # no seed left: no claim can be checked


def test_the_report_checks_the_claims_on_a_real_grid(local_grid, tmp_path):
    _, grid_dir, _ = local_grid
    rep = write_report(grid_dir, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    claims = {c["key"]: c for c in rep["paper_claims"]["claims"]}
    assert set(claims) == {"mm_vs_ee_exits", "mm_vs_ee_first_exit", "mm_vs_ee_fast", "mm_vs_ee_slow"}
    # recompute the mean-over-exits gap by hand from the run directories
    manifest = read_json(grid_dir / "grid.json")["runs"]
    per_seed = []
    for seed in (0, 1):
        gaps = []
        for task in ("sst2", "rte"):
            scores = {}
            for method in ("multi_model", "early_exit"):
                lr = rep["per_task"][task][method]["learning_rate"]
                d = next(r["dir"] for r in manifest if (r["task"], r["method"], r["seed"], r["learning_rate"])
                         == (task, method, seed, lr))
                scores[method] = [p["score"] for p in read_json(grid_dir / d / "metrics.json")["evaluation"]["per_exit"]]
            gaps.append(np.mean(scores["multi_model"]) - np.mean(scores["early_exit"]))
        per_seed.append(np.mean(gaps))
    assert claims["mm_vs_ee_exits"]["gap"]["values"] == pytest.approx(per_seed)
    assert "## The paper's claims, checked" in md and "+2.3 on average" in md and "Paired gap MM − EE" in md


def test_a_partial_report_averages_only_tasks_every_method_finished(local_grid, tmp_path):
    import shutil

    _, grid_dir, _ = local_grid
    copy = tmp_path / "copy"
    shutil.copytree(grid_dir, copy, ignore=shutil.ignore_patterns("model"))
    for r in read_json(copy / "grid.json")["runs"]:
        if (r["task"], r["method"]) == ("rte", "multi_model") or (r["task"], r["seed"]) == ("sst2", 1):
            (copy / r["dir"] / "metrics.json").unlink()
    rep = write_report(copy, tmp_path / "rep", partial=True)
    assert rep["average_scope"] == {"tasks": ["sst2"], "seeds": [0], "left_out": ["rte"]}
    assert all(a["tasks"] == ["sst2"] and a["seeds"] == [0] for a in rep["average"].values())
    assert rep["per_task"]["rte"]["early_exit"]["seeds"] == [0, 1]  # the per-task table keeps what there is
    assert all(c["tasks"] == ["sst2"] and c["seeds"] == [0] for c in rep["paper_claims"]["claims"])
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "**Partial grid:**" in md and "left out: RTE" in md


def test_a_task_with_only_its_first_seed_does_not_shrink_the_averages_to_that_seed(local_grid, tmp_path):
    # a first_seed grid reaches this state on every task: seed 0 of every method is finished, seed 1 is not yet
    import shutil

    _, grid_dir, _ = local_grid
    copy = tmp_path / "copy"
    shutil.copytree(grid_dir, copy, ignore=shutil.ignore_patterns("model"))
    for r in read_json(copy / "grid.json")["runs"]:
        if (r["task"], r["seed"]) == ("rte", 1):
            (copy / r["dir"] / "metrics.json").unlink()
    rep = write_report(copy, tmp_path / "rep", partial=True)
    assert rep["average_scope"] == {"tasks": ["sst2"], "seeds": [0, 1], "left_out": ["rte"]}
    assert all(c["seeds"] == [0, 1] for c in rep["paper_claims"]["claims"])
    assert rep["per_task"]["rte"]["early_exit"]["seeds"] == [0]


def test_each_claim_has_an_interval_over_tasks_a_bonferroni_one_and_its_point_gaps():
    # SWEET - EE at exit 1: task a +1, +3, +2 (seeds 0-2); task b +5, +7, +9 -> per seed (3, 5, 5.5); per task (2, 7)
    chosen = _grid({0: 1.0, 1: 3.0, 2: 2.0}, tasks=("a",)) | {
        k: v for k, v in _grid({0: 5.0, 1: 7.0, 2: 9.0}, tasks=("b",)).items()}
    res = check_claims(chosen, ["a", "b"])
    first = next(c for c in res["claims"] if c["key"] == "sweet_vs_ee_first_exit")
    assert first["gap"]["values"] == pytest.approx([3.0, 5.0, 5.5])
    assert first["gap_over_tasks"]["values"] == pytest.approx([2.0, 7.0])
    assert first["gap_over_tasks"]["ci"] == pytest.approx(t_interval([2.0, 7.0])["ci"])  # df 1: t 12.7
    assert first["verdict"] == "supported" and first["verdict_over_tasks"] == "inconclusive"
    assert res["n_claims"] == 5 and res["bonferroni_confidence"] == pytest.approx(0.99)
    assert first["gap_bonferroni"]["ci"] == pytest.approx(t_interval([3.0, 5.0, 5.5], confidence=0.99)["ci"])
    assert first["points"] == [{"exit_layer": 1, "gap": pytest.approx(4.5)}]
    fast = next(c for c in res["claims"] if c["key"] == "sweet_vs_ee_fast")
    assert [p["cost_ratio"] for p in fast["points"]] == [0.25, 0.5]
    # the paired gaps per exit and cost have the interval over tasks too
    assert res["pairs"][0]["per_exit"][0]["over_tasks"]["values"] == pytest.approx([2.0, 7.0])

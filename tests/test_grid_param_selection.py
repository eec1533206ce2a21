"""Choosing a parameterised method's parameter on the first seed by its worst deficit against the better of
Early-Exit and SWEET over the five fixed costs of the calibration split (:func:`select_method_parameters`)."""

from __future__ import annotations

import pytest

from sweet.errors import SweetError
from sweet.experiments.selection import select_method_parameters

COSTS = [1 / 6, 0.25, 0.5, 0.75, 1.0]


def record(task: str, method: str, seed: int, scores: list[float | None], *, lr: float = 1e-4,
           backbone: str = "default", reported: list[float] | None = None) -> dict:
    """A run's metrics.json as far as selection reads it: the calibration split's scores at the fixed costs (and,
    to show it is never read, different scores on the reported split)."""

    def block(split: str, values: list[float | None]) -> dict:
        return {"n_examples": 100, "metric": "accuracy", "policy": {"name": "confidence"},
                "per_exit": [{"exit_layer": 1, "score": 50.0}],
                "curve": [{"threshold": 1.0, "cost_ratio": 1.0, "ideal_speedup": 1.0, "score": 50.0,
                           "exit_counts": [0, 100]}],
                "interpolated": [{"cost_ratio": c, "score": v} for c, v in zip(COSTS, values)],
                "auc": 50.0, "auc_range": [1 / 6, 1.0], "split": split}

    return {"task": task, "method": method, "backbone": backbone, "seed": seed, "learning_rate": lr, "n_train": 6000,
            "selection": block("calibration", scores),
            "evaluation": block("validation", reported or [99.0] * len(COSTS))}


EE = [70.0, 72.0, 78.0, 82.0, 85.0]
SWEET = [74.0, 75.0, 77.0, 79.0, 80.0]  # better at the two cheapest costs: the baseline is [74, 75, 78, 82, 85]


def baselines(task: str = "sst2", seed: int = 0) -> list[dict]:
    return [record(task, "early_exit", seed, EE), record(task, "sweet", seed, SWEET)]


def test_the_largest_worst_deficit_wins_not_the_best_average():
    runs = [
        # never more than 1 behind the better baseline: worst deficit -1
        record("sst2", "grad_scale@0.25", 0, [73.0, 75.0, 78.0, 81.0, 85.0]),
        # far ahead early, 3 behind at cost 1: worst deficit -3 (the best mean, not chosen)
        record("sst2", "grad_scale@0.5", 0, [80.0, 80.0, 80.0, 82.0, 82.0]),
        # worst deficit -2
        record("sst2", "grad_scale@0.75", 0, [74.0, 73.0, 78.0, 82.0, 85.0]),
    ]
    (choice,) = select_method_parameters(runs, baselines(), seed=0).values()
    assert choice["chosen"] == "grad_scale@0.25" and choice["param"] == 0.25
    assert choice["baseline"] == [74.0, 75.0, 78.0, 82.0, 85.0]
    worst = {c["param"]: c["worst_deficit"] for c in choice["candidates"]}
    assert worst == {0.25: -1.0, 0.5: -3.0, 0.75: -2.0}
    assert choice["candidates"][1]["deficits"] == [6.0, 5.0, 2.0, 0.0, -3.0]
    assert choice["cost_ratios"] == pytest.approx(COSTS)
    assert "worst deficit" in choice["criterion"] and "seed 0" in choice["criterion"]


def test_ties_go_to_the_smaller_parameter_and_families_are_chosen_apart():
    same = [74.0, 75.0, 78.0, 82.0, 85.0]
    runs = [record("sst2", "sweet_then_ee@0.75", 0, same), record("sst2", "sweet_then_ee@0.25", 0, same),
            record("sst2", "grad_scale@0.5", 0, [60.0] * 5), record("sst2", "grad_scale@0.1", 0, [70.0] * 5)]
    out = select_method_parameters(runs, baselines(), seed=0)
    assert {k[1]: v["chosen"] for k, v in out.items()} == {"sweet_then_ee": "sweet_then_ee@0.25",
                                                           "grad_scale": "grad_scale@0.1"}


def test_only_the_given_seed_and_the_calibration_split_count():
    runs = [record("sst2", "grad_scale@0.25", 0, [60.0] * 5, reported=[100.0] * 5),
            record("sst2", "grad_scale@0.75", 0, [70.0] * 5, reported=[0.0] * 5),
            # on seed 1 the other value would win: must not matter
            record("sst2", "grad_scale@0.25", 1, [90.0] * 5), record("sst2", "grad_scale@0.75", 1, [10.0] * 5)]
    refs = baselines() + baselines(seed=1)
    (choice,) = select_method_parameters(runs, refs, seed=0).values()
    assert choice["chosen"] == "grad_scale@0.75"
    (choice1,) = select_method_parameters(runs, refs, seed=1).values()
    assert choice1["chosen"] == "grad_scale@0.25"


def test_tasks_are_chosen_apart_against_their_own_baselines():
    runs = [record("sst2", "grad_scale@0.25", 0, [74.0, 75.0, 78.0, 82.0, 85.0]),
            record("sst2", "grad_scale@0.75", 0, [70.0] * 5),
            record("mnli", "grad_scale@0.25", 0, [50.0] * 5),
            record("mnli", "grad_scale@0.75", 0, [60.0] * 5)]
    out = select_method_parameters(runs, baselines("sst2") + baselines("mnli"), seed=0)
    assert {k[0]: v["chosen"] for k, v in out.items()} == {"sst2": "grad_scale@0.25", "mnli": "grad_scale@0.75"}


def test_nothing_to_choose_without_two_values_or_both_baselines():
    two = [record("sst2", "grad_scale@0.25", 0, [70.0] * 5), record("sst2", "grad_scale@0.75", 0, [71.0] * 5)]
    assert select_method_parameters(two[:1], baselines(), seed=0) == {}
    assert select_method_parameters(two, baselines()[:1], seed=0) == {}  # no SWEET run
    assert select_method_parameters(two, baselines(seed=1), seed=0) == {}  # baselines of another seed
    # methods without a parameter are no family to choose in
    assert select_method_parameters([record("sst2", "pcgrad", 0, [70.0] * 5), *baselines()], baselines(), seed=0) == {}


def test_a_value_missing_a_fixed_cost_cannot_win_and_none_at_all_is_refused():
    runs = [record("sst2", "grad_scale@0.25", 0, [None, 99.0, 99.0, 99.0, 99.0]),
            record("sst2", "grad_scale@0.75", 0, [60.0] * 5)]
    (choice,) = select_method_parameters(runs, baselines(), seed=0).values()
    assert choice["chosen"] == "grad_scale@0.75" and choice["candidates"][0]["eligible"] is False
    with pytest.raises(SweetError, match="no value has a calibration-split score at every fixed cost"):
        select_method_parameters(runs[:1] + [record("sst2", "grad_scale@0.5", 0, [None] * 5)], baselines(), seed=0)


def test_duplicates_and_selection_on_the_reported_split_are_refused():
    runs = [record("sst2", "grad_scale@0.25", 0, [70.0] * 5), record("sst2", "grad_scale@0.75", 0, [70.0] * 5)]
    with pytest.raises(SweetError, match="grad_scale@0.25/seed=0: two runs"):
        select_method_parameters(runs + [record("sst2", "grad_scale@0.25", 0, [70.0] * 5, lr=2e-4)], baselines(), 0)
    with pytest.raises(SweetError, match="early_exit/seed=0: two baseline runs"):
        select_method_parameters(runs, baselines() + [record("sst2", "early_exit", 0, EE, lr=2e-4)], 0)
    bad = record("sst2", "grad_scale@0.25", 0, [70.0] * 5)
    bad["evaluation"]["split"] = "calibration"
    with pytest.raises(SweetError, match="the selection split is the reported split"):
        select_method_parameters([bad, runs[1]], baselines(), 0)

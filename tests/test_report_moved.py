"""The report's "what moved" section (:mod:`sweet.experiments.moved`) on made-up grids whose learning rates were
extended: the restricted selection, the earlier choice's runs read from the grid directory (listed or not), the
per-task contributions that sum to each claim's change, a claim that did not move, and a missing earlier cell."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from sweet.experiments import (
    GRID_FILE,
    build_report,
    select_learning_rates,
    spec_from_dict,
    write_report,
)
from sweet.experiments.moved import earlier_rates
from sweet.io import atomic_write_json, read_json

from .fake_grids import run_metrics

RATES = (5e-5, 1e-4, 2e-4)
EARLIER = (5e-5, 1e-4)
TASKS = ("sst2", "mrpc", "rte")
METHODS = ("early_exit", "sweet", "multi_model")
LAYERS = [1, 2, 4, 6]
LAUNCHES = [{"command": "sweet grid --output g --lrs 5e-5,1e-4 --seeds 0,1,2 --lr-selection first_seed",
             "wall_seconds": 60.0},
            {"command": "sweet grid --output g --lrs=5e-5,1e-4,2e-4 --update-spec", "wall_seconds": 60.0}]


def _exits(task: str, method: str, seed: int, lr: float) -> list[float]:
    rng = np.random.default_rng(zlib.crc32(f"{task}/{method}/{seed}/{lr:g}".encode()))
    return [round(float(x), 3) for x in np.sort(60 + 10 * rng.random() + 12 * rng.random(4))]


def _write_run(grid_dir: Path, task: str, method: str, seed: int, lr: float, auc: float, epochs: int = 1) -> str:
    rel = f"runs/{task}/{method}/lr{lr:g}/seed{seed}-k{seed}"
    atomic_write_json(grid_dir / rel / "metrics.json", run_metrics(task, method, seed, _exits(task, method, seed, lr),
                                                                   LAYERS, calibration=[auc] * 5, lr=lr))
    atomic_write_json(grid_dir / rel / "run_config.json", {
        "task": task, "method": method, "seed": seed, "learning_rate": lr, "n_train": 100, "backbone": "default",
        "epochs": epochs, "data_dir": f"/data/{seed}", "environment": {"sweet": "test"}})
    return rel


def write_extended(grid_dir: Path, choices: dict[tuple[str, str], tuple[float, float]], rates=RATES,
                   launches=LAUNCHES) -> Path:
    """A first-seed grid that searched ``rates``: seed 0 at every rate, seeds 1-2 at the choice from ``rates``
    (listed) and at the earlier choice from :data:`EARLIER` (on disk, unlisted where it differs). ``choices``:
    (task, method) -> (earlier choice, choice now); every other cell chooses 1e-4 both times."""
    entries = []
    for task in TASKS:
        for method in METHODS:
            old, new = choices.get((task, method), (1e-4, 1e-4))
            for seed in (0, 1, 2):
                for lr in (rates if seed == 0 else sorted({old, new})):
                    if lr not in rates and seed == 0:
                        continue
                    auc = 72.0 if lr == new else 71.0 if lr == old else 70.0  # seed 0's calibration AUC decides
                    rel = _write_run(grid_dir, task, method, seed, lr, auc)
                    if seed == 0 or lr == new:
                        entries.append({"dir": rel, "key": f"k{seed}", "task": task, "method": method, "seed": seed,
                                        "learning_rate": lr, "backbone": "default", "n_train": 100})
    spec = spec_from_dict({"name": "extended", "tasks": list(TASKS), "methods": list(METHODS), "seeds": [0, 1, 2],
                           "learning_rates": list(rates), "n_train": 100, "exit_layers": LAYERS,
                           "backbone": "default", "lr_selection": "first_seed"})
    atomic_write_json(grid_dir / GRID_FILE, {"spec": spec.to_dict(), "data": {}, "runs": entries})
    if launches:
        atomic_write_json(grid_dir / "launches.json", launches)
    return grid_dir


ONLY_MM = {("sst2", "multi_model"): (1e-4, 2e-4), ("mrpc", "multi_model"): (5e-5, 2e-4)}
EE_AND_MM = {("sst2", "multi_model"): (1e-4, 2e-4), ("sst2", "early_exit"): (5e-5, 2e-4),
             ("rte", "sweet"): (5e-5, 2e-4)}


def test_the_restricted_selection_picks_only_from_the_allowed_rates(tmp_path):
    grid = write_extended(tmp_path / "g", ONLY_MM)
    records = [read_json(grid / e["dir"] / "metrics.json") for e in read_json(grid / GRID_FILE)["runs"]]
    full = select_learning_rates(records, on_seed=0)
    earlier = select_learning_rates(records, on_seed=0, only_rates=EARLIER)
    assert full[("sst2", "multi_model", "default")]["chosen"] == 2e-4
    for sel in earlier.values():
        assert sel["chosen"] in EARLIER and {c["learning_rate"] for c in sel["candidates"]} == set(EARLIER)
    assert earlier[("sst2", "multi_model", "default")]["chosen"] == 1e-4
    assert earlier[("mrpc", "multi_model", "default")]["chosen"] == 5e-5
    assert select_learning_rates(records, on_seed=0, only_rates=[2e-4])[("rte", "sweet", "default")]["chosen"] == 2e-4


def test_the_earlier_rates_come_from_the_launch_records():
    assert earlier_rates(LAUNCHES, RATES) == list(EARLIER)
    assert earlier_rates(LAUNCHES[:1], EARLIER) is None  # never extended
    assert earlier_rates([{"command": "sweet grid --spec s.toml"}], RATES) is None  # rates from a spec file
    assert earlier_rates(LAUNCHES + [{"command": "sweet grid --lrs 5e-5,1e-4,2e-4,3e-4"}], [5e-5, 1e-4, 2e-4, 3e-4]) \
        == [5e-5, 1e-4, 2e-4]
    # extended to 4 rates, then 3e-4 dropped again: the earlier set is still the one the grid was extended from
    wider = [LAUNCHES[0], {"command": "sweet grid --lrs 5e-5,1e-4,2e-4,3e-4"}, LAUNCHES[1]]
    assert earlier_rates(wider, RATES) == list(EARLIER)


@pytest.mark.parametrize("choices", [ONLY_MM, EE_AND_MM], ids=["only-mm", "ee-and-mm"])
def test_each_claims_change_is_the_sum_of_its_tasks_contributions(tmp_path, choices):
    rep = build_report(write_extended(tmp_path / "g", choices))
    moved = rep["moved"]
    assert moved["earlier_rates"] == list(EARLIER) and moved["rates"] == list(RATES)
    assert {(r["task"], r["method"]): (r["earlier"], r["now"]) for r in moved["changed"]} == choices
    assert moved["earlier_runs"]["missing"] == [] and moved["earlier_runs"]["left_out"] == []
    assert moved["provisional"] == []  # every rate finished on seed 0
    assert moved["earlier_runs"]["n"] == 3 * 3 * 3 and moved["earlier_runs"]["unlisted"] == 2 * len(choices)
    assert moved["scope"]["tasks"] == list(TASKS) and moved["scope"]["seeds"] == [0, 1, 2]
    assert "earlier_all_tasks" not in moved  # the same tasks and seeds as the earlier choice's own report
    now = {c["key"]: c for c in rep["paper_claims"]["claims"]}
    assert len(moved["claims"]) == len(now) == 10
    for c in moved["claims"]:
        assert c["now"]["gap"] == now[c["key"]]["gap"]  # the new judgement is the report's claims table
        total = c["now"]["gap"]["mean"] - c["earlier"]["gap"]["mean"]
        assert c["change"] == pytest.approx(total, abs=1e-12)
        assert sum(t["contribution"] for t in c["contributions"]) == pytest.approx(total, abs=1e-9)
        for t in c["contributions"]:
            assert sum(x["part"] for x in t["cells"]) == pytest.approx(t["contribution"], abs=1e-9)
            assert {x["method"] for x in t["cells"]} == {m for m in (c["a"], c["b"]) if (t["task"], m) in choices}
        moved_tasks = {t for t, m in choices if m in (c["a"], c["b"])}
        assert {t["task"] for t in c["contributions"]} == moved_tasks
        by_size = sorted(c["contributions"], key=lambda t: -abs(t["contribution"]))
        assert c["largest"] == [t["task"] for t in by_size[:2]]
    write_report(tmp_path / "g", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "## What moved when the learning rates were extended" in md
    assert f"Learning-rate choices that changed: {len(choices)} of 9." in md
    if choices is ONLY_MM:  # SWEET − EE: neither method's rate changed anywhere
        for c in moved["claims"]:
            if {c["a"], c["b"]} == {"sweet", "early_exit"}:
                assert c["contributions"] == [] and c["change"] == 0.0 and not c["verdict_moved"]
                assert c["earlier"]["gap"] == c["now"]["gap"]
        assert md.count("No chosen rate of SWEET or EE changed on these tasks, so nothing moved.") == 5
        assert "By task: SST-2" in md and "MM 5e-05 → 0.0002" in md


def test_the_earlier_judgement_is_the_earlier_grids_report(tmp_path):
    # the same runs as a grid that only ever searched the earlier rates: its own report's claims
    moved = build_report(write_extended(tmp_path / "g", EE_AND_MM))["moved"]
    earlier_only = {k: (old, old) for k, (old, _) in EE_AND_MM.items()}
    old_report = build_report(write_extended(tmp_path / "old", earlier_only, rates=EARLIER, launches=None))
    assert "moved" not in old_report  # never extended: no section
    old = {c["key"]: c for c in old_report["paper_claims"]["claims"]}
    for c in moved["claims"]:
        for k in ("gap", "verdict", "gap_over_tasks", "verdict_over_tasks"):
            assert c["earlier"][k] == old[c["key"]][k], (c["key"], k)


def test_a_missing_or_foreign_earlier_run_is_named(tmp_path):
    grid = write_extended(tmp_path / "g", ONLY_MM)
    shutil.rmtree(grid / "runs/sst2/multi_model/lr0.0001/seed2-k2")  # an earlier choice's run gone
    _write_run(grid, "mrpc", "multi_model", 1, 5e-5, 71.0, epochs=2)  # one from another config
    (grid / "runs/rte/early_exit/lr0.0002/seed0-k0/metrics.json").unlink()  # a rate not finished on seed 0 yet
    rep = write_report(grid, tmp_path / "rep", partial=True)
    moved = rep["moved"]
    assert moved["earlier_runs"]["missing"] == [
        {"task": "mrpc", "method": "multi_model", "learning_rate": 5e-5, "seeds": [1]},
        {"task": "sst2", "method": "multi_model", "learning_rate": 1e-4, "seeds": [2]}]
    assert moved["earlier_runs"]["left_out"] == [
        ("runs/mrpc/multi_model/lr5e-05/seed1-k1 (its config differs from runs/mrpc/multi_model/lr5e-05/seed0-k0's "
         "in epochs)")]
    # judged only where both choices have every run: RTE (SST-2 and MRPC lack an earlier seed)
    assert moved["scope"]["tasks"] == ["rte"] and moved["scope"]["claims_tasks"] == list(TASKS)
    assert "earlier_all_tasks" not in moved  # RTE is also the only task where the earlier choice is complete
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert ("**Missing** from the earlier choice: MRPC MM at 5e-05, seed(s) 1; SST-2 MM at 0.0001, seed(s) 2." in md)
    assert "Run directories not used: runs/mrpc/multi_model/lr5e-05/seed1-k1 (its config differs" in md
    assert "the claims table above is over SST-2, MRPC, RTE: here only the tasks and seeds where both" in md
    assert moved["provisional"] == [{"task": "rte", "method": "early_exit", "unfinished_rates": [2e-4]}]
    assert ("Learning-rate choices that changed: 2 of 9 (1 of the 9 still provisional: a rate of the full set has not "
            "finished on the selecting seed for RTE).") in md

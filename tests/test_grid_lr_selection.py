"""Choosing the learning rate on the first seed alone (``lr_selection = "first_seed"``): the two-stage plan, the
runs waiting for their rate, the order of execution, continuation, and the report's rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sweet.errors import SweetError
from sweet.experiments import GRID_FILE, grid_status, run_grid, select_learning_rates, spec_from_dict, write_report
from sweet.io import atomic_write_json, read_json
from sweet.config import RunConfig
from sweet.rundir import METRICS_FILE, RUN_CONFIG

from .test_grid import _never, local_grid, tiny_spec  # noqa: F401  (local_grid is a fixture)


def _spec(backbone, **over):
    raw = {"name": "first-seed", "tasks": ["rte", "sst2"], "methods": ["early_exit", "multi_model"],
           "seeds": [0, 1, 2], "learning_rates": [1e-3, 3e-3], "backbone": str(backbone), "exit_layers": [1, 2, 4],
           "n_train": 80, "epochs": 1, "calibration_size": 40, "lr_selection": "first_seed"}
    raw.update(over)
    return spec_from_dict(raw)


# the calibration-split AUC the fake runs report: early_exit is best at 3e-3 on seed 0 (and worse there on
# seeds 1 and 2, which must not matter), multi_model best at 1e-3
def _auc(cfg: RunConfig) -> float:
    best = {"early_exit": 3e-3, "multi_model": 1e-3}[cfg.method]
    good = cfg.learning_rate == best
    return 60.0 + (10.0 if good == (cfg.seed == 0) else 0.0) + cfg.seed


class FakeRuns:
    """An executor that writes what a finished run writes (config, metrics) without training anything."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, config: dict, out_dir: str, progress: bool = False) -> dict:
        cfg = RunConfig.from_dict(config)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RUN_CONFIG, cfg.to_dict())
        auc = _auc(cfg)
        atomic_write_json(out / METRICS_FILE, {
            "task": cfg.task, "method": cfg.method, "backbone": cfg.backbone, "seed": cfg.seed,
            "learning_rate": cfg.learning_rate, "n_train": cfg.n_train,
            "selection": {"split": "calibration", "auc": auc}, "evaluation": {"split": "validation", "auc": auc},
        })
        self.calls.append((cfg.task, cfg.method, cfg.learning_rate, cfg.seed))
        return {"dir": out_dir, "seconds": 0.0, "auc": auc, "selection_auc": auc}


def test_spec_counts_runs_and_validates_the_rule(tiny_backbone_dir):
    spec = _spec(tiny_backbone_dir)
    assert spec.n_runs == 2 * 2 * (2 + 2)  # per task and method: 2 rates on seed 0, then seeds 1 and 2
    assert _spec(tiny_backbone_dir, lr_selection="all_seeds").n_runs == 2 * 2 * 3 * 2
    assert _spec(tiny_backbone_dir, learning_rates=[1e-3]).n_runs == 2 * 2 * 3  # one rate: nothing to choose
    with pytest.raises(SweetError, match="field 'lr_selection': must be one of all_seeds, first_seed"):
        _spec(tiny_backbone_dir, lr_selection="seed0")


def test_later_seeds_wait_then_run_at_the_rate_chosen_on_the_first_seed(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    spec = _spec(tiny_backbone_dir)
    st = grid_status(spec, tmp_path / "g", str(tiny_glue_dir))
    assert (st["n_runs"], st["pending"], st["waiting"]) == (16, 8, 8)
    assert st["estimate_seconds_left"] > 0 and sum(r["state"] == "waiting" for r in st["runs"]) == 8

    fake = FakeRuns()
    res = run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), progress=False, executor=fake)
    assert res.n_runs == 16 and len(res.executed) == 16 and not res.failed
    # task by task: seed 0 at every rate, then seeds 1 and 2 at the chosen rate (not the rate seeds 1-2 favour)
    stage2 = [(m, 3e-3 if m == "early_exit" else 1e-3, s) for s in (1, 2) for m in ("early_exit", "multi_model")]
    expected = []
    for task in ("rte", "sst2"):
        expected += [(task, m, lr, 0) for lr in (1e-3, 3e-3) for m in ("early_exit", "multi_model")]
        expected += [(task, m, lr, s) for m, lr, s in stage2]
    assert fake.calls == expected
    manifest = read_json(tmp_path / "g" / GRID_FILE)
    assert len(manifest["runs"]) == 16 and "waiting" not in manifest
    assert grid_status(spec, tmp_path / "g", str(tiny_glue_dir))["finished"] == 16

    # the report chooses the same rates by the same rule, and says so
    records = [read_json(tmp_path / "g" / r["dir"] / METRICS_FILE) for r in manifest["runs"]]
    chosen = {k[1]: v["chosen"] for k, v in select_learning_rates(records, on_seed=0).items() if k[0] == "rte"}
    assert chosen == {"early_exit": 3e-3, "multi_model": 1e-3}
    assert select_learning_rates(records, on_seed=0)[("rte", "early_exit", str(tiny_backbone_dir))]["criterion"].startswith(
        "area under the speed-accuracy curve on the calibration split of seed 0")


def test_a_stopped_first_stage_leaves_later_seeds_waiting_and_continues(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    spec = _spec(tiny_backbone_dir, tasks=["rte"])
    fake = FakeRuns()

    def fails_once(config, out_dir, progress=False):
        if (config["method"], config["learning_rate"], config["seed"]) == ("multi_model", 3e-3, 0) and not fails_once.done:
            fails_once.done = True
            raise RuntimeError("machine went away (simulated)")
        return fake(config, out_dir, progress)

    fails_once.done = False
    with pytest.raises(SweetError, match="1 of 6 run"):
        run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), progress=False, executor=fails_once)
    # early_exit's seed 0 finished at both rates, so its seeds 1 and 2 ran; multi_model's still wait
    manifest = read_json(tmp_path / "g" / GRID_FILE)
    assert [(w["method"], w["seed"]) for w in manifest["waiting"]] == [("multi_model", 1), ("multi_model", 2)]
    st = grid_status(spec, tmp_path / "g", str(tiny_glue_dir))
    assert (st["n_runs"], st["finished"], st["pending"], st["waiting"]) == (8, 5, 1, 2)
    before = len(fake.calls)
    res = run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), progress=False, executor=fails_once)
    assert res.skipped == 5 and len(res.executed) == 3
    assert fake.calls[before:] == [("rte", "multi_model", 3e-3, 0), ("rte", "multi_model", 1e-3, 1),
                                   ("rte", "multi_model", 1e-3, 2)]
    assert "waiting" not in read_json(tmp_path / "g" / GRID_FILE)


def test_a_grid_switched_to_first_seed_reuses_its_runs_and_reports_the_rule(local_grid, tmp_path, tiny_backbone_dir,
                                                                             tiny_glue_dir):
    spec, grid_dir, _ = local_grid  # sst2 + rte, early_exit + multi_model, seeds 0-1, 2 rates: all 16 finished
    copy = tmp_path / "copy"
    shutil.copytree(grid_dir, copy, ignore=shutil.ignore_patterns("model"))
    first = tiny_spec(tiny_backbone_dir, lr_selection="first_seed")
    with pytest.raises(SweetError, match="lr_selection differ"):
        run_grid(first, copy, data_dir=str(tiny_glue_dir), progress=False, executor=_never)
    res = run_grid(first, copy, data_dir=str(tiny_glue_dir), progress=False, executor=_never, update_spec=True)
    assert res.n_runs == 12 and res.skipped == 12 and res.executed == []  # seed 1 at the other rate left the grid

    rep = write_report(copy, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert rep["status"] == {"n_runs": 12, "n_finished": 12, "missing": []}
    for sel in rep["learning_rates"]:
        on_seed0 = {c["learning_rate"]: c["selection_aucs"] for c in sel["candidates"]}
        assert all(len(v) == 1 for v in on_seed0.values())  # judged on seed 0 alone
        best = max(sorted(on_seed0), key=lambda lr: on_seed0[lr][0])
        assert sel["chosen"] == best
        per_task = rep["per_task"][sel["task"]][sel["method"]]
        assert per_task["learning_rate"] == best and per_task["seeds"] == [0, 1]
    assert "Rule: only the first seed (0) ran every rate" in md and "Selection AUC (calibration split, seed 0)" in md
    # launches record the machine they ran on; the report counts machines (older launches: "unrecorded")
    import platform

    launches = read_json(copy / "launches.json")
    assert launches[-1]["machine"]["host"] == platform.node() and launches[-1]["machine"]["cpus"] >= 1
    from sweet.precision import cpu_kind

    assert launches[-1]["machine"]["cpu"] == cpu_kind()["model"]  # one parse of /proc/cpuinfo, shared with bench
    from sweet.experiments.store import machine_label

    assert rep["provenance"]["machines"] == [machine_label(launches[-1]["machine"])]
    assert "launch(es) on 1 machine(s)" in md and f"on {machine_label(launches[-1]['machine'])}: " in md


def test_later_seed_runs_already_on_disk_are_found_not_rerun(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    # an earlier grid ran seed 1 at every rate; the first-seed grid then runs seed 0 and finds seed 1's chosen runs
    fake = FakeRuns()
    run_grid(_spec(tiny_backbone_dir, tasks=["rte"], seeds=[1], lr_selection="all_seeds"), tmp_path / "g",
             data_dir=str(tiny_glue_dir), progress=False, executor=fake)
    assert len(fake.calls) == 4
    res = run_grid(_spec(tiny_backbone_dir, tasks=["rte"], seeds=[0, 1]), tmp_path / "g", data_dir=str(tiny_glue_dir),
                   progress=False, executor=fake, update_spec=True)
    assert [c[3] for c in fake.calls[4:]] == [0, 0, 0, 0]  # only seed 0 ran
    assert res.n_runs == 6 and len(res.executed) == 4 and res.skipped == 2
    assert read_json(tmp_path / "g" / "launches.json")[-1]["skipped"] == 2

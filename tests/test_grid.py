"""Experiment grids and reports: spec parsing, run keys, resumability (also after SIGKILL), learning-rate
selection on the calibration split, t-intervals on known numbers, the report, and the Ray back-end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweet.errors import SweetError
from sweet.experiments import (
    GRID_FILE,
    LAUNCHES_FILE,
    PRESETS,
    SPLITS_DIGEST,
    GridSpec,
    execute_run,
    expand,
    grid_status,
    inspect_tasks,
    load_spec_file,
    preset,
    run_grid,
    run_key,
    select_learning_rates,
    spec_from_dict,
    spec_to_toml,
)
from sweet.experiments import aggregate_curves, cost_label, t_interval, write_report
from sweet.evaluation import CostScore
from sweet.io import atomic_write_json, read_json
from sweet.config import RunConfig

from .conftest import one_torch_thread

# t(0.975, df) from statistical tables, so the test does not just repeat scipy's call.
T975 = {1: 12.706204736174704, 2: 4.302652729911275, 4: 2.7764451051977987}


# ---------------------------------------------------------------------------------------- statistics


def test_t_interval_on_known_numbers():
    s = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert s["ci"] == pytest.approx(T975[2] / 3 ** 0.5)  # 2.4841
    assert (s["low"], s["high"]) == pytest.approx((2.0 - 2.484138, 2.0 + 2.484138), abs=1e-5)
    s = t_interval([0.0, 2.0])  # mean 1, sd sqrt 2: half-width = t(0.975, 1) * sqrt2 / sqrt2
    assert s["ci"] == pytest.approx(T975[1])
    s = t_interval([80.0, 82.0, 84.0, 86.0, 88.0])  # sd = sqrt(10)
    assert s["ci"] == pytest.approx(T975[4] * 10 ** 0.5 / 5 ** 0.5)
    assert t_interval([5.0, 5.0, 5.0])["ci"] == 0.0


def test_t_interval_is_undefined_for_one_seed_and_skips_missing_values():
    one = t_interval([70.0])
    assert one["mean"] == 70.0 and one["ci"] is None and one["n"] == 1
    assert t_interval([])["mean"] is None
    assert t_interval([1.0, None, 3.0])["n"] == 2


def test_curves_are_interpolated_on_a_common_grid_before_averaging():
    # seed A: score = 100 * cost on [0.25, 1]; seed B: constant 60 on [0.2, 1] with other thresholds
    a = [CostScore(c, 100 * c) for c in (0.25, 0.5, 1.0)]
    b = [CostScore(c, 60.0) for c in (0.2, 0.9, 1.0)]
    agg = aggregate_curves([a, b], n_points=4)
    assert agg["cost"] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the range both cover
    assert agg["mean"] == pytest.approx([(25 + 60) / 2, (50 + 60) / 2, (75 + 60) / 2, (100 + 60) / 2])
    half = [T975[1] * abs(x - 60) / 2 ** 0.5 / 2 ** 0.5 for x in (25, 50, 75, 100)]
    assert [h - m for h, m in zip(agg["high"], agg["mean"])] == pytest.approx(half)


def test_cost_labels():
    assert [cost_label(c) for c in (1 / 6, 0.25, 0.5, 1.0, 1.375, 1.75)] == ["1/6", "1/4", "1/2", "1", "1 3/8", "1 3/4"]


# ---------------------------------------------------------------------------------------- LR selection


def _record(task, method, lr, seed, sel_auc, eval_auc=50.0):
    return {"task": task, "method": method, "backbone": "default", "learning_rate": lr, "seed": seed,
            "selection": {"split": "calibration", "auc": sel_auc}, "evaluation": {"split": "validation", "auc": eval_auc}}


def test_learning_rate_is_chosen_by_selection_auc_never_by_the_reported_split():
    recs = []
    for seed in (0, 1, 2):
        # 2e-5 is better on the calibration split; 5e-5 would win on the reported split.
        recs.append(_record("rte", "sweet", 2e-5, seed, 70.0 + seed, eval_auc=60.0))
        recs.append(_record("rte", "sweet", 5e-5, seed, 65.0 + seed, eval_auc=90.0))
        recs.append(_record("rte", "early_exit", 2e-5, seed, 60.0, eval_auc=90.0))
        recs.append(_record("rte", "early_exit", 5e-5, seed, 61.0, eval_auc=10.0))
    sel = select_learning_rates(recs)
    assert sel[("rte", "sweet", "default")]["chosen"] == 2e-5
    assert sel[("rte", "early_exit", "default")]["chosen"] == 5e-5
    cands = sel[("rte", "sweet", "default")]["candidates"]
    assert [c["mean_selection_auc"] for c in cands] == pytest.approx([71.0, 66.0])


def test_learning_rate_ties_go_to_the_smaller_rate_and_incomplete_rates_cannot_win():
    recs = [_record("mrpc", "multi_model", lr, s, 70.0) for lr in (3e-5, 1e-5) for s in (0, 1)]
    assert select_learning_rates(recs)[("mrpc", "multi_model", "default")]["chosen"] == 1e-5
    # 5e-5 has one seed only, with a high AUC: not eligible against complete rates
    recs.append(_record("mrpc", "multi_model", 5e-5, 0, 99.0))
    sel = select_learning_rates(recs)[("mrpc", "multi_model", "default")]
    assert sel["chosen"] == 1e-5
    assert [c["eligible"] for c in sel["candidates"]] == [True, True, False]


def test_learning_rate_selection_refuses_runs_without_a_held_out_selection():
    rec = _record("sst2", "sweet", 1e-5, 0, 70.0)
    rec.pop("selection")
    with pytest.raises(SweetError, match="no 'selection' metrics"):
        select_learning_rates([rec])
    rec = _record("sst2", "sweet", 1e-5, 0, 70.0)
    rec["selection"]["split"] = "validation"
    with pytest.raises(SweetError, match="selection split is the reported split"):
        select_learning_rates([rec])


# ---------------------------------------------------------------------------------------- spec parser


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


GOOD = 'tasks = ["sst2", "rte"]\nmethods = ["sweet"]\nseeds = [0, 1]\nlearning_rates = [1e-5, 3e-5]\n'


@pytest.mark.parametrize(
    "extra, field, message",
    [
        ("epochs = -1\n", "epochs", "epochs must be positive, got -1"),
        ("n_train = 2.5\n", "n_train", "positive integer"),
        ('backbone = ""\n', "backbone", "non-empty"),
        ("exit_layers = [4, 2]\n", "exit_layers", "strictly increasing"),
        ('pooling = "max"\n', "pooling", "unknown pooling 'max'; choose one of: auto, cls, mean"),
        ("learning_rate = 1e-5\n", "learning_rate", "unknown field"),
        ('preset = "huge"\n', "preset", "unknown preset"),
        ("cpus_per_run = 0\n", "cpus_per_run", "positive number"),
    ],
)
def test_bad_spec_fields_are_named(tmp_path, extra, field, message):
    path = _write(tmp_path, "spec.toml", GOOD + extra)
    with pytest.raises(SweetError) as info:
        load_spec_file(path)
    text = str(info.value)
    assert f"'{field}'" in text and message in text and str(path) in text


@pytest.mark.parametrize(
    "text, field, message",
    [
        ('tasks = ["sst2", "sst3"]\nmethods = ["sweet"]\nseeds = [0]\nlearning_rates = [1e-5]\n', "tasks", "unknown task 'sst3'"),
        ('tasks = ["sst2"]\nmethods = ["sweet", "dee"]\nseeds = [0]\nlearning_rates = [1e-5]\n', "methods", "unknown method 'dee'"),
        ('tasks = ["sst2"]\nmethods = ["sweet"]\nseeds = [0, 0]\nlearning_rates = [1e-5]\n', "seeds", "duplicates"),
        ('tasks = ["sst2"]\nmethods = ["sweet"]\nseeds = []\nlearning_rates = [1e-5]\n', "seeds", "must not be empty"),
        ('tasks = ["sst2"]\nmethods = ["sweet"]\nseeds = [0]\nlearning_rates = ["fast"]\n', "learning_rates", "positive numbers"),
        ('tasks = ["sst2"]\nmethods = ["sweet"]\nseeds = [0]\nlearning_rates = [-1e-5]\n', "learning_rates", "positive numbers"),
        ('tasks = "sst2"\nmethods = ["sweet"]\nseeds = [0]\nlearning_rates = [1e-5]\n', "tasks", "must be a list"),
    ],
)
def test_bad_spec_values_name_the_field(tmp_path, text, field, message):
    with pytest.raises(SweetError) as info:
        load_spec_file(_write(tmp_path, "spec.toml", text))
    assert f"field '{field}'" in str(info.value) and message in str(info.value)


def test_missing_fields_syntax_errors_and_unknown_formats(tmp_path):
    with pytest.raises(SweetError, match="missing required field.*learning_rates"):
        load_spec_file(_write(tmp_path, "a.toml", 'tasks = ["sst2"]\nmethods = ["sweet"]\nseeds = [0]\n'))
    with pytest.raises(SweetError, match="cannot parse the spec"):
        load_spec_file(_write(tmp_path, "b.toml", "tasks = [sst2\n"))
    with pytest.raises(SweetError, match="unknown spec format"):
        load_spec_file(_write(tmp_path, "c.ini", GOOD))
    with pytest.raises(SweetError, match="spec file not found"):
        load_spec_file(tmp_path / "nope.toml")


def test_spec_round_trips_through_toml_and_reads_yaml_and_presets(tmp_path):
    spec = load_spec_file(_write(tmp_path, "s.toml", GOOD + 'exit_layers = [1, 2, 4, 6]\nname = "x"\n'))
    assert spec.tasks == ["sst2", "rte"] and spec.learning_rates == [1e-5, 3e-5] and spec.exit_layers == [1, 2, 4, 6]
    again = load_spec_file(_write(tmp_path, "again.toml", spec_to_toml(spec)))
    assert again == spec
    y = load_spec_file(_write(tmp_path, "s.yaml", "preset: quick\nseeds: [5]\nmethods: [all]\n"))
    assert y.seeds == [5] and y.tasks == PRESETS["quick"]["tasks"] and y.methods == ["early_exit", "sweet", "multi_model"]
    paper = spec_from_dict(preset("paper"))
    assert paper.n_runs == 7 * 3 * 3 * 5 and paper.n_train == 6000 and paper.epochs == 2
    assert paper.learning_rates == [1e-5, 2e-5, 3e-5, 4e-5, 5e-5]
    quick = spec_from_dict(preset("quick"))
    assert set(quick.methods) == {"early_exit", "sweet", "multi_model"} and len(quick.seeds) >= 2


def test_run_keys_follow_the_config_not_the_data_location(tmp_path, tiny_glue_dir):
    a = RunConfig(task="sst2", method="sweet", seed=1, learning_rate=3e-5, data_dir="/x")
    b = RunConfig(task="sst2", method="sweet", seed=1, learning_rate=3e-5, data_dir="/elsewhere")
    c = RunConfig(task="sst2", method="sweet", seed=1, learning_rate=2e-5, data_dir="/x")
    assert run_key(a) == run_key(b) != run_key(c)
    spec = spec_from_dict({"tasks": ["sst2"], "methods": ["sweet", "early_exit"], "seeds": [1],
                           "learning_rates": [3e-5]})
    runs = expand(spec, str(tiny_glue_dir), inspect_tasks(spec, str(tiny_glue_dir)))
    assert [r.rel_dir.rsplit("-", 1)[0] for r in runs] == ["runs/sst2/sweet/lr3e-05/seed1", "runs/sst2/early_exit/lr3e-05/seed1"]
    assert runs[0].config.extra["data_sha256"]["pool"]  # the data's content is part of the key


# ---------------------------------------------------------------------------------------- grids end to end


def tiny_spec(backbone, **over) -> GridSpec:
    raw = {"name": "tiny", "tasks": ["sst2", "rte"], "methods": ["early_exit", "multi_model"], "seeds": [0, 1],
           "learning_rates": [1e-3, 3e-3], "backbone": str(backbone), "exit_layers": [1, 2, 4], "n_train": 80,
           "epochs": 1, "calibration_size": 40}
    raw.update(over)
    return spec_from_dict(raw)


def _metrics_files(grid_dir: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(grid_dir)): p.stat().st_mtime_ns for p in grid_dir.glob("runs/**/metrics.json")}


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory, tiny_backbone_dir, tiny_glue_dir):
    grid_dir = tmp_path_factory.mktemp("grid") / "g"
    spec = tiny_spec(tiny_backbone_dir)
    with one_torch_thread():
        result = run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False, command="test")
    return spec, grid_dir, result


def test_grid_runs_every_combination_once_and_skips_finished_runs(local_grid, tiny_glue_dir):
    spec, grid_dir, first = local_grid
    assert first.n_runs == 16 and first.skipped == 0 and len(first.executed) == 16 and not first.failed
    manifest = read_json(grid_dir / GRID_FILE)
    assert len({r["dir"] for r in manifest["runs"]}) == 16
    assert set(_metrics_files(grid_dir)) == {r["dir"] for r in manifest["runs"]}
    # the training sample depends on the seed only: shared by every method and learning rate of a seed
    samples = {}
    for r in manifest["runs"]:
        ids = read_json(grid_dir / r["dir"] / "splits.json")["train_ids"]
        samples.setdefault((r["task"], r["seed"]), set()).add(tuple(ids))
    assert all(len(v) == 1 for v in samples.values())

    before = _metrics_files(grid_dir)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    again = run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False, executor=must_not_run)
    assert again.skipped == 16 and again.executed == []
    assert _metrics_files(grid_dir) == before
    launches = read_json(grid_dir / LAUNCHES_FILE)
    assert [x["status"] for x in launches[-2:]] == ["completed", "completed"] and launches[-1]["executed"] == 0
    # each launch records the code it ran: the version, and the commit where sweet runs from a git checkout
    import sweet

    code = launches[-1]["code"]
    assert code["version"] == sweet.__version__
    if code["commit"] is not None:
        assert len(code["commit"]) == 40 and int(code["commit"], 16) >= 0 and isinstance(code["dirty"], bool)


@pytest.mark.slow
def test_a_different_spec_in_the_same_directory_needs_update_spec(local_grid, tiny_backbone_dir, tiny_glue_dir):
    _, grid_dir, _ = local_grid
    other = tiny_spec(tiny_backbone_dir, epochs=2)
    with pytest.raises(SweetError, match=r"different spec \(field\(s\) epochs differ\).*--update-spec"):
        run_grid(other, grid_dir, data_dir=str(tiny_glue_dir), progress=False)
    # --dry-run runs the same checks and says the same thing, writing nothing
    with pytest.raises(SweetError, match=r"different spec \(field\(s\) epochs differ\).*--update-spec"):
        grid_status(other, grid_dir, str(tiny_glue_dir))
    p = _cli("grid", "--output", str(grid_dir), "--epochs", "2", "--dry-run", stdout=subprocess.PIPE,
             stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "different spec (field(s) epochs differ)" in err and out == ""
    # resources and the data location are not part of what must agree
    same = tiny_spec(tiny_backbone_dir, cpus_per_run=2)
    assert run_grid(same, grid_dir, data_dir=str(tiny_glue_dir), progress=False).skipped == 16


def test_report_aggregates_the_chosen_learning_rate_over_seeds(local_grid, tmp_path):
    spec, grid_dir, _ = local_grid
    rep = write_report(grid_dir, tmp_path / "rep", command="sweet report test")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    js = read_json(tmp_path / "rep" / "report.json")
    assert js["status"] == {"n_runs": 16, "n_finished": 16, "missing": []}
    for name in ("curve-sst2.png", "curve-rte.png", "curve-average.png"):
        data = (tmp_path / "rep" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000
    # recompute one cell by hand from the run directories
    manifest = read_json(grid_dir / GRID_FILE)["runs"]
    chosen = rep["per_task"]["rte"]["multi_model"]["learning_rate"]
    sel_by_lr = {}
    for r in manifest:
        if r["task"] == "rte" and r["method"] == "multi_model":
            m = read_json(grid_dir / r["dir"] / "metrics.json")
            sel_by_lr.setdefault(r["learning_rate"], []).append((r["seed"], m))
    best = max(sorted(sel_by_lr), key=lambda lr: sum(m["selection"]["auc"] for _, m in sel_by_lr[lr]))
    assert chosen == best
    exit1 = [m["evaluation"]["per_exit"][0]["score"] for _, m in sorted(sel_by_lr[chosen], key=lambda x: x[0])]
    cell = rep["per_task"]["rte"]["multi_model"]["per_exit"][0]
    assert cell["values"] == pytest.approx(exit1) and cell["mean"] == pytest.approx(sum(exit1) / 2)
    assert cell["ci"] == pytest.approx(T975[1] * abs(exit1[0] - exit1[1]) / 2)  # sd = |a - b| / sqrt 2
    # averages over tasks: per seed first
    avg = rep["average"]["early_exit"]["per_exit"][2]["values"]
    for i, seed in enumerate((0, 1)):
        per_task = []
        for task in ("sst2", "rte"):
            lr = rep["per_task"][task]["early_exit"]["learning_rate"]
            d = next(r["dir"] for r in manifest if (r["task"], r["method"], r["seed"], r["learning_rate"])
                     == (task, "early_exit", seed, lr))
            per_task.append(read_json(grid_dir / d / "metrics.json")["evaluation"]["per_exit"][2]["score"])
        assert avg[i] == pytest.approx(sum(per_task) / 2)
    # the interpolated points are the paper's (for [1, 2, 4]: 1/4, 1/2, 3/4, 1; Multi-Model also 1 3/8, 1 3/4)
    assert [q["cost_ratio"] for q in rep["average"]["multi_model"]["interpolated"]] == [0.25, 0.5, 0.75, 1.0, 1.375, 1.75]
    assert "## Chosen learning rates (Table 2)" in md and "Table 1" in md and "cost 1 3/4" in md
    assert f"{chosen:g}" in md and "sha256" in md and "sweet report test" in md
    assert rep["provenance"]["data_files"]["sst2"]["pool"]["sha256"]
    # the link to the runs is relative to the report, so that it still works in a clone at another path
    link = rep["grid"]["runs_from_report"]
    assert not Path(link).is_absolute() and (tmp_path / "rep" / link).resolve() == (grid_dir / "runs").resolve()
    assert f"[{link}/]({link}/)" in md and str(tmp_path) not in md.split("Per-run files")[1]


def test_report_refuses_an_unfinished_grid_unless_partial(local_grid, tmp_path):
    import shutil

    _, grid_dir, _ = local_grid
    copy = tmp_path / "copy"
    shutil.copytree(grid_dir, copy)
    victim = read_json(copy / GRID_FILE)["runs"][-1]["dir"]
    (copy / victim / "metrics.json").unlink()
    with pytest.raises(SweetError, match="1 of 16 runs .* are not finished"):
        write_report(copy, tmp_path / "r")
    rep = write_report(copy, tmp_path / "r", partial=True)
    assert rep["status"]["missing"] == [victim]
    assert "**incomplete**" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")


def test_a_failing_run_does_not_stop_the_others_and_is_retried(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    spec = tiny_spec(tiny_backbone_dir, tasks=["rte"], methods=["early_exit"], learning_rates=[1e-3])
    calls = []

    def flaky(config, out_dir, progress=False):
        calls.append(config["seed"])
        if config["seed"] == 0 and len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return execute_run(config, out_dir, progress=progress)

    with pytest.raises(SweetError, match="1 of 2 run.* failed .*out of memory"), one_torch_thread():
        run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), progress=False, executor=flaky)
    assert calls == [0, 1] and read_json(tmp_path / "g" / LAUNCHES_FILE)[-1]["status"] == "failed"
    with one_torch_thread():
        res = run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), progress=False, executor=flaky)
    assert calls == [0, 1, 0] and res.skipped == 1 and len(res.executed) == 1


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT ignored at start"])
def test_a_grid_stopped_by_a_signal_closes_its_launch_record_as_interrupted(tmp_path, tiny_backbone_dir,
                                                                           tiny_glue_dir, sig):
    """A deadline stops a grid with SIGINT, then SIGTERM; a background job of a script starts with SIGINT ignored.
    Either way the launch record says "interrupted" (not "running"), and the handlers are restored after."""
    spec = tiny_spec(tiny_backbone_dir, tasks=["rte"], methods=["early_exit"], learning_rates=[1e-3])
    signum = signal.SIGTERM if sig == "SIGTERM" else signal.SIGINT

    def stopped(config, out_dir, progress=False):
        os.kill(os.getpid(), signum)
        time.sleep(30)  # the handler raises here
        raise AssertionError("the signal did not stop the run")

    before_int = signal.getsignal(signal.SIGINT)
    if signum == signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        t0 = time.time()
        with pytest.raises(KeyboardInterrupt):
            run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), progress=False, executor=stopped)
        assert time.time() - t0 < 20
        assert read_json(tmp_path / "g" / LAUNCHES_FILE)[-1]["status"] == "interrupted"
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        if signum == signal.SIGINT:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before_int)


def test_a_second_launch_on_a_running_grid_fails_and_a_dead_launch_record_is_closed(tmp_path, tiny_backbone_dir,
                                                                                     tiny_glue_dir):
    """A launch holds the grid directory's lock: another launch on it meanwhile fails with one clear error (and
    runs nothing); the next launch closes a record left "running" by a process that died (a stale record)."""
    spec = tiny_spec(tiny_backbone_dir, tasks=["rte"], methods=["early_exit"], learning_rates=[1e-3])
    grid_dir = tmp_path / "g"
    seen = []

    def nested(config, out_dir, progress=False):
        with pytest.raises(SweetError, match="another 'sweet grid' launch is running on .*launches.json") as err:
            run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False)
        # the message docs/errors.md lists, with DIR for the grid directory
        errors_md = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
        assert f"`{str(err.value).replace(str(grid_dir.resolve()), 'DIR')}`" in errors_md
        seen.append(config["seed"])
        return execute_run(config, out_dir, progress=progress)

    with one_torch_thread():
        res = run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False, executor=nested)
    launches = read_json(grid_dir / LAUNCHES_FILE)
    assert seen == [0, 1] and len(res.executed) == 2 and len(launches) == 1 and launches[0]["status"] == "completed"
    # a launch whose process died (SIGKILL: no finally) left its record "running"; the next launch closes it
    launches.append({**launches[0], "status": "running", "finished": None, "last_update": "2026-01-01T00:00:00+00:00"})
    atomic_write_json(grid_dir / LAUNCHES_FILE, launches)
    with one_torch_thread():
        run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False)  # the lock was released
    after = read_json(grid_dir / LAUNCHES_FILE)
    assert [x["status"] for x in after] == ["completed", "killed", "completed"]
    assert after[1]["finished"] == "2026-01-01T00:00:00+00:00" and "ended without closing" in after[1]["note"]


def _cli(*args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sweet.cli", *args], env=env, start_new_session=True, **kw)


@pytest.mark.slow
def test_killed_grid_continues_without_rerunning_finished_runs(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    spec = tiny_spec(tiny_backbone_dir, tasks=["sst2"], methods=["early_exit", "multi_model"], learning_rates=[1e-3, 3e-3])
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(spec_to_toml(spec), encoding="utf-8")
    grid_dir = tmp_path / "g"
    proc = _cli("grid", "--spec", str(spec_file), "--output", str(grid_dir), "--data-dir", str(tiny_glue_dir),
                "--no-progress", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while len(_metrics_files(grid_dir)) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # like a machine going away: no clean-up, no finally blocks
        proc.wait()
    done_before = _metrics_files(grid_dir)
    assert 2 <= len(done_before) < 8, "the grid should have been killed part-way"
    launches = read_json(grid_dir / LAUNCHES_FILE)
    # it never got to say it stopped (the last run may have finished just before its launch record was updated)
    assert launches[-1]["status"] == "running" and launches[-1]["executed"] >= len(done_before) - 1

    with one_torch_thread():
        again = run_grid(load_spec_file(spec_file), grid_dir, data_dir=str(tiny_glue_dir), progress=False)
    assert again.skipped == len(done_before) and len(again.executed) == 8 - len(done_before)
    killed = read_json(grid_dir / LAUNCHES_FILE)[-2]  # closed by the next launch, which holds the lock
    assert killed["status"] == "killed" and killed["finished"] == killed["last_update"] and "killed" in killed["note"]
    after = _metrics_files(grid_dir)
    assert len(after) == 8
    assert {k: after[k] for k in done_before} == done_before  # finished runs untouched
    assert not set(again.executed) & set(done_before)


@pytest.mark.slow
def test_cli_grid_errors_are_one_line_and_name_the_field(tmp_path, tiny_glue_dir):
    for args, needle in [
        (["--preset", "quick", "--lrs", "1e-5,fast"], "--lrs: 'fast' is not a valid value"),
        (["--tasks", "sst2"], "missing required field(s): methods, seeds, learning_rates"),
        (["--preset", "quick", "--methods", "ee"], "field 'methods': unknown method 'ee'"),
    ]:
        p = _cli("grid", "--output", str(tmp_path / "g"), "--data-dir", str(tiny_glue_dir), *args,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, (args, err)
        assert needle in err and len(err.strip().splitlines()) == 1, (args, err)
    p = _cli("report", str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "not a sweet grid directory" in err


def test_dry_run_and_the_eta_scale_the_estimate_by_how_long_the_finished_runs_took(local_grid, tmp_path, tiny_glue_dir,
                                                                                    monkeypatch):
    import shutil

    from sweet.cli.experiments import _describe_plan
    from sweet.experiments.plan import plan

    spec, local_dir, _ = local_grid
    grid_dir = tmp_path / "g"
    shutil.copytree(local_dir, grid_dir)
    runs = read_json(grid_dir / GRID_FILE)["runs"]
    for r in runs[:6]:  # not started
        shutil.rmtree(grid_dir / r["dir"])
    for i, r in enumerate(runs[6:]):  # finished: known times; one metrics.json without a timing is not counted
        metrics = read_json(grid_dir / r["dir"] / "metrics.json")
        if i == 0:
            metrics.pop("timing")
        else:
            metrics["timing"]["total_seconds"] = 10.0 * i
        atomic_write_json(grid_dir / r["dir"] / "metrics.json", metrics)
    status = grid_status(spec, grid_dir, str(tiny_glue_dir))
    est = {r.rel_dir: r.estimate_seconds for r in plan(spec, grid_dir, str(tiny_glue_dir))[0]}  # unrounded
    measured = status["measured"]
    assert measured["runs"] == 9 and measured["seconds"] == 10 * sum(range(1, 10))
    assert measured["ratio"] == pytest.approx(450 / sum(est[r["dir"]] for r in runs[7:]), abs=1e-3)
    left = sum(est[r["dir"]] for r in runs[:6])
    assert status["estimate_seconds_left"] == round(left)
    assert measured["seconds_left"] == pytest.approx(left * measured["ratio"], abs=1)

    lines = _describe_plan(spec, status, side_by_side=2)
    assert lines[-1] == (f"measured: this grid's 9 finished runs took {measured['ratio']:.1f}x the estimate of them "
                         f"(8 min against {measured['estimate_seconds'] / 60:.0f}, at the load they ran under): at "
                         f"that rate ~{measured['seconds_left'] / 60:.0f} run-minutes left, "
                         f"~{measured['seconds_left'] / 120:.0f} min with 2 runs side by side")
    assert _describe_plan(spec, status)[-1].endswith("run-minutes left, one run at a time")
    # a launch's ETA before its first run finishes is the same figure
    from sweet.experiments import backends

    etas = []

    class Recording(backends._Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            etas.append(self.eta_seconds())

    def fails(config, out_dir, progress=False):
        raise RuntimeError("not run in this test")

    monkeypatch.setattr(backends, "_Progress", Recording)
    with pytest.raises(SweetError, match="6 of 6 run"):
        run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False, executor=fails)
    assert etas == [pytest.approx(measured["seconds_left"], abs=1)]
    # before a run has finished (or with none timed) there is nothing to measure: the prior estimate only
    for r in runs[6:]:
        shutil.rmtree(grid_dir / r["dir"])
    status = grid_status(spec, grid_dir, str(tiny_glue_dir))
    assert status["measured"] is None and _describe_plan(spec, status)[-1].startswith("estimated time left")


def test_runs_side_by_side_are_the_cpus_a_local_ray_instance_has_per_run(tiny_backbone_dir, monkeypatch):
    from sweet.experiments.status import runs_side_by_side

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert runs_side_by_side(tiny_spec(tiny_backbone_dir, cpus_per_run=2), "ray", None) == 4
    assert runs_side_by_side(tiny_spec(tiny_backbone_dir, cpus_per_run=3), "ray", None) == 2
    assert runs_side_by_side(tiny_spec(tiny_backbone_dir, cpus_per_run=16), "ray", None) == 1
    assert runs_side_by_side(tiny_spec(tiny_backbone_dir, cpus_per_run=2), "ray", "auto") == 1  # a cluster: not asked
    assert runs_side_by_side(tiny_spec(tiny_backbone_dir, cpus_per_run=2), "local", None) == 1


@pytest.mark.slow
def test_cli_dry_run_and_report(local_grid, tmp_path):
    _, grid_dir, _ = local_grid
    p = _cli("grid", "--output", str(grid_dir), "--dry-run", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "16 runs (2 tasks x 2 methods x 2 seeds x 2 learning rates); 16 finished, 0 started, 0 not started" in out
    p = _cli("report", str(grid_dir), "--output", str(tmp_path / "r"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
             text=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "16 of 16 runs, 3 figure(s)" in out
    assert "Report: `sweet report" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------- Ray


def _comparable_metrics(path: Path) -> dict:
    m = read_json(path)
    m.pop("timing")
    return m


@pytest.mark.slow
def test_ray_backend_writes_the_same_runs_as_the_local_backend(local_grid, tmp_path, tiny_backbone_dir, tiny_glue_dir):
    ray = pytest.importorskip("ray")
    import torch
    from safetensors.torch import load_file

    _, local_dir, _ = local_grid
    spec = tiny_spec(tiny_backbone_dir, tasks=["rte"], seeds=[1])  # 4 of the local grid's runs
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        res = run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), backend="ray", progress=False)
    finally:
        ray.shutdown()
    assert res.n_runs == 4 and len(res.executed) == 4 and not res.failed
    for rel in res.executed:
        ray_files = sorted(str(p.relative_to(tmp_path / "g" / rel)) for p in (tmp_path / "g" / rel).rglob("*"))
        local_files = sorted(str(p.relative_to(local_dir / rel)) for p in (local_dir / rel).rglob("*"))
        assert ray_files == local_files  # same run directory name (same key) and the same files
        # identical numbers (only the timing differs), identical weights
        assert _comparable_metrics(tmp_path / "g" / rel / "metrics.json") == _comparable_metrics(local_dir / rel / "metrics.json")
        a, b = (load_file(d / rel / "model" / "model.safetensors") for d in (tmp_path / "g", local_dir))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert read_json(tmp_path / "g" / rel / "splits.json") == read_json(local_dir / rel / "splits.json")
    assert read_json(tmp_path / "g" / LAUNCHES_FILE)[-1]["backend"] == "ray"
    # and the grid is resumable across back-ends: the local back-end finds nothing left to do
    again = run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), progress=False, executor=None)
    assert again.skipped == 4 and again.executed == []



def test_unknown_backend_and_a_run_directory_with_another_config_are_refused(local_grid, tmp_path, tiny_glue_dir):
    import shutil

    spec, grid_dir, _ = local_grid
    with pytest.raises(SweetError, match="unknown back-end 'spark'"):
        run_grid(spec, tmp_path / "x", data_dir=str(tiny_glue_dir), backend="spark", progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(grid_dir, copy)
    victim = copy / read_json(copy / GRID_FILE)["runs"][3]["dir"] / "run_config.json"
    cfg = read_json(victim)
    cfg["epochs"] = 7
    victim.write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(SweetError, match=r"holds a run with a different config \(fields: epochs\)"):
        run_grid(spec, copy, data_dir=str(tiny_glue_dir), progress=False)


# ---------------------------------------------------------------------------------------- results that survive the machine


LIGHT_FILES = {"run_config.json", "metrics.json", "train_log.json", SPLITS_DIGEST}


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main",
                           *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _light_copy(grid_dir: Path, dest: Path) -> Path:
    """The grid as a commit holds it: no weights, no checkpoints, no per-run sample ids."""
    import shutil

    shutil.copytree(grid_dir, dest, ignore=shutil.ignore_patterns("model", "checkpoint", "splits.json"))
    return dest


def _never(*args, **kwargs):
    raise AssertionError("a finished run was run again")


@pytest.mark.slow
def test_committed_results_continue_on_a_fresh_clone_elsewhere(local_grid, tmp_path, tiny_glue_dir, monkeypatch):
    import shutil

    spec, grid_dir, _ = local_grid
    runs = [r["dir"] for r in read_json(grid_dir / GRID_FILE)["runs"]]
    assert all((grid_dir / d / SPLITS_DIGEST).is_file() and (grid_dir / d / "model").is_dir() for d in runs)
    # commit the grid the documented way, in a repository that (like this project's) ignores runs/ at its root
    repo = tmp_path / "machine-a" / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("runs/\n", encoding="utf-8")
    shutil.copytree(grid_dir, repo / "docs" / "results" / "paper")
    _git(repo, "add", ".gitignore", "docs/results/paper")
    _git(repo, "commit", "-q", "-m", "grid results")
    committed = _git(repo, "ls-files").split()
    assert not [f for f in committed if "/model/" in f or "/checkpoint/" in f or f.endswith("/splits.json")]
    assert {f.rsplit("/", 1)[1] for f in committed if "/runs/" in f} == LIGHT_FILES
    assert len([f for f in committed if f.endswith("/metrics.json")]) == 16

    # a fresh clone on another path, with the data elsewhere too, and the first machine's paths recorded
    clone = tmp_path / "machine-b" / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    copy = clone / "docs" / "results" / "paper"
    data = shutil.copytree(tiny_glue_dir, tmp_path / "machine-b" / "glue")
    assert not list(copy.rglob("model")) and not list(copy.rglob("splits.json"))
    launches = read_json(copy / LAUNCHES_FILE)
    assert all(x["data_dir"] == str(tiny_glue_dir) for x in launches)
    for x in launches:
        x["data_dir"] = str(tmp_path / "machine-a" / "glue")  # not on this machine
    atomic_write_json(copy / LAUNCHES_FILE, launches)

    again = run_grid(spec, copy, data_dir=str(data), progress=False, executor=_never)
    assert again.skipped == 16 and again.executed == [] and not again.failed
    # the command line: the spec stored in the grid, the data from $SWEET_GLUE_DIR (the recorded path is gone)
    monkeypatch.setenv("SWEET_GLUE_DIR", str(data))
    p = _cli("grid", "--output", str(copy), "--no-progress", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    assert "16 runs, 16 already finished, 0 run now" in out

    rep = write_report(copy, tmp_path / "rep")
    original = write_report(grid_dir, tmp_path / "rep-original")
    assert rep["status"] == {"n_runs": 16, "n_finished": 16, "missing": []}
    assert rep["per_task"] == original["per_task"] and rep["average"] == original["average"]
    assert rep["learning_rates"] == original["learning_rates"]


def test_a_continued_grid_refuses_changed_data_options_or_samples(local_grid, tmp_path, tiny_glue_dir, monkeypatch):
    import functools
    import shutil

    import sweet.experiments.plan as plan_module

    spec, grid_dir, _ = local_grid
    copy = _light_copy(grid_dir, tmp_path / "copy")
    manifest = (copy / GRID_FILE).read_bytes()

    def refused(data_dir, **kw) -> str:
        with pytest.raises(SweetError) as info:
            run_grid(spec, copy, data_dir=str(data_dir), progress=False, executor=_never, **kw)
        assert "\n" not in str(info.value)
        assert (copy / GRID_FILE).read_bytes() == manifest  # a refused launch changes nothing
        return str(info.value)

    # a data file changed since the runs were made
    data = shutil.copytree(tiny_glue_dir, tmp_path / "glue")
    train = data / "RTE" / "train.tsv"
    train.write_text(train.read_text(encoding="utf-8").replace("\t0\n", "\t1\n", 1), encoding="utf-8")
    msg = refused(data)
    assert f"data file 'pool' of task rte ({train}: sha256" in msg and "the finished run runs/rte/" in msg
    assert "was made with other settings" in msg and "--update-spec" in msg

    # an option of the runs changed (here: the default of this version of sweet)
    with monkeypatch.context() as mp:
        mp.setattr(plan_module, "RunConfig", functools.partial(RunConfig, warmup_ratio=0.1))
        msg = refused(tiny_glue_dir)
    assert "warmup_ratio (0.0 then, 0.1 now)" in msg and "data file" not in msg

    # the code that draws the training samples changed
    import sweet.experiments.continuation as continuation

    real = continuation.make_splits
    with monkeypatch.context() as mp:  # the name the continuation check calls
        mp.setattr(continuation, "make_splits", lambda data, n, seed, *a: real(data, n, seed + 7, *a))
        msg = refused(tiny_glue_dir)
    assert "its training sample or calibration split (splits_digest.json) is not the one" in msg
    assert "seed 0" in msg or "seed 1" in msg

    # a tampered digest is caught the same way; a missing one is rebuilt from splits.json where that is at hand
    full = tmp_path / "full"
    shutil.copytree(grid_dir, full, ignore=shutil.ignore_patterns("model"))
    victim = full / read_json(full / GRID_FILE)["runs"][0]["dir"] / SPLITS_DIGEST
    digest = read_json(victim)
    victim.unlink()
    assert run_grid(spec, full, data_dir=str(tiny_glue_dir), progress=False, executor=_never).skipped == 16
    assert read_json(victim) == digest
    atomic_write_json(victim, {**digest, "sha256": "0" * 64})
    with pytest.raises(SweetError, match="is not the one this version of sweet draws"):
        run_grid(spec, full, data_dir=str(tiny_glue_dir), progress=False, executor=_never)

    # --update-spec accepts the changed data: the changed task's runs are run again, the others are kept
    calls = []

    def fake(config, out_dir, progress=False):
        calls.append(config["task"])
        return {"dir": out_dir, "seconds": 0.0, "auc": None, "selection_auc": None}

    res = run_grid(spec, copy, data_dir=str(data), progress=False, executor=fake, update_spec=True)
    assert res.skipped == 8 and sorted(set(calls)) == ["rte"] and len(calls) == 8


def test_code_version_names_the_checkout_commit_and_whether_the_sources_differ(tmp_path, monkeypatch):
    """In a git checkout: HEAD's commit, dirty when the package's tracked sources differ; without git: None."""
    import sweet
    from sweet.experiments.store import code_version

    src = Path(sweet.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    code = code_version()
    if head.returncode == 0:
        assert code["commit"] == head.stdout.strip()
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the PATH
    assert code_version() == {"version": sweet.__version__, "commit": None, "dirty": None}

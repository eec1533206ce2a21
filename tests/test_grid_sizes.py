"""Training-set size sweeps (the paper's Appendix): ``n_train`` as a list in a grid spec, the 'sizes' preset, run
directories (unchanged for one size), the refusal of sizes the pool cannot hold, learning-rate selection per size,
and the report's per-size section with the gap to Early-Exit per exit (and its plot)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweet.errors import SweetError
from sweet.experiments import (
    GRID_FILE,
    PRESETS,
    expand,
    inspect_tasks,
    load_spec_file,
    preset,
    run_grid,
    run_key,
    run_rel_dir,
    select_learning_rates,
    spec_from_dict,
    spec_to_toml,
)
from sweet.io import atomic_write_json, read_json
from sweet.experiments import write_report
from sweet.config import RunConfig

from .conftest import one_torch_thread
from .fake_results import fake_evaluation

T975_1 = 12.706204736174704  # t(0.975, 1), from tables
BASE = {"tasks": ["sst2"], "methods": ["early_exit", "sweet"], "seeds": [0, 1], "learning_rates": [1e-3]}
PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    "value, message",
    [
        ("[1000, 1000]", "has duplicates"),
        ("[]", "must not be empty"),
        ("[1000, -5]", "training sizes must be positive integers, got -5"),
        ("[1000, 0]", "training sizes must be positive integers, got 0"),
        ("[1000, 2.5]", "training sizes must be positive integers, got 2.5"),
        ('[1000, "3000"]', "training sizes must be positive integers, got '3000'"),
        ("[1000, true]", "training sizes must be positive integers, got True"),
        ('"1000"', "must be a positive integer"),
    ],
)
def test_bad_training_size_lists_name_the_field(tmp_path, value, message):
    path = tmp_path / "spec.toml"
    path.write_text('tasks = ["sst2"]\nmethods = ["sweet"]\nseeds = [0]\nlearning_rates = [1e-5]\n'
                    f"n_train = {value}\n", encoding="utf-8")
    with pytest.raises(SweetError) as info:
        load_spec_file(path)
    assert "field 'n_train'" in str(info.value) and message in str(info.value) and str(path) in str(info.value)


def test_a_size_list_round_trips_and_one_size_stays_the_old_spec(tmp_path):
    spec = spec_from_dict({**BASE, "n_train": [1000, 3000]})
    assert spec.n_train == [1000, 3000] and spec.train_sizes == [1000, 3000] and spec.is_size_sweep
    assert spec.n_runs == 1 * 2 * 2 * 1 * 2
    path = tmp_path / "s.toml"
    path.write_text(spec_to_toml(spec), encoding="utf-8")
    assert "n_train = [1000, 3000]" in path.read_text(encoding="utf-8") and load_spec_file(path) == spec
    # an int (every existing grid.json / spec file) is one size; so is a one-element list
    old = spec_from_dict({**BASE, "n_train": 1000})
    assert old.n_train == 1000 and old.train_sizes == [1000] and not old.is_size_sweep and old.n_runs == 4
    assert spec_from_dict({**BASE, "n_train": [1000]}) == old
    assert spec_from_dict(BASE).n_train == 6000


def test_the_sizes_preset_is_the_papers_mnli_sweep():
    spec = spec_from_dict(preset("sizes"))
    assert spec.tasks == ["mnli"] and spec.methods == ["early_exit", "sweet", "multi_model"]
    assert spec.seeds == [0, 1, 2] and spec.n_train == [1000, 3000, 6000] and spec.epochs == 2
    assert len(spec.learning_rates) >= 2 and spec.n_runs == 3 * 3 * 3 * len(spec.learning_rates)
    assert PRESETS["sizes"]["name"] == "sizes"


# ---------------------------------------------------------------------------------------- expansion


def test_a_sweep_expands_over_sizes_with_the_size_in_the_run_directory(tiny_glue_dir):
    spec = spec_from_dict({**BASE, "n_train": [50, 100], "calibration_size": 40})
    runs = expand(spec, str(tiny_glue_dir), inspect_tasks(spec, str(tiny_glue_dir)))
    assert len(runs) == spec.n_runs == 8 and len({r.rel_dir for r in runs}) == 8 and len({r.key for r in runs}) == 8
    # execution order: seed, task, size, learning rate, method
    assert [(r.config.seed, r.config.n_train, r.config.method) for r in runs[:4]] == [
        (0, 50, "early_exit"), (0, 50, "sweet"), (0, 100, "early_exit"), (0, 100, "sweet")]
    for r in runs:
        assert re.fullmatch(rf"runs/sst2/{r.config.method}/n{r.config.n_train}/lr0\.001/seed{r.config.seed}-[0-9a-f]{{10}}",
                            r.rel_dir), r.rel_dir
        assert r.key == run_key(r.config) and f"/n={r.config.n_train}/" in r.label
    # the ETA grows with the size
    est = {r.config.n_train: r.estimate_seconds for r in runs if r.config.method == "sweet" and r.config.seed == 0}
    assert est[100] > est[50]


def test_one_size_keeps_the_run_keys_and_directories_of_before(tiny_glue_dir):
    cfg = RunConfig(task="sst2", method="sweet", seed=1, learning_rate=3e-5, n_train=1000)
    assert run_rel_dir(cfg, "0123456789") == "runs/sst2/sweet/lr3e-05/seed1-0123456789"
    assert run_rel_dir(cfg, "0123456789", sized=True) == "runs/sst2/sweet/n1000/lr3e-05/seed1-0123456789"
    single = spec_from_dict({**BASE, "n_train": 100, "calibration_size": 40})
    tasks = inspect_tasks(single, str(tiny_glue_dir))
    runs = expand(single, str(tiny_glue_dir), tasks)
    assert [r.rel_dir for r in runs] == [f"runs/sst2/{r.config.method}/lr0.001/seed{r.config.seed}-{run_key(r.config)}"
                                         for r in runs]
    assert all(not r.sized and "/n=" not in r.label for r in runs)
    # the same run in a sweep has the same key (the size was always part of the config), only its directory moves
    sweep = spec_from_dict({**BASE, "n_train": [50, 100], "calibration_size": 40})
    swept = {r.key: r for r in expand(sweep, str(tiny_glue_dir), inspect_tasks(sweep, str(tiny_glue_dir)))}
    for r in runs:
        assert swept[r.key].rel_dir == r.rel_dir.replace(f"/{r.config.method}/", f"/{r.config.method}/n100/")


def test_sizes_the_pool_cannot_hold_are_refused_in_a_sweep(tmp_path, tiny_glue_dir):
    # tiny MNLI: a 300-row pool, no dev split: 30 calibration + 60 held-out evaluation rows leave 210
    spec = spec_from_dict({**BASE, "tasks": ["mnli"], "n_train": [100, 250, 400]})
    with pytest.raises(SweetError) as info:
        inspect_tasks(spec, str(tiny_glue_dir))
    text = str(info.value)
    assert "field 'n_train'" in text and "task 'mnli'" in text and "at most 210" in text and "250, 400" in text
    assert "30 for calibration and 60 for the held-out evaluation" in text
    with pytest.raises(SweetError, match="at most 210"):
        run_grid(spec, tmp_path / "g", data_dir=str(tiny_glue_dir), progress=False)
    assert not (tmp_path / "g").exists()
    assert inspect_tasks(spec_from_dict({**BASE, "tasks": ["mnli"], "n_train": [100, 210]}), str(tiny_glue_dir))
    # one size is clamped as before (it cannot collide with another size)
    one = spec_from_dict({**BASE, "tasks": ["mnli"], "n_train": 400})
    assert inspect_tasks(one, str(tiny_glue_dir))["mnli"].n_train_available == 210


def _cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sweet.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_cli_takes_a_comma_separated_size_list(tmp_path, tiny_glue_dir):
    common = ["grid", "--output", str(tmp_path / "g"), "--data-dir", str(tiny_glue_dir), "--tasks", "sst2",
              "--methods", "early_exit,sweet", "--seeds", "0,1", "--lrs", "1e-3", "--dry-run"]
    p = _cli(*common, "--n-train", "50,100")
    assert p.returncode == 0, p.stderr
    assert "8 runs (1 tasks x 2 methods x 2 seeds x 1 learning rates x 2 training sizes)" in p.stdout
    p = _cli(*common, "--n-train", "50")
    assert p.returncode == 0 and "4 runs (1 tasks x 2 methods x 2 seeds x 1 learning rates);" in p.stdout
    for value, needle in [("50,50", "field 'n_train': has duplicates"), ("50,1e3", "--n-train: '1e3' is not a valid"),
                          ("50,9999", "task 'sst2' has at most")]:
        p = _cli(*common, "--n-train", value)
        assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, (value, p.stderr)


# ---------------------------------------------------------------------------------------- learning rates


def _sel_record(method, lr, seed, n_train, auc):
    return {"task": "mnli", "method": method, "backbone": "default", "learning_rate": lr, "seed": seed,
            "n_train": n_train, "selection": {"split": "calibration", "auc": auc}, "evaluation": {"split": "held-out"}}


def test_learning_rates_are_chosen_per_size_in_a_sweep():
    # at 100 examples the high rate wins, at 1000 the low one; pooled over sizes the low one would win
    recs = [_sel_record("sweet", lr, s, n, auc) for s in (0, 1)
            for n, lr, auc in [(100, 1e-5, 50.0), (100, 1e-4, 60.0), (1000, 1e-5, 80.0), (1000, 1e-4, 65.0)]]
    sel = select_learning_rates(recs, by_size=True)
    assert sel[("mnli", "sweet", "default", 100)]["chosen"] == 1e-4
    assert sel[("mnli", "sweet", "default", 1000)]["chosen"] == 1e-5
    assert sel[("mnli", "sweet", "default", 100)]["n_train"] == 100
    assert select_learning_rates(recs)[("mnli", "sweet", "default")]["chosen"] == 1e-5


# ---------------------------------------------------------------------------------------- report (made-up runs)


def _fake_metrics(task, method, lr, seed, n_train, exits, sel_auc):
    evaluation = fake_evaluation(dict(exits), {c: exits[0][1] + c for c in (0.25, 0.5, 1.0)}, split="held-out train")
    return {"task": task, "method": method, "backbone": "default", "learning_rate": lr, "seed": seed,
            "n_train": n_train, "exit_layers": [x for x, _ in exits], "evaluation": evaluation,
            "selection": {"split": "calibration", "auc": sel_auc}, "timing": {"total_seconds": 10.0 + n_train / 100}}


# per (method, size, seed): the exit scores at the best learning rate; the other learning rate scores 0 everywhere
SCORES = {
    ("early_exit", 100, 0): (50.0, 60.0), ("early_exit", 100, 1): (52.0, 62.0),
    ("sweet", 100, 0): (53.0, 58.0), ("sweet", 100, 1): (56.0, 59.0),
    ("multi_model", 100, 0): (51.0, 61.0), ("multi_model", 100, 1): (52.0, 63.0),
    ("early_exit", 400, 0): (60.0, 70.0), ("early_exit", 400, 1): (61.0, 71.0),
    ("sweet", 400, 0): (62.0, 69.0), ("sweet", 400, 1): (62.0, 70.0),
    ("multi_model", 400, 0): (60.5, 71.5), ("multi_model", 400, 1): (61.5, 72.5),
}
BEST_LR = {100: 1e-4, 400: 1e-5}  # chosen per size: a different rate at each size


def _fake_grid(grid_dir: Path, sizes) -> None:
    methods = ["early_exit", "sweet", "multi_model"]
    n_spec = list(sizes) if len(sizes) > 1 else sizes[0]
    spec = spec_from_dict({"name": "fake", "tasks": ["mnli"], "methods": methods, "seeds": [0, 1],
                           "learning_rates": [1e-5, 1e-4], "n_train": n_spec, "exit_layers": [2, 4]})
    runs = []
    for (method, n, seed), scores in SCORES.items():
        if n not in sizes:
            continue
        for lr in (1e-5, 1e-4):
            best = lr == BEST_LR[n]
            exits = list(zip((2, 4), scores if best else (0.0, 0.0)))
            size = f"/n{n}" if len(sizes) > 1 else ""
            rel = f"runs/mnli/{method}{size}/lr{lr:g}/seed{seed}-fake"
            atomic_write_json(grid_dir / rel / "metrics.json",
                              _fake_metrics("mnli", method, lr, seed, n, exits, 70.0 if best else 40.0))
            entry = {"dir": rel, "key": "fake", "task": "mnli", "method": method, "seed": seed,
                     "learning_rate": lr, "backbone": "default"}
            if len(sizes) > 1:  # a manifest from before size sweeps has no n_train: the single-size case must cope
                entry["n_train"] = n
            runs.append(entry)
    atomic_write_json(grid_dir / GRID_FILE, {"spec": spec.to_dict(), "data": {}, "runs": runs})


def test_report_of_a_sweep_has_per_size_scores_and_paired_gaps(tmp_path):
    _fake_grid(tmp_path / "g", [100, 400])
    rep = write_report(tmp_path / "g", tmp_path / "rep")
    sweep = rep["size_sweep"]
    assert sweep["sizes"] == [100, 400] and sweep["main_size"] == 400 and sweep["baseline"] == "early_exit"
    by_size = {ps["n_train"]: ps["per_task"]["mnli"] for ps in sweep["per_size"]}
    for n in (100, 400):
        for method in ("early_exit", "sweet", "multi_model"):
            cell = by_size[n][method]
            assert cell["learning_rate"] == BEST_LR[n] and cell["seeds"] == [0, 1]
            assert cell["per_exit"][1]["values"] == [SCORES[(method, n, 0)][1], SCORES[(method, n, 1)][1]]
    gaps = {(p["method"], p["n_train"], p["exit_layer"]): p for p in sweep["gaps"]["mnli"]}
    assert len(gaps) == 2 * 2 * 2 and not any(m == "early_exit" for m, _, _ in gaps)
    # SWEET - EE at 100 examples, exit 2: per seed 53-50 = 3 and 56-52 = 4; exit 4: -2 and -3
    g = gaps[("sweet", 100, 2)]
    assert g["values"] == pytest.approx([3.0, 4.0]) and g["mean"] == pytest.approx(3.5)
    assert g["ci"] == pytest.approx(T975_1 * 0.5)  # sd of (3, 4) = 1/sqrt 2; / sqrt 2 -> 1/2
    assert gaps[("sweet", 100, 4)]["mean"] == pytest.approx(-2.5)
    # MM - EE at 400 examples, exit 4: 1.5 and 1.5: no spread, a zero-width interval
    g = gaps[("multi_model", 400, 4)]
    assert g["values"] == pytest.approx([1.5, 1.5]) and g["ci"] == pytest.approx(0.0) and g["seeds"] == [0, 1]
    # the main tables are at the largest size, with its learning rate
    assert rep["per_task"]["mnli"]["sweet"]["learning_rate"] == BEST_LR[400]
    assert rep["per_task"]["mnli"]["sweet"]["per_exit"][0]["values"] == [62.0, 62.0]
    assert {(s["method"], s["n_train"]): s["chosen"] for s in rep["learning_rates"]} == {
        (m, n): BEST_LR[n] for m in ("early_exit", "sweet", "multi_model") for n in (100, 400)}
    # the files: JSON with the same numbers, the plot, the Markdown section
    js = read_json(tmp_path / "rep" / "report.json")
    assert js["size_sweep"] == sweep  # floats survive JSON exactly
    assert rep["figures"]["gap-mnli"] == "gap-vs-size-mnli.png"
    assert (tmp_path / "rep" / "gap-vs-size-mnli.png").read_bytes()[:8] == PNG
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "## Training-set size sweep (Appendix)" in md and "![mnli: gap to Early-Exit vs training size](gap-vs-size-mnli.png)" in md
    assert "| 100 | SWEET − EE | +3.5 ± 6.4 (SD 0.7) | -2.5 ± 6.4 (SD 0.7) |" in md
    assert "| 400 | MM − EE | +0.5 ± 0.0 (SD 0.0) | +1.5 ± 0.0 (SD 0.0) |" in md
    assert "| 100 | SWEET | 54.5 ± 19.1 (SD 2.1) | 58.5 ± 6.4 (SD 0.7) |" in md
    # 1e-4 is the top of the rates searched: flagged; 1e-5 at 400 examples is not
    assert "| MNLI | 100 | 0.0001 ↑ | 0.0001 ↑ | 0.0001 ↑ |" in md and "| MNLI | 400 | 1e-05 | 1e-05 | 1e-05 |" in md
    assert "training sizes 100, 400 per seed" in md


def test_report_of_one_size_has_no_sweep_section(tmp_path):
    _fake_grid(tmp_path / "g", [400])  # an old-style manifest: no n_train per run
    rep = write_report(tmp_path / "g", tmp_path / "rep")
    assert "size_sweep" not in rep and "size_sweep" not in read_json(tmp_path / "rep" / "report.json")
    assert set(rep["figures"]) == {"mnli", "average"} and not list((tmp_path / "rep").glob("gap-*"))
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "size sweep" not in md and "400 training examples per seed" in md
    assert rep["per_task"]["mnli"]["sweet"]["learning_rate"] == BEST_LR[400]
    assert all("n_train" not in s for s in rep["learning_rates"])


# ---------------------------------------------------------------------------------------- end to end (tiny models)


def test_a_tiny_sweep_runs_and_reports_the_gaps_of_its_runs(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    spec = spec_from_dict({"name": "tiny-sizes", "tasks": ["sst2"], "methods": ["early_exit", "sweet", "multi_model"],
                           "seeds": [0, 1], "learning_rates": [1e-3], "backbone": str(tiny_backbone_dir),
                           "exit_layers": [1, 2, 4], "n_train": [40, 80], "epochs": 1, "calibration_size": 40})
    grid_dir = tmp_path / "g"
    with one_torch_thread():
        res = run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False)
    assert res.n_runs == 12 and len(res.executed) == 12 and not res.failed
    manifest = read_json(grid_dir / GRID_FILE)["runs"]
    assert {r["n_train"] for r in manifest} == {40, 80} and all(f"/n{r['n_train']}/" in r["dir"] for r in manifest)
    # a seed's smaller sample is part of its larger one (one permutation per seed, cut at the size)
    for seed in (0, 1):
        ids = {r["n_train"]: read_json(grid_dir / r["dir"] / "splits.json")["train_ids"]
               for r in manifest if r["seed"] == seed and r["method"] == "sweet"}
        assert len(ids[40]) == 40 and len(ids[80]) == 80 and set(ids[40]) <= set(ids[80])
    rep = write_report(grid_dir, tmp_path / "rep")
    score = {(r["method"], r["n_train"], r["seed"]): read_json(grid_dir / r["dir"] / "metrics.json")["evaluation"]["per_exit"]
             for r in manifest}
    points = rep["size_sweep"]["gaps"]["sst2"]
    assert len(points) == 2 * 2 * 3  # (SWEET, MM) x sizes x exits
    for p in points:
        i = [1, 2, 4].index(p["exit_layer"])
        want = [score[(p["method"], p["n_train"], s)][i]["score"] - score[("early_exit", p["n_train"], s)][i]["score"]
                for s in (0, 1)]
        assert p["values"] == pytest.approx(want) and p["mean"] == pytest.approx(sum(want) / 2)
        assert p["ci"] == pytest.approx(T975_1 * abs(want[0] - want[1]) / 2)
    assert (tmp_path / "rep" / "gap-vs-size-sst2.png").read_bytes()[:8] == PNG
    assert "## Training-set size sweep (Appendix)" in (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")

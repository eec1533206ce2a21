"""Grids that take their learning rates from a reference grid (``learning_rates_from``), choose a parameterised
method's value on the first seed by worst deficit (``param_selection``), and run some tasks on fewer methods
(``task_methods``): the plan, its waiting runs, the order of execution, and the stored spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweet.cli.experiments import _describe_plan
from sweet.config import RunConfig
from sweet.errors import SweetError
from sweet.experiments import GRID_FILE, SPEC_TOML, grid_status, load_spec_file, run_grid, spec_from_dict, spec_to_toml
from sweet.experiments.reference import checkout_root, resolve_reference
from sweet.io import atomic_write_json, read_json
from sweet.rundir import METRICS_FILE, RUN_CONFIG

from .test_grid_param_selection import record

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "docs" / "results" / "paper"
REF_RATE = {"early_exit": 3e-3, "sweet": 1e-3}  # what the reference chooses on seed 0 (on every task)


def _calibration(cfg: RunConfig) -> list[float]:
    """The calibration split's scores at the five fixed costs that the fake runs report."""
    if cfg.method in REF_RATE:  # the reference: best at REF_RATE on seed 0 (by AUC, the mean of these scores)
        good = cfg.learning_rate == REF_RATE[cfg.method]
        top = 80.0 if good == (cfg.seed == 0) else 60.0
        if cfg.method == "sweet":
            return [top - 10, top - 5, top, top, top]
        return [top - 20, top - 10, top, top + 2, top + 4]
    # grad_scale@0.25 has the better mean but trails far at cost 1; grad_scale@0.75 never trails by more than 1
    # (against seed 0's baseline: sweet [70, 75, 80, 80, 80], early_exit [60, 70, 80, 82, 84])
    if cfg.seed != 0:
        return [50.0] * 5
    if cfg.method.startswith("sweet_then_ee"):
        return [60.0] * 5
    return {0.25: [90.0, 90.0, 90.0, 90.0, 70.0], 0.75: [69.0, 74.0, 79.0, 81.0, 83.0]}[_param(cfg.method)]


def _param(method: str) -> float:
    return float(method.split("@")[1])


class FakeRuns:
    """Writes what a finished run writes (config, metrics with curves) without training anything."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, config: dict, out_dir: str, progress: bool = False) -> dict:
        cfg = RunConfig.from_dict(config)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RUN_CONFIG, cfg.to_dict())
        scores = _calibration(cfg)
        m = record(cfg.task, cfg.method, cfg.seed, scores, lr=cfg.learning_rate, backbone=cfg.backbone)
        m["selection"]["auc"] = sum(scores) / len(scores)
        m["evaluation"]["auc"] = 50.0
        atomic_write_json(out / METRICS_FILE, m)
        self.calls.append((cfg.task, cfg.method, cfg.learning_rate, cfg.seed))
        return {"dir": out_dir, "seconds": 0.0, "auc": 50.0, "selection_auc": m["selection"]["auc"]}


def _common(backbone) -> dict:
    return {"tasks": ["rte", "sst2"], "backbone": str(backbone), "exit_layers": [1, 2, 4], "n_train": 80,
            "epochs": 1, "calibration_size": 40}


def _reference_spec(backbone, **over):
    return spec_from_dict({"name": "ref", **_common(backbone), "methods": ["early_exit", "sweet"], "seeds": [0, 1],
                           "learning_rates": [1e-3, 3e-3], "lr_selection": "first_seed", **over})


@pytest.fixture()
def checkout(tmp_path, monkeypatch):
    """A folder that looks like a git checkout, the current directory somewhere else (relative references must
    not depend on it)."""
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return tmp_path / "repo"


def test_runs_wait_for_the_reference_then_run_at_its_chosen_rates(checkout, tiny_backbone_dir, tiny_glue_dir):
    ref_dir, grid_dir = checkout / "docs" / "ref", checkout / "docs" / "ablation" / "grid"
    spec = spec_from_dict({"name": "ablation", **_common(tiny_backbone_dir), "exit_layers": [1, 3, 4],
                           "methods": ["early_exit", "sweet"], "seeds": [0, 1, 2], "learning_rates_from": "docs/ref"})
    assert spec.learning_rates == [] and spec.n_runs == 2 * 2 * 3
    with pytest.raises(SweetError, match="field 'learning_rates_from': .*docs/ref is not a sweet grid directory"):
        grid_status(spec, grid_dir, str(tiny_glue_dir))

    ref_fake = FakeRuns()
    ref = _reference_spec(tiny_backbone_dir, tasks=["rte"])  # sst2 not yet in the reference's manifest
    run_grid(ref, ref_dir, data_dir=str(tiny_glue_dir), progress=False, executor=ref_fake)
    with pytest.raises(SweetError, match="has no runs of sst2/early_exit"):
        grid_status(spec, grid_dir, str(tiny_glue_dir))
    ref = _reference_spec(tiny_backbone_dir)
    with pytest.raises(SweetError, match="4 of 4 run"):  # the reference's sst2 runs do not finish (yet)
        run_grid(ref, ref_dir, data_dir=str(tiny_glue_dir), progress=False, update_spec=True,
                 executor=lambda c, o, progress=False: (_ for _ in ()).throw(RuntimeError("stopped")))
    st = grid_status(spec, grid_dir, str(tiny_glue_dir))  # rte chosen, sst2's seed-0 runs unfinished: waiting
    assert (st["n_runs"], st["pending"], st["waiting"]) == (12, 6, 6)
    waits = [r["label"] for r in st["runs"] if r["state"] == "waiting"]
    assert waits[0] == "sst2/early_exit/lr=?/seed=0 (waits for the learning rate docs/ref chooses for sst2/early_exit)"
    lines = _describe_plan(spec, st)
    assert "6 waiting" in lines[0] and any("the learning rate docs/ref chooses for sst2/sweet" in x for x in lines)

    run_grid(ref, ref_dir, data_dir=str(tiny_glue_dir), progress=False, executor=ref_fake)
    fake = FakeRuns()
    res = run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False, executor=fake)
    assert res.n_runs == 12 and len(res.executed) == 12
    assert fake.calls == [(t, m, REF_RATE[m], s) for t in ("rte", "sst2") for s in (0, 1, 2) for m in REF_RATE]
    stored = read_json(grid_dir / GRID_FILE)["spec"]
    assert stored["learning_rates_from"] == "docs/ref" and stored["learning_rates"] == []
    assert "learning_rates_from = \"docs/ref\"" in (grid_dir / SPEC_TOML).read_text(encoding="utf-8")
    # a re-launch with the stored spec finds everything finished (and the spec file round-trips)
    again = load_spec_file(grid_dir / SPEC_TOML)
    assert again.to_dict() == spec.to_dict()
    assert run_grid(again, grid_dir, data_dir=str(tiny_glue_dir), progress=False, executor=fake).skipped == 12


def test_another_methods_rate_and_the_value_chosen_by_worst_deficit(checkout, tiny_backbone_dir, tiny_glue_dir):
    ref_dir, grid_dir = checkout / "ref", checkout / "beyond"
    run_grid(_reference_spec(tiny_backbone_dir), ref_dir, data_dir=str(tiny_glue_dir), progress=False,
             executor=FakeRuns())
    spec = spec_from_dict({"name": "beyond", **_common(tiny_backbone_dir), "seeds": [0, 1, 2],
                           "methods": ["grad_scale@0.25", "grad_scale@0.75", "sweet_then_ee@0.5"],
                           "learning_rates_from": str(ref_dir), "learning_rate_method": "early_exit",
                           "param_selection": "first_seed_worst_deficit"})
    # per task: 3 runs on seed 0, then on seeds 1 and 2 the chosen grad_scale value and sweet_then_ee (one value)
    assert spec.n_runs == 2 * (3 + 2 * 2)
    st = grid_status(spec, grid_dir, str(tiny_glue_dir))
    assert (st["n_runs"], st["pending"], st["waiting"]) == (14, 10, 4)
    assert [r["label"] for r in st["runs"] if r["state"] == "waiting"][0] == (
        "rte/grad_scale@?/lr=?/seed=1 (waits for the value of grad_scale chosen on seed 0)")

    fake = FakeRuns()
    res = run_grid(spec, grid_dir, data_dir=str(tiny_glue_dir), progress=False, executor=fake)
    assert res.n_runs == 14 and len(res.executed) == 14 and not res.failed
    lr = REF_RATE["early_exit"]
    expected = []
    for task in ("rte", "sst2"):  # grad_scale@0.75: worst deficit -1 against max(EE, SWEET); @0.25: -14 (better AUC)
        expected += [(task, m, lr, 0) for m in spec.methods]
        expected += [(task, m, lr, s) for s in (1, 2) for m in ("grad_scale@0.75", "sweet_then_ee@0.5")]
    assert fake.calls == expected
    assert "waiting" not in read_json(grid_dir / GRID_FILE)


def test_relative_references_are_read_from_the_checkout_root(checkout, tmp_path):
    (checkout / "docs" / "ref").mkdir(parents=True)
    atomic_write_json(checkout / "docs" / "ref" / GRID_FILE, {"spec": {}, "runs": []})
    grid = checkout / "docs" / "new" / "grid"
    assert checkout_root(grid) == checkout
    assert resolve_reference("docs/ref", grid) == (checkout / "docs" / "ref").resolve()
    assert resolve_reference(str(checkout / "docs" / "ref"), tmp_path / "x") == (checkout / "docs" / "ref").resolve()
    with pytest.raises(SweetError, match="is this grid itself"):
        resolve_reference("docs/ref", checkout / "docs" / "ref")


def test_task_methods_leave_pairs_out(tiny_backbone_dir, tiny_glue_dir, tmp_path):
    spec = spec_from_dict({**_common(tiny_backbone_dir), "methods": ["early_exit", "sweet", "multi_model"],
                           "seeds": [0, 1], "learning_rates": [1e-3], "task_methods": {"rte": ["sweet", "early_exit"]}})
    assert spec.methods_for("rte") == ["early_exit", "sweet"] and spec.methods_for("sst2") == spec.methods
    assert spec.n_runs == (2 + 3) * 2
    st = grid_status(spec, tmp_path / "g", str(tiny_glue_dir))
    assert st["n_runs"] == 10 and not any("rte/multi_model" in r["dir"] for r in st["runs"])
    assert "task_methods = {rte = [\"early_exit\", \"sweet\"]}" in spec_to_toml(spec)


def test_the_new_fields_stay_out_of_the_stored_spec_at_their_defaults(tiny_backbone_dir):
    spec = _reference_spec(tiny_backbone_dir)
    d = spec.to_dict()
    assert not {"learning_rates_from", "learning_rate_method", "param_selection", "task_methods"} & set(d)
    assert spec_from_dict(d).to_dict() == d


@pytest.mark.parametrize("over, message", [
    ({"learning_rates_from": "ref", "learning_rates": [1e-3]}, "give learning_rates or learning_rates_from, not both"),
    ({"learning_rate_method": "early_exit"}, "field 'learning_rate_method': needs learning_rates_from"),
    ({"param_selection": "first_seed_worst_deficit"}, "field 'param_selection': 'first_seed_worst_deficit' compares"),
    ({"param_selection": "best"}, "field 'param_selection': must be one of all_seeds, first_seed_worst_deficit"),
    ({"learning_rates_from": "ref", "learning_rate_method": "nope"},
     "field 'learning_rate_method': 'same' or a method"),
    ({"task_methods": {"mnli": ["sweet"]}}, "field 'task_methods': names task 'mnli', which is not in tasks"),
    ({"task_methods": {"rte": ["multi_model"]}}, "field 'task_methods': rte: multi_model not in methods"),
    ({"task_methods": ["sweet"]}, "field 'task_methods': must be a table of task = \\[methods\\], got \\['sweet'\\]"),
    ({"learning_rates_from": 42}, "field 'learning_rates_from': must be a grid directory \\(a path\\), got 42"),
])
def test_bad_combinations_are_refused_naming_the_field(tiny_backbone_dir, over, message):
    raw = {**_common(tiny_backbone_dir), "methods": ["early_exit", "sweet"], "seeds": [0], "learning_rates": [1e-3]}
    if "learning_rates_from" in over and "learning_rates" not in over:
        raw.pop("learning_rates")
    with pytest.raises(SweetError, match=message) as err:
        spec_from_dict({**raw, **over})
    # docs/errors.md lists the message ("SPEC" for the spec's source)
    table = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert str(err.value).replace("spec: ", "SPEC: ", 1).split("; choose one of")[0] in table


def test_the_committed_follow_up_specs_load_and_say_what_the_issues_ask():
    ablation = load_spec_file(PAPER / "ablation" / "spec.toml")
    assert (ablation.tasks, ablation.methods, ablation.exit_layers) == (
        ["sst2", "mnli", "qnli"], ["early_exit", "sweet", "multi_model"], "proportional")
    assert (ablation.learning_rates_from, ablation.learning_rate_method) == ("docs/results/paper/grid", "same")
    assert (ablation.seeds, ablation.n_train, ablation.epochs, ablation.batch_size, ablation.n_runs) == (
        [0, 1, 2], 6000, 2, 16, 27)
    base = load_spec_file(PAPER / "base" / "spec.toml")
    assert (base.backbone, base.exit_layers, base.learning_rates, base.n_runs) == ("mpnet", "proportional", [5e-5], 15)
    assert base.methods_for("sst2") == ["early_exit", "sweet", "multi_model"]
    assert base.methods_for("mnli") == ["early_exit", "sweet"]


def test_the_committed_beyond_spec_loads_once_its_methods_exist():
    from sweet.methods import parse_method

    try:
        parse_method("own@0.5") and parse_method("ee_anchor@0.5")
    except SweetError as exc:
        pytest.skip(f"the beyond-the-paper methods are not in this sweet yet ({exc})")
    beyond = load_spec_file(PAPER / "beyond" / "spec.toml")
    assert beyond.selected_families(beyond.methods) == {
        "own": ["own@0.25", "own@0.5", "own@0.75"], "ee_anchor": ["ee_anchor@0.25", "ee_anchor@0.5", "ee_anchor@0.75"]}
    assert (beyond.learning_rate_method, beyond.param_selection) == ("early_exit", "first_seed_worst_deficit")
    # the screen: 3 tasks x (6 values on seed 0 + each family's chosen value on seeds 1-2); the full test: the
    # other 4 tasks run the family ahead on the screen (own) only, 3 values on seed 0 + the chosen one on seeds 1-2
    own = ["own@0.25", "own@0.5", "own@0.75"]
    assert beyond.task_methods == {t: own for t in ("mrpc", "cola", "qqp", "rte")}
    assert [t for t in beyond.tasks if t not in beyond.task_methods] == ["sst2", "mnli", "qnli"]
    assert beyond.n_runs == 3 * (6 + 2 * 2) + 4 * (3 + 2)


def test_the_cost_model_scales_multi_model_by_its_ladder_and_mpnet_by_its_speed():
    from sweet.experiments.plan import TaskInfo, _estimate_seconds

    info = TaskInfo(data={}, n_train_available=7000, n_eval_examples=1872, mean_chars=60.0)

    def est(backbone: str, exit_layers, method: str) -> float:
        spec = spec_from_dict({"tasks": ["sst2"], "methods": [method], "seeds": [0], "learning_rates": [1e-4],
                               "backbone": backbone, "exit_layers": exit_layers})
        return _estimate_seconds(info, spec, method, 6000) - 4.0

    ee = est("default", None, "early_exit")
    assert est("default", None, "multi_model") == pytest.approx(2.2 * ee)  # measured on [1, 2, 4, 6]
    assert est("default", "proportional", "multi_model") == pytest.approx(2.2 * (12 / 6) / (13 / 6) * ee)
    assert est("mpnet", None, "early_exit") == pytest.approx(6.7 * ee)
    assert est("mpnet", "proportional", "multi_model") == pytest.approx(6.7 * 2.2 * (23 / 12) / (13 / 6) * ee)


def _synthetic_reference(path: Path, spec: dict, aucs: dict[tuple, float]) -> None:
    """A reference grid on disk without running anything: grid.json and, per (method, lr, seed) in ``aucs``, a
    finished run whose calibration AUC is the value given."""
    runs = []
    for (method, lr, seed), auc in aucs.items():
        rel = f"runs/sst2/{method}/lr{lr:g}/seed{seed}-k"
        m = record("sst2", method, seed, [auc] * 5, lr=lr)
        m["selection"]["auc"] = auc
        atomic_write_json(path / rel / METRICS_FILE, m)
        runs.append({"dir": rel, "task": "sst2", "method": method, "seed": seed, "learning_rate": lr})
    atomic_write_json(path / GRID_FILE, {"spec": spec, "runs": runs})


def test_a_reference_choosing_over_all_seeds_needs_every_seed_and_other_references_are_refused(tmp_path):
    from sweet.experiments.reference import ReferenceGrid

    spec = {"tasks": ["sst2"], "methods": ["early_exit"], "seeds": [0, 1], "learning_rates": [1e-4, 2e-4],
            "n_train": 6000, "lr_selection": "all_seeds"}
    # 2e-4 is better on seed 0 but worse on the mean over seeds 0 and 1
    aucs = {("early_exit", 1e-4, 0): 70.0, ("early_exit", 2e-4, 0): 72.0, ("early_exit", 1e-4, 1): 70.0}
    _synthetic_reference(tmp_path / "ref", spec, aucs)
    ref = ReferenceGrid.open(str(tmp_path / "ref"), tmp_path / "grid")
    assert ref.chosen_rate("sst2", "early_exit") is None  # seed 1 at 2e-4 unfinished
    _synthetic_reference(tmp_path / "ref", spec, {**aucs, ("early_exit", 2e-4, 1): 60.0})
    ref = ReferenceGrid.open(str(tmp_path / "ref"), tmp_path / "grid")
    assert ref.chosen_rate("sst2", "early_exit") == 1e-4
    assert ref.chosen_run("sst2", "early_exit", 1)["learning_rate"] == 1e-4
    with pytest.raises(SweetError, match="has no seed 5 \\(seeds: 0, 1\\)"):
        ref.chosen_run("sst2", "early_exit", 5)
    with pytest.raises(SweetError, match="has no runs of sst2/sweet"):
        ref.chosen_rate("sst2", "sweet")
    _synthetic_reference(tmp_path / "sweep", {**spec, "n_train": [1000, 6000]}, {})
    with pytest.raises(SweetError, match="is a training-set size sweep"):
        ReferenceGrid.open(str(tmp_path / "sweep"), tmp_path / "grid")


def test_a_grid_switched_to_or_from_a_reference_is_refused_without_update_spec(checkout, tiny_backbone_dir,
                                                                               tiny_glue_dir):
    ref_dir, grid_dir = checkout / "ref", checkout / "g"
    run_grid(_reference_spec(tiny_backbone_dir), ref_dir, data_dir=str(tiny_glue_dir), progress=False,
             executor=FakeRuns())
    plain = spec_from_dict({**_common(tiny_backbone_dir), "methods": ["early_exit"], "seeds": [0],
                            "learning_rates": [3e-3]})
    run_grid(plain, grid_dir, data_dir=str(tiny_glue_dir), progress=False, executor=FakeRuns())
    from_ref = spec_from_dict({**_common(tiny_backbone_dir), "methods": ["early_exit"], "seeds": [0],
                               "learning_rates_from": "ref"})
    with pytest.raises(SweetError, match="field\\(s\\) learning_rates, learning_rates_from differ"):
        grid_status(from_ref, grid_dir, str(tiny_glue_dir))
    # the reference chose 3e-3 for early_exit: the same runs, so switching reuses them
    res = run_grid(from_ref, grid_dir, data_dir=str(tiny_glue_dir), progress=False, executor=FakeRuns(),
                   update_spec=True)
    assert res.skipped == 2 and res.executed == []
    with pytest.raises(SweetError, match="field\\(s\\) learning_rates, learning_rates_from differ"):
        grid_status(plain, grid_dir, str(tiny_glue_dir))


def test_a_folder_holding_only_its_spec_is_a_grid_prepared_before_its_first_launch(tmp_path, tiny_backbone_dir,
                                                                                    tiny_glue_dir):
    folder = tmp_path / "ablation"
    folder.mkdir()
    text = spec_to_toml(spec_from_dict({**_common(tiny_backbone_dir), "methods": ["early_exit"], "seeds": [0],
                                        "learning_rates": [1e-3]}))
    written = "# why this grid exists (kept)\n" + text
    (folder / SPEC_TOML).write_text(written, encoding="utf-8")
    spec = load_spec_file(folder / SPEC_TOML)
    assert grid_status(spec, folder, str(tiny_glue_dir))["pending"] == 2
    run_grid(spec, folder, data_dir=str(tiny_glue_dir), progress=False, executor=FakeRuns())
    assert (folder / SPEC_TOML).read_text(encoding="utf-8") == written  # says the grid's spec: kept as written
    assert (folder / GRID_FILE).is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / SPEC_TOML).write_text(written, encoding="utf-8")
    (other / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(SweetError, match="is not empty and is not a sweet grid directory"):
        grid_status(spec, other, str(tiny_glue_dir))
    # a changed spec (--update-spec) rewrites the file
    wider = spec_from_dict({**spec.to_dict(), "seeds": [0, 1]})
    run_grid(wider, folder, data_dir=str(tiny_glue_dir), progress=False, executor=FakeRuns(), update_spec=True)
    assert load_spec_file(folder / SPEC_TOML).seeds == [0, 1]

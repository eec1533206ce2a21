"""Your own data end to end on a tiny backbone (issue #23): a CSV with renamed columns and 3 string classes, a JSON
Lines pair file, metrics, label names through predict and evaluate, stratified hold-outs, and run keys."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from sweet.config import RunConfig
from sweet.data import make_splits
from sweet.datasource import TableExamples, load_run_data
from sweet.errors import SweetError
from sweet.experiments.plan import run_key
from sweet.io import read_json
from sweet.predictor import Predictor
from sweet.runs import evaluate_run, run
from tests.conftest import WORDS_NEG, WORDS_POS

QUEUES = {"billing": WORDS_POS, "outage": WORDS_NEG, "login": ["plot", "actor", "story"]}


def write_tickets(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["ticket_id", "body", "queue"])
        for i in range(n):
            queue = rng.choice(sorted(QUEUES))
            words = rng.sample(["the", "was", "is", "a", "very", "quite", "and"], 3) + [rng.choice(QUEUES[queue])] * 2
            rng.shuffle(words)
            w.writerow([i, " ".join(words), queue])
    return path


@pytest.fixture(scope="module")
def tickets(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tickets")
    write_tickets(d / "tickets.csv", 480)
    write_tickets(d / "eval.csv", 60, seed=1)
    return d


@pytest.fixture(scope="module")
def ticket_run(tickets, tiny_backbone_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tickets"
    cfg = RunConfig(data=str(tickets / "tickets.csv"), label_column="queue", method="sweet", backbone=str(tiny_backbone_dir),
                    exit_layers=[1, 2, 4], n_train=None, epochs=3, learning_rate=3e-3, calibration_size=80,
                    heldout_eval_size=80, metric="f1_macro", checkpoint_every=0)
    return out, run(cfg, out, progress=False)


def test_a_csv_with_other_columns_and_string_labels_trains_and_reports_per_class(ticket_run, capfd):
    out, metrics = ticket_run
    assert metrics["task"] == "tickets"
    assert metrics["evaluation"]["metric"] == "f1_macro" and metrics["evaluation"]["split"] == "held-out train"
    data = metrics["data"]
    assert data["text_columns"] == ["body"] and data["label_names"] == ["billing", "login", "outage"]
    assert data["stratified_holdout"] is True and any("'body'" in n for n in data["notes"])
    classes = metrics["classes"]["last_exit"]
    assert [c["label"] for c in classes["per_class"]] == ["billing", "login", "outage"]
    assert np.asarray(classes["confusion_matrix"]).sum() == metrics["evaluation"]["n_examples"] == 80
    assert metrics["classes"]["at_default_threshold"]["threshold"] == 0.9
    # every remaining row trains (n_train=None): 480 - 48 calibration (at most a tenth of the pool) - 80 held out
    assert metrics["calibration"]["n_examples"] == 48 and metrics["n_train"] == 352
    assert metrics["evaluation"]["per_exit"][-1]["score"] > 45  # above chance (33): learnable from keywords


def test_predict_and_evaluate_answer_with_the_label_names(ticket_run, tickets):
    out, _ = ticket_run
    clf = Predictor.load(out, device="cpu", precision="fp32")
    rows = clf.predict(["refund great good", "awful awful was"], threshold=1.0)
    assert {r["label"] for r in rows} <= {"billing", "login", "outage"}
    assert clf.info()["labels"] == ["billing", "login", "outage"] and clf.info()["text_fields"] == ["body"]
    res = evaluate_run(out, eval_data=str(tickets / "eval.csv"), progress=False, device="cpu")
    assert res["evaluation"]["n_examples"] == 60 and res["evaluation"]["split"].startswith("file:")


def test_evaluate_and_bench_take_other_data_a_folder_split_or_a_file(ticket_run, tickets, tmp_path):
    """--data on evaluate (and bench): a folder's evaluation split by the default rule or --eval-split, a file whole."""
    import shutil

    from sweet.bench import benchmark

    out, _ = ticket_run
    folder = tmp_path / "splits"
    folder.mkdir()
    shutil.copy(tickets / "tickets.csv", folder / "train.csv")
    shutil.copy(tickets / "eval.csv", folder / "dev.csv")
    res = evaluate_run(out, eval_data=str(folder), progress=False, device="cpu", write=False)
    assert res["evaluation"]["n_examples"] == 60 and res["evaluation"]["split"] == f"{folder}:dev"
    res = evaluate_run(out, eval_data=str(folder), eval_split="train", progress=False, device="cpu", write=False)
    assert res["evaluation"]["n_examples"] == 480
    with pytest.raises(SweetError, match="no file for split 'test'"):
        evaluate_run(out, eval_data=str(folder), eval_split="test", progress=False, device="cpu", write=False)
    with pytest.raises(SweetError, match="does not apply: .* is a single file"):
        evaluate_run(out, eval_data=str(tickets / "eval.csv"), eval_split="dev", progress=False, write=False)
    with pytest.raises(SweetError, match="give --data SOURCE with them"):
        evaluate_run(out, eval_split="dev", progress=False, write=False)
    report = benchmark(out, (16,), repeats=1, warmup=0, progress=False, device="cpu", precisions="fp32", peers=False,
                       data=str(tickets / "eval.csv"))
    assert report["n_examples"] == 60 and report["split"] == f"file:{tickets / 'eval.csv'}"


def test_an_evaluation_file_with_an_unknown_class_is_refused(ticket_run, tmp_path):
    out, _ = ticket_run
    bad = tmp_path / "bad.csv"
    bad.write_text("body,queue\nthe film,refunds\nthe plot,billing\n", encoding="utf-8")
    with pytest.raises(SweetError, match=r"label\(s\) 'refunds' are not classes of this run"):
        evaluate_run(out, eval_data=str(bad), progress=False, device="cpu")


def test_stratified_holdout_keeps_class_shares_and_is_the_same_for_every_seed(tickets):
    cfg = RunConfig(data=str(tickets / "tickets.csv"), label_column="queue", method="sweet", calibration_size=60,
                    heldout_eval_size=60)
    data = load_run_data(cfg)
    assert isinstance(data.pool, TableExamples) and data.stratify
    a = make_splits(data, 100, seed=0, calibration_size=60, heldout_eval_size=60)
    b = make_splits(data, 100, seed=1, calibration_size=60, heldout_eval_size=60)
    assert a.calibration.ids == b.calibration.ids and a.train.ids != b.train.ids
    pool_share = np.bincount(data.pool.labels, minlength=3) / len(data.pool)
    cal_share = np.bincount(a.calibration.labels, minlength=3) / len(a.calibration)
    assert np.abs(pool_share - cal_share).max() <= 1 / 60 + 1e-9
    assert not set(a.train.ids) & set(a.calibration.ids) and not set(a.evaluation.ids) & set(a.calibration.ids)


def test_f1_needs_two_classes_and_names_a_real_positive_class(tickets, tmp_path):
    cfg = RunConfig(data=str(tickets / "tickets.csv"), label_column="queue", method="sweet", metric="f1")
    with pytest.raises(SweetError, match="needs 2 classes, but the data has 3; use --metric f1_macro"):
        load_run_data(cfg)
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps({"premise": f"the film {i}", "hypothesis": "a plot", "label": ["no", "yes"][i % 2]})
                           + "\n" for i in range(40)), encoding="utf-8")
    data = load_run_data(RunConfig(data=str(two), method="sweet", metric="f1", positive_label="yes"))
    assert data.task.metric == "f1:1" and data.task.text_fields == ("premise", "hypothesis")
    with pytest.raises(SweetError, match="--positive-label 'maybe' is not a class"):
        load_run_data(RunConfig(data=str(two), method="sweet", metric="f1", positive_label="maybe"))


def test_config_checks_for_own_data():
    with pytest.raises(SweetError, match=r"give a GLUE task preset \(--task"):
        RunConfig(method="sweet")
    with pytest.raises(SweetError, match="describe --data; give --data too"):
        RunConfig(task="sst2", method="sweet", label_column="y")
    with pytest.raises(SweetError, match="--positive-label goes with --metric f1"):
        RunConfig(data="x.csv", method="sweet", positive_label="a")
    assert RunConfig(data="x.csv", method="sweet", metric="mcc").metric == "matthews"
    with pytest.raises(SweetError, match="unknown metric 'auc'"):
        RunConfig(data="x.csv", method="sweet", metric="auc")


def test_own_data_fields_at_their_defaults_leave_run_keys_unchanged():
    preset = RunConfig(task="sst2", method="sweet", seed=1)
    # the key of a preset run is computed over the fields it had before own data existed
    before = {k: v for k, v in preset.to_dict().items() if k not in (
        "data", "eval_data", "data_config", "train_split", "eval_split", "text_columns", "label_column", "metric",
        "positive_label", "drop_invalid")}
    import hashlib

    d = {k: v for k, v in before.items() if k not in ("data_dir", "checkpoint_every", "device")}
    d = {k: v for k, v in d.items() if not (k == "precision" and v == "fp32")}
    expected = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert run_key(preset) == expected
    assert run_key(RunConfig(task="sst2", method="sweet", seed=1, metric="f1")) != expected


# ----------------------------------------------------------------------------------------------- the CLI


def test_the_demo_without_a_glue_folder_reads_the_hub_and_names_both_ways_in_when_it_cannot(tmp_path, monkeypatch):
    import datasets

    from tests.test_cli_help import run as cli

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv("SWEET_GLUE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["demo", "--output", str(tmp_path / "demo"), "--no-progress"])
    assert code == 2
    assert "reading SST-2 from the Hugging Face hub (nyu-mll/glue, config sst2)" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the demo needs SST-2: pass --data-dir DIR") and "network access" in last
    assert not (tmp_path / "demo" / "sst2-sweet" / "run_config.json").exists()


def test_train_with_data_from_the_command_line_and_a_bad_column(tickets, tiny_backbone_dir, tmp_path, monkeypatch):
    from tests.test_cli_help import run as cli

    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["train", "-m", "sweet", "-o", "out", "--data", str(tickets / "tickets.csv"),
                        "--label-column", "nope"])
    assert code == 2 and err.strip().endswith("label column 'nope' not found; the data has columns: ticket_id, body, queue")
    assert list(tmp_path.iterdir()) == []
    code, _, err = cli(["train", "-m", "sweet", "-o", "out", "--data", str(tickets / "tickets.csv"),
                        "--text-column", "body", "--text-columns", "a,b"])
    assert code == 2 and "give --text-column (single texts) or --text-columns A,B (pairs), not both" in err
    code, out, err = cli(["train", "-m", "early_exit", "-o", "out", "--data", str(tickets / "tickets.csv"),
                          "--text-column", "body", "--label-column", "queue", "--backbone", str(tiny_backbone_dir),
                          "--exit-layers", "1,4", "--n-train", "100", "--epochs", "1", "--metric", "mcc",
                          "--checkpoint-every", "0", "--no-progress"])
    assert code == 0, err
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["n_train"] == 100 and metrics["evaluation"]["metric"] == "matthews"
    assert read_json(tmp_path / "out" / "run_config.json")["task"] is None


def test_sweet_train_from_python_runs_what_the_cli_runs(tickets, tiny_backbone_dir, tmp_path):
    import sweet

    metrics = sweet.train(data=str(tickets / "tickets.csv"), text_column="body", label_column="queue", method="sweet",
                          output=tmp_path / "run", backbone=str(tiny_backbone_dir), exit_layers=[1, 4], epochs=1,
                          checkpoint_every=0, progress=False)
    assert metrics["data"]["label_names"] == ["billing", "login", "outage"] and metrics["n_train"] == 480 - 48 - 96
    assert read_json(tmp_path / "run" / "run_config.json")["text_columns"] == ["body"]
    with pytest.raises(SweetError, match="text_column .* or text_columns .*, not both"):
        sweet.train(data="x.csv", text_column="a", text_columns=["a", "b"], method="sweet", output=tmp_path / "x")


def test_predict_scores_a_file_with_label_names(ticket_run, tickets, tmp_path, monkeypatch):
    import pyarrow.csv as pacsv

    from tests.test_cli_help import run as cli

    out, _ = ticket_run
    code, stdout, err = cli(["predict", str(out), "--input", str(tickets / "eval.csv"), "--output",
                             str(tmp_path / "scored.csv"), "--threshold", "0.5", "--no-progress"])
    assert code == 0, err
    assert stdout.startswith("scored 60 rows") and str(tmp_path / "scored.csv") in stdout
    table = pacsv.read_csv(tmp_path / "scored.csv").to_pydict()
    # the input's columns, in order; its gold 'queue' kept; the predictions added after them
    assert list(table)[:3] == ["ticket_id", "body", "queue"] and {"label", "exit_layer", "confidence"} <= set(table)
    assert set(table["label"]) <= {"billing", "login", "outage"}
    code, _, err = cli(["predict", str(out), "--output", str(tmp_path / "x.csv")])
    assert code == 2 and "--output needs --input FILE" in err


def test_analyze_gradients_on_own_data(tickets, tiny_backbone_dir, tmp_path, monkeypatch):
    from tests.test_cli_help import run as cli

    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["analyze", "gradients", "--data", str(tickets / "tickets.csv"), "--label-column", "queue",
                          "--steps", "3", "--batch-size", "8", "--probe-batches", "1", "--backbone",
                          str(tiny_backbone_dir), "--exit-layers", "1,2,4", "--output", "grad", "--no-progress"])
    assert code == 0, err
    assert "using text column 'body' (detected)" in err and "layer 1: pairs" in out
    assert read_json(tmp_path / "grad" / "gradients.json")["task"] == "tickets"


def test_a_grid_with_a_data_source_entry_runs_reports_and_continues(tickets, tiny_backbone_dir, tmp_path):
    from sweet.experiments import grid_status, load_spec_file, run_grid, write_report

    data = tmp_path / "tickets.csv"
    data.write_text((tickets / "tickets.csv").read_text(encoding="utf-8"), encoding="utf-8")
    spec_file = tmp_path / "grid.toml"
    spec_file.write_text(f'''tasks = [{{data = "{data}", label_column = "queue", metric = "f1_macro"}}]
methods = ["early_exit", "sweet"]
seeds = [0]
learning_rates = [3e-3]
backbone = "{tiny_backbone_dir}"
exit_layers = [1, 2, 4]
n_train = 200
epochs = 1
calibration_size = 40
heldout_eval_size = 60
''', encoding="utf-8")
    spec = load_spec_file(spec_file)
    assert spec.tasks[0]["label_column"] == "queue"
    grid_dir = tmp_path / "grid"
    result = run_grid(spec, grid_dir, progress=False)
    assert not result.failed and len(result.executed) == 2
    assert sorted(p.relative_to(grid_dir).parts[1] for p in grid_dir.glob("runs/*/*/*/*/metrics.json")) == ["tickets"] * 2
    status = grid_status(spec, grid_dir)
    assert status["finished"] == 2 and status["pending"] == 0  # continued: nothing to run again
    report = write_report(grid_dir, tmp_path / "report")
    assert report["status"]["n_finished"] == 2
    # the floors read the evaluation split's classes from the run's own data; macro F1 has the one-class test only
    floors = report["floors"]["tasks"]["tickets"]
    assert floors["evaluation"]["known"] and sum(floors["evaluation"]["counts"]) == floors["evaluation"]["n"]
    assert floors["tests"] == "one class"
    # the run key holds the data file's content: changed data is refused, as for the presets
    data.write_text(data.read_text(encoding="utf-8").replace(",billing\n", ",login\n", 1), encoding="utf-8")
    with pytest.raises(SweetError, match="other settings|different config|changed"):
        run_grid(spec, grid_dir, progress=False)
    bad = tmp_path / "bad.toml"
    bad.write_text('tasks = [{data = "x.csv", metric = "auc"}]\nmethods = ["sweet"]\nseeds = [0]\nlearning_rates = [1e-4]\n',
                   encoding="utf-8")
    with pytest.raises(SweetError, match=r"field 'tasks': x.csv: unknown metric 'auc'"):
        load_spec_file(bad)


def test_serve_answers_with_the_label_names(ticket_run):
    import asyncio

    pytest.importorskip("fastapi")
    from sweet.serving.app import create_app
    from tests.test_serving import serving

    out, _ = ticket_run
    app = create_app(out, api_key="", device="cpu", precision="fp32")

    async def go():
        async with serving(app) as c:
            return (await c.post("/predict", json={"texts": ["refund great", "awful was"], "threshold": 1.0})).json(), \
                (await c.get("/info")).json()

    answer, info = asyncio.run(go())
    assert info["labels"] == ["billing", "login", "outage"] and info["text_fields"] == ["body"]
    assert {row["label"] for row in answer["predictions"]} <= {"billing", "login", "outage"}


def test_the_proportional_ladder_by_name(tiny_backbone_dir):
    from sweet.backbones import exit_layers_for, proportional_exit_layers
    from sweet.experiments.spec import spec_from_dict
    from sweet.modeling import MultiExitModel

    assert proportional_exit_layers(6) == [1, 2, 3, 6]
    assert proportional_exit_layers(12) == [1, 4, 6, 12] and proportional_exit_layers(24) == [1, 6, 12, 24]
    assert exit_layers_for(None, 6) == [1, 2, 4, 6] and exit_layers_for([1, 6], 6) == [1, 6]
    model = MultiExitModel.from_backbone(str(tiny_backbone_dir), exit_layers="proportional", num_labels=2,
                                         method="sweet")  # 4 layers
    assert model.exit_layers == [1, 2, 3, 4]  # 4 layers: first, a third (at least 2), a half (at least 3), last
    cfg = RunConfig(task="sst2", method="sweet", exit_layers="proportional")
    assert run_key(cfg) != run_key(RunConfig(task="sst2", method="sweet"))  # a run on it keeps its own key
    with pytest.raises(SweetError, match="unknown exit ladder 'thirds'"):
        RunConfig(task="sst2", method="sweet", exit_layers="thirds")
    spec = spec_from_dict({"tasks": ["sst2"], "methods": ["sweet"], "seeds": [0], "learning_rates": [1e-4],
                           "exit_layers": "proportional"})
    assert spec.exit_layers == "proportional"

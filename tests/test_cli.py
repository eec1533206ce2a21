"""The CLI end to end on a tiny local backbone: train -> evaluate -> predict, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweet.io import read_json

# every test here runs the CLI in a subprocess on a trained tiny run: integration tests
pytestmark = pytest.mark.slow


def sweet(*args, input_text=None, env_extra=None):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "sweet.cli", *args], capture_output=True, text=True,
                          input=input_text, env=env, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_backbone_dir, tiny_glue_dir):
    out = tmp_path_factory.mktemp("runs") / "sst2-sweet"
    r = sweet("train", "--task", "sst2", "--method", "sweet", "--backbone", str(tiny_backbone_dir),
              "--exit-layers", "1,2,4", "--n-train", "200", "--epochs", "2", "--lr", "3e-3",
              "--data-dir", str(tiny_glue_dir), "--output", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    return out, r


def test_train_writes_a_complete_run_directory(trained_run):
    out, r = trained_run
    for name in ("run_config.json", "metrics.json", "train_log.json", "splits.json", "model/model.safetensors",
                 "model/sweet_config.json"):
        assert (out / name).is_file(), name
    m = read_json(out / "metrics.json")
    ev = m["evaluation"]
    assert ev["split"] == "validation" and ev["n_examples"] == 120
    assert [p["exit_layer"] for p in ev["per_exit"]] == [1, 2, 4]
    assert len(ev["curve"]) == 11
    assert ev["curve"][0]["exit_counts"] == [120, 0, 0] and ev["curve"][-1]["exit_counts"] == [0, 0, 120]
    assert ev["curve"][0]["cost_ratio"] == pytest.approx(1 / 4) and ev["curve"][-1]["cost_ratio"] == 1.0
    assert len(m["calibration"]["temperatures"]) == 3
    assert m["selection"]["split"] == "calibration" and m["selection"]["auc"] is not None
    assert read_json(out / "splits.json")["n_train"] == 200
    assert "per-exit scores" in r.stdout and "speed-accuracy curve" in r.stdout


def test_evaluate_reproduces_the_training_metrics(trained_run):
    out, _ = trained_run
    before = read_json(out / "metrics.json")["evaluation"]
    r = sweet("evaluate", str(out), "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    after = json.loads(r.stdout)["evaluation"]
    assert [p["score"] for p in after["per_exit"]] == pytest.approx([p["score"] for p in before["per_exit"]])
    assert [p["cost_ratio"] for p in after["curve"]] == pytest.approx([p["cost_ratio"] for p in before["curve"]])


def test_evaluate_keeps_the_runs_precision_and_results_unless_asked(trained_run, tmp_path):
    """evaluate computes in the precision the run's results were computed in (fp32), says so, writes its own file,
    and leaves metrics.json alone; --overwrite replaces the run's results and their placement together."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    before = (run_dir / "metrics.json").read_bytes()
    r = sweet("evaluate", str(run_dir), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"evaluated in fp32 on cpu. Written: {run_dir / 'metrics-eval-fp32.json'}" in r.stdout
    assert (run_dir / "metrics.json").read_bytes() == before
    written = read_json(run_dir / "metrics-eval-fp32.json")["evaluation"]
    assert written["placement"]["precision"] == "fp32"
    assert written["curve"] == read_json(run_dir / "metrics.json")["evaluation"]["curve"]

    r = sweet("evaluate", str(run_dir), "--no-progress", "--precision", "int8", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert f"evaluated in int8 on cpu. Written: {run_dir / 'metrics.json'}" in r.stdout
    saved = read_json(run_dir / "metrics.json")
    assert saved["placement"]["evaluation"]["precision"] == "int8" == saved["evaluation"]["placement"]["precision"]
    assert saved["placement"]["train"] == read_json(trained_run[0] / "metrics.json")["placement"]["train"]
    # the next re-evaluation defaults to the precision the results are now in
    r = sweet("evaluate", str(run_dir), "--no-progress")
    assert "evaluated in int8 on cpu" in r.stdout and (run_dir / "metrics-eval-int8.json").is_file()
    r = sweet("evaluate", str(run_dir), "--file", str(run_dir / "x.tsv"), "--overwrite")
    assert r.returncode == 2 and "does not apply to --data/--file" in r.stderr


def test_the_run_config_records_the_token_limit_that_ran(trained_run):
    """The tiny backbone has 64 positions: --max-length 256 is capped, with a warning, and run_config.json keeps
    what was asked (it keys grid runs) beside what ran."""
    out, r = trained_run
    cfg = read_json(out / "run_config.json")
    assert cfg["max_length"] == 256 and cfg["max_length_used"] == 64 == read_json(out / "train_log.json")["max_length"]
    assert "--max-length 256 is more than this backbone accepts; using 64 tokens" in r.stderr


def test_predict_unlabelled_text_from_stdin(trained_run):
    out, _ = trained_run
    r = sweet("predict", str(out), "--threshold", "0.5", input_text="the film was good\nawful plot\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    label, layer, conf = lines[0].split("\t")
    assert label in ("negative", "positive") and layer == "1" and 0.5 <= float(conf) <= 1.0
    r = sweet("predict", str(out), "--threshold", "1", "--format", "jsonl", input_text="good\n")
    row = json.loads(r.stdout)
    assert row["exit_layer"] == 4 and set(row) == {"label", "label_id", "exit_layer", "confidence"}


def test_finished_run_is_not_overwritten_silently(trained_run, tiny_glue_dir):
    out, _ = trained_run
    r = sweet("train", "--task", "sst2", "--method", "sweet", "--data-dir", str(tiny_glue_dir), "--output", str(out))
    assert r.returncode == 2 and "already holds a finished run" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--task", "stsb", "--method", "sweet", "--output", "x"], "unknown task 'stsb'"),
        (["train", "--task", "sst2", "--method", "fast", "--output", "x"], "unknown method 'fast'"),
        (["train", "--task", "sst2", "--method", "sweet", "--output", "x", "--exit-layers", "1,a"], "comma-separated integers"),
        (["train", "--task", "sst2", "--method", "sweet", "--output", "x", "--lr", "0"], "learning rate must be a positive"),
        (["predict", "nowhere"], "nowhere is not a local directory and could not be downloaded from the Hugging Face hub"),
        (["evaluate", "."], "not a sweet run directory"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, tiny_glue_dir, args, message):
    r = sweet(*args, env_extra={"SWEET_GLUE_DIR": str(tiny_glue_dir)}, input_text="")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_exit_layers_for_the_backbone(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    r = sweet("train", "--task", "sst2", "--method", "sweet", "--backbone", str(tiny_backbone_dir), "--exit-layers",
              "1,3,2", "--data-dir", str(tiny_glue_dir), "--output", str(tmp_path / "r"))
    assert r.returncode == 2 and "strictly increasing" in r.stderr


def test_predict_threshold_out_of_range_and_empty_input(trained_run):
    out, _ = trained_run
    r = sweet("predict", str(out), "--threshold", "1.5", input_text="good\n")
    assert r.returncode == 2 and "threshold must be a number in [0, 1]" in r.stderr
    r = sweet("predict", str(out), input_text="\n\n")
    assert r.returncode == 2 and "predict input is empty" in r.stderr


def test_help_for_every_command():
    for cmd in ("train", "evaluate", "predict", "demo", "tasks"):
        r = sweet(cmd, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout

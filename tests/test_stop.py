"""Stopping on request without losing training progress: a run saves its current step and stops when its stop
file appears, and resumes to the result of an uninterrupted run; a grid launch stops on ``GRID_DIR/STOP`` (no
further run starts, the launch ends as "stopped" and removes the file) and the next launch continues."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sweet.checkpoint import STOP_FILE, TrainingStopped, checkpoint_step
from sweet.cli import app
from sweet.errors import SweetError
from sweet.experiments import LAUNCHES_FILE, grid_status, request_stop, run_grid
from sweet.experiments.store import launch_running, lock_grid, unlock_grid
from sweet.io import read_json
from sweet.runs import run

from .test_grid import tiny_spec
from .test_reliability import (  # noqa: F401  (fixtures: a 4-layer BERT with dropout; the uninterrupted run)
    STEPS,
    assert_same_result,
    config,
    dropout_backbone,
    finished_run,
    on_batch,
)


STOP_AT = 7  # not a multiple of the checkpoint interval (5): the stop saves a step no periodic checkpoint has


def stop_file_at_step(monkeypatch, step: int, stop_file: Path) -> None:
    on_batch(monkeypatch, step, lambda: stop_file.write_text("stop\n"))


@pytest.fixture
def python_handles_sigint():
    """Ctrl-C as in a terminal: a process started in the background by a non-interactive shell (``cmd &``, nohup,
    cron) inherits SIGINT ignored, and Python then leaves it so; the tests that press Ctrl-C set Python's handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c(times: int = 1):
    def press():
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGINT)
    return press


def test_training_stopped_survives_pickling():  # Ray hands a worker's exception back pickled
    again = pickle.loads(pickle.dumps(TrainingStopped(7, 26)))
    assert (again.step, again.total_steps) == (7, 26) and "step 7 of 26" in str(again)


def test_a_stopped_run_saves_its_current_step_and_resumes_to_the_uninterrupted_result(
        tmp_path, dropout_backbone, tiny_glue_dir, finished_run, monkeypatch):  # noqa: F811
    out, stop = tmp_path / "run", tmp_path / "STOP"
    with monkeypatch.context() as mp:
        stop_file_at_step(mp, STOP_AT, stop)
        with pytest.raises(TrainingStopped) as info:
            run(config(dropout_backbone, tiny_glue_dir), out, progress=False, stop_file=stop)
    assert (info.value.step, info.value.total_steps) == (STOP_AT, STEPS)
    assert checkpoint_step(out) == (STOP_AT, STEPS)  # the last periodic checkpoint was step 5
    assert not (out / "metrics.json").exists()
    # while the file is there, a resumed run stops again after one step; without it, it runs to the end
    with pytest.raises(TrainingStopped):
        run(config(dropout_backbone, tiny_glue_dir), out, progress=False, resume=True, stop_file=stop)
    assert checkpoint_step(out) == (STOP_AT + 1, STEPS)
    stop.unlink()
    run(config(dropout_backbone, tiny_glue_dir), out, progress=False, resume=True, stop_file=stop)
    assert read_json(out / "train_log.json")["resumed_at_steps"] == [STOP_AT, STOP_AT + 1]
    assert_same_result(finished_run, out)


def test_ctrl_c_saves_the_step_in_progress_and_a_second_one_stops_at_once(
        tmp_path, dropout_backbone, tiny_glue_dir, finished_run, monkeypatch, capsys,  # noqa: F811
        python_handles_sigint):
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        on_batch(mp, STOP_AT, ctrl_c())  # Ctrl-C while the batch of step STOP_AT is being made
        with pytest.raises(KeyboardInterrupt, match=f"interrupted at step {STOP_AT} of {STEPS} \\(checkpoint saved\\)"):
            run(config(dropout_backbone, tiny_glue_dir), out, progress=False)
    assert "stopping once this step is done" in capsys.readouterr().err
    assert checkpoint_step(out) == (STOP_AT, STEPS)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    run(config(dropout_backbone, tiny_glue_dir), out, progress=False, resume=True)
    assert read_json(out / "train_log.json")["resumed_at_steps"] == [STOP_AT]
    assert_same_result(finished_run, out)

    # twice: the second Ctrl-C interrupts at once, inside the step (the periodic checkpoint at step 5 is the last)
    again = tmp_path / "again"
    with monkeypatch.context() as mp:
        on_batch(mp, STOP_AT, ctrl_c(times=2))
        with pytest.raises(KeyboardInterrupt, match="interrupted twice"):
            run(config(dropout_backbone, tiny_glue_dir), again, progress=False)
    assert checkpoint_step(again) == (5, STEPS)


def test_no_stop_file_no_stop(tmp_path, dropout_backbone, tiny_glue_dir, finished_run):  # noqa: F811
    out = tmp_path / "run"
    run(config(dropout_backbone, tiny_glue_dir), out, progress=False, stop_file=tmp_path / "never-written")
    assert_same_result(finished_run, out)


def _grid_spec(backbone):
    return tiny_spec(backbone, tasks=["sst2"], methods=["early_exit"], seeds=[0, 1], learning_rates=[3e-3],
                     epochs=2)  # 80 examples, batch 16: 10 steps per run


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_a_grid_stops_on_request_and_the_next_launch_continues_to_the_same_result(
        tmp_path, tiny_backbone_dir, tiny_glue_dir, monkeypatch, capsys):
    spec, grid = _grid_spec(tiny_backbone_dir), tmp_path / "g"
    with monkeypatch.context() as mp:
        stop_file_at_step(mp, 3, grid / STOP_FILE)
        first = run_grid(spec, grid, data_dir=str(tiny_glue_dir), progress=False, command="test")
    assert first.stop_requested and first.executed == [] and not first.failed and len(first.stopped) == 1
    stopped = grid / first.stopped[0]
    assert "seed0" in first.stopped[0] and checkpoint_step(stopped) == (3, 10)
    assert len(list(grid.glob("runs/**/run_config.json"))) == 1  # the second seed never started
    assert not (grid / STOP_FILE).exists()  # the request is answered
    record = read_json(grid / LAUNCHES_FILE)[-1]
    assert record["status"] == "stopped" and record["stopped"] == first.stopped
    assert "stopped sst2" in capsys.readouterr().err
    # --dry-run counts the stopped run's steps left only
    status = grid_status(spec, grid, data_dir=str(tiny_glue_dir))
    by_dir = {r["dir"]: r for r in status["runs"]}
    assert status["partial"] == 1 and by_dir[first.stopped[0]]["steps"] == [3, 10]
    full = sum(r["estimate_seconds"] for r in status["runs"])
    assert status["estimate_seconds_left"] == pytest.approx(full - 0.3 * by_dir[first.stopped[0]]["estimate_seconds"],
                                                            abs=1)

    (grid / STOP_FILE).write_text("left over\n")  # a stale request does not stop the next launch
    second = run_grid(spec, grid, data_dir=str(tiny_glue_dir), progress=False, command="test")
    assert "a stop request left from an earlier launch" in capsys.readouterr().err
    assert not second.stop_requested and len(second.executed) == 2 and read_json(grid / LAUNCHES_FILE)[-1]["status"] == "completed"
    assert read_json(stopped / "train_log.json")["resumed_at_steps"] == [3]

    reference = tmp_path / "reference"
    run_grid(spec, reference, data_dir=str(tiny_glue_dir), progress=False, command="test")
    for rel in second.executed:
        a, b = _weights(grid / rel), _weights(reference / rel)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_on_the_local_back_end_keeps_the_step_in_progress(tmp_path, tiny_backbone_dir, tiny_glue_dir,
                                                                 monkeypatch, python_handles_sigint):
    grid = tmp_path / "g"
    on_batch(monkeypatch, 3, ctrl_c())
    with pytest.raises(KeyboardInterrupt):
        run_grid(_grid_spec(tiny_backbone_dir), grid, data_dir=str(tiny_glue_dir), progress=False)
    assert read_json(grid / LAUNCHES_FILE)[-1]["status"] == "interrupted"
    (started,) = [p.parent for p in grid.glob("runs/**/run_config.json")]
    assert checkpoint_step(started) == (3, 10)  # not the periodic checkpoint (every 200 steps): the step in progress


def test_a_stop_request_needs_a_running_launch(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    errors_md = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    grid = tmp_path / "g"
    grid.mkdir()
    with pytest.raises(SweetError) as err:
        request_stop(grid)
    assert f"`{str(err.value).replace(str(grid), 'DIR')}`" in errors_md  # the message docs/errors.md lists
    run_grid(tiny_spec(tiny_backbone_dir, tasks=["sst2"], methods=["early_exit"], seeds=[0], learning_rates=[3e-3]),
             grid, data_dir=str(tiny_glue_dir), progress=False)
    assert launch_running(grid) is False
    with pytest.raises(SweetError, match="no 'sweet grid' launch is running") as err:
        request_stop(grid)
    assert f"`{str(err.value).replace(str(grid), 'DIR')}`" in errors_md
    assert not (grid / STOP_FILE).exists()
    fd = lock_grid(grid)  # stands in for a running launch
    try:
        assert launch_running(grid) is True
        from typer.testing import CliRunner

        res = CliRunner().invoke(app, ["grid", "--output", str(grid), "--stop"])
        assert res.exit_code == 0, res.output
        assert (grid / STOP_FILE).is_file() and "stops once each run in training has saved its current step" in res.output
    finally:
        unlock_grid(fd)


@pytest.mark.slow
def test_ray_runs_stop_on_request(tmp_path, tiny_backbone_dir, tiny_glue_dir):
    """The stop reaches Ray workers (other processes) through the file, and their TrainingStopped comes back as a
    stop, not a failure."""
    ray = pytest.importorskip("ray")
    spec = tiny_spec(tiny_backbone_dir, tasks=["sst2"], methods=["early_exit"], seeds=[0, 1, 2],
                     learning_rates=[3e-3], epochs=100)  # 500 steps per run (~25 ms each here): stopped mid-way
    grid = tmp_path / "g"
    done = threading.Event()

    def ask_to_stop():  # as soon as a run has started training (its run_config.json is written just before)
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            if list(grid.glob("runs/**/run_config.json")):
                time.sleep(0.2)
                request_stop(grid)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=ask_to_stop)
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")  # one run at a time
    try:
        watcher.start()
        res = run_grid(spec, grid, data_dir=str(tiny_glue_dir), backend="ray", progress=False)
    finally:
        done.set()
        watcher.join()
        ray.shutdown()
    assert res.stop_requested and not res.failed and res.executed == [] and len(res.stopped) == 1
    assert read_json(grid / LAUNCHES_FILE)[-1]["status"] == "stopped" and not (grid / STOP_FILE).exists()
    assert len(list(grid.glob("runs/**/run_config.json"))) == 1  # no further run started
    step, total = checkpoint_step(grid / res.stopped[0])
    assert 0 < step < total == 500

"""Executing a grid: every unfinished run, on the local or the Ray back-end, with progress and launch records.

``local`` runs one run after another in this process; ``ray`` submits each run as a Ray task with its own
CPU/GPU request (``ray.init(address=...)``: a local instance by default, or a cluster). Both call
:func:`execute_run`, which calls :func:`sweet.runs.run`, so the files are the same. On a cluster, the grid
directory, the data directory and the backbone must be at the same paths on every node (a shared file system).
How a launch is stopped (signals, stop requests): :mod:`sweet.experiments.stopping`; where a grid stands
without running it (`--dry-run`): :mod:`sweet.experiments.status`.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import runs as _runs
from ..checkpoint import STOP_FILE, TrainingStopped
from ..config import RunConfig
from ..errors import SweetError, install_hint
from ..evaluation import Evaluation
from ..io import atomic_write_json, atomic_write_text
from ..rundir import METRICS_FILE, RUN_CONFIG, hide_hf_progress_bars
from .continuation import DATA_SHA256, check_continuation
from .plan import GridRun, TaskInfo, WaitingRun, expand_stages, plan, run_state
from .spec import GridSpec, load_spec_file, spec_to_toml
from .status import estimate_left, measured_rate, runs_side_by_side, started_steps
from .stopping import stop_signals_interrupt
from .store import (
    GRID_FILE,
    SPEC_TOML,
    Launch,
    check_grid_dir,
    code_version,
    machine,
    now,
    write_gitignore,
    write_splits_digest,
)

BACKENDS = ("local", "ray")


def execute_run(config: dict, out_dir: str, progress: bool = False, num_threads: int | None = None,
                stop_file: str | None = None) -> dict:
    """One grid run: the same :func:`sweet.runs.run` for every back-end. Returns a short summary.

    A run that was started before (a killed launch) continues from its training checkpoint when runs.py
    supports that; if it cannot be resumed, it starts over. ``stop_file``: the grid's stop request (the run
    raises :class:`~sweet.checkpoint.TrainingStopped` once it has saved its current step)."""
    run = _runs.run  # looked up at call time (tests stand a fake in for it)
    if num_threads:
        torch.set_num_threads(max(1, int(num_threads)))
    if not progress:
        hide_hf_progress_bars()
    cfg = RunConfig.from_dict(config)
    out = Path(out_dir)
    started = (out / RUN_CONFIG).is_file() and not (out / METRICS_FILE).is_file()
    metrics = None
    stop = {"stop_file": stop_file} if stop_file is not None else {}
    if started and "resume" in inspect.signature(run).parameters:
        try:
            metrics = run(cfg, out, progress=progress, resume=True, **stop)
        except SweetError as exc:
            print(f"cannot resume {out} ({exc}); starting it over", file=sys.stderr)
    if metrics is None:
        metrics = run(cfg, out, progress=progress, overwrite=True, **stop)
    return {
        "dir": out_dir,
        "seconds": metrics["timing"]["total_seconds"],
        "auc": Evaluation.of_run(metrics).curve.auc,
        "selection_auc": metrics["selection"]["auc"],
    }


@dataclass
class GridResult:
    grid_dir: Path
    n_runs: int
    skipped: int  # finished before this launch
    executed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # runs that saved their current step on a stop request
    wall_seconds: float = 0.0
    stop_requested: bool = False  # the launch ended on a stop request (GRID_DIR/STOP)



class _Progress:
    """One bar for the grid (runs done / total, ETA from the runs of this launch); the current run's own
    bars (training steps, calibration, evaluation) appear below it in the local back-end. Before a run of this
    launch has finished, the ETA is the prior estimate (``prior``: seconds per unfinished run, by its directory or
    label; started runs count their steps left) scaled by ``scale`` (how long this grid's finished runs took
    against their estimate, :func:`sweet.experiments.status.measured_rate`, divided by the runs side by side):
    what ``--dry-run`` prints."""

    def __init__(self, total: int, done: int, prior: dict[str, float], enabled: bool, scale: float = 1.0):
        self.prior = prior
        self.prior_left = sum(prior.values())
        self.prior_done = 0.0
        self.scale = scale
        self.t0 = time.perf_counter()
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=done, desc="grid", unit="run", position=0, leave=True,
                        disable=not enabled, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs [{elapsed}{postfix}]")
        self._refresh("")

    def eta_seconds(self) -> float:
        if self.prior_done <= 0:
            return self.prior_left * self.scale
        return self.prior_left * (time.perf_counter() - self.t0) / self.prior_done

    def _refresh(self, current: str) -> None:
        eta = self.eta_seconds()
        approx = "~" if self.prior_done <= 0 else ""
        text = f"ETA {approx}{_fmt_duration(eta)}"
        if current:
            text += f", now: {current}"
        self.bar.set_postfix_str(text, refresh=True)

    def start(self, label: str) -> None:
        self._refresh(label)

    def done(self, r: GridRun, message: str) -> None:
        prior = self.prior.get(r.rel_dir, r.estimate_seconds)  # a run once waiting has its estimate now
        self.prior_left -= prior
        self.prior_done += prior
        self.bar.update(1)
        self._refresh("")
        self.write(message)

    def write(self, message: str) -> None:
        if self.enabled:
            self.bar.write(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def run_grid(
    spec: GridSpec,
    grid_dir: str | Path,
    *,
    data_dir: str | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    update_spec: bool = False,
    progress: bool = True,
    command: str | None = None,
    threads: int | None = None,
    executor: Callable[..., dict] | None = None,
) -> GridResult:
    """Run every unfinished run of the grid; finished runs are skipped. Returns what this launch did.

    ``threads``: torch threads for the local back-end (default: torch's default; on a machine shared with
    other jobs, 1 thread can be several times faster than 2). ``executor`` replaces :func:`execute_run` for
    the local back-end (tests)."""
    if threads is not None and threads < 1:
        raise SweetError(f"--threads must be at least 1, got {threads}")
    if backend not in BACKENDS:
        raise SweetError(f"unknown back-end '{backend}'; choose one of: {', '.join(BACKENDS)}")
    grid_dir = Path(grid_dir).resolve()
    check_grid_dir(grid_dir, spec, update_spec)
    runs, waiting, tasks, ddir = plan(spec, grid_dir, data_dir)
    states = {r.rel_dir: run_state(grid_dir, r) for r in runs}
    check_continuation(grid_dir, runs, tasks, ddir, update_spec)
    pending = [r for r in runs if states[r.rel_dir] != "finished"]
    grid_dir.mkdir(parents=True, exist_ok=True)
    write_gitignore(grid_dir)
    stop_path = grid_dir / STOP_FILE
    if stop_path.exists():  # a request to a launch that is over (this one would stop every run at its first step)
        stop_path.unlink()
        print(f"removed {stop_path}: a stop request left from an earlier launch", file=sys.stderr)
    schedule = _Schedule(spec, grid_dir, ddir, tasks, runs, waiting,
                         finished={d for d, state in states.items() if state == "finished"})
    if stored_spec_toml(grid_dir) != spec.to_dict():  # a spec.toml that already says it is kept as written
        atomic_write_text(grid_dir / SPEC_TOML, spec_to_toml(spec))
    n_runs = len(runs) + len(waiting)
    result = GridResult(grid_dir, n_runs, len(runs) - len(pending))
    launch = Launch(grid_dir, {
        "started": now(), "command": command, "backend": backend, "ray_address": ray_address, "threads": threads,
        "data_dir": ddir, "n_runs": n_runs, "skipped": result.skipped, "to_run": n_runs - result.skipped,
        "executed": 0, "failed": [], "status": "running", "machine": machine(), "code": code_version(),
    })
    status = "interrupted"

    def on_done(r: GridRun, summary: dict | None, error: str | None) -> None:
        if error is None:
            write_splits_digest(grid_dir / r.rel_dir, r.config.extra.get(DATA_SHA256, {}))
            result.executed.append(r.rel_dir)
            fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
            msg = (f"done {r.label} in {summary['seconds']:.0f}s: AUC {fmt(summary['auc'])} "
                   f"(calibration split: {fmt(summary['selection_auc'])})")
        else:
            result.failed.append((r.rel_dir, error))
            msg = f"FAILED {r.label}: {error}"
        bar.done(r, msg)
        launch.save(executed=len(result.executed), failed=[{"dir": d, "error": e} for d, e in result.failed])

    def on_stopped(r: GridRun, stop: TrainingStopped) -> None:
        result.stopped.append(r.rel_dir)
        bar.write(f"stopped {r.label} at step {stop.step} of {stop.total_steps} (checkpoint saved; the next launch "
                  "continues it)")
        launch.save(stopped=result.stopped)

    bar = None
    try:
        steps = started_steps(grid_dir, [r for r in pending if states[r.rel_dir] == "partial"])
        rate = measured_rate(grid_dir, [r for r in runs if states[r.rel_dir] == "finished"])
        prior = {r.rel_dir: estimate_left(r, steps) for r in pending} | {w.label: w.estimate_seconds for w in waiting}
        scale = (rate["ratio"] if rate else 1.0) / runs_side_by_side(spec, backend, ray_address)
        bar = _Progress(n_runs, result.skipped, prior, progress, scale=scale)
        with stop_signals_interrupt():
            if backend == "local":
                run_one = executor or functools.partial(execute_run, stop_file=str(stop_path))
                _run_local(schedule, grid_dir, run_one, bar, on_done, on_stopped, progress, threads, stop_path)
            elif pending:
                _run_ray(schedule, grid_dir, spec, ray_address, on_done, on_stopped, stop_path)
        result.stop_requested = stop_path.exists()
        status = "failed" if result.failed else "stopped" if result.stop_requested else "completed"
    finally:
        stop_path.unlink(missing_ok=True)  # the request is answered: the launch is over
        if bar is not None:
            bar.close()
        result.wall_seconds = round(time.perf_counter() - launch.t0, 1)
        result.skipped += schedule.found_finished
        launch.end(status=status, finished=now(), **({"skipped": result.skipped} if schedule.found_finished else {}))
    if result.failed:
        first_dir, first_err = result.failed[0]
        raise SweetError(f"{len(result.failed)} of {len(result.failed) + len(result.executed)} run(s) failed "
                         f"(first: {first_dir}: {first_err}); the others are done. Fix the cause and launch again: "
                         "finished runs are skipped")
    if schedule.waiting:  # a first-seed run failed (its later seeds could not be planned), or a reference is unfinished
        reasons = sorted({w.reason for w in schedule.waiting})
        print(f"{len(schedule.waiting)} run(s) still wait (for {'; '.join(reasons[:3])}"
              f"{'; ...' if len(reasons) > 3 else ''})", file=sys.stderr)
    return result


class _Schedule:
    """Which run goes next. Re-plans after every finished run where later seeds wait for the learning rate chosen
    on the first seed (``lr_selection = "first_seed"``), and keeps the grid's manifest (grid.json) up to date.
    Each run is handed out at most once per launch (a failed run is retried by the next launch)."""

    def __init__(self, spec: GridSpec, grid_dir: Path, data_dir: str | None, tasks: dict[str, TaskInfo],
                 runs: list[GridRun], waiting: list[WaitingRun], finished: set[str]):
        self.spec, self.grid_dir, self.data_dir, self.tasks = spec, grid_dir, data_dir, tasks
        self.runs, self.waiting = runs, waiting
        self.handed_out: set[str] = set()
        self.finished = set(finished)  # rel_dirs
        self.found_finished = 0  # runs planned during the launch that were already finished (an earlier grid's)
        self._write_manifest()

    def _write_manifest(self) -> None:
        atomic_write_json(self.grid_dir / GRID_FILE, {
            "spec": self.spec.to_dict(),
            "updated": now(),
            "data": {t: info.data for t, info in self.tasks.items()},
            "runs": [{"dir": r.rel_dir, "key": r.key, "task": r.config.task_name, "method": r.config.method,
                      "seed": r.config.seed, "learning_rate": r.config.learning_rate, "backbone": r.config.backbone,
                      "n_train": r.config.n_train}
                     for r in self.runs],
            **({"waiting": [w.to_dict() for w in self.waiting]} if self.waiting else {}),
        })

    def mark_finished(self, r: GridRun) -> None:
        self.finished.add(r.rel_dir)
        if self.waiting:
            runs, waiting = expand_stages(self.spec, self.data_dir, self.tasks, self.grid_dir)
            if len(waiting) != len(self.waiting):
                known = {x.rel_dir for x in self.runs}
                found = {x.rel_dir for x in runs if x.rel_dir not in known and run_state(self.grid_dir, x) == "finished"}
                self.finished |= found
                self.found_finished += len(found)
                self.runs, self.waiting = runs, waiting
                self._write_manifest()

    def take(self) -> GridRun | None:
        """The next run to start (in the grid's order), or None when none is left to start now."""
        for r in self.runs:
            if r.rel_dir not in self.finished and r.rel_dir not in self.handed_out:
                self.handed_out.add(r.rel_dir)
                return r
        return None


def _run_local(schedule: _Schedule, grid_dir: Path, executor, bar: _Progress, on_done, on_stopped, progress: bool,
               threads: int | None, stop_path: Path) -> None:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        while not stop_path.exists() and (r := schedule.take()) is not None:
            bar.start(r.label)
            try:
                summary = executor(r.config.to_dict(), str(grid_dir / r.rel_dir), progress=progress)
            except (KeyboardInterrupt, SystemExit):
                raise
            except TrainingStopped as stop:
                on_stopped(r, stop)
                break
            except Exception as exc:  # one broken run must not stop the others; reported at the end
                on_done(r, None, f"{type(exc).__name__}: {exc}")
                continue
            on_done(r, summary, None)
            schedule.mark_finished(r)
    finally:
        torch.set_num_threads(before)


def _ray_execute_run(config: dict, out_dir: str, num_threads: int, stop_file: str | None = None) -> dict:
    """The Ray task: the same function as the local back-end, no progress bars."""
    return execute_run(config, out_dir, progress=False, num_threads=num_threads, stop_file=stop_file)


def _ray_slots(ray, spec: GridSpec) -> int:
    """How many runs the cluster can run at once (so that runs are submitted in the grid's order as slots free)."""
    total = ray.cluster_resources()
    slots = [int(total.get("CPU", 0) // spec.cpus_per_run)]
    if spec.gpus_per_run > 0:
        slots.append(int(total.get("GPU", 0) // spec.gpus_per_run))
    return max(1, min(slots))


def _run_ray(schedule: _Schedule, grid_dir: Path, spec: GridSpec, address: str | None, on_done, on_stopped,
             stop_path: Path) -> None:
    try:
        import ray  # an optional extra (sweet[ray]): imported only when the Ray back-end is used
    except ImportError:
        raise SweetError(f"the Ray back-end needs the 'ray' package: {install_hint('ray')} (or pip install ray)") from None

    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict = {"include_dashboard": False, "logging_level": "WARNING"}
        if address:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except Exception as exc:  # ConnectionError and friends: say what was tried
            raise SweetError(f"cannot start or reach Ray (address={address or 'a new local instance'}): {exc}") from exc
    try:
        task = ray.remote(_ray_execute_run).options(num_cpus=spec.cpus_per_run, num_gpus=spec.gpus_per_run)
        threads = max(1, int(spec.cpus_per_run))
        slots = _ray_slots(ray, spec)
        refs: dict = {}
        try:
            while True:
                while len(refs) < slots and not stop_path.exists() and (r := schedule.take()) is not None:
                    refs[task.remote(r.config.to_dict(), str(grid_dir / r.rel_dir), threads, str(stop_path))] = r
                if not refs:
                    break
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    r = refs.pop(ref)
                    try:
                        summary = ray.get(ref)
                    except Exception as exc:  # RayTaskError wraps the worker's exception
                        cause = getattr(exc, "cause", None) or exc
                        if isinstance(cause, TrainingStopped):
                            on_stopped(r, cause)
                            continue
                        lines = str(cause).strip().splitlines()
                        on_done(r, None, f"{type(cause).__name__}: {lines[-1] if lines else ''}")
                        continue
                    on_done(r, summary, None)
                    schedule.mark_finished(r)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started_here:
            ray.shutdown()


def stored_spec_toml(grid_dir: Path) -> dict | None:
    """What the grid directory's spec.toml says (a spec dict), or None where it is missing or no longer loads."""
    try:
        return load_spec_file(grid_dir / SPEC_TOML).to_dict() if (grid_dir / SPEC_TOML).is_file() else None
    except SweetError:
        return None

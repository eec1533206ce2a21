"""Where a grid stands, without running it (``sweet grid --dry-run``): how many runs are finished, started and
not started, the cost model's estimate of what is left (:mod:`sweet.experiments.plan`), and that estimate scaled
by how long this grid's finished runs took on the machines they ran on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..checkpoint import checkpoint_step
from ..io import read_json
from ..rundir import METRICS_FILE
from .continuation import check_continuation
from .plan import GridRun, plan, run_state
from .spec import GridSpec
from .store import check_grid_dir


def measured_rate(grid_dir: Path, finished: Sequence[GridRun]) -> dict | None:
    """How long this grid's finished runs took (``metrics.json`` -> ``timing.total_seconds``: training over all
    its launches, plus evaluation) against the cost model's estimate of them: ``ratio`` calibrates the estimate of
    what is left to this machine and the load the runs ran under. None before a finished run has a timing."""
    seconds = estimate = 0.0
    n = 0
    for r in finished:
        try:
            total = read_json(grid_dir / r.rel_dir / METRICS_FILE)["timing"]["total_seconds"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an older or hand-made metrics.json without a timing: nothing to calibrate with
        if isinstance(total, (int, float)) and total > 0 and r.estimate_seconds > 0:
            seconds, estimate, n = seconds + float(total), estimate + r.estimate_seconds, n + 1
    if n == 0:
        return None
    return {"runs": n, "seconds": round(seconds), "estimate_seconds": round(estimate),
            "ratio": round(seconds / estimate, 3)}


def started_steps(grid_dir: Path, started: Sequence[GridRun]) -> dict[str, tuple[int, int]]:
    """The training step (done, total) of each started run with a checkpoint on this machine, by its directory."""
    out = {}
    for r in started:
        at = checkpoint_step(grid_dir / r.rel_dir)
        if at and at[1] > 0:
            out[r.rel_dir] = at
    return out


def estimate_left(r: GridRun, steps: dict[str, tuple[int, int]]) -> float:
    """The estimate of an unfinished run: a started run with a checkpoint counts only its steps left (training is
    nearly all of a run's estimate: evaluation is ~1-3% of it at the paper's sizes)."""
    at = steps.get(r.rel_dir)
    return r.estimate_seconds * (1.0 - at[0] / at[1]) if at else r.estimate_seconds


def runs_side_by_side(spec: GridSpec, backend: str, ray_address: str | None) -> int:
    """How many runs a launch runs at once on this machine: the CPUs // ``cpus_per_run`` on a local Ray instance
    (as Ray schedules them), one on the local back-end. A cluster (``ray_address``) is not asked: 1."""
    if backend != "ray" or ray_address is not None:
        return 1
    return max(1, int((os.cpu_count() or 1) // spec.cpus_per_run))


def grid_status(spec: GridSpec, grid_dir: str | Path, data_dir: str | None = None, update_spec: bool = False) -> dict:
    """How many runs are finished / started / pending, and the prior time estimate of what is left (``sweet grid
    --dry-run``): a started run with a training checkpoint on this machine counts only its steps left
    (:func:`estimate_left`) and reports them as ``steps`` (done, total). ``measured`` (:func:`measured_rate`; None
    before a run has finished) scales the estimate by how long this grid's finished runs took
    (``seconds_left``). It runs the checks a launch runs first (:func:`sweet.experiments.backends.run_grid`), so a
    plan that a launch would refuse fails here with the same message; it writes nothing."""
    grid_dir = Path(grid_dir).resolve()
    check_grid_dir(grid_dir, spec, update_spec)
    runs, waiting, tasks, ddir = plan(spec, grid_dir, data_dir)
    states = [run_state(grid_dir, r) for r in runs]
    check_continuation(grid_dir, runs, tasks, ddir, update_spec, write=False)
    steps = started_steps(grid_dir, [r for r, s in zip(runs, states) if s == "partial"])
    left = (sum(estimate_left(r, steps) for r, s in zip(runs, states) if s != "finished")
            + sum(w.estimate_seconds for w in waiting))
    measured = measured_rate(grid_dir, [r for r, s in zip(runs, states) if s == "finished"])
    if measured is not None:
        measured["seconds_left"] = round(left * measured["ratio"])
    return {
        "n_runs": len(runs) + len(waiting),
        "finished": states.count("finished"),
        "partial": states.count("partial"),
        "pending": states.count("pending"),
        "waiting": len(waiting),
        "estimate_seconds_left": round(left),
        "measured": measured,
        "runs": [{"dir": r.rel_dir, "state": s, "estimate_seconds": round(r.estimate_seconds),
                  **({"steps": list(steps[r.rel_dir])} if r.rel_dir in steps else {})}
                 for r, s in zip(runs, states)]
        + [{"dir": None, "label": w.label, "state": "waiting", "waits_for": w.reason,
            "estimate_seconds": round(w.estimate_seconds)}
           for w in waiting],
    }

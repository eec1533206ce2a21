"""Continuing a grid from its committed results, on this machine or another one.

A grid directory's light files (:mod:`sweet.experiments.store`) are all a launch needs: a finished run is
recognised by its directory, ``runs/.../seedS-KEY``, where ``KEY`` hashes everything that decides its result
(:func:`~sweet.experiments.plan.run_key`), and by its ``metrics.json``; its weights are not needed. Before a
launch runs anything, :func:`check_continuation` makes sure that the finished runs are the runs this launch
would compute:

- **the settings**: a finished run of the grid's manifest whose place in the grid (task, method, size, learning
  rate, seed) now gets another key was made with other settings -- a changed data file, a changed option of
  the run, or a changed default of this version of sweet. The launch is refused with one line that names
  what changed (:func:`describe_changes`), instead of silently running the grid again beside the old runs.
  ``--update-spec`` accepts the change: the grid is then run with the new settings (the old runs stay on disk
  but leave the grid's manifest and its report).
- **the samples**: a finished run's ``splits_digest.json`` must match the training sample and calibration
  split that this version of sweet draws from the same data and seed (a changed sampling code would otherwise
  mix two protocols in one table). Runs made before digests existed get one from their splits.json.
"""

from __future__ import annotations

from pathlib import Path

from ..data import load_task, make_splits
from ..datasource import load_run_data
from ..errors import SweetError
from ..io import read_json
from ..rundir import METRICS_FILE, RUN_CONFIG
from .plan import GridRun, TaskInfo, comparable_config
from .store import GRID_FILE, read_splits_digest, splits_digest, write_splits_digest

#: RunConfig['extra'] key under which the grid stores the SHA-256 of each data file (role -> hex).
DATA_SHA256 = "data_sha256"


def run_slot(rel_dir: str) -> str:
    """A run's place in the grid, its directory without the key: ``runs/TASK/METHOD/[nN/]lrLR/seedS``."""
    return rel_dir.rsplit("-", 1)[0]


def describe_changes(stored: dict, expected: dict, files: dict[str, str] | None = None) -> str:
    """What differs between a finished run's stored config (run_config.json) and the config this launch would
    give it, in words: changed data files by task and role (and path, from ``files``: role -> path), other
    fields with both values."""
    before, now = comparable_config(stored), comparable_config(expected)
    task = now.get("task", before.get("task"))
    out = []
    for k in sorted(set(before) | set(now)):
        old, new = before.get(k, "<not set>"), now.get(k, "<not set>")
        if k == "extra" and isinstance(old, dict) and isinstance(new, dict):
            for e in sorted(set(old) | set(new)):
                o, n = old.get(e, "<not set>"), new.get(e, "<not set>")
                if o == n:
                    continue
                if e == DATA_SHA256 and isinstance(o, dict) and isinstance(n, dict):
                    out += [f"data file '{role}' of task {task} ({(files or {}).get(role, 'not found')}: sha256 "
                            f"{str(o.get(role))[:12]}... then, {str(n.get(role))[:12]}... now)"
                            for role in sorted(set(o) | set(n)) if o.get(role) != n.get(role)]
                else:
                    out.append(f"extra['{e}'] ({o!r} then, {n!r} now)")
        elif old != new:
            out.append(f"{k} ({old!r} then, {new!r} now)")
    return "; ".join(out) if out else "the way run keys are computed (this version of sweet)"


def check_changed_runs(grid_dir: Path, runs: list[GridRun], tasks: dict[str, TaskInfo], manifest: dict) -> None:
    """Refuse a plan that would run a finished run of the manifest again under another key (module docstring)."""
    planned = {run_slot(r.rel_dir): r for r in runs}
    for entry in manifest.get("runs", []):
        r = planned.get(run_slot(entry["dir"]))
        if r is None or entry["dir"] == r.rel_dir or not (grid_dir / entry["dir"] / METRICS_FILE).is_file():
            continue
        cfg_path = grid_dir / entry["dir"] / RUN_CONFIG
        stored = read_json(cfg_path) if cfg_path.is_file() else {}
        raise SweetError(
            f"{grid_dir}: the finished run {entry['dir']} was made with other settings than this launch would use: "
            f"{describe_changes(stored, r.config.to_dict(), tasks[r.config.task_name].data.get('files'))}. Restore them to continue the grid, pass --update-spec "
            "to run it with the new settings (the old runs are kept but leave the grid), or choose another --output")


def expected_digests(runs: list[GridRun], tasks: dict[str, TaskInfo], data_dir: str | None) -> dict[str, str]:
    """rel_dir -> the splits digest that this version of sweet gives each run (local data only)."""

    out: dict[str, str] = {}
    loaded: dict[str, object] = {}
    by_draw: dict[tuple, str] = {}
    for r in runs:
        c = r.config
        name = c.task_name
        sha = tasks[name].data.get("sha256")
        if (c.data_source != "local" and not c.own_data) or not sha:
            continue
        draw = (name, c.seed, c.n_train, c.calibration_size, c.heldout_eval_size)
        if draw not in by_draw:
            if name not in loaded:
                loaded[name] = load_run_data(c) if c.own_data else load_task(c.task, data_dir, source="local")
            s = make_splits(loaded[name], c.n_train, c.seed, c.calibration_size, c.heldout_eval_size)
            by_draw[draw] = splits_digest(s.train.ids, s.calibration.ids, sha)
        out[r.rel_dir] = by_draw[draw]
    return out


def check_splits(grid_dir: Path, runs: list[GridRun], tasks: dict[str, TaskInfo], data_dir: str | None,
                 write: bool) -> None:
    """Every finished run's splits digest against the samples this launch would draw. ``write``: give a finished
    run without a digest one from its splits.json (a run made before digests existed)."""
    stored: dict[str, str] = {}
    for r in runs:
        d = grid_dir / r.rel_dir
        if not (d / METRICS_FILE).is_file():
            continue
        digest = read_splits_digest(d)
        if digest is None and write:
            digest = write_splits_digest(d, r.config.extra.get(DATA_SHA256, {}))
        if digest is not None:
            stored[r.rel_dir] = digest
    if not stored:
        return
    expected = expected_digests([r for r in runs if r.rel_dir in stored], tasks, data_dir)
    for r in runs:
        if r.rel_dir in expected and expected[r.rel_dir] != stored[r.rel_dir]:
            c = r.config
            raise SweetError(
                f"{grid_dir / r.rel_dir}: its training sample or calibration split (splits_digest.json) is not the one "
                f"this version of sweet draws for {c.task_name}, seed {c.seed}, {c.n_train} examples from the same data; "
                "the sampling code changed since it ran. Use the sweet it ran with, or remove that run directory to "
                "run it again")


def check_continuation(grid_dir: Path, runs: list[GridRun], tasks: dict[str, TaskInfo], data_dir: str | None,
                       update_spec: bool = False, write: bool = True) -> None:
    """Before a launch: the grid's finished runs are the runs this launch would compute (module docstring)."""
    path = grid_dir / GRID_FILE
    if path.is_file() and not update_spec:
        check_changed_runs(grid_dir, runs, tasks, read_json(path))
    check_splits(grid_dir, runs, tasks, data_dir, write)

"""The grid directory on disk: its files, the stored spec, launch records, and what is committed.

::

    GRID_DIR/
      grid.json        the spec, the data files' SHA-256 and the manifest of its runs (directory and key of each)
      spec.toml        the same spec as TOML (copy it, edit it, pass it back with --spec); a directory holding only
                       a spec.toml is a grid prepared before its first launch (``--spec GRID_DIR/spec.toml``), and
                       a spec.toml that says the grid's spec is kept as written (its comments too)
      launches.json    one record per launch: command, back-end, start/end, runs executed/skipped/failed, machine,
                       code (package version, git commit of the sources and whether they differ from it); a launch
                       holds the directory's lock (:func:`lock_grid`) while it runs
      .gitignore       what not to commit: weights (model/), training checkpoints, the per-run splits.json
      runs/TASK/METHOD/lrLR/seedSEED-KEY/        one run directory each (see :mod:`sweet.runs`), plus
                                                 splits_digest.json (below)
      runs/TASK/METHOD/nN/lrLR/seedSEED-KEY/     the same in a training-set size sweep

The results of a grid are its light files: grid.json, spec.toml, launches.json and, per finished run,
run_config.json, metrics.json, train_log.json and splits_digest.json. They are all that is needed to recognise
a finished run and to write the report, so ``git add GRID_DIR`` (the .gitignore leaves the rest out) commits a
grid that continues on another machine (:mod:`sweet.experiments.continuation`).

``splits_digest.json`` holds a SHA-256 over the run's training-sample ids, its calibration ids and the data
files' SHA-256: the ~100 KB of ids in splits.json stay on the machine, and a launch elsewhere checks that it
would draw the same samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; launches are then not guarded against running twice
    fcntl = None

import torch

from ..errors import SweetError
from ..io import atomic_write_json, atomic_write_text, read_json
from ..precision import cpu_kind
from .spec import GridSpec, spec_from_dict

GRID_FILE = "grid.json"
SPEC_TOML = "spec.toml"
LAUNCHES_FILE = "launches.json"
RUNS_DIR = "runs"
GITIGNORE = ".gitignore"
SPLITS_FILE = "splits.json"  # written by sweet.runs
SPLITS_DIGEST = "splits_digest.json"
#: the grid directory's .gitignore: everything a report or a continued grid needs is committed, nothing else.
#: ``!runs/`` re-includes the run directories where a .gitignore above ignores ``runs/`` (this project's does).
GITIGNORE_TEXT = """\
# Written by 'sweet grid'. 'git add GRID_DIR' commits the results (configs, metrics, training logs, split
# digests, the grid's manifest and launches): enough to write the report and to continue the grid elsewhere.
# Left out: model weights, training checkpoints and the per-run sample ids (splits_digest.json stands for them),
# and a stop request to a running launch (STOP).
!runs/
runs/**/model/
runs/**/checkpoint/
runs/**/splits.json
.*.tmp
.*.tmp.png
STOP
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_grid(grid_dir: str | Path) -> dict:
    path = Path(grid_dir) / GRID_FILE
    if not path.is_file():
        raise SweetError(f"{grid_dir} is not a sweet grid directory ({GRID_FILE} is missing); "
                         "create one with 'sweet grid --preset quick --output DIR'")
    return read_json(path)


def stored_spec(grid_dir: str | Path) -> GridSpec | None:
    path = Path(grid_dir) / GRID_FILE
    if not path.is_file():
        return None
    return spec_from_dict(read_json(path)["spec"], source=str(path))


def check_grid_dir(grid_dir: Path, spec: GridSpec, update_spec: bool) -> None:
    if grid_dir.exists() and not grid_dir.is_dir():
        raise SweetError(f"{grid_dir} exists and is not a directory")
    prepared = {SPEC_TOML}  # a grid whose spec was committed before its first launch
    if (grid_dir.is_dir() and any(p.name not in prepared for p in grid_dir.iterdir())
            and not (grid_dir / GRID_FILE).is_file()):
        raise SweetError(f"{grid_dir} is not empty and is not a sweet grid directory; choose another --output")
    old = stored_spec(grid_dir)
    if old is None or update_spec:
        return
    a, b = old.result_fields(), spec.result_fields()
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))  # fields left out at their defaults: None
    if diff:
        raise SweetError(
            f"{grid_dir} was created with a different spec (field(s) {', '.join(diff)} differ); pass --update-spec "
            "to replace it (finished runs that are still part of the grid are reused) or choose another --output"
        )


def last_data_dir(grid_dir: Path) -> str | None:
    """The data directory of this grid's last launch, if it exists here: a re-launch on the same machine needs
    no --data-dir (on another machine, the path recorded there is not used)."""
    path = grid_dir / LAUNCHES_FILE
    if not path.is_file():
        return None
    dirs = [x.get("data_dir") for x in read_json(path) if x.get("data_dir")]
    return dirs[-1] if dirs and Path(dirs[-1]).is_dir() else None


def write_gitignore(grid_dir: Path) -> None:
    """The grid directory's .gitignore (:data:`GITIGNORE_TEXT`), unless it has one (a user's edits are kept)."""
    if not (grid_dir / GITIGNORE).exists():
        atomic_write_text(grid_dir / GITIGNORE, GITIGNORE_TEXT)


def machine() -> dict:
    """Which machine a launch ran on (its launch record; the report counts the machines a grid ran on)."""

    cpu = cpu_kind()["model"]
    gpu = None
    try:
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - a broken CUDA install must not stop a launch
        pass
    try:  # one id per boot: machines cloned from one image share a host name and a machine-id, not this
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = None
    return {"host": platform.node(), "boot_id": boot, "cpu": cpu, "cpus": os.cpu_count(), "gpu": gpu}


def code_version() -> dict:
    """Which code a launch ran: the package version and, where sweet runs from a git checkout (a worktree at a
    fixed commit, as the grids are launched), its commit and whether the package's sources differ from it
    ("dirty"). Outside a checkout (an installed wheel) commit and dirty are None."""
    from .. import __version__

    src = Path(__file__).resolve().parents[1]  # src/sweet
    record: dict = {"version": __version__, "commit": None, "dirty": None}
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        record["commit"] = git("rev-parse", "HEAD")
        record["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no", "--", str(src)))
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: version only
        pass
    return record


def machine_label(m: dict | None) -> str:
    """How the report tells machines apart: host name and boot id ("unrecorded" for launches made before
    launches recorded their machine)."""
    if not m:
        return "unrecorded"
    return m.get("host", "?") + (f" (boot {m['boot_id'][:8]})" if m.get("boot_id") else "")


def _try_flock(grid_dir: Path) -> int | None:
    """The descriptor of ``grid_dir`` holding its exclusive ``flock``, or None where another process holds it."""
    fd = os.open(grid_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def lock_grid(grid_dir: Path) -> int | None:
    """Take the launch lock of ``grid_dir``: an advisory ``flock`` on the directory itself, so no file is written,
    and the kernel releases it when the process ends, however it ends. Returns the descriptor to pass to
    :func:`unlock_grid` (None where the platform has no flock). A second launch on the same directory meanwhile
    fails here, instead of running the same runs twice."""
    if fcntl is None:
        return None
    fd = _try_flock(grid_dir)
    if fd is None:
        raise SweetError(f"another 'sweet grid' launch is running on {grid_dir} (the last record in its "
                         f"{LAUNCHES_FILE} says since when and with which command); wait for it to end or stop it "
                         "first")
    return fd


def unlock_grid(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the lock


def launch_running(grid_dir: Path) -> bool | None:
    """Whether a launch holds ``grid_dir``'s lock now (None where the platform has no flock)."""
    if fcntl is None:
        return None
    fd = _try_flock(grid_dir)
    unlock_grid(fd)
    return fd is None


STALE_NOTE = ("its process ended without closing this record (killed, or its machine stopped); closed by the next "
              "launch, with 'finished' its last update")


class Launch:
    """The launch record in launches.json, updated after every run (so a killed launch still has one).

    It holds the grid's launch lock (:func:`lock_grid`) from its creation to :meth:`end`. So an earlier record still
    marked "running" belongs to a launch whose process is gone: it is closed as "killed", its last update standing
    for its end."""

    def __init__(self, grid_dir: Path, record: dict):
        self.path = grid_dir / LAUNCHES_FILE
        self.lock = lock_grid(grid_dir)  # released by end(); a second launch on this grid fails meanwhile
        try:
            self.launches = read_json(self.path) if self.path.is_file() else []
            for old in self.launches:
                if old.get("status") == "running":
                    old.update(status="killed", finished=old.get("last_update"), note=STALE_NOTE)
            self.record = record
            self.launches.append(record)
            self.t0 = time.perf_counter()
            self.save()
        except BaseException:
            unlock_grid(self.lock)
            raise

    def save(self, **updates) -> None:
        self.record.update(updates)
        self.record["last_update"] = now()
        self.record["wall_seconds"] = round(time.perf_counter() - self.t0, 1)
        atomic_write_json(self.path, self.launches)

    def end(self, **updates) -> None:
        """The record's last save (status, end time), then the lock is released."""
        try:
            self.save(**updates)
        finally:
            unlock_grid(self.lock)


# ------------------------------------------------------------------------------------------ split digests


def splits_digest(train_ids, calibration_ids, data_sha256: dict) -> str:
    """SHA-256 over the training-sample ids, the calibration ids (in order) and the data files' SHA-256."""
    blob = json.dumps({"train_ids": [str(i) for i in train_ids], "calibration_ids": [str(i) for i in calibration_ids],
                       "data_sha256": dict(sorted(data_sha256.items()))}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_splits_digest(run_dir: Path) -> str | None:
    path = run_dir / SPLITS_DIGEST
    return read_json(path)["sha256"] if path.is_file() else None


def write_splits_digest(run_dir: Path, data_sha256: dict) -> str | None:
    """Store the digest of the run's splits.json (and of the data it was drawn from) in splits_digest.json.
    Returns it; None where the run has no splits.json (then nothing is written)."""
    splits = run_dir / SPLITS_FILE
    if not splits.is_file():
        return None
    s = read_json(splits)
    digest = splits_digest(s["train_ids"], s["calibration_ids"], data_sha256)
    atomic_write_json(run_dir / SPLITS_DIGEST, {
        "sha256": digest,
        "of": "the training-sample ids, the calibration ids (splits.json) and the data files' SHA-256",
        "n_train": len(s["train_ids"]),
        "n_calibration": len(s["calibration_ids"]),
        "data_sha256": data_sha256,
    })
    return digest

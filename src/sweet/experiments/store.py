"""The grid directory on disk: its files, the stored spec, and launch records.

::

    GRID_DIR/
      grid.json        the spec and the manifest of its runs (one entry per run: its directory and config)
      spec.toml        the same spec as TOML (copy it, edit it, pass it back with --spec)
      launches.json    one record per launch: command, back-end, start/end, runs executed/skipped/failed
      runs/TASK/METHOD/lrLR/seedSEED-KEY/   one run directory each (see :mod:`sweet.runs`)
      runs/TASK/METHOD/nN/lrLR/seedSEED-KEY/   the same in a training-set size sweep (``n_train`` a list)
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import SweetError
from ..io import atomic_write_json, read_json
from .spec import GridSpec, spec_from_dict

GRID_FILE = "grid.json"
SPEC_TOML = "spec.toml"
LAUNCHES_FILE = "launches.json"
RUNS_DIR = "runs"


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
    if grid_dir.is_dir() and any(grid_dir.iterdir()) and not (grid_dir / GRID_FILE).is_file():
        raise SweetError(f"{grid_dir} is not empty and is not a sweet grid directory; choose another --output")
    old = stored_spec(grid_dir)
    if old is None or update_spec:
        return
    a, b = old.result_fields(), spec.result_fields()
    diff = sorted(k for k in a if a[k] != b[k])
    if diff:
        raise SweetError(
            f"{grid_dir} was created with a different spec (field(s) {', '.join(diff)} differ); pass --update-spec "
            "to replace it (finished runs that are still part of the grid are reused) or choose another --output"
        )


def last_data_dir(grid_dir: Path) -> str | None:
    """The data directory of this grid's last launch: a re-launch needs no --data-dir."""
    path = grid_dir / LAUNCHES_FILE
    if not path.is_file():
        return None
    dirs = [x.get("data_dir") for x in read_json(path) if x.get("data_dir")]
    return dirs[-1] if dirs else None


class Launch:
    """The launch record in launches.json, updated after every run (so a killed launch still has one)."""

    def __init__(self, grid_dir: Path, record: dict):
        self.path = grid_dir / LAUNCHES_FILE
        self.launches = read_json(self.path) if self.path.is_file() else []
        self.record = record
        self.launches.append(record)
        self.t0 = time.perf_counter()
        self.save()

    def save(self, **updates) -> None:
        self.record.update(updates)
        self.record["last_update"] = now()
        self.record["wall_seconds"] = round(time.perf_counter() - self.t0, 1)
        atomic_write_json(self.path, self.launches)

"""A reference grid: another grid whose choices this grid takes (``learning_rates_from``).

A grid with ``learning_rates_from = "docs/results/paper/grid"`` runs each (task, method) at the learning rate the
reference grid chose for that task and method (``learning_rate_method = "same"``) or for the method named there
(e.g. ``"early_exit"``). The choice is the reference's own: its finished runs, judged by
:func:`~sweet.experiments.selection.select_learning_rates` under its own rule (the first seed alone where it has
``lr_selection = "first_seed"``, else the mean over its seeds) -- what its report shows. Until the runs that choice
needs have finished, this grid's runs of that (task, method) wait.

A relative path is read from the root of the git checkout that holds this grid's directory (the nearest folder
above it with a ``.git``), so a fresh clone, or a worktree elsewhere, finds the reference where it finds the grid;
outside any checkout, from the current directory.

A parameter chosen by worst deficit (``param_selection = "first_seed_worst_deficit"``) compares against the
reference's ``early_exit`` and ``sweet`` runs of the same seed at their chosen rates (:meth:`ReferenceGrid.chosen_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SweetError
from ..io import read_json
from ..rundir import METRICS_FILE
from .selection import select_learning_rates
from .spec import lr_selection_seed, task_entry_name
from .store import GRID_FILE


def checkout_root(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds a ``.git`` (a clone's folder or a worktree's file)."""
    for folder in [path, *path.parents]:
        if (folder / ".git").exists():
            return folder
    return None


def resolve_reference(reference: str, grid_dir: str | Path) -> Path:
    """The reference grid's directory: absolute as given, a relative path from the checkout root of ``grid_dir``
    (else from the current directory). Refuses a path without a grid, and the grid itself."""
    grid_dir = Path(grid_dir).resolve()
    path = Path(reference).expanduser()
    if not path.is_absolute():
        path = (checkout_root(grid_dir) or Path.cwd()) / path
    path = path.resolve()
    if path == grid_dir:
        raise SweetError(f"field 'learning_rates_from': {reference} is this grid itself; name another grid")
    if not (path / GRID_FILE).is_file():
        raise SweetError(f"field 'learning_rates_from': {path} is not a sweet grid directory ({GRID_FILE} is missing); "
                         "a relative path is read from the root of the checkout that holds the grid")
    return path


@dataclass
class ReferenceGrid:
    """A grid's stored spec and manifest, and the choices its finished runs make."""

    path: Path
    spec: dict  # its stored spec (grid.json)
    runs: list[dict]  # its manifest (grid.json 'runs': dir, task, method, seed, learning_rate, ...)

    @classmethod
    def open(cls, reference: str, grid_dir: str | Path) -> "ReferenceGrid":
        path = resolve_reference(reference, grid_dir)
        grid = read_json(path / GRID_FILE)
        if isinstance(grid["spec"].get("n_train"), list):
            raise SweetError(f"field 'learning_rates_from': {path} is a training-set size sweep (a rate per size); "
                             "name a grid with one training size")
        return cls(path, grid["spec"], grid["runs"])

    def _finished(self, entry: dict) -> dict | None:
        path = self.path / entry["dir"] / METRICS_FILE
        return read_json(path) if path.is_file() else None

    def _check_has(self, task: str, method: str) -> None:
        names = [task_entry_name(t) for t in self.spec["tasks"]]
        if task not in names or method not in self.spec["methods"]:
            raise SweetError(f"field 'learning_rates_from': {self.path} has no runs of {task}/{method} (tasks: "
                             f"{', '.join(names)}; methods: {', '.join(self.spec['methods'])}); set "
                             "learning_rate_method to a method it ran")

    def chosen_rate(self, task: str, method: str) -> float | None:
        """The learning rate the reference chose for (task, method), or None until the runs its choice needs (every
        rate on its first seed, or on every seed) have finished."""
        self._check_has(task, method)
        on_seed = lr_selection_seed(self.spec)
        seeds = [on_seed] if on_seed is not None else list(self.spec["seeds"])
        rates = [float(lr) for lr in self.spec["learning_rates"]]
        entries = {(float(e["learning_rate"]), int(e["seed"])): e for e in self.runs
                   if e["task"] == task and e["method"] == method and int(e["seed"]) in seeds}
        records = []
        for lr in rates:
            for seed in seeds:
                entry = entries.get((lr, seed))
                record = self._finished(entry) if entry is not None else None
                if record is None:
                    return None
                records.append(record)
        (choice,) = select_learning_rates(records, on_seed=on_seed).values()
        return float(choice["chosen"])

    def chosen_run(self, task: str, method: str, seed: int) -> dict | None:
        """The metrics of the reference's run of (task, method) on ``seed`` at its chosen rate, or None until the rate
        is chosen and that run has finished."""
        rate = self.chosen_rate(task, method)
        if rate is None:
            return None
        for e in self.runs:
            if (e["task"], e["method"], int(e["seed"]), float(e["learning_rate"])) == (task, method, seed, rate):
                return self._finished(e)
        if seed not in self.spec["seeds"]:
            raise SweetError(f"field 'learning_rates_from': {self.path} has no seed {seed} (seeds: "
                             f"{', '.join(map(str, self.spec['seeds']))})")
        return None

"""Made-up grid directories for the report's sections: a grid.json manifest and one metrics.json per finished run,
complete as ``sweet grid`` writes them (the evaluations from :func:`tests.fake_results.fake_evaluation`)."""

from __future__ import annotations

from pathlib import Path

from sweet.experiments import GRID_FILE, spec_from_dict
from sweet.io import atomic_write_json

from .fake_results import fake_evaluation

COSTS = (1 / 6, 0.25, 0.5, 0.75, 1.0)
LR = 1e-4


def run_metrics(task: str, method: str, seed: int, exits: list[float], exit_layers: list[int],
                costs: list[float] | None = None, calibration: list[float] | None = None, lr: float = LR) -> dict:
    """One run's metrics.json: ``exits`` the per-exit scores (their mean is the AUC), ``costs`` the scores at
    :data:`COSTS` (default: ``exits[0], exits[1], exits[2], exits[3], exits[3]``), ``calibration`` the same on the
    calibration split (default: ``costs``)."""
    costs = costs if costs is not None else [exits[0], exits[1], exits[2], exits[-1], exits[-1]]
    cal = calibration if calibration is not None else costs
    return {"task": task, "method": method, "backbone": "default", "learning_rate": lr, "seed": seed, "n_train": 100,
            "exit_layers": list(exit_layers),
            "evaluation": fake_evaluation(dict(zip(exit_layers, exits)), dict(zip(COSTS, costs))),
            "selection": fake_evaluation(dict(zip(exit_layers, exits)), dict(zip(COSTS, cal)), split="calibration",
                                         auc=sum(cal) / len(cal)),
            "timing": {"total_seconds": 10.0}}


def write_grid(grid_dir: Path, runs: dict[tuple[str, str, int], dict], *, name: str = "fake",
               exit_layers: tuple[int, ...] = (1, 2, 4, 6), seeds: tuple[int, ...] = (0, 1, 2),
               unfinished: tuple[tuple[str, str, int], ...] = (), backbone: str = "default",
               spec_extra: dict | None = None) -> Path:
    """A grid at ``grid_dir``: ``runs`` (task, method, seed) -> keyword arguments of :func:`run_metrics` (``exits``
    at least); ``unfinished``: runs in the manifest without metrics. Tasks and methods in order of appearance.
    ``spec_extra``: more spec fields (with ``learning_rates_from``, the spec has no ``learning_rates``)."""
    keys = list(runs) + list(unfinished)
    tasks = list(dict.fromkeys(k[0] for k in keys))
    methods = list(dict.fromkeys(k[1] for k in keys))
    raw = {"name": name, "tasks": tasks, "methods": methods, "seeds": list(seeds), "learning_rates": [LR],
           "n_train": 100, "exit_layers": list(exit_layers), "backbone": backbone, **(spec_extra or {})}
    if "learning_rates_from" in raw:
        raw.pop("learning_rates")
    spec = spec_from_dict(raw)
    entries = []
    for task, method, seed in keys:
        rel = f"runs/{task}/{method}/lr{LR:g}/seed{seed}-fake"
        if (task, method, seed) in runs:
            kw = dict(runs[(task, method, seed)])
            atomic_write_json(grid_dir / rel / "metrics.json",
                              run_metrics(task, method, seed, exit_layers=list(exit_layers), **kw))
        entries.append({"dir": rel, "key": "fake", "task": task, "method": method, "seed": seed, "learning_rate": LR,
                        "backbone": backbone, "n_train": 100})
    atomic_write_json(grid_dir / GRID_FILE, {"spec": spec.to_dict(), "data": {}, "runs": entries})
    return grid_dir

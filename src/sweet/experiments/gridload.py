"""A grid's finished runs, read from its directory and kept at their chosen learning rates: what the report
starts from, for its main grid and for the sibling grids its extra sections read.

The paper report (``sweet report docs/results/paper/grid``) has three sections fed by grids of their own, each in
a directory beside the main one (:data:`SIBLINGS`): the ladder ablation (``ablation``), the paper's depth
(``base``) and the methods beyond the paper (``beyond``). :func:`sibling_grid_dirs` says where each is read from
(``--ablation-grid`` etc., or for the paper grid the sibling directory of that name); :func:`load_sibling` reads
one, or says it has not run yet (no directory, no manifest, or no finished run). An unfinished sibling grid is
reported like the main grid: only with ``--partial``, and marked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SweetError
from ..evaluation import Evaluation
from ..io import read_json
from ..rundir import METRICS_FILE, RUN_CONFIG
from .aggregate import chosen_runs, is_size_sweep
from .plan import comparable_config
from .selection import select_learning_rates
from .spec import lr_selection_seed
from .store import GRID_FILE, LAUNCHES_FILE, RUNS_DIR, load_grid

#: report.json key -> the sibling directory's name, beside the main grid's (``docs/results/paper/ablation`` ...)
SIBLINGS = {"ablation": "ablation", "base_depth": "base", "beyond": "beyond"}
#: the grid whose report picks up its sibling grids by default (the spec's name)
PAPER_GRID_NAME = "paper"


def _read_run(grid_dir: Path, rel_dir: str, backbone: str, n_train: int | None) -> dict:
    """One finished run's metrics, with its directory, the manifest's backbone string, the requested training size
    (None: the size in its metrics) and the environment it ran in."""
    m = read_json(grid_dir / rel_dir / METRICS_FILE)
    m["_dir"] = rel_dir
    m["_backbone_spec"] = backbone
    m["_n_train"] = int(n_train if n_train is not None else m.get("n_train"))
    cfg_path = grid_dir / rel_dir / RUN_CONFIG
    m["_environment"] = read_json(cfg_path).get("environment", {}) if cfg_path.is_file() else {}
    return m


def gather(grid_dir: str | Path) -> tuple[dict, list[dict], list[str]]:
    """The grid manifest, the metrics of every finished run (with its directory), and the missing runs (waiting
    ones included), without judging whether that is enough to report."""
    grid_dir = Path(grid_dir)
    grid = load_grid(grid_dir)
    records, missing = [], []
    for entry in grid["runs"]:
        if not (grid_dir / entry["dir"] / METRICS_FILE).is_file():
            missing.append(entry["dir"])
            continue
        records.append(_read_run(grid_dir, entry["dir"], entry["backbone"], _entry_size(grid, entry)))
    missing += [f"runs/{w['task']}/{w['method']}/lr?/seed{w['seed']} (waits for {w['waits_for']})"
                for w in grid.get("waiting", [])]
    return grid, records, missing


def _entry_size(grid: dict, entry: dict) -> int | None:
    """A manifest entry's training size (older manifests lack it: then the spec's single size, or None)."""
    n = grid["spec"]["n_train"]
    return entry.get("n_train", n if isinstance(n, int) else None)


def unlisted_runs(grid_dir: str | Path, grid: dict, rates: list[float] | None = None) -> tuple[list[dict], list[str]]:
    """The finished runs in the grid's directory that its manifest no longer lists: with ``lr_selection =
    "first_seed"``, a later seed's run at a rate the first seed chose before the rates were extended stays on disk
    when the choice changes. Each is read like a listed run, and kept only where its config is the config of the
    listed run of the same task, method, learning rate and size on another seed, but for the seed (same data,
    options and code settings); ``rates``: only runs at these learning rates. Returns those runs and the directories
    left out, each with the reason."""
    grid_dir = Path(grid_dir)
    listed = {entry["dir"] for entry in grid["runs"]}
    siblings: dict[tuple, tuple[dict, dict]] = {}  # (task, method, rate, size) -> a listed run's entry and config
    for entry in grid["runs"]:
        if (grid_dir / entry["dir"] / RUN_CONFIG).is_file():
            cfg = read_json(grid_dir / entry["dir"] / RUN_CONFIG)
            siblings.setdefault((cfg["task"], cfg["method"], float(cfg["learning_rate"]), cfg["n_train"]), (entry, cfg))
    records, left_out = [], []
    for path in sorted((grid_dir / RUNS_DIR).rglob(METRICS_FILE)):
        rel = path.parent.relative_to(grid_dir).as_posix()
        if rel in listed:
            continue
        cfg_path = path.parent / RUN_CONFIG
        if not cfg_path.is_file():
            left_out.append(f"{rel} (no {RUN_CONFIG})")
            continue
        cfg = read_json(cfg_path)
        if rates is not None and float(cfg["learning_rate"]) not in {float(x) for x in rates}:
            continue
        key = (cfg["task"], cfg["method"], float(cfg["learning_rate"]), cfg["n_train"])
        if key not in siblings:
            left_out.append(f"{rel} (the manifest lists no run of that task, method, rate and size)")
            continue
        entry, listed_cfg = siblings[key]
        mine, theirs = ({k: v for k, v in comparable_config(c).items() if k != "seed"} for c in (cfg, listed_cfg))
        if mine != theirs:
            fields = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            left_out.append(f"{rel} (its config differs from {entry['dir']}'s in {', '.join(fields)})")
            continue
        records.append(_read_run(grid_dir, rel, entry["backbone"], cfg["n_train"]))
    return records, left_out


def _check_finished(grid_dir: str | Path, grid: dict, missing: list[str], partial: bool) -> None:
    n_runs = len(grid["runs"]) + len(grid.get("waiting", []))
    if missing and not partial:
        raise SweetError(f"{len(missing)} of {n_runs} runs in {grid_dir} are not finished (first: {missing[0]}); "
                         "finish the grid with 'sweet grid --output GRID_DIR' or pass --partial to report what is there")


def collect(grid_dir: str | Path, partial: bool = False) -> tuple[dict, list[dict], list[str]]:
    """The grid manifest, the metrics of every finished run (with its directory), and the missing runs; an error
    unless every run is finished (or ``partial``) and one at least is."""
    grid, records, missing = gather(grid_dir)
    _check_finished(grid_dir, grid, missing, partial)
    if not records:
        raise SweetError(f"no finished runs in {grid_dir}")
    return grid, records, missing


def choose_learning_rates(records: list[dict], spec: dict, only_rates: list[float] | None = None) -> dict[tuple, dict]:
    """The learning rate chosen per (task, method, backbone[, size]) on the calibration split
    (:func:`~sweet.experiments.selection.select_learning_rates`, by the grid's rule; ``only_rates``: from these
    rates alone), each flagged ``at_top`` where it is the top of the rates searched. Sets each record's grouping keys first: ``backbone`` the manifest's
    string (metrics hold the resolved path) and, in a size sweep, ``n_train`` the requested size (metrics hold the
    size drawn, kept as ``_n_train_drawn``)."""
    sized = is_size_sweep(spec)
    for m in records:
        m["backbone"] = m["_backbone_spec"]
        if sized:
            m["_n_train_drawn"] = m.get("n_train")
            m["n_train"] = m["_n_train"]
    on_seed = lr_selection_seed(spec) if spec.get("learning_rates") else None
    selection = select_learning_rates(records, by_size=sized, on_seed=on_seed, only_rates=only_rates)
    for sel in selection.values():  # a rate chosen at the top of those searched: a higher one might do better
        sel["searched"] = [c["learning_rate"] for c in sel["candidates"] if c["eligible"]]
        sel["at_top"] = sel["chosen"] == max(sel["searched"])
    return selection


@dataclass
class SiblingGrid:
    """A sibling grid's finished runs at their chosen learning rates (:func:`load_sibling`)."""

    grid_dir: Path
    spec: dict
    records: list[dict]
    missing: list[str]
    n_runs: int
    selection: dict[tuple, dict]
    chosen: dict[tuple[str, str], list[dict]]  # (task, method) -> runs at the chosen rate, by seed

    def status(self) -> dict:
        return {"n_runs": self.n_runs, "n_finished": len(self.records), "missing": self.missing,
                "partial": bool(self.missing)}

    def provenance(self) -> dict:
        """The launches, their wall time, and every finished run with its exit layers and learning rate."""
        path = self.grid_dir / LAUNCHES_FILE
        launches = read_json(path) if path.is_file() else []
        runs = sorted(({"dir": r["_dir"], "task": r["task"], "method": r["method"], "seed": int(r["seed"]),
                        "learning_rate": float(r["learning_rate"]),
                        "exit_layers": [p.exit_layer for p in Evaluation.of_run(r).per_exit]} for r in self.records),
                      key=lambda x: x["dir"])
        return {"launches": [{k: x.get(k) for k in ("command", "started", "finished", "status", "wall_seconds")}
                             for x in launches],
                "grid_wall_seconds": round(sum(float(x.get("wall_seconds") or 0) for x in launches), 1),
                "run_seconds_total": round(sum(r["timing"]["total_seconds"] for r in self.records), 1),
                "runs": runs}


def sibling_grid_dirs(grid_dir: str | Path, spec_name: str, given: dict[str, str | Path | None] | None = None
                      ) -> dict[str, Path]:
    """report.json key -> the grid directory its section reads: the one given (``given``, keyed like
    :data:`SIBLINGS`), else for the paper grid (spec name ``paper``) the sibling directory of that name, whether it
    exists or not (a missing one is reported as not run yet). Other grids get only the sections given."""
    given = given or {}
    out = {}
    for key, name in SIBLINGS.items():
        if given.get(key) is not None:
            out[key] = Path(given[key])
        elif spec_name == PAPER_GRID_NAME:
            out[key] = Path(grid_dir).parent / name
    return out


def load_sibling(grid_dir: str | Path, partial: bool) -> SiblingGrid | None:
    """A sibling grid's finished runs at their chosen learning rates; None where it has not run yet (no directory,
    no manifest, or no finished run). An unfinished grid is an error unless ``partial`` (as for the main grid)."""
    grid_dir = Path(grid_dir)
    if not (grid_dir / GRID_FILE).is_file():
        return None
    grid, records, missing = gather(grid_dir)
    if not records:
        return None
    _check_finished(grid_dir, grid, missing, partial)
    spec = grid["spec"]
    selection = choose_learning_rates(records, spec)
    sizes = sorted({r["n_train"] for r in records}) if is_size_sweep(spec) else [None]
    return SiblingGrid(grid_dir, spec, records, missing, len(grid["runs"]) + len(grid.get("waiting", [])), selection,
                       chosen_runs(records, selection, sizes[-1]))


def not_run_yet(grid_dir: str | Path, fills: str) -> dict:
    """A section whose grid has no finished run: where it will be read from and what will fill it."""
    return {"state": "not run yet", "grid_dir": str(grid_dir), "fills": fills}


def sibling_header(sibling: SiblingGrid) -> dict:
    """The keys every section with finished runs starts with."""
    status = sibling.status()
    return {"state": "partial" if status["partial"] else "finished", "grid_dir": str(sibling.grid_dir),
            "spec": sibling.spec, "status": status}


def not_run_yet_line(section: dict) -> str:
    """The Markdown line of a section whose grid has no finished run (:func:`not_run_yet`)."""
    return f"Not run yet: `{section['grid_dir']}` has no finished run. It will hold {section['fills']}."


def grid_status_text(section: dict) -> str:
    """The Markdown opening of a section with finished runs (:func:`sibling_header`): how many of its grid's runs
    have finished, and that every number is provisional while some are missing."""
    st = section["status"]
    return (f"Grid `{section['grid_dir']}`: {st['n_finished']} of {st['n_runs']} runs finished"
            + (f" (**incomplete**: {len(st['missing'])} missing; every number below is provisional)"
               if st["partial"] else ""))


def runs_link(section: dict, output: str | Path) -> None:
    """Add the path from the report directory to the section's runs (a clone elsewhere can follow it)."""
    if section.get("state") != "not run yet":
        section["runs_from_report"] = os.path.relpath(Path(section["grid_dir"]).resolve() / "runs",
                                                      Path(output).resolve())

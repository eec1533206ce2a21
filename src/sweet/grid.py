"""Experiment grids: the paper's protocol (tasks x methods x seeds x learning rates) as one resumable command.

A grid is described by a :class:`GridSpec` (a TOML/YAML/JSON file, a preset, or command-line flags) and
lives in one directory::

    GRID_DIR/
      grid.json        the spec and the manifest of its runs (one entry per run: its directory and config)
      spec.toml        the same spec as TOML (copy it, edit it, pass it back with --spec)
      launches.json    one record per launch: command, back-end, start/end, runs executed/skipped/failed
      runs/TASK/METHOD/lrLR/seedSEED-KEY/   one run directory each (see :mod:`sweet.runs`)
      runs/TASK/METHOD/nN/lrLR/seedSEED-KEY/   the same in a training-set size sweep (``n_train`` a list)

``KEY`` is a short hash of the run's full :class:`~sweet.runs.RunConfig` (everything that affects its
result) with the data *location* replaced by a SHA-256 of the task's data files: moving the data does
not re-run anything, changing it does. A run is finished iff its ``metrics.json`` exists (runs.py
writes it last, atomically), so a killed grid continues where it stopped and finished runs are
never re-run.

Runs at different learning rates for the same (task, method, seed) share the training sample: the
sample depends only on the seed, by design (the paper's protocol).

``n_train`` is one size or a list of sizes (a training-set size sweep, the paper's Appendix): the grid is
then also expanded over the sizes, and every size must fit in the task's pool after the fixed
calibration/evaluation hold-outs (no silent clamping, which would run one size twice).

The learning rate is chosen per (task, method, backbone) -- and per training size in a sweep -- by the area
under the speed-accuracy curve measured on the held-out *calibration* split (``metrics.json`` ->
``selection``), averaged over seeds; never on the split the scores are reported on
(:func:`select_learning_rates`). The gradient scale alpha is chosen per task the same way, among the
methods on the gradient-scaling line that the grid ran (:func:`select_alpha`; the report's
``grad_scale@selected``).

Back-ends: ``local`` runs one run after another in this process; ``ray`` submits each run as a Ray task
with its own CPU/GPU request (``ray.init(address=...)``: a local instance by default, or a cluster).
Both call :func:`execute_run`, which calls :func:`sweet.runs.run`, so the files are the same. On a
cluster, the grid directory, the data directory and the backbone must be at the same paths on every
node (a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import SweetError
from .io import atomic_write_json, atomic_write_text, read_json
from .methods import SELECTED_ALPHA, parse_method
from . import runs as _runs
from .runs import METRICS, RUN_CONFIG, RunConfig

GRID_FILE = "grid.json"
SPEC_TOML = "spec.toml"
LAUNCHES_FILE = "launches.json"
RUNS_DIR = "runs"
BACKENDS = ("local", "ray")
POOLINGS = ("auto", "cls", "mean")
DATA_SOURCES = ("local", "hub")
#: RunConfig fields that say where things are or how often to checkpoint, not what is computed: left out of
#: the run key (the same fields that runs.py lets differ when a run is resumed).
_LOCATION_FIELDS = tuple(sorted({"data_dir", *getattr(_runs, "RESUME_MAY_CHANGE", ())}))
#: spec fields that do not change any result (where the data is, how much hardware a run gets).
_NON_RESULT_SPEC_FIELDS = ("data_dir", "cpus_per_run", "gpus_per_run")

# ------------------------------------------------------------------------------------------------ spec


@dataclass
class GridSpec:
    """What to run: every combination of tasks x methods x seeds x learning rates, with shared settings."""

    tasks: list[str]
    methods: list[str]
    seeds: list[int]
    learning_rates: list[float]
    name: str = "custom"
    backbone: str = "default"
    exit_layers: list[int] | None = None  # None: the backbone's default (paper-shaped) ladder
    n_train: int | list[int] = 6000  # a list of 2+ sizes: a training-set size sweep
    epochs: int = 2
    batch_size: int = 16
    max_length: int = 256
    pooling: str = "auto"
    calibration_size: int = 1000
    heldout_eval_size: int = 2000
    data_source: str = "local"
    data_dir: str | None = None  # default: --data-dir, else $SWEET_GLUE_DIR
    cpus_per_run: float = 1.0  # Ray back-end: CPUs requested per run (also its torch thread count)
    gpus_per_run: float = 0.0  # Ray back-end: GPUs requested per run

    def to_dict(self) -> dict:
        return asdict(self)

    def result_fields(self) -> dict:
        """The fields that decide the results (what a re-launch must agree on)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NON_RESULT_SPEC_FIELDS}

    @property
    def train_sizes(self) -> list[int]:
        """The training-set sizes: one, or several in a size sweep."""
        return list(self.n_train) if isinstance(self.n_train, (list, tuple)) else [self.n_train]

    @property
    def is_size_sweep(self) -> bool:
        return len(self.train_sizes) > 1

    @property
    def n_runs(self) -> int:
        return (len(self.tasks) * len(self.methods) * len(self.seeds) * len(self.learning_rates)
                * len(self.train_sizes))


_REQUIRED = ("tasks", "methods", "seeds", "learning_rates")
SPEC_FIELDS = tuple(f.name for f in fields(GridSpec))

PRESETS: dict[str, dict] = {
    # The paper's protocol (Section 3): 7 tasks x 3 methods x 3 seeds x {1..5}e-5, 6K examples, 2 epochs.
    "paper": {
        "name": "paper",
        "tasks": ["sst2", "mrpc", "cola", "mnli", "qnli", "qqp", "rte"],
        "methods": ["early_exit", "sweet", "multi_model"],
        "seeds": [0, 1, 2],
        "learning_rates": [1e-5, 2e-5, 3e-5, 4e-5, 5e-5],
        "n_train": 6000,
        "epochs": 2,
    },
    # A reduced grid for 2 shared CPU cores, measured (docs/results/quick/): a single-sentence and a pair task,
    # all three methods, 3 seeds, 2 learning rates, 1,000 training examples, 1 epoch. Pair tasks cost ~3-4x
    # more per example than SST-2; with ~60 steps per run the paper's 1e-5..5e-5 barely moves MiniLM, hence
    # the higher rates.
    "quick": {
        "name": "quick",
        "tasks": ["sst2", "qqp"],
        "methods": ["early_exit", "sweet", "multi_model"],
        "seeds": [0, 1, 2],
        "learning_rates": [5e-5, 1e-4],
        "n_train": 1000,
        "epochs": 1,
    },
    # The paper's training-set size sweep (Appendix): EE / SWEET / MM on MNLI at 1K, 3K and 6K examples, 3 seeds,
    # the paper's 2 epochs; the learning rate is chosen per size. MNLI's local pool has 9,999 rows; the fixed
    # hold-outs (calibration: at most a tenth of the pool, 999 rows; evaluation: at most a fifth, 1,999) leave
    # 7,001 for training, so 6K is the largest round size. Learning rates: the paper's range (2e-5, 5e-5) and
    # 1e-4, which won every task of the 'quick' grid at 1K examples (few steps need a higher rate).
    # 3 sizes x 3 methods x 3 seeds x 3 rates = 81 runs, ~8.5 h on 2 idle cores (the --dry-run estimate).
    "sizes": {
        "name": "sizes",
        "tasks": ["mnli"],
        "methods": ["early_exit", "sweet", "multi_model"],
        "seeds": [0, 1, 2],
        "learning_rates": [2e-5, 5e-5, 1e-4],
        "n_train": [1000, 3000, 6000],
        "epochs": 2,
    },
}


def _err(source: str, name: str, message: str) -> SweetError:
    return SweetError(f"{source}: field '{name}': {message}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _list(source: str, name: str, value: Any) -> list:
    if not isinstance(value, (list, tuple)):
        raise _err(source, name, f"must be a list, got {type(value).__name__} {value!r}")
    if not value:
        raise _err(source, name, "must not be empty")
    if len(set(map(repr, value))) != len(value):
        raise _err(source, name, f"has duplicates: {list(value)!r}")
    return list(value)


def _positive_int(source: str, name: str, value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise _err(source, name, f"must be a positive integer, got {value!r}")
    return int(value)


def check_field(name: str, value: Any, source: str = "spec") -> Any:
    """Validate and normalise one spec field; raises SweetError naming the field."""
    from .data import get_task
    from .methods import PAPER_METHODS

    if name == "tasks":
        out = []
        for t in _list(source, name, value):
            if not isinstance(t, str):
                raise _err(source, name, f"task names must be strings, got {t!r}")
            try:
                out.append(get_task(t).name)
            except SweetError as exc:
                raise _err(source, name, str(exc)) from None
        if len(set(out)) != len(out):
            raise _err(source, name, f"names the same task twice: {value!r}")
        return out
    if name == "methods":
        items = _list(source, name, value)
        if items == ["all"]:
            return list(PAPER_METHODS)
        out = []
        for m in items:
            try:
                out.append(parse_method(m).canonical)
            except SweetError as exc:
                raise _err(source, name, f"{exc} (or 'all' for the paper's three)") from None
        if len(set(out)) != len(out):
            raise _err(source, name, f"names the same method twice: {list(value)!r}")
        return out
    if name == "seeds":
        items = _list(source, name, value)
        for s in items:
            if not _is_int(s) or s < 0:
                raise _err(source, name, f"seeds must be non-negative integers, got {s!r}")
        return items
    if name == "learning_rates":
        items = _list(source, name, value)
        for lr in items:
            if not _is_number(lr) or lr <= 0:
                raise _err(source, name, f"learning rates must be positive numbers, got {lr!r}")
        return [float(x) for x in items]
    if name == "exit_layers":
        if value is None or (isinstance(value, str) and value.strip().lower() == "default"):
            return None
        items = _list(source, name, value)
        if not all(_is_int(x) and x > 0 for x in items) or items != sorted(items):
            raise _err(source, name, f"must be strictly increasing positive integers such as [1, 2, 4, 6], got {value!r}")
        return items
    if name == "n_train" and isinstance(value, (list, tuple)):
        # a training-set size sweep; one size in a list is the same grid as that size alone
        items = _list(source, name, value)
        for n in items:
            if not _is_int(n) or n <= 0:
                raise _err(source, name, f"training sizes must be positive integers, got {n!r}")
        return int(items[0]) if len(items) == 1 else [int(n) for n in items]
    if name in ("n_train", "epochs", "batch_size", "max_length", "calibration_size", "heldout_eval_size"):
        return _positive_int(source, name, value)
    if name in ("name", "backbone"):
        if not isinstance(value, str) or not value.strip():
            raise _err(source, name, f"must be a non-empty string, got {value!r}")
        return value.strip()
    if name == "pooling":
        if value not in POOLINGS:
            raise _err(source, name, f"must be one of {', '.join(POOLINGS)}, got {value!r}")
        return value
    if name == "data_source":
        if value not in DATA_SOURCES:
            raise _err(source, name, f"must be one of {', '.join(DATA_SOURCES)}, got {value!r}")
        return value
    if name == "data_dir":
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _err(source, name, f"must be a path (string), got {value!r}")
        return value
    if name == "cpus_per_run":
        if not _is_number(value) or value <= 0:
            raise _err(source, name, f"must be a positive number, got {value!r}")
        return float(value)
    if name == "gpus_per_run":
        if not _is_number(value) or value < 0:
            raise _err(source, name, f"must be a non-negative number, got {value!r}")
        return float(value)
    raise SweetError(f"{source}: unknown field '{name}'; known fields: {', '.join(SPEC_FIELDS)} (and 'preset')")


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise SweetError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return json.loads(json.dumps(PRESETS[name]))


def spec_from_dict(raw: dict, source: str = "spec", base: dict | None = None) -> GridSpec:
    """Build a spec from a mapping (a parsed file, or flags). ``preset = NAME`` starts from a preset;
    ``base`` (a spec dict) is overridden by ``raw``. Unknown, missing or malformed fields raise a
    SweetError that names the field."""
    if not isinstance(raw, dict):
        raise SweetError(f"{source}: the spec must be a table/mapping of fields, got {type(raw).__name__}")
    raw = dict(raw)
    merged = dict(base or {})
    if "preset" in raw:
        p = raw.pop("preset")
        if not isinstance(p, str):
            raise _err(source, "preset", f"must be a preset name, got {p!r}")
        try:
            merged.update(preset(p))
        except SweetError as exc:
            raise _err(source, "preset", str(exc)) from None
    for name in raw:
        if name not in SPEC_FIELDS:
            raise SweetError(f"{source}: unknown field '{name}'; known fields: {', '.join(SPEC_FIELDS)} (and 'preset')")
    merged.update(raw)
    missing = [k for k in _REQUIRED if k not in merged]
    if missing:
        raise SweetError(f"{source}: missing required field(s): {', '.join(missing)} (or start from a preset: "
                         f"{', '.join(PRESETS)})")
    return GridSpec(**{k: check_field(k, v, source) for k, v in merged.items()})


def load_spec_file(path: str | Path) -> GridSpec:
    """Read a spec from TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    path = Path(path)
    if not path.is_file():
        raise SweetError(f"spec file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:  # pragma: no cover - PyYAML comes with transformers
                raise SweetError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or use TOML") from None
            raw = yaml.safe_load(text)
        elif suffix == ".json":
            raw = json.loads(text)
        else:
            raise SweetError(f"{path}: unknown spec format '{suffix}'; use .toml, .yaml/.yml or .json")
    except SweetError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError
        raise SweetError(f"{path}: cannot parse the spec: {exc}") from None
    return spec_from_dict(raw if raw is not None else {}, source=str(path))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def spec_to_toml(spec: GridSpec) -> str:
    lines = ["# sweet grid spec (sweet grid --spec THIS_FILE)"]
    for k, v in spec.to_dict().items():
        if v is None:
            lines.append(f"# {k}: not set (default)")
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class GridRun:
    config: RunConfig
    key: str
    rel_dir: str  # relative to GRID_DIR
    estimate_seconds: float  # prior estimate of its wall time (for the ETA before any run has finished)
    sized: bool = False  # part of a training-set size sweep (the size is in its directory and label)

    @property
    def label(self) -> str:
        c = self.config
        size = f"/n={c.n_train}" if self.sized else ""
        return f"{c.task}/{c.method}{size}/lr={c.learning_rate:g}/seed={c.seed}"


def run_key(config: RunConfig) -> str:
    """Short hash of everything in the config that decides the result (not where the data lies)."""
    d = {k: v for k, v in config.to_dict().items() if k not in _LOCATION_FIELDS}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:10]


def run_rel_dir(config: RunConfig, key: str, sized: bool = False) -> str:
    """``runs/TASK/METHOD/lrLR/seedS-KEY``; in a training-set size sweep ``runs/TASK/METHOD/nN/lrLR/seedS-KEY``."""
    size = f"/n{config.n_train}" if sized else ""
    return f"{RUNS_DIR}/{config.task}/{config.method}{size}/lr{config.learning_rate:g}/seed{config.seed}-{key}"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TaskInfo:
    """What the grid needs to know about a task's data before running it."""

    data: dict  # {"source": ..., "files": {role: path}, "sha256": {role: hex}}
    n_train_available: int | None = None  # pool rows left for training after the calibration/evaluation hold-outs
    n_eval_examples: int | None = None  # calibration + evaluation rows (both are scored in every run)
    mean_chars: float | None = None


#: prior cost model for the ETA before any run of this launch has finished (default backbone, 2 idle cores,
#: measured): a training example costs (characters + 20) / 5200 s (SST-2 ~71 examples/s, MRPC ~21), an
#: evaluated one a fifth of that, multi_model ~2.2x both, plus ~4 s per run (loading, saving).
_PRIOR_CHARS = 60.0
_MM_FACTOR = 2.2
#: packaged backbones slower than the default (MPNet, 12 x 768: SST-2 at 9.6 vs ~38 training examples/s, one thread)
_BACKBONE_FACTOR = {"mpnet": 4.0}
_PCGRAD_FACTOR = 2.8  # one backward pass per exit + the projection (SST-2, 320 examples: 20.9 s vs 7.4 s)


def _estimate_seconds(info: TaskInfo, spec: GridSpec, method: str, n_train: int) -> float:
    from .backbones import canonical_alias

    if info.n_train_available is not None:
        n_train = min(n_train, info.n_train_available)
    n_eval = info.n_eval_examples if info.n_eval_examples is not None else 2 * spec.calibration_size
    per_example = ((info.mean_chars or _PRIOR_CHARS) + 20.0) / 5200.0
    factor = {"multi_model": _MM_FACTOR, "pcgrad": _PCGRAD_FACTOR}.get(method, 1.0)
    factor *= _BACKBONE_FACTOR.get(canonical_alias(spec.backbone) or "", 1.0)
    return 4.0 + factor * per_example * (n_train * spec.epochs + n_eval / 5.0)


def inspect_tasks(spec: GridSpec, data_dir: str | None) -> dict[str, TaskInfo]:
    """Load each task once: checks that its files exist, fingerprints them, and sizes the runs. In a
    training-set size sweep every size must fit in what the pool leaves for training (a larger one would be
    clamped to the same sample as its neighbour): refused, naming the task, the size and the maximum."""
    from .data import fixed_holdout_sizes, load_task

    out: dict[str, TaskInfo] = {}
    for task in spec.tasks:
        if spec.data_source != "local":
            out[task] = TaskInfo(data={"source": spec.data_source})
            continue
        data = load_task(task, data_dir, source="local")
        n_cal, n_held = fixed_holdout_sizes(len(data.pool), data.dev is not None, spec.calibration_size,
                                            spec.heldout_eval_size)
        n_eval = len(data.dev) if data.dev is not None else n_held
        available = len(data.pool) - n_cal - n_held
        too_big = [n for n in spec.train_sizes if n > available]
        if spec.is_size_sweep and too_big:
            held = f"{n_cal} for calibration" + (f" and {n_held} for the held-out evaluation" if n_held else "")
            raise SweetError(
                f"field 'n_train': task '{task}' has at most {available} training examples (its pool of "
                f"{len(data.pool)} rows less {held}); training size{'s' if len(too_big) > 1 else ''} "
                f"{', '.join(map(str, too_big))} {'are' if len(too_big) > 1 else 'is'} larger. Use "
                f"sizes up to {available}: in a size sweep sizes are not clamped (two sizes would become the same)")
        texts = data.pool.texts[:2000]
        out[task] = TaskInfo(
            data={"source": "local", "files": dict(data.files),
                  "sha256": {role: sha256_file(p) for role, p in sorted(data.files.items())}},
            n_train_available=available,
            n_eval_examples=n_cal + n_eval,
            mean_chars=sum(sum(len(t) for t in ex) for ex in texts) / max(1, len(texts)),
        )
    return out


def resolve_grid_data_dir(spec: GridSpec, data_dir: str | None) -> str | None:
    """The data directory for this launch, as an absolute path (Ray workers do not share our cwd)."""
    if spec.data_source != "local":
        return None
    from .data import resolve_data_dir

    return str(resolve_data_dir(data_dir or spec.data_dir).resolve())


def _resolve_backbone_path(backbone: str) -> str:
    """A local backbone directory given relatively becomes absolute (workers run elsewhere)."""
    from .backbones import canonical_alias

    if canonical_alias(backbone) is None and Path(backbone).expanduser().is_dir():
        return str(Path(backbone).expanduser().resolve())
    return backbone


def expand(spec: GridSpec, data_dir: str | None, tasks: dict[str, TaskInfo]) -> list[GridRun]:
    """Every run of the grid, in execution order: seed, then task, training size, learning rate, method (so a
    grid that stops early has complete seeds)."""
    backbone = _resolve_backbone_path(spec.backbone)
    sized = spec.is_size_sweep
    runs = []
    for seed in spec.seeds:
        for task in spec.tasks:
            info = tasks[task]
            for n_train in spec.train_sizes:
                for lr in spec.learning_rates:
                    for method in spec.methods:
                        cfg = RunConfig(
                            task=task, method=method, backbone=backbone, exit_layers=spec.exit_layers,
                            n_train=n_train, seed=seed, learning_rate=lr, epochs=spec.epochs,
                            batch_size=spec.batch_size, max_length=spec.max_length, pooling=spec.pooling,
                            calibration_size=spec.calibration_size, heldout_eval_size=spec.heldout_eval_size,
                            data_dir=data_dir, data_source=spec.data_source,
                            extra={"data_sha256": info.data.get("sha256", {})},
                        )
                        key = run_key(cfg)
                        runs.append(GridRun(cfg, key, run_rel_dir(cfg, key, sized),
                                            _estimate_seconds(info, spec, method, n_train), sized))
    return runs


def _comparable(d: dict) -> dict:
    d = {k: v for k, v in d.items() if k not in (*_LOCATION_FIELDS, "environment")}
    return json.loads(json.dumps(d))


def run_state(grid_dir: Path, r: GridRun) -> str:
    """'finished' (metrics.json present), 'partial' (started, not finished) or 'pending'."""
    d = grid_dir / r.rel_dir
    if (d / METRICS).is_file():
        cfg_path = d / RUN_CONFIG
        if cfg_path.is_file():
            stored = _comparable(read_json(cfg_path))
            expected = _comparable(r.config.to_dict())
            diff = sorted(k for k in expected if stored.get(k) != expected[k])
            if diff:
                raise SweetError(f"{d} holds a run with a different config (fields: {', '.join(diff)}); "
                                 "remove that directory and launch again")
        return "finished"
    return "partial" if d.exists() else "pending"


def execute_run(config: dict, out_dir: str, progress: bool = False, num_threads: int | None = None) -> dict:
    """One grid run: the same :func:`sweet.runs.run` for every back-end. Returns a short summary.

    A run that was started before (a killed launch) continues from its training checkpoint when runs.py
    supports that; if it cannot be resumed, it starts over."""
    import inspect

    from .runs import run

    if num_threads:
        import torch

        torch.set_num_threads(max(1, int(num_threads)))
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    cfg = RunConfig.from_dict(config)
    out = Path(out_dir)
    started = (out / RUN_CONFIG).is_file() and not (out / METRICS).is_file()
    metrics = None
    if started and "resume" in inspect.signature(run).parameters:
        try:
            metrics = run(cfg, out, progress=progress, resume=True)
        except SweetError as exc:
            print(f"cannot resume {out} ({exc}); starting it over", file=sys.stderr)
    if metrics is None:
        metrics = run(cfg, out, progress=progress, overwrite=True)
    return {
        "dir": out_dir,
        "seconds": metrics["timing"]["total_seconds"],
        "auc": metrics["evaluation"]["auc"],
        "selection_auc": metrics["selection"]["auc"],
    }


# ------------------------------------------------------------------------------------------ bookkeeping


def _now() -> str:
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


def _check_grid_dir(grid_dir: Path, spec: GridSpec, update_spec: bool) -> None:
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


@dataclass
class GridResult:
    grid_dir: Path
    n_runs: int
    skipped: int  # finished before this launch
    executed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    wall_seconds: float = 0.0


class _Launch:
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
        self.record["last_update"] = _now()
        self.record["wall_seconds"] = round(time.perf_counter() - self.t0, 1)
        atomic_write_json(self.path, self.launches)


class _Progress:
    """One bar for the grid (runs done / total, ETA from the runs of this launch); the current run's own
    bars (training steps, calibration, evaluation) appear below it in the local back-end."""

    def __init__(self, total: int, done: int, pending: Sequence[GridRun], enabled: bool):
        from tqdm.auto import tqdm

        self.prior_left = sum(r.estimate_seconds for r in pending)
        self.prior_done = 0.0
        self.t0 = time.perf_counter()
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=done, desc="grid", unit="run", position=0, leave=True,
                        disable=not enabled, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs [{elapsed}{postfix}]")
        self._refresh("")

    def eta_seconds(self) -> float:
        if self.prior_done <= 0:
            return self.prior_left
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
        self.prior_left -= r.estimate_seconds
        self.prior_done += r.estimate_seconds
        self.bar.update(1)
        self._refresh("")
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


def _last_data_dir(grid_dir: Path) -> str | None:
    """The data directory of this grid's last launch: a re-launch needs no --data-dir."""
    path = grid_dir / LAUNCHES_FILE
    if not path.is_file():
        return None
    dirs = [x.get("data_dir") for x in read_json(path) if x.get("data_dir")]
    return dirs[-1] if dirs else None


def plan(spec: GridSpec, grid_dir: str | Path, data_dir: str | None = None) -> tuple[list[GridRun], dict[str, TaskInfo], str | None]:
    """Every run of the grid. The data directory: ``data_dir``, else the spec's, else the one the grid's last
    launch used (so a re-launch continues on the same data whatever the shell's environment), else
    $SWEET_GLUE_DIR."""
    if not (data_dir or spec.data_dir):
        data_dir = _last_data_dir(Path(grid_dir))
    ddir = resolve_grid_data_dir(spec, data_dir)
    tasks = inspect_tasks(spec, ddir)
    return expand(spec, ddir, tasks), tasks, ddir


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
    _check_grid_dir(grid_dir, spec, update_spec)
    runs, tasks, ddir = plan(spec, grid_dir, data_dir)
    states = {r.rel_dir: run_state(grid_dir, r) for r in runs}
    pending = [r for r in runs if states[r.rel_dir] != "finished"]
    grid_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(grid_dir / GRID_FILE, {
        "spec": spec.to_dict(),
        "updated": _now(),
        "data": {t: info.data for t, info in tasks.items()},
        "runs": [{"dir": r.rel_dir, "key": r.key, "task": r.config.task, "method": r.config.method,
                  "seed": r.config.seed, "learning_rate": r.config.learning_rate, "backbone": r.config.backbone,
                  "n_train": r.config.n_train}
                 for r in runs],
    })
    atomic_write_text(grid_dir / SPEC_TOML, spec_to_toml(spec))
    result = GridResult(grid_dir, len(runs), len(runs) - len(pending))
    launch = _Launch(grid_dir, {
        "started": _now(), "command": command, "backend": backend, "ray_address": ray_address, "threads": threads,
        "data_dir": ddir, "n_runs": len(runs), "skipped": result.skipped, "to_run": len(pending),
        "executed": 0, "failed": [], "status": "running",
    })
    bar = _Progress(len(runs), result.skipped, pending, progress)
    status = "interrupted"

    def on_done(r: GridRun, summary: dict | None, error: str | None) -> None:
        if error is None:
            result.executed.append(r.rel_dir)
            fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
            msg = (f"done {r.label} in {summary['seconds']:.0f}s: AUC {fmt(summary['auc'])} "
                   f"(calibration split: {fmt(summary['selection_auc'])})")
        else:
            result.failed.append((r.rel_dir, error))
            msg = f"FAILED {r.label}: {error}"
        bar.done(r, msg)
        launch.save(executed=len(result.executed), failed=[{"dir": d, "error": e} for d, e in result.failed])

    try:
        if pending and backend == "local":
            _run_local(pending, grid_dir, executor or execute_run, bar, on_done, progress, threads)
        elif pending:
            _run_ray(pending, grid_dir, spec, ray_address, on_done)
        status = "failed" if result.failed else "completed"
    finally:
        bar.close()
        result.wall_seconds = round(time.perf_counter() - launch.t0, 1)
        launch.save(status=status, finished=_now())
    if result.failed:
        first_dir, first_err = result.failed[0]
        raise SweetError(f"{len(result.failed)} of {len(pending)} run(s) failed (first: {first_dir}: {first_err}); "
                         f"the others are done. Fix the cause and launch again: finished runs are skipped")
    return result


def _run_local(pending, grid_dir: Path, executor, bar: _Progress, on_done, progress: bool, threads: int | None) -> None:
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        for r in pending:
            bar.start(r.label)
            try:
                summary = executor(r.config.to_dict(), str(grid_dir / r.rel_dir), progress=progress)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # one broken run must not stop the others; reported at the end
                on_done(r, None, f"{type(exc).__name__}: {exc}")
                continue
            on_done(r, summary, None)
    finally:
        torch.set_num_threads(before)


def _ray_execute_run(config: dict, out_dir: str, num_threads: int) -> dict:
    """The Ray task: the same function as the local back-end, no progress bars."""
    return execute_run(config, out_dir, progress=False, num_threads=num_threads)


def _run_ray(pending, grid_dir: Path, spec: GridSpec, address: str | None, on_done) -> None:
    try:
        import ray
    except ImportError:
        raise SweetError("the Ray back-end needs the 'ray' package: pip install 'sweet[ray]' (or pip install ray)") from None

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
        refs = {task.remote(r.config.to_dict(), str(grid_dir / r.rel_dir), threads): r for r in pending}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    r = refs.pop(ref)
                    try:
                        summary = ray.get(ref)
                    except Exception as exc:  # RayTaskError wraps the worker's exception
                        cause = getattr(exc, "cause", None) or exc
                        lines = str(cause).strip().splitlines()
                        on_done(r, None, f"{type(cause).__name__}: {lines[-1] if lines else ''}")
                        continue
                    on_done(r, summary, None)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started_here:
            ray.shutdown()


def grid_status(spec: GridSpec, grid_dir: str | Path, data_dir: str | None = None) -> dict:
    """How many runs are finished / started / pending, and the prior time estimate of what is left."""
    grid_dir = Path(grid_dir).resolve()
    runs, _, _ = plan(spec, grid_dir, data_dir)
    states = [run_state(grid_dir, r) for r in runs]
    left = [r for r, s in zip(runs, states) if s != "finished"]
    return {
        "n_runs": len(runs),
        "finished": states.count("finished"),
        "partial": states.count("partial"),
        "pending": states.count("pending"),
        "estimate_seconds_left": round(sum(r.estimate_seconds for r in left)),
        "runs": [{"dir": r.rel_dir, "state": s, "estimate_seconds": round(r.estimate_seconds)} for r, s in zip(runs, states)],
    }


# -------------------------------------------------------------------------------------- LR selection


SELECTION_CRITERION = "mean over seeds of the area under the speed-accuracy curve on the calibration split"


def _selection_candidate(aucs: dict[int, float | None], all_seeds: set[int]) -> dict:
    """One candidate of a selection on the calibration split: its seeds' selection AUCs and their mean. It is
    eligible only with an AUC for every seed that any candidate has (a half-finished one cannot win on fewer)."""
    values = [aucs[s] for s in sorted(aucs) if aucs[s] is not None]
    return {
        "seeds": sorted(aucs),
        "selection_aucs": [aucs[s] for s in sorted(aucs)],
        "mean_selection_auc": sum(values) / len(values) if values else None,
        "eligible": set(aucs) == all_seeds and len(values) == len(all_seeds),
    }


def select_learning_rates(records: Sequence[dict], by_size: bool = False) -> dict[tuple, dict]:
    """Choose the learning rate per (task, method, backbone) by the area under the speed-accuracy curve on
    the held-out calibration split (``metrics['selection']['auc']``), averaged over seeds. The reported
    split is never looked at. Ties go to the smaller learning rate. A learning rate is only a candidate
    with the same seeds as the others (a half-finished learning rate cannot win on fewer seeds).

    ``by_size`` (a training-set size sweep): per (task, method, backbone, n_train), keyed by that 4-tuple,
    with the record's ``n_train`` as the size."""
    groups: dict[tuple, dict[float, dict[int, float]]] = {}
    for m in records:
        sel = m.get("selection")
        where = f"{m.get('task')}/{m.get('method')}/lr={m.get('learning_rate')}/seed={m.get('seed')}"
        if not sel:
            raise SweetError(f"run {where} has no 'selection' metrics (made by an older sweet); re-run it")
        if sel.get("split") == m.get("evaluation", {}).get("split"):
            raise SweetError(f"run {where}: the selection split is the reported split; refusing to select on it")
        key = (m["task"], m["method"], m["backbone"]) + ((int(m["n_train"]),) if by_size else ())
        groups.setdefault(key, {}).setdefault(float(m["learning_rate"]), {})[int(m["seed"])] = sel["auc"]
    out = {}
    for key, by_lr in sorted(groups.items()):
        all_seeds = set().union(*(set(s) for s in by_lr.values()))
        candidates = [{"learning_rate": lr, **_selection_candidate(by_lr[lr], all_seeds)} for lr in sorted(by_lr)]
        eligible = [c for c in candidates if c["eligible"]]
        if not eligible:
            size = f"/n={key[3]}" if by_size else ""
            raise SweetError(f"{key[0]}/{key[1]}{size}: no learning rate has a selection AUC for every seed")
        best = max(eligible, key=lambda c: (c["mean_selection_auc"], -c["learning_rate"]))
        out[key] = {
            "task": key[0], "method": key[1], "backbone": key[2], **({"n_train": key[3]} if by_size else {}),
            "chosen": best["learning_rate"],
            "criterion": SELECTION_CRITERION,
            "candidates": candidates,
        }
    return out


def select_alpha(chosen: dict[tuple[str, str], list[dict]]) -> dict[str, dict]:
    """Choose the gradient scale alpha per task the way the learning rate is chosen: by the mean over seeds of
    the area under the speed-accuracy curve on the calibration split, never the reported split. The candidates
    are the methods on the gradient-scaling line that the grid ran for that task (``sweet`` = 0,
    ``grad_scale@ALPHA``, ``early_exit`` = 1), each at its own chosen learning rate.

    ``chosen``: (task, method) -> that method's runs at its chosen learning rate. Returns task -> the choice
    (``chosen``: the method, ``alpha``, and every candidate's selection AUCs). A candidate is eligible only with
    every seed that any candidate has; ties go to the smaller alpha. A task gets a choice only where it has a
    ``grad_scale@ALPHA`` run and at least two candidates: otherwise there is nothing to choose between."""
    by_task: dict[str, list[tuple[float, str, list[dict]]]] = {}
    for (task, method), runs in chosen.items():
        if method == SELECTED_ALPHA or not runs:
            continue
        alpha = parse_method(method).alpha
        if alpha is not None:
            by_task.setdefault(task, []).append((alpha, method, runs))
    out = {}
    for task, cands in sorted(by_task.items()):
        if len(cands) < 2 or not any(m.startswith("grad_scale@") for _, m, _ in cands):
            continue
        all_seeds = set().union(*({int(r["seed"]) for r in runs} for _, _, runs in cands))
        candidates = [{"alpha": alpha, "method": method, "learning_rate": float(runs[0]["learning_rate"]),
                       **_selection_candidate({int(r["seed"]): r["selection"]["auc"] for r in runs}, all_seeds)}
                      for alpha, method, runs in sorted(cands)]
        eligible = [c for c in candidates if c["eligible"]]
        if not eligible:
            continue
        best = max(eligible, key=lambda c: (c["mean_selection_auc"], -c["alpha"]))
        out[task] = {
            "task": task,
            "chosen": best["method"],
            "alpha": best["alpha"],
            "criterion": SELECTION_CRITERION,
            "candidates": candidates,
        }
    return out

"""Planning a grid: its runs, their keys and directories, the tasks' data, and time estimates.

:func:`plan` expands a :class:`~sweet.experiments.spec.GridSpec` into :class:`GridRun` s, in execution order.
Each run's ``KEY`` (:func:`run_key`) is a short hash of its full :class:`~sweet.runs.RunConfig` (everything that
affects its result) with the data *location* replaced by a SHA-256 of the task's data files: moving the data
does not re-run anything, changing it does. A run is finished iff its ``metrics.json`` exists (runs.py writes
it last, atomically), so a killed grid continues where it stopped and finished runs are never re-run
(:func:`run_state`).

With ``lr_selection = "first_seed"`` the grid is planned in two stages per (task, size): the first seed runs every
learning rate; each later seed runs only the rate that won on the first seed's calibration split (the same
:func:`~sweet.experiments.selection.select_learning_rates` as the report). Until the first seed's runs at every
rate have finished, a later seed's run is a :class:`WaitingRun`; re-planning after each finished run turns it
into a :class:`GridRun` (:func:`expand_stages`). Runs are then ordered task by task, so that finished tasks
have all their seeds.

With ``learning_rates_from`` each run takes the rate a reference grid chose (:mod:`~sweet.experiments.reference`);
until it has chosen, the run waits. With ``param_selection = "first_seed_worst_deficit"`` a family of parameterised
methods (``own@0.25``, ``own@0.5``, ...) runs every value on the first seed and only the chosen value
(:func:`~sweet.experiments.selection.select_method_parameters`) on the later seeds, which wait until then.
``task_methods`` leaves some (task, method) pairs out of the grid.

Runs at different learning rates for the same (task, method, seed) share the training sample: the sample
depends only on the seed, by design (the paper's protocol). In a training-set size sweep every size must fit
in the task's pool after the fixed calibration/evaluation hold-outs (no silent clamping, which would run one
size twice).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones import canonical_alias
from ..config import OWN_DATA_DEFAULTS, RESUME_MAY_CHANGE, RunConfig
from ..data import fixed_holdout_sizes, load_task, resolve_data_dir
from ..datasource import load_run_data
from ..errors import SweetError
from ..io import read_json, sha256_file
from ..methods import parse_method
from ..precision import native_bf16, resolve_precision
from ..rundir import METRICS_FILE, PROVENANCE_KEYS, RUN_CONFIG
from .reference import ReferenceGrid
from .selection import DEFICIT_BASELINES, select_learning_rates, select_method_parameters
from .spec import SAME_METHOD, GridSpec, task_entry_name
from .store import RUNS_DIR, last_data_dir

#: RunConfig fields that say where things are or how often to checkpoint, not what is computed: left out of
#: the run key (the same fields that runs.py lets differ when a run is resumed).
_LOCATION_FIELDS = tuple(sorted({"data_dir", *RESUME_MAY_CHANGE}))


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
        return f"{c.task_name}/{c.method}{size}/lr={c.learning_rate:g}/seed={c.seed}"


@dataclass
class WaitingRun:
    """A run that cannot be planned yet: a later seed's run whose learning rate is not chosen yet (``lr_selection =
    "first_seed"``: the first seed's runs at every rate have not all finished), a run whose rate the reference grid
    has not chosen yet (``learning_rates_from``), or a later seed's run of a family whose value is not chosen yet
    (``param_selection``; ``method`` is then ``FAMILY@?``). ``waits_for`` says which (default: the first case)."""

    task: str
    method: str
    seed: int
    n_train: int
    first_seed: int
    estimate_seconds: float
    sized: bool = False
    waits_for: str | None = None
    learning_rate: float | None = None  # known already where the run waits for its method's value

    @property
    def reason(self) -> str:
        return self.waits_for or f"the learning rate chosen on seed {self.first_seed}"

    @property
    def label(self) -> str:
        size = f"/n={self.n_train}" if self.sized else ""
        if self.waits_for is None:
            return f"{self.task}/{self.method}{size}/lr=(chosen on seed {self.first_seed})/seed={self.seed}"
        lr = "?" if self.learning_rate is None else f"{self.learning_rate:g}"
        return f"{self.task}/{self.method}{size}/lr={lr}/seed={self.seed} (waits for {self.reason})"

    def to_dict(self) -> dict:
        return {"task": self.task, "method": self.method, "seed": self.seed, "n_train": self.n_train,
                "learning_rate": self.learning_rate, "waits_for": self.reason}


def _without_default_precision(d: dict) -> dict:
    """fp32 (and a config from before precisions existed) is left out of keys and comparisons, and so are the
    own-data fields at their defaults (:data:`~sweet.config.OWN_DATA_DEFAULTS`), so that runs made before sweet
    had these options keep their keys."""
    if d.get("precision", "fp32") == "fp32":
        d = {k: v for k, v in d.items() if k != "precision"}
    return {k: v for k, v in d.items() if k not in OWN_DATA_DEFAULTS or v != OWN_DATA_DEFAULTS[k]}


def training_precision(spec: GridSpec) -> str:
    """The concrete training precision of a grid's runs: ``spec.precision``, or for ``auto`` what
    :mod:`sweet.precision` picks for the device the runs will get (a GPU when ``gpus_per_run`` > 0 or this
    machine has one: bf16, or fp16 where the GPU lacks bf16; else the CPU's choice)."""
    if spec.precision != "auto":
        return spec.precision
    if spec.gpus_per_run > 0 or torch.cuda.is_available():
        if not torch.cuda.is_available():  # Ray head without a GPU: the workers' GPUs are assumed bf16-capable
            return "bf16"
        return "bf16" if native_bf16(torch.device("cuda")) else "fp16"
    return resolve_precision("auto", torch.device("cpu"), training=True)


def run_key(config: RunConfig) -> str:
    """Short hash of everything in the config that decides the result (not where the data lies)."""
    d = _without_default_precision({k: v for k, v in config.to_dict().items() if k not in _LOCATION_FIELDS})
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:10]


def run_rel_dir(config: RunConfig, key: str, sized: bool = False) -> str:
    """``runs/TASK/METHOD/lrLR/seedS-KEY``; in a training-set size sweep ``runs/TASK/METHOD/nN/lrLR/seedS-KEY``."""
    size = f"/n{config.n_train}" if sized else ""
    return f"{RUNS_DIR}/{config.task_name}/{config.method}{size}/lr{config.learning_rate:g}/seed{config.seed}-{key}"


@dataclass
class TaskInfo:
    """What the grid needs to know about a task's data before running it."""

    data: dict  # {"source": ..., "files": {role: path}, "sha256": {role: hex}}
    n_train_available: int | None = None  # pool rows left for training after the calibration/evaluation hold-outs
    n_eval_examples: int | None = None  # calibration + evaluation rows (both are scored in every run)
    mean_chars: float | None = None


#: prior cost model for the ETA before any run of this launch has finished (default backbone, 2 idle cores,
#: measured): a training example costs (characters + 20) / 6600 s (SST-2 ~91 examples/s with the fused optimizer
#: step: the demo's 12,000 examples in 132 s; it was 5200 / ~71 per s before), an evaluated one a fifth of that,
#: the method's factor on both (:attr:`sweet.methods.Method.train_time_factor`: multi_model ~2.2, pcgrad ~2.8), plus
#: ~4 s per run (loading, saving). Two 1-CPU runs side by side (--backend ray) get through SST-2 about 1.1x faster
#: than this (the paper grid: 16 SST-2 runs in 41 min).
_PRIOR_CHARS = 60.0
#: packaged backbones slower than the default (MPNet, 12 x 768: SST-2 at 9.6 vs ~38 training examples/s, one thread)
_BACKBONE_FACTOR = {"mpnet": 4.0}


def _estimate_seconds(info: TaskInfo, spec: GridSpec, method: str, n_train: int) -> float:
    if info.n_train_available is not None:
        n_train = min(n_train, info.n_train_available)
    n_eval = info.n_eval_examples if info.n_eval_examples is not None else 2 * spec.calibration_size
    per_example = ((info.mean_chars or _PRIOR_CHARS) + 20.0) / 6600.0
    factor = parse_method(method).train_time_factor
    factor *= _BACKBONE_FACTOR.get(canonical_alias(spec.backbone) or "", 1.0)
    return 4.0 + factor * per_example * (n_train * spec.epochs + n_eval / 5.0)


def inspect_tasks(spec: GridSpec, data_dir: str | None) -> dict[str, TaskInfo]:
    """Load each task once: checks that its files exist, fingerprints them, and sizes the runs. In a
    training-set size sweep every size must fit in what the pool leaves for training (a larger one would be
    clamped to the same sample as its neighbour): refused, naming the task, the size and the maximum."""
    out: dict[str, TaskInfo] = {}
    for entry in spec.tasks:
        task = task_entry_name(entry)
        if isinstance(entry, dict):  # your own data (sweet.sources)
            data = load_run_data(RunConfig(method="early_exit", **entry))
            local = {role: p for role, p in sorted(data.files.items()) if Path(p).is_file()}
            info_data = {"source": "data", "files": dict(data.files),
                         "sha256": {role: sha256_file(p) for role, p in local.items()}}
        elif spec.data_source != "local":
            out[task] = TaskInfo(data={"source": spec.data_source})
            continue
        else:
            data = load_task(task, data_dir, source="local")
            info_data = {"source": "local", "files": dict(data.files),
                         "sha256": {role: sha256_file(p) for role, p in sorted(data.files.items())}}
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
        texts = data.pool.subset(range(min(2000, len(data.pool)))).texts
        out[task] = TaskInfo(
            data=info_data,
            n_train_available=available,
            n_eval_examples=n_cal + n_eval,
            mean_chars=sum(sum(len(t) for t in ex) for ex in texts) / max(1, len(texts)),
        )
    return out


def resolve_grid_data_dir(spec: GridSpec, data_dir: str | None) -> str | None:
    """The data directory for this launch, as an absolute path (Ray workers do not share our cwd)."""
    if spec.data_source != "local" or all(isinstance(t, dict) for t in spec.tasks):  # only own data: no GLUE folder
        return None
    return str(resolve_data_dir(data_dir or spec.data_dir).resolve())


def _resolve_backbone_path(backbone: str) -> str:
    """A local backbone directory given relatively becomes absolute (workers run elsewhere)."""
    if canonical_alias(backbone) is None and Path(backbone).expanduser().is_dir():
        return str(Path(backbone).expanduser().resolve())
    return backbone


def expand(spec: GridSpec, data_dir: str | None, tasks: dict[str, TaskInfo], grid_dir: str | Path | None = None) -> list[GridRun]:
    """Every run of the grid that can be planned now, in execution order (:func:`expand_stages`)."""
    return expand_stages(spec, data_dir, tasks, grid_dir)[0]


def expand_stages(spec: GridSpec, data_dir: str | None, tasks: dict[str, TaskInfo],
                  grid_dir: str | Path | None = None) -> tuple[list[GridRun], list[WaitingRun]]:
    """The grid's runs in execution order, and (``lr_selection = "first_seed"``) the runs still waiting for
    their learning rate.

    ``all_seeds``: seed, then task, training size, learning rate, method (so a grid that stops early has
    complete seeds). ``first_seed``: task, then training size; within them the first seed at every rate
    (rate, method), then each later seed at its method's chosen rate, read from the first seed's finished runs
    in ``grid_dir`` (without ``grid_dir``, every later seed waits)."""
    precision = training_precision(spec)
    backbone = _resolve_backbone_path(spec.backbone)
    sized = spec.is_size_sweep

    def make(entry: str | dict, n_train: int, lr: float, method: str, seed: int) -> GridRun:
        info = tasks[task_entry_name(entry)]
        own = entry if isinstance(entry, dict) else {"task": entry}
        cfg = RunConfig(
            **own, method=method, backbone=backbone, exit_layers=spec.exit_layers,
            n_train=n_train, seed=seed, learning_rate=lr, epochs=spec.epochs,
            batch_size=spec.batch_size, max_length=spec.max_length, pooling=spec.pooling,
            calibration_size=spec.calibration_size, heldout_eval_size=spec.heldout_eval_size,
            data_dir=data_dir, data_source=spec.data_source,
            extra={"data_sha256": info.data.get("sha256", {})}, precision=precision,
        )
        key = run_key(cfg)
        return GridRun(cfg, key, run_rel_dir(cfg, key, sized), _estimate_seconds(info, spec, method, n_train), sized)

    if spec.learning_rates_from is not None:
        return _expand_from_reference(spec, make, tasks, grid_dir)
    if not spec.first_seed_selects:
        return [make(task, n, lr, method, seed) for seed in spec.seeds for task in spec.tasks
                for n in spec.train_sizes for lr in spec.learning_rates
                for method in spec.methods_for(task_entry_name(task))], []
    first, later = spec.seeds[0], spec.seeds[1:]
    runs: list[GridRun] = []
    waiting: list[WaitingRun] = []
    for task in spec.tasks:
        methods = spec.methods_for(task_entry_name(task))
        for n in spec.train_sizes:
            stage1 = {(lr, m): make(task, n, lr, m, first) for lr in spec.learning_rates for m in methods}
            runs += stage1.values()
            chosen = {m: _chosen_on_first_seed(grid_dir, [stage1[(lr, m)] for lr in spec.learning_rates], first)
                      for m in methods}
            for seed in later:
                for m in methods:
                    if chosen[m] is None:
                        name = task_entry_name(task)
                        waiting.append(WaitingRun(name, m, seed, n, first,
                                                  _estimate_seconds(tasks[name], spec, m, n), sized))
                    else:
                        runs.append(make(task, n, chosen[m], m, seed))
    return runs, waiting


def _expand_from_reference(spec: GridSpec, make, tasks: dict[str, TaskInfo], grid_dir: str | Path | None
                           ) -> tuple[list[GridRun], list[WaitingRun]]:
    """The plan of a grid whose rates come from a reference grid (``learning_rates_from``): task by task (and size),
    the first seed's runs of every method, then each later seed's; a family whose value is chosen on the first seed
    (``param_selection``) runs only its chosen value there. Without ``grid_dir`` every run waits."""
    ref = ReferenceGrid.open(spec.learning_rates_from, grid_dir) if grid_dir is not None else None
    first, later = spec.seeds[0], spec.seeds[1:]
    runs: list[GridRun] = []
    waiting: list[WaitingRun] = []
    for entry in spec.tasks:
        name = task_entry_name(entry)
        methods = spec.methods_for(name)
        families = spec.selected_families(methods)
        whose = {m: m if spec.learning_rate_method == SAME_METHOD else spec.learning_rate_method for m in methods}
        rate = {m: ref.chosen_rate(name, whose[m]) if ref is not None else None for m in methods}
        for n in spec.train_sizes:

            def wait(method: str, seed: int, reason: str, lr: float | None = None, n: int = n) -> None:
                estimate = _estimate_seconds(tasks[name], spec, method.replace("@?", ""), n)
                waiting.append(WaitingRun(name, method, seed, n, first, estimate, spec.is_size_sweep, reason, lr))

            def planned(m: str, seed: int, n: int = n) -> GridRun | None:
                if rate[m] is None:
                    wait(m, seed, f"the learning rate {spec.learning_rates_from} chooses for {name}/{whose[m]}")
                    return None
                runs.append(make(entry, n, rate[m], m, seed))
                return runs[-1]

            stage1 = {m: planned(m, first) for m in methods}
            chosen = {f: _value_chosen_on_first_seed(grid_dir, ref, name, f, [stage1[v] for v in values], first)
                      for f, values in families.items()}
            for seed in later:
                for m in methods:
                    family = parse_method(m).name
                    if family in families:
                        if chosen[family] is None:
                            if m == families[family][0]:  # one waiting run per family and seed
                                wait(f"{family}@?", seed, f"the value of {family} chosen on seed {first}")
                            continue
                        if m != chosen[family]:
                            continue
                    planned(m, seed)
    return runs, waiting


def _value_chosen_on_first_seed(grid_dir: str | Path | None, ref: ReferenceGrid | None, task: str, family: str,
                                first_runs: list[GridRun | None], first_seed: int) -> str | None:
    """The value of ``family`` chosen on the first seed (``param_selection``), or None until its runs of every value
    and the reference's early_exit and sweet runs of that seed (at their chosen rates) have finished."""
    if grid_dir is None or ref is None or any(r is None or run_state(Path(grid_dir), r) != "finished" for r in first_runs):
        return None
    baselines = [ref.chosen_run(task, b, first_seed) for b in DEFICIT_BASELINES]
    if any(b is None for b in baselines):
        return None
    records = [read_json(Path(grid_dir) / r.rel_dir / METRICS_FILE) for r in first_runs]
    choice = select_method_parameters(records, baselines, first_seed)
    if not choice:
        raise SweetError(f"{task}/{family}: no value chosen on seed {first_seed}: the reference's early_exit and sweet "
                         f"runs have another backbone ({baselines[0]['backbone']}) than this grid's "
                         f"({records[0]['backbone']})")
    (pick,) = choice.values()
    return pick["chosen"]


def _chosen_on_first_seed(grid_dir: str | Path | None, first_runs: list[GridRun], first_seed: int) -> float | None:
    """The learning rate chosen on the first seed's runs (one per rate), or None until all of them finished."""
    if grid_dir is None or any(run_state(Path(grid_dir), r) != "finished" for r in first_runs):
        return None
    records = [read_json(Path(grid_dir) / r.rel_dir / METRICS_FILE) for r in first_runs]
    (choice,) = select_learning_rates(records, on_seed=first_seed).values()
    return choice["chosen"]


def comparable_config(d: dict) -> dict:
    d = {k: v for k, v in d.items() if k not in (*_LOCATION_FIELDS, *PROVENANCE_KEYS)}
    return json.loads(json.dumps(_without_default_precision(d)))


def run_state(grid_dir: Path, r: GridRun) -> str:
    """'finished' (metrics.json present), 'partial' (started, not finished) or 'pending'."""
    d = grid_dir / r.rel_dir
    if (d / METRICS_FILE).is_file():
        cfg_path = d / RUN_CONFIG
        if cfg_path.is_file():
            stored = comparable_config(read_json(cfg_path))
            expected = comparable_config(r.config.to_dict())
            diff = sorted(k for k in expected if stored.get(k) != expected[k])
            if diff:
                raise SweetError(f"{d} holds a run with a different config (fields: {', '.join(diff)}); "
                                 "remove that directory and launch again")
        return "finished"
    return "partial" if d.exists() else "pending"


def plan(spec: GridSpec, grid_dir: str | Path, data_dir: str | None = None
         ) -> tuple[list[GridRun], list[WaitingRun], dict[str, TaskInfo], str | None]:
    """Every run of the grid that can be planned now, those waiting for their learning rate, the tasks' data and
    the data directory (:func:`expand_stages`). The data directory: ``data_dir``, else the spec's, else the one the grid's last
    launch used (so a re-launch continues on the same data whatever the shell's environment), else
    $SWEET_GLUE_DIR."""
    if not (data_dir or spec.data_dir):
        data_dir = last_data_dir(Path(grid_dir))
    ddir = resolve_grid_data_dir(spec, data_dir)
    tasks = inspect_tasks(spec, ddir)
    runs, waiting = expand_stages(spec, ddir, tasks, grid_dir)
    return runs, waiting, tasks, ddir


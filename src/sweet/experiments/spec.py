"""Grid specs: what a grid runs (tasks x methods x seeds x learning rates, and shared settings).

A spec comes from a TOML/YAML/JSON file (:func:`load_spec_file`), a preset (:data:`PRESETS`), command-line
flags, or a mix (:func:`spec_from_dict` with a ``base``). Every field is validated by :func:`check_field`;
a bad one raises a SweetError that names it. :func:`spec_to_toml` writes a spec back as TOML.

``n_train`` is one size or a list of sizes (a training-set size sweep, the paper's Appendix): the grid is
then also expanded over the sizes.

``lr_selection`` says which runs choose the learning rate: ``all_seeds`` (every seed runs every rate; the rate
with the best mean calibration-split AUC over seeds wins) or ``first_seed`` (only the first seed runs every
rate; the others run only the rate that won on the first seed, per task, method and size: fewer runs).

``learning_rates_from`` names a reference grid (a grid directory; relative: from the root of the git checkout that
holds this grid, else from the current directory) instead of ``learning_rates``: each run takes the rate that grid
chose for its task, and for its own method (``learning_rate_method = "same"``) or for the method named there (e.g.
``"early_exit"``), by the reference's own rule (:func:`~sweet.experiments.selection.select_learning_rates`).

``param_selection`` says which runs choose a parameterised method's value where a grid lists several values of one
family (``grad_scale@0.25, grad_scale@0.75``): ``all_seeds`` (every seed runs every value; nothing is chosen here)
or ``first_seed_worst_deficit`` (the first seed runs every value; the other seeds run only the value with the
largest worst deficit against the reference grid's ``early_exit`` and ``sweet`` over the five fixed costs of the
first seed's calibration split, per task: :func:`~sweet.experiments.selection.select_method_parameters`).

``task_methods`` (a table: task -> methods) runs some tasks on a subset of ``methods`` (e.g. Multi-Model on SST-2
only); tasks it does not name run every method.

These four fields are left out of the stored spec (grid.json, spec.toml) at their defaults, so that grids made
before they existed keep their stored spec.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import tomllib

from ..choices import TRAINING_PRECISIONS
from ..config import OWN_DATA_DEFAULTS, RunConfig, data_name
from ..data import get_task
from ..errors import SweetError
from ..methods import PAPER_METHODS, parse_method

#: how the learning rate is chosen (see the module docstring)
LR_SELECTIONS = ("all_seeds", "first_seed")
#: how a parameterised method's value is chosen where a grid runs several values of it (see the module docstring)
PARAM_SELECTIONS = ("all_seeds", "first_seed_worst_deficit")
#: ``learning_rate_method``: each run takes the reference grid's rate for its own method
SAME_METHOD = "same"
#: fields added after grids were committed: left out of the stored spec at these defaults (stored specs unchanged)
_OPTIONAL_DEFAULTS = {"learning_rates_from": None, "learning_rate_method": SAME_METHOD, "param_selection": "all_seeds",
                      "task_methods": None}
#: the shared settings of a grid's runs: RunConfig's own fields, with RunConfig's defaults and checks
RUN_FIELDS = ("backbone", "exit_layers", "epochs", "batch_size", "max_length", "pooling", "calibration_size",
              "heldout_eval_size", "data_source", "data_dir", "precision")
_RUN_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}
#: spec fields that do not change any result (where the data is, how much hardware a run gets).
_NON_RESULT_SPEC_FIELDS = ("data_dir", "cpus_per_run", "gpus_per_run")


@dataclass
class GridSpec:
    """What to run: every combination of tasks x methods x seeds x learning rates, with shared settings."""

    tasks: list[str]
    methods: list[str]
    seeds: list[int]
    learning_rates: list[float]
    name: str = "custom"
    # The settings every run shares are RunConfig's fields (RUN_FIELDS): the same defaults, checked by RunConfig.
    backbone: str = _RUN_DEFAULTS["backbone"]
    exit_layers: list[int] | str | None = _RUN_DEFAULTS["exit_layers"]  # None: the default ladder; or "proportional"
    n_train: int | list[int] = _RUN_DEFAULTS["n_train"]  # a list of 2+ sizes: a training-set size sweep
    epochs: int = _RUN_DEFAULTS["epochs"]
    batch_size: int = _RUN_DEFAULTS["batch_size"]
    max_length: int = _RUN_DEFAULTS["max_length"]
    pooling: str = _RUN_DEFAULTS["pooling"]
    calibration_size: int = _RUN_DEFAULTS["calibration_size"]
    heldout_eval_size: int = _RUN_DEFAULTS["heldout_eval_size"]
    data_source: str = _RUN_DEFAULTS["data_source"]
    data_dir: str | None = _RUN_DEFAULTS["data_dir"]  # default: --data-dir, else $SWEET_GLUE_DIR
    cpus_per_run: float = 1.0  # Ray back-end: CPUs requested per run (also its torch thread count)
    gpus_per_run: float = 0.0  # Ray back-end: GPUs requested per run
    precision: str = _RUN_DEFAULTS["precision"]  # training precision (sweet.precision); resolved when planned
    lr_selection: str = "all_seeds"  # or "first_seed": only the first seed runs every learning rate
    learning_rates_from: str | None = None  # a reference grid: each run at the rate it chose (learning_rates empty)
    learning_rate_method: str = SAME_METHOD  # whose rate in the reference: the run's own method's, or this method's
    param_selection: str = "all_seeds"  # or "first_seed_worst_deficit": only the first seed runs every value
    task_methods: dict[str, list[str]] | None = None  # task -> the methods it runs (default: all of ``methods``)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in _OPTIONAL_DEFAULTS or v != _OPTIONAL_DEFAULTS[k]}

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
    def first_seed_selects(self) -> bool:
        """Only the first seed runs every learning rate (``lr_selection = "first_seed"``, with 2+ rates)."""
        return lr_selection_seed(self.to_dict()) is not None

    @property
    def runs_per_slot(self) -> int:
        """Runs per (task, method, size): seeds x rates, or with ``first_seed`` rates + the other seeds; with
        ``learning_rates_from`` one rate per seed."""
        if self.learning_rates_from is not None:
            return len(self.seeds)
        if self.first_seed_selects:
            return len(self.learning_rates) + len(self.seeds) - 1
        return len(self.seeds) * len(self.learning_rates)

    def methods_for(self, task: str) -> list[str]:
        """The methods a task runs: ``task_methods[task]`` where given (in ``methods``' order), else ``methods``."""
        only = (self.task_methods or {}).get(task)
        return list(self.methods) if only is None else [m for m in self.methods if m in only]

    def selected_families(self, methods: list[str]) -> dict[str, list[str]]:
        """With ``param_selection = "first_seed_worst_deficit"``: family name -> its values among ``methods``, for
        each family with 2+ values (their later seeds run the chosen value only); else none."""
        if self.param_selection != "first_seed_worst_deficit":
            return {}
        families: dict[str, list[str]] = {}
        for m in methods:
            method = parse_method(m)
            if method.param is not None:
                families.setdefault(method.name, []).append(m)
        return {f: values for f, values in families.items() if len(values) > 1}

    @property
    def n_runs(self) -> int:
        later = len(self.seeds) - 1
        total = 0
        for entry in self.tasks:
            methods = self.methods_for(task_entry_name(entry))
            families = self.selected_families(methods)
            chosen_later = sum(len(v) for v in families.values()) * later - len(families) * later
            total += (len(methods) * self.runs_per_slot - chosen_later) * len(self.train_sizes)
        return total


def lr_selection_seed(spec: dict) -> int | None:
    """The seed whose calibration-split AUC alone chooses the learning rate (the first seed, in a spec -- or a
    stored spec dict -- with ``lr_selection = "first_seed"`` and 2+ rates), or None: the mean over all seeds."""
    if spec.get("lr_selection") == "first_seed" and len(spec["learning_rates"]) > 1:
        return spec["seeds"][0]
    return None


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


#: what a data entry of ``tasks`` may say: your own data instead of a preset (and ``task``: a preset's columns and
#: labels over that source, e.g. the hub's nyu-mll/glue)
DATA_ENTRY_FIELDS = ("task", *OWN_DATA_DEFAULTS)


def task_entry_name(entry: str | dict) -> str:
    """The name a ``tasks`` entry goes by (run directories, reports): a preset's name, else the data's short name."""
    if isinstance(entry, str):
        return entry
    return entry.get("task") or data_name(entry["data"])


def _task_entry(source: str, entry: Any) -> str | dict:
    """A preset name, or a table naming a data source, its columns and its metric (checked by RunConfig)."""
    if isinstance(entry, str):
        try:
            return get_task(entry).name
        except SweetError as exc:
            raise _err(source, "tasks", str(exc)) from None
    if not isinstance(entry, dict):
        raise _err(source, "tasks", f"an entry is a task name or a table with 'data' (your own data), got {entry!r}")
    unknown = sorted(set(entry) - set(DATA_ENTRY_FIELDS))
    if unknown or "data" not in entry:
        raise _err(source, "tasks", f"a data entry needs 'data' and may have {', '.join(DATA_ENTRY_FIELDS[1:])}"
                                    f" and 'task'; got {', '.join(unknown) or 'no data'}")
    try:
        RunConfig(method="early_exit", **entry)
    except SweetError as exc:
        raise _err(source, "tasks", f"{entry['data']}: {exc}") from None
    return dict(entry)


def _check_as_run_field(source: str, name: str, value: Any) -> Any:
    """A shared setting is checked by RunConfig itself, as every run of the grid will be (one set of rules); the
    message names the spec field. A few checks RunConfig leaves to the machine are made here: the precision's
    name, the exit-ladder's form, the backbone's and data directory's type."""
    if name in ("backbone", "data_dir") and not (isinstance(value, str) and value.strip()):
        if name == "data_dir" and value is None:
            return None
        raise _err(source, name, f"must be a non-empty string, got {value!r}")
    if name == "precision" and value not in TRAINING_PRECISIONS:
        raise _err(source, name, f"must be one of {', '.join(TRAINING_PRECISIONS)}, got {value!r}")
    if name == "exit_layers":
        if value is None or (isinstance(value, str) and value.strip().lower() == "default"):
            return None
        if isinstance(value, str) and value.strip().lower() == "proportional":  # named: resolved at the depth
            return "proportional"
        value = _list(source, name, value)
        if not all(_is_int(x) and x > 0 for x in value):
            raise _err(source, name, f"must be strictly increasing positive integers such as [1, 2, 4, 6], got {value!r}")
    try:
        RunConfig(task="sst2", method="early_exit", **{name: value})
    except SweetError as exc:
        raise _err(source, name, str(exc)) from None
    return value.strip() if isinstance(value, str) and name == "backbone" else value


def check_field(name: str, value: Any, source: str = "spec") -> Any:
    """Validate and normalise one spec field; raises SweetError naming the field."""

    if name == "tasks":
        out = [_task_entry(source, t) for t in _list(source, name, value)]
        names = [task_entry_name(t) for t in out]
        if len(set(names)) != len(names):
            raise _err(source, name, f"names the same task twice: {names!r}")
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
    if name == "n_train" and isinstance(value, (list, tuple)):
        # a training-set size sweep; one size in a list is the same grid as that size alone
        items = _list(source, name, value)
        for n in items:
            if not _is_int(n) or n <= 0:
                raise _err(source, name, f"training sizes must be positive integers, got {n!r}")
        return int(items[0]) if len(items) == 1 else [int(n) for n in items]
    if name in RUN_FIELDS or name == "n_train":
        return _check_as_run_field(source, name, value)
    if name == "name":
        if not isinstance(value, str) or not value.strip():
            raise _err(source, name, f"must be a non-empty string, got {value!r}")
        return value.strip()
    if name == "cpus_per_run":
        if not _is_number(value) or value <= 0:
            raise _err(source, name, f"must be a positive number, got {value!r}")
        return float(value)
    if name == "gpus_per_run":
        if not _is_number(value) or value < 0:
            raise _err(source, name, f"must be a non-negative number, got {value!r}")
        return float(value)
    if name == "lr_selection":
        if value not in LR_SELECTIONS:
            raise _err(source, name, f"must be one of {', '.join(LR_SELECTIONS)}, got {value!r}")
        return value
    if name == "learning_rates_from":
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _err(source, name, f"must be a grid directory (a path), got {value!r}")
        return value.strip()
    if name == "learning_rate_method":
        if value == SAME_METHOD:
            return value
        try:
            return parse_method(value).canonical
        except SweetError as exc:
            raise _err(source, name, f"'{SAME_METHOD}' or a method: {exc}") from None
    if name == "param_selection":
        if value not in PARAM_SELECTIONS:
            raise _err(source, name, f"must be one of {', '.join(PARAM_SELECTIONS)}, got {value!r}")
        return value
    if name == "task_methods":
        if value is None:
            return None
        if not isinstance(value, dict) or not value:
            raise _err(source, name, f"must be a table of task = [methods], got {value!r}")
        return {str(task): check_field("methods", methods, source) for task, methods in value.items()}
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
    from_reference = merged.get("learning_rates_from") is not None
    if from_reference and merged.get("learning_rates"):
        raise _err(source, "learning_rates_from", "give learning_rates or learning_rates_from, not both (the rates "
                                                   "come from the reference grid)")
    missing = [k for k in _REQUIRED if k not in merged and not (k == "learning_rates" and from_reference)]
    if missing:
        raise SweetError(f"{source}: missing required field(s): {', '.join(missing)} (or start from a preset: "
                         f"{', '.join(PRESETS)})")
    checked = {k: check_field(k, v, source) for k, v in merged.items() if not (k == "learning_rates" and from_reference)}
    if from_reference:
        checked["learning_rates"] = []
    spec = GridSpec(**checked)
    _check_together(spec, source)
    return spec


def _check_together(spec: GridSpec, source: str) -> None:
    """The checks that read two fields: what needs a reference grid, and task_methods against tasks and methods."""
    if spec.learning_rates_from is None:
        if spec.learning_rate_method != SAME_METHOD:
            raise _err(source, "learning_rate_method", "needs learning_rates_from (the grid whose rates it reads)")
        if spec.param_selection != "all_seeds":
            raise _err(source, "param_selection", f"'{spec.param_selection}' compares against the early_exit and "
                                                  "sweet runs of the grid named by learning_rates_from; set it")
    if spec.task_methods is not None:
        names = [task_entry_name(t) for t in spec.tasks]
        for task, methods in spec.task_methods.items():
            if task not in names:
                raise _err(source, "task_methods", f"names task '{task}', which is not in tasks ({', '.join(names)})")
            extra = [m for m in methods if m not in spec.methods]
            if extra:
                raise _err(source, "task_methods", f"{task}: {', '.join(extra)} not in methods "
                                                   f"({', '.join(spec.methods)})")
        spec.task_methods = {t: [m for m in spec.methods if m in ms] for t, ms in spec.task_methods.items()}


def load_spec_file(path: str | Path) -> GridSpec:
    """Read a spec from TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    path = Path(path)
    if not path.is_file():
        raise SweetError(f"spec file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":

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


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # a data entry of 'tasks', or task_methods: an inline table
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def spec_to_toml(spec: GridSpec) -> str:
    lines = ["# sweet grid spec (sweet grid --spec THIS_FILE)"]
    for k, v in spec.to_dict().items():
        if v is None:
            lines.append(f"# {k}: not set (default)")
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


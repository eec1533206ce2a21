"""The run config: what one run is asked to compute, checked once, when it is built.

:class:`RunConfig` checks every value that needs neither data nor a machine when it is constructed (the CLI,
the Python API, grid specs and ``run_config.json`` all build one), so a bad option fails before anything is read
or written. :func:`training_config` adds the checks that depend on this machine (the device and precision it can
run, the backbone's files) and returns the :class:`~sweet.training.TrainConfig` of the run.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .backbones import NAMED_LADDERS, resolve_backbone
from .choices import canonical_metric
from .data import TASKS, get_task
from .errors import SweetError
from .methods import check_method
from .modeling import POOLINGS, validate_exit_layers
from .precision import placement
from .training import TrainConfig

#: ``--pooling`` values: ``auto`` (the pooling the backbone was pretrained with, else cls) or one of POOLINGS.
POOLING_CHOICES = ("auto", *POOLINGS)
DATA_SOURCES = ("local", "hub")

#: Fields added for your own data, with their defaults: a run key leaves them out at these values.
OWN_DATA_DEFAULTS = {"data": None, "eval_data": None, "data_config": None, "train_split": "train", "eval_split": None,
                     "text_columns": None, "label_column": None, "metric": None, "positive_label": None,
                     "drop_invalid": False}

#: Options that may differ when a run is resumed (they do not change its result). The device may change too,
#: as long as the precision it resolves to is the same (checked against the training fingerprint). The same
#: fields are left out of a grid run's key.
RESUME_MAY_CHANGE = ("data_dir", "checkpoint_every", "device")


def data_name(source: str) -> str:
    """A short name for a data source (a file's stem, a folder's or hub id's last part), used where a preset's task
    name would be (reports, metrics.json, grid directories)."""
    path = Path(source)
    if path.suffix and path.name:
        return path.stem
    return path.name or source.rstrip("/").rsplit("/", 1)[-1] or source


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(kw_only=True)
class RunConfig:
    """One run. ``task`` names a GLUE preset (columns, labels, metric and files); ``data`` names your own labelled
    data (a file, a folder, a ``save_to_disk`` folder or a hub id; :mod:`sweet.sources`). Give one of them, or both
    to read a preset's columns and labels from another source (e.g. the hub's ``nyu-mll/glue``)."""

    task: str | None = None
    method: str
    backbone: str = "default"
    exit_layers: list[int] | str | None = None  # None: the default ladder ([1, 2, 4, 6] at 6 layers); "proportional"
    n_train: int | None = 6000  # per seed; None (own data): every row left after the hold-outs
    seed: int = 0
    learning_rate: float = 5e-5
    epochs: int = 2
    batch_size: int = 16
    max_length: int = 256
    pooling: str = "auto"  # cls, mean, or auto (the backbone's pretraining pooling, else cls)
    max_grad_norm: float | None = 1.0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    calibration_size: int = 1000
    heldout_eval_size: int = 2000
    eval_batch_size: int = 64
    checkpoint_every: int = 200  # optimizer steps between training checkpoints (0: none); see sweet.checkpoint
    allow_partial_depth: bool = False
    data_dir: str | None = None
    data_source: str = "local"
    extra: dict = field(default_factory=dict)
    device: str = "auto"  # auto, cpu, cuda[:N], mps (sweet.precision)
    precision: str = "auto"  # training precision: auto, fp32, bf16, fp16 (auto: fp32 on CPU, bf16/fp16 on CUDA)
    # Your own data (issue #23). Left out of a run's key at their defaults (OWN_DATA_DEFAULTS), so that runs made
    # before they existed keep their keys.
    data: str | None = None  # a file, a folder of split files, a save_to_disk folder or a hub dataset id
    eval_data: str | None = None  # a separate evaluation source
    data_config: str | None = None  # hub config name
    train_split: str = "train"
    eval_split: str | None = None  # default: validation, else dev, else a labelled test; 'none': hold out of the pool
    text_columns: list[str] | None = None  # one (single texts) or two (pairs); None: detected
    label_column: str | None = None  # None: detected
    metric: str | None = None  # accuracy, f1_macro, f1, matthews (--metric mcc); None: the preset's, else accuracy
    positive_label: str | None = None  # f1: the positive class (default: the class with id 1)
    drop_invalid: bool = False  # skip (and count) rows with an empty text or label instead of refusing the data

    def __post_init__(self) -> None:
        """Every check that needs no data and no machine. The method is stored in its canonical spelling
        (``grad_scale`` -> ``grad_scale@0.5``)."""
        if self.task is None and self.data is None:
            raise SweetError(f"give a GLUE task preset (--task, one of: {', '.join(TASKS)}) or your own data "
                             "(--data FILE, FOLDER or HUB_ID)")
        if self.task is not None:
            get_task(self.task)
        self.method = check_method(self.method)
        if self.metric is not None:
            self.metric = canonical_metric(self.metric)
        if self.positive_label is not None and self.metric != "f1":
            raise SweetError("--positive-label goes with --metric f1 (binary F1 of that class)")
        if self.text_columns is not None and len(self.text_columns) not in (1, 2):
            raise SweetError(f"give one text column (single texts) or two (pairs), got {len(self.text_columns)}: "
                             f"{', '.join(self.text_columns)}")
        if self.data is None and (self.eval_data or self.data_config or self.text_columns or self.label_column
                                  or self.drop_invalid or self.eval_split or self.train_split != "train"):
            raise SweetError("--eval-data, --data-config, --train-split, --eval-split, --text-column(s), "
                             "--label-column and --drop-invalid describe --data; give --data too")
        if self.pooling not in POOLING_CHOICES:
            raise SweetError(f"unknown pooling {self.pooling!r}; choose one of: {', '.join(POOLING_CHOICES)}")
        if self.data_source not in DATA_SOURCES:
            raise SweetError(f"unknown data source {self.data_source!r}; use 'local' or 'hub'")
        if isinstance(self.exit_layers, str):
            if self.exit_layers not in NAMED_LADDERS:
                raise SweetError(f"unknown exit ladder {self.exit_layers!r}; give layers such as 1,2,4,6 or one of: "
                                 f"{', '.join(NAMED_LADDERS)}")
        elif self.exit_layers is not None and min(self.exit_layers, default=1) >= 1:
            # shape only (non-empty, increasing); the range is checked against the backbone's depth when it is loaded
            validate_exit_layers(self.exit_layers, max(self.exit_layers, default=1), allow_partial_depth=True)
        if self.n_train is None and not self.own_data:
            raise SweetError("--n-train is needed for a GLUE preset (the paper's protocol: 6000)")
        positive = {"train-sample size (--n-train)": 1 if self.n_train is None else self.n_train,
                    "calibration size": self.calibration_size,
                    "held-out evaluation size": self.heldout_eval_size, "evaluation batch size": self.eval_batch_size,
                    "epochs": self.epochs, "batch size": self.batch_size}
        for what, value in positive.items():
            if not _is_int(value):
                raise SweetError(f"{what} must be a positive integer, got {value!r}")
            if value <= 0:
                raise SweetError(f"{what} must be positive, got {value}")
        if not _is_int(self.seed) or self.seed < 0:
            raise SweetError(f"seed must be a non-negative integer, got {self.seed}")
        if not (_is_number(self.learning_rate) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise SweetError(f"learning rate must be a positive number, got {self.learning_rate}")
        if not _is_int(self.max_length) or self.max_length < 8:
            raise SweetError(f"max length must be at least 8 tokens, got {self.max_length} (--max-length)")
        if not isinstance(self.extra, dict) or not isinstance(self.extra.get("learn_exit", False), bool):
            raise SweetError(f"extra must be a mapping and extra['learn_exit'] true or false, got {self.extra!r}")
        every = self.checkpoint_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise SweetError(f"--checkpoint-every must be 0 (no checkpoints) or a positive number of steps, got {every}")

    @property
    def task_name(self) -> str:
        """What reports and grid directories call the run's data: the preset's name, else the data's short name."""
        return self.task if self.task is not None else data_name(self.data)

    @property
    def own_data(self) -> bool:
        """The run reads ``data`` (sweet.sources), not a GLUE preset's folder."""
        return self.data is not None

    @property
    def learn_exit(self) -> bool:
        return bool(self.extra.get("learn_exit", False))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise SweetError(f"run config has unknown key(s): {', '.join(unknown)}")
        return cls(**d)


def training_config(config: RunConfig) -> TrainConfig:
    """The checks that depend on this machine: a device or precision it cannot run, a backbone path that does
    not exist. Returns the run's :class:`~sweet.training.TrainConfig` (with the resolved training precision)."""
    placed = placement(config.device, config.precision, training=True)
    train_cfg = TrainConfig(
        precision=placed.precision,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
    )
    resolve_backbone(config.backbone)  # a local path that does not exist fails here
    return train_cfg

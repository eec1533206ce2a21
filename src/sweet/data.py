"""GLUE tasks, how to read them, and the paper's low-resource splits.

Data location
-------------
Local TSVs in the layout of ``../shared/glue`` (one folder per task, ``train.tsv`` or ``train_pool.tsv``,
``dev.tsv``; tab-separated, header row, no quoting). The directory is given by ``--data-dir`` or the
environment variable ``SWEET_GLUE_DIR``. Users with network can instead read the Hugging Face hub
``glue`` dataset (``source="hub"``). Both are read by :mod:`sweet.sources`, the reader of ``--data`` too: a
preset only names the files, the columns, the labels and the metric (one reader, one set of checks).

Splits (see :func:`make_splits`)
--------------------------------
* **evaluation**: the GLUE validation split when the task has one. When it does not (MNLI, QQP here), a
  fixed part of the training pool, the same rows for every seed and method, reported as
  ``held-out train`` and never as a GLUE validation score.
* **calibration**: a fixed part of the training pool (same rows for every seed and method), used to fit
  temperatures and to select models. Never the split scores are reported on.
* **training sample**: ``n_train`` rows drawn at random *per seed* from the rest of the pool (all of it if
  smaller). It depends only on (task, pool, seed, n_train), so every method of a seed sees the same sample.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .choices import metric_label
from .errors import SweetError
from .sources import NO_EVAL_SPLIT, LabelledTable, SourceSpec, load_source

DATA_DIR_ENV = "SWEET_GLUE_DIR"
#: Seed of the fixed (seed-independent) calibration / held-out permutation of each task's pool.
SPLIT_SEED = 20230709
#: The presets' row-id column (GLUE's ``idx``): the ids that the split digests hash.
ID_COLUMN = "idx"


@dataclass(frozen=True)
class Task:
    name: str  # canonical short name, e.g. "sst2"
    folder: str  # folder in the GLUE directory, e.g. "SST-2"
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    metric: str  # "accuracy" or "matthews"
    dev_files: tuple[str, ...] = ("dev.tsv",)
    hub_config: str = ""
    hub_eval_split: str = "validation"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def metric_name(self) -> str:
        return metric_label(self.metric)

    def to_dict(self) -> dict:
        """What a trained model records of its task, so that it answers without the data (own data has no preset)."""
        return {"name": self.name, "text_fields": list(self.text_fields), "label_names": list(self.label_names),
                "metric": self.metric}

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        return cls(d["name"], "", tuple(d["text_fields"]), tuple(d["label_names"]), d["metric"])


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("sst2", "SST-2", ("sentence",), ("negative", "positive"), "accuracy", hub_config="sst2"),
        Task("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "accuracy", hub_config="mrpc"),
        Task("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), "matthews", hub_config="cola"),
        Task(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            "accuracy",
            dev_files=("dev_matched.tsv", "dev.tsv"),
            hub_config="mnli",
            hub_eval_split="validation_matched",
        ),
        Task("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), "accuracy", hub_config="qnli"),
        Task("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), "accuracy", hub_config="qqp"),
        Task("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "accuracy", hub_config="rte"),
    ]
}


def get_task(name: str) -> Task:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key in TASKS:
        return TASKS[key]
    raise SweetError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")


@dataclass
class Examples:
    """A list of examples: one tuple of texts per example, integer labels (or None if unlabelled)."""

    texts: list[tuple[str, ...]]
    labels: list[int] | None
    ids: list[str] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.texts))]
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError("labels and texts differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int], name: str | None = None) -> "Examples":
        idx = [int(i) for i in indices]
        return Examples(
            texts=[self.texts[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            ids=[self.ids[i] for i in idx],
            name=self.name if name is None else name,
        )


@dataclass
class TaskData:
    task: Task
    pool: Examples  # the training pool (full train split, or a train_pool subset); Arrow-backed for --data
    dev: Examples | None  # the evaluation split, if the data has one
    files: dict[str, str]  # role -> file it came from (provenance)
    dev_name: str = "validation"  # how the report names the evaluation split
    stratify: bool = False  # hold out calibration (and evaluation) rows stratified by label (--data; not the presets)
    notes: list[str] = field(default_factory=list)  # one-line messages for the user (columns chosen, rows dropped)


# --------------------------------------------------------------------------------------------- reading


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    raw = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV)
    if not raw:
        raise SweetError(
            f"no GLUE data directory given: pass --data-dir DIR or set {DATA_DIR_ENV} "
            "(for this project: ../shared/glue)"
        )
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise SweetError(f"GLUE data directory not found: {path} (pass --data-dir or set {DATA_DIR_ENV})")
    return path


#: Characters that are not whitespace to ``str.isspace`` but show nothing and carry no word: format characters
#: (category Cf: zero-width space U+200B, joiners U+200C/U+200D, word joiner U+2060, BOM U+FEFF, soft hyphen,
#: direction marks, ...) and the other default-ignorable code points (Hangul fillers, the combining grapheme
#: joiner, variation selectors). Tokenizers drop most of them, so a text made of them reaches the model empty.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0"
                       + "".join(map(chr, range(0xFE00, 0xFE10))))
_BLANK_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """True when ``text`` has nothing to classify: empty, or only whitespace, control and invisible characters
    (zero-width spaces and joiners, BOM, soft hyphens, direction marks, variation selectors, Hangul fillers).
    The one rule for blank text: the TSV readers refuse it, ``predict`` input skips a blank line and refuses a
    blank text in a pair."""
    return all(ch.isspace() or ch in _INVISIBLE or unicodedata.category(ch) in _BLANK_CATEGORIES
               or 0xE0100 <= ord(ch) <= 0xE01EF for ch in text)


class TableExamples(Examples):
    """Examples backed by an Arrow table (:class:`~sweet.sources.LabelledTable`): ``len``, ``labels`` (numpy) and
    :meth:`subset` without a Python string per row; ``texts`` materialises every row (for small tables only).
    Row ids are the data's id column where it has one (the presets' ``idx``), else the 1-based data row."""

    def __init__(self, table: LabelledTable, name: str = ""):  # noqa: D107 (no dataclass init: lazy texts)
        self.table, self.name = table, name
        self.labels = table.labels

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:  # the dataclass repr would turn every row into Python strings
        return f"TableExamples({len(self)} rows, name={self.name!r})"

    @property
    def texts(self) -> list[tuple[str, ...]]:
        return self.table.text_tuples()

    @property
    def ids(self) -> list[str]:
        return _ids(self.table, np.arange(len(self.table), dtype=np.int64))

    def subset(self, indices: Sequence[int], name: str | None = None) -> Examples:
        idx = np.asarray(indices, dtype=np.int64)
        part = self.table.take(idx)
        return Examples(part.text_tuples(), [int(x) for x in part.labels], _ids(part, idx),
                        name=self.name if name is None else name)


def _ids(table: LabelledTable, positions: np.ndarray) -> list[str]:
    if table.ids is not None:
        return table.ids.to_pylist()
    rows = table.rows if table.rows is not None else positions + 1
    return [str(int(r)) for r in rows]


def to_task_ids(table: LabelledTable | None, names: Sequence[str], task: Task, where: str) -> LabelledTable | None:
    """Map a source's label ids (into its sorted ``names``) onto ``task``'s: by name, or for integer labels by
    value as a position (GLUE's 0..K-1). ``where`` names the data in the error."""
    if table is None:
        return None
    mapping = []
    for name in names:
        if name in task.label_names:
            mapping.append(task.label_names.index(name))
        elif name.isdigit() and int(name) < task.num_labels:
            mapping.append(int(name))
        else:
            raise SweetError(f"{where}: label {name!r} is not one of {task.name}'s labels "
                             f"({', '.join(task.label_names)}, or their positions 0..{task.num_labels - 1})")
    return LabelledTable(table.texts, np.asarray(mapping, dtype=np.int64)[table.labels], table.rows, table.ids)


def read_task_file(path: str | os.PathLike, task: Task, name: str | None = None) -> TableExamples:
    """One labelled file in ``task``'s layout (its text columns and ``label``), in any format :mod:`sweet.sources`
    reads (a GLUE TSV: tab-separated, header row, no quoting), with the task's label ids."""
    source = load_source(_preset_spec(str(path), task, eval_split=NO_EVAL_SPLIT))
    return TableExamples(to_task_ids(source.pool, source.label_names, task, str(path)), name=name or Path(path).name)


def _preset_data(task: Task, source, pool_name: str, dev_source=None) -> TaskData:
    """The preset's TaskData from what :func:`load_source` read: the pool, and the evaluation split from
    ``source`` (the hub) or from ``dev_source`` (the folder's dev file, read on its own); labels map onto the
    preset's own (its names, or GLUE's positions), each file's checked against them."""
    pool = TableExamples(to_task_ids(source.pool, source.label_names, task, source.files["pool"]), name=pool_name)
    # the roles keep the names the presets always had ("pool", "dev"): grid run keys hash the files' digests by role
    files = {"pool": source.files["pool"]}
    dev = None
    if dev_source is not None:
        source, evaluation = dev_source, dev_source.pool
        files["dev"] = source.files["pool"]
    else:
        evaluation = source.evaluation
        if evaluation is not None:
            files["dev"] = source.files["evaluation"]
    if evaluation is not None:
        dev = TableExamples(to_task_ids(evaluation, source.label_names, task, files["dev"]), name="validation")
    return TaskData(task, pool, dev, files, notes=list(source.notes))


def _preset_spec(data: str, task: Task, **kw) -> SourceSpec:
    return SourceSpec(data, text_columns=task.text_fields, label_column="label", id_column=ID_COLUMN, **kw)


def load_local(task: Task, data_dir: str | os.PathLike | None) -> TaskData:
    """A preset from the GLUE folder: ``FOLDER/train.tsv`` (or ``train_pool.tsv``) and the first of
    ``task.dev_files`` present, each read by :mod:`sweet.sources` with the preset's columns, labels and ids."""
    root = resolve_data_dir(data_dir)
    folder = root / task.folder
    pool_file = next((folder / f for f in ("train.tsv", "train_pool.tsv") if (folder / f).is_file()), None)
    if pool_file is None:
        raise SweetError(
            f"{task.folder}: no training file; expected {folder / 'train.tsv'} (or {folder / 'train_pool.tsv'})"
        )
    source = load_source(_preset_spec(str(pool_file), task))
    dev_file = next((folder / f for f in task.dev_files if (folder / f).is_file()), None)
    dev_source = None if dev_file is None else load_source(_preset_spec(str(dev_file), task))
    return _preset_data(task, source, "train" if pool_file.name == "train.tsv" else "train_pool", dev_source)


def load_hub(task: Task, dataset_name: str = "nyu-mll/glue") -> TaskData:
    """A preset from the Hugging Face hub ``glue`` dataset (or any dataset repo or folder with that layout), read
    by :mod:`sweet.sources` as any hub id is."""
    source = load_source(_preset_spec(dataset_name, task, data_config=task.hub_config, eval_split=task.hub_eval_split))
    return _preset_data(task, source, "train")


def load_task(
    task: str | Task, data_dir: str | os.PathLike | None = None, source: str = "local", dataset_name: str = "nyu-mll/glue"
) -> TaskData:
    task = get_task(task) if isinstance(task, str) else task
    if source == "local":
        return load_local(task, data_dir)
    if source == "hub":
        return load_hub(task, dataset_name)
    raise SweetError(f"unknown data source {source!r}; use 'local' or 'hub'")


def task_status(data_dir: str | os.PathLike | None) -> list[dict]:
    """Which files each task has in the data directory (for ``sweet tasks``)."""
    root = resolve_data_dir(data_dir)
    out = []
    for task in TASKS.values():
        folder = root / task.folder
        train = next((f for f in ("train.tsv", "train_pool.tsv") if (folder / f).is_file()), None)
        dev = next((f for f in task.dev_files if (folder / f).is_file()), None)
        out.append({"task": task.name, "folder": task.folder, "train": train, "dev": dev, "metric": task.metric_name})
    return out


# --------------------------------------------------------------------------------------------- splits


@dataclass
class Splits:
    train: Examples
    calibration: Examples
    evaluation: Examples
    evaluation_name: str  # "validation" or "held-out train"
    info: dict


def fixed_holdout_sizes(pool_size: int, has_dev: bool, calibration_size: int, heldout_eval_size: int) -> tuple[int, int]:
    calib = min(calibration_size, max(1, pool_size // 10))
    heldout = 0 if has_dev else min(heldout_eval_size, max(1, pool_size // 5))
    if calib + heldout >= pool_size:
        raise SweetError(f"training pool of {pool_size} rows is too small for a calibration and evaluation hold-out")
    return calib, heldout


def stratified_holdout(labels: np.ndarray, n_calib: int, n_heldout: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration and evaluation hold-outs drawn per class in proportion to its rows (largest remainders), by a
    fixed permutation (the same for every seed and method); returns (calibration, evaluation, rest) row indices,
    each sorted."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    picked = []
    for want in (n_calib, n_heldout):
        share = counts * want / len(labels)
        take = np.floor(share).astype(int)
        for i in np.argsort(-(share - take), kind="stable")[: want - int(take.sum())]:
            take[i] += 1
        picked.append(dict(zip(classes.tolist(), take.tolist())))
    calib, heldout, rest = [], [], []
    used = {c: 0 for c in classes.tolist()}
    for i in perm:  # walk the fixed permutation: each class fills its calibration share, then its evaluation share
        c = int(labels[i])
        k = used[c]
        (calib if k < picked[0][c] else heldout if k < picked[0][c] + picked[1][c] else rest).append(i)
        used[c] = k + 1
    return tuple(np.sort(np.asarray(part, dtype=np.int64)) for part in (calib, heldout, rest))


def make_splits(
    data: TaskData,
    n_train: int | None,
    seed: int,
    calibration_size: int = 1000,
    heldout_eval_size: int = 2000,
) -> Splits:
    """The paper's low-resource protocol; see the module docstring."""
    if n_train is not None and n_train <= 0:
        raise SweetError(f"train-sample size must be positive, got {n_train}")
    pool = data.pool
    n_calib, n_heldout = fixed_holdout_sizes(len(pool), data.dev is not None, calibration_size, heldout_eval_size)
    if data.stratify:
        calib_idx, heldout_idx, rest = stratified_holdout(np.asarray(pool.labels), n_calib, n_heldout)
    else:
        # Fixed, seed-independent permutation: calibration first, then (only without dev) the evaluation hold-out.
        perm = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
        calib_idx = np.sort(perm[:n_calib])
        heldout_idx = np.sort(perm[n_calib : n_calib + n_heldout])
        rest = np.sort(perm[n_calib + n_heldout :])
    # The per-seed training sample: depends on the seed only, so every method of a seed shares it.
    rng = np.random.default_rng(seed)
    take = len(rest) if n_train is None else min(n_train, len(rest))
    train_idx = rest[rng.permutation(len(rest))[:take]]
    if data.dev is not None:
        evaluation, eval_name = data.dev, data.dev_name
    else:
        evaluation, eval_name = pool.subset(heldout_idx, name="held-out train"), "held-out train"
    info = {
        "pool_size": len(pool),
        "n_train_requested": n_train,
        "n_train": int(take),
        "n_calibration": int(n_calib),
        "n_evaluation": len(evaluation),
        "evaluation_split": eval_name,
        "split_seed": SPLIT_SEED,
        "sample_seed": seed,
        "files": data.files,
    }
    return Splits(
        train=pool.subset(train_idx, name="train sample"),
        calibration=pool.subset(calib_idx, name="calibration"),
        evaluation=evaluation,
        evaluation_name=eval_name,
        info=info,
    )


def examples_from_inputs(inputs: Sequence, task: Task) -> Examples:
    """Check and convert a predictor's inputs: strings for single-text tasks, (text, text) pairs for pair tasks."""
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
        raise SweetError("inputs must be a list of texts (pair tasks: a list of [text, text] pairs)")
    if len(inputs) == 0:
        raise SweetError("inputs are empty: give at least one text")
    arity = len(task.text_fields)
    texts = []
    for i, item in enumerate(inputs):
        parts = (item,) if isinstance(item, str) else item
        if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence) or len(parts) != arity:
            want = "a text" if arity == 1 else f"a pair of {arity} texts ({', '.join(task.text_fields)})"
            raise SweetError(f"item {i}: {task.name} expects {want} per item, got {_describe(item)}")
        if not all(isinstance(p, str) for p in parts):
            raise SweetError(f"item {i}: texts must be strings, got {_describe(item)}")
        if any(is_blank(p) for p in parts):
            raise SweetError(f"item {i}: empty text")
        texts.append(tuple(parts))
    return Examples(texts, None, name="input")


def _describe(item) -> str:
    text = repr(item)
    return text if len(text) <= 60 else text[:57] + "..."


def read_unlabelled(lines: Sequence[str], task: Task) -> Examples:
    """Parse ``predict`` input: one example per line, pair tasks as two tab-separated texts."""
    texts = []
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\n").rstrip("\r")
        if is_blank(line):
            continue
        parts = tuple(line.split("\t"))
        if len(parts) != len(task.text_fields):
            raise SweetError(
                f"input line {lineno}: {task.name} expects {len(task.text_fields)} tab-separated text(s) "
                f"({', '.join(task.text_fields)}), found {len(parts)}"
            )
        if any(is_blank(p) for p in parts):
            raise SweetError(f"input line {lineno}: empty text in a pair ({', '.join(task.text_fields)}); give both texts")
        texts.append(parts)
    if not texts:
        raise SweetError("predict input is empty: give one example per line (pair tasks: two texts separated by a tab)")
    return Examples(texts, None, name="input")

"""A run's data, from what its config names: a GLUE preset (``task``) read from the GLUE folder or the hub, or your
own labelled data (``data``: a file, a folder, a ``save_to_disk`` folder or a hub id, read by :mod:`sweet.sources`),
optionally under a preset's columns, labels and metric.

Both give a :class:`~sweet.data.TaskData` that :func:`~sweet.data.make_splits` splits the same way, with one
difference the issue asks for: own data holds out its calibration (and, without an evaluation split, evaluation)
rows stratified by label; the presets keep their committed splits bit for bit. Own data stays Arrow-backed until
a split is drawn (:class:`TableExamples`): only the rows a run uses become Python strings.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import RunConfig, data_name
from .data import Examples, Task, TaskData, get_task, load_task
from .errors import SweetError
from .sources import LabelledTable, SourceSpec, load_source


class TableExamples(Examples):
    """Examples backed by an Arrow table: ``len``, ``labels`` (numpy) and :meth:`subset` without a Python string
    per row; ``texts`` materialises every row (for small tables only)."""

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
        rows = self.table.rows if self.table.rows is not None else np.arange(1, len(self.table) + 1)
        return [str(int(r)) for r in rows]

    def subset(self, indices: Sequence[int], name: str | None = None) -> Examples:
        part = self.table.take(np.asarray(indices, dtype=np.int64))
        rows = part.rows if part.rows is not None else np.asarray(indices, dtype=np.int64) + 1
        return Examples(part.text_tuples(), [int(x) for x in part.labels], [str(int(r)) for r in rows],
                        name=self.name if name is None else name)


def _metric(config: RunConfig, preset: Task | None, label_names: list[str]) -> str:
    metric = config.metric or (preset.metric if preset is not None else "accuracy")
    if metric != "f1":
        return metric
    if len(label_names) != 2:
        raise SweetError(f"--metric f1 is the binary F1 of one class and needs 2 classes, but the data has "
                         f"{len(label_names)}; use --metric f1_macro")
    positive = config.positive_label if config.positive_label is not None else label_names[1]
    if positive not in label_names:
        raise SweetError(f"--positive-label {positive!r} is not a class of the data; its classes are: "
                         f"{', '.join(label_names)}")
    return f"f1:{label_names.index(positive)}"


def _to_preset_ids(table: LabelledTable | None, names: list[str], preset: Task) -> LabelledTable | None:
    """Map a source's label ids (its sorted names) onto a preset's: by name, or for integer labels by value."""
    if table is None:
        return None
    mapping = []
    for name in names:
        if name in preset.label_names:
            mapping.append(preset.label_names.index(name))
        elif name.isdigit() and int(name) < preset.num_labels:
            mapping.append(int(name))
        else:
            raise SweetError(f"label {name!r} is not one of {preset.name}'s labels ({', '.join(preset.label_names)})")
    return LabelledTable(table.texts, np.asarray(mapping, dtype=np.int64)[table.labels], table.rows)


def load_run_data(config: RunConfig) -> TaskData:
    """The data a run trains and evaluates on (see the module docstring)."""
    preset = get_task(config.task) if config.task is not None else None
    if not config.own_data:
        data = load_task(preset, config.data_dir, source=config.data_source)
        if config.metric is not None:
            task = Task(preset.name, preset.folder, preset.text_fields, preset.label_names,
                        _metric(config, preset, list(preset.label_names)))
            data = TaskData(task, data.pool, data.dev, data.files, data.dev_name, data.stratify, data.notes)
        return data
    spec = SourceSpec(
        data=config.data, eval_data=config.eval_data, data_config=config.data_config, train_split=config.train_split,
        eval_split=config.eval_split,
        text_columns=tuple(config.text_columns) if config.text_columns else (preset.text_fields if preset else None),
        label_column=config.label_column or ("label" if preset else None), drop_invalid=config.drop_invalid,
    )
    source = load_source(spec)
    pool, evaluation, names = source.pool, source.evaluation, list(source.label_names)
    if preset is not None:
        pool, evaluation = _to_preset_ids(pool, names, preset), _to_preset_ids(evaluation, names, preset)
        names = list(preset.label_names)
    task = Task(preset.name if preset else data_name(config.data), "", tuple(source.text_columns), tuple(names),
                _metric(config, preset, names))
    dev = TableExamples(evaluation, name=source.evaluation_name or "evaluation") if evaluation is not None else None
    return TaskData(task, TableExamples(pool, name="pool"), dev, dict(source.files),
                    dev_name=source.evaluation_name or "validation", stratify=preset is None, notes=list(source.notes))

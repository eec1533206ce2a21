"""A run's data, from what its config names: a GLUE preset (``task``) read from the GLUE folder or the hub, or your
own labelled data (``data``: a file, a folder, a ``save_to_disk`` folder or a hub id, read by :mod:`sweet.sources`),
optionally under a preset's columns, labels and metric.

Both give a :class:`~sweet.data.TaskData` that :func:`~sweet.data.make_splits` splits the same way, with one
difference the issue asks for: own data holds out its calibration (and, without an evaluation split, evaluation)
rows stratified by label; the presets keep their committed splits bit for bit. Both stay Arrow-backed until
a split is drawn (:class:`~sweet.data.TableExamples`): only the rows a run uses become Python strings.
"""

from __future__ import annotations

import dataclasses

from .config import RunConfig, data_name
from .data import Splits, TableExamples, Task, TaskData, get_task, load_task, make_splits, to_task_ids
from .errors import SweetError
from .sources import SourceSpec, load_source


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
        pool, evaluation = (to_task_ids(pool, names, preset, source.files["pool"]),
                            to_task_ids(evaluation, names, preset, source.files.get("evaluation", "")))
        names = list(preset.label_names)
    task = Task(preset.name if preset else data_name(config.data), "", tuple(source.text_columns), tuple(names),
                _metric(config, preset, names))
    dev = TableExamples(evaluation, name=source.evaluation_name or "evaluation") if evaluation is not None else None
    return TaskData(task, TableExamples(pool, name="pool"), dev, dict(source.files),
                    dev_name=source.evaluation_name or "validation", stratify=preset is None, notes=list(source.notes))


def run_splits(cfg: RunConfig, data_dir: str | None = None) -> Splits:
    """A run's splits, the same rows as at training time (the training sample, the calibration split, the evaluation
    split), its data read again (a preset's from ``data_dir`` if given, else the run's own)."""
    data = load_run_data(dataclasses.replace(cfg, data_dir=data_dir or cfg.data_dir))
    return make_splits(data, cfg.n_train, cfg.seed, cfg.calibration_size, cfg.heldout_eval_size)

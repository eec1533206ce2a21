"""``load_source``: read a :class:`SourceSpec` into checked, label-encoded Arrow tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SweetError
from .columns import columns_note, detect_columns, quoted
from .labels import LabelCheck, check_labels, label_ids, label_names_of
from .locate import DEFAULT_EVAL_SPLITS, Source, open_source
from .part import Part
from .spec import NO_EVAL_SPLIT, LabelledTable, SourceData, SourceSpec
from .texts import check_text

#: A class with fewer training rows than this is named in a note.
SMALL_CLASS_ROWS = 10
#: More classes than this get a note (the label column may be the wrong one).
MANY_CLASSES = 100


def load_source(spec: SourceSpec) -> SourceData:
    """Read the training pool (and the evaluation split, if any) of ``spec``; see the package docstring."""
    _check_spec(spec)
    notes: list[str] = []
    source = open_source(spec.data, spec.data_config)
    pool_part = source.single or source.part(spec.train_split, "--train-split")
    text_columns, label_column = detect_columns(
        pool_part.column_names, spec.text_columns, spec.label_column, where=pool_part.where
    )
    note = columns_note(text_columns, label_column, spec.text_columns is None, spec.label_column is None)
    if note:
        notes.append(note)
    eval_part, eval_name = _evaluation_part(spec, source, label_column, notes)
    if eval_part is not None:
        detect_columns(eval_part.column_names, text_columns, label_column, where=eval_part.where)

    pool, pool_labels = _read(pool_part, text_columns, label_column, spec.drop_invalid, notes, "train", spec.id_column)
    label_names = label_names_of(pool_labels)
    pool.labels, _ = label_ids(pool_labels, label_names)
    counts = np.bincount(pool.labels, minlength=len(label_names))
    present = [name for name, count in zip(label_names, counts) if count > 0]
    if len(present) < 2 and not spec.scoring_only:
        raise SweetError(
            f"{pool_part.where}: the training data has only one class ({quoted(present)} in column '{label_column}'); "
            "a classifier needs at least 2"
        )
    if len(label_names) > MANY_CLASSES:
        notes.append(
            f"column '{label_column}' has {len(label_names)} distinct labels; if it is not the label column, "
            "pass --label-column NAME"
        )
    small = [f"'{name}' ({count})" for name, count in zip(label_names, counts) if count < SMALL_CLASS_ROWS]
    if small:
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        notes.append(f"classes with fewer than {SMALL_CLASS_ROWS} training rows: {', '.join(small[:10])}{more}")

    evaluation = None
    files = {"pool": pool_part.provenance}
    fingerprint = {"pool": pool_part.fingerprint}
    if eval_part is not None:
        evaluation, eval_labels = _read(eval_part, text_columns, label_column, spec.drop_invalid, notes, "evaluate",
                                        spec.id_column)
        evaluation.labels, unknown = label_ids(eval_labels, label_names)
        unknown += sorted({label_names[i] for i in np.unique(evaluation.labels) if i >= 0 and counts[i] == 0})
        if unknown:
            what = "label" if len(unknown) == 1 else "labels"
            verb = "does" if len(unknown) == 1 else "do"
            raise SweetError(
                f"{eval_part.where}: {what} {quoted(unknown)} {verb} not occur in the training data "
                f"({pool_part.where}, classes: {', '.join(present)})"
            )
        files["evaluation"] = eval_part.provenance
        fingerprint["evaluation"] = eval_part.fingerprint
    return SourceData(
        pool=pool,
        evaluation=evaluation,
        text_columns=text_columns,
        label_column=label_column,
        label_names=label_names,
        evaluation_name=eval_name,
        files=files,
        fingerprint=fingerprint,
        notes=notes,
    )


def _check_spec(spec: SourceSpec) -> None:
    if not isinstance(spec.data, str) or not spec.data.strip():
        raise SweetError("no data given: pass --data with a file, a folder or a Hugging Face hub dataset id")
    if not spec.train_split.strip():
        raise SweetError("--train-split is empty; give a split name such as train")
    if spec.eval_data is None and spec.eval_split == spec.train_split:
        raise SweetError(
            f"--eval-split '{spec.eval_split}' is also the training split; choose another split, "
            f"or '{NO_EVAL_SPLIT}' to hold out part of the training data"
        )


def _evaluation_part(spec: SourceSpec, source: Source, label_column: str, notes: list[str]) -> tuple[Part | None, str | None]:
    if spec.eval_split == NO_EVAL_SPLIT:
        return None, None
    if spec.eval_data is not None:
        other = open_source(spec.eval_data, spec.data_config)
        if other.single is not None:
            if spec.eval_split is not None:
                raise SweetError(f"--eval-split '{spec.eval_split}' does not apply: --eval-data {other.where} has no splits")
            return other.single, f"file:{Path(other.where).name}"
        return _pick_split(other, spec.eval_split, label_column, notes, exclude=None)
    if source.single is not None:
        if spec.eval_split is not None:
            raise SweetError(
                f"--eval-split '{spec.eval_split}' does not apply: {source.where} has no splits; "
                "pass --eval-data FILE for a separate evaluation file"
            )
        return None, None
    return _pick_split(source, spec.eval_split, label_column, notes, exclude=spec.train_split)


def _pick_split(source: Source, split: str | None, label_column: str, notes: list[str], exclude: str | None):
    if split is not None:
        return source.part(split, "--eval-split"), split
    for name in DEFAULT_EVAL_SPLITS:
        if name == exclude or name not in source.splits:
            continue
        part = source.part(name, "--eval-split")
        if name == "test":
            if not _has_labels(part, label_column):
                notes.append(f"{part.where} has no labels: not used for evaluation")
                continue
            notes.append(f"evaluating on the labelled test split {part.where} (there is no validation or dev split)")
        return part, name
    if exclude is None:
        raise SweetError(
            f"{source.where}: no validation, dev or labelled test split to evaluate on "
            f"(it has: {', '.join(source.splits) or '(none)'}); pass --eval-split NAME"
        )
    return None, None


def _has_labels(part: Part, label_column: str) -> bool:
    if label_column not in part.column_names:
        return False
    return not check_labels(part.read([label_column]), label_column, part).missing.all()


def _read(part: Part, text_columns: tuple[str, ...], label_column: str, drop: bool, notes: list[str], purpose: str,
          id_column: str | None = None):
    """The part's valid rows (texts, row numbers, ids; labels still to encode) and their label check."""
    with_ids = id_column is not None and id_column in part.column_names and id_column not in (*text_columns, label_column)
    raw = part.read([*dict.fromkeys([*text_columns, label_column, *([id_column] if with_ids else [])])])
    ids = pc.cast(raw.table.column(id_column), pa.string()) if with_ids else None
    labels = check_labels(raw, label_column, part)
    if purpose == "evaluate" and labels.missing.all():
        raise SweetError(f"{part.where}: no labels in column '{label_column}'; evaluation data needs labels")
    texts = [check_text(raw, c) for c in text_columns]
    total = len(labels.missing)
    invalid = labels.missing.copy()
    for check in texts:
        invalid |= check.invalid
    rows = np.arange(1, total + 1, dtype=np.int64)
    arrays = tuple(check.array for check in texts)
    n_invalid = int(invalid.sum())
    if n_invalid:
        if not drop:
            i = int(np.argmax(invalid))
            reason = next((c.reason(i) for c in texts if c.invalid[i]), None) or labels.reason()
            skip = "the invalid row" if n_invalid == 1 else f"the {n_invalid} invalid rows"
            raise SweetError(f"{part.where}: row {i + 1}: {reason}; fix it or pass --drop-invalid to skip {skip}")
        if n_invalid == total:
            raise SweetError(f"{part.where}: all {total} rows are invalid (--drop-invalid); nothing is left to {purpose} on")
        notes.append(_drop_note(part, texts, labels, invalid, total))
        keep = ~invalid
        mask = pa.array(keep)
        arrays = tuple(a.filter(mask) for a in arrays)
        ids = None if ids is None else ids.filter(mask)
        rows = rows[keep]
        labels = LabelCheck(labels.column, labels.kind, labels.keys.filter(mask), labels.missing[keep], labels.declared)
    return LabelledTable(texts=arrays, labels=np.empty(0, dtype=np.int64), rows=rows, ids=ids), labels


def _drop_note(part: Part, texts, labels: LabelCheck, invalid: np.ndarray, total: int) -> str:
    n = len(invalid)
    missing = np.zeros(n, dtype=bool)
    nonstring = np.zeros(n, dtype=bool)
    blank = np.zeros(n, dtype=bool)
    for check in texts:
        missing |= check.missing
        nonstring |= check.nonstring
        blank |= check.blank
    nonstring &= ~missing
    blank &= ~(missing | nonstring)
    no_label = labels.missing & ~(missing | nonstring | blank)
    reasons = [
        f"{int(m.sum())} {what}"
        for m, what in (
            (missing, "with a missing text"),
            (nonstring, "with a text that is not a string"),
            (blank, "with an empty or blank text"),
            (no_label, "with a missing label"),
        )
        if m.any()
    ]
    where = np.flatnonzero(invalid)
    shown = ", ".join(str(i + 1) for i in where[:5]) + (", ..." if len(where) > 5 else "")
    count = int(invalid.sum())
    rows = "row" if count == 1 else "rows"
    return f"dropped {count} of {total} rows of {part.where} (--drop-invalid): {', '.join(reasons)} ({rows} {shown})"

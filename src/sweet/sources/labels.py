"""Label columns: from values to class names and int64 ids, vectorised.

* **Integers** are label values, not positions: {1, 2, 5} are three classes named "1", "2", "5", with ids in
  numeric order. Floats that are whole numbers count as integers; other floats are refused (regression is not
  supported).
* **Strings** are stripped of surrounding whitespace; the classes are sorted lexicographically (by code point).
* **Booleans** are the classes "False" and "True" (ids 0 and 1).
* A ``datasets.ClassLabel`` column keeps its declared names and ids (-1, the hub's "no label", is a missing label).
* CSV and TSV hold strings only: a label column whose values all look like integers (or numbers) is read as
  integers (numbers); there, the cells NA, N/A, NaN, null and None count as missing labels.
* Missing labels (null, empty, NaN) make the row invalid. Labels of mixed types (a JSON file with integers and
  strings), lists (multi-label) and other types are refused whatever ``drop_invalid`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SweetError
from .files import json_kind
from .part import Part, Raw
from .texts import is_string_type, show, to_bool

NULL_MARKERS = ("NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "none")
INTEGER = r"^[+-]?[0-9]+$"


@dataclass
class LabelCheck:
    column: str
    kind: str  # 'integer' (int64 keys), 'string' (string keys) or 'classlabel' (int64 ids into declared)
    keys: pa.ChunkedArray  # null where the row has no label
    missing: np.ndarray
    declared: list[str] | None = None

    def names(self) -> pa.ChunkedArray:
        """The class name of each row (null where missing)."""
        if self.kind == "classlabel":
            return pa.array(self.declared, type=pa.large_string()).take(self.keys)
        return pc.cast(self.keys, pa.large_string())

    def reason(self) -> str:
        return f"no label in column '{self.column}'"


def _nulled(array, mask: np.ndarray):
    return pc.if_else(pa.array(mask), pa.scalar(None, type=array.type), array) if mask.any() else array


def _chunked(array) -> pa.ChunkedArray:
    return array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])


def _from_floats(values, missing: np.ndarray, part: Part, column: str) -> LabelCheck:
    values = pc.cast(values, pa.float64())
    missing = missing | to_bool(pc.fill_null(pc.is_nan(values), True))
    kept = _nulled(values, missing)
    whole = pc.and_(pc.is_finite(kept), pc.equal(kept, pc.floor(kept)))
    bad = to_bool(pc.invert(pc.fill_null(whole, True)))
    if bad.any():
        i = int(np.argmax(bad))
        raise SweetError(
            f"{part.where}: row {i + 1}: label {show(kept[i].as_py())} in column '{column}' is not a whole number; "
            "sweet trains classifiers on class labels (regression is not supported)"
        )
    return LabelCheck(column, "integer", _chunked(pc.cast(kept, pa.int64())), missing)


def _from_csv_strings(trimmed, missing: np.ndarray, part: Part, column: str) -> LabelCheck:
    """CSV/TSV labels: integers (or numbers) when every present value looks like one, else strings."""
    marker = to_bool(pc.is_in(trimmed, value_set=pa.array(NULL_MARKERS, type=trimmed.type)))
    candidate = ~missing & ~marker
    if candidate.any():
        unsigned = pc.replace_substring_regex(trimmed, pattern=r"^\+", replacement="")  # Arrow parses no '+'
        present = unsigned.filter(pa.array(candidate))
        kept = _nulled(unsigned, ~candidate)
        if pc.all(pc.match_substring_regex(present, INTEGER)).as_py():
            try:
                return LabelCheck(column, "integer", _chunked(pc.cast(kept, pa.int64())), ~candidate)
            except pa.ArrowInvalid:  # beyond int64: keep them as strings
                pass
        else:
            try:
                floats = pc.cast(kept, pa.float64())
            except pa.ArrowInvalid:
                floats = None
            if floats is not None:
                return _from_floats(floats, ~candidate, part, column)
    return LabelCheck(column, "string", _chunked(_nulled(trimmed, missing)), missing)


def check_labels(raw: Raw, column: str, part: Part) -> LabelCheck:
    where = part.where
    if column in raw.mixed:
        first: dict[str, int] = {}
        for row, value in enumerate(raw.mixed[column], start=1):
            if value is not None:
                first.setdefault(json_kind(value), row)
        kinds = ", ".join(f"{kind} (row {row})" for kind, row in first.items())
        raise SweetError(
            f"{where}: the labels in column '{column}' have mixed types: {kinds}; give every label the same type"
        )
    array = raw.table.column(column)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    missing = to_bool(pc.is_null(array))
    declared = part.class_labels.get(column)
    t = array.type
    if declared is not None and pa.types.is_integer(t):
        ids = pc.cast(array, pa.int64())
        out_of_range = pc.or_(pc.less(ids, 0), pc.greater_equal(ids, len(declared)))
        missing = missing | to_bool(pc.fill_null(out_of_range, True))
        return LabelCheck(column, "classlabel", _chunked(_nulled(ids, missing)), missing, declared)
    if pa.types.is_boolean(t):
        keys = pc.if_else(array, pa.scalar("True", pa.large_string()), pa.scalar("False", pa.large_string()))
        return LabelCheck(column, "string", _chunked(keys), missing)
    if pa.types.is_integer(t):
        return LabelCheck(column, "integer", _chunked(pc.cast(array, pa.int64())), missing)
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return _from_floats(array, missing, part, column)
    if is_string_type(t):
        trimmed = pc.utf8_trim_whitespace(array.cast(pa.large_string()))
        missing = missing | to_bool(pc.fill_null(pc.equal(pc.utf8_length(trimmed), 0), True))
        if part.untyped:
            return _from_csv_strings(trimmed, missing, part, column)
        return LabelCheck(column, "string", _chunked(_nulled(trimmed, missing)), missing)
    if pa.types.is_null(t):
        return LabelCheck(column, "string", _chunked(pa.nulls(len(array), pa.large_string())), missing)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        held = "lists (several labels per row)"
    elif pa.types.is_struct(t):
        held = "objects"
    else:
        held = f"values of type {t}"
    raise SweetError(
        f"{where}: column '{column}' holds {held}; sweet trains single-label classifiers: each label must be one "
        "string, integer or boolean"
    )


def label_names_of(labels: LabelCheck) -> list[str]:
    """The class names of a training pool, in id order."""
    if labels.kind == "classlabel":
        return list(labels.declared)
    present = labels.keys.drop_null()
    if labels.kind == "integer":
        return [str(v) for v in np.unique(present.to_numpy())]
    return sorted(pc.unique(present).to_pylist())


def label_ids(labels: LabelCheck, label_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each row's id into ``label_names`` (-1 where missing), and the present names not among ``label_names``."""
    names = labels.names()
    index = pc.index_in(names, value_set=pa.array(label_names, type=names.type))
    ids = index.to_numpy(zero_copy_only=False)
    absent = to_bool(pc.and_(pc.is_valid(names), pc.is_null(index)))
    unknown = sorted(pc.unique(names.filter(pa.array(absent))).to_pylist()) if absent.any() else []
    return np.where(np.isnan(ids), -1, ids).astype(np.int64) if ids.dtype.kind == "f" else ids.astype(np.int64), unknown

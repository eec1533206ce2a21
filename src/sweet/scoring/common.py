"""What the scoring readers, writers and loop share: the formats, the prediction columns and the checks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import is_blank
from ..errors import SweetError, one_line

#: The table formats :func:`score_file` reads and writes (by extension).
SCORABLE = (".csv", ".tsv", ".jsonl", ".parquet")
#: The prediction columns, in the order they are added (``score`` only with a policy other than confidence).
PREDICTION_COLUMNS = ("label", "exit_layer", "confidence", "score")
#: The prefix every prediction column gets when the input already has one of their names.
CLASH_PREFIX = "sweet_"

#: pyarrow's CSV read block (its default): one row must fit in one. The streaming reader parses a bounded number of
#: blocks ahead of the rows being scored (about 40 measured with pyarrow 26), whatever the file's size.
CSV_BLOCK_BYTES = 1 << 20
_MAX_LISTED = 20


def is_table_file(path: str | os.PathLike) -> bool:
    """True when ``path`` names a file :func:`score_file` reads (by its extension: one of :data:`SCORABLE`)."""
    return Path(path).suffix.lower() in SCORABLE


def _format_of(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        raise SweetError(f"{path}: a .json array cannot be streamed; use JSON Lines (.jsonl, one object per line), "
                         "e.g. jq -c '.[]' file.json > file.jsonl" if role == "input" else
                         f"{path}: write JSON Lines (.jsonl, one object per line) instead of a .json array")
    if suffix not in SCORABLE:
        found = f"'{path.suffix}'" if path.suffix else "(no extension)"
        raise SweetError(f"{path}: unsupported {role} file type {found}; use one of {', '.join(SCORABLE)}")
    return suffix.lstrip(".")


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _check_columns(where: str, columns: list[str], fields: list[str]) -> None:
    seen: set[str] = set()
    for c in columns:
        if c in seen:
            raise SweetError(f"{where}: column {c!r} appears twice in the header; give every column its own name")
        seen.add(c)
    missing = [f for f in fields if f not in seen]
    if missing:
        raise SweetError(one_line(
            f"{where}: no column {_listed(missing)}; the run reads its text from {_listed(fields)}, the file has "
            f"{_listed(columns) if columns else 'no columns'} (rename the text column to {fields[0]!r})"
            if len(fields) == 1 else
            f"{where}: no column {_listed(missing)}; the run reads its text pairs from {_listed(fields)}, the file "
            f"has {_listed(columns) if columns else 'no columns'}"))


def _prediction_names(wanted: list[str], columns: list[str], where: str) -> list[str]:
    """The clash rule: the plain names, or every one with :data:`CLASH_PREFIX` when the input has one of them."""
    present = set(columns)
    if not any(n in present for n in wanted):
        return wanted
    prefixed = [CLASH_PREFIX + n for n in wanted]
    taken = [n for n in prefixed if n in present]
    if taken:
        raise SweetError(one_line(
            f"{where}: has columns named like the predictions, both plain and with the prefix {CLASH_PREFIX!r} "
            f"({_listed([n for n in wanted if n in present] + taken)}); rename one of them"))
    return prefixed


def _texts(where: str, row_name, fields: list[str], values: list[list[Any]]) -> list:
    """The batch's texts (pairs as tuples), refusing a missing, non-text or blank value by row and column;
    ``row_name(i)`` names the batch's row ``i`` in messages."""
    for field, column in zip(fields, values):
        for i, v in enumerate(column):
            if v is None or (isinstance(v, str) and is_blank(v)):
                raise SweetError(f"{where}: {row_name(i)}: column {field!r} is empty; every row needs a text to "
                                 "classify (drop or fill that row)")
            if not isinstance(v, str):
                raise SweetError(f"{where}: {row_name(i)}: column {field!r} holds {_describe(v)}, not text")
    return list(values[0]) if len(values) == 1 else list(zip(*values))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text if len(text) <= 40 else text[:37] + '...'})"


# ------------------------------------------------------------------------------------------------ batches

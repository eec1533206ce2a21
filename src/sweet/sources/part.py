"""One split of raw data (a file, or a split of a ``datasets`` dataset) before its rows are checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa


@dataclass
class Raw:
    """Columns read from a part. ``mixed`` holds, for a JSON column whose values have several types, the Python
    values (in ``table`` that column keeps the strings only, the other values null)."""

    table: pa.Table
    mixed: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class Part:
    name: str  # split name: 'train', 'validation', ... ('file' for a single file)
    where: str  # how messages name it: the file's path, DIR/split (save_to_disk) or hubid:config/split
    provenance: str  # SourceData.files value
    fingerprint: str  # sha256 of the file, or the datasets fingerprint
    column_names: list[str]
    reader: Callable[[list[str]], Raw]
    class_labels: dict[str, list[str]] = field(default_factory=dict)  # column -> names of its datasets.ClassLabel
    untyped: bool = False  # CSV/TSV: every value was read as a string (numbers are told apart in the labels)

    def read(self, columns: list[str]) -> Raw:
        return self.reader(list(columns))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (what a library says can span lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

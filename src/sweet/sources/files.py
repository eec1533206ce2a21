"""Reading one data file: CSV and TSV with ``pyarrow.csv``, JSON Lines with ``pyarrow.json`` (JSON arrays, and JSON
Lines whose values change type, with the standard ``json`` module), Parquet with ``pyarrow.parquet``.

* CSV: comma-separated, a header row, ``"`` quotes (a quoted text may span lines), every value read as a string.
* TSV: tab-separated, a header row, **no quoting** (GLUE-like TSVs contain quote characters), every value a string.
* JSON: ``.json`` or ``.jsonl``, either a JSON array of objects or one object per line (decided by the first
  character, not by the extension).
* Parquet: typed columns; a ``datasets.ClassLabel`` recorded in the file's metadata (``Dataset.to_parquet``)
  gives the label names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from ..errors import SweetError
from ..io import decode_utf8, sha256_file
from .part import Part, Raw, first_line
from .spec import SUPPORTED_EXTENSIONS


def utf8_error(path: Path, where: str) -> SweetError | None:
    """The one-line error for the first byte of ``path`` that is not UTF-8 (None when it all is)."""
    try:
        decode_utf8(path.read_bytes(), where)
    except SweetError as exc:
        return exc
    return None


def supported_list() -> str:
    return ", ".join(SUPPORTED_EXTENSIONS)


def file_part(path: Path, name: str) -> Part:
    """A part for one file (its type from its extension); the file is hashed, its columns are read lazily."""
    where = str(path)
    if not path.is_file():
        raise SweetError(f"{where}: file not found")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        found = f"'{path.suffix}'" if path.suffix else "(no extension)"
        raise SweetError(
            f"{where}: unsupported file type {found}; use one of {supported_list()}, a folder of split files "
            "or a folder written by save_to_disk"
        )
    if path.stat().st_size == 0:
        raise SweetError(f"{where}: file is empty")
    fingerprint = sha256_file(path)
    if suffix in (".csv", ".tsv"):
        return _csv_part(path, name, where, fingerprint, tsv=suffix == ".tsv")
    if suffix == ".parquet":
        return _parquet_part(path, name, where, fingerprint)
    return _json_part(path, name, where, fingerprint)


# ------------------------------------------------------------------------------------------------ CSV / TSV


def _parse_options(tsv: bool, handler=None) -> pa_csv.ParseOptions:
    if tsv:
        return pa_csv.ParseOptions(
            delimiter="\t", quote_char=False, newlines_in_values=False, invalid_row_handler=handler
        )
    return pa_csv.ParseOptions(
        delimiter=",", quote_char='"', double_quote=True, newlines_in_values=True, invalid_row_handler=handler
    )


def _first_bad_row(path: Path, tsv: bool, columns: list[str]) -> pa_csv.InvalidRow | None:
    """Single-threaded re-read: only then does pyarrow give the line number of a malformed row."""
    found: list = []

    def handler(row):
        found.append(row)
        return "error"

    try:
        pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False),
            parse_options=_parse_options(tsv, handler),
            convert_options=pa_csv.ConvertOptions(
                include_columns=columns, column_types={c: pa.large_string() for c in columns}
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    return found[0] if found else None


def _unreadable(path: Path, where: str, tsv: bool, exc: BaseException) -> SweetError:
    return utf8_error(path, where) or SweetError(f"{where}: not a readable {'TSV' if tsv else 'CSV'} file ({first_line(exc)})")


def _csv_part(path: Path, name: str, where: str, fingerprint: str, tsv: bool) -> Part:
    try:
        with pa_csv.open_csv(path, parse_options=_parse_options(tsv, lambda row: "skip")) as reader:
            names = list(reader.schema.names)
    except UnicodeDecodeError as exc:  # a header that is not UTF-8 (pyarrow decodes the column names)
        raise _unreadable(path, where, tsv, exc) from None
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise SweetError(f"{where}: file is empty") from None
        raise _unreadable(path, where, tsv, exc) from None
    fields = "tab-separated fields" if tsv else "comma-separated fields"

    def read(columns: list[str]) -> Raw:
        bad: list = []

        def handler(row):
            bad.append(row)
            return "skip"

        convert = pa_csv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.large_string() for c in columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        try:
            table = pa_csv.read_csv(path, parse_options=_parse_options(tsv, handler), convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise _unreadable(path, where, tsv, exc) from None
        if bad:
            row = _first_bad_row(path, tsv, columns) or bad[0]
            line = f"{where}:{row.number}" if row.number else where
            raise SweetError(f"{line}: expected {row.expected_columns} {fields}, found {row.actual_columns}")
        if table.num_rows == 0:
            raise SweetError(f"{where}: no rows after the header")
        return Raw(table)

    return Part(name, where, where, fingerprint, names, read, untyped=True)


# ------------------------------------------------------------------------------------------------ Parquet


def _parquet_part(path: Path, name: str, where: str, fingerprint: str) -> Part:
    from .datasets_io import class_labels_of_schema

    try:
        schema = pq.read_schema(path)
        num_rows = pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError) as exc:
        raise SweetError(f"{where}: not a readable Parquet file ({first_line(exc)})") from None
    if num_rows == 0:
        raise SweetError(f"{where}: no rows")

    def read(columns: list[str]) -> Raw:
        try:
            return Raw(pq.read_table(path, columns=columns))
        except (pa.ArrowException, OSError) as exc:
            raise SweetError(f"{where}: not a readable Parquet file ({first_line(exc)})") from None

    return Part(name, where, where, fingerprint, list(schema.names), read, class_labels_of_schema(schema))


# ------------------------------------------------------------------------------------------------ JSON


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _json_part(path: Path, name: str, where: str, fingerprint: str) -> Part:
    with open(path, "rb") as handle:
        head = handle.read(1 << 16).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise SweetError(f"{where}: file is empty")
    mixed: dict[str, list] = {}
    if head[:1] == b"[":
        table, mixed = _from_records(_json_array(path, where), where)
    else:
        try:
            table = _json_lines_arrow(path)
        except pa.ArrowInvalid:
            table, mixed = _from_records(_json_lines_python(path, where), where)
    if table.num_rows == 0:
        raise SweetError(f"{where}: no rows")
    if table.num_rows == 1 and all(pa.types.is_list(f.type) or pa.types.is_large_list(f.type) for f in table.schema):
        raise SweetError(
            f"{where}: holds one JSON object whose fields are lists (columns), not one object per row; "
            "give a JSON array of objects or JSON Lines (one object per line)"
        )

    def read(columns: list[str]) -> Raw:
        return Raw(table.select(columns), {c: mixed[c] for c in columns if c in mixed})

    return Part(name, where, where, fingerprint, list(table.column_names), read)


def _json_lines_arrow(path: Path) -> pa.Table:
    table = pa_json.read_json(path)
    # pyarrow.json reads ISO dates in strings as timestamps: read those columns again as the strings they are.
    dated = [f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    if dated:
        schema = pa.schema([(c, pa.large_string()) for c in dated])
        options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
        table = pa_json.read_json(path, parse_options=options)
    return table


def _decode(path: Path, where: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise utf8_error(path, where) from None


def _json_array(path: Path, where: str) -> list:
    try:
        return json.loads(_decode(path, where))
    except json.JSONDecodeError as exc:
        raise SweetError(f"{where}: not valid JSON ({exc})") from None


def _json_lines_python(path: Path, where: str) -> list:
    text = _decode(path, where)
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            try:  # a single (pretty-printed) object rather than one object per line
                whole = json.loads(text)
            except json.JSONDecodeError:
                raise SweetError(f"{where}:{lineno}: not valid JSON ({exc})") from None
            raise SweetError(
                f"{where}: holds one JSON {json_kind(whole)}, not rows; give a JSON array of objects or "
                "JSON Lines (one object per line)"
            ) from None
    return records


def _from_records(records: Any, where: str) -> tuple[pa.Table, dict[str, list]]:
    """Columns from JSON objects; a column whose values have several types keeps its strings (others null) and
    its Python values in ``mixed``."""
    if not isinstance(records, list):
        raise SweetError(
            f"{where}: holds one JSON {json_kind(records)}, not rows; give a JSON array of objects or "
            "JSON Lines (one object per line)"
        )
    names: dict[str, None] = {}
    for row, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise SweetError(f"{where}: row {row} is a JSON {json_kind(record)}, not an object with named fields")
        names.update(dict.fromkeys(record))
    arrays, mixed = {}, {}
    for column in names:
        values = [record.get(column) for record in records]
        kinds = {json_kind(v) for v in values if v is not None}
        if kinds == {"integer", "number"}:
            kinds = {"number"}
        array = None
        if len(kinds) <= 1:
            try:
                array = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                array = None
        if array is None:
            mixed[column] = values
            array = pa.array([v if isinstance(v, str) else None for v in values], type=pa.large_string())
        arrays[column] = array
    if records and not arrays:
        raise SweetError(f"{where}: the rows have no fields")
    return pa.table(arrays), mixed


def nonstring_mask(values: list[Any]) -> np.ndarray:
    """Rows (0-based) whose Python value is there but not a string."""
    return np.fromiter((v is not None and not isinstance(v, str) for v in values), dtype=bool, count=len(values))

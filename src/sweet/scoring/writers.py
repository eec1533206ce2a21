"""Writing scored batches as they come: CSV and Parquet through pyarrow's writers, TSV and JSON Lines as text; to a
temporary file renamed at the end."""

from __future__ import annotations

import base64
import json
import math
import os
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..errors import SweetError


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _csv_ready(table: pa.Table) -> pa.Table:
    """Columns the CSV writer cannot render (lists, structs, maps, binary) as JSON text; dictionaries decoded."""
    for i, field in enumerate(table.schema):
        typ = field.type
        if pa.types.is_dictionary(typ):
            table = table.set_column(i, pa.field(field.name, typ.value_type), table.column(i).cast(typ.value_type))
            typ = typ.value_type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_integer(typ)
                or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_null(typ)
                or pa.types.is_temporal(typ) or pa.types.is_decimal(typ)):
            values = [None if v is None else _json_text(v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, pa.field(field.name, pa.string()), pa.array(values, type=pa.string()))
    return table


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (datetime, date, dtime)):
        return obj.isoformat()
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (bytes, bytearray)):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:

            return base64.b64encode(obj).decode("ascii")
    if hasattr(obj, "total_seconds"):  # timedelta
        return obj.total_seconds()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


class _ArrowSink:
    """Batches written as Arrow tables through a pyarrow writer opened on the first batch; later batches are cast to
    its schema. Subclasses say how the writer opens and how a table is prepared for it."""

    def __init__(self, tmp: str, where: str, columns: list[str]):
        self.tmp, self.where = tmp, where
        self.writer = None

    def prepare(self, table: pa.Table) -> pa.Table:
        return table

    def open(self, schema: pa.Schema):
        raise NotImplementedError

    def write(self, batch, extra: dict, types: dict) -> None:
        table = self.prepare(batch.to_table(extra, types))
        if self.writer is None:
            self.schema = table.schema
            self.writer = self.open(table.schema)
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    abort = close


class _CsvSink(_ArrowSink):
    """CSV through pyarrow's streaming writer (strings quoted, RFC 4180)."""

    def prepare(self, table: pa.Table) -> pa.Table:
        return _csv_ready(table)

    def open(self, schema: pa.Schema):
        return pa_csv.CSVWriter(self.tmp, schema, write_options=pa_csv.WriteOptions(include_header=True, delimiter=","))


class _ParquetSink(_ArrowSink):
    def open(self, schema: pa.Schema):
        return pq.ParquetWriter(self.tmp, schema)


class _TextSink:
    """Rows written line by line: JSON Lines, or TSV (no quoting, so a tab or line break in a value is refused)."""

    def __init__(self, tmp: str, where: str, columns: list[str], tsv: bool):
        self.where, self.columns, self.tsv = where, columns, tsv
        self.handle = open(tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed by close/abort)
        self.rows = 0
        if tsv:
            for c in columns:
                self._check_cell(c, "the header", c)
            self.handle.write("\t".join(columns) + "\n")

    def _check_cell(self, text: str, row: str, column: str) -> str:
        if "\t" in text or "\n" in text or "\r" in text:
            raise SweetError(f"{self.where}: {row}, column {column!r} holds a tab or a line break, which a TSV "
                             "(no quoting) cannot hold; write .csv or .jsonl output instead")
        return text

    def _cell(self, value: Any, row: int, column: str) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return self._check_cell(value, f"row {row}", column)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)
        if isinstance(value, (datetime, date, dtime)):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        return self._check_cell(_json_text(value), f"row {row}", column)

    def write(self, batch, extra: dict, types: dict) -> None:
        records = batch.to_records(extra)
        lines = []
        for record in records:
            self.rows += 1
            if self.tsv:
                lines.append("\t".join(self._cell(record.get(c), self.rows, c) for c in self.columns))
            else:
                lines.append(_json_text({k: _finite(v) for k, v in record.items()}))
        self.handle.write("\n".join(lines) + "\n")

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.flush()
            self.handle.close()

    abort = close


_SINKS = {
    "csv": _CsvSink,
    "parquet": _ParquetSink,
    "tsv": lambda tmp, where, columns: _TextSink(tmp, where, columns, tsv=True),
    "jsonl": lambda tmp, where, columns: _TextSink(tmp, where, columns, tsv=False),
}

"""Reading a table file in batches of rows: CSV/TSV (pyarrow's streaming reader), Parquet (row batches), JSON Lines
(checked in a first pass, then read in chunks)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..errors import SweetError, one_line
from ..sources.files import json_kind
from ..sources.part import first_line
from .common import CSV_BLOCK_BYTES, _check_columns, _texts


class _TableBatch:
    """Rows read as an Arrow table (CSV, TSV, Parquet)."""

    def __init__(self, table: pa.Table, first_row: int, where: str):
        self.table, self.first_row, self.where = table, first_row, where
        self.num_rows = table.num_rows

    def texts(self, fields: list[str]) -> list:
        return _texts(self.where, lambda i: f"row {self.first_row + i}", fields,
                      [self.table.column(f).to_pylist() for f in fields])

    def to_table(self, extra: dict, types: dict) -> pa.Table:
        table = self.table
        for name, values in extra.items():
            table = table.append_column(pa.field(name, types[name]), pa.array(values, type=types[name]))
        return table

    def to_records(self, extra: dict) -> list[dict]:
        records = self.table.to_pylist()
        for name, values in extra.items():
            for record, v in zip(records, values):
                record[name] = v
        return records


class _RecordBatch:
    """Rows read as JSON objects (JSON Lines), with the file's column types from the first pass."""

    def __init__(self, records: list[dict], lines: list[int], first_row: int, where: str, schema: _JsonSchema):
        self.records, self.lines, self.first_row, self.where, self.schema = records, lines, first_row, where, schema
        self.num_rows = len(records)

    def texts(self, fields: list[str]) -> list:
        # name the line too: blank lines make rows and lines differ
        return _texts(self.where, lambda i: f"row {self.first_row + i} (line {self.lines[i]})", fields,
                      [[r.get(f) for r in self.records] for f in fields])

    def to_table(self, extra: dict, types: dict) -> pa.Table:
        arrays, fields = [], []
        for name in self.schema.columns:
            typ, as_json = self.schema.types[name]
            values = [r.get(name) for r in self.records]
            if as_json:
                values = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
            arrays.append(pa.array(values, type=typ))
            fields.append(pa.field(name, typ))
        for name, values in extra.items():
            arrays.append(pa.array(values, type=types[name]))
            fields.append(pa.field(name, types[name]))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def to_records(self, extra: dict) -> list[dict]:
        out = []
        for i, record in enumerate(self.records):
            record = dict(record)
            for name, values in extra.items():
                record[name] = values[i]
            out.append(record)
        return out


def _rebatch(batches: Iterator[pa.RecordBatch], n: int) -> Iterator[pa.Table]:
    """Tables of exactly ``n`` rows (the last one fewer) from record batches of any size (zero-copy slices)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for b in batches:
        while b.num_rows:
            take = min(n - count, b.num_rows)
            pending.append(b.slice(0, take))
            b = b.slice(take)
            count += take
            if count == n:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


# ------------------------------------------------------------------------------------------------ readers


def _open_reader(path: Path, fields: list[str]):
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise SweetError(f"{path}: file is empty")
    if suffix in (".csv", ".tsv"):
        return _CsvReader(path, fields, tsv=suffix == ".tsv")
    if suffix == ".parquet":
        return _ParquetReader(path, fields)
    return _JsonlReader(path, fields)


def _csv_parse_options(tsv: bool) -> pa_csv.ParseOptions:
    if tsv:
        return pa_csv.ParseOptions(delimiter="\t", quote_char=False, newlines_in_values=False)
    return pa_csv.ParseOptions(delimiter=",", quote_char='"', double_quote=True, newlines_in_values=True)


def _utf8_error(path: Path, where: str) -> SweetError | None:
    """The one-line error for the first byte of ``path`` that is not UTF-8 (None when all are), read block by
    block (a large file is never read whole)."""
    offset, line, carry = 0, 1, b""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            data, carry = carry + block, b""
            try:
                data.decode("utf-8")
                valid = len(data)
            except UnicodeDecodeError as exc:
                if exc.reason == "unexpected end of data" and exc.end == len(data):
                    carry, valid = data[exc.start:], exc.start  # a character cut by the block's end
                else:
                    line += data[: exc.start].count(b"\n")
                    return SweetError(f"{where}:{line}: not valid UTF-8 (byte offset {offset + exc.start}, byte "
                                      f"0x{data[exc.start]:02x}); re-encode the file as UTF-8")
            line += data[:valid].count(b"\n")
            offset += valid
    if carry:
        return SweetError(f"{where}:{line}: not valid UTF-8 (the file ends inside a character, byte offset "
                          f"{offset}); re-encode the file as UTF-8")
    return None


class _CsvReader:
    def __init__(self, path: Path, fields: list[str], tsv: bool):
        self.path, self.tsv, self.where = path, tsv, str(path)
        self.kind = "TSV" if tsv else "CSV"
        self.empty_message = "no rows after the header"
        self.total_rows = None
        try:
            with pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                 parse_options=_csv_parse_options(tsv)) as reader:
                self.columns = list(reader.schema.names)
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                raise SweetError(f"{path}: file is empty") from None
            raise self._unreadable(exc) from None
        _check_columns(self.where, self.columns, fields)

    def _unreadable(self, exc: BaseException) -> SweetError:
        if "UTF8" in str(exc) or isinstance(exc, UnicodeDecodeError):
            found = _utf8_error(self.path, self.where)
            if found is not None:
                return found
        # pyarrow's serial reader (one CPU, or OMP_NUM_THREADS=1) names the row ("Row #3: Expected ..."), its
        # threaded one does not: the same message on every machine
        message = _ROW_PREFIX.sub("", first_line(exc).removeprefix("CSV parse error: "))
        if "straddling object" in message:
            size = f"{CSV_BLOCK_BYTES / (1 << 20):g} MiB"
            cause = "a text longer than that"
            if not self.tsv:
                cause = "a quote that is never closed, or " + cause
            return SweetError(f"{self.where}: a row runs over more than {size} ({cause})")
        if message.startswith("Expected ") and " columns, got " in message:
            expected, _, rest = message[len("Expected "):].partition(" columns, got ")
            got, _, row = rest.partition(": ")
            fields = "tab-separated fields" if self.tsv else "comma-separated fields"
            shown = row if len(row) <= 60 else row[:57] + "..."
            return SweetError(one_line(f"{self.where}: a row has {got} {fields}, the header {expected}: {shown!r}"))
        return SweetError(one_line(f"{self.where}: not a readable {self.kind} file ({message})"))

    def batches(self, batch_rows: int) -> Iterator[_TableBatch]:
        convert = pa_csv.ConvertOptions(column_types={c: pa.string() for c in self.columns},
                                        strings_can_be_null=False, quoted_strings_can_be_null=False)
        first = 1
        try:
            with pa_csv.open_csv(self.path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                 parse_options=_csv_parse_options(self.tsv), convert_options=convert) as reader:
                for table in _rebatch(iter(reader), batch_rows):
                    yield _TableBatch(table, first, self.where)
                    first += table.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise self._unreadable(exc) from None


_ROW_PREFIX = re.compile(r"^Row #\d+: ")


class _ParquetReader:
    def __init__(self, path: Path, fields: list[str]):
        self.path, self.where = path, str(path)
        self.empty_message = "no rows"
        try:
            self.file = pq.ParquetFile(path)
            schema = self.file.schema_arrow
        except (pa.ArrowException, OSError) as exc:
            raise SweetError(one_line(f"{path}: not a readable Parquet file ({first_line(exc)})")) from None
        self.columns = list(schema.names)
        self.total_rows = self.file.metadata.num_rows
        _check_columns(self.where, self.columns, fields)
        for f in fields:
            typ = schema.field(f).type
            base = typ.value_type if pa.types.is_dictionary(typ) else typ
            if not (pa.types.is_string(base) or pa.types.is_large_string(base) or pa.types.is_null(base)
                    or getattr(pa.types, "is_string_view", lambda t: False)(base)):
                raise SweetError(f"{path}: column {f!r} holds {typ} values, not text")

    def batches(self, batch_rows: int) -> Iterator[_TableBatch]:
        first = 1
        try:
            for table in _rebatch(self.file.iter_batches(batch_size=batch_rows), batch_rows):
                yield _TableBatch(table, first, self.where)
                first += table.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise SweetError(one_line(f"{self.where}: not a readable Parquet file ({first_line(exc)})")) from None
        finally:
            self.file.close()


class _JsonSchema:
    """Columns of a JSON Lines file (the union of its keys, in order of first appearance) and an Arrow type for
    each: strings, integers, numbers (integers and numbers together: float64) or booleans keep their type; a
    column with values of several kinds, lists or objects is written as text (non-strings as JSON)."""

    def __init__(self):
        self.kinds: dict[str, set[str]] = {}

    def add(self, record: dict) -> None:
        for key, value in record.items():
            kinds = self.kinds.setdefault(key, set())
            if value is not None:
                kind = json_kind(value)
                if kind == "integer" and not -(1 << 63) <= value < (1 << 63):
                    kind = "big integer"
                kinds.add(kind)

    @property
    def columns(self) -> list[str]:
        return list(self.kinds)

    def finish(self) -> None:
        self.types: dict[str, tuple[pa.DataType, bool]] = {}
        for key, kinds in self.kinds.items():
            if kinds == {"integer"}:
                self.types[key] = (pa.int64(), False)
            elif kinds and kinds <= {"integer", "number"}:
                self.types[key] = (pa.float64(), False)
            elif kinds == {"boolean"}:
                self.types[key] = (pa.bool_(), False)
            else:
                self.types[key] = (pa.string(), not kinds <= {"string"})


class _JsonlReader:
    def __init__(self, path: Path, fields: list[str]):
        self.path, self.where = path, str(path)
        self.empty_message = "no rows (every line is blank)"
        self.schema = _JsonSchema()
        rows = 0
        for _, record in self._records():
            self.schema.add(record)
            rows += 1
        self.total_rows = rows
        self.schema.finish()
        self.columns = self.schema.columns
        if rows:
            _check_columns(self.where, self.columns, fields)

    def _records(self) -> Iterator[tuple[int, dict]]:
        with open(self.path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise SweetError(f"{self.where}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                     f"column {exc.start + 1}); re-encode the file as UTF-8") from None
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    if text.lstrip().startswith("["):
                        raise SweetError(f"{self.where}: holds a JSON array, which cannot be streamed; write one "
                                         "object per line (e.g. jq -c '.[]' file.json > file.jsonl)") from None
                    raise SweetError(one_line(f"{self.where}:{lineno}: not valid JSON ({exc})")) from None
                if not isinstance(record, dict):
                    if isinstance(record, list):
                        raise SweetError(f"{self.where}: line {lineno} holds a JSON array, which cannot be streamed; "
                                         "write one object per line (e.g. jq -c '.[]' file.json > file.jsonl)")
                    raise SweetError(f"{self.where}: line {lineno} is a JSON {json_kind(record)}, not an object "
                                     "with named fields")
                yield lineno, record

    def batches(self, batch_rows: int) -> Iterator[_RecordBatch]:
        records: list[dict] = []
        lines: list[int] = []
        first = 1
        for lineno, record in self._records():
            records.append(record)
            lines.append(lineno)
            if len(records) == batch_rows:
                yield _RecordBatch(records, lines, first, self.where, self.schema)
                first += len(records)
                records, lines = [], []
        if records:
            yield _RecordBatch(records, lines, first, self.where, self.schema)


# ------------------------------------------------------------------------------------------------ writers

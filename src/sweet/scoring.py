"""Score a table file with a trained run: ``sweet predict RUN --input new.csv --output scored.csv``.

:func:`score_file` reads the input in batches of rows, predicts each batch and writes it at once, so a file of any
size is never held in memory: at most one batch of rows as Python values, and for CSV/TSV input the few tens of
1 MiB read blocks pyarrow parses ahead (:data:`CSV_BLOCK_BYTES`). The
output holds every input row, in input order, with every input column, and the prediction columns added after
them: ``label`` (the label name), ``exit_layer`` (int), ``confidence`` (float) and, with an exit policy other
than ``confidence``, that policy's ``score`` (float).

**Name clash rule**: when the input already has a column named like one of the prediction columns (a labelled
file with its gold ``label``, say), *all* prediction columns are written with the prefix ``sweet_``
(``sweet_label``, ``sweet_exit_layer``, ``sweet_confidence``[, ``sweet_score``]), so they stay together and the
input's columns are never overwritten. An input that also has one of those prefixed names is refused.

Formats (by extension, input and output chosen independently):

* ``.csv``: comma-separated, a header row, ``"`` quotes (a quoted text may span lines). Every input value is read
  as a string, so ids keep their leading zeros; the output quotes every string (RFC 4180).
* ``.tsv``: tab-separated, a header row, **no quoting** (as in GLUE's files, whose texts contain quote
  characters). A value holding a tab or a line break cannot be written to a TSV: use ``.csv`` output for those.
* ``.jsonl``: one JSON object per line (blank lines are skipped). A ``.json`` array cannot be streamed and is
  refused with a hint. JSON Lines are read twice: a first pass checks every line and finds the columns (the
  union of the objects' keys, in order of first appearance) and their types; JSON Lines output keeps each
  object as it was, with the prediction keys added.
* ``.parquet``: read by row batches; its column types are kept where the output format has them.

Rows are numbered from 1, the header (CSV/TSV) not counted; for JSON Lines, errors also name the line.
The output is written to a temporary file beside it and renamed at the end: a failure leaves no partial output
(an existing output file is replaced only by a complete one).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .data import is_blank
from .errors import SweetError, one_line
from .sources.files import json_kind
from .sources.part import first_line

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


def score_file(predictor, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
               threshold: float | None = None, policy: str | None = None, batch_rows: int = 2048,
               progress: bool = False) -> dict:
    """Predict every row of ``input_path`` and write the rows with their predictions to ``output_path``.

    ``predictor`` is a :class:`~sweet.predictor.Predictor` (its ``task.text_fields`` name the text columns;
    ``threshold``/``policy`` default to the predictor's). ``batch_rows`` rows are read, predicted and written at a
    time (the engine batches them further by ``predictor.batch_size``). Returns a summary: ``input``, ``output``,
    ``format``, ``rows``, ``batches``, ``seconds``, ``columns`` (the prediction columns written) and
    ``exit_counts`` (exit layer -> rows).

    Long on purpose: the streaming loop (read a batch, check, predict, write) reads top to bottom."""
    start = time.perf_counter()
    src, dst = Path(input_path), Path(output_path)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise SweetError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    _format_of(src, "input")
    if not src.is_file():
        raise SweetError(f"{src}: input file not found" if not src.exists() else f"{src}: not a file")
    out_fmt = _format_of(dst, "output")
    if dst.is_dir():
        raise SweetError(f"{dst}: is a folder; name an output file")
    if src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise SweetError(f"{dst}: the output cannot be the input file; name another output file")

    if policy is not None and hasattr(predictor, "get_policy"):
        predictor.get_policy(policy)  # an unknown policy fails before the file is read
    if threshold is not None:
        from .policies import check_threshold  # torch: only with a threshold

        check_threshold(threshold)
    fields = [str(f) for f in predictor.task.text_fields]
    policy_name = policy or getattr(predictor, "policy", "confidence")
    wanted = list(PREDICTION_COLUMNS if policy_name != "confidence" else PREDICTION_COLUMNS[:3])
    reader = _open_reader(src, fields)
    names = _prediction_names(wanted, reader.columns, reader.where)
    extra_types = {n: t for n, t in zip(names, (pa.string(), pa.int64(), pa.float64(), pa.float64()))}

    from tqdm.auto import tqdm  # only when scoring

    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    if hasattr(os, "chmod"):
        os.chmod(tmp, 0o644)  # mkstemp creates the file private (0600); results are meant to be shared
    sink = None
    rows = batches = 0
    exits: Counter = Counter()
    bar = tqdm(total=reader.total_rows, desc="score", unit="row", disable=not progress, leave=False)
    try:
        sink = _SINKS[out_fmt](tmp, str(dst), reader.columns + names)
        for batch in reader.batches(batch_rows):
            texts = batch.texts(fields)
            answers = predictor.predict(texts, threshold=threshold, policy=policy)
            if len(answers) != batch.num_rows:
                raise RuntimeError(f"the predictor answered {len(answers)} rows for {batch.num_rows}")
            extra = {
                names[0]: [str(a["label"]) for a in answers],
                names[1]: [int(a["exit_layer"]) for a in answers],
                names[2]: [float(a["confidence"]) for a in answers],
            }
            if len(names) == 4:
                extra[names[3]] = [None if a.get("score") is None else float(a["score"]) for a in answers]
            sink.write(batch, extra, extra_types)
            exits.update(extra[names[1]])
            rows += batch.num_rows
            batches += 1
            bar.update(batch.num_rows)
        if rows == 0:
            raise SweetError(f"{reader.where}: {reader.empty_message}")
        sink.close()
        _fsync(tmp)
        os.replace(tmp, dst)
    except BaseException:
        if sink is not None:
            sink.abort()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        bar.close()
    return {"input": str(src), "output": str(dst), "format": out_fmt, "rows": rows, "batches": batches,
            "seconds": round(time.perf_counter() - start, 3), "columns": names,
            "exit_counts": {int(k): int(v) for k, v in sorted(exits.items())}}


# ------------------------------------------------------------------------------------------------ checks


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
        message = first_line(exc).removeprefix("CSV parse error: ")
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
            import base64

            return base64.b64encode(obj).decode("ascii")
    if hasattr(obj, "total_seconds"):  # timedelta
        return obj.total_seconds()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


class _CsvSink:
    """CSV through pyarrow's streaming writer (strings quoted, RFC 4180)."""

    def __init__(self, tmp: str, where: str, columns: list[str]):
        self.tmp, self.where = tmp, where
        self.writer = None

    def write(self, batch, extra: dict, types: dict) -> None:
        table = _csv_ready(batch.to_table(extra, types))
        if self.writer is None:
            self.schema = table.schema
            self.writer = pa_csv.CSVWriter(self.tmp, table.schema, write_options=pa_csv.WriteOptions(
                include_header=True, delimiter=","))
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    abort = close


class _ParquetSink:
    def __init__(self, tmp: str, where: str, columns: list[str]):
        self.tmp, self.where = tmp, where
        self.writer = None

    def write(self, batch, extra: dict, types: dict) -> None:
        table = batch.to_table(extra, types)
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    abort = close


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

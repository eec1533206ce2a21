"""Scoring a table file (sweet.scoring): formats in and out, the clash rule, streaming in batches, atomic output,
one-line errors; a fake predictor for most, one tiny trained run end to end."""

from __future__ import annotations

import json
import os
import tracemalloc
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from sweet.errors import SweetError
from sweet.scoring import CLASH_PREFIX, SCORABLE, is_table_file, score_file

LAYERS = (1, 2, 4)


class FakeTask:
    def __init__(self, fields):
        self.name = "fake"
        self.text_fields = tuple(fields)


class FakePredictor:
    """Deterministic answers from the text alone: 'good' anywhere -> positive; the layer and confidence from its
    length. Records every call's inputs."""

    def __init__(self, fields=("sentence",), policy="confidence", batch_size=8, fail_on_call=None):
        self.task = FakeTask(fields)
        self.policy, self.batch_size = policy, batch_size
        self.calls: list[list] = []
        self.fail_on_call = fail_on_call

    def predict(self, inputs, threshold=None, policy=None, batch_size=None):
        self.calls.append(list(inputs))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("model crashed")
        return [expected(x, policy or self.policy) for x in inputs]


def expected(item, policy="confidence") -> dict:
    text = item if isinstance(item, str) else " | ".join(item)
    positive = "good" in text
    row = {"label": "positive" if positive else "negative", "label_id": int(positive),
           "exit_layer": LAYERS[len(text) % 3], "confidence": 0.5 + (len(text) % 50) / 100}
    if policy != "confidence":
        row["score"] = -float(len(text))
    return row


# ------------------------------------------------------------------------------------------- files


ROWS = [
    {"id": "007", "sentence": "a good film", "year": "1999"},
    {"id": "010", "sentence": 'he said "dull", twice', "year": "2001"},
    {"id": "011", "sentence": "quite good, really", "year": ""},
    {"id": "012", "sentence": "awful plot é ✓", "year": "2010"},
    {"id": "013", "sentence": "the story", "year": "1987"},
]


def write_table(path: Path, rows: list[dict]) -> Path:
    """Write rows (string values) in the format of ``path``'s extension."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".tsv":
        cols = list(rows[0])
        path.write_text("\t".join(cols) + "\n" + "".join("\t".join(r[c] for c in cols) + "\n" for r in rows),
                        encoding="utf-8")
    else:
        pa_csv.write_csv(pa.Table.from_pylist(rows), path)
    return path


def read_back(path: Path) -> list[dict]:
    """The rows of a scored file, every value as the string it reads as (None for a JSON null)."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    elif path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        tsv = path.suffix == ".tsv"
        names = pa_csv.open_csv(path, parse_options=_parse(tsv)).schema.names
        table = pa_csv.read_csv(path, parse_options=_parse(tsv), convert_options=pa_csv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=False))
        return table.to_pylist()
    return [{k: (v if isinstance(v, str) or v is None else json.dumps(v)) for k, v in r.items()} for r in rows]


def _parse(tsv):
    return pa_csv.ParseOptions(delimiter="\t", quote_char=False) if tsv else pa_csv.ParseOptions()


def assert_scored(out_rows, in_rows, fields=("sentence",), names=("label", "exit_layer", "confidence"),
                  policy="confidence"):
    assert len(out_rows) == len(in_rows)
    for got, src in zip(out_rows, in_rows):
        for k, v in src.items():
            assert got[k] == v, (k, got, src)
        texts = tuple(src[f] for f in fields)
        want = expected(texts[0] if len(texts) == 1 else texts, policy)
        assert got[names[0]] == want["label"]
        assert int(got[names[1]]) == want["exit_layer"]
        assert float(got[names[2]]) == pytest.approx(want["confidence"])
        if policy != "confidence":
            assert float(got[names[3]]) == pytest.approx(want["score"])
        assert list(got)[: len(src)] == list(src)  # input columns first, in order


def test_is_table_file_and_scorable():
    assert SCORABLE == (".csv", ".tsv", ".jsonl", ".parquet")
    assert is_table_file("a/b.CSV") and is_table_file("x.parquet") and is_table_file(Path("x.jsonl"))
    assert not is_table_file("x.json") and not is_table_file("x.txt") and not is_table_file("-")


@pytest.mark.parametrize("src_ext", [".csv", ".tsv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("dst_ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_in_and_out_keeps_rows_columns_and_order(tmp_path, src_ext, dst_ext):
    rows = ROWS if src_ext != ".tsv" and dst_ext != ".tsv" else [
        {**r, "sentence": r["sentence"].replace(",", "")} for r in ROWS]
    src = write_table(tmp_path / f"in{src_ext}", rows)
    fake = FakePredictor()
    summary = score_file(fake, src, tmp_path / f"out{dst_ext}", batch_rows=2)
    out = read_back(tmp_path / f"out{dst_ext}")
    assert_scored(out, rows)
    assert [len(c) for c in fake.calls] == [2, 2, 1]
    assert summary["rows"] == 5 and summary["batches"] == 3 and summary["format"] == dst_ext[1:]
    assert summary["output"] == str(tmp_path / f"out{dst_ext}") and summary["seconds"] >= 0
    assert summary["columns"] == ["label", "exit_layer", "confidence"]
    want = {}
    for r in rows:
        layer = expected(r["sentence"])["exit_layer"]
        want[layer] = want.get(layer, 0) + 1
    assert summary["exit_counts"] == dict(sorted(want.items()))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_csv_keeps_leading_zeros_quotes_and_multiline_text(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text('id,sentence\n007,"a good\nfilm"\n0042,"said ""hi"", then left"\n', encoding="utf-8")
    score_file(FakePredictor(), src, tmp_path / "out.csv")
    out = read_back(tmp_path / "out.csv")
    assert [r["id"] for r in out] == ["007", "0042"]
    assert out[0]["sentence"] == "a good\nfilm" and out[0]["label"] == "positive"
    assert out[1]["sentence"] == 'said "hi", then left'


def test_tsv_reads_and_writes_quote_characters_literally(tmp_path):
    src = tmp_path / "in.tsv"
    src.write_text('idx\tsentence\n0\t"good" he said\n1\tit\'s "dull\n', encoding="utf-8")
    score_file(FakePredictor(), src, tmp_path / "out.tsv")
    lines = (tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "idx\tsentence\tlabel\texit_layer\tconfidence"
    assert lines[1].startswith('0\t"good" he said\tpositive\t')
    assert lines[2].startswith('1\tit\'s "dull\tnegative\t')


def test_jsonl_keeps_each_object_and_its_types(tmp_path):
    src = tmp_path / "in.jsonl"
    records = [{"sentence": "good", "n": 1, "meta": {"a": [1, 2]}, "flag": True},
               {"n": 2.5, "sentence": "bad", "extra": None},
               {"sentence": "fine", "n": 3, "meta": "text"}]
    src.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + json.dumps(records[2]) + "\n")
    score_file(FakePredictor(), src, tmp_path / "out.jsonl", batch_rows=2)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for got, rec in zip(out, records):
        assert {k: got[k] for k in rec} == rec
        assert list(got)[: len(rec)] == list(rec)
        assert set(got) - set(rec) == {"label", "exit_layer", "confidence"}
    assert isinstance(out[0]["exit_layer"], int) and isinstance(out[0]["confidence"], float)
    # the same file to Parquet and CSV: the columns are the union of the keys; mixed values become JSON text
    score_file(FakePredictor(), src, tmp_path / "out.parquet", batch_rows=2)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["sentence", "n", "meta", "flag", "extra", "label", "exit_layer", "confidence"]
    assert table.schema.field("n").type == pa.float64() and table.schema.field("flag").type == pa.bool_()
    assert table.column("meta").to_pylist() == ['{"a": [1, 2]}', None, "text"]
    assert table.schema.field("exit_layer").type == pa.int64()
    score_file(FakePredictor(), src, tmp_path / "out.csv", batch_rows=2)
    assert read_back(tmp_path / "out.csv")[1]["flag"] == ""


def test_parquet_keeps_its_types_and_nested_columns_become_json_in_csv(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"sentence": ["good", "bad", "ok"], "n": pa.array([1, 2, 3], pa.int32()),
                             "tags": [["a"], [], ["b", "c"]],
                             "cat": pa.array(["x", "y", "x"]).dictionary_encode()}), src, row_group_size=2)
    score_file(FakePredictor(), src, tmp_path / "out.parquet", batch_rows=2)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("n").type == pa.int32() and table.column("tags").to_pylist() == [["a"], [], ["b", "c"]]
    assert table.column("label").to_pylist() == ["positive", "negative", "negative"]
    score_file(FakePredictor(), src, tmp_path / "out.csv", batch_rows=2)
    out = read_back(tmp_path / "out.csv")
    assert [r["tags"] for r in out] == ['["a"]', "[]", '["b", "c"]'] and [r["cat"] for r in out] == ["x", "y", "x"]


def test_pairs_are_passed_as_tuples(tmp_path):
    rows = [{"premise": "a good film", "hypothesis": "it is bad", "id": "1"},
            {"premise": "dull", "hypothesis": "good", "id": "2"},
            {"premise": "plot", "hypothesis": "story", "id": "3"}]
    fake = FakePredictor(fields=("premise", "hypothesis"))
    for ext in (".csv", ".jsonl", ".parquet"):
        fake.calls.clear()
        score_file(fake, write_table(tmp_path / f"p{ext}", rows), tmp_path / f"out{ext}", batch_rows=2)
        assert fake.calls == [[("a good film", "it is bad"), ("dull", "good")], [("plot", "story")]]
        assert_scored(read_back(tmp_path / f"out{ext}"), rows, fields=("premise", "hypothesis"))
    with pytest.raises(SweetError, match="no column 'hypothesis'; the run reads its text pairs from 'premise', "
                                         "'hypothesis', the file has 'premise', 'id'"):
        score_file(fake, write_table(tmp_path / "half.csv", [{"premise": "x", "id": "1"}]), tmp_path / "o.csv")


def test_a_policy_other_than_confidence_adds_its_score(tmp_path):
    src = write_table(tmp_path / "in.csv", ROWS)
    summary = score_file(FakePredictor(policy="entropy"), src, tmp_path / "out.csv")
    assert summary["columns"] == ["label", "exit_layer", "confidence", "score"]
    assert_scored(read_back(tmp_path / "out.csv"), ROWS, names=("label", "exit_layer", "confidence", "score"),
                  policy="entropy")
    fake = FakePredictor()
    summary = score_file(fake, src, tmp_path / "out2.csv", policy="patience", threshold=0.5)
    assert summary["columns"][-1] == "score"


# ------------------------------------------------------------------------------------------- the clash rule


def test_a_clash_prefixes_every_prediction_column(tmp_path):
    rows = [{"sentence": "good", "label": "negative"}, {"sentence": "bad", "label": "positive"}]
    for ext in (".csv", ".jsonl", ".parquet", ".tsv"):
        summary = score_file(FakePredictor(policy="entropy"), write_table(tmp_path / f"in{ext}", rows),
                             tmp_path / f"out{ext}")
        names = [CLASH_PREFIX + n for n in ("label", "exit_layer", "confidence", "score")]
        assert summary["columns"] == names
        out = read_back(tmp_path / f"out{ext}")
        assert list(out[0]) == ["sentence", "label", *names]
        assert [r["label"] for r in out] == ["negative", "positive"]  # the gold labels are kept
        assert [r["sweet_label"] for r in out] == ["positive", "negative"]
    # a column named like one prediction column is enough (confidence alone here)
    src = write_table(tmp_path / "c.csv", [{"sentence": "good", "confidence": "high"}])
    assert score_file(FakePredictor(), src, tmp_path / "c-out.csv")["columns"][0] == "sweet_label"
    # both names taken: refused
    src = write_table(tmp_path / "both.csv", [{"sentence": "good", "label": "x", "sweet_label": "y"}])
    with pytest.raises(SweetError, match="both plain and with the prefix 'sweet_'.*'label', 'sweet_label'"):
        score_file(FakePredictor(), src, tmp_path / "both-out.csv")


# ------------------------------------------------------------------------------------------- streaming


def test_rows_are_read_predicted_and_written_per_batch(tmp_path, monkeypatch):
    rows = [{"id": str(i), "sentence": f"text {i} good" if i % 2 else f"text {i}"} for i in range(50)]
    for ext in (".csv", ".jsonl", ".parquet"):
        fake = FakePredictor()
        summary = score_file(fake, write_table(tmp_path / f"in{ext}", rows), tmp_path / f"out{ext}", batch_rows=7)
        assert [len(c) for c in fake.calls] == [7] * 7 + [1] and summary["batches"] == 8
        assert_scored(read_back(tmp_path / f"out{ext}"), rows)


def test_a_large_csv_is_never_held_in_memory(tmp_path, monkeypatch):
    """50,000 rows (about 8 MB): Arrow holds the blocks its CSV reader parses ahead (a bounded number, about 40:
    made small here with 32 KiB blocks, 1 MiB by default) and one batch, Python one batch of strings."""
    import sweet.scoring.readers

    monkeypatch.setattr(sweet.scoring.readers, "CSV_BLOCK_BYTES", 1 << 15)  # the name the reader uses
    n = 50_000
    src = tmp_path / "big.csv"
    with open(src, "w", encoding="utf-8") as fh:
        fh.write("id,sentence\n")
        fh.writelines(f"{i:08d},\"row {i}: the movie was {'good' if i % 3 else 'dull'} and the story, the plot and "
                     f"the actor were quite something else entirely {'x' * (i % 90)}\"\n" for i in range(n))
    size = src.stat().st_size
    assert size > 7_500_000

    arrow_in_use = []

    class Measuring(FakePredictor):
        def predict(self, inputs, threshold=None, policy=None, batch_size=None):
            arrow_in_use.append(pa.total_allocated_bytes())
            self.calls.append(len(inputs))  # not the texts: the test would hold the whole file
            return [expected(x) for x in inputs]

    fake = Measuring()
    tracemalloc.start()
    try:
        summary = score_file(fake, src, tmp_path / "big-out.parquet", batch_rows=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["rows"] == n and summary["batches"] == 50 and len(fake.calls) == 50
    assert max(arrow_in_use) < size / 4, (max(arrow_in_use), size)
    assert peak < size / 5, (peak, size)  # 50,000 Python strings would be well over the file's size
    table = pq.read_table(tmp_path / "big-out.parquet", columns=["id", "label"])
    assert table.num_rows == n and table.column("id")[0].as_py() == "00000000"
    assert table.column("id")[-1].as_py() == f"{n - 1:08d}"


# ------------------------------------------------------------------------------------------- atomic output


def test_a_failure_leaves_no_output_and_keeps_an_existing_one(tmp_path):
    rows = [{"sentence": f"text {i}"} for i in range(10)]
    for ext in (".csv", ".tsv", ".jsonl", ".parquet"):
        src = write_table(tmp_path / f"in{ext}", rows)
        dst = tmp_path / f"out{ext}"
        with pytest.raises(RuntimeError, match="model crashed"):
            score_file(FakePredictor(fail_on_call=2), src, dst, batch_rows=4)
        assert not dst.exists()
        dst.write_text("previous")
        with pytest.raises(RuntimeError):
            score_file(FakePredictor(fail_on_call=3), src, dst, batch_rows=4)
        assert dst.read_text() == "previous"
        score_file(FakePredictor(), src, dst, batch_rows=4)  # a complete result replaces it
        assert len(read_back(dst)) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_in_a_new_folder_and_its_permissions(tmp_path):
    src = write_table(tmp_path / "in.csv", ROWS)
    dst = tmp_path / "new" / "deeper" / "scored.jsonl"
    score_file(FakePredictor(), src, dst)
    assert dst.is_file() and (os.name != "posix" or (dst.stat().st_mode & 0o777) == 0o644)


# ------------------------------------------------------------------------------------------- errors


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def test_path_errors(tmp_path):
    src = write_table(tmp_path / "in.csv", ROWS)
    fake = FakePredictor()
    cases = [
        (tmp_path / "nowhere.csv", tmp_path / "o.csv", "nowhere.csv: input file not found"),
        (tmp_path / "in.txt", tmp_path / "o.csv",
         "unsupported input file type '.txt'; use one of .csv, .tsv, .jsonl, .parquet"),
        (tmp_path / "noext", tmp_path / "o.csv", "unsupported input file type (no extension)"),
        (src, tmp_path / "o.xlsx", "unsupported output file type '.xlsx'; use one of .csv, .tsv, .jsonl, .parquet"),
        (tmp_path / "in.json", tmp_path / "o.csv", "a .json array cannot be streamed; use JSON Lines (.jsonl"),
        (src, tmp_path / "o.json", "write JSON Lines (.jsonl, one object per line) instead of a .json array"),
        (src, src, "the output cannot be the input file; name another output file"),
        (src, tmp_path / "." / "in.csv", "the output cannot be the input file"),
        (src, tmp_path / "link.csv", "the output cannot be the input file"),
        (src, tmp_path / "folder.csv", "folder.csv: is a folder; name an output file"),
    ]
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "link.csv").symlink_to(src)
    (tmp_path / "folder.csv").mkdir()
    for a, b, message in cases:
        with pytest.raises(SweetError) as excinfo:
            score_file(fake, a, b)
        assert message in one_line_error(excinfo), (a, b)
    with pytest.raises(SweetError, match="batch_rows must be a positive integer"):
        score_file(fake, src, tmp_path / "o.csv", batch_rows=0)
    with pytest.raises(SweetError, match=r"threshold must be a number in \[0, 1\]"):
        score_file(fake, src, tmp_path / "o.csv", threshold=1.5)
    assert fake.calls == [] and not (tmp_path / "o.csv").exists()


def test_missing_text_column_lists_both_sides(tmp_path):
    for ext in (".csv", ".tsv", ".jsonl", ".parquet"):
        src = write_table(tmp_path / f"in{ext}", [{"id": "1", "text": "good"}])
        with pytest.raises(SweetError) as excinfo:
            score_file(FakePredictor(), src, tmp_path / "o.csv")
        assert one_line_error(excinfo) == (f"{src}: no column 'sentence'; the run reads its text from 'sentence', "
                                           "the file has 'id', 'text' (rename the text column to 'sentence')")


@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", "", "file is empty"),
    ("header.csv", "id,sentence\n", "no rows after the header"),
    ("header.tsv", "id\tsentence\n", "no rows after the header"),
    ("blank.jsonl", "\n  \n", "no rows (every line is blank)"),
    ("empty.parquet", None, "no rows"),
])
def test_empty_input(tmp_path, name, content, message):
    src = tmp_path / name
    if content is None:
        pq.write_table(pa.table({"sentence": pa.array([], pa.string())}), src)
    else:
        src.write_text(content)
    with pytest.raises(SweetError) as excinfo:
        score_file(FakePredictor(), src, tmp_path / "o.csv")
    assert one_line_error(excinfo).endswith(message)
    assert not (tmp_path / "o.csv").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_blank_or_non_text_values_name_the_row_and_column(tmp_path):
    fake = FakePredictor(fields=("premise", "hypothesis"))
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}"} for i in range(6)]
    rows[4]["hypothesis"] = " \u200b "
    for ext in (".csv", ".tsv", ".parquet"):
        with pytest.raises(SweetError) as excinfo:
            score_file(fake, write_table(tmp_path / f"in{ext}", rows), tmp_path / "o.csv", batch_rows=2)
        assert one_line_error(excinfo) == (f"{tmp_path / f'in{ext}'}: row 5: column 'hypothesis' is empty; every "
                                           "row needs a text to classify (drop or fill that row)")
    src = tmp_path / "in.jsonl"
    src.write_text('{"premise": "a", "hypothesis": "b"}\n\n{"premise": "a"}\n')
    with pytest.raises(SweetError, match=r"in.jsonl: row 2 \(line 3\): column 'hypothesis' is empty"):
        score_file(fake, src, tmp_path / "o.csv")
    src.write_text('{"premise": "a", "hypothesis": 5}\n')
    with pytest.raises(SweetError, match=r"row 1 \(line 1\): column 'hypothesis' holds a int \(5\), not text"):
        score_file(fake, src, tmp_path / "o.csv")
    src = tmp_path / "null.parquet"
    pq.write_table(pa.table({"premise": ["a", None], "hypothesis": ["b", "c"]}), src)
    with pytest.raises(SweetError, match="row 2: column 'premise' is empty"):
        score_file(fake, src, tmp_path / "o.csv")
    src = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"premise": [1, 2], "hypothesis": ["b", "c"]}), src)
    with pytest.raises(SweetError, match="column 'premise' holds int64 values, not text"):
        score_file(fake, src, tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("name, content, message", [
    ("bad.parquet", b"not parquet at all", "bad.parquet: not a readable Parquet file (Parquet magic bytes not found"),
    ("ragged.csv", b"id,sentence\n1,good\n2\n", "a row has 1 comma-separated fields, the header 2: '2'"),
    ("ragged.tsv", b"id\tsentence\n1\tgood\n2\tx\ty\n", "a row has 3 tab-separated fields, the header 2"),
    ("latin1.csv", b"id,sentence\n1,good\n2,caf\xe9 noir\n",
     "latin1.csv:3: not valid UTF-8 (byte offset 24, byte 0xe9)"),
    ("latin1.jsonl", b'{"sentence": "good"}\n{"sentence": "caf\xe9"}\n', "latin1.jsonl:2: not valid UTF-8"),
    ("broken.jsonl", b'{"sentence": "good"}\n{"sentence": \n', "broken.jsonl:2: not valid JSON (Expecting value"),
    ("array.jsonl", b'[{"sentence": "good"}]\n', "holds a JSON array, which cannot be streamed"),
    ("pretty.jsonl", b'[\n {"sentence": "good"}\n]\n', "holds a JSON array, which cannot be streamed"),
    ("scalar.jsonl", b'{"sentence": "good"}\n"text"\n', "line 2 is a JSON string, not an object with named fields"),
    ("dup.csv", b"sentence,sentence\na,b\n", "column 'sentence' appears twice in the header"),
    ("unclosed.csv", b'sentence\nfine\n"good\n' + b"bad\n" * 600_000 + b"x\n",
     "a row runs over more than 1 MiB (a quote that is never closed, or a text longer than that)"),
])
def test_unreadable_input(tmp_path, name, content, message):
    src = tmp_path / name
    src.write_bytes(content)
    fake = FakePredictor()
    with pytest.raises(SweetError) as excinfo:
        score_file(fake, src, tmp_path / "o.parquet")
    assert message in one_line_error(excinfo)
    assert not (tmp_path / "o.parquet").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_ragged_row_gets_the_same_message_on_one_cpu_and_on_several(tmp_path, cpus):
    """pyarrow's serial CSV reader (one CPU, or OMP_NUM_THREADS=1) prefixes its error with the row ("Row #3: "),
    the threaded one does not; the user's message is the same on both."""
    import pyarrow as pa

    before = pa.cpu_count()
    pa.set_cpu_count(cpus)
    try:
        src = tmp_path / "ragged.csv"
        src.write_bytes(b"id,sentence\n1,good\n2\n")
        with pytest.raises(SweetError) as excinfo:
            score_file(FakePredictor(), src, tmp_path / "o.parquet")
    finally:
        pa.set_cpu_count(before)
    assert one_line_error(excinfo) == f"{src}: a row has 1 comma-separated fields, the header 2: '2'"


def test_a_bad_row_after_the_first_batches_leaves_no_output(tmp_path):
    src = tmp_path / "late.csv"
    src.write_bytes(b"sentence\n" + b"good\n" * 300_000 + b"caf\xe9\n")
    with pytest.raises(SweetError, match=r"late.csv:300002: not valid UTF-8"):
        score_file(FakePredictor(), src, tmp_path / "o.csv", batch_rows=50_000)
    assert not (tmp_path / "o.csv").exists()


def test_tsv_output_refuses_a_tab_or_line_break(tmp_path):
    src = write_table(tmp_path / "tab.csv", [{"sentence": "good", "a\tb": "1"}])
    with pytest.raises(SweetError) as excinfo:
        score_file(FakePredictor(), src, tmp_path / "o.tsv")
    assert r"the header, column 'a\tb' holds a tab" in one_line_error(excinfo)
    assert not list(tmp_path.glob(".o.tsv*"))
    src = write_table(tmp_path / "in.jsonl", [{"sentence": "good"}, {"sentence": "two\nlines"}])
    with pytest.raises(SweetError) as excinfo:
        score_file(FakePredictor(), src, tmp_path / "o.tsv")
    assert one_line_error(excinfo) == (f"{tmp_path / 'o.tsv'}: row 2, column 'sentence' holds a tab or a line "
                                       "break, which a TSV (no quoting) cannot hold; write .csv or .jsonl output "
                                       "instead")
    assert not (tmp_path / "o.tsv").exists()


# ------------------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def tiny_predictor(tmp_path_factory, tiny_backbone_dir, tiny_glue_dir):
    from sweet.predictor import Predictor
    from sweet.runs import RunConfig, run

    from .conftest import one_torch_thread

    out = tmp_path_factory.mktemp("scoring") / "sst2-sweet"
    with one_torch_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny run: capped max length, temperatures at their bounds
        run(RunConfig(task="sst2", method="sweet", backbone=str(tiny_backbone_dir), exit_layers=[1, 2, 4],
                      n_train=200, epochs=1, data_dir=str(tiny_glue_dir), checkpoint_every=0), out, progress=False)
    return Predictor.load(out, batch_size=4)


def test_a_trained_run_scores_csv_jsonl_and_parquet(tmp_path, tiny_predictor):
    from .conftest import one_torch_thread

    texts = ["the movie was good", "awful plot", "a very dull story", "the actor is superb and lovely",
             "the film", "terrible and poor", "quite fine"]
    rows = [{"id": f"{i:03d}", "sentence": t} for i, t in enumerate(texts)]
    with one_torch_thread():
        direct = tiny_predictor.predict(texts, threshold=0.7)
        assert tiny_predictor.task.text_fields == ("sentence",)
        for ext in (".csv", ".jsonl", ".parquet"):
            src, dst = write_table(tmp_path / f"new{ext}", rows), tmp_path / f"scored{ext}"
            summary = score_file(tiny_predictor, src, dst, threshold=0.7, batch_rows=3)
            out = read_back(dst)
            assert [r["id"] for r in out] == [r["id"] for r in rows]
            assert [r["sentence"] for r in out] == texts
            assert list(out[0]) == ["id", "sentence", "label", "exit_layer", "confidence"]
            assert [r["label"] for r in out] == [d["label"] for d in direct]
            assert {r["label"] for r in out} <= {"negative", "positive"}
            assert [int(r["exit_layer"]) for r in out] == [d["exit_layer"] for d in direct]
            assert [float(r["confidence"]) for r in out] == pytest.approx([d["confidence"] for d in direct])
            assert summary["rows"] == 7 and summary["batches"] == 3
            assert sum(summary["exit_counts"].values()) == 7 and set(summary["exit_counts"]) <= {1, 2, 4}
        # scoring a scored file: the clash rule prefixes the new columns
        score_file(tiny_predictor, tmp_path / "scored.csv", tmp_path / "again.parquet", threshold=0.7)
        table = pq.read_table(tmp_path / "again.parquet")
        assert table.column_names[-3:] == ["sweet_label", "sweet_exit_layer", "sweet_confidence"]
        assert table.schema.field("sweet_exit_layer").type == pa.int64()
        assert table.column("sweet_label").to_pylist() == table.column("label").to_pylist()
        summary = score_file(tiny_predictor, tmp_path / "new.csv", tmp_path / "entropy.jsonl", policy="entropy",
                             threshold=0.5)
        assert summary["columns"][-1] == "score"
        assert all("score" in json.loads(line) for line in (tmp_path / "entropy.jsonl").read_text().splitlines())

"""sweet.sources: labelled text data from files, folders, save_to_disk folders and (mocked) hub ids (issue #23).

Small data written to tmp_path; no model, no network. The bad-input cases are parametrized from the table in
docs/errors.md ("Your own data"), so the documented messages and the tested ones cannot drift apart."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweet import SweetError
from sweet.sources import LabelledTable, SourceSpec, detect_columns, load_source

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
SECTION = "## Your own data (`--data`)"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def csv_rows(rows, header="text,label") -> str:
    return header + "\n" + "".join(f"{r}\n" for r in rows)


def jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


GOOD = csv_rows(["good movie,pos", "bad movie,neg", "fine film,pos"])


def saved_dict(tmp: Path, name="dd", train_labels=(0, 1, 1), names=("neg", "pos"), validation_labels=(1, 0)) -> Path:
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))})
    train = datasets.Dataset.from_dict(
        {"text": [f"train text {i}" for i in range(len(train_labels))], "label": list(train_labels)}, features=features
    )
    validation = datasets.Dataset.from_dict(
        {"text": [f"dev text {i}" for i in range(len(validation_labels))], "label": list(validation_labels)},
        features=features,
    )
    datasets.DatasetDict(train=train, validation=validation).save_to_disk(str(tmp / name))
    return tmp / name


# ------------------------------------------------------------------------------------------------ bad inputs


def _hub_raises(exc):
    def fake(*args, **kwargs):
        raise exc

    return fake


def case_no_data(tmp, mp):
    return SourceSpec("")


def case_file_missing(tmp, mp):
    return SourceSpec(str(tmp / "none.csv"))


def case_unknown_extension(tmp, mp):
    return SourceSpec(str(write(tmp / "data.xlsx", "text,label\n")))


def case_empty_file(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", "")))


def case_header_only(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", "text,label\n")))


def case_csv_wrong_field_count(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["good movie,pos", "bad, awful movie,neg"]))))


def case_tsv_wrong_field_count(tmp, mp):
    return SourceSpec(str(write(tmp / "train.tsv", "sentence\tlabel\ngood\t1\nbad\n")))


def case_non_utf8(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", b"text,label\ngood,pos\ncaf\xe9,neg\n")))


def case_parquet_corrupt(tmp, mp):
    return SourceSpec(str(write(tmp / "train.parquet", b"PAR1 this is not parquet")))


def case_json_corrupt(tmp, mp):
    return SourceSpec(str(write(tmp / "train.json", '[{"text": "a", "label": 1} {"text": "b", "label": 0}]')))


def case_jsonl_corrupt(tmp, mp):
    return SourceSpec(str(write(tmp / "train.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n')))


def case_json_no_rows(tmp, mp):
    return SourceSpec(str(write(tmp / "train.json", "[]")))


def case_json_one_object(tmp, mp):
    return SourceSpec(str(write(tmp / "train.json", '{\n  "text": ["a", "b"],\n  "label": [0, 1]\n}\n')))


def case_json_row_not_object(tmp, mp):
    return SourceSpec(str(write(tmp / "train.json", '[{"text": "a", "label": 1}, ["b", 0]]')))


def case_folder_without_train(tmp, mp):
    write(tmp / "dev.csv", GOOD)
    return SourceSpec(str(tmp))


def case_folder_two_train_files(tmp, mp):
    write(tmp / "train.csv", GOOD)
    write(tmp / "train.jsonl", jsonl([{"text": "a", "label": 1}]))
    return SourceSpec(str(tmp))


def case_eval_split_missing_in_folder(tmp, mp):
    write(tmp / "train.csv", GOOD)
    write(tmp / "dev.csv", GOOD)
    return SourceSpec(str(tmp), eval_split="test")


def case_train_split_missing_in_saved_dict(tmp, mp):
    return SourceSpec(str(saved_dict(tmp)), train_split="training")


def case_eval_split_is_train_split(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", GOOD)), eval_split="train")


def case_eval_split_on_single_file(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", GOOD)), eval_split="validation")


def case_eval_data_without_eval_split(tmp, mp):
    write(tmp / "other" / "train.csv", GOOD)
    return SourceSpec(str(write(tmp / "train.csv", GOOD)), eval_data=str(tmp / "other"))


def case_eval_split_unlabelled(tmp, mp):
    write(tmp / "train.csv", GOOD)
    write(tmp / "test.csv", csv_rows(["a film,", "another film,"]))
    return SourceSpec(str(tmp), eval_split="test")


def case_hub_no_network(tmp, mp):
    import datasets

    mp.setattr(datasets, "load_dataset", _hub_raises(ConnectionError("Couldn't reach 'someone/reviews' on the Hub (OfflineModeIsEnabled)")))
    return SourceSpec("someone/reviews")


def case_hub_not_found(tmp, mp):
    import datasets

    error = datasets.exceptions.DatasetNotFoundError("Dataset 'someone/reviews' doesn't exist on the Hub or cannot be accessed.")
    mp.setattr(datasets, "load_dataset", _hub_raises(error))
    return SourceSpec("someone/reviews")


def case_hub_bad_config(tmp, mp):
    import datasets

    mp.setattr(datasets, "load_dataset", _hub_raises(ValueError("BuilderConfig 'sst3' not found. Available: ['sst2']")))
    return SourceSpec("someone/reviews", data_config="sst3")


def case_duplicate_columns(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["a,b,pos", "c,d,neg"], header="text,text,label"))))


def case_no_text_column(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["1,a,pos", "2,b,neg"], header="id,words,label"))))


def case_several_text_columns(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["a,b,pos", "c,d,neg"], header="text,sentence,label"))))


def case_no_label_column(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["a,pos", "c,neg"], header="body,queue"))))


def case_several_label_columns(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["a,pos,x", "c,neg,y"], header="text,label,category"))))


def case_text_column_not_found(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", GOOD)), text_columns=("review",))


def case_label_column_not_found(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", GOOD)), label_column="queue")


def case_three_text_columns(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", GOOD)), text_columns=("a", "b", "c"))


def case_label_is_a_text_column(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", GOOD)), text_columns=("text",), label_column="text")


def case_eval_column_missing(tmp, mp):
    write(tmp / "train.csv", GOOD)
    write(tmp / "dev.csv", csv_rows(["a film,pos"], header="sentence,label"))
    return SourceSpec(str(tmp))


def case_one_class(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["good movie,pos", "fine film,pos"]))))


def case_one_class_after_drop(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["good movie,pos", " ,neg"]))), drop_invalid=True)


def case_empty_label(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["good movie,pos", "bad movie, ", "fine,neg"]))))


def case_null_label(tmp, mp):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": None}]
    return SourceSpec(str(write(tmp / "train.jsonl", jsonl(rows))))


def case_nan_label(tmp, mp):
    path = tmp / "train.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "fine"], "label": [1.0, float("nan"), 0.0]}), path)
    return SourceSpec(str(path))


def case_na_label_among_integers(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["good movie,1", "bad movie,NA", "fine,0"]))))


def case_mixed_label_types(tmp, mp):
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": "neg"}, {"text": "fine", "label": 1}]
    return SourceSpec(str(write(tmp / "train.json", json.dumps(rows))))


def case_mixed_label_types_jsonl(tmp, mp):
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}, {"text": "fine", "label": "pos"}]
    return SourceSpec(str(write(tmp / "train.jsonl", jsonl(rows))))


def case_float_labels(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["good movie,0.9", "bad movie,0.1"], header="text,score"))), label_column="score")


def case_list_labels(tmp, mp):
    rows = [{"text": "good", "labels": [0, 2]}, {"text": "bad", "labels": [1]}]
    return SourceSpec(str(write(tmp / "train.jsonl", jsonl(rows))))


def case_eval_label_absent(tmp, mp):
    write(tmp / "train.csv", GOOD)
    write(tmp / "validation.csv", csv_rows(["so so,neutral", "great,pos", "meh,mixed"]))
    return SourceSpec(str(tmp))


def case_eval_label_without_training_rows(tmp, mp):
    return SourceSpec(str(saved_dict(tmp, names=("neg", "pos", "other"), validation_labels=(0, 2))))


def case_empty_text(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["good movie,pos", ",neg", "fine,pos"]))))


def case_whitespace_text(tmp, mp):
    return SourceSpec(str(write(tmp / "train.tsv", "text\tlabel\ngood\tpos\n \u00a0\tneg\n")))


def case_zero_width_text(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows(["good movie,pos", "\u200b\u200b,neg", "\ufeff,pos"]))))


def case_null_text(tmp, mp):
    rows = [{"text": "good", "label": 1}, {"text": None, "label": 0}, {"label": 0}]
    return SourceSpec(str(write(tmp / "train.jsonl", jsonl(rows))))


def case_non_string_text(tmp, mp):
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}, {"text": 42, "label": 0}]
    return SourceSpec(str(write(tmp / "train.json", json.dumps(rows))))


def case_all_rows_invalid(tmp, mp):
    return SourceSpec(str(write(tmp / "train.csv", csv_rows([" ,pos", ",neg"]))), drop_invalid=True)


CASES = {name[len("case_"):].replace("_", "-"): fn for name, fn in dict(globals()).items() if name.startswith("case_")}


def documented_cases() -> dict[str, str]:
    """case id -> message, from the table of docs/errors.md's section on --data."""
    text = DOCS.read_text(encoding="utf-8")
    assert SECTION in text, f"docs/errors.md has no section {SECTION}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([a-z0-9-]+)` \| .* \| `(.*)` \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


DOCUMENTED = documented_cases()


def test_every_documented_case_is_tested_and_every_tested_case_documented():
    assert sorted(DOCUMENTED) == sorted(CASES)


def matches(message: str, documented: str) -> bool:
    """``…`` in a documented message stands for a library's own words (e.g. pyarrow's)."""
    pattern = ".*".join(re.escape(part) for part in documented.split("…"))
    return re.fullmatch(pattern, message) is not None


@pytest.mark.parametrize("case", sorted(DOCUMENTED))
def test_bad_input_is_a_one_line_error(case, tmp_path, monkeypatch):
    spec = CASES[case](tmp_path, monkeypatch)
    with pytest.raises(SweetError) as info:
        load_source(spec)
    message = str(info.value).replace(str(tmp_path), "DATA")
    assert "\n" not in message
    assert matches(message, DOCUMENTED[case]), f"\n  got:        {message}\n  documented: {DOCUMENTED[case]}"


# ------------------------------------------------------------------------------------------------ formats

ROWS = [("a good movie", "pos"), ('he said "fine", "ok"', "neg"), ("dull, slow", "neg"), ("lovely", "pos")]


def write_format(tmp: Path, fmt: str, rows=ROWS, name="train") -> Path:
    path = tmp / f"{name}.{fmt}"
    if fmt == "csv":
        body = "".join('"' + t.replace('"', '""') + f'",{y}\n' for t, y in rows)
        return write(path, "text,label\n" + body)
    if fmt == "tsv":
        return write(path, "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    records = [{"text": t, "label": y} for t, y in rows]
    if fmt == "json":
        return write(path, json.dumps(records, indent=1))
    if fmt == "jsonl":
        return write(path, jsonl(records))
    pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [y for _, y in rows]}), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_each_format_gives_the_same_table(fmt, tmp_path):
    path = write_format(tmp_path, fmt)
    data = load_source(SourceSpec(str(path)))
    assert data.text_columns == ("text",) and data.label_column == "label"
    assert data.label_names == ["neg", "pos"]
    assert data.pool.labels.tolist() == [1, 0, 0, 1] and data.pool.labels.dtype == np.int64
    assert data.pool.texts[0].to_pylist() == [t for t, _ in ROWS]
    assert pa.types.is_string(data.pool.texts[0].type) or pa.types.is_large_string(data.pool.texts[0].type)
    assert data.pool.rows.tolist() == [1, 2, 3, 4]
    assert data.evaluation is None and data.evaluation_name is None
    assert data.files == {"pool": str(path)}
    assert data.fingerprint == {"pool": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert data.notes[0] == (
        "using text column 'text' (detected) and label column 'label' (detected); "
        "pass --text-column or --label-column to choose others"
    )


def test_tsv_quotes_are_text_and_csv_quotes_may_span_lines(tmp_path):
    tsv = write(tmp_path / "a.tsv", 'sentence\tlabel\n"quoted start\t1\nit\'s "so" good\t0\n')
    assert load_source(SourceSpec(str(tsv))).pool.texts[0].to_pylist() == ['"quoted start', 'it\'s "so" good']
    csv = write(tmp_path / "a.csv", 'text,label\n"two\nlines, one text",1\nplain,0\n')
    assert load_source(SourceSpec(str(csv))).pool.texts[0].to_pylist() == ["two\nlines, one text", "plain"]


def test_csv_values_stay_strings(tmp_path):
    """Texts that look like numbers, NA or dates stay the texts they are; a byte-order mark is not a column name."""
    path = write(tmp_path / "a.csv", "\ufefftext,label\n123,a\nNA,b\n2020-01-01,a\n")
    data = load_source(SourceSpec(str(path)))
    assert data.pool.texts[0].to_pylist() == ["123", "NA", "2020-01-01"]
    assert data.label_names == ["a", "b"]


def test_jsonl_dates_stay_strings(tmp_path):
    path = write(tmp_path / "a.jsonl", jsonl([{"text": "2020-01-01", "label": 0}, {"text": "2021-02-03", "label": 1}]))
    assert load_source(SourceSpec(str(path))).pool.texts[0].to_pylist() == ["2020-01-01", "2021-02-03"]


def test_folder_of_split_files(tmp_path):
    write(tmp_path / "train.csv", GOOD)
    write(tmp_path / "dev.csv", csv_rows(["nice,pos", "awful,neg"]))
    write(tmp_path / "test.csv", csv_rows(["unknown one"], header="text"))
    write(tmp_path / "README.md", "not data")
    data = load_source(SourceSpec(str(tmp_path)))
    assert data.evaluation_name == "dev"
    assert data.files == {"pool": str(tmp_path / "train.csv"), "evaluation": str(tmp_path / "dev.csv")}
    assert set(data.fingerprint) == {"pool", "evaluation"}
    assert data.fingerprint["evaluation"] == hashlib.sha256((tmp_path / "dev.csv").read_bytes()).hexdigest()
    assert data.evaluation.labels.tolist() == [1, 0] and data.evaluation.texts[0].to_pylist() == ["nice", "awful"]


def test_validation_comes_before_dev_and_eval_split_chooses(tmp_path):
    write(tmp_path / "train.csv", GOOD)
    write(tmp_path / "validation.csv", csv_rows(["v,pos", "w,neg"]))
    write(tmp_path / "dev.csv", csv_rows(["d,neg"]))
    write(tmp_path / "dev_matched.tsv", "text\tlabel\nm\tpos\n")
    assert load_source(SourceSpec(str(tmp_path))).evaluation_name == "validation"
    chosen = load_source(SourceSpec(str(tmp_path), eval_split="dev_matched"))
    assert chosen.evaluation_name == "dev_matched" and chosen.evaluation.texts[0].to_pylist() == ["m"]
    none = load_source(SourceSpec(str(tmp_path), eval_split="none"))
    assert none.evaluation is None and none.evaluation_name is None and "evaluation" not in none.files


def test_test_split_is_used_only_when_labelled(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    write(tmp_path / "test.tsv", "index\tsentence\n0\tunseen\n")
    data = load_source(SourceSpec(str(tmp_path)))
    assert data.evaluation is None
    assert f"{tmp_path / 'test.tsv'} has no labels: not used for evaluation" in data.notes
    write(tmp_path / "test.tsv", "sentence\tlabel\nunseen\t1\n")
    data = load_source(SourceSpec(str(tmp_path)))
    assert data.evaluation_name == "test" and data.evaluation.labels.tolist() == [1]
    assert f"evaluating on the labelled test split {tmp_path / 'test.tsv'} (there is no validation or dev split)" in data.notes


def test_separate_eval_file(tmp_path):
    train = write(tmp_path / "train.csv", GOOD)
    ev = write(tmp_path / "eval.jsonl", jsonl([{"text": "so good", "label": "pos"}]))
    data = load_source(SourceSpec(str(train), eval_data=str(ev)))
    assert data.evaluation_name == "file:eval.jsonl" and data.files["evaluation"] == str(ev)
    assert data.evaluation.labels.tolist() == [1]


def test_save_to_disk_dataset_dict_with_classlabel(tmp_path):
    import datasets

    folder = saved_dict(tmp_path, train_labels=(1, 0, 1, 1), names=("negative", "positive", "neutral"))
    data = load_source(SourceSpec(str(folder)))
    loaded = datasets.load_from_disk(str(folder))
    assert data.label_names == ["negative", "positive", "neutral"]  # ClassLabel's names and ids, not sorted
    assert data.pool.labels.tolist() == [1, 0, 1, 1]
    assert data.evaluation_name == "validation" and data.evaluation.labels.tolist() == [1, 0]
    assert data.files == {"pool": str(folder / "train"), "evaluation": str(folder / "validation")}
    assert data.fingerprint == {"pool": loaded["train"]._fingerprint, "evaluation": loaded["validation"]._fingerprint}
    assert "classes with fewer than 10 training rows: 'negative' (1), 'positive' (3), 'neutral' (0)" in data.notes


def test_classlabel_minus_one_is_a_missing_label(tmp_path):
    folder = saved_dict(tmp_path, train_labels=(0, -1, 1))
    with pytest.raises(SweetError, match=r"/train: row 2: no label in column 'label'"):
        load_source(SourceSpec(str(folder)))
    data = load_source(SourceSpec(str(folder), drop_invalid=True))
    assert data.pool.labels.tolist() == [0, 1] and data.pool.rows.tolist() == [1, 3]


def test_single_saved_dataset_and_parquet_with_classlabel(tmp_path):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["b", "a"])})
    ds = datasets.Dataset.from_dict({"sentence": ["x", "y", "z"], "label": [0, 1, 1]}, features=features)
    ds.save_to_disk(str(tmp_path / "single"))
    data = load_source(SourceSpec(str(tmp_path / "single")))
    assert data.label_names == ["b", "a"] and data.pool.labels.tolist() == [0, 1, 1]
    assert data.evaluation is None and data.files == {"pool": str(tmp_path / "single")}
    assert data.fingerprint["pool"] == datasets.load_from_disk(str(tmp_path / "single"))._fingerprint
    ds.to_parquet(str(tmp_path / "p.parquet"))
    data = load_source(SourceSpec(str(tmp_path / "p.parquet")))
    assert data.label_names == ["b", "a"] and data.pool.labels.tolist() == [0, 1, 1]


def test_hub_id_reads_the_dataset_dict_of_load_dataset(tmp_path, monkeypatch):
    import datasets

    folder = saved_dict(tmp_path)
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return datasets.load_from_disk(str(folder))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_source(SourceSpec("someone/reviews", data_config="plain"))
    assert calls == [("someone/reviews", "plain")]
    assert data.files == {"pool": "someone/reviews:plain/train", "evaluation": "someone/reviews:plain/validation"}
    assert data.label_names == ["neg", "pos"] and data.evaluation_name == "validation"
    swapped = load_source(SourceSpec("someone/reviews", data_config="plain", train_split="validation", eval_split="train"))
    assert swapped.files == {"pool": "someone/reviews:plain/validation", "evaluation": "someone/reviews:plain/train"}
    assert swapped.evaluation_name == "train" and len(swapped.evaluation) == 3


def test_path_like_data_is_never_sent_to_the_hub(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", _hub_raises(AssertionError("the hub was asked")))
    for given in ("./nothing", "a/b/c", "data.csv", "~/x.jsonl", str(tmp_path / "missing")):
        with pytest.raises(SweetError, match="file not found$"):
            load_source(SourceSpec(given))


# ------------------------------------------------------------------------------------------------ columns


def test_pairs_are_detected(tmp_path):
    path = write(tmp_path / "nli.jsonl", jsonl([
        {"premise": "a man sleeps", "hypothesis": "a man rests", "label": "entailment"},
        {"premise": "a dog runs", "hypothesis": "a cat sits", "label": "contradiction"},
        {"premise": "it rains", "hypothesis": "it is wet", "label": "neutral"},
    ]))
    data = load_source(SourceSpec(str(path)))
    assert data.text_columns == ("premise", "hypothesis")
    assert data.label_names == ["contradiction", "entailment", "neutral"] and data.pool.labels.tolist() == [1, 0, 2]
    assert data.pool.text_tuples()[0] == ("a man sleeps", "a man rests")
    assert data.notes[0].startswith("using text columns 'premise', 'hypothesis' (detected) and label column 'label' (detected)")


def test_detect_columns_rules():
    assert detect_columns(["idx", "question", "sentence", "label"]) == (("question", "sentence"), "label")
    assert detect_columns(["Text", "Label"]) == (("Text",), "Label")  # case-insensitive
    assert detect_columns(["body", "queue"], label_column="queue") == (("body",), "queue")
    assert detect_columns(["a", "b", "y"], text_columns=["a", "b"], label_column="y") == (("a", "b"), "y")
    assert detect_columns(["review", "target", "id"]) == (("review",), "target")
    assert detect_columns(["text", "class"], text_columns=("text",)) == (("text",), "class")
    with pytest.raises(SweetError, match=r"^several possible text columns: 'text_a' \+ 'text_b', 'text'; "):
        detect_columns(["text_a", "text_b", "text", "label"])
    with pytest.raises(SweetError, match=r"^the two text columns of a pair must differ, got 'a', 'a'$"):
        detect_columns(["a", "label"], text_columns=("a", "a"))
    with pytest.raises(SweetError, match=r"^text columns 'x', 'y' not found; the data has columns: a, label$"):
        detect_columns(["a", "label"], text_columns=("x", "y"))


def test_given_columns_need_no_note(tmp_path):
    path = write(tmp_path / "t.csv", csv_rows(["a,x", "b,y"], header="body,queue"))
    data = load_source(SourceSpec(str(path), text_columns=("body",), label_column="queue"))
    assert not any(n.startswith("using ") for n in data.notes)
    data = load_source(SourceSpec(str(path), label_column="queue"))
    assert data.notes[0] == (
        "using text column 'body' (detected) and label column 'queue' (given); pass --text-column to choose others"
    )


# ------------------------------------------------------------------------------------------------ labels


def test_integer_labels_are_values_sorted_numerically(tmp_path):
    path = write(tmp_path / "a.jsonl", jsonl([{"text": t, "label": y} for t, y in [("a", 5), ("b", 1), ("c", 2), ("d", 10)]]))
    data = load_source(SourceSpec(str(path)))
    assert data.label_names == ["1", "2", "5", "10"] and data.pool.labels.tolist() == [2, 0, 1, 3]
    csv = write(tmp_path / "a.csv", csv_rows(["a,5", "b,+1", "c, 2", "d,10", "e,-1", "f,1.0"]))
    data = load_source(SourceSpec(str(csv)))
    assert data.label_names == ["-1", "1", "2", "5", "10"] and data.pool.labels.tolist() == [3, 1, 2, 4, 0, 1]


def test_string_labels_sorted_lexicographically_and_stripped(tmp_path):
    path = write(tmp_path / "a.csv", csv_rows(["a,b", "b, a ", "c,B", "d,10", "e,9"]))
    data = load_source(SourceSpec(str(path)))
    assert data.label_names == ["10", "9", "B", "a", "b"]  # not all numbers: strings
    assert data.pool.labels.tolist() == [4, 3, 2, 0, 1]


def test_boolean_and_whole_float_labels(tmp_path):
    path = write(tmp_path / "b.jsonl", jsonl([{"text": "a", "label": True}, {"text": "b", "label": False}]))
    data = load_source(SourceSpec(str(path)))
    assert data.label_names == ["False", "True"] and data.pool.labels.tolist() == [1, 0]
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [2.0, 0.0, 2.0]}), path)
    data = load_source(SourceSpec(str(path)))
    assert data.label_names == ["0", "2"] and data.pool.labels.tolist() == [1, 0, 1]


def test_dictionary_encoded_parquet_columns(tmp_path):
    path = tmp_path / "d.parquet"
    table = pa.table({"text": pa.array(["a", "b", "c"]).dictionary_encode(), "label": pa.array(["y", "x", "y"]).dictionary_encode()})
    pq.write_table(table, path)
    data = load_source(SourceSpec(str(path)))
    assert data.label_names == ["x", "y"] and data.pool.texts[0].to_pylist() == ["a", "b", "c"]


# ------------------------------------------------------------------------------------------------ texts, notes


def test_drop_invalid_skips_rows_and_says_why(tmp_path):
    """The note quoted in docs/errors.md."""
    rows = ["good,pos", ",neg", "fine,pos", "\u200b,neg", "ok,neg", "nice,pos", "so so, ", "great,pos"]
    path = write(tmp_path / "train.csv", csv_rows(rows))
    data = load_source(SourceSpec(str(path), drop_invalid=True))
    note = next(n for n in data.notes if n.startswith("dropped"))
    assert note.replace(str(tmp_path), "DATA") == (
        "dropped 3 of 8 rows of DATA/train.csv (--drop-invalid): 2 with an empty or blank text, "
        "1 with a missing label (rows 2, 4, 7)"
    )
    assert data.pool.rows.tolist() == [1, 3, 5, 6, 8]
    assert data.pool.texts[0].to_pylist() == ["good", "fine", "ok", "nice", "great"]
    assert data.pool.labels.tolist() == [1, 1, 0, 1, 1]
    jl = write(tmp_path / "t.jsonl", jsonl([
        {"text": "a", "label": 1}, {"text": None, "label": 0}, {"text": 3, "label": 1},
        {"text": " ", "label": 0}, {"text": "b", "label": None}, {"text": "c", "label": 0},
    ]))
    data = load_source(SourceSpec(str(jl), drop_invalid=True))
    note = next(n for n in data.notes if n.startswith("dropped")).replace(str(tmp_path), "DATA")
    assert note == (
        "dropped 4 of 6 rows of DATA/t.jsonl (--drop-invalid): 1 with a missing text, 1 with a text that is not a "
        "string, 1 with an empty or blank text, 1 with a missing label (rows 2, 3, 4, 5)"
    )
    assert data.pool.rows.tolist() == [1, 6]


def test_drop_invalid_applies_to_the_evaluation_too(tmp_path):
    write(tmp_path / "train.csv", GOOD)
    write(tmp_path / "dev.csv", csv_rows(["ok,pos", " ,neg", "x,neg"]))
    data = load_source(SourceSpec(str(tmp_path), drop_invalid=True))
    assert data.evaluation.rows.tolist() == [1, 3] and data.evaluation.labels.tolist() == [1, 0]
    assert any(n.startswith(f"dropped 1 of 3 rows of {tmp_path / 'dev.csv'}") for n in data.notes)


def test_zero_width_characters_with_a_letter_are_text(tmp_path):
    path = write(tmp_path / "a.csv", csv_rows(["\u200bword\u200b,pos", "\u00a0x,neg", "\u200d,neg"]))
    with pytest.raises(SweetError, match="row 3: blank text in column 'text'"):
        load_source(SourceSpec(str(path)))
    data = load_source(SourceSpec(str(path), drop_invalid=True))
    assert data.pool.texts[0].to_pylist() == ["\u200bword\u200b", "\u00a0x"]


def test_small_classes_are_named_in_a_note(tmp_path):
    rows = [f"text {i},big" for i in range(12)] + ["r1,rare", "r2,rare", "m1,mid"] + [f"t {i},ten" for i in range(10)]
    data = load_source(SourceSpec(str(write(tmp_path / "a.csv", csv_rows(rows)))))
    assert "classes with fewer than 10 training rows: 'mid' (1), 'rare' (2)" in data.notes
    assert data.label_names == ["big", "mid", "rare", "ten"]


def test_same_files_give_the_same_table(tmp_path):
    rows = [f"row number {i},{'abc'[i % 3]}" for i in range(5000)]
    path = write(tmp_path / "a.csv", csv_rows(rows))
    first, second = load_source(SourceSpec(str(path))), load_source(SourceSpec(str(path)))
    assert first.pool.texts[0].equals(second.pool.texts[0])
    assert np.array_equal(first.pool.labels, second.pool.labels)
    assert first.pool.texts[0][4999].as_py() == "row number 4999" and first.fingerprint == second.fingerprint


def test_labelled_table_take():
    table = LabelledTable(texts=(pa.chunked_array([["a", "b", "c"]]),), labels=np.array([0, 1, 0]), rows=np.array([1, 2, 4]))
    part = table.take([2, 0])
    assert len(part) == 2 and part.text_tuples() == [("c",), ("a",)]
    assert part.labels.tolist() == [0, 0] and part.rows.tolist() == [4, 1]


def test_many_classes_get_a_note_and_the_small_class_note_stays_short(tmp_path):
    rows = [f"text {i},c{i:03d}" for i in range(150)]
    data = load_source(SourceSpec(str(write(tmp_path / "a.csv", csv_rows(rows)))))
    assert "column 'label' has 150 distinct labels; if it is not the label column, pass --label-column NAME" in data.notes
    small = next(n for n in data.notes if n.startswith("classes with fewer"))
    assert small.endswith("'c009' (1) and 140 more")


def test_eval_rows_with_unknown_labels_do_not_name_other_classes(tmp_path):
    write(tmp_path / "train.csv", csv_rows(["a,x", "b,y"]))
    write(tmp_path / "dev.csv", csv_rows(["c,x", "d,zzz"]))
    with pytest.raises(SweetError, match=r"dev.csv: label 'zzz' does not occur in the training data \(.*, classes: x, y\)$"):
        load_source(SourceSpec(str(tmp_path)))


def test_a_single_text_column_may_be_given_as_a_string(tmp_path):
    path = write(tmp_path / "a.csv", csv_rows(["a,x", "b,y"], header="body,queue"))
    assert load_source(SourceSpec(str(path), text_columns="body", label_column="queue")).text_columns == ("body",)

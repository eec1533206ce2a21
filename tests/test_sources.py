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

"""Task registry, TSV reading with clear errors, the low-resource splits, and the hub code path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sweet import SweetError
from sweet.data import (
    TASKS,
    get_task,
    is_blank,
    load_task,
    make_splits,
    read_unlabelled,
    task_status,
)

from .conftest import write_tsv


def test_registry_has_the_seven_paper_tasks_with_their_metrics():
    assert set(TASKS) == {"sst2", "mrpc", "cola", "mnli", "qnli", "qqp", "rte"}
    assert get_task("CoLA").metric == "matthews"
    assert all(t.metric == "accuracy" for n, t in TASKS.items() if n != "cola")
    assert get_task("SST-2") is get_task("sst2")
    assert get_task("mnli").num_labels == 3
    with pytest.raises(SweetError, match="unknown task 'sts-b'"):
        get_task("sts-b")


def test_same_seed_same_sample_other_seed_other_sample(tiny_glue_dir):
    data = load_task("sst2", tiny_glue_dir)
    a = make_splits(data, 200, seed=1)
    b = make_splits(load_task("sst2", tiny_glue_dir), 200, seed=1)  # e.g. another method's run
    c = make_splits(data, 200, seed=2)
    assert a.train.ids == b.train.ids
    assert a.train.ids != c.train.ids
    assert len(a.train) == 200
    # not the first rows of the file
    assert sorted(a.train.ids, key=int) != [str(i) for i in range(200)]


def test_calibration_is_fixed_and_disjoint_from_training_and_evaluation(tiny_glue_dir):
    data = load_task("sst2", tiny_glue_dir)
    s1, s2 = make_splits(data, 10_000, seed=1), make_splits(data, 300, seed=2)
    assert s1.calibration.ids == s2.calibration.ids
    for s in (s1, s2):
        assert not set(s.calibration.ids) & set(s.train.ids)
        assert s.evaluation_name == "validation" and s.evaluation is data.dev
    # pool smaller than n_train: all of the rest is used
    assert len(s1.train) == len(data.pool) - len(s1.calibration)


def test_task_without_dev_evaluates_on_a_labelled_fixed_held_out_train_part(tiny_glue_dir):
    data = load_task("mnli", tiny_glue_dir)
    assert data.dev is None
    s1, s2 = make_splits(data, 100, seed=1), make_splits(data, 100, seed=2)
    assert s1.evaluation_name == "held-out train"
    assert s1.evaluation.ids == s2.evaluation.ids
    for s in (s1, s2):
        ev, cal, tr = set(s.evaluation.ids), set(s.calibration.ids), set(s.train.ids)
        assert not ev & cal and not ev & tr and not cal & tr


def test_new_dev_file_is_picked_up_without_code_changes(tiny_glue_dir, tmp_path):
    d = tmp_path / "glue"
    shutil.copytree(tiny_glue_dir, d)
    before = make_splits(load_task("mnli", d), 100, seed=0)
    write_tsv(d / "MNLI" / "dev_matched.tsv", ["idx", "premise", "hypothesis", "label"],
              [[0, "a movie", "a film", 0], [1, "a plot", "the story", 2]])
    data = load_task("mnli", d)
    after = make_splits(data, 100, seed=0)
    assert after.evaluation_name == "validation" and len(after.evaluation) == 2
    assert data.files["dev"].endswith("dev_matched.tsv")
    assert after.calibration.ids == before.calibration.ids  # calibration rows do not move


def test_missing_directory_and_files_are_named(tiny_glue_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("SWEET_GLUE_DIR", raising=False)
    with pytest.raises(SweetError, match="SWEET_GLUE_DIR"):
        load_task("sst2", None)
    with pytest.raises(SweetError, match="not found"):
        load_task("sst2", tmp_path / "absent")
    with pytest.raises(SweetError, match=r"QQP/train\.tsv"):
        load_task("qqp", tiny_glue_dir)
    monkeypatch.setenv("SWEET_GLUE_DIR", str(tiny_glue_dir))
    assert len(load_task("sst2").pool) == 600


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "file is empty"),
        ("idx\tsentence\tlabel\n", "no rows after the header"),
        ("idx\ttext\tlabel\n0\thello\t1\n", "text column 'sentence' not found; the data has columns: idx, text, label"),
        ("idx\tsentence\tlabel\n0\thello\t7\n1\tbye\t0\n", "label '7' is not one of sst2's labels"),
        ("idx\tsentence\tlabel\n0\t   \t1\n", "row 1: blank text in column 'sentence'"),
        ("idx\tsentence\tlabel\n0\t\u200b\t1\n", "row 1: blank text"),  # a zero-width space only
        ("idx\tsentence\tlabel\n0\tgood\t1\n1\t\u200d \ufeff\u2060\t0\n", "row 2: blank text"),
        ("idx\tsentence\tlabel\n0\thello\n", "expected 3 tab-separated fields, found 2"),
    ],
)
def test_bad_tsv_files_give_clear_errors(tmp_path, content, message):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text(content, encoding="utf-8")
    with pytest.raises(SweetError, match=message):
        load_task("sst2", tmp_path)


def test_non_utf8_file_is_a_clear_error(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_bytes(b"idx\tsentence\tlabel\n0\tcaf\xe9\t1\n")
    with pytest.raises(SweetError, match="not valid UTF-8"):
        load_task("sst2", tmp_path)


def test_quotes_are_kept_verbatim(tmp_path):
    write_tsv(tmp_path / "SST-2" / "train.tsv", ["idx", "sentence", "label"], [[0, 'he said "no', 1]] * 30 + [[1, "fine", 0]])
    assert load_task("sst2", tmp_path).pool.texts[0] == ('he said "no',)


def test_string_labels_are_mapped(tmp_path):
    write_tsv(tmp_path / "RTE" / "train.tsv", ["idx", "sentence1", "sentence2", "label"],
              [[0, "a", "b", "not_entailment"], [1, "c", "d", "entailment"]])
    assert load_task("rte", tmp_path).pool.labels.tolist() == [1, 0]


def test_invalid_sample_size():
    with pytest.raises(SweetError, match="must be positive"):
        make_splits(None, 0, seed=0)  # type: ignore[arg-type]


def test_task_status_reports_present_and_missing_files(tiny_glue_dir):
    rows = {r["task"]: r for r in task_status(tiny_glue_dir)}
    assert rows["sst2"]["train"] == "train.tsv" and rows["sst2"]["dev"] == "dev.tsv"
    assert rows["mnli"]["train"] == "train_pool.tsv" and rows["mnli"]["dev"] is None
    assert rows["qqp"]["train"] is None


def test_unlabelled_input_parsing():
    sst2, rte = get_task("sst2"), get_task("rte")
    ex = read_unlabelled(["a fine film\n", "\n", "dull\n"], sst2)
    assert ex.texts == [("a fine film",), ("dull",)] and ex.labels is None
    assert read_unlabelled(["a\tb"], rte).texts == [("a", "b")]
    with pytest.raises(SweetError, match="expects 2 tab-separated"):
        read_unlabelled(["only one"], rte)
    with pytest.raises(SweetError, match="predict input is empty"):
        read_unlabelled(["", "  "], sst2)


def test_hub_code_path_with_a_local_dataset_repository(tmp_path):
    """The hub loader calls datasets.load_dataset(name, config); a local folder laid out like the hub's
    glue repository (README with configs, parquet files) exercises exactly that call offline."""
    import datasets

    repo = tmp_path / "glue-repo"
    (repo / "sst2").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("validation", 10)):
        labels = rng.integers(0, 2, n).tolist()
        ds = datasets.Dataset.from_dict({"sentence": [f"text {i}" for i in range(n)], "label": labels, "idx": list(range(n))})
        ds.to_parquet(str(repo / "sst2" / f"{split}-00000-of-00001.parquet"))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n  - split: train\n    path: sst2/train-*\n"
        "  - split: validation\n    path: sst2/validation-*\n---\n"
    )
    data = load_task("sst2", source="hub", dataset_name=str(repo))
    assert len(data.pool) == 50 and len(data.dev) == 10
    assert data.pool.texts[3] == ("text 3",)
    assert data.files["dev"].endswith("sst2/validation")
    with pytest.raises(SweetError, match="unknown data source"):
        load_task("sst2", source="ftp")


@pytest.mark.parametrize("text", ["", " ", "\t \n", "\u00a0", "\u3000", "\u2028", "\u200b", "\u200b\u200c\u200d",
                                  "\u2060", "\ufeff", "\u00ad", "\u200e\u200f", "\ufe0f", "\u3164", "\x00\x1f",
                                  " \u200b \u2060 "])
def test_blank_text_is_whitespace_control_or_invisible_only(text):
    assert is_blank(text)


@pytest.mark.parametrize("text", ["a", " a ", "\u200bgood\u200b", "0", ".", "\U0001f600", "\u2764\ufe0f", "caf\u00e9",
                                  "\u0301", "\u4e2d"])
def test_text_with_anything_visible_is_not_blank(text):
    assert not is_blank(text)


def test_predict_input_treats_zero_width_lines_as_the_tsv_readers_do():
    sst2, rte = get_task("sst2"), get_task("rte")
    ex = read_unlabelled(["a fine film\n", "\u200b\n", "\u2060 \ufeff\n", "dull\n"], sst2)
    assert ex.texts == [("a fine film",), ("dull",)]
    with pytest.raises(SweetError, match="predict input is empty"):
        read_unlabelled(["\u200b\n", "\u200d\r\n"], sst2)
    with pytest.raises(SweetError, match=r"input line 2: empty text in a pair \(sentence1, sentence2\)"):
        read_unlabelled(["a\tb\n", "a film\t\u200b\n"], rte)


def test_a_headerless_tsv_is_told_which_columns_it_has(tmp_path):
    from sweet.data import read_task_file

    path = tmp_path / "mine.tsv"
    path.write_text("a gripping film\t1\nflat and dull\t0\n", encoding="utf-8")
    with pytest.raises(SweetError) as err:
        read_task_file(path, get_task("sst2"))
    assert str(err.value) == f"{path}: text column 'sentence' not found; the data has columns: a gripping film, 1"


def test_a_preset_file_may_be_any_format_the_sources_read(tmp_path):
    """One reader: a preset's file in CSV or Parquet reads as its TSV does (same texts, labels and idx ids)."""
    from sweet.data import read_task_file

    rows = [[7, 'a "quoted" film', 1], [9, "dull", 0], [11, "fine", 1]]
    write_tsv(tmp_path / "a.tsv", ["idx", "sentence", "label"], rows)
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["idx", "sentence", "label"])
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    read = [read_task_file(tmp_path / f"a.{ext}", get_task("sst2")) for ext in ("tsv", "csv", "parquet")]
    for ex in read:
        assert ex.texts == [('a "quoted" film',), ("dull",), ("fine",)]
        assert ex.labels.tolist() == [1, 0, 1] and ex.ids == ["7", "9", "11"]


@pytest.mark.parametrize("text", ["", " ", "\u00a0", "\u2028", "\u200b", "\u2060", "\ufeff", "\u00ad", "\ufe0f", "\u3164",
                                  "\x00\x1f", "\u034f", "\u115f\u1160", "\U000e0100", "\u180b", "a", "\u200bgood",
                                  "\u2764\ufe0f", "\u0301", "\u4e2d", "0"])
def test_the_data_readers_and_predict_input_share_one_blank_rule(text):
    """sweet.sources (training and evaluation data, vectorised) and is_blank (predict input) agree."""
    import pyarrow as pa

    from sweet.sources.part import Raw
    from sweet.sources.texts import check_text

    check = check_text(Raw(pa.table({"t": [text]})), "t")
    assert bool(check.blank[0] or check.missing[0]) == is_blank(text)

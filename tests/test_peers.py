"""The training benchmark's pieces on a tiny backbone (not timed): the shared sample, sweet's trainer, the Hugging
Face Trainer, the report and its Markdown, and the script's command line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sweet.errors import SweetError


ROOT = Path(__file__).resolve().parents[1]


def test_training_sample_is_the_runs_sample(tiny_backbone_dir, tiny_glue_dir):
    from sweet.data import load_task, make_splits
    from sweet.peers import training_sample
    from sweet.rundir import load_tokenizer

    tok = load_tokenizer(str(tiny_backbone_dir))
    task, enc_train, enc_eval, split = training_sample("sst2", 100, 3, str(tiny_glue_dir), tok)
    splits = make_splits(load_task("sst2", str(tiny_glue_dir)), 100, 3)
    assert task.name == "sst2" and split == "validation" and len(enc_eval) == 120
    assert enc_train.labels == splits.train.labels and len(enc_train) == 100
    assert enc_train.input_ids[0] == tok(*splits.train.texts[0])["input_ids"]


def test_train_benchmark_on_a_tiny_backbone(tiny_backbone_dir, tiny_glue_dir):
    pytest.importorskip("accelerate")
    from sweet.peers import format_train_benchmark, train_benchmark

    report = train_benchmark("sst2", 64, epochs=1, learning_rate=1e-3, batch_size=16, seed=0,
                             backbone=str(tiny_backbone_dir), ours_precisions=("fp32", "auto"),
                             trainer_bf16=(False,), data_dir=str(tiny_glue_dir), threads=1)
    names = [r["name"] for r in report["rows"]]
    # auto is fp32 for training on the CPU: recorded as such, not run twice
    assert report["ours_precisions_asked"] == {"fp32": "fp32", "auto": "fp32"}
    assert names == ["sweet sweet fp32", "HF Trainer fp32"]
    ours, hf = report["rows"]
    assert ours["steps"] == hf["steps"] == 4  # the same 64 examples, batch 16, one epoch
    assert ours["exit_layers"][-1] == 4 and len(ours["exit_scores"]) == len(ours["exit_layers"])
    assert ours["score"] == ours["exit_scores"][-1] and 0 <= hf["score"] <= 100
    assert hf["time_ratio_vs_trainer_fp32"] == 1.0 and hf["score_delta_vs_trainer_fp32"] == 0.0
    assert ours["time_ratio_vs_trainer_fp32"] == pytest.approx(ours["seconds"] / hf["seconds"])
    assert ours["score_delta_vs_trainer_fp32"] == pytest.approx(ours["score"] - hf["score"])
    assert hf["optim"].startswith("adamw") and hf["max_grad_norm"] == 1.0 and hf["lr_scheduler"].endswith("linear")
    # the Trainer gets length-grouped batches, as ours are length-bucketed (random ones would pad more)
    assert hf["train_sampler"] == "LengthGroupedSampler"
    assert report["n_train"] == 64 and report["n_evaluation"] == 120 and report["threads"] == 1
    text = format_train_benchmark(report)
    assert "| HF Trainer fp32 |" in text and "auto -> fp32" in text and "per-exit scores L1:" in text
    assert "sampler LengthGroupedSampler" in text and "group_by_length" in report["protocol"]
    json.dumps(report)


def test_group_by_length_keyword_follows_the_transformers_release():
    import dataclasses

    from sweet.peers.trainer import _group_by_length

    @dataclasses.dataclass
    class Older:
        group_by_length: bool = False

    @dataclasses.dataclass
    class Newer:
        train_sampling_strategy: str = "random"

    assert _group_by_length(Older) == {"group_by_length": True}
    assert _group_by_length(Newer) == {"train_sampling_strategy": "group_by_length"}


def test_hf_trainer_bf16_and_ours_learn(tiny_backbone_dir, tiny_glue_dir):
    """The sample is learnable from one keyword: both trainers get well above chance."""
    pytest.importorskip("accelerate")
    from sweet.peers import hf_trainer_finetune, ours_finetune, training_sample
    from sweet.rundir import load_tokenizer

    task, enc_train, enc_eval, _ = training_sample("sst2", 400, 0, str(tiny_glue_dir),
                                                   load_tokenizer(str(tiny_backbone_dir)))
    hf = hf_trainer_finetune(str(tiny_backbone_dir), task, enc_train, enc_eval, bf16=True, learning_rate=3e-3,
                             epochs=3, threads=1)
    assert hf["bf16"] and hf["steps"] == 75 and hf["score"] > 80
    ours = ours_finetune(str(tiny_backbone_dir), task, enc_train, enc_eval, method="early_exit", learning_rate=3e-3,
                         epochs=3, threads=1)
    assert ours["precision"] == "fp32" and ours["steps"] == 75 and min(ours["exit_scores"]) > 80


def test_train_benchmark_errors(tiny_backbone_dir, tiny_glue_dir, monkeypatch):
    from sweet import peers

    with pytest.raises(SweetError, match="repeats"):
        peers.train_benchmark("sst2", 64, backbone=str(tiny_backbone_dir), data_dir=str(tiny_glue_dir), repeats=0)
    with pytest.raises(SweetError, match="int8"):
        peers.train_benchmark("sst2", 64, backbone=str(tiny_backbone_dir), data_dir=str(tiny_glue_dir),
                              ours_precisions=("int8",), trainer_bf16=())
    monkeypatch.setattr(peers.trainer, "trainer_missing", lambda: "the Hugging Face Trainer needs accelerate")
    with pytest.raises(SweetError, match="needs accelerate"):
        peers.train_benchmark("sst2", 64, backbone=str(tiny_backbone_dir), data_dir=str(tiny_glue_dir))


def test_script_writes_json_and_markdown(tiny_backbone_dir, tiny_glue_dir, tmp_path, capsys):
    pytest.importorskip("accelerate")
    spec = importlib.util.spec_from_file_location("train_vs_trainer", ROOT / "benchmarks" / "train_vs_trainer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "res" / "train"
    rc = script.main(["--task", "sst2", "--n-train", "32", "--backbone", str(tiny_backbone_dir), "--ours", "fp32",
                      "--trainer", "fp32", "--threads", "1", "--data-dir", str(tiny_glue_dir), "--output", str(out)])
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["name"] for r in report["rows"]] == ["sweet sweet fp32", "HF Trainer fp32"]
    assert report["command"].startswith("python benchmarks/train_vs_trainer.py --task sst2")
    assert "| sweet sweet fp32 |" in out.with_suffix(".md").read_text()
    assert script.main(["--trainer", "fp16", "--output", str(out)]) == 2
    assert "--trainer takes fp32 and/or bf16" in capsys.readouterr().err


def test_ours_in_bf16_is_its_own_row(tiny_backbone_dir, tiny_glue_dir):
    from sweet.peers import train_benchmark

    with pytest.warns(UserWarning, match="no native bf16") if not _native_bf16() else _nothing():
        report = train_benchmark("sst2", 32, epochs=1, learning_rate=1e-3, backbone=str(tiny_backbone_dir),
                                 ours_precisions=("fp32", "bf16"), trainer_bf16=(), data_dir=str(tiny_glue_dir),
                                 threads=1)
    rows = report["rows"]
    assert [r["name"] for r in rows] == ["sweet sweet fp32", "sweet sweet bf16"]
    assert [r["precision"] for r in rows] == ["fp32", "bf16"] and all(r["steps"] == 2 for r in rows)
    assert "time_ratio_vs_trainer_fp32" not in rows[0]  # no Trainer in fp32 to compare with
    assert "| sweet sweet bf16 |" in __import__("sweet.peers").peers.trainer.format_train_benchmark(report)


def _native_bf16() -> bool:
    import torch

    from sweet.precision import native_bf16

    return native_bf16(torch.device("cpu"))


def _nothing():
    import contextlib

    return contextlib.nullcontext()

"""sweet bench with its peers: rows and fields, the accounting, precisions, ONNX Runtime rows and their skip."""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np
import pytest
import torch

from sweet.errors import SweetError

from .conftest import one_torch_thread, padded_batch, tiny_model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_backbone_dir, tiny_glue_dir):
    from sweet.runs import RunConfig, run

    out = tmp_path_factory.mktemp("bench") / "run"
    with one_torch_thread():
        metrics = run(RunConfig(task="sst2", method="early_exit", backbone=str(tiny_backbone_dir),
                                exit_layers=[1, 2, 4], n_train=96, epochs=1, learning_rate=1e-3,
                                data_dir=str(tiny_glue_dir)), out, progress=False)
    return out, metrics


def _rows(report, **where):
    return [p for p in report["points"] if all(p.get(k) == v for k, v in where.items())]


# ------------------------------------------------------------------------------------------- precisions


def test_parse_precisions_defaults_all_and_errors(monkeypatch):
    from sweet import bench, precision

    cpu = torch.device("cpu")
    for module in (precision, bench.measure):  # the name each module calls
        monkeypatch.setattr(module, "native_bf16", lambda device: False)
    assert bench.parse_precisions(None, cpu) == ["fp32", "int8"]
    assert bench.parse_precisions("default", cpu) == ["fp32", "int8"]
    assert bench.parse_precisions("int8", cpu) == ["fp32", "int8"]  # fp32 is always the reference
    assert bench.parse_precisions(" int8 , fp32 ", cpu) == ["fp32", "int8"]
    assert bench.parse_precisions("all", cpu) == ["fp32", "bf16", "int8"]  # bf16 runs (emulated); fp16 cannot
    for module in (precision, bench.measure):
        monkeypatch.setattr(module, "native_bf16", lambda device: True)
    assert bench.parse_precisions("default", cpu) == ["fp32", "bf16", "int8"]
    assert bench.parse_precisions("auto", cpu) == ["fp32", "bf16"]
    with pytest.raises(SweetError, match="fp16 is not supported on the CPU"):
        bench.parse_precisions("fp32,fp16", cpu)
    with pytest.raises(SweetError, match="unknown precision 'fp8'"):
        bench.parse_precisions("fp8", cpu)
    with pytest.raises(SweetError, match="empty"):
        bench.parse_precisions(" , ", cpu)


# ------------------------------------------------------------------------------------------- the report


def test_bench_rows_fields_and_accounting(tiny_run):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from sweet.bench import BASELINE, TOKENIZE, TOKENIZE_PAD, benchmark, format_bench

    out, metrics = tiny_run
    report = benchmark(out, batch_sizes=[16], repeats=2, warmup=1, progress=False, device="cpu",
                       precisions="fp32,int8", peers=True)
    n = report["n_examples"]
    assert n == 120 and report["precisions"] == ["fp32", "int8"] and report["device"] == "cpu"
    assert report["placements"]["int8"]["precision"] == "int8" and report["placements"]["fp32"]["device"] == "cpu"
    assert report["onnxruntime"]["installed"] and report["onnxruntime"]["version"]
    assert report["onnxruntime"]["intra_op_num_threads"] == report["threads"] == 1
    names = [p["name"] for p in report["points"]]
    assert names[:4] == [BASELINE, "torch int8 full", "onnxruntime fp32 full", "onnxruntime int8 full"]
    thresholds = report["thresholds"]
    assert len(thresholds) == 11 and len(names) == 4 + 2 * 11
    base = _rows(report, baseline=True)
    assert len(base) == 1 and base[0]["measured_speedup"] == 1.0
    ort_int8 = _rows(report, name="onnxruntime int8 full")[0]
    for p in report["points"]:
        secs = p["seconds_per_repeat"]
        assert len(secs) == 2 and p["seconds"] == pytest.approx(statistics.median(secs))
        assert p["examples_per_second"] == pytest.approx(n / p["seconds"])
        # speedup: paired within a repeat, then the median
        assert p["measured_speedup"] == pytest.approx(
            statistics.median(b / s for b, s in zip(base[0]["seconds_per_repeat"], secs)))
        assert p["ratio"] == pytest.approx(p["measured_speedup"] * p["cost_ratio"])
        assert p["ideal_speedup"] == pytest.approx(1 / p["cost_ratio"])
        assert p["throughput_vs_onnxruntime_int8"] == pytest.approx(
            statistics.median(o / s for o, s in zip(ort_int8["seconds_per_repeat"], secs)))
        # texts in: tokenization (engines) or tokenization + padding (full models) added on both sides, per repeat
        tok = report["tokenization"]["16"]
        prep = tok["tokenize_seconds_per_repeat" if p["kind"] == "engine" else "tokenize_pad_seconds_per_repeat"]
        assert p["throughput_vs_onnxruntime_int8_tokenized"] == pytest.approx(statistics.median(
            (o + op) / (s + sp) for o, op, s, sp in
            zip(ort_int8["seconds_per_repeat"], tok["tokenize_pad_seconds_per_repeat"], secs, prep)))
        assert all(x > 0 for x in prep)
        assert 0.0 <= p["accuracy"] <= 100.0
    # fp32 engine rows: the evaluated curve (same decisions as the evaluation path, so same cost and score)
    curve = metrics["evaluation"]["curve"]
    fp32 = _rows(report, kind="engine", precision="fp32")
    assert [p["threshold"] for p in fp32] == thresholds
    assert [p["cost_ratio"] for p in fp32] == pytest.approx([c["cost_ratio"] for c in curve])
    assert [p["accuracy"] for p in fp32] == pytest.approx([c["score"] for c in curve])
    for p in fp32:
        assert sum(p["exit_counts"]) == n and p["accuracy_delta_vs_fp32"] == 0.0
        assert p["ratio_same_precision"] == pytest.approx(p["speedup_vs_same_precision_full"] * p["cost_ratio"])
    # the last exit's accuracy at threshold 1 (everything leaves at the last exit) = the full model's
    assert fp32[-1]["cost_ratio"] == pytest.approx(1.0) and fp32[-1]["accuracy"] == pytest.approx(base[0]["accuracy"])
    assert metrics["evaluation"]["per_exit"][-1]["score"] == pytest.approx(base[0]["accuracy"])
    int8 = _rows(report, kind="engine", precision="int8")
    for a, b in zip(int8, fp32):
        assert a["accuracy_delta_vs_fp32"] == pytest.approx(a["accuracy"] - b["accuracy"])
        assert sum(a["exit_counts"]) == n
    # ONNX Runtime fp32 runs the same model: the same predictions up to float noise
    assert _rows(report, name="onnxruntime fp32 full")[0]["accuracy"] == pytest.approx(base[0]["accuracy"], abs=1.0)
    table = format_bench(report)
    assert "onnxruntime int8 full" in table and "engine int8 t=1 " in table and "(baseline)" in table
    assert "| vs ORT int8 | vs ORT int8 model-only |" in table
    # the CPU kind goes with every bench: its bf16/AMX support decides which precision is fast
    from sweet.precision import native_bf16
    assert report["cpu"]["native_bf16"] == native_bf16(torch.device("cpu")) and report["cpu"]["model"]
    assert f"native bf16: {'yes' if report['cpu']['native_bf16'] else 'no'})" in table.splitlines()[1]
    assert TOKENIZE not in names and TOKENIZE_PAD not in names  # timed, but not rows
    json.dumps(report)  # the report is JSON


def test_bench_onnx_engine_rows_compare_int8_with_the_full_model_quantized_the_same_way(tiny_run):
    """The ONNX int8 engine's same-precision ratio is taken against ONNX Runtime's full model quantized with the
    engine's recipe (per-channel), not against quantize_dynamic's per-tensor default, which stays the 'vs ORT int8'
    peer."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from sweet.bench import benchmark, format_bench
    from sweet.bench.measure import ENGINE_RECIPE

    out, _ = tiny_run
    report = benchmark(out, batch_sizes=[16], repeats=2, warmup=0, progress=False, device="cpu", precisions="fp32",
                       peers=True, runtime="onnxruntime", max_examples=48)
    recipe = _rows(report, name=f"onnxruntime {ENGINE_RECIPE} full")
    assert len(recipe) == 1 and recipe[0]["precision"] == "int8" and recipe[0]["kind"] == "full"
    assert report["onnxruntime"]["engine_recipe_int8"]["per_channel"] is True
    per_tensor = _rows(report, name="onnxruntime int8 full")[0]
    fp32_full = _rows(report, name="onnxruntime fp32 full")[0]
    for p in _rows(report, kind="engine", runtime="onnxruntime"):
        ref = recipe[0] if p["precision"] == "int8" else fp32_full
        assert p["speedup_vs_same_precision_full"] == pytest.approx(
            statistics.median(r / s for r, s in zip(ref["seconds_per_repeat"], p["seconds_per_repeat"])))
        assert p["throughput_vs_onnxruntime_int8"] == pytest.approx(
            statistics.median(o / s for o, s in zip(per_tensor["seconds_per_repeat"], p["seconds_per_repeat"])))
    assert "int8 engine-recipe" in format_bench(report)


def test_bench_skips_onnx_cleanly_when_not_installed(tiny_run, monkeypatch):
    from sweet.bench import benchmark, format_bench

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    out, _ = tiny_run
    report = benchmark(out, batch_sizes=[32], repeats=1, warmup=0, progress=False, device="cpu", precisions="fp32")
    assert not report["onnxruntime"]["installed"] and report["onnxruntime"]["version"] is None
    assert not _rows(report, runtime="onnxruntime")
    assert any("ONNX Runtime rows skipped" in n and 'pip install "sweet[onnx]"' in n for n in report["notes"])
    assert all(p["throughput_vs_onnxruntime_int8"] is None for p in report["points"])
    assert all(p["throughput_vs_onnxruntime_int8_tokenized"] is None for p in report["points"])
    assert report["tokenization"] == {}
    assert len(report["points"]) == 1 + 11
    assert "ONNX Runtime rows skipped" in format_bench(report)


def test_bench_no_peers_and_bad_options(tiny_run):
    from sweet.bench import benchmark

    out, _ = tiny_run
    report = benchmark(out, batch_sizes=[8, 64], repeats=1, warmup=1, progress=False, device="cpu",
                       precisions="fp32", peers=False, max_examples=40)
    assert report["n_examples"] == 40 and report["batch_sizes"] == [8, 64]
    assert {p["batch_size"] for p in report["points"]} == {8, 64} and not _rows(report, runtime="onnxruntime")
    assert any("peers off" in n for n in report["notes"])
    for bad in (dict(batch_sizes=[0]), dict(repeats=0), dict(threads=0), dict(precisions="fp16"),
                dict(device="cuda:7"), dict(max_examples=0)):
        with pytest.raises(SweetError):
            benchmark(out, progress=False, **{"device": "cpu", **bad})


@pytest.mark.slow
def test_cli_bench(tiny_run, tmp_path):
    from .test_cli import sweet

    out, _ = tiny_run
    path = tmp_path / "b.json"
    r = sweet("bench", str(out), "--batch-sizes", "16", "--repeats", "1", "--precisions", "fp32", "--no-peers",
              "--threads", "1", "--device", "cpu", "--output", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr
    report = json.loads(path.read_text())
    assert report["precisions"] == ["fp32"] and report["threads"] == 1 and len(report["points"]) == 12
    assert "torch fp32 full (baseline)" in r.stdout and "engine fp32 t=1 " in r.stdout
    r = sweet("bench", str(out), "--precisions", "fp16", "--device", "cpu", "--no-progress")
    assert r.returncode == 2 and "fp16 is not supported on the CPU" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = sweet("bench", str(out), "--batch-sizes", "1,x", "--no-progress")
    assert r.returncode == 2 and "--batch-sizes" in r.stderr


# ------------------------------------------------------------------------------------------- ONNX export


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_onnx_export_matches_torch_and_int8_is_close(kind, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from sweet.peers import FullModel, OnnxClassifier, export_onnx, quantize_onnx_int8

    model = tiny_model(kind, "early_exit", num_labels=3).eval()
    use_tt = "token_type_ids" in model._inputs
    path = export_onnx(model, tmp_path / "m.onnx", use_tt)
    ids, mask = padded_batch(n=9, width=21, seed=3)  # another batch size and length than the export's
    batch = {"input_ids": ids, "attention_mask": mask}
    if use_tt:
        batch["token_type_ids"] = torch.zeros_like(ids)
    with torch.no_grad():
        want = FullModel(model, use_tt)(**batch).numpy()
    np_batch = {k: v.numpy() for k, v in batch.items()}
    got = OnnxClassifier(path, threads=1).logits(np_batch)
    assert got.shape == want.shape == (9, 3)
    assert np.abs(got - want).max() < 1e-4
    # the last head reads the full encoder: a head of an earlier exit would give other logits
    q = OnnxClassifier(quantize_onnx_int8(path, tmp_path / "q.onnx"), threads=1).logits(np_batch)
    scale = np.abs(want).max()
    assert 0 < np.abs(q - want).max() < 0.25 * scale  # quantized: close, not equal


def test_onnx_export_refuses_a_cast_model(tmp_path):
    pytest.importorskip("onnx")
    from sweet.peers import export_onnx

    model = tiny_model("bert", "early_exit").eval()
    model.backbones[0].to(torch.bfloat16)
    with pytest.raises(SweetError, match="fp32 model"):
        export_onnx(model, tmp_path / "m.onnx", True)


def test_onnx_missing_reason(monkeypatch):
    from sweet import peers

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert "onnxruntime not installed" in peers.onnx_missing()
    with pytest.raises(SweetError, match="cannot export to ONNX: onnxruntime not installed"):
        peers.export_onnx(tiny_model("bert", "early_exit"), "x.onnx", True)

"""The measurement behind ``sweet bench``: which precisions to time, the interleaved timing, and :func:`benchmark` itself (see :mod:`sweet.bench`)."""


from __future__ import annotations

import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cost import cost_ratio
from ..encoding import encode
from ..errors import SweetError
from ..export import export_run
from ..inference import EarlyExitEngine
from ..loader import check_runtime
from ..metrics import score
from ..peers import (
    OnnxClassifier,
    export_onnx,
    onnx_missing,
    onnx_providers,
    onnxruntime_version,
    quantize_onnx_int8,
)
from ..precision import (
    cpu_kind,
    native_bf16,
    resolve_device,
    resolve_precision,
)
from ..predictor import Predictor
from ..rundir import environment, load_run_config
from ..runs import evaluation_examples
from ..runtime import OnnxPredictor, onnxruntime_missing
from .timed import (
    engine_run,
    first_rows,
    onnx_engine_run,
    onnx_full,
    padded_batches,
    tokenize_and_pad,
    tokenize_texts,
    torch_full,
)

BASELINE = "torch fp32 full"
#: the session key (row "onnxruntime int8 engine-recipe full") of ONNX Runtime int8 on the full model quantized as
#: the ONNX engine's graphs are: the ONNX int8 engine's same-precision reference
ENGINE_RECIPE = "int8 engine-recipe"
TOKENIZE, TOKENIZE_PAD = "tokenize", "tokenize+pad"  # timed with the rows, not rows themselves


def runnable_precisions(device: torch.device) -> list[str]:
    """Every inference precision this device can run (bf16 on a CPU without native bf16 runs, emulated)."""

    out = []
    for p in ("fp32", "bf16", "fp16", "int8"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                resolve_precision(p, device)
        except SweetError:
            continue
        out.append(p)
    return out


def default_precisions(device: torch.device) -> list[str]:
    """The precisions worth comparing on ``device``: fp32 plus what it runs fast (CPU: int8, and bf16 where the
    processor has native bf16; GPU: bf16 where supported, else fp16)."""

    if device.type == "cpu":
        return ["fp32", *(["bf16"] if native_bf16(device) else []), "int8"]
    if device.type == "cuda":
        return ["fp32", "bf16" if native_bf16(device) else "fp16"]
    return ["fp32"]


def parse_precisions(text: str | Sequence[str] | None, device: torch.device) -> list[str]:
    """``None``/``default`` -> :func:`default_precisions`; ``all`` -> :func:`runnable_precisions`; else a comma list,
    each checked against the device. fp32 is always included (it is the reference)."""

    if text is None:
        items = ["default"]
    elif isinstance(text, str):
        items = [t.strip().lower() for t in text.split(",") if t.strip()]
    else:
        items = [str(t).strip().lower() for t in text]
    if not items:
        raise SweetError("--precisions is empty; give a comma list such as fp32,int8, or 'default' or 'all'")
    out: list[str] = []
    for item in items:
        if item == "default":
            chosen = default_precisions(device)
        elif item == "all":
            chosen = runnable_precisions(device)
        elif item == "auto":
            chosen = [resolve_precision("auto", device)]
        else:
            with warnings.catch_warnings():  # bf16 on a CPU without native bf16: asked for explicitly, so it runs
                warnings.simplefilter("ignore")
                chosen = [resolve_precision(item, device)]  # unknown or unrunnable -> one-line SweetError
        out.extend(p for p in chosen if p not in out)
    return ["fp32", *[p for p in out if p != "fp32"]]


def _time_interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                      progress: bool = False) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run every configuration once per repeat, one after another, so that a slow spell on a shared machine hits
    all configurations of that repeat alike. Returns, per name, the seconds of each repeat, and the output of
    each configuration's first repeat."""
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    outputs: dict[str, object] = {}
    bar = tqdm(total=repeats * len(fns), desc="bench", disable=not progress, unit="config")
    for r in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn()
            seconds[name].append(time.perf_counter() - start)
            if r == 0:
                outputs[name] = out
            bar.update(1)
    bar.close()
    return seconds, outputs


def _median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over repeats of num[r] / den[r] (paired within a repeat)."""
    return statistics.median(a / b for a, b in zip(num, den))


def benchmark(
    run_dir: str | Path,
    batch_sizes: Sequence[int] = (64,),
    repeats: int = 3,
    warmup: int = 2,
    max_examples: int | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    policy: str = "confidence",
    device: str = "auto",
    precisions: str | Sequence[str] | None = None,
    peers: bool = True,
    data: str | None = None,
    data_config: str | None = None,
    eval_split: str | None = None,
    runtime: str = "torch",
) -> dict:
    """Time the engine against the full model (torch at each precision, ONNX Runtime fp32/int8); see the module
    docstring. ``precisions``: a comma list or sequence, ``default`` or ``all`` (:func:`parse_precisions`).

    ``runtime="onnxruntime"`` adds the ONNX Runtime engine (:mod:`sweet.runtime`, the run exported per segment to
    a temporary folder, fp32 and int8 graphs) at every threshold, next to the torch engine; each of its rows also has
    the share of rows whose exit and label equal the torch fp32 engine's at that threshold.

    Long on purpose: one measurement in the order it runs (load, warm up, time each configuration, the peers, write), so that what is timed is visible in one place."""

    if repeats < 1 or warmup < 0 or not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise SweetError("repeats and batch sizes must be positive (and warm-up batches non-negative)")
    if threads is not None:
        if threads < 1:
            raise SweetError(f"threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    precs = parse_precisions(precisions, dev)
    cfg = load_run_config(run_dir)
    predictors = {p: Predictor.load(run_dir, device=str(dev), precision=p, policy=policy) for p in precs}
    ref = predictors["fp32"]
    model, task, collator = ref.model, ref.task, ref.collator
    examples, split_name = evaluation_examples(cfg, task, data_dir, data, data_config, eval_split)
    if max_examples is not None:
        if max_examples < 1:
            raise SweetError(f"max examples must be positive, got {max_examples}")
        examples = examples.subset(range(min(max_examples, len(examples))))
    encoded = encode(ref.tokenizer, examples, ref.max_length, warn=False)
    labels = np.asarray(examples.labels)
    n = len(encoded)
    method, layers = model.config.method, model.exit_layers
    thresholds = [float(t) for t in ref.get_policy(policy).threshold_grid(model.config.num_labels)]
    torch_threads = torch.get_num_threads()

    notes: list[str] = []
    onnx_info: dict = {"installed": onnx_missing() is None, "version": onnxruntime_version()}
    sessions: dict[str, object] = {}
    tmp = tempfile.TemporaryDirectory(prefix="sweet-bench-onnx-")
    try:
        onnx_engines = _onnx_engines(run_dir, check_runtime(runtime), dev, torch_threads, Path(tmp.name), onnx_info)
        if peers:
            recipe = onnx_info["engine_export"]["int8"] if "int8" in onnx_engines else None
            sessions = _onnx_sessions(model, collator, dev, torch_threads, Path(tmp.name), notes, onnx_info, recipe)
        else:
            notes.append("peers off (--no-peers): no ONNX Runtime full-model rows")

        points = []
        tokenization: dict[int, dict] = {}
        for bs in batch_sizes:
            bs = int(bs)
            batches = padded_batches(encoded, collator, bs)
            np_batches = [{k: v.numpy() for k, v in b.items()} for b in batches] if sessions else []
            fns: dict[str, Callable[[], object]] = {}
            for p in precs:
                fns[f"torch {p} full"] = torch_full(predictors[p].model, batches)
            for p, sess in sessions.items():
                fns[f"onnxruntime {p} full"] = onnx_full(sess, np_batches)
            for p in precs:
                pol = predictors[p].get_policy(policy)
                for t in thresholds:
                    engine = EarlyExitEngine(predictors[p].model, pol, t)
                    fns[f"engine {p} t={t:.4g}"] = engine_run(engine, encoded, collator, bs)
            for p, onnx_predictor in onnx_engines.items():
                for t in thresholds:
                    fns[f"onnx engine {p} t={t:.4g}"] = onnx_engine_run(onnx_predictor, encoded, t, policy, bs)
            # the texts' tokenization, timed in the same repeats: "tokenize" is what an engine row needs before it
            # (the engine pads its own batches), "tokenize+pad" what a full-model row needs (it is fed padded batches)
            if "int8" in sessions:
                fns[TOKENIZE] = tokenize_texts(ref.tokenizer, examples, ref.max_length)
                fns[TOKENIZE_PAD] = tokenize_and_pad(ref.tokenizer, examples, ref.max_length, collator, bs,
                                                  numpy=True)
            # warm-up: every configuration on the first batches
            warm_rows = min(n, max(1, warmup) * bs)
            warm_encoded = first_rows(encoded, warm_rows)
            if warmup > 0:
                for p in precs:
                    torch_full(predictors[p].model, batches[:warmup])()
                for sess in sessions.values():
                    onnx_full(sess, np_batches[:warmup])()
                for p in precs:
                    pol = predictors[p].get_policy(policy)
                    for t in thresholds:
                        engine_run(EarlyExitEngine(predictors[p].model, pol, t), warm_encoded, collator, bs)()
                for onnx_predictor in onnx_engines.values():
                    for t in thresholds:
                        onnx_engine_run(onnx_predictor, warm_encoded, t, policy, bs)()
            seconds, outputs = _time_interleaved(fns, repeats, progress)

            base = seconds[BASELINE]
            ort_int8 = seconds.get("onnxruntime int8 full")
            tok, tok_pad = seconds.pop(TOKENIZE, None), seconds.pop(TOKENIZE_PAD, None)
            if tok is not None:
                tokenization[bs] = {"tokenize_seconds_per_repeat": tok, "tokenize_pad_seconds_per_repeat": tok_pad}
            fp32_acc_by_t: dict[float, float] = {}

            def common(name: str, preds: np.ndarray) -> dict:
                secs = statistics.median(seconds[name])
                row = {"batch_size": bs, "seconds": secs, "seconds_per_repeat": seconds[name],
                       "examples_per_second": n / secs, "accuracy": score(task.metric, labels, preds),
                       "measured_speedup": _median_ratio(base, seconds[name])}
                row["throughput_vs_onnxruntime_int8"] = (_median_ratio(ort_int8, seconds[name])
                                                         if ort_int8 is not None else None)
                # texts in: both sides also pay for tokenizing the same texts (and the full models for padding
                # their batches; an engine pads its own, inside its timing), summed within each repeat
                prep = tok if name.startswith(("engine ", "onnx engine ")) else tok_pad
                row["throughput_vs_onnxruntime_int8_tokenized"] = (
                    None if ort_int8 is None or tok is None else statistics.median(
                        (o + op) / (s + sp) for o, op, s, sp in zip(ort_int8, tok_pad, seconds[name], prep)))
                return row

            for runtime, plist in (("torch", precs), ("onnxruntime", list(sessions))):
                for p in plist:
                    name = f"{runtime} {p} full"
                    row = common(name, outputs[name])
                    points.append({"name": name, "kind": "full", "runtime": runtime,
                                   "precision": "int8" if p == ENGINE_RECIPE else p, "threshold": None,
                                   "baseline": name == BASELINE, "cost_ratio": 1.0, "ideal_speedup": 1.0,
                                   **row, "ratio": row["measured_speedup"]})
            for p in precs:
                same = seconds[f"torch {p} full"]
                for t in thresholds:
                    name = f"engine {p} t={t:.4g}"
                    res = outputs[name]
                    counts = np.bincount(res.exit_index, minlength=len(layers))
                    cost = cost_ratio(counts, layers, method)
                    row = common(name, res.label)
                    if p == "fp32":
                        fp32_acc_by_t[t] = row["accuracy"]
                    speed_same = _median_ratio(same, seconds[name])
                    points.append({
                        "name": name, "kind": "engine", "runtime": "torch", "precision": p, "threshold": t,
                        "baseline": False, "cost_ratio": cost, "ideal_speedup": 1.0 / cost, **row,
                        "ratio": row["measured_speedup"] * cost,
                        "speedup_vs_same_precision_full": speed_same, "ratio_same_precision": speed_same * cost,
                        "exit_counts": counts.tolist(),
                    })
            for p in onnx_engines:
                # int8: against the full model quantized as the engine's graphs are (per channel), so that the
                # ratio measures the engine, not the difference between two quantization recipes
                same = seconds.get(f"onnxruntime {ENGINE_RECIPE if p == 'int8' else p} full",
                                   seconds.get(f"onnxruntime {p} full"))
                for t in thresholds:
                    name = f"onnx engine {p} t={t:.4g}"
                    res, ref_res = outputs[name], outputs[f"engine fp32 t={t:.4g}"]
                    counts = np.bincount(res.exit_index, minlength=len(layers))
                    cost = cost_ratio(counts, layers, method)
                    row = common(name, res.label)
                    speed_same = None if same is None else _median_ratio(same, seconds[name])
                    points.append({
                        "name": name, "kind": "engine", "runtime": "onnxruntime", "precision": p, "threshold": t,
                        "baseline": False, "cost_ratio": cost, "ideal_speedup": 1.0 / cost, **row,
                        "ratio": row["measured_speedup"] * cost, "speedup_vs_same_precision_full": speed_same,
                        "ratio_same_precision": None if speed_same is None else speed_same * cost,
                        "exit_counts": counts.tolist(),
                        "agreement_vs_torch_fp32": float(np.mean((res.exit_index == ref_res.exit_index)
                                                                 & (res.label == ref_res.label))),
                    })
            base_acc = next(pt["accuracy"] for pt in points if pt["batch_size"] == bs and pt["baseline"])
            for pt in points:
                if pt["batch_size"] != bs or pt["baseline"]:
                    continue
                if pt["kind"] == "engine":
                    pt["accuracy_delta_vs_fp32"] = pt["accuracy"] - fp32_acc_by_t[pt["threshold"]]
                else:  # other full models against the torch fp32 full model
                    pt["accuracy_delta_vs_fp32"] = pt["accuracy"] - base_acc
    finally:
        tmp.cleanup()

    return {
        "run_dir": str(run_dir), "task": task.name, "metric": task.metric, "method": method, "exit_layers": layers,
        "policy": policy, "n_examples": n, "split": split_name, "batch_sizes": [int(b) for b in batch_sizes],
        "repeats": repeats, "warmup_batches": warmup, "threads": torch_threads, "device": str(dev),
        "precisions": precs, "placements": {p: predictors[p].placement.to_dict() for p in precs},
        "thresholds": thresholds, "runtime": runtime, "onnxruntime": onnx_info, "notes": notes, "environment": environment(),
        "cpu": cpu_kind(),
        "tokenization": {str(k): v for k, v in tokenization.items()},
        "protocol": "same examples (evaluation split, dataset order, pre-tokenised) and batch size for every row; "
                    "every configuration timed once per repeat, interleaved; speedup = median over repeats of "
                    "(torch fp32 full time / time) within the same repeat; full model = encoder + last head, no exit "
                    "checks; engine = EarlyExitEngine.predict, full batches at every depth, arrival order; "
                    "vs ORT int8 = median over repeats of (ORT int8 full + tokenize + pad) / (row + tokenize "
                    "[engine rows, which pad their own batches] or tokenize + pad [full-model rows]), the texts "
                    "tokenized by the run's tokenizer in the same repeat; vs ORT int8 model-only: both sides "
                    "pre-tokenised",
        "points": points,
    }


def _onnx_engines(run_dir, runtime: str, device: torch.device, threads: int, folder: Path, info: dict) -> dict:
    """The ONNX Runtime engine at fp32 and int8 ({} unless ``runtime`` is onnxruntime), over the run exported
    once into ``folder``."""
    if runtime != "onnxruntime":
        return {}
    if device.type != "cpu":
        raise SweetError(f"the ONNX runtime engine runs on the CPU; bench it with --device cpu, not {device}")
    reason = onnxruntime_missing()
    if reason:
        raise SweetError(reason)
    exported = export_run(run_dir, folder / "segments", int8=True)
    info["engine_export"] = {"seconds": exported["seconds"], "bytes": exported["bytes"], "int8": exported["int8"]}
    return {p: OnnxPredictor(folder / "segments", precision=p, threads=threads) for p in ("fp32", "int8")}


def _onnx_sessions(model, collator, device: torch.device, threads: int, folder: Path, notes: list[str],
                   info: dict, engine_recipe: dict | None = None) -> dict:
    """ONNX Runtime sessions (fp32, int8) over the exported full model; {} with a note where they cannot run.

    ``engine_recipe`` (the ONNX engine's int8 settings, from its export): also the full model quantized that way
    (per-channel weights), under :data:`ENGINE_RECIPE`, the same-precision reference of the ONNX int8 engine; the
    plain int8 session keeps quantize_dynamic's defaults (per-tensor), what a user would run."""

    reason = onnx_missing()
    if reason:
        notes.append(f"ONNX Runtime rows skipped: {reason}")
        return {}
    providers = onnx_providers(device)
    if providers is None:
        notes.append(f"ONNX Runtime rows skipped: this onnxruntime has no execution provider for {device}")
        return {}

    cpu_model = copy.deepcopy(model).cpu().float().eval()
    t0 = time.perf_counter()
    fp32_path = export_onnx(cpu_model, folder / "full-fp32.onnx", collator.use_token_type_ids)
    info.update({"opset": 17, "exporter": "torch.onnx (TorchScript)", "export_seconds": time.perf_counter() - t0,
                 "intra_op_num_threads": threads, "providers": [p if isinstance(p, str) else p[0] for p in providers]})
    sessions = {"fp32": OnnxClassifier(fp32_path, threads, providers)}
    if device.type == "cpu":
        t0 = time.perf_counter()
        int8_path = quantize_onnx_int8(fp32_path, folder / "full-int8.onnx")
        info["quantize_seconds"] = time.perf_counter() - t0
        info["int8"] = "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)"
        sessions["int8"] = OnnxClassifier(int8_path, threads, providers)
        if engine_recipe is not None:
            t0 = time.perf_counter()
            recipe_path = quantize_onnx_int8(fp32_path, folder / "full-int8-engine-recipe.onnx",
                                             per_channel=engine_recipe["per_channel"],
                                             keep_fp32=engine_recipe["kept_fp32"])
            info["engine_recipe_int8"] = {"per_channel": engine_recipe["per_channel"],
                                          "kept_fp32": engine_recipe["kept_fp32"],
                                          "quantize_seconds": time.perf_counter() - t0}
            sessions[ENGINE_RECIPE] = OnnxClassifier(recipe_path, threads, providers)
    else:
        notes.append(f"ONNX Runtime int8 skipped: dynamic quantization runs on the CPU, not on {device}")
    return sessions



"""Wall-clock benchmark of early-exit inference (``sweet bench RUN_DIR``).

For each batch size and each threshold of the policy's grid, the evaluation split is predicted with
:class:`~sweet.inference.EarlyExitEngine` and timed against the same model run to its last layer with no
exit checks (early_exit/sweet: the encoder plus the last head; multi_model: the last, full-depth model
alone). Reported per point: the cost ratio (from the exits actually taken), the ideal speedup 1/cost, the
measured speedup, their ratio, throughput and per-batch latency (p50/p95).

Protocol: requests are batched in dataset order (no length sorting, as they would arrive), tokenised and
padded before timing (tokenisation is not timed). Every configuration is warmed up; then each repeat
times every configuration once over the whole split, one after another (interleaved), and a speedup is
the median over repeats of baseline time / configuration time *within the same repeat*, so that load
from other processes on a shared machine affects both sides of each ratio alike. The thread count is
recorded. Also measured: the overhead of computing every exit head versus the bare backbone forward.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import SweetError


def _time_interleaved(fns: dict[str, Callable[[dict], object]], batches: list[dict], repeats: int,
                      warmup: int) -> dict[str, tuple[list[float], list[float]]]:
    """Time every configuration once per repeat, one after another, so that a slow spell on a shared
    machine hits all configurations of that repeat alike. Returns, per name, (total seconds of each
    repeat, seconds of each batch)."""
    for fn in fns.values():
        for b in batches[: max(1, warmup)]:
            fn(b)
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            totals, per_batch = out[name]
            start = time.perf_counter()
            for b in batches:
                t0 = time.perf_counter()
                fn(b)
                per_batch.append(time.perf_counter() - t0)
            totals.append(time.perf_counter() - start)
    return out


def _median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over repeats of num[r] / den[r] (paired within a repeat)."""
    return statistics.median(a / b for a, b in zip(num, den))


def _percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def benchmark(
    run_dir: str | Path,
    batch_sizes: Sequence[int] = (1, 16, 64),
    repeats: int = 3,
    warmup: int = 3,
    max_examples: int | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    policy: str = "confidence",
) -> dict:
    from .batching import encode
    from .cost import cost_ratio
    from .inference import EarlyExitEngine
    from .policies import make_policy
    from .runs import effective_max_length, environment, evaluation_split, load_run, make_collator

    if repeats < 1 or any(b < 1 for b in batch_sizes):
        raise SweetError("repeats and batch sizes must be positive")
    if threads is not None:
        if threads < 1:
            raise SweetError(f"threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    cfg, model, tokenizer, task = load_run(run_dir)
    model.eval()
    examples, _ = evaluation_split(cfg, task, data_dir)
    if max_examples is not None:
        examples = examples.subset(range(min(max_examples, len(examples))))
    encoded = encode(tokenizer, examples, effective_max_length(cfg.max_length, tokenizer, model), warn=False)
    collator = make_collator(tokenizer, model)
    policy_name, policy = policy, make_policy(policy, model)
    method = model.config.method
    layers = model.exit_layers
    last_bb, last_head = model.backbones[-1], model.heads[-1]

    @torch.inference_mode()
    def full(batch):  # the same model to its last layer, no exit checks
        kw = model._backbone_kwargs(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return last_head(last_bb(**kw).last_hidden_state, batch["attention_mask"])

    @torch.inference_mode()
    def all_exits(batch):
        return model(**batch)

    @torch.inference_mode()
    def bare(batch):
        kw = model._backbone_kwargs(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return [bb(**kw).last_hidden_state for bb in model.backbones]

    thresholds = [float(t) for t in policy.threshold_grid(model.config.num_labels)]
    n = len(encoded)
    results = []
    overhead = {}
    for bs in tqdm(batch_sizes, desc="bench", disable=not progress, unit="batch size"):
        batches = []
        for i in range(0, n, bs):
            b = collator(encoded, np.arange(i, min(i + bs, n)))
            b.pop("labels", None)
            batches.append(b)
        exits: dict[float, list[np.ndarray]] = {t: [] for t in thresholds}

        def served(t: float):
            engine = EarlyExitEngine(model, policy, t)
            return lambda batch: exits[t].append(engine.predict_batch(**batch).exit_index)

        fns = {"full": full, "all_exits": all_exits, "bare": bare, **{f"t={t}": served(t) for t in thresholds}}
        timed = _time_interleaved(fns, batches, repeats, warmup)
        full_totals, full_lat = timed["full"]
        t_full = statistics.median(full_totals)
        overhead[str(bs)] = {
            "all_exits_seconds": statistics.median(timed["all_exits"][0]),
            "bare_backbone_seconds": statistics.median(timed["bare"][0]),
            "overhead_percent": 100.0 * (_median_ratio(timed["all_exits"][0], timed["bare"][0]) - 1.0),
        }
        results.append({"batch_size": bs, "threshold": None, "cost_ratio": 1.0, "ideal_speedup": 1.0,
                        "measured_speedup": 1.0, "ratio": 1.0, "seconds": t_full, "examples_per_second": n / t_full,
                        "latency_ms_p50": _percentile_ms(full_lat, 50), "latency_ms_p95": _percentile_ms(full_lat, 95),
                        "baseline": True})
        for t in thresholds:
            totals, lat = timed[f"t={t}"]
            counts = np.bincount(np.concatenate(exits[t][-len(batches):]), minlength=len(layers))
            cost = cost_ratio(counts, layers, method)
            measured = _median_ratio(full_totals, totals)
            secs = statistics.median(totals)
            results.append({
                "batch_size": bs, "threshold": t, "cost_ratio": cost, "ideal_speedup": 1.0 / cost,
                "measured_speedup": measured, "ratio": measured * cost, "seconds": secs,
                "examples_per_second": n / secs, "latency_ms_p50": _percentile_ms(lat, 50),
                "latency_ms_p95": _percentile_ms(lat, 95), "exit_counts": counts.tolist(), "baseline": False,
            })
    return {
        "run_dir": str(run_dir), "task": task.name, "method": method, "exit_layers": layers, "policy": policy_name,
        "n_examples": n, "split": "evaluation", "repeats": repeats, "warmup_batches": warmup,
        "threads": torch.get_num_threads(), "environment": environment(),
        "protocol": "dataset order, pre-tokenised; every configuration timed once per repeat, interleaved; "
                    "speedup = median over repeats of (baseline time / time) within the same repeat; "
                    "baseline = same model to its last layer, no exit checks",
        "head_overhead": overhead, "points": results,
    }


def format_bench(report: dict) -> str:
    lines = [f"{report['task']} | {report['method']} | {report.get('policy', 'confidence')} policy | "
             f"{report['n_examples']} examples | threads {report['threads']} | "
             f"median of {report['repeats']}"]
    lines.append(f"{'batch':>5} {'thresh':>6} {'cost':>6} {'ideal':>6} {'measured':>8} {'ratio':>6} {'ex/s':>8} "
                 f"{'p50 ms':>8} {'p95 ms':>8}")
    for p in report["points"]:
        th = "full" if p["baseline"] else f"{p['threshold']:.3f}"
        lines.append(f"{p['batch_size']:>5} {th:>6} {p['cost_ratio']:6.3f} {p['ideal_speedup']:6.2f} "
                     f"{p['measured_speedup']:8.2f} {p['ratio']:6.2f} {p['examples_per_second']:8.1f} "
                     f"{p['latency_ms_p50']:8.2f} {p['latency_ms_p95']:8.2f}")
    for bs, o in report["head_overhead"].items():
        lines.append(f"exit heads overhead at batch {bs}: {o['overhead_percent']:+.2f}% of the bare backbone forward")
    return "\n".join(lines)

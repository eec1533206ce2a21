"""Where the engine's realised speedup falls short of the ideal 1/cost, on a trained run, per threshold.

``sweet bench`` reports realised/ideal = (full model time x cost) / engine time, with cost the paper's Eq. 1 (layers
run per row / layers of the full model). This script splits the shortfall into three factors whose product is that
ratio, in ONE process per precision, on the same rows and batches ``sweet bench`` uses (the evaluation split in
dataset order, batch 64; the full model on padded batches; the engine with ``sort_by_length=False``):

* **layer work** = cost x (full model's layer time) / (the engine's layer time): the layers the engine ran, timed
  again alone by replaying the very batches the engine formed (same rows, widths and hidden states) through
  :meth:`SegmentRunner.run`. Below 1 when a row that goes deeper costs more per layer than the average row (longer
  sentences stay longer: attention grows with the length) or when the last batches of a depth are small. No engine
  can remove this: it is what the rows need.
* **exit decisions** = (layer time + embeddings + one head) / (that + the heads and the policy of every exit): the
  cost of deciding, which the full model does not pay. (The full model's embeddings and its one head count as the
  "fixed" part on both sides.)
* **bookkeeping** = the rest of the engine's time: queues, gathers, zeroing of padded positions, collation, Python.

    PYTHONPATH=src python benchmarks/engine_gap.py RUN_DIR --precisions bf16 --thresholds 0.6,0.65,0.7,0.8 \
        --data-dir ../shared/glue --repeats 7 --output docs/results/fast-path/engine-gap.json

Timings are medians over ``--repeats`` interleaved rounds (full model, then each threshold), so load from other
processes hits every configuration alike; the replay and the region timers run in a separate, untimed pass. The
region timers add ``time.perf_counter`` calls (microseconds) around each piece.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def _regions(engine, model):
    """Wrap the engine's pieces with timers; returns (times dict, captured segment calls, undo function)."""
    times: dict[str, float] = defaultdict(float)
    calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    runner, undo = engine.runner, []

    def wrap(obj, attr, label, capture=False):
        fn = getattr(obj, attr)

        def wrapped(*a, **k):
            if capture:
                calls.append((a[0], a[1], a[2]))
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[label] += time.perf_counter() - t0

        setattr(obj, attr, wrapped)
        undo.append(lambda: delattr(obj, attr) if attr in vars(obj) else None)

    wrap(runner, "embed", "embeddings")
    wrap(runner, "run", "layers", capture=True)
    for head in model.heads:
        wrap(head, "forward", "heads")
    wrap(engine.policy, "score_and_probabilities", "policy")
    wrap(engine.policy, "should_exit", "policy")
    return times, calls, lambda: [u() for u in undo]


def measure(run_dir: str, precision: str, thresholds: list[float], data_dir: str | None, repeats: int,
            batch_size: int) -> dict:
    from sweet.bench.timed import engine_run, padded_batches, torch_full
    from sweet.encoding import encode
    from sweet.inference import EarlyExitEngine
    from sweet.predictor import Predictor
    from sweet.rundir import load_run_config
    from sweet.runs import evaluation_examples

    pred = Predictor.load(run_dir, device="cpu", precision=precision, policy="confidence")
    model, collator = pred.model, pred.collator
    examples, split = evaluation_examples(load_run_config(run_dir), pred.task, data_dir, None, None, None)
    enc = encode(pred.tokenizer, examples, pred.max_length, warn=False)
    policy = pred.get_policy("confidence")
    layers = np.asarray(model.exit_layers)
    depth = int(layers[-1])
    batches = padded_batches(enc, collator, batch_size)
    fns = {"full": torch_full(model, batches)}
    engines = {t: EarlyExitEngine(model, policy, t) for t in thresholds}
    for t, e in engines.items():
        fns[t] = engine_run(e, enc, collator, batch_size)
    outputs = {k: f() for k, f in fns.items()}  # warm-up
    secs: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            secs[k].append(time.perf_counter() - t0)

    # the full model's own split: its layers (the engine at t=1 runs exactly them, segment by segment) and the rest
    full_engine = EarlyExitEngine(model, policy, 1.0)
    times, calls, undo = _regions(full_engine, model)
    with torch.inference_mode():
        full_engine.predict(enc, collator, batch_size, sort_by_length=False)
    undo()
    full_layer_calls = list(calls)

    def replay(segment_calls) -> float:
        best = []
        with torch.inference_mode():
            for _ in range(max(3, repeats // 2)):
                t0 = time.perf_counter()
                for s, hidden, mask in segment_calls:
                    full_engine.runner.run(s, hidden, mask)
                best.append(time.perf_counter() - t0)
        return statistics.median(best)

    full_layers = replay(full_layer_calls)
    full_time = statistics.median(secs["full"])
    rows = []
    for t in thresholds:
        res = outputs[t]
        cost = float(layers[res.exit_index].mean() / depth)
        e_time = statistics.median(secs[t])
        ratio = statistics.median([f / e for f, e in zip(secs["full"], secs[t])]) * cost
        times, calls, undo = _regions(engines[t], model)
        with torch.inference_mode():
            t0 = time.perf_counter()
            engines[t].predict(enc, collator, batch_size, sort_by_length=False)
            region_total = time.perf_counter() - t0
        undo()
        layer_time = replay(calls)
        lengths = enc.lengths
        reach = [float(lengths[res.exit_index >= s].mean()) for s in range(len(layers))]
        # the engine's median time split by the shares of its region-timed pass; its layers by the replay
        share = {k: v / region_total for k, v in times.items()}
        emb = e_time * share.get("embeddings", 0.0)
        decisions = e_time * (share.get("heads", 0.0) + share.get("policy", 0.0))
        bookkeeping = e_time - emb - layer_time - decisions
        ideal = cost * full_time
        # the ratio the engine would reach if the layers it ran cost cost x the full model's (rows that go deeper
        # no longer per layer than the average row, no small last batches)
        without_layer_excess = ideal / (e_time - (layer_time - cost * full_layers))
        rows.append({
            "threshold": t, "cost": cost, "rows_per_exit": np.bincount(res.exit_index, minlength=len(layers)).tolist(),
            "mean_length_of_rows_reaching_segment": reach,
            "engine_seconds": e_time, "full_seconds": full_time, "ideal_seconds": ideal, "realised_over_ideal": ratio,
            "engine_split_seconds": {"embeddings": emb, "layers (replayed)": layer_time,
                                     "exit decisions (heads, policy)": decisions, "bookkeeping": bookkeeping},
            "ideal_split_seconds": {"layers": cost * full_layers, "the rest": cost * (full_time - full_layers)},
            "realised_over_ideal_without_layer_excess": without_layer_excess,
        })
        print(f"{precision} t={t:g}: cost {cost:.3f}, realised/ideal {ratio:.3f} ({without_layer_excess:.3f} if the "
              f"layers it ran cost cost x the full model's); engine {e_time * 1e3:.0f} ms = embeddings {emb * 1e3:.0f}"
              f" + layers {layer_time * 1e3:.0f} (ideal {cost * full_layers * 1e3:.0f}) + decisions "
              f"{decisions * 1e3:.0f} + bookkeeping {bookkeeping * 1e3:.0f}; ideal {ideal * 1e3:.0f} ms (full "
              f"{full_time * 1e3:.0f}, its layers {full_layers * 1e3:.0f}); mean length of the rows reaching each "
              f"segment {', '.join(f'{x:.1f}' for x in reach)}", flush=True)
    return {"precision": precision, "split": split, "n": len(enc), "full_seconds": full_time,
            "full_layer_seconds_replayed": full_layers, "thresholds": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--precisions", default="bf16")
    ap.add_argument("--thresholds", default="0.6,0.65,0.7,0.8")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sweet.precision import native_bf16

    report = {"run_dir": args.run_dir, "cpu": platform.processor() or platform.machine(),
              "native_bf16": native_bf16(torch.device("cpu")), "threads": args.threads, "repeats": args.repeats,
              "batch_size": args.batch_size, "torch": torch.__version__, "results": []}
    ts = [float(x) for x in args.thresholds.split(",") if x.strip()]
    for p in [x.strip() for x in args.precisions.split(",") if x.strip()]:
        report["results"].append(measure(args.run_dir, p, ts, args.data_dir, args.repeats, args.batch_size))
    if args.output:
        from sweet.io import atomic_write_json

        atomic_write_json(args.output, report)


if __name__ == "__main__":
    main()

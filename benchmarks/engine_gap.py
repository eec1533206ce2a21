"""Where the engine's realised speedup falls short of the ideal 1/cost, on a trained run, per threshold.

``sweet bench`` reports realised/ideal = (full model time x cost) / engine time, with cost the paper's Eq. 1 (layers
run per row / layers of the full model). This script splits the engine's time into parts next to the ideal's
(cost x the full model's time), in ONE process per precision, on the same rows and batches ``sweet bench`` uses
(the evaluation split in dataset order, batch 64; the full model on padded batches; the engine with
``sort_by_length=False``):

* **layers**: the time in :meth:`SegmentRunner.run` against cost x the full model's layer time (the engine at t=1
  runs exactly the full model's layers; both timed in situ). Above the ideal when a row that goes deeper costs more
  per layer than the average row (attention grows with the length) or when the last batches of a depth are small:
  what the rows need, not the engine's overhead;
* **exit decisions**: the exit heads and the policy of every exit a batch reaches (the full model runs one head);
* **embeddings**, paid for every row whatever the cost;
* **bookkeeping**: the rest of the engine's time: queues, gathers, zeroing of padded positions, collation, Python.

    PYTHONPATH=src python benchmarks/engine_gap.py RUN_DIR --precisions bf16 --thresholds 0.6,0.65,0.7,0.8 \
        --data-dir ../shared/glue --repeats 7 --output docs/results/fast-path/engine-gap.json

Timings are medians over ``--repeats`` interleaved rounds (full model, then each threshold; ``sweet bench``'s own
timing loop and median ratio), so load from other processes hits every configuration alike. The split comes from
separate passes with ``time.perf_counter`` wrappers around each piece (region timers, microseconds each), as shares
applied to the median time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def _region_shares(engine, model, enc, collator, batch_size: int, rounds: int) -> dict[str, float]:
    """Shares of the engine's time (over ``rounds`` passes) spent in its embeddings, layers (SegmentRunner.run),
    exit heads and policy, timed in situ by perf_counter wrappers around those calls."""
    times: dict[str, float] = defaultdict(float)
    runner, wrapped_attrs = engine.runner, []

    def wrap(obj, attr, label):
        fn = getattr(obj, attr)

        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[label] += time.perf_counter() - t0

        setattr(obj, attr, wrapped)
        wrapped_attrs.append((obj, attr))

    wrap(runner, "embed", "embeddings")
    wrap(runner, "run", "layers")
    for head in model.heads:
        wrap(head, "forward", "heads")
    wrap(engine.policy, "score_and_probabilities", "policy")
    wrap(engine.policy, "should_exit", "policy")
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(rounds):
                engine.predict(enc, collator, batch_size, sort_by_length=False)
            total = time.perf_counter() - t0
    finally:
        for obj, attr in wrapped_attrs:
            delattr(obj, attr)  # the instance attribute goes; the class's method is back
    return {k: v / total for k, v in times.items()}


def measure(run_dir: str, precision: str, thresholds: list[float], data_dir: str | None, repeats: int,
            batch_size: int) -> dict:
    from sweet.bench.measure import _median_ratio, _time_interleaved
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
    fns = {"full": torch_full(model, padded_batches(enc, collator, batch_size))}
    # t=1: the full model's layers, run by the engine segment by segment (no exit can be taken, none runs)
    engines = {t: EarlyExitEngine(model, policy, t) for t in [1.0, *thresholds]}
    for t, e in engines.items():
        fns[t] = engine_run(e, enc, collator, batch_size)
    for f in fns.values():  # warm-up
        f()
    secs, outputs = _time_interleaved(fns, repeats)
    med = {k: statistics.median(v) for k, v in secs.items()}
    shares = {t: _region_shares(e, model, enc, collator, batch_size, max(2, repeats // 2)) for t, e in engines.items()}
    full_time = med["full"]
    full_layers = med[1.0] * shares[1.0]["layers"]
    rows = []
    for t in thresholds:
        res, share, e_time = outputs[t], shares[t], med[t]
        cost = float(layers[res.exit_index].mean() / depth)
        ratio = _median_ratio(secs["full"], secs[t]) * cost
        split_s = {"embeddings": e_time * share.get("embeddings", 0.0), "layers": e_time * share["layers"],
                   "exit decisions (heads, policy)": e_time * (share.get("heads", 0.0) + share.get("policy", 0.0))}
        split_s["bookkeeping"] = e_time - sum(split_s.values())
        ideal = cost * full_time
        layer_excess = split_s["layers"] - cost * full_layers
        reach = [float(enc.lengths[res.exit_index >= s].mean()) for s in range(len(layers))]
        rows.append({
            "threshold": t, "cost": cost, "rows_per_exit": np.bincount(res.exit_index, minlength=len(layers)).tolist(),
            "mean_length_of_rows_reaching_segment": reach,
            "engine_seconds": e_time, "full_seconds": full_time, "ideal_seconds": ideal, "realised_over_ideal": ratio,
            "engine_split_seconds": split_s,
            "ideal_split_seconds": {"layers": cost * full_layers, "the rest": cost * (full_time - full_layers)},
            # the ratio if the layers it ran cost cost x the full model's (no row costing more per layer than the
            # average, no small last batches)
            "realised_over_ideal_without_layer_excess": ideal / (e_time - layer_excess),
        })
        print(f"{precision} t={t:g}: cost {cost:.3f}, realised/ideal {ratio:.3f} "
              f"({ideal / (e_time - layer_excess):.3f} without the layer excess); engine {e_time * 1e3:.0f} ms = "
              + " + ".join(f"{k} {v * 1e3:.0f}" for k, v in split_s.items())
              + f"; ideal {ideal * 1e3:.0f} ms = layers {cost * full_layers * 1e3:.0f} + the rest "
              f"{cost * (full_time - full_layers) * 1e3:.0f} (full model {full_time * 1e3:.0f} ms); mean length of "
              f"the rows reaching each segment {', '.join(f'{x:.1f}' for x in reach)}", flush=True)
    return {"precision": precision, "split": split, "n": len(enc), "full_seconds": full_time,
            "full_layer_seconds": full_layers, "thresholds": rows}


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
    from sweet.precision import cpu_kind

    report = {"run_dir": args.run_dir, "cpu": cpu_kind(), "threads": args.threads, "repeats": args.repeats,
              "batch_size": args.batch_size, "torch": torch.__version__, "results": []}
    ts = [float(x) for x in args.thresholds.split(",") if x.strip()]
    for p in [x.strip() for x in args.precisions.split(",") if x.strip()]:
        report["results"].append(measure(args.run_dir, p, ts, args.data_dir, args.repeats, args.batch_size))
    if args.output:
        from sweet.io import atomic_write_json

        atomic_write_json(args.output, report)


if __name__ == "__main__":
    main()

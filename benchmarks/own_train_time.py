"""Training time per example of ``own@RHO`` relative to Early-Exit (sweet.methods.TRAIN_TIME_FACTOR["own"]).

Both models (default backbone, the same initial weights) train in one process on the same SST-2 batches (batch 16,
length-bucketed as in training), interleaved batch by batch with the order alternating, so that load from other
processes on the machine affects both alike. Each step: forward, backward, clipping, AdamW step. The first steps
are a warm-up and not counted. Reports the median step time of each method and the median of the per-batch ratios.

    PYTHONPATH=src python benchmarks/own_train_time.py --data-dir ../shared/glue --steps 12 --threads 2 \\
        --output docs/results/own/train-time.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sweet.backbones import resolve_backbone
from sweet.data import load_task, make_splits
from sweet.encoding import bucketed_batches, encode
from sweet.io import atomic_write_json
from sweet.modeling import MultiExitModel
from sweet.precision import cpu_kind
from sweet.rundir import environment, load_tokenizer, make_collator
from sweet.training import seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per method (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", default="own@0.5")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    splits = make_splits(load_task("sst2", args.data_dir), 3000, 0)
    tok = load_tokenizer(resolve_backbone("default"))
    methods = ("early_exit", args.method)
    models, opts = {}, {}
    for name in methods:
        seed_everything(0)
        models[name] = MultiExitModel.from_backbone("default", num_labels=2, method=name).train()
        opts[name] = torch.optim.AdamW(models[name].parameters(), lr=5e-5, fused=True)
    collator = make_collator(tok, models[methods[0]])
    enc = encode(tok, splits.train, 256, warn=False)
    batches = bucketed_batches(enc.lengths, 16, 0, 0)[: args.warmup + args.steps]
    times: dict[str, list[float]] = {m: [] for m in methods}
    start = time.perf_counter()
    for i, rows in enumerate(batches):
        batch = collator(enc, rows)
        for name in (methods if i % 2 == 0 else methods[::-1]):
            model, opt = models[name], opts[name]
            t0 = time.perf_counter()
            out = model(**batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0, foreach=True)
            opt.step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    ratios = [b / a for a, b in zip(times[methods[0]], times[methods[1]])]
    timed = [r for b in batches[args.warmup:] for r in b]
    report = {
        "what": "training step time (forward, backward, clip, AdamW) per batch of 16 SST-2 rows, default backbone",
        "methods": list(methods), "steps": args.steps, "warmup": args.warmup, "examples_timed": len(timed),
        "threads": args.threads, "mean_tokens_per_row": round(float(np.mean([len(enc.input_ids[r]) for r in timed])), 1),
        "median_step_ms": {m: round(statistics.median(t) * 1000, 1) for m, t in times.items()},
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)],
        "wall_s": round(wall, 1), "cpu": cpu_kind(), "environment": environment(),
        "note": "other processes share the cores; the ratio is per batch, both methods on the same batch in turn",
    }
    for m in methods:
        print(f"{m:<12} median {report['median_step_ms'][m]:8.1f} ms/step")
    print(f"ratio {methods[1]} / {methods[0]}: median {report['ratio_median']} (min-max {report['ratio_min_max']}), "
          f"{report['examples_timed']} examples each, {wall:.0f} s")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.output, report)


if __name__ == "__main__":
    main()

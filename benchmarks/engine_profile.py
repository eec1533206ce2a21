"""Where the engine's time goes at cost 1 (the same layers as the bare model), per precision.

Train-free: a MultiExitModel of the default backbone (all-MiniLM-L6-v2, exits 1/2/4/6) with random heads (seeded)
is as fast as a trained one; accuracy is irrelevant here. Rows: the SST-2 dev sentences (872), in dataset order,
batch 64, as ``sweet bench`` runs them. In ONE process, for each precision asked for:

* interleaved timings (``--repeats`` rounds; in each round the bare model, i.e. ``sweet bench``'s full model on
  pre-padded batches, then the engine at t=1 over the same rows): the median over rounds of bare time / engine
  time, so that load from other processes hits both sides of each ratio alike;
* the same at t=0.99, where the random heads let no row leave either (cost 1) but every exit's head and the policy
  run (at t=1 the engine skips the exits no row can take: ``ExitPolicy.may_exit``);
* with ``--profile``, a ``torch.profiler`` pass over the engine at t=0.99, its time cut into regions (embeddings, layers,
  exit heads, policy and host transfer, the rest) by ``record_function`` labels this script puts around the
  engine's pieces, and the top operators.

    PYTHONPATH=src python benchmarks/engine_profile.py --precisions bf16,int8 --repeats 15 --threads 2 --profile \
        --data-dir ../shared/glue
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def _dev_split(data):
    if data.dev is None:
        raise SystemExit("the SST-2 data has no dev split")
    return data.dev


def timings(model, collator, enc, batch_size: int, repeats: int) -> dict:
    from sweet.bench.timed import engine_run as _engine_run
    from sweet.bench.timed import padded_batches
    from sweet.bench.timed import torch_full as _torch_full
    from sweet.inference import EarlyExitEngine
    from sweet.policies import ConfidencePolicy

    n = len(enc)
    batches = padded_batches(enc, collator, batch_size)
    fns = {"bare": _torch_full(model, batches)}
    # t=1: no row can leave early; t=0.99: the random heads' confidences stay near 0.5, so no row leaves either
    # (cost 1, checked below), but every exit's head and the policy run: the exit step's cost in full
    for t in (1.0, 0.99):
        fns[f"engine t={t:g}"] = _engine_run(EarlyExitEngine(model, ConfidencePolicy(None), t), enc, collator,
                                              batch_size)
    outputs = {name: fn() for name, fn in fns.items()}  # warm-up
    for name in fns:
        if name != "bare":
            assert (outputs[name].exit_index == 3).all(), f"{name}: rows left early; cost is not 1"
    secs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            secs[name].append(time.perf_counter() - t0)
    out = {"seconds": secs, "bare_ex_per_s": n / statistics.median(secs["bare"])}
    for name in fns:
        if name == "bare":
            continue
        ratios = [a / b for a, b in zip(secs["bare"], secs[name])]
        out[name] = {"ratio_median": statistics.median(ratios),
                     "ratio_quartiles": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))],
                     "ex_per_s": n / statistics.median(secs[name])}
    return out


def profile(model, collator, enc, batch_size: int, rounds: int) -> dict:
    """torch.profiler over the engine at t=1, regions by record_function labels wrapped around its pieces."""
    from torch.profiler import ProfilerActivity, record_function

    from sweet.inference import EarlyExitEngine
    from sweet.policies import ConfidencePolicy

    engine = EarlyExitEngine(model, ConfidencePolicy(None), 0.99)  # every exit step runs, no row leaves
    runner = engine.runner

    depth: dict[str, int] = {}

    def wrap(obj, attr, label):
        fn = getattr(obj, attr)

        def wrapped(*a, **k):
            if depth.get(label):  # already inside this region (e.g. score() calling probabilities()): count once
                return fn(*a, **k)
            depth[label] = 1
            try:
                with record_function(label):
                    return fn(*a, **k)
            finally:
                depth[label] = 0

        setattr(obj, attr, wrapped)

    wrap(runner, "embed", "region:embed")
    wrap(runner, "run", "region:layers")
    for head in model.heads:
        wrap(head, "forward", "region:heads")
    names = ("score", "probabilities", "score_and_probabilities", "should_exit")
    for name in (n for n in names if hasattr(engine.policy, n)):
        wrap(engine.policy, name, "region:policy")
    # what _apply_exit does after the head (packing, one host transfer, numpy writes) is in "exit step" minus the
    # regions inside it
    wrap(engine, "_apply_exit", "region:exit step")
    wrap(engine, "_run_window", "region:total")
    engine.predict(enc, collator, batch_size, sort_by_length=False)
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            engine.predict(enc, collator, batch_size, sort_by_length=False)
    avg = {e.key: e.cpu_time_total for e in prof.key_averages()}
    total = avg.get("region:total", 1.0)
    exit_step = avg.get("region:exit step", 0.0)
    heads, pol = avg.get("region:heads", 0.0), avg.get("region:policy", 0.0)
    shares = {
        "embed": avg.get("region:embed", 0.0) / total,
        "layers": avg.get("region:layers", 0.0) / total,
        "exit heads": heads / total,
        "policy": pol / total,
        "exit step rest (pack, host transfer, numpy)": (exit_step - heads - pol) / total,
    }
    shares["engine rest (masks, gather, collate, python)"] = 1.0 - sum(shares.values())
    ops = sorted(((k, v) for k, v in ((e.key, e.self_cpu_time_total) for e in prof.key_averages())
                  if not k.startswith("region:")), key=lambda kv: -kv[1])[:15]
    self_total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return {"shares": shares, "top_ops_self_share": [(k, v / self_total) for k, v in ops]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default="bf16,int8")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-rows", type=int, default=None, help="the first N dev rows only (a quicker, noisier run)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-rounds", type=int, default=3)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sweet.backbones import resolve_backbone
    from sweet.data import load_task
    from sweet.encoding import encode
    from sweet.modeling import MultiExitModel
    from sweet.precision import cpu_kind, placement, prepare_for_inference
    from sweet.rundir import load_tokenizer, make_collator
    from sweet.training import seed_everything

    tok = load_tokenizer(resolve_backbone("default"))
    dev = _dev_split(load_task("sst2", args.data_dir))
    if args.max_rows:
        dev = dev.subset(range(min(args.max_rows, len(dev))))
    enc = encode(tok, dev, 256, warn=False)
    report = {"cpu": cpu_kind(),
              "threads": args.threads, "batch_size": args.batch_size, "repeats": args.repeats, "n": len(enc),
              "torch": torch.__version__, "results": {}}
    for p in [x.strip() for x in args.precisions.split(",") if x.strip()]:
        seed_everything(0)
        model = MultiExitModel.from_backbone("default", num_labels=2, method="early_exit")
        collator = make_collator(tok, model)
        model = prepare_for_inference(model, placement("cpu", p))
        res = timings(model, collator, enc, args.batch_size, args.repeats)
        for name in ("engine t=1", "engine t=0.99"):
            r = res[name]
            print(f"{p}: {name} / bare = {r['ratio_median']:.3f} (IQR {r['ratio_quartiles'][0]:.3f}-"
                  f"{r['ratio_quartiles'][1]:.3f}); bare {res['bare_ex_per_s']:.0f} ex/s, engine {r['ex_per_s']:.0f} "
                  "ex/s", flush=True)
        if args.profile:
            res["profile"] = profile(model, collator, enc, args.batch_size, args.profile_rounds)
            print("  shares: " + ", ".join(f"{k} {v:.1%}" for k, v in res["profile"]["shares"].items()))
            print("  top ops (self): " + ", ".join(f"{k} {v:.1%}" for k, v in res["profile"]["top_ops_self_share"]))
        report["results"][p] = res
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

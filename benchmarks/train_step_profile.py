"""Where the time of one training step goes: forward, backward, gradient clipping, optimizer step.

Compares the old step (torch's default AdamW, clipping without foreach) with sweet's step (fused AdamW, foreach
clipping) on the same batches of SST-2 with the default backbone, in one process, interleaved step by step so
that load from other processes affects both alike. Also times the forward/backward under bf16 autocast.

    python benchmarks/train_step_profile.py --steps 40 --threads 2 --output docs/results/fast-path/train-step.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", default="sweet")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sweet.backbones import resolve_backbone
    from sweet.data import load_task, make_splits
    from sweet.encoding import bucketed_batches, encode
    from sweet.modeling import MultiExitModel
    from sweet.precision import Placement, cpu_kind
    from sweet.rundir import load_tokenizer, make_collator
    from sweet.training import seed_everything

    data = load_task("sst2", args.data_dir)
    splits = make_splits(data, 3000, 0)
    tok = load_tokenizer(resolve_backbone("default"))
    seed_everything(0)
    models = {}
    for name in ("old", "new"):
        seed_everything(0)
        models[name] = MultiExitModel.from_backbone("default", num_labels=2, method=args.method).train()
    collator = make_collator(tok, models["new"])
    enc = encode(tok, splits.train, 256, warn=False)
    batches = bucketed_batches(enc.lengths, 16, 0, 0)[: args.steps + 3]
    opts = {
        "old": torch.optim.AdamW(models["old"].parameters(), lr=5e-5, foreach=False),
        "new": torch.optim.AdamW(models["new"].parameters(), lr=5e-5, fused=True),
    }
    cpu = torch.device("cpu")
    configs = {"old": ("old", "fp32", False), "new": ("new", "fp32", True), "new-bf16": ("new", "bf16", True)}
    times: dict[str, dict[str, list[float]]] = {c: {k: [] for k in ("forward", "backward", "clip", "optimizer")}
                                                for c in configs}
    for i, rows in enumerate(batches):
        batch = collator(enc, rows)
        for cname, (mname, precision, foreach) in configs.items():
            model, opt = models[mname], opts[mname]
            where = Placement(cpu, precision)
            t0 = time.perf_counter()
            with where.autocast():
                out = model(**batch)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            t2 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0, foreach=foreach)
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            if args.verbose:
                print(i, cname, round((t1 - t0) * 1000), round((t2 - t1) * 1000), round((t3 - t2) * 1000), round((t4 - t3) * 1000), flush=True)
            if i >= 3:  # warm-up
                for k, v in zip(("forward", "backward", "clip", "optimizer"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    times[cname][k].append(v * 1000)
    table = {c: {k: round(statistics.median(v), 2) for k, v in d.items()} for c, d in times.items()}
    for c in table:
        table[c]["total"] = round(sum(table[c].values()), 2)
    tokens = float(np.mean([len(enc.input_ids[r]) for b in batches for r in b]))
    report = {"what": "median ms per training step phase (batch 16, SST-2, default backbone)", "method": args.method,
              "steps": args.steps, "threads": args.threads, "mean_tokens_per_row": round(tokens, 1),
              "cpu": cpu_kind(),
              "torch": torch.__version__,
              "configs": {"old": "torch default AdamW (for-loop), clip_grad_norm_ foreach=False, fp32",
                          "new": "fused AdamW, clip_grad_norm_ foreach=True, fp32 (sweet's step)",
                          "new-bf16": "sweet's step with the forward under bf16 autocast"},
              "median_ms": table}
    print(f"{'config':<10} " + " ".join(f"{k:>10}" for k in ("forward", "backward", "clip", "optimizer", "total")))
    for c, row in table.items():
        print(f"{c:<10} " + " ".join(f"{row[k]:>10.1f}" for k in ("forward", "backward", "clip", "optimizer", "total")))
    if args.output:
        from sweet.io import atomic_write_json

        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.output, report)


if __name__ == "__main__":
    main()

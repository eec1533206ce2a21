"""Training time of ``ee_anchor@F`` relative to Early-Exit, with sweet's own training loop (the measurement behind
``sweet.methods.ANCHOR_STEP_COST``).

After the switch every step of ``ee_anchor@F`` runs one more forward pass (the anchor's, no backward), so a run
costs about 1 + (1 - F) * c times Early-Exit's, where c is that forward pass relative to one Early-Exit step.
Each method trains the same SST-2 sample (the first seed's training sample) from the same pretrained weights
(the default backbone), batch 16, with ``sweet.training.train``. The methods run interleaved inside each round,
in an order that alternates between rounds, after one unrecorded warm-up round; a ratio is the median over
rounds of seconds / early_exit's seconds *in the same round*, so the load of other processes on a shared
machine affects both sides of each ratio alike. Two clocks: the wall time training reports, and the CPU time
of this process (``time.process_time``) around ``train``. With one torch thread the CPU time is the work done,
which other processes on a busy machine barely change, while they stretch the wall time by whatever share of
the cores they take; the CPU-time ratio is the one to use there. Model loading is not timed. Writes one JSON
(atomically).

    python benchmarks/anchor_train_time.py --data-dir ../shared/glue --examples 64 --epochs 2 --rounds 5 \\
        --threads 1 --output anchor-train-time.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from transformers import AutoTokenizer

from sweet import MultiExitModel
from sweet.backbones import resolve_backbone
from sweet.data import load_task, make_splits
from sweet.encoding import encode
from sweet.io import atomic_write_json
from sweet.methods import parse_method
from sweet.precision import cpu_kind, describe_cpu
from sweet.rundir import make_collator
from sweet.training import TrainConfig, train

METHODS = ["early_exit", "ee_anchor@0.5", "ee_anchor@0.25"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sample = make_splits(load_task("sst2", args.data_dir), args.examples, seed=0).train
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("default"))
    encoded = encode(tokenizer, sample, 256, warn=False)
    config = TrainConfig(learning_rate=1e-4, epochs=args.epochs, seed=0)
    load_before = os.getloadavg()
    clocks = ("wall", "cpu")
    seconds: dict[str, dict[str, list[float]]] = {c: {m: [] for m in METHODS} for c in clocks}
    for r in range(-1, args.rounds):  # round -1 warms up (first-call costs, allocator) and is not recorded
        for m in (METHODS if r % 2 == 0 else METHODS[::-1]):
            model = MultiExitModel.from_backbone("default", num_labels=2, method=m)
            collator = make_collator(tokenizer, model)
            cpu = time.process_time()
            log = train(model, encoded, collator, config, progress=False)
            cpu = time.process_time() - cpu
            if r >= 0:
                seconds["wall"][m].append(log["seconds"])
                seconds["cpu"][m].append(round(cpu, 3))
            print(f"round {r}: {m:<16} wall {log['seconds']:6.2f} s  cpu {cpu:6.2f} s ({log['steps']} steps)", flush=True)
    ratios = {c: {m: statistics.median(a / b for a, b in zip(seconds[c][m], seconds[c]["early_exit"])) for m in METHODS}
              for c in clocks}
    # the anchor's forward pass per anchored step, relative to one Early-Exit step (from each F)
    step_cost = {c: {m: (ratios[c][m] - 1.0) / (1.0 - parse_method(m).anchor_from) for m in METHODS if m != "early_exit"}
                 for c in clocks}
    result = {
        "what": "training seconds (wall, and this process's CPU time) for the same steps (batch 16, SST-2, default "
                "backbone) per method; ratio = median over rounds of method / early_exit within a round; "
                "anchor_step_cost = (ratio - 1) / (1 - F)",
        "command": "python benchmarks/anchor_train_time.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "examples": args.examples, "epochs": args.epochs, "rounds": args.rounds, "threads": args.threads,
        "cpu": cpu_kind(),
        "machine": f"{describe_cpu(cpu_kind())}, {os.cpu_count()} cores (shared with other jobs); torch {torch.__version__}; "
                   f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; load average before "
                   f"{load_before}, after {os.getloadavg()}",
        "seconds": seconds,
        "ratio_to_early_exit": {c: {m: round(v, 3) for m, v in ratios[c].items()} for c in clocks},
        "anchor_step_cost": {c: {m: round(v, 3) for m, v in step_cost[c].items()} for c in clocks},
    }
    atomic_write_json(args.output, result)
    for c in clocks:
        for m in METHODS:
            print(f"{c:<4} {m:<16} median {statistics.median(seconds[c][m]):6.2f} s  x{ratios[c][m]:.3f} of early_exit"
                  + (f"  (anchor step cost {step_cost[c][m]:.3f})" if m in step_cost[c] else ""))


if __name__ == "__main__":
    main()

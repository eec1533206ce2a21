"""Training cost of each method relative to early_exit, measured with sweet's own training loop.

Every method trains the same SST-2 sample (the first seed's training sample, 320 examples = 20 steps of 16)
from the same pretrained weights with ``sweet.training.train``. The methods run one after another inside each
round, and the rounds repeat after one unrecorded warm-up round. A method's ratio is the median over rounds of its seconds / early_exit's seconds
*in the same round*, so load from other processes affects both sides of each ratio alike (the protocol of
``sweet bench``). Model loading is not timed.

    python docs/results/methods/time_methods.py --data-dir ../shared/glue --rounds 3 --threads 1 \
        --output docs/results/methods/training-time.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch

from sweet import MultiExitModel
from sweet.batching import encode
from sweet.data import load_task, make_splits
from sweet.io import atomic_write_json
from sweet.runs import make_collator
from sweet.training import TrainConfig, train

METHODS = ["early_exit", "sweet", "multi_model", "grad_scale@0.25", "grad_scale@0.5", "pcgrad",
           "sweet_then_ee@0.5", "ee_then_sweet@0.5", "distill@1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--examples", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    from sweet.backbones import resolve_backbone

    data = load_task("sst2", args.data_dir)
    sample = make_splits(data, args.examples, seed=0).train
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("default"))
    encoded = encode(tokenizer, sample, 256, warn=False)
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(-1, args.rounds):  # round -1 warms up (first-call costs, allocator) and is not recorded
        for m in METHODS:
            model = MultiExitModel.from_backbone("default", num_labels=2, method=m)
            log = train(model, encoded, make_collator(tokenizer, model), TrainConfig(learning_rate=1e-4, epochs=1, seed=0),
                        progress=False)
            if r >= 0:
                seconds[m].append(log["seconds"])
            print(f"round {r}: {m:<18} {log['seconds']:.2f} s", flush=True)
    ratios = {m: statistics.median(a / b for a, b in zip(seconds[m], seconds["early_exit"])) for m in METHODS}
    result = {
        "what": "training seconds for the same steps (batch 16, SST-2, default backbone) per method; ratio = median "
                "over rounds of method / early_exit within a round",
        "examples": args.examples, "rounds": args.rounds, "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}; torch {torch.__version__}",
        "seconds": seconds, "ratio_to_early_exit": {m: round(v, 3) for m, v in ratios.items()},
    }
    atomic_write_json(args.output, result)
    for m in METHODS:
        print(f"{m:<18} median {statistics.median(seconds[m]):6.2f} s  x{ratios[m]:.2f} of early_exit")


if __name__ == "__main__":
    main()

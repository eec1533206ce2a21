"""Training benchmark: sweet's trainer against the Hugging Face Trainer on the same sample (issue #12, part 4).

    PYTHONPATH=src python benchmarks/train_vs_trainer.py --task sst2 --n-train 3000 --threads 2 \\
        --output docs/results/fast-path/train-sst2

runs sweet's trainer (method sweet, at fp32 and at ``auto``) and ``transformers.Trainer`` fine-tuning the same
backbone with one classification head (its defaults, fp32; and with ``bf16=True``) on the same training sample,
and writes OUTPUT.json and OUTPUT.md: training wall times, the ratios ours / Trainer, and sweet's last-exit score
against the Trainer's. Needs ``accelerate`` for the Trainer. See :func:`sweet.peers.train_benchmark`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from sweet.errors import SweetError
    from sweet.io import atomic_write_json
    from sweet.peers import format_train_benchmark, train_benchmark

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="sweet")
    ap.add_argument("--backbone", default="default")
    ap.add_argument("--ours", default="fp32,auto", help="sweet training precisions (comma list)")
    ap.add_argument("--trainer", default="fp32,bf16", help="HF Trainer precisions: fp32 and/or bf16 (comma list)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--output", type=Path, required=True, help="writes OUTPUT.json and OUTPUT.md")
    args = ap.parse_args(argv)
    trainer = [t.strip() for t in args.trainer.split(",") if t.strip()]
    if any(t not in ("fp32", "bf16") for t in trainer):
        print(f"error: --trainer takes fp32 and/or bf16, got {args.trainer!r}", file=sys.stderr)
        return 2
    try:
        report = train_benchmark(args.task, args.n_train, epochs=args.epochs, learning_rate=args.lr,
                                 batch_size=args.batch_size, seed=args.seed, method=args.method,
                                 backbone=args.backbone, ours_precisions=[p for p in args.ours.split(",") if p],
                                 trainer_bf16=[t == "bf16" for t in trainer], repeats=args.repeats,
                                 data_dir=args.data_dir, threads=args.threads)
    except SweetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["command"] = "python benchmarks/train_vs_trainer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = format_train_benchmark(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output.with_suffix(".json"), report)
    args.output.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

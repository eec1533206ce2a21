"""How long, and how much memory, preparing a large own-data CSV takes up to the first training step: read and check
the data (sweet.sources), draw the splits, tokenize the rows used (train sample, calibration, evaluation).

    python benchmarks/own_data_prepare.py --rows 1000000 --n-train 6000 --output docs/results/own-data/prepare-1m.json
    python benchmarks/own_data_prepare.py --rows 1000000 --n-train all ...

Writes a CSV of ROWS rows (one ~60-character text and one of 12 string labels per row) to a temporary folder, then
times each step in this process and reports the peak RSS (resource.getrusage), with the machine.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import tempfile
import time
from pathlib import Path

from sweet.backbones import resolve_backbone
from sweet.config import RunConfig
from sweet.data import make_splits
from sweet.datasource import load_run_data
from sweet.encoding import encode
from sweet.experiments.store import machine
from sweet.io import atomic_write_json
from sweet.rundir import load_tokenizer

WORDS = ("invoice refund charge card login password reset account outage error crash timeout slow page email "
         "shipping order delivery address cancel upgrade plan billing support").split()


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    queues = [f"queue_{i:02d}" for i in range(12)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["ticket_id", "body", "queue"])
        for i in range(rows):
            text = " ".join(rng.choice(WORDS) for _ in range(9))[:60]
            w.writerow([i, text, rng.choice(queues)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--n-train", default="6000", help="training rows per seed, or 'all'")
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON result")
    args = parser.parse_args()
    n_train = None if args.n_train == "all" else int(args.n_train)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tickets.csv"
        t = time.perf_counter()
        write_csv(path, args.rows)
        write_seconds = time.perf_counter() - t
        file_mb = round(path.stat().st_size / 1e6, 1)
        t0 = time.perf_counter()
        config = RunConfig(data=str(path), text_columns=["body"], label_column="queue", method="sweet", n_train=n_train)
        data = load_run_data(config)
        t1 = time.perf_counter()
        splits = make_splits(data, config.n_train, config.seed, config.calibration_size, config.heldout_eval_size)
        t2 = time.perf_counter()
        tokenizer = load_tokenizer(resolve_backbone("default"))
        t3 = time.perf_counter()
        encoded = [encode(tokenizer, part, 256, warn=False) for part in (splits.train, splits.calibration, splits.evaluation)]
        t4 = time.perf_counter()
    result = {
        "rows": args.rows, "file_mb": file_mb,
        "n_train": splits.info["n_train"], "n_calibration": len(splits.calibration), "n_evaluation": len(splits.evaluation),
        "seconds": {"write_csv (not counted)": round(write_seconds, 2), "read_and_check": round(t1 - t0, 2),
                    "splits": round(t2 - t1, 2), "load_tokenizer": round(t3 - t2, 2), "tokenize_used_rows": round(t4 - t3, 2),
                    "total_to_first_step": round(t4 - t0, 2)},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tokens": sum(len(ids) for e in encoded for ids in e.input_ids),
        "machine": machine(),
        "command": f"python benchmarks/own_data_prepare.py --rows {args.rows} --n-train {args.n_train}",
    }
    print(result)
    if args.output:
        atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()

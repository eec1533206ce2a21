"""Make two datasets that are not in GLUE's layout from the project's GLUE files, so that anyone can regenerate
the own-data results (docs/results/own-data/):

- ``reviews/``: SST-2 as a CSV with renamed columns and string labels: ``train.csv`` and ``validation.csv``, columns
  ``review_id, review, sentiment`` (``negative``/``positive``);
- ``nli.jsonl``: the MNLI pool (9,999 rows) as one JSON Lines file with 3 string classes: ``{"claim", "evidence",
  "verdict"}`` with ``entailment``/``neutral``/``contradiction`` (no evaluation split: sweet holds out a
  stratified part of it).

    python examples/make_own_data.py --glue ../shared/glue --output data/own
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

SST2_LABELS = ("negative", "positive")
MNLI_LABELS = ("entailment", "neutral", "contradiction")


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue", type=Path, default=Path("../shared/glue"), help="the GLUE folder")
    parser.add_argument("--output", type=Path, default=Path("data/own"), help="where to write the datasets")
    args = parser.parse_args()
    reviews = args.output / "reviews"
    reviews.mkdir(parents=True, exist_ok=True)
    for split, name in (("train.tsv", "train.csv"), ("dev.tsv", "validation.csv")):
        rows = read_tsv(args.glue / "SST-2" / split)
        with open(reviews / name, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["review_id", "review", "sentiment"])
            for row in rows:
                writer.writerow([row["idx"], row["sentence"].strip(), SST2_LABELS[int(row["label"])]])
        print(f"{reviews / name}: {len(rows)} rows")
    rows = read_tsv(args.glue / "MNLI" / "train_pool.tsv")
    with open(args.output / "nli.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"claim": row["premise"], "evidence": row["hypothesis"],
                                 "verdict": MNLI_LABELS[int(row["label"])]}, ensure_ascii=False) + "\n")
    print(f"{args.output / 'nli.jsonl'}: {len(rows)} rows")


if __name__ == "__main__":
    main()

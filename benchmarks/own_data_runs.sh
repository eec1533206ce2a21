#!/usr/bin/env bash
# The own-data results (docs/results/own-data/): Early-Exit and SWEET on two datasets that are not in GLUE's layout
# (made by examples/make_own_data.py from ../shared/glue), 6,000 training rows, 2 epochs, lr 1e-4, seed 0.
#
#   benchmarks/own_data_runs.sh [GLUE_DIR] [OUT_DIR]     (defaults: ../shared/glue, docs/results/own-data)
#
# Each run writes OUT_DIR/runs/NAME-METHOD (docs/results/own-data/.gitignore leaves its model/ out); SWEET='path/to/sweet' picks the command (it may have arguments: SWEET='python -m sweet.cli').
set -euo pipefail
cd "$(dirname "$0")/.."
GLUE=${1:-../shared/glue}
OUT=${2:-docs/results/own-data}
read -ra SWEET_CMD <<< "${SWEET:-.venv/bin/sweet}"
PY=${PY:-.venv/bin/python}
DATA=$(mktemp -d)
"$PY" examples/make_own_data.py --glue "$GLUE" --output "$DATA"
mkdir -p "$OUT/runs"
for method in early_exit sweet; do
  "${SWEET_CMD[@]}" train --data "$DATA/reviews" --label-column sentiment --method "$method" --n-train 6000 --lr 1e-4 \
    --output "$OUT/runs/reviews-$method" --overwrite --no-progress
  "${SWEET_CMD[@]}" train --data "$DATA/nli.jsonl" --text-columns claim,evidence --label-column verdict --method "$method" \
    --n-train 6000 --lr 1e-4 --output "$OUT/runs/nli-$method" --overwrite --no-progress
done
rm -rf "$DATA"

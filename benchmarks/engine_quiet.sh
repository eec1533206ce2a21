#!/usr/bin/env bash
# The engine's overhead before and after, in one quiet window (issue #24, section 6). About 7-8 minutes on the
# 2-core AMX development machine with the background grid paused (estimated from the last quiet sitting, not timed
# end to end: two engine_profile.py runs ~1 min each, training ~1.5 min, one `sweet bench` ~3.5 min);
# BEFORE_BENCH=1 adds `sweet bench` on the old engine (~3.5 min more).
#
#   benchmarks/engine_quiet.sh [OUT_DIR]      # run from the repository root (the tree with the new engine)
#
# Environment: BEFORE=<git ref of the old engine> (default: the merge base with main's history before the perf
# branch, 94e6e78), GLUE=<GLUE dir> (default ../shared/glue), PY=<python> (default .venv/bin/python or
# /work/main/.venv/bin/python), THREADS (default 2), BEFORE_BENCH=1 to also bench the old engine in full.
#
# What it writes into OUT_DIR (default docs/results/fast-path/quiet-<date>-perf):
#   profile-before.json / profile-after.json: the engine at threshold 1 against the bare model at the same
#       precision (bf16, int8), 11 interleaved repeats over the first 448 dev rows in one process each (benchmarks/engine_profile.py: the
#       default backbone with random heads, no training needed), with a torch.profiler breakdown;
#   bench-after.json / bench-after.md: `sweet bench` on the issue's model (EE SST-2, 2K examples x 1 epoch,
#       trained here into $RUN, default /tmp/sweet-engine-quiet-run, seed 0), batch 64, 2 threads, fp32/bf16/int8, with the "vs ORT int8" column
#       counting tokenization on both sides; bench-before.* likewise with BEFORE_BENCH=1.
# Pause the background grid first; nothing else should run. A grid on the local back-end can be paused with
# kill -STOP <its pid> (kill -CONT afterwards). Not one on the Ray back-end: Ray reports stopped workers dead and
# retries their runs. Stop that grid instead (kill its paper_queue.sh / paper_grid.sh, then its 'sweet grid',
# then 'ray stop'), and launch it again afterwards: cut-off runs resume from their checkpoints.
set -euo pipefail

ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
OUT=${1:-docs/results/fast-path/quiet-$(date -u +%Y-%m-%d)-perf}
BEFORE=${BEFORE:-94e6e78}
GLUE=${GLUE:-../shared/glue}
THREADS=${THREADS:-2}
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=/work/main/.venv/bin/python; fi
fi
mkdir -p "$OUT"
OLD=$(mktemp -d /tmp/sweet-before-XXXXXX)
trap 'git worktree remove --force "$OLD" >/dev/null 2>&1 || true' EXIT
git worktree add --detach "$OLD" "$BEFORE" >/dev/null

{ lscpu | grep -E "Model name"
  echo "cpu flags: $(grep -o -w -E 'amx_bf16|amx_int8|avx512_bf16|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  PYTHONPATH=src "$PY" -c "import torch; print('torch', torch.__version__, 'native bf16:', torch.ops.mkldnn._is_mkldnn_bf16_supported())"
  uptime; } | tee "$OUT/machine.txt"

t0=$SECONDS
echo "== engine at t=1 vs the bare model, the old engine ($BEFORE) then the new one"
PYTHONPATH="$OLD/src" "$PY" benchmarks/engine_profile.py --precisions bf16,int8 --repeats 11 --max-rows 448 --threads "$THREADS" \
  --profile --data-dir "$GLUE" --output "$OUT/profile-before.json"
PYTHONPATH=src "$PY" benchmarks/engine_profile.py --precisions bf16,int8 --repeats 11 --max-rows 448 --threads "$THREADS" \
  --profile --data-dir "$GLUE" --output "$OUT/profile-after.json"
echo "   ($((SECONDS - t0)) s)"

RUN=${RUN:-/tmp/sweet-engine-quiet-run}  # kept outside the repository (weights); reused when it exists
if [[ ! -f "$RUN/metrics.json" ]]; then
  echo "== training the issue's model into $RUN"
  PYTHONPATH=src "$PY" -m sweet.cli train --task sst2 --method early_exit --n-train 2000 --epochs 1 --seed 0 \
    --data-dir "$GLUE" --output "$RUN" --no-progress
fi
BENCH=(bench "$RUN" --batch-sizes 64 --threads "$THREADS" --repeats 3 --precisions fp32,bf16,int8
       --data-dir "$GLUE" --no-progress)
echo "== sweet bench, the new engine"
t0=$SECONDS
PYTHONPATH=src "$PY" -m sweet.cli "${BENCH[@]}" --output "$OUT/bench-after.json" | tee "$OUT/bench-after.md"
echo "   ($((SECONDS - t0)) s)"
if [[ "${BEFORE_BENCH:-0}" == 1 ]]; then
  echo "== sweet bench, the old engine ($BEFORE; its 'vs ORT int8' column is model-only)"
  t0=$SECONDS
  PYTHONPATH="$OLD/src" "$PY" -m sweet.cli "${BENCH[@]}" --output "$OUT/bench-before.json" | tee "$OUT/bench-before.md"
  echo "   ($((SECONDS - t0)) s)"
fi
echo "written: $OUT"

#!/usr/bin/env bash
# Run, or continue, a long grid (by default the paper grid in docs/results/paper/grid) until a deadline, and commit
# its light results (configs, metrics, training logs, split digests; no weights) every few minutes, so that a
# session that ends, or a machine that goes away, loses at most the runs in flight. At the deadline the grid is
# asked to stop ('sweet grid --stop': each run in training saves a checkpoint at its current step, on this machine
# only, and no further run starts); if it has not ended --grace minutes later (a run past training finishes first),
# it is interrupted (SIGINT: those runs keep their last periodic checkpoint). Then the results are committed, and
# a partial report is written and committed.
#
#   benchmarks/paper_grid.sh --until 13:50 -- --data-dir ../shared/glue --backend ray --cpus-per-run 1
#
# Options: --until HH:MM (the next one: tomorrow's if today's has passed; default: no deadline), --grace MINUTES
# (default 10), --every MINUTES between commits (default 20), --grid DIR (default docs/results/paper/grid),
# --report DIR (default docs/results/paper), --report-grid DIR (the grid whose report is written there; default
# --grid; a sibling grid of the paper grid passes docs/results/paper/grid: the paper report holds its section),
# --log FILE (default /tmp/paper-grid.log). Arguments after -- go to 'sweet grid' (the spec stored in the grid is
# used: a fresh clone continues with just --data-dir). SWEET=path/to/sweet picks the executable (default
# .venv/bin/sweet).
set -euo pipefail
cd "$(dirname "$0")/.."

GRID=docs/results/paper/grid
REPORT=docs/results/paper
REPORT_GRID=""
UNTIL=""
EVERY=20
GRACE=10
LOG=/tmp/paper-grid.log
while [ $# -gt 0 ]; do
  case "$1" in
    --until) UNTIL="$2"; shift 2 ;;
    --every) EVERY="$2"; shift 2 ;;
    --grace) GRACE="$2"; shift 2 ;;
    --grid) GRID="$2"; shift 2 ;;
    --report) REPORT="$2"; shift 2 ;;
    --report-grid) REPORT_GRID="$2"; shift 2 ;;
    --log) LOG="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "paper_grid.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$GRACE" =~ ^[0-9]+$ ]] || { echo "paper_grid.sh: --grace wants whole minutes, got '$GRACE'" >&2; exit 2; }
SWEET=${SWEET:-.venv/bin/sweet}
[ -x "$SWEET" ] || { echo "paper_grid.sh: $SWEET not found; install sweet first (README, command 1) or set SWEET" >&2; exit 2; }
deadline=""
if [ -n "$UNTIL" ]; then
  [[ "$UNTIL" =~ ^([01]?[0-9]|2[0-3]):[0-5][0-9]$ ]] && deadline=$(date -d "today $UNTIL" +%s) \
    || { echo "paper_grid.sh: --until wants HH:MM, got '$UNTIL'" >&2; exit 2; }
  # the next HH:MM: a time already past today is tomorrow's (an overnight launch)
  [ "$deadline" -gt "$(date +%s)" ] || deadline=$((deadline + 86400))
fi

commit() {  # $1: what to say
  local n
  n=$(find "$GRID/runs" -name metrics.json 2>/dev/null | wc -l) || true  # (no runs/ yet: 0)
  git add "$GRID" >/dev/null 2>&1 || true
  if git commit -q -m "grid $(basename "$(dirname "$GRID")")/$(basename "$GRID"): $n runs finished ($1)" -- "$GRID" >/dev/null 2>&1; then
    echo "$(date +%T) committed: $n runs finished ($1)"
  fi
}

# job control on: a background job of a script would otherwise ignore SIGINT (and the deadline could not stop it)
set -m
"$SWEET" grid --output "$GRID" --no-progress "$@" >>"$LOG" 2>&1 </dev/null &
pid=$!
set +m
echo "$(date +%T) sweet grid running (pid $pid), log $LOG${UNTIL:+, until $UNTIL}"
last=$(date +%s)
stopped=0
while kill -0 "$pid" 2>/dev/null; do
  sleep 20
  now=$(date +%s)
  if [ -n "$deadline" ] && [ "$now" -ge "$deadline" ]; then
    echo "$(date +%T) deadline: asking the grid to stop (each run in training saves its current step)"
    "$SWEET" grid --output "$GRID" --stop >>"$LOG" 2>&1 || echo "$(date +%T) the stop request failed (see $LOG)"
    stopped=1
    for _ in $(seq 1 $((GRACE * 6))); do kill -0 "$pid" 2>/dev/null || break; sleep 10; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$(date +%T) still running after $GRACE min: interrupting the grid"
      kill -INT "$pid" 2>/dev/null || true
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 2; done
      kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    fi
    break
  fi
  if [ $((now - last)) -ge $((EVERY * 60)) ]; then
    commit "results so far"
    last=$now
  fi
done
rc=0
wait "$pid" 2>/dev/null || rc=$?
if [ "$stopped" = 1 ] && { [ "$rc" = 0 ] || [ "$rc" = 130 ]; }; then
  commit "stopped at the deadline"
  rc=0  # stopping at the deadline is what was asked for
else
  commit "launch ended, rc $rc"
fi
if "$SWEET" report "${REPORT_GRID:-$GRID}" --output "$REPORT" --partial >>"$LOG" 2>&1; then
  git add "$REPORT" >/dev/null 2>&1 || true
  git commit -q -m "grid report (partial where the grid is unfinished)" -- "$REPORT" >/dev/null 2>&1 || true
  echo "$(date +%T) report written to $REPORT and committed"
else
  echo "$(date +%T) no report (see $LOG)" >&2
fi
tail -n 3 "$LOG"
exit "$rc"

#!/usr/bin/env bash
# Run the paper's grids one after another until a deadline, each with benchmarks/paper_grid.sh (which commits its
# results every few minutes and then writes the paper report, docs/results/paper/report.md, whose sections read
# the grids beside docs/results/paper/grid): the tuned paper grid, then the exit-ladder ablation, then the
# beyond-the-paper screen, then the BASE-depth grid (MPNet). A grid is left when it has nothing left to run, or only
# runs that wait for something it cannot run itself; the next one starts. Later grids take their learning rates from
# the paper grid (learning_rates_from), so their runs wait until it has chosen. Run it from a worktree at a fixed
# commit, not from the tree being edited.
#
#   benchmarks/paper_queue.sh --until 07:30 -- --data-dir ../shared/glue --backend ray --cpus-per-run 1
#
# (ray with 1 CPU per run: two runs side by side on 2 cores, each with one torch thread, so the same results as
# --threads 1 on the local back-end, which runs one at a time.)
#
# Options: --until HH:MM (the next one: tomorrow's if today's has passed; default: no deadline), --only NAME[,NAME]
# (some of: paper, ablation, beyond, base), --dry-run (print each paper_grid.sh command and the plan
# 'sweet grid --dry-run' prints for it; runs nothing).
# Arguments after -- go to every 'sweet grid'. SWEET=path/to/sweet picks the executable (default .venv/bin/sweet).
set -euo pipefail
cd "$(dirname "$0")/.."

P=docs/results/paper
# name, grid directory, spec file ('-': the spec stored in the grid). The later grids sit beside the paper grid,
# where its report reads them (one report, docs/results/paper/report.md, with a section per grid).
QUEUE=(
  "paper    $P/grid     -"
  "ablation $P/ablation $P/ablation/spec.toml"
  "beyond   $P/beyond   $P/beyond/spec.toml"
  "base     $P/base     $P/base/spec.toml"
)
UNTIL=""
ONLY=""
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --until) UNTIL="$2"; shift 2 ;;
    --only) ONLY=",$2,"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "paper_queue.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
SWEET=${SWEET:-.venv/bin/sweet}
export SWEET
deadline=""
if [ -n "$UNTIL" ]; then
  [[ "$UNTIL" =~ ^([01]?[0-9]|2[0-3]):[0-5][0-9]$ ]] && deadline=$(date -d "today $UNTIL" +%s) \
    || { echo "paper_queue.sh: --until wants HH:MM, got '$UNTIL'" >&2; exit 2; }
  # the next HH:MM: a time already past today is tomorrow's (an overnight launch)
  [ "$deadline" -gt "$(date +%s)" ] || deadline=$((deadline + 86400))
fi

rc=0
for entry in "${QUEUE[@]}"; do
  read -r name grid spec <<<"$entry"
  [ -z "$ONLY" ] || [[ "$ONLY" == *",$name,"* ]] || continue
  if [ -n "$deadline" ] && [ "$(date +%s)" -ge "$deadline" ]; then
    echo "$(date +%T) deadline $UNTIL reached: $name and the grids after it wait for the next session"
    break
  fi
  specarg=()
  [ "$spec" = "-" ] || specarg=(--spec "$spec")
  cmd=(benchmarks/paper_grid.sh ${UNTIL:+--until "$UNTIL"} --grid "$grid" --report "$P" --report-grid "$P/grid"
       --log "/tmp/paper-queue-$name.log" -- "${specarg[@]}" "$@")
  echo "$(date +%T) $name: ${cmd[*]}"
  if [ "$DRY" = 1 ]; then
    "$SWEET" grid --output "$grid" "${specarg[@]}" "$@" --dry-run || rc=$?
    continue
  fi
  "${cmd[@]}" || { r=$?; echo "$(date +%T) $name: paper_grid.sh ended with rc $r (see /tmp/paper-queue-$name.log); going on" >&2; [ "$rc" != 0 ] || rc=$r; }
done
exit "$rc"

#!/usr/bin/env bash
# Training throughput under OpenMP wait policies, on an idle machine and on one where another
# job keeps CORES_BUSY cores busy, at 1 thread and at all cores (threads 0). The policies:
# libgomp's default spin (GOMP_SPINCOUNT=300000), the engine's default (a spin of 1000, then
# sleep), active (spin only) and passive (sleep at once). One bench/train_bench.ts run per
# cell, in series; each prints a JSON line, collected with the cell's settings into
# bench/results/threads.jsonl.
#
#   bash bench/threads_bench.sh [PRESET] [STEPS]       (default tiny 40)
#
# Run it on an otherwise idle machine: the "busy" load is the only other job it may see.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
PRESET=${1:-tiny}
STEPS=${2:-40}
CORES_BUSY=${CORES_BUSY:-1}
out=bench/results/threads.jsonl
hog_pids=()
start_load() {
  for _ in $(seq "$CORES_BUSY"); do
    (while :; do :; done) &
    hog_pids+=($!)
  done
}
stop_load() {
  for p in "${hog_pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  hog_pids=()
}
trap stop_load EXIT
for load in idle busy; do
  [ "$load" = busy ] && start_load
  for policy in libgomp engine active passive; do
    case $policy in
      libgomp) env=(GOMP_SPINCOUNT=300000) ;;
      engine) env=() ;;
      *) env=(OMP_WAIT_POLICY=$policy) ;;
    esac
    for threads in 1 0; do
      line=$(env "${env[@]}" deno run -A bench/train_bench.ts --no-save --preset "$PRESET" \
        --steps "$STEPS" --threads "$threads" 2>/dev/null | tail -1)
      tps=$(sed -nE 's/.*"tokensPerSec":([0-9]+).*/\1/p' <<<"$line")
      printf '%-5s %-8s threads=%s  %s tokens/s\n' "$load" "$policy" "$threads" "$tps"
      echo "{\"load\":\"$load\",\"coresBusy\":$([ "$load" = busy ] && echo "$CORES_BUSY" || echo 0),\"policy\":\"$policy\",\"threadsFlag\":$threads,\"result\":$line}" >>"$out"
    done
  done
  stop_load
done

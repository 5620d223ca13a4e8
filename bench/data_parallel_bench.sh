#!/usr/bin/env bash
# Data-parallel training on the CPU engine against one process with as many threads: the same
# global batch and steps as 1 rank x 2 threads and as 2 ranks x 1 thread (mpirun), the latter
# with the gradient all-reduce after the backward (--comm-overlap off) and overlapped with it
# (on), then the mean step time of each (steps 2.. from log.jsonl) and rank 0's all-reduce
# time per step that the backward did not hide.
# Then bench/allreduce_bench.ts times the all-reduce alone at the presets' sizes. mpirun yields
# the core while a rank waits (mpi_yield_when_idle): on a machine whose cores are shared, a
# rank that spins in MPI slows the rank it waits for.
#
#   bash bench/data_parallel_bench.sh DATA_DIR [PRESET] [STEPS] [MODE]   (default small 8 lotus)
#
# DATA_DIR is a dataset (deno task build-dataset). Needs Open MPI's mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
DATA=${1:?give a dataset directory}
PRESET=${2:-small}
STEPS=${3:-8}
MODE=${4:-lotus}
MPIRUN=(mpirun --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none
  --mca mpi_yield_when_idle 1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(--data "$DATA" --preset "$PRESET" --mode "$MODE" --recipe none --steps "$STEPS" --batch 8
  --steps-per-stage 0 --eval-examples 2)
deno task train "${args[@]}" --threads 2 --out "$tmp/one" 2>/dev/null | tail -1
for ov in off on; do
  echo "--comm-overlap $ov:"
  "${MPIRUN[@]}" -np 2 deno task train "${args[@]}" --threads 1 --comm-overlap "$ov" \
    --out "$tmp/two-$ov" 2>&1 | grep -E "^data parallel|^done" || true
done
for run in one two-off two-on; do
  deno eval "
    const r = Deno.readTextFileSync('$tmp/$run/log.jsonl').trim().split('\n').map((l) => JSON.parse(l))
      .filter((x) => x.kind === 'train');
    const dt = r.slice(1).map((x, i) => x.seconds - r[i].seconds);
    console.log(JSON.stringify({ run: '$run', preset: '$PRESET', steps: r.length,
      meanStepMs: Math.round(1000 * dt.reduce((a, b) => a + b, 0) / dt.length) }));"
done
"${MPIRUN[@]}" -np 2 deno run -A bench/allreduce_bench.ts tiny "$PRESET"

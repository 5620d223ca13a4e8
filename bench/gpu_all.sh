#!/usr/bin/env bash
# Every GPU measurement in one bounded command (about 8 minutes at most), for a machine that is
# lent for minutes. From the project root:
#
#   bash bench/gpu_all.sh [OUT_DIR]
#
# In order, each with its own time limit so that a hang or a failure in one still leaves the
# others' results:
#   1. the correctness check (check/gpu_check.sh, 30 training steps): CUDA against the CPU
#      engine at every precision, and the PyTorch rows;
#   2. the benchmark (bench/gpu_bench.sh --skip-check): training at the reference shape in bf16,
#      batch-1 inference, the 1,319-question evaluation, the PyTorch reference eager and compiled;
#   3. the same training and inference with the fp32 attention kernels (LOTUS_TC_ATTENTION=0),
#      the tensor-core attention's before;
#   4. the same in TF32 and in fp32, the bf16 path's before.
# Results go to OUT_DIR, else $OUT, else bench/results/gpu_all: run.log (everything printed),
# check/ and bench/ (each table.txt, rows.jsonl and its JSON report) and variants.txt (the tables
# of 3 and 4, whose rows are also in run.log). The tables are printed last. Limits in seconds: CHECK_S (150), BENCH_S (220),
# VARIANT_S (45 each).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results/gpu_all}}
mkdir -p "$out"
log=$out/run.log
: >"$log"
say() { echo "gpu-all: $*" | tee -a "$log" >&2; }

say "start $(date -u +%FT%TZ)"
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
  command -v nvcc >/dev/null && nvcc --version | tail -1
  g++ --version | head -1
  nproc
} >>"$log" 2>&1

say "1. correctness check"
GPU_CHECK_TIMEOUT=${CHECK_S:-150} bash check/gpu_check.sh --steps 30 --out "$out/check" \
  >>"$log" 2>&1
say "check exit $?"

say "2. benchmark (bf16, tensor-core attention)"
GPU_BENCH_TIMEOUT=${BENCH_S:-220} bash bench/gpu_bench.sh --skip-check --out "$out/bench" \
  >>"$log" 2>&1
say "bench exit $?"

variant() { # name, env assignment or "", bench arguments...
  local name=$1 envset=$2
  shift 2
  local dir
  dir=$(mktemp -d)
  say "variant $name"
  env $envset GPU_BENCH_TIMEOUT="${VARIANT_S:-45}" bash bench/gpu_bench.sh --skip-check \
    --skip-torch --runs 5 --eval-questions 64 --steps 5 --out "$dir" "$@" >>"$log" 2>&1
  say "variant $name exit $?"
  [ -f "$dir/rows.jsonl" ] && sed "s/^/$name: /" "$dir/rows.jsonl" >>"$log"
  [ -f "$dir/table.txt" ] && { echo "== $name"; cat "$dir/table.txt"; } >>"$out/variants.txt"
  rm -rf "$dir"
}
variant fp32-attention LOTUS_TC_ATTENTION=0
variant tf32 "" --precision tf32
variant fp32 "" --precision fp32

say "end $(date -u +%FT%TZ)"
for f in "$out/check/table.txt" "$out/bench/table.txt" "$out/variants.txt"; do
  [ -f "$f" ] && { echo "== $f"; cat "$f"; }
done

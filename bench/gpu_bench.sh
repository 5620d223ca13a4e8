#!/usr/bin/env bash
# The GPU benchmark in one command (docs/gpu-bench.md). On a machine with an NVIDIA GPU, from
# the project root:
#
#   npx deno task bench:gpu [--skip-check] ...     (or: bash bench/gpu_bench.sh ...)
#
# It runs the correctness checks first (check/gpu_check.ts; a failure stops it), then
# training, batch-1 inference and evaluation throughput, and prints a table last. Results go
# to --out, else $OUT when set, else bench/results/gpu_bench/. Without a GPU it is a dry run
# on the CPU engine at a small shape. Arguments go to bench/gpu_bench.ts. GPU_BENCH_TIMEOUT
# (seconds, default 560) bounds the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
source check/_native_deno.sh gpu_bench
source check/_stoppable.sh
export GPU_BENCH_TIMEOUT="${GPU_BENCH_TIMEOUT:-560}"
stoppable timeout --kill-after=10 "$GPU_BENCH_TIMEOUT" "$deno_bin" run --allow-all \
  bench/gpu_bench.ts "$@"

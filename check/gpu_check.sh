#!/usr/bin/env bash
# The GPU check in one command (docs/gpu-check.md). On a machine with an NVIDIA GPU, from the
# project root:
#
#   npx deno task test:gpu ...     (or: bash check/gpu_check.sh ...)
#
# It passes only on a GPU: without one, or without a CUDA engine that builds and loads, it
# fails (exit 1). --cpu-only (the CPU engine stands in for CUDA) and --emulate (the CUDA
# engine's source on CPU threads) check the check itself. Arguments go to check/gpu_check.ts
# (--steps, --cycles, --cpu-only, --emulate, --sanitize, --engine-lib, --skip-torch, --python,
# --out). GPU_CHECK_TIMEOUT (seconds; default 290, 1200 with --emulate, whose kernels run on CPU
# threads, 3600 with --sanitize too) bounds the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
source check/_native_deno.sh gpu_check
source check/_stoppable.sh
# A hung kernel would block the check forever: stop it after the time limit (the rows already
# measured are in rows.jsonl and on stderr).
limit=290
for a in "$@"; do [ "$a" = --emulate ] && limit=1200; done
for a in "$@"; do [ "$a" = --sanitize ] && limit=3600; done
stoppable timeout --kill-after=10 "${GPU_CHECK_TIMEOUT:-$limit}" "$deno_bin" run --allow-all \
  check/gpu_check.ts "$@"

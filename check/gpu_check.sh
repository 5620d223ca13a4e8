#!/usr/bin/env bash
# The GPU check in one command (docs/gpu-check.md). On the GPU machine, from the project root,
# after ../shared/tools/device-pack has written .device/ here:
#
#   bash .device/run.sh bash check/gpu_check.sh
#
# Anywhere else: `deno task test:gpu` (without a GPU it is a dry run: the CPU engine stands in
# for CUDA, and the CUDA rows say SKIPPED). Arguments go to check/gpu_check.ts (--steps,
# --cycles, --cpu-only, --skip-torch, --out). GPU_CHECK_TIMEOUT (seconds, default 290) bounds
# the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
source check/_native_deno.sh gpu_check
# A hung kernel would block the check forever: stop it in time to leave a rerun within the
# session's device time (the rows measured so far are in rows.jsonl and on stderr).
exec timeout --kill-after=10 "${GPU_CHECK_TIMEOUT:-290}" "$deno_bin" run --allow-all check/gpu_check.ts "$@"

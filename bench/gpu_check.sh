#!/usr/bin/env bash
# The GPU check in one command (docs/gpu-check.md). On the GPU machine, from the project root,
# after ../shared/tools/device-pack has written .device/ here:
#
#   bash .device/run.sh bash bench/gpu_check.sh
#
# Anywhere else: `deno task test:gpu` (without a GPU it is a dry run: the CPU engine stands in
# for CUDA, and the CUDA rows say SKIPPED). Arguments go to bench/gpu_check.ts (--steps,
# --cycles, --cpu-only, --skip-torch, --out). GPU_CHECK_TIMEOUT (seconds, default 290) bounds
# the whole run.
#
# It calls the Deno executable itself, never `deno task` and never node_modules/.bin/deno:
# that is a JavaScript shim that starts node_modules/deno/deno, which device-pack leaves out,
# and the GPU machine has no node. So: $DENO if set, else the first `deno` on PATH that is a
# native executable (run.sh puts one in /tmp/devbin), else the one npm installed.
set -euo pipefail
cd "$(dirname "$0")/.."

is_native() { [ -x "$1" ] && [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

deno_bin="${DENO:-}"
if [ -z "$deno_bin" ]; then
  IFS=: read -r -a dirs <<<"$PATH"
  for d in "${dirs[@]}" node_modules/@deno/linux-x64-glibc node_modules/deno; do
    if is_native "$d/deno"; then deno_bin="$d/deno"; break; fi
  done
fi
if [ -z "$deno_bin" ] || ! is_native "$deno_bin"; then
  echo "gpu_check: no native deno executable found (PATH, node_modules/@deno, \$DENO);" \
    "on the GPU machine run it as: bash .device/run.sh bash bench/gpu_check.sh" >&2
  exit 2
fi

export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
# nvcc: on PATH, or the CUDA toolkit's usual place.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
fi
echo "gpu_check: $("$deno_bin" --version | head -1), nvcc: $(command -v nvcc || echo none)" >&2
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader >&2 || true
fi
# A hung kernel would block the check forever: stop it in time to leave a rerun within the
# session's device time (the rows measured so far are in rows.jsonl and on stderr).
exec timeout --kill-after=10 "${GPU_CHECK_TIMEOUT:-290}" "$deno_bin" run --allow-all bench/gpu_check.ts "$@"

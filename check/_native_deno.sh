# Sourced by check/gpu_check.sh and bench/gpu_bench.sh: finds the Deno executable itself and
# prepares the environment of a GPU run. node_modules/.bin/deno is not used: it is a
# JavaScript shim that needs node, and a GPU machine may have Deno without node. So: $DENO if
# set, else the first `deno` on PATH that is a native executable, else the one npm installed
# (node_modules/deno/deno). Sets deno_bin; $1 names the caller in messages.

is_native() { [ -x "$1" ] && [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

deno_bin="${DENO:-}"
if [ -z "$deno_bin" ]; then
  IFS=: read -r -a dirs <<<"$PATH"
  for d in "${dirs[@]}" node_modules/@deno/linux-x64-glibc node_modules/deno; do
    if is_native "$d/deno"; then deno_bin="$d/deno"; break; fi
  done
fi
if [ -z "$deno_bin" ] || ! is_native "$deno_bin"; then
  echo "$1: no native deno executable found (PATH, node_modules/@deno, \$DENO);" \
    "run npm ci, or set DENO to the path of a deno executable" >&2
  exit 2
fi

export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
# nvcc: on PATH, or the CUDA toolkit's usual place.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
fi
echo "$1: $("$deno_bin" --version | head -1), nvcc: $(command -v nvcc || echo none)" >&2
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader >&2 || true
fi

#!/usr/bin/env bash
# The kernel tour (check/kernel_tour.ts --quick: every kernel instance of the CUDA engine at small
# shapes, against the CPU engine, in as few launches as that takes) under NVIDIA's
# compute-sanitizer, one tool at a time. On a machine with an
# NVIDIA GPU and the CUDA toolkit's compute-sanitizer, from the project root:
#
#   bash check/gpu_sanitize.sh [--tools memcheck,racecheck,synccheck,initcheck] [--limit S]
#                              [--engine-lib PATH] [OUT_DIR]
#
# memcheck finds out-of-bounds and misaligned accesses to global and shared memory, racecheck
# shared-memory races between a block's threads, synccheck barriers and warp syncs used where
# not every thread reaches them, initcheck reads of device memory never written: the faults that
# the host emulation cannot see, since it runs the kernels on host memory and one thread at a
# time. Each tool runs the whole tour in its own process, bounded by --limit seconds (default
# 60). The CUDA library is built first (or taken from --engine-lib), outside the sanitizer.
#
# Writes to OUT_DIR (default $OUT, else out/gpu_sanitize): sanitize-TOOL.log (the sanitizer's
# report), sanitize-TOOL.out (the tour's table) and sanitize.txt, a line a tool, each printed as
# its tool ends:
#   sanitize memcheck: N errors; tour P passed, F failed, S skipped; T s
# Exit status: 0 when every tool ran to the end and reported nothing, 1 otherwise, 2 when there
# is no compute-sanitizer or no library (the line says which).
set -uo pipefail
cd "$(dirname "$0")/.."
source check/_stoppable.sh
tools=memcheck,racecheck,synccheck,initcheck limit=60 lib=
while [ $# -gt 0 ]; do
  case $1 in
    --tools) tools=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    --engine-lib)
      [ -f "${2:-}" ] || { echo "gpu-sanitize: --engine-lib ${2:-}: no such file" >&2; exit 2; }
      lib=$(readlink -f "$2"); shift 2 ;;
    -*) echo "gpu-sanitize: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    *) break ;;
  esac
done
out=${1:-${OUT:-out/gpu_sanitize}}
mkdir -p "$out"
summary=$out/sanitize.txt
: >"$summary"
line() { echo "$*" | tee -a "$summary"; }

sanitizer=${COMPUTE_SANITIZER:-}
if [ -z "$sanitizer" ]; then
  for c in "$(command -v compute-sanitizer)" /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if [ -n "$c" ] && [ -x "$c" ]; then sanitizer=$c; break; fi
  done
fi
if [ -z "$sanitizer" ]; then
  line "sanitize: no compute-sanitizer (looked on PATH, in /usr/local/cuda/bin and" \
    "/usr/local/cuda/compute-sanitizer; or set COMPUTE_SANITIZER): install the CUDA" \
    "toolkit's sanitizer to run these checks"
  exit 2
fi
# Found in a subshell: check/_native_deno.sh exits when it finds none, which would leave no line.
if ! deno_bin=$(source check/_native_deno.sh gpu_sanitize 2>"$out/deno.log" && echo "$deno_bin")
then
  line "sanitize: no native deno executable ($(tail -1 "$out/deno.log"))"
  exit 2
fi
export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
if [ -z "$lib" ]; then
  stoppable timeout --kill-after=5 300 "$deno_bin" run --allow-all cli/build_engine.ts \
    --backend cuda --quiet >"$out/build.out" 2>"$out/build.log"
  lib=$(tail -1 "$out/build.out")
  if [ ! -f "$lib" ]; then
    line "sanitize: the CUDA engine did not build ($out/build.log)"
    exit 2
  fi
fi

status=0
IFS=, read -r -a list <<<"$tools"
if [ ${#list[@]} = 0 ]; then
  line "sanitize: --tools names no tool (memcheck, racecheck, synccheck, initcheck)"
  exit 2
fi
for tool in "${list[@]}"; do
  t0=$SECONDS
  # The sanitizer's own exit status for what it found (86), where the tour itself succeeded
  # (otherwise the tour's). memcheck: a faulting kernel is stopped, not the whole context, so
  # that the tour goes on to the kernels after it. No limit on the wait for the process to
  # attach (the default's 10 s can leave it unchecked): timeout bounds the run.
  extra=()
  [ "$tool" = memcheck ] && extra=(--destroy-on-device-error kernel)
  stoppable timeout --kill-after=5 "$limit" "$sanitizer" --tool "$tool" --error-exitcode 86 \
    --print-limit 25 --launch-timeout 0 ${extra[@]+"${extra[@]}"} \
    --log-file "$out/sanitize-$tool.log" \
    "$deno_bin" run --allow-all check/kernel_tour.ts --quick --engine-lib "$lib" \
    >"$out/sanitize-$tool.out" 2>&1
  rc=$?
  log=$out/sanitize-$tool.log
  # memcheck, synccheck and initcheck end with "ERROR SUMMARY: N errors" (past the print limit
  # another ERROR SUMMARY line follows, of the errors not printed), racecheck with
  # "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)": every hazard counts.
  found=$(grep -E '^========= ERROR SUMMARY: [0-9,]+ errors?$' "$log" 2>/dev/null | head -1 |
    grep -Eo '[0-9,]+' | tr -d ,)
  hazards=$(grep -Eo 'RACECHECK SUMMARY: [0-9,]+ hazards? displayed \([^)]*\)' "$log" \
    2>/dev/null | tail -1)
  [ -n "$hazards" ] && found=$(sed -E 's/^RACECHECK SUMMARY: ([0-9,]+) .*/\1/' <<<"$hazards" |
    tr -d ,)
  # The sanitizer's own failures, which may still end with a summary of 0 errors.
  failed='Internal Sanitizer Error[^.]*|No attachable process[^.]*'
  failed+='|terminated before first instrumented API call'
  broken=$(grep -Eo -m1 "$failed" "$log" 2>/dev/null)
  tour=$(grep -Eo 'kernel tour: [0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?' \
    "$out/sanitize-$tool.out" | tail -1)
  tour=${tour#kernel tour: }
  if [ $rc = 124 ] || [ $rc = 137 ]; then
    # No summary from a stopped run: count the reports it had written (their first lines; the
    # log may not have been flushed, so a count of 0 proves nothing).
    heads='invalid|misaligned|out-of-range|uninitialized|barrier error|warpgroup mma|program hit'
    heads+='|host api|malloc/free|potential invalid|(error|warning): (race|potential|\(warp)'
    seen=$(grep -ciE "^========= ($heads)" "$log" 2>/dev/null)
    what="stopped at the ${limit} s limit, ${seen:-0} reports before it"
  elif [ -n "$broken" ]; then
    what="the sanitizer failed: $broken (see $log)"
  elif [ -z "$found" ]; then
    what="no summary from the sanitizer (exit $rc; see $log)"
  else
    what="$found errors"
    [ -n "$hazards" ] && what="$found hazards (${hazards#RACECHECK SUMMARY: })"
  fi
  line "sanitize $tool: $what; tour ${tour:-did not finish}; $((SECONDS - t0)) s"
  [ -n "$broken" ] && status=1
  if [ "$found" != 0 ] || [ $rc != 0 ]; then status=1; fi
done
exit $status

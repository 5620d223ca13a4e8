#!/usr/bin/env bash
# Every GPU measurement in one bounded command, for a machine that is lent for minutes. From
# the project root:
#
#   bash bench/gpu_all.sh [--quick] [--baseline-lib PATH] [--preflight-only] [OUT_DIR]
#
# In order, each with its own time limit so that a hang or a failure in one still leaves the
# others' results (after the engines' builds, 240 s each, which take seconds where the libraries
# are built already):
#   0. the preflight (check/gpu_check.ts --preflight: the bf16 ops, LOTUS steps and CUDA graphs
#      against the CPU engine, in seconds). When it fails, it runs again with the switchable
#      changes of step 4 all turned off and, if that passes, narrows that set (halving it, then
#      turning each change left back on) while the preflight still passes, ten tries at most,
#      so that the benchmark and the profile measure an engine that computes what the CPU
#      engine does: they run with that set turned off, and preflight.txt names it. Either way
#      the variants other than "default" are left out. The correctness check runs with the
#      settings the script was started with (the defaults, unless its caller set some), so that
#      its rows show what failed, and so does the sanitizer's tour. --preflight-only stops after
#      this step, with exit status 1 when the preflight failed with those settings;
#   1. the correctness check (check/gpu_check.sh): CUDA against the CPU engine at every
#      precision, and the PyTorch rows;
#   2. the benchmark (bench/gpu_bench.sh --skip-check): training at the reference shape in bf16,
#      batch-1 inference, the 1,319-question evaluation, the PyTorch reference eager and compiled;
#   3. the op profile of a training step and of a batch-1 generation (bench/gpu_profile.ts);
#   4. the same short benchmark with the defaults (variant "default", what the others are
#      compared with), then training and inference with every GEMM on the heuristic's first
#      algorithm (LOTUS_GEMM_TUNE=1), the timed choice's before; with the attention backward staging its
#      fp32 rows (LOTUS_TC_BF16_ROWS=0), the bf16 copies' before; with the tensor-core attention
#      in 64-row blocks (LOTUS_TC_WARPS=4), the before of blocks sized to the sequence; with
#      forwards of 1 to 8 rows through cuBLAS's GEMM (LOTUS_GEMV=0), the before of the few-row
#      kernel; with each attention tile waited for before the products its staging overlaps
#      (LOTUS_TC_AHEAD=0), the before of staging a tile ahead; with GELU's backward as its own
#      kernel (LOTUS_DEFER_GELU_BWD=0), the before of its deferral to the fc matmul; with kernels
#      launched without programmatic dependent launch (LOTUS_PDL=0), its before; with forwards
#      of 9 to 128 rows always through cuBLAS (LOTUS_SKINNY=0), the before of the split-K
#      kernel; with GELU's forward as its own kernel (LOTUS_DEFER_GELU_FWD=0), the before of
#      its deferral to the few-row kernels; with each layer's qkv kept in fp32 (LOTUS_BF16_QKV=0),
#      the before of its bf16 storage; with each layer's MLP first projection kept in fp32
#      (LOTUS_BF16_FCH=0), the before of its bf16 storage; without --quick, with LayerNorm's
#      forward as its own kernel (LOTUS_DEFER_NORM_FWD=0), the before of its deferral to the
#      gemv kernel; with the fp32 attention kernels
#      (LOTUS_TC_ATTENTION=0), the tensor-core attention's before; then in TF32 and fp32, the bf16 path's before;
#   5. with --baseline-lib PATH (a CUDA engine library built from an earlier commit of the same
#      ABI, e.g. `git worktree add /tmp/b <commit>` and `deno task build-engine --backend cuda`
#      there): the variant "baseline" on that library, then "current" on this one, the same
#      short benchmark back to back, so that a change's before and after come from one run.
#   6. the kernel tour under compute-sanitizer (check/gpu_sanitize.sh): every kernel of the
#      engine at small shapes, under memcheck and racecheck (--quick) or all four tools.
# --quick (550 s of limits when the preflight passes, 600 with --baseline-lib, besides the
# engines' builds: seconds where the libraries are built, about a minute where nvcc compiles
# the CUDA engine, 480 s of limits) skips PyTorch, the fp32 attention, TF32 and fp32 variants,
# and two of the sanitizer's tools, and separate-norm-fwd, and shortens the rest (1,490 s of
# limits without it). On a
# card other than an H200 (whose reference figures docs/gpu-bench.md gives) it runs PyTorch's
# eager reference in the benchmark instead of two variants (fp32-rows, separate-gelu-fwd). When
# the preflight fails, its tries (at most ten) take the time of the variants they leave out.
# Results go to OUT_DIR, else $OUT, else bench/results/gpu_all, as twelve files: run.log
# (everything printed, each row as measured), preflight.txt (its verdict, and the changes
# turned off), check.txt and check.json, bench.txt and bench.json, profile.txt and
# profile.json, variants.txt, predictions.txt and
# predictions.json (each change's predicted effect against its variant's measured one), and
# sanitize.txt (a line a sanitizer tool; its reports, where it ran, in the folder sanitize/).
# The tables are printed last. Each step works in OUT_DIR/gpu_all.work/, removed at the end: a
# run stopped or killed part way leaves it, with what the step under way had measured (its
# rows.jsonl), which a machine that returns only OUT_DIR then brings back too.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0 baseline= preflight_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1; shift ;;
    --preflight-only) preflight_only=1; shift ;;
    --baseline-lib)
      [ -f "${2:-}" ] || { echo "gpu-all: --baseline-lib ${2:-}: no such file" >&2; exit 2; }
      baseline=$(readlink -f "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu-all: unknown option $1 (--quick, --baseline-lib PATH, --preflight-only," \
      "then OUT_DIR)" >&2
      exit 2 ;;
    *) break ;;
  esac
done
out=${1:-${OUT:-bench/results/gpu_all}}
mkdir -p "$out"
log=$out/run.log
: >"$log"
say() { echo "gpu-all: $*" | tee -a "$log" >&2; }
# The working folder has a name of its own and a mark, so that nothing else in OUT_DIR is
# ever removed: an earlier run's (stopped) is replaced, any other folder of that name refused.
tmp=$out/gpu_all.work finished=0
if [ -e "$tmp" ] && [ ! -f "$tmp/.gpu_all" ]; then
  say "$tmp is not a working folder of this script's (no $tmp/.gpu_all): move it, or give" \
    "another OUT_DIR"
  exit 2
fi
if ! { rm -rf "$tmp" && mkdir -p "$tmp" && : >"$tmp/.gpu_all"; }; then
  say "cannot make the working folder $tmp afresh"
  exit 2
fi
ended() { # the EXIT trap: the working folder goes at the end, stays after a stop
  local rc=$?
  if [ $finished = 1 ]; then
    rm -rf "$tmp"
  else
    echo "gpu-all: ended before its last step (exit $rc); the step under way left its files" \
      "in $tmp" >>"$log" 2>/dev/null
  fi
}
trap ended EXIT
if [ $quick = 1 ]; then
  check_args=(--skip-torch --steps 20) bench_args=(--skip-torch --runs 10)
  preflight_s=30 check_s=55 bench_s=45 profile_s=40 variant_s=25 sanitize_s=40
  tools=memcheck,racecheck
  variants=(default heuristic-gemm fp32-rows 64-row-blocks gemm-few-rows no-lookahead
    separate-gelu-bwd no-pdl gemm-skinny-rows separate-gelu-fwd fp32-qkv fp32-fch)
else
  check_args=(--steps 30) bench_args=()
  preflight_s=40 check_s=150 bench_s=220 profile_s=60 variant_s=45 sanitize_s=75
  tools=memcheck,racecheck,synccheck,initcheck
  variants=(default heuristic-gemm fp32-rows 64-row-blocks gemm-few-rows no-lookahead
    separate-gelu-bwd no-pdl gemm-skinny-rows separate-gelu-fwd fp32-qkv fp32-fch
    separate-norm-fwd fp32-attention tf32 fp32)
fi

say "start $(date -u +%FT%TZ)$([ $quick = 1 ] && echo ' (--quick)')"
if ! command -v nvidia-smi >/dev/null; then
  say "no NVIDIA GPU here (nvidia-smi not found): every step runs as a dry run on the CPU" \
    "engine, and its figures and the predictions' verdicts say nothing of the GPU"
fi
# The PyTorch reference's figures that docs/gpu-bench.md compares with are an H200's. On another
# card a quick run measures the eager reference too, in the same run, so that the engine's ratio
# to it is one card's; it takes the time of the two variants of the smallest predicted effect.
# (GPU_ALL_CARD stands in for the card's name, for the script's own tests.)
card=${GPU_ALL_CARD:-$(command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)}
if [ $quick = 1 ] && [ -n "$card" ] && [[ $card != *H200* ]]; then
  bench_args=(--torch-modes eager --runs 10) bench_s=95
  variants=(default heuristic-gemm 64-row-blocks gemm-few-rows no-lookahead separate-gelu-bwd
    no-pdl gemm-skinny-rows fp32-qkv fp32-fch)
  say "the card ($card) is not an H200: the benchmark runs the PyTorch reference eager too," \
    "and the variants fp32-rows and separate-gelu-fwd are left out"
fi
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
  command -v nvcc >/dev/null && nvcc --version | tail -1
  g++ --version | head -1
  nproc
} >>"$log" 2>&1

source check/_native_deno.sh gpu_all 2>>"$log"
source check/_stoppable.sh

# The changes that a setting turns off, riskiest first, as step 4's variants name them. The
# preflight's search keeps whatever subset of these passes.
switches=(LOTUS_PDL=0 LOTUS_TC_AHEAD=0 LOTUS_SKINNY=0 LOTUS_GEMV=0 LOTUS_DEFER_GELU_FWD=0
  LOTUS_DEFER_NORM_FWD=0 LOTUS_DEFER_GELU_BWD=0 LOTUS_BF16_QKV=0 LOTUS_BF16_FCH=0
  LOTUS_TC_BF16_ROWS=0 LOTUS_TC_WARPS=4 LOTUS_GEMM_TUNE=1 LOTUS_TC_ATTENTION=0)
tries=0
preflight() { # KEY=VALUE settings: exit 0 when the engine with them passes
  tries=$((tries + 1))
  say "preflight try $tries: ${*:-as started ($started)}"
  if [ -n "${GPU_ALL_PREFLIGHT:-}" ]; then # a stand-in command, for the script's own tests
    stoppable env "$@" bash -c "$GPU_ALL_PREFLIGHT" >>"$log" 2>&1
  else
    stoppable env "$@" timeout --kill-after=5 "$preflight_s" "$deno_bin" run --allow-all \
      check/gpu_check.ts --preflight --out "$tmp/preflight" >>"$log" 2>&1
  fi
}
settings() { # the engine settings in the environment, for the log
  local s
  s=$(env | grep '^LOTUS_' | sort | tr '\n' ' ')
  echo "settings: ${s:-the defaults}"
}
started=$(settings)
off=() preflight_failed=0
# The engines first, each under a limit of its own (compiling with nvcc takes about a minute
# where the library did not travel with the tree): a preflight try is too short to build them.
say "engines: the CPU one (every check's reference)$(command -v nvidia-smi >/dev/null &&
  echo ' and the CUDA one')"
for b in cpu $(command -v nvidia-smi >/dev/null && echo cuda); do
  stoppable timeout --kill-after=5 240 "$deno_bin" run --allow-all cli/build_engine.ts \
    --backend "$b" >>"$log" 2>&1 ||
    say "build-engine --backend $b exit $? (the steps below build it again)"
done
say "0. preflight"
if [ -z "${GPU_ALL_PREFLIGHT:-}" ] && ! command -v nvidia-smi >/dev/null; then
  echo "preflight: not run (no GPU); every step runs as started ($started)" \
    >"$out/preflight.txt"
elif preflight; then
  echo "preflight: passed as started ($started)" >"$out/preflight.txt"
elif ! preflight "${switches[@]}"; then
  preflight_failed=1
  # The variants would each measure an engine known to fail: only "default" runs, and the
  # second try's time comes out of theirs.
  variants=(default)
  echo "preflight: failed as started ($started) and with every switchable change turned off" \
    "(${switches[*]}): every step runs as started, and of the variants only" \
    "\"default\"; the correctness check names the failing rows" >"$out/preflight.txt"
else
  preflight_failed=1
  # Halve the set while one half, turned off alone, still passes: one failing change is found
  # in about log2(13) tries. Where neither half passes (failing changes in both), each change
  # left is turned back on in turn and kept on where the preflight still passes, up to ten
  # tries in all.
  off=("${switches[@]}")
  while [ ${#off[@]} -gt 1 ]; do
    half=$((${#off[@]} / 2))
    if preflight "${off[@]:0:half}"; then off=("${off[@]:0:half}")
    elif preflight "${off[@]:half}"; then off=("${off[@]:half}")
    else break
    fi
  done
  i=0
  while [ ${#off[@]} -gt 1 ] && [ $i -lt ${#off[@]} ] && [ $tries -lt 10 ]; do
    if preflight "${off[@]:0:i}" "${off[@]:i+1}"; then off=("${off[@]:0:i}" "${off[@]:i+1}")
    else i=$((i + 1))
    fi
  done
  echo "preflight: failed as started ($started), passed with ${off[*]} (after $tries tries):" \
    "the benchmark, the profile and the variant \"default\" run with these settings, and" \
    "the other variants are left out; the correctness check, run as started, names" \
    "the failing rows" >"$out/preflight.txt"
fi
say "$(cat "$out/preflight.txt")"
if [ $preflight_only = 1 ]; then
  finished=1
  say "end $(date -u +%FT%TZ) (--preflight-only)"
  exit $preflight_failed
fi

say "1. correctness check; $(settings)"
GPU_CHECK_TIMEOUT=$check_s stoppable bash check/gpu_check.sh "${check_args[@]}" --out "$tmp/check" \
  >>"$log" 2>&1
say "check exit $?"
cp "$tmp/check/table.txt" "$out/check.txt" 2>/dev/null
cp "$tmp/check/report.json" "$out/check.json" 2>/dev/null

# From here on, the changes that the preflight found failing are turned off; the settings they
# replace (the caller's own, or none) are put back before the sanitizer's tour.
before=()
for kv in ${off[@]+"${off[@]}"}; do
  k=${kv%%=*}
  if [ -n "${!k+set}" ]; then before+=("$k=${!k}"); else before+=("$k"); fi
  export "$kv"
done
[ ${#off[@]} -gt 0 ] && variants=(default)

say "2. benchmark (bf16, tensor-core attention); $(settings)"
GPU_BENCH_TIMEOUT=$bench_s stoppable bash bench/gpu_bench.sh --skip-check \
  ${bench_args[@]+"${bench_args[@]}"} --out "$tmp/bench" >>"$log" 2>&1
say "bench exit $?"
cp "$tmp/bench/table.txt" "$out/bench.txt" 2>/dev/null
cp "$tmp/bench/gpu_bench.json" "$out/bench.json" 2>/dev/null

say "3. op profile; $(settings)"
stoppable timeout --kill-after=5 "$profile_s" "$deno_bin" run --allow-all bench/gpu_profile.ts \
  --out "$tmp/profile" >>"$log" 2>&1
say "profile exit $?"
cp "$tmp/profile/profile.txt" "$tmp/profile/profile.json" "$out/" 2>/dev/null

variant() { # name, then KEY=VALUE environment or "", then bench arguments
  local name=$1 envset=$2
  shift 2
  say "variant $name"
  rm -rf "$tmp/variant"
  stoppable env $envset GPU_BENCH_TIMEOUT="$variant_s" bash bench/gpu_bench.sh --skip-check \
    --skip-torch --runs 5 --eval-questions 64 --steps 5 --out "$tmp/variant" "$@" >>"$log" 2>&1
  say "variant $name exit $?"
  [ -f "$tmp/variant/rows.jsonl" ] && sed "s/^/$name: /" "$tmp/variant/rows.jsonl" >>"$log"
  [ -f "$tmp/variant/table.txt" ] && { echo "== $name"; cat "$tmp/variant/table.txt"; } \
    >>"$out/variants.txt"
}
for v in "${variants[@]}"; do
  case $v in
    default) variant "$v" "" ;;
    heuristic-gemm) variant "$v" LOTUS_GEMM_TUNE=1 ;;
    fp32-rows) variant "$v" LOTUS_TC_BF16_ROWS=0 ;;
    64-row-blocks) variant "$v" LOTUS_TC_WARPS=4 ;;
    gemm-few-rows) variant "$v" LOTUS_GEMV=0 ;;
    no-lookahead) variant "$v" LOTUS_TC_AHEAD=0 ;;
    separate-gelu-bwd) variant "$v" LOTUS_DEFER_GELU_BWD=0 ;;
    no-pdl) variant "$v" LOTUS_PDL=0 ;;
    gemm-skinny-rows) variant "$v" LOTUS_SKINNY=0 ;;
    separate-gelu-fwd) variant "$v" LOTUS_DEFER_GELU_FWD=0 ;;
    separate-norm-fwd) variant "$v" LOTUS_DEFER_NORM_FWD=0 ;;
    fp32-qkv) variant "$v" LOTUS_BF16_QKV=0 ;;
    fp32-fch) variant "$v" LOTUS_BF16_FCH=0 ;;
    fp32-attention) variant "$v" LOTUS_TC_ATTENTION=0 ;;
    *) variant "$v" "" --precision "$v" ;;
  esac
done
if [ -n "$baseline" ]; then
  variant baseline "" --engine-lib "$baseline"
  variant current ""
fi

# Each change's predicted effect against the default less its variant (check/predictions.ts).
stoppable timeout 30 "$deno_bin" run --allow-all check/predictions.ts "$out" \
  --json "$out/predictions.json" >"$out/predictions.txt" 2>>"$log"
say "predictions exit $?"

# The sanitizer tours every kernel with the settings the script was started with (the defaults,
# unless its caller set some), those the preflight found failing included.
for kv in ${before[@]+"${before[@]}"}; do
  if [ "$kv" = "${kv%%=*}" ]; then unset "$kv"; else export "$kv"; fi
done
say "6. kernel tour under compute-sanitizer ($tools); $(settings)"
stoppable bash check/gpu_sanitize.sh --tools "$tools" --limit "$sanitize_s" "$tmp/sanitize" \
  >>"$log" 2>&1
say "sanitize exit $?"
cp "$tmp/sanitize/sanitize.txt" "$out/" 2>/dev/null
# The sanitizer's reports, where it ran (each at most 25 of them).
if ls "$tmp"/sanitize/sanitize-*.log >/dev/null 2>&1; then
  mkdir -p "$out/sanitize" && cp "$tmp"/sanitize/sanitize-*.log "$out/sanitize/"
fi

finished=1
say "end $(date -u +%FT%TZ)"
for f in preflight.txt check.txt bench.txt profile.txt variants.txt predictions.txt sanitize.txt; do
  [ -f "$out/$f" ] && { echo "== $f"; cat "$out/$f"; }
done

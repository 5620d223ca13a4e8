#!/usr/bin/env bash
# The LOTUS-versus-CoT experiment of docs/results.md (its main table and R sweep), from nothing:
#   synthetic problems -> one dataset -> eight models at the same backbone and budget ->
#   evaluation on the held-out synthetic test split (and GSM8K test when it is present) ->
#   the results table.
#
#   bash bench/experiment.sh [OUT]            (default out/experiment; about an hour on 2 idle cores)
#
# Environment: ARCH (gpt2, the default, or llama: every model then has the Llama backbone of the
# same size, llama-tiny); THREADS (default 2); GSM8K, GSM8K's test.jsonl (default
# ../shared/data/gsm8k/test.jsonl, a folder beside the clone; skipped when absent); TRAIN_N and
# EPOCHS (default 6400 and 8: 1,600 steps of 32), which a quick smoke run lowers;
# SYNTH_SCRIPT, another copy of bench/synth_data.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1

OUT=${1:-out/experiment}
THREADS=${THREADS:-2}
ARCH=${ARCH:-gpt2}
GSM8K=${GSM8K:-../shared/data/gsm8k/test.jsonl}
TRAIN_N=${TRAIN_N:-6400}
EPOCHS=${EPOCHS:-8}
mkdir -p "$OUT/src"

# 1. Data: the "ages" family, 2-3 calculator steps, one-digit operands, values up to 100.
#    Three seeds, so train, valid and test share no record.
synth() { deno run --allow-read --allow-write "${SYNTH_SCRIPT:-bench/synth_data.ts}" --families ages \
  --min-steps 2 --max-steps 3 --max-value 100 --digits 1 "$@"; }
synth --out "$OUT/src/train.jsonl" --n "$TRAIN_N" --seed 1
synth --out "$OUT/src/valid.jsonl" --n 300 --seed 2
synth --out "$OUT/src/test.jsonl" --n 1000 --seed 3
rm -rf "$OUT/data"
# K = 3 blocks cover every chain; c = 12 slots hold the longest step under the compact
# tokenizer, so no step is truncated.
deno task build-dataset --out "$OUT/data" --tokenizer compact --k 3 --c 12 \
  --input "$OUT/src/train.jsonl"
deno task build-dataset --out "$OUT/data" --split valid --input "$OUT/src/valid.jsonl"
deno task build-dataset --out "$OUT/data" --split test --input "$OUT/src/test.jsonl"

# 2. Training: one backbone (tiny), one data order (seed 0), the same optimiser steps for every
#    model (EPOCHS epochs of TRAIN_N / 32 steps). LOTUS runs the reference curriculum
#    (stage s = epoch, K = R = s, up to K = 3). Every setting is given (--recipe none), as
#    when the table was made: LOTUS runs no longer start from a CoT run of their own.
train() {
  local name=$1
  shift
  deno task train --data "$OUT/data" --out "$OUT/runs/$name" --preset tiny --arch "$ARCH" --batch 32 \
    --epochs "$EPOCHS" --lr 3e-3 --seed 0 --eval-every 200 --eval-examples 300 \
    --threads "$THREADS" --recipe none --overwrite --quiet "$@"
}
train cot --mode cot
train nocot --mode nocot
train lotus --mode lotus
train lotus-aux --mode lotus-aux
train lotus-r0 --mode lotus --r 0
train lotus-lambda0 --mode lotus --lambda 0
# The paper's recipe: LOTUS starts from the explicit-CoT model. The CoT run's weights go on
# with LOTUS at K = R = 3 for EPOCHS/2 more epochs (no curriculum), against CoT trained for the
# same 1.5x budget.
train cot-long --mode cot --epochs $((EPOCHS * 3 / 2))
train lotus-from-cot --mode lotus --epochs $((EPOCHS / 2)) --epochs-per-stage 0 \
  --init "$OUT/runs/cot/checkpoint/model.safetensors"

# 3. Evaluation: accuracy and readout on the test split (batch 32); latency at batch 1 on its
#    first 100 questions, on one thread (at this size a second thread only adds OpenMP barriers,
#    and on a shared CPU a barrier that waits for a descheduled thread costs milliseconds);
#    GSM8K test (first 300) when present; an R sweep for LOTUS.
for run in cot nocot lotus lotus-aux lotus-r0 lotus-lambda0 cot-long lotus-from-cot; do
  ev() { deno task eval --checkpoint "$OUT/runs/$run" --threads "$THREADS" --quiet "$@"; }
  ev --data "$OUT/data" --split test --batch 32 --out "$OUT/eval/$run/test"
  ev --data "$OUT/data" --split test --batch 1 --limit 100 --threads 1 \
    --out "$OUT/eval/$run/latency"
  if [ -f "$GSM8K" ]; then
    ev --data "$GSM8K" --batch 32 --limit 300 --out "$OUT/eval/$run/gsm8k"
  fi
done
deno task eval --checkpoint "$OUT/runs/lotus" --data "$OUT/data" --split test --batch 32 \
  --r 0,1,2,3,4,6 --threads 1 --quiet --out "$OUT/eval/lotus/sweep"

# 4. The table.
deno run --allow-read --allow-write bench/experiment_table.ts "$OUT" | tee "$OUT/results.md"

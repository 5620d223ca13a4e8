/**
 * The engine memory a training shape and an evaluation shape allocate, planned without running
 * them. Buffers are planned in TypeScript (train/step.ts, model/generate.ts) and are the same
 * for both engines; this script builds the runner and the generator over an engine that only
 * counts the bytes they allocate, so even the 3B Llama's plan costs nothing. The CUDA engine's
 * own scratch (cuBLAS workspace, bf16 operand copies) is not included.
 *
 *   npx deno run -A bench/memory_plan.ts [--preset gpt2] [--vocab 50260] [--batch 64] [--question 60]
 *       [--answer 8] [--k 6] [--c 13] [--eval-batch 64] [--eval-question 80] [--gpu-gb 141]
 *
 * Besides the engine's layout today (fp32 weights, gradients and AdamW moments: 16 bytes a
 * parameter), it reports the layout of bf16 weights with fp32 master copies (bf16 weights 2,
 * fp32 master 4, fp32 gradient 4, fp32 m and v 8: 18 bytes a parameter; activations fp32 as
 * the engine keeps them), and for each the largest batch whose training allocation fits in
 * `--gpu-gb` decimal gigabytes (an H200 has 141).
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Engine, Ptr } from "../engine/ffi.ts";
import { presetConfig, type PresetName } from "../model/config.ts";
import { paramLayout } from "../model/params.ts";
import { type Model, stackShapeOf } from "../model/model.ts";
import { stackWidths } from "../model/stack.ts";
import { LotusRunner } from "../train/step.ts";
import { Generator } from "../model/generate.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    preset: { type: "string", default: "gpt2" },
    vocab: { type: "string", default: "50260" },
    batch: { type: "string", default: "64" },
    question: { type: "string", default: "60" },
    answer: { type: "string", default: "8" },
    k: { type: "string", default: "6" },
    c: { type: "string", default: "13" },
    "eval-batch": { type: "string", default: "64" },
    "eval-question": { type: "string", default: "80" },
    "gpu-gb": { type: "string", default: "141" },
  },
  strict: true,
});
const n = (s: string | undefined) => Number(s);
const cfg = presetConfig(a.preset as PresetName, n(a.vocab));
const K = n(a.k), c = n(a.c), B = n(a.batch), A = n(a.answer), P = n(a.question);
const GiB = (b: number) => +(b / 2 ** 30).toFixed(2);

/** An engine that hands out fake addresses and counts the bytes allocated. */
function countingEngine(): { eng: Engine; bytes: () => number } {
  let next = 1n << 40n, live = 0;
  const sizes = new Map<bigint, number>();
  const eng = {
    alloc(bytes: number): Ptr {
      const p = next;
      next += BigInt(Math.ceil(bytes / 64) * 64 + 64);
      sizes.set(p, bytes);
      live += bytes;
      return p;
    },
    free(p: Ptr): void {
      if (p === null) return;
      live -= sizes.get(p) ?? 0;
      sizes.delete(p);
    },
  };
  return { eng: eng as unknown as Engine, bytes: () => live };
}

/** A model as the runner and the generator see it while they allocate: config and shapes. */
function plannedModel(eng: Engine): Model {
  const shape = stackShapeOf(cfg, false);
  return {
    eng,
    cfg,
    main: { shape, widths: stackWidths(shape) },
    aux: null,
  } as unknown as Model;
}

/** Bytes of the LOTUS training activations at batch `b`. */
function trainBytes(b: number): number {
  const { eng, bytes } = countingEngine();
  const r = new LotusRunner(plannedModel(eng), { B: b, P, K, c, R: K, S: 1 + A, auxT: 0 }, true);
  const out = bytes();
  r.free();
  return out;
}

const lay = paramLayout(cfg);
const params = lay.mainTotal;
const act = trainBytes(B);
const perExample = trainBytes(2) - trainBytes(1); // activations grow linearly in B
const fixedAct = trainBytes(1) - perExample;
const { eng: geng, bytes: gbytes } = countingEngine();
const gen = new Generator(plannedModel(geng), {
  B: n(a["eval-batch"]),
  P: n(a["eval-question"]),
  K,
  c,
  maxNewTokens: A,
});
const evalBytes = gbytes();
gen.free();
const budget = n(a["gpu-gb"]) * 1e9;
const layouts = { fp32: 16, "bf16+fp32master": 18 } as const;
const fits = Object.fromEntries(
  Object.entries(layouts).map(([k, perParam]) => {
    const free = budget - perParam * params - fixedAct;
    return [k, free > 0 ? Math.floor(free / perExample) : 0];
  }),
);
console.log(JSON.stringify({
  preset: a.preset,
  params,
  shape: { B, question: P, answer: A, K, c, R: K },
  modelAndOptimizerGiB: GiB(16 * params),
  modelAndOptimizerBf16MasterGiB: GiB(18 * params),
  trainActivationsGiB: GiB(act),
  trainActivationsPerExampleGiB: GiB(perExample),
  trainTotalGiB: GiB(16 * params + act),
  trainTotalBf16MasterGiB: GiB(18 * params + act),
  evalBuffersGiB: GiB(evalBytes),
  maxBatchIn: { gb: n(a["gpu-gb"]), ...fits },
}));

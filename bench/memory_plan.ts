/**
 * The engine memory a training shape and an evaluation shape allocate, measured without running
 * them. Buffers are planned in TypeScript (train/step.ts, model/generate.ts) and are the same
 * for both engines; the CPU engine maps large blocks lazily, so allocating them here costs
 * nothing. The CUDA engine's own scratch (cuBLAS workspace, bf16 operand copies) is not
 * included.
 *
 *   npx deno run -A bench/memory_plan.ts [--preset gpt2] [--vocab 50260] [--batch 64] [--question 60]
 *       [--answer 8] [--k 6] [--c 13] [--eval-batch 64] [--eval-question 80]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { openEngine } from "../engine/ffi.ts";
import { presetConfig, type PresetName } from "../model/config.ts";
import { paramLayout } from "../model/params.ts";
import { Model } from "../model/model.ts";
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
  },
  strict: true,
});
const n = (s: string | undefined) => Number(s);
const cfg = presetConfig(a.preset as PresetName, n(a.vocab));
const K = n(a.k), c = n(a.c), B = n(a.batch), A = n(a.answer);
const GiB = (b: number) => +(b / 2 ** 30).toFixed(2);
const eng = openEngine({ backend: "cpu", quiet: true });
const lay = paramLayout(cfg);
const model = new Model(eng, cfg, new Float32Array(lay.total), true);
const modelBytes = eng.bytesInUse();
const runner = new LotusRunner(model, { B, P: n(a.question), K, c, R: K, S: 1 + A, auxT: 0 }, true);
const trainBytes = eng.bytesInUse() - modelBytes;
runner.free();
const gen = new Generator(model, {
  B: n(a["eval-batch"]),
  P: n(a["eval-question"]),
  K,
  c,
  maxNewTokens: A,
});
const evalBytes = eng.bytesInUse() - modelBytes;
gen.free();
model.free();
eng.close();
console.log(JSON.stringify({
  preset: a.preset,
  params: lay.mainTotal,
  shape: { B, question: n(a.question), answer: A, K, c, R: K },
  modelAndOptimizerGiB: GiB(modelBytes),
  trainActivationsGiB: GiB(trainBytes),
  trainTotalGiB: GiB(modelBytes + trainBytes),
  evalBuffersGiB: GiB(evalBytes),
}));

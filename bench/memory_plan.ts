/**
 * The engine memory a training shape and an evaluation shape allocate, measured without running
 * them, plus the CUDA engine's device scratch at that shape and a design estimate of what two
 * planned changes would save. Buffers are planned in TypeScript (train/step.ts,
 * model/generate.ts) and are the same for both engines; the CPU engine maps large blocks
 * lazily, so allocating them here costs nothing.
 *
 *   npx deno run -A bench/memory_plan.ts [--preset gpt2] [--vocab 50260] [--batch 64] [--question 60]
 *       [--answer 8] [--k 6] [--c 13] [--eval-batch 64] [--eval-question 80] [--head-rows 1024]
 *
 * Rows of the output:
 *  - measured: the bytes le_alloc hands out for the model (parameters, gradients, AdamW moments),
 *    a training runner and a generator;
 *  - `deviceScratch` (computed from the CUDA engine's scratch rules, engine/cuda/matmul.cuh and
 *    attention.cuh, at the largest op of a training step): the cuBLAS workspace, the rounded
 *    operand copies of matmuls at TF32 / bf16 (one per operand slot, grown to the largest), and
 *    the attention backward's per-row scratch. The CUDA context (a few hundred MiB) is not in it;
 *  - `designEstimate` (NOT implemented; arithmetic over the activations the training runner
 *    keeps per layer and row): keeping the saved activations in bf16, and recomputing the
 *    LayerNorm and GELU outputs in the backward instead of keeping them.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { openEngine } from "../engine/ffi.ts";
import { presetConfig, type PresetName } from "../model/config.ts";
import { paramLayout } from "../model/params.ts";
import { Model } from "../model/model.ts";
import { HEAD_CHUNK_ROWS, LotusRunner } from "../train/step.ts";
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
    "head-rows": { type: "string", default: String(HEAD_CHUNK_ROWS) },
  },
  strict: true,
});
const n = (s: string | undefined) => Number(s);
const cfg = presetConfig(a.preset as PresetName, n(a.vocab));
const K = n(a.k), c = n(a.c), B = n(a.batch), A = n(a.answer), P = n(a.question);
const headRows = n(a["head-rows"]);
const GiB = (b: number) => +(b / 2 ** 30).toFixed(2);
const eng = openEngine({ backend: "cpu", quiet: true });
const lay = paramLayout(cfg);
const model = new Model(eng, cfg, new Float32Array(lay.total), true);
const modelBytes = eng.bytesInUse();
const S = 1 + A, L = 1 + K * c;
const runner = new LotusRunner(model, { B, P, K, c, R: K, S, auxT: 0, headRows }, true);
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

const { dModel: C, nHead: NH, nLayer: NL, vocabSize: V } = cfg;
// Row counts of a training step's chunks: the prefix, R + 1 loop passes, the suffix.
const chunks = [B * P, ...Array(K + 1).fill(B * L), B * S];
const rows = chunks.reduce((s, r) => s + r, 0);
const maxRows = Math.max(...chunks);
const logitRows = Math.min(headRows, Math.max(B * L, B * S));

// Device scratch of the CUDA engine. Matmul operand slots: a holds W (forward) or dout
// (backward), b the input (forward) or W (backward), c the input (backward).
const gemms = [[C, 3 * C], [C, C], [C, 4 * C], [4 * C, C]].map(([cin, cout]) => ({
  N: maxRows,
  cin,
  cout,
}));
gemms.push({ N: logitRows, cin: C, cout: V }); // the tied LM head, one row chunk
const slotA = Math.max(...gemms.map((g) => Math.max(g.cout * g.cin, g.N * g.cout)));
const slotB = Math.max(...gemms.map((g) => Math.max(g.N * g.cin, g.cout * g.cin)));
const slotC = Math.max(...gemms.map((g) => g.N * g.cin));
const workspace = 32 * 2 ** 20;
const attnD = B * NH * Math.max(P, L, S) * 4;
const scratch = (bytesPerElem: number) =>
  workspace + (slotA + slotB + slotC) * bytesPerElem + attnD;

// Design estimate. Per layer and row a training chunk keeps, in fp32: x, ln1, qkv (3C), the
// attention output, resid2, ln2, the MLP pre-activation and GELU output (4C each), and the qkv
// gradient (3C, an accumulator that stays fp32).
const perRowLayer = (floats: number) => rows * NL * floats;
const savedFloats = C * (1 + 1 + 3 + 1 + 1 + 1 + 4 + 4); // what bf16 storage would halve
const bf16Saving = perRowLayer(savedFloats) * 2;
const recomputeFloats = C * (1 + 1 + 4); // ln1, ln2, GELU output
const recomputeSavingBf16 = perRowLayer(recomputeFloats) * 2;
const total = modelBytes + trainBytes;

console.log(JSON.stringify(
  {
    preset: a.preset,
    params: lay.mainTotal,
    shape: { B, question: P, answer: A, K, c, R: K, headRows },
    modelAndOptimizerGiB: GiB(modelBytes),
    trainActivationsGiB: GiB(trainBytes),
    trainTotalGiB: GiB(total),
    evalBuffersGiB: GiB(evalBytes),
    deviceScratch: {
      note: "computed from the CUDA engine's scratch rules; excludes the CUDA context",
      fp32GiB: GiB(workspace + attnD),
      tf32GiB: GiB(scratch(4)),
      bf16GiB: GiB(scratch(2)),
    },
    trainTotalWithBf16ScratchGiB: GiB(total + scratch(2)),
    designEstimate: {
      note: "NOT implemented: arithmetic over the per-layer activations kept for the backward",
      bf16ActivationsSaveGiB: GiB(bf16Saving),
      recomputeLayerNormAndGeluSaveGiB: GiB(recomputeSavingBf16),
      trainTotalWithBothAndBf16ScratchGiB: GiB(
        total + scratch(2) - bf16Saving - recomputeSavingBf16,
      ),
    },
  },
  null,
  1,
));

/**
 * The engine memory a training shape and an evaluation shape allocate, planned without running
 * them, plus the CUDA engine's device scratch at that shape and a design estimate of what two
 * planned changes would save. Buffers are planned in TypeScript (train/step.ts,
 * model/generate.ts) and are the same for both engines; this script builds the runner and the
 * generator over an engine that only counts the bytes they allocate, so even the 3B Llama's
 * plan costs nothing.
 *
 *   npx deno run -A bench/memory_plan.ts [--preset gpt2] [--vocab 50260] [--batch 64] [--question 60]
 *       [--answer 8] [--k 6] [--c 13] [--eval-batch 64] [--eval-question 80] [--head-rows 1024]
 *       [--gpu-gb 141]
 *
 * Rows of the output:
 *  - planned: the model (fp32 weights, gradients and AdamW moments: 16 bytes a parameter), a
 *    training runner (keeping every activation, and with recomputation, `--recompute on`, the
 *    CUDA engine's default) and a generator; besides the engine's layout today, the layout of bf16
 *    weights with fp32 master copies (bf16 weights 2, fp32 master 4, fp32 gradient 4, fp32 m
 *    and v 8: 18 bytes a parameter; activations fp32 as the engine keeps them), and for each
 *    the largest batch whose training allocation fits in `--gpu-gb` decimal gigabytes (an H200
 *    has 141);
 *  - `deviceScratch` (computed from the CUDA engine's scratch rules, engine/cuda/matmul.cuh and
 *    attention.cuh, at the largest op of a training step): the cuBLAS workspace, the rounded
 *    operand copies of matmuls at TF32 / bf16 (one per operand slot, grown to the largest; at
 *    bf16 the weights' kept copy instead of rounded weights, engine/cuda/weights.cuh), and the
 *    attention backward's per-row scratch. The CUDA context (a few hundred MiB) is not in it;
 *  - `recompute.bf16Qkv`: the recomputing runner with each layer's qkv (and the suffix's past)
 *    in bf16 storage (LotusCapacity.qkvBf16), with the bf16 scratch that layout needs (the
 *    attention backward then rounds only dout);
 *  - `recompute.bf16Storage`: as the CUDA engine runs it in bf16 mode, also each layer's MLP
 *    first projection in bf16 storage (LotusCapacity.fchBf16), with the largest batch that fits
 *    that way;
 *  - `designEstimate` (NOT implemented; arithmetic over the activations a recomputing training
 *    runner keeps per layer and row): keeping the rest of them (the residual stream x and
 *    resid2) in bf16 too.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Engine, Ptr } from "../engine/ffi.ts";
import { archOf, PRESET_NAMES, presetConfig, type PresetName } from "../model/config.ts";
import { paramLayout } from "../model/params.ts";
import { type Model, stackShapeOf } from "../model/model.ts";
import { stackWidths } from "../model/stack.ts";
import { HEAD_CHUNK_ROWS, LotusRunner } from "../train/step.ts";
import { Generator } from "../model/generate.ts";

const USAGE = "usage: npx deno run -A bench/memory_plan.ts [--preset gpt2] [--vocab 50260] " +
  "[--batch 64] [--question 60] [--answer 8] [--k 6] [--c 13] [--eval-batch 64] " +
  "[--eval-question 80] [--head-rows 1024] [--gpu-gb 141]";
/** A usage error: one line and the usage, exit 2. */
function usage(message: string): never {
  console.error(`memory_plan: ${message}\n${USAGE}`);
  Deno.exit(2);
}
if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
  console.log(USAGE);
  Deno.exit(0);
}
const { values: a } = (() => {
  try {
    return parse();
  } catch (e) {
    return usage((e as Error).message);
  }
})();
function parse() {
  return parseArgs({
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
      "gpu-gb": { type: "string", default: "141" },
    },
    strict: true,
  });
}
const n = (s: string | undefined) => Number(s);
for (const [flag, v] of Object.entries(a)) {
  if (flag !== "preset" && !(Number.isFinite(n(v)) && n(v) >= (flag === "k" ? 0 : 1))) {
    usage(`--${flag} ${v}: must be a number, at least ${flag === "k" ? 0 : 1}`);
  }
}
if (!PRESET_NAMES.includes(a.preset as PresetName)) {
  usage(`--preset ${a.preset}: one of ${PRESET_NAMES.join(", ")}`);
}
const cfg = presetConfig(a.preset as PresetName, n(a.vocab));
const K = n(a.k), c = n(a.c), B = n(a.batch), A = n(a.answer), P = n(a.question);
const headRows = n(a["head-rows"]);
// bf16 storage of qkv and of the MLP's first projection is the GPT-2 stack's: a Llama rotates
// its qkv in fp32, and the CUDA engine keeps both in fp32 there (train/step.ts, bf16Storage).
const bf16Stores = archOf(cfg) === "gpt2";
const GiB = (b: number) => +(b / 2 ** 30).toFixed(2);

/** An engine that hands out fake addresses and counts the bytes allocated. */
function countingEngine(): { eng: Engine; bytes: () => number } {
  let next = 1n << 40n, live = 0;
  const sizes = new Map<bigint, number>();
  const eng = {
    keepsQkvBf16: () => false,
    keepsFchBf16: () => false,
    allocBf16(n: number): Ptr {
      return eng.alloc(2 * n);
    },
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
    offset(p: Ptr, bytes: number): Ptr {
      return (p ?? 0n) + BigInt(bytes);
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
    main: { eng, shape, widths: stackWidths(shape) },
    aux: null,
  } as unknown as Model;
}

const planned = new Map<string, number>();
/** Bytes of the LOTUS training activations at batch `b`, with qkv and fch in fp32 or bf16
 * (each plan made once: the per-example lines below ask again for batch B's). */
function trainBytes(b: number, recompute = false, qkvBf16 = false, fchBf16 = false): number {
  qkvBf16 &&= bf16Stores;
  fchBf16 &&= bf16Stores;
  const key = `${b} ${recompute} ${qkvBf16} ${fchBf16}`;
  const known = planned.get(key);
  if (known !== undefined) return known;
  const { eng, bytes } = countingEngine();
  const cap = { B: b, P, K, c, R: K, S: 1 + A, auxT: 0, headRows, recompute, qkvBf16, fchBf16 };
  const r = new LotusRunner(plannedModel(eng), cap, true);
  const out = bytes();
  r.free();
  planned.set(key, out);
  return out;
}

const lay = paramLayout(cfg);
const params = lay.mainTotal;
const act = trainBytes(B), actRc = trainBytes(B, true), actRc16 = trainBytes(B, true, true);
const actRcStore = trainBytes(B, true, true, true);
// Activations grow linearly in B once the head's row chunk is full (its logits buffer is
// then fixed): the step from B - 1 to B is one example's.
const linear = (recompute: boolean, bf16 = false) => {
  const hi = trainBytes(Math.max(2, B), recompute, bf16, bf16);
  const perExample = hi - trainBytes(Math.max(1, B - 1), recompute, bf16, bf16);
  return { perExample, fixed: hi - Math.max(2, B) * perExample };
};
const { perExample, fixed: fixedAct } = linear(false);
const rcLine = linear(true), storeLine = linear(true, true);
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
const fitsOf = (line: { perExample: number; fixed: number }) =>
  Object.fromEntries(
    Object.entries(layouts).map(([k, perParam]) => {
      const free = budget - perParam * params - line.fixed;
      return [k, free > 0 ? Math.floor(free / line.perExample) : 0];
    }),
  );
const fits = fitsOf({ perExample, fixed: fixedAct });
const { dModel: C, nHead: NH, nLayer: NL, vocabSize: V } = cfg;
const wd = stackWidths(stackShapeOf(cfg, false));
const S = 1 + A, L = 1 + K * c;
// Row counts of a training step's chunks: the prefix, R + 1 loop passes, the suffix.
const chunks = [B * P, ...Array(K + 1).fill(B * L), B * S];
const rows = chunks.reduce((s, r) => s + r, 0);
const maxRows = Math.max(...chunks);
const logitRows = Math.min(headRows, Math.max(B * L, B * S));

// Device scratch of the CUDA engine. Matmul operand slots: a holds W (forward) or dout
// (backward), b the input (forward) or W (backward), c the input (backward).
const gemms = [[C, wd.qkv], [C, C], [C, wd.ffIn], [wd.ffOut, C]].map(([cin, cout]) => ({
  N: maxRows,
  cin,
  cout,
}));
gemms.push({ N: logitRows, cin: C, cout: V }); // the LM head, one row chunk
// A reduced copy's rows are padded to 16 bytes: 4 TF32 or 8 bf16 values.
const pad = (cols: number, q: number) => Math.ceil(cols / q) * q;
const slotA = Math.max(...gemms.map((g) => Math.max(g.cout * pad(g.cin, 4), g.N * pad(g.cout, 4))));
const slotB = Math.max(...gemms.map((g) => Math.max(g.N * pad(g.cin, 4), g.cout * pad(g.cin, 4))));
const slotC = Math.max(...gemms.map((g) => g.N * pad(g.cin, 4)));
const workspace = 32 * 2 ** 20;
const attnD = B * NH * Math.max(P, L, S) * 4;
// TF32 rounds every operand, weights too, into the slots. bf16 reads the weights from the copy
// the engine keeps of them (le_keep_bf16: 2 bytes a parameter), so the slots only ever hold
// activations: dout in a, the input in b and c.
const tf32Scratch = workspace + (slotA + slotB + slotC) * 4 + attnD;
const actSlots = Math.max(...gemms.map((g) => g.N * pad(g.cout, 8))) +
  2 * Math.max(...gemms.map((g) => g.N * pad(g.cin, 8)));
// Plus the slot where a LayerNorm or GELU writes the bf16 copy of its output for the matmul
// that reads it next (engine/cuda/common.cuh's produced operands).
const prodSlot = maxRows * Math.max(pad(C, 8), wd.ffIn);
// The tensor-core attention backward's bf16 copies of the rows it stages: qkv and dout of the
// chunk's rows, and the keys and values of its past (engine/cuda/attention_tc.cuh).
const pastCols = wd.qkv - C;
const att16 = Math.max(
  B * P * (wd.qkv + C),
  B * L * (wd.qkv + C) + B * P * pastCols,
  B * S * (wd.qkv + C) + B * (P + L) * pastCols,
);
const bf16Scratch = workspace + (actSlots + prodSlot + att16) * 2 + 2 * params + attnD;
// With qkv in bf16 storage the backward's copy holds dout alone.
const att16Dout = B * Math.max(P, L, S) * C;
const bf16QkvScratch = bf16Stores ? bf16Scratch - (att16 - att16Dout) * 2 : bf16Scratch;

// Design estimate. Per layer and row a recomputing training chunk keeps, besides qkv and the
// MLP's first projection (in bf16 storage where the engine offers it): x and resid2 in fp32,
// which bf16 storage would halve; its qkv gradient (an accumulator) stays fp32.
const savedFloats = 2 * C;
const bf16Saving = rows * NL * savedFloats * 2;
const total = 16 * params + act, totalRc = 16 * params + actRc;

console.log(JSON.stringify(
  {
    preset: a.preset,
    params,
    shape: { B, question: P, answer: A, K, c, R: K, headRows },
    modelAndOptimizerGiB: GiB(16 * params),
    modelAndOptimizerBf16MasterGiB: GiB(18 * params),
    trainActivationsGiB: GiB(act),
    trainActivationsPerExampleGiB: GiB(perExample),
    trainTotalGiB: GiB(total),
    trainTotalBf16MasterGiB: GiB(18 * params + act),
    recompute: {
      note: "--recompute on (the CUDA engine's default): what the backward rebuilds is not kept",
      trainActivationsGiB: GiB(actRc),
      trainActivationsPerExampleGiB: GiB(rcLine.perExample),
      trainTotalGiB: GiB(totalRc),
      trainTotalWithBf16ScratchGiB: GiB(totalRc + bf16Scratch),
      maxBatchIn: { gb: n(a["gpu-gb"]), ...fitsOf(rcLine) },
      bf16Qkv: {
        note: bf16Stores
          ? "qkv in bf16 storage, the MLP in fp32 (LOTUS_BF16_FCH=0; LOTUS_BF16_QKV=0: above)"
          : "Llama: qkv and the MLP stay in fp32 (bf16 storage is the GPT-2 stack's)",
        trainActivationsGiB: GiB(actRc16),
        trainTotalWithBf16ScratchGiB: GiB(16 * params + actRc16 + bf16QkvScratch),
      },
      bf16Storage: {
        note: bf16Stores
          ? "qkv and the MLP's first projection in bf16 storage, as the CUDA engine runs bf16"
          : "Llama: as the CUDA engine runs bf16, qkv and the MLP's first projection in fp32",
        trainActivationsGiB: GiB(actRcStore),
        trainTotalWithBf16ScratchGiB: GiB(16 * params + actRcStore + bf16QkvScratch),
        trainActivationsPerExampleGiB: GiB(storeLine.perExample),
        maxBatchIn: { gb: n(a["gpu-gb"]), ...fitsOf(storeLine) },
      },
    },
    evalBuffersGiB: GiB(evalBytes),
    maxBatchIn: { gb: n(a["gpu-gb"]), ...fits },
    deviceScratch: {
      note: "computed from the CUDA engine's scratch rules; excludes the CUDA context",
      fp32GiB: GiB(workspace + attnD),
      tf32GiB: GiB(tf32Scratch),
      bf16GiB: GiB(bf16Scratch),
      bf16KeptWeightsGiB: GiB(2 * params),
    },
    trainTotalWithBf16ScratchGiB: GiB(total + bf16Scratch),
    designEstimate: {
      note: "NOT implemented: the residual stream a recomputing runner keeps, in bf16",
      bf16ActivationsSaveGiB: GiB(bf16Saving),
      trainTotalWithRecomputeBf16ActivationsAndScratchGiB: GiB(
        16 * params + actRcStore + bf16QkvScratch - bf16Saving,
      ),
    },
  },
  null,
  1,
));

/**
 * Kernel launches, GEMMs, memory operations and host waits of one LOTUS training step (zero
 * the gradients, forward and backward through every pass, gradient norm, AdamW), counted by
 * the CUDA engine's host emulation (check/cuda_emu.ts, emuCounters). The op sequence is the
 * reference shape's: 12 layers, K = R = 6 blocks of c = 13 latents, a 60-token question and
 * an 8-token answer. Widths are reduced (C 128, two heads of 64, vocabulary 96, batch 2) so
 * that the emulation runs it in seconds: no launch site of the engine loops over a width, so
 * the counts are those of the full-width model. The second of two steps is counted (the
 * first grows the engine's scratch buffers), and the third step of a runner that records a
 * shape's step as a CUDA graph at its second occurrence and replays it from the third
 * (`stepFromGraph`, the CUDA engine's default in training).
 *
 *   npx deno run -A bench/launch_count.ts [--precision fp32|tf32|bf16] [--injection add|replace]
 *       [--recompute on|off] [--arch gpt2|llama]
 *
 * `--arch llama` counts the same shapes for a Llama stack of Llama 3.2 1B's depth (16 layers;
 * RMSNorm, grouped-query attention with two query heads a key head, SwiGLU, untied head), at
 * reduced widths as above.
 *
 * It then counts batch-1 inference on the same model (the real shape's 12 layers, K = R = 6,
 * c = 13, a 60-token question): the thought phase (pass 0 and R loop passes: a LOTUS generation
 * of one token less a CoT generation of one token, which share the prefill and the first
 * token), and one answer token (from LOTUS generations of 1 and 9 tokens), each with the
 * prefill, loop passes and decoding steps replayed from CUDA graphs (the default) and without.
 * Counts are of a third generation, after two that grew the scratch and recorded the graphs.
 *
 * `--recompute on` (the default, as training on CUDA) counts the step of a runner that rebuilds
 * the normalisations, attention outputs and MLP activations in the backward.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { buildCudaEmu, canEmulate, emuCounters } from "../check/cuda_emu.ts";
import { perturbedParams, specialsFor } from "../check/parity.ts";
import { longExamples } from "../check/parity_shapes.ts";
import { openEngine, type Precision, PRECISION_MODES } from "../engine/ffi.ts";
import { ModelConfigSchema, TrainConfigSchema } from "../model/config.ts";
import { Generator } from "../model/generate.ts";
import { adamwOf, Model } from "../model/model.ts";
import { lotusBatch } from "../train/batch.ts";
import { LotusRunner } from "../train/step.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    precision: { type: "string", default: "bf16" },
    injection: { type: "string", default: "add" },
    recompute: { type: "string", default: "on" },
    arch: { type: "string", default: "gpt2" },
  },
  strict: true,
});
if (!canEmulate()) {
  console.error("launch_count: needs g++ (C++20) on Linux for the CUDA emulation");
  Deno.exit(2);
}
if (a.arch !== "gpt2" && a.arch !== "llama") {
  console.error(`launch_count: --arch ${a.arch}: use gpt2 or llama`);
  Deno.exit(2);
}
const K = 6, R = 6, c = 13, B = 2, V = 96;
const llama = a.arch === "llama";
const cfg = ModelConfigSchema.parse(
  llama
    ? {
      vocabSize: V,
      maxPositions: 192,
      dModel: 128,
      nHead: 4,
      nLayer: 16,
      arch: "llama",
      nKvHead: 2,
      dFf: 256,
      ropeTheta: 500000,
      normEps: 1e-5,
      tieEmbeddings: false,
    }
    : { vocabSize: V, maxPositions: 192, dModel: 128, nHead: 2, nLayer: 12 },
);
const lib = buildCudaEmu();
// The stand-in cuBLASLt offers two algorithms, so that the engine times them at each GEMM
// shape's first call (outside the counted steps, which the second algorithm does not change:
// both compute the same loops) and le_device_info counts the shapes.
Deno.env.set("EMU_LT_ALGOS", "2");
const eng = openEngine({ backend: "cuda", libPath: lib });
eng.setPrecision(PRECISION_MODES[a.precision as Precision]);
const sp = specialsFor(V);
const exs = longExamples(60, K, c)(B, V, 7);
const batch = lotusBatch(exs, sp, { K, R, c });
const train = TrainConfigSchema.parse({ k: K, c, r: R });
const opts = {
  lambda: 0.5,
  auxWeight: 0,
  stepLoss: "after" as const,
  injection: a.injection as "add" | "replace",
};
/**
 * Counts step `n` (1-based) of a fresh model and runner: with graphs, the first step of a
 * shape runs op by op, the second is recorded, the third on are replays.
 */
const countStep = (n: number, maxGraphs: number) => {
  const model = new Model(eng, cfg, perturbedParams(cfg, 7), true);
  const runner = new LotusRunner(
    model,
    { B, P: batch.P, K, c, R, S: batch.S, auxT: 0, recompute: a.recompute === "on", maxGraphs },
    true,
  );
  const step = () => {
    model.zeroGrad();
    const l = runner.step(batch, opts, exs);
    model.optimizerStep(adamwOf(train, train.lr));
    return l.loss;
  };
  for (let i = 1; i < n; i++) step();
  eng.sync();
  const before = emuCounters(lib);
  const loss = step();
  eng.sync();
  const after = emuCounters(lib);
  runner.free();
  model.free();
  const d = (k: keyof typeof before) => after[k] - before[k];
  return {
    kernelLaunches: d("launches"),
    gemms: d("gemms"),
    memops: d("memops"),
    // the eng.sync() after the step is the caller's, not the step's
    hostWaits: d("syncs") - 1,
    graphLaunches: d("graphLaunches"),
    loss,
  };
};
const stepPlain = countStep(2, 0), stepGraphs = countStep(3, 16);
// Distinct GEMM shapes (shape, precision, epilogue, operand alignment) of both runners' steps:
// each is timed once a process (engine/cuda/matmul.cuh).
const gemmShapes = eng.deviceInfo().gemmTuneShapes;

// Batch-1 inference: counts of one generation, after a warm-up that grows the scratch.
const imodel = new Model(eng, cfg, perturbedParams(cfg, 7), false);
const gen = new Generator(imodel, { B: 1, P: 60, K, c, maxNewTokens: 9 });
const noEos = { ...sp, eos: -1 };
const q = [exs[0].q];
const launchesOf = (mode: "lotus" | "cot", n: number, graphs: boolean) => {
  // Two warm-ups: the first grows the scratch and records loop passes 1..R, the second pass 0.
  for (let i = 0; i < 2; i++) gen.generate(q, noEos, { mode, K, c, R, maxNewTokens: n, graphs });
  eng.sync();
  const c0 = emuCounters(lib);
  gen.generate(q, noEos, { mode, K, c, R, maxNewTokens: n, graphs });
  eng.sync();
  const c1 = emuCounters(lib);
  return {
    launches: c1.launches - c0.launches,
    gemms: c1.gemms - c0.gemms,
    syncs: c1.syncs - c0.syncs,
    graphs: c1.graphLaunches - c0.graphLaunches,
  };
};
const thoughtOf = (graphs: boolean) => {
  const cot1 = launchesOf("cot", 1, graphs), l = launchesOf("lotus", 1, graphs);
  return {
    kernelLaunches: l.launches - cot1.launches,
    gemms: l.gemms - cot1.gemms,
    hostWaits: l.syncs - cot1.syncs,
    graphLaunches: l.graphs - cot1.graphs,
  };
};
const thoughtGraphs = thoughtOf(true), thoughtPlain = thoughtOf(false);
const tokenOf = (graphs: boolean) => {
  const one = launchesOf("lotus", 1, graphs), nine = launchesOf("lotus", 9, graphs);
  return {
    kernelLaunches: (nine.launches - one.launches) / 8,
    gemms: (nine.gemms - one.gemms) / 8,
    // the argmax download that greedy decoding reads, and any index check
    hostWaits: (nine.syncs - one.syncs) / 8,
    graphLaunches: (nine.graphs - one.graphs) / 8,
  };
};
const tokenGraphs = tokenOf(true), tokenPlain = tokenOf(false);
gen.free();
imodel.free();
eng.close();
console.log(JSON.stringify({
  arch: a.arch,
  shape: { nLayer: cfg.nLayer, K, R, c, question: 60, answer: 8 },
  precision: a.precision,
  injection: a.injection,
  recompute: a.recompute,
  // the second step of a runner without graphs (the first grows the scratch)
  ...stepPlain,
  // the third step of a runner with graphs (the first runs op by op, the second records)
  stepFromGraph: stepGraphs,
  gemmShapes,
  batch1: {
    // replayed from CUDA graphs (the CUDA engine's default: the third generation of the shape
    // replays the prefill, every loop pass and every decoding step), and without
    thought: thoughtGraphs,
    thoughtWithoutGraphs: thoughtPlain,
    answerToken: tokenGraphs,
    answerTokenWithoutGraphs: tokenPlain,
  },
}));

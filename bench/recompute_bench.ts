/**
 * What recomputation (`--recompute on`) costs and saves on the CPU engine: one model, two
 * training runners over the same batch (every activation kept; the normalisations, attention
 * outputs and MLP activations rebuilt in the backward), their steps interleaved so that both
 * see the same machine load; the median step time of each, their ratio and each runner's
 * allocation. The losses of the two are checked equal.
 *
 *   npx deno run -A bench/recompute_bench.ts [--preset small] [--batch 16] [--k 6] [--c 13]
 *       [--question 60] [--answer 8] [--steps 10] [--threads 1]
 *
 * The batch is random tokens of the given lengths (the step's cost does not depend on them).
 * Results are appended to bench/results/recompute.jsonl.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { openEngine } from "../engine/ffi.ts";
import { presetConfig, type PresetName } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Model } from "../model/model.ts";
import { LotusRunner } from "../train/step.ts";
import { lotusBatch } from "../train/batch.ts";
import { specialsFor } from "../check/parity.ts";
import { longExamples } from "../check/parity_shapes.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    preset: { type: "string", default: "small" },
    batch: { type: "string", default: "16" },
    k: { type: "string", default: "6" },
    c: { type: "string", default: "13" },
    question: { type: "string", default: "60" },
    steps: { type: "string", default: "10" },
    threads: { type: "string", default: "1" },
  },
  strict: true,
});
const V = 4096, B = Number(a.batch), K = Number(a.k), c = Number(a.c), R = K;
const cfg = presetConfig(a.preset as PresetName, V);
const eng = openEngine({ backend: "cpu", threads: Number(a.threads), quiet: true });
const model = new Model(eng, cfg, initParams(paramLayout(cfg), cfg, 0), true);
const sp = specialsFor(V);
const exs = longExamples(Number(a.question), K, c)(B, V, 3);
const batch = lotusBatch(exs, sp, { K, R, c });
const cap = { B, P: batch.P, K, c, R, S: batch.S, auxT: 0 };
const opts = { lambda: 0.5, auxWeight: 0, stepLoss: "after" as const, injection: "add" as const };
const runners = [false, true].map((recompute) =>
  new LotusRunner(model, { ...cap, recompute }, true)
);
const times: number[][] = [[], []];
const losses: number[][] = [[], []];
for (let s = 0; s < Number(a.steps) + 1; s++) {
  for (const i of s % 2 ? [1, 0] : [0, 1]) {
    model.zeroGrad();
    const t = performance.now();
    const l = runners[i].step(batch, opts, exs);
    eng.sync();
    if (s > 0) times[i].push(performance.now() - t); // step 0 warms up
    losses[i].push(l.loss);
  }
}
const median = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)];
if (losses[0].some((l, i) => l !== losses[1][i])) throw new Error("the losses differ");
const MiB = (b: number) => +(b / 2 ** 20).toFixed(1);
const out = {
  date: new Date().toISOString(),
  preset: a.preset,
  shape: { B, K, R, c, question: batch.P, answer: batch.S, layers: cfg.nLayer, C: cfg.dModel },
  threads: Number(a.threads),
  steps: Number(a.steps),
  keptMs: +median(times[0]).toFixed(1),
  recomputeMs: +median(times[1]).toFixed(1),
  ratio: +(median(times[1]) / median(times[0])).toFixed(3),
  keptMiB: MiB(runners[0].bytes),
  recomputeMiB: MiB(runners[1].bytes),
};
for (const r of runners) r.free();
model.free();
console.log(JSON.stringify(out));
await Deno.mkdir(new URL("results", import.meta.url), { recursive: true });
await Deno.writeTextFile(
  new URL("results/recompute.jsonl", import.meta.url),
  JSON.stringify(out) + "\n",
  { append: true },
);

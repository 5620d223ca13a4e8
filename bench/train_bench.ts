/**
 * Training throughput of a preset on the CPU engine, and the share of step time spent
 * outside native code.
 *
 *   npx deno run -A bench/train_bench.ts [--preset small] [--mode lotus] [--steps 10]
 *       [--batch 16] [--k 6] [--c 13] [--data DIR] [--threads 0] [--no-save]
 *
 * The data is GSM8K train with the compact tokenizer when ../shared/data/gsm8k (a folder beside
 * the clone) is present, so that the vocabulary is about 4,096, the "small" preset's intended
 * size; else the default fixtures. Every engine call is timed through a wrapper; time outside
 * those calls (batch assembly, uploads' host side, JavaScript) is "outside native code". The
 * wrapper's own cost is measured with a no-op and subtracted. Results are appended to
 * bench/results/train.jsonl (not with --no-save).
 */
import { parseArgs } from "node:util";
import { buildDataset } from "../pipeline/build.ts";
import { openEngine } from "../engine/ffi.ts";
import { presetConfig, type PresetName, TrainConfigSchema } from "../model/config.ts";
import { epochOrder, stageShape } from "../train/schedule.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { adamwOf, Model } from "../model/model.ts";
import { LotusRunner, PlainRunner } from "../train/step.ts";
import { lotusBatch, plainBatch, suffixOf } from "../train/batch.ts";
import { loadSplit } from "../train/dataset.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    preset: { type: "string", default: "small" },
    mode: { type: "string", default: "lotus" },
    steps: { type: "string", default: "10" },
    batch: { type: "string", default: "16" },
    k: { type: "string", default: "6" },
    c: { type: "string", default: "13" },
    data: { type: "string" },
    threads: { type: "string", default: "0" },
    "no-save": { type: "boolean", default: false },
  },
});

async function dataDir(): Promise<string> {
  if (a.data) return a.data;
  const out = "/tmp/lotus-bench-data";
  try {
    await Deno.stat(`${out}/manifest.json`);
    return out;
  } catch { /* build it */ }
  const gsm = new URL("../../shared/data/gsm8k/train.jsonl", import.meta.url).pathname;
  let input = gsm;
  try {
    await Deno.stat(gsm);
  } catch {
    input = new URL("../fixtures/default/train.jsonl", import.meta.url).pathname;
  }
  console.error(`building ${out} from ${input} (compact tokenizer)`);
  await buildDataset({
    out,
    splits: [{ name: "train", inputs: [input] }],
    tokenizer: "compact",
    k: Number(a.k),
    c: Number(a.c),
  });
  return out;
}

const data = await loadSplit(await dataDir(), "train");
const cfg = TrainConfigSchema.parse({
  mode: a.mode,
  k: Number(a.k),
  c: Number(a.c),
  batch: Number(a.batch),
});
const mcfg = presetConfig(a.preset as PresetName, data.vocabSize, cfg.mode === "lotus-aux" ? 1 : 0);
const eng = openEngine({ backend: "cpu", threads: Number(a.threads) });

// Time every engine call.
let nativeMs = 0, calls = 0;
const timed = new Proxy(eng, {
  get(target, prop) {
    // The engine itself as the receiver: its getters read private fields (#precision), which
    // the proxy does not have.
    const v = Reflect.get(target, prop, target);
    if (typeof v !== "function" || prop === "offset") return v;
    return (...args: unknown[]) => {
      const t = performance.now();
      const r = v.apply(target, args);
      nativeMs += performance.now() - t;
      calls++;
      return r;
    };
  },
});
// The wrapper's own cost per call (two performance.now() and a closure), to subtract.
let probe = 0;
const t0 = performance.now();
for (let i = 0; i < 100000; i++) {
  const t = performance.now();
  probe += performance.now() - t;
}
const wrapperUs = (performance.now() - t0) * 1000 / 100000;

const model = new Model(timed, mcfg, initParams(paramLayout(mcfg), mcfg, 0), true);
const { k: K, r: R } = stageShape(cfg, cfg.k);
const exs = data.examples;
const order = epochOrder(exs.length, 0, 0);
const B = cfg.batch, steps = Number(a.steps);
const plain = cfg.mode === "cot" || cfg.mode === "nocot";
const batchAt = (s: number) => Array.from(order.subarray(s * B, (s + 1) * B), (i) => exs[i]);
let P = 1, S = 1, T = 1, step = 0;
for (let s = 0; s < steps + 2; s++) {
  for (const e of batchAt(s)) {
    P = Math.max(P, e.q.length);
    S = Math.max(S, suffixOf(e, 0, 0).length);
    T = Math.max(T, e.q.length + e.ans.length + e.steps.reduce((x, y) => x + y.length, 0));
    for (const st of e.steps) step = Math.max(step, st.length);
  }
}
const runner = plain
  ? new PlainRunner(model, B, T, true)
  : new LotusRunner(model, { B, P, K, c: cfg.c, R, S, auxT: cfg.c + step }, true);
const opts = {
  lambda: cfg.lambda,
  auxWeight: cfg.mode === "lotus-aux" ? 1 : 0,
  stepLoss: cfg.stepLoss,
  injection: cfg.injection,
};
let tokens = 0, wall = 0;
for (let s = 0; s < steps + 2; s++) {
  const part = batchAt(s);
  if (s === 2) nativeMs = 0, calls = 0, tokens = 0, wall = 0; // 2 warm-up steps
  const ts = performance.now();
  model.zeroGrad();
  if (runner instanceof PlainRunner) {
    runner.step(plainBatch(part, data.special, cfg.mode === "cot"));
  } else runner.step(lotusBatch(part, data.special, { K, R, c: cfg.c }), opts, part);
  model.optimizerStep(adamwOf(cfg, cfg.lr));
  wall += performance.now() - ts;
  for (const e of part) {
    tokens += plain
      ? e.q.length + e.ans.length +
        (cfg.mode === "cot" ? e.steps.reduce((x, y) => x + y.length, 0) : 0)
      : e.q.length + (R + 1) * (1 + K * cfg.c) + suffixOf(e, K, 0).length;
  }
}
const inside = nativeMs - calls * wrapperUs / 1000;
const result = {
  date: new Date().toISOString().slice(0, 10),
  preset: a.preset,
  params: paramLayout(mcfg).mainTotal,
  vocab: mcfg.vocabSize,
  mode: cfg.mode,
  K,
  R,
  c: cfg.c,
  B,
  steps,
  threads: Number(a.threads) || navigator.hardwareConcurrency,
  msPerStep: +(wall / steps).toFixed(1),
  tokensPerSec: Math.round(tokens / (wall / 1000)),
  engineCallsPerStep: Math.round(calls / steps),
  outsideNativeShare: +((wall - inside) / wall).toFixed(4),
};
console.log(JSON.stringify(result));
if (!a["no-save"]) {
  await Deno.mkdir(new URL("./results", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    new URL("./results/train.jsonl", import.meta.url),
    JSON.stringify(result) + "\n",
    { append: true },
  );
}
runner.free();
model.free();
eng.close();
void probe;

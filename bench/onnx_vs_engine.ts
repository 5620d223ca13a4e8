// LOTUS inference latency of the `small` preset (d_model 256, 4 layers, 4 heads):
// onnxruntime-node (--backend onnx) against the native CPU engine (--backend cpu), on
// random weights, with the default LOTUS shape K = R = 6, c = 13 (79 loop positions, 7
// passes) and one GSM8K-style question (39-46 tokens), batch 1 unless --batch.
//
//   npx deno run --allow-all bench/onnx_vs_engine.ts [--threads N] [--runs N] [--batch N]
//       [--tokens N] [--vocab compact|gpt2] [--out FILE]
//
// Prints, per backend, the median over runs of the question prefix, the thought phase
// (pass 0 + R loop passes) and the time per answer token (decode time / decode steps), and
// writes them to bench/results/onnx_vs_engine.json (or --out). --vocab picks the LM head's
// size: GPT-2's 50,260 tokens (the default tokenizer) or the compact tokenizer's 4,096.
// Runs alternate between the backends; the load average is recorded, since the machine
// may be shared.
import { parseArgs } from "node:util";
import { freshTrainState, saveCheckpoint } from "../model/checkpoint.ts";
import { presetConfig, TrainConfigSchema } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { exportCheckpoint } from "../export/export.ts";
import { openInference } from "../infer/inference.ts";
import type { InferenceSession } from "../infer/session.ts";
import {
  fitCompactTokenizer,
  gpt2Tokenizer,
  type Tokenizer,
  tokenizerFromJson,
} from "../pipeline/tokenizer.ts";

const { values: cli } = parseArgs({
  args: Deno.args,
  options: {
    threads: { type: "string", default: "0" },
    runs: { type: "string", default: "15" },
    vocab: { type: "string", default: "all" },
    tokens: { type: "string", default: "32" },
    batch: { type: "string", default: "1" },
    out: { type: "string", default: "onnx_vs_engine.json" },
  },
});
const threads = Number(cli.threads), runs = Number(cli.runs), newTokens = Number(cli.tokens);
const batch = Number(cli.batch);
const QUESTION = "A baker fills 12 trays with 8 muffins each in the morning and 7 trays " +
  "with 9 muffins each in the afternoon. She sells 130 muffins. How many are left?";

async function tokenizer(kind: string): Promise<Tokenizer> {
  if (kind === "gpt2") return await gpt2Tokenizer();
  const lines =
    (await Deno.readTextFile(new URL("../fixtures/default/train.jsonl", import.meta.url)))
      .split("\n").filter((l) => l.trim());
  const tok = fitCompactTokenizer(lines.map((l) => Object.values(JSON.parse(l)).join("\n")), {
    maxVocab: 4096,
  });
  // The fixture's text fits about 1,000 tokens; unused added tokens fill the vocabulary up to
  // the compact tokenizer's 4,096, so that the LM head has its full size and the checkpoint's
  // vocabulary is its tokenizer's, as loading requires.
  const json = JSON.parse(tok.toJSON()) as { added_tokens: Record<string, unknown>[] };
  for (let id = tok.vocabSize; id < 4096; id++) {
    json.added_tokens.push({
      id,
      content: `<|unused-${id}|>`,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    });
  }
  return tokenizerFromJson(JSON.stringify(json), "compact");
}

const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];

type Figures = { prefillMs: number; thoughtMs: number; perTokenMs: number };

/**
 * Runs alternate between the backends, so that load from other processes on a shared
 * machine falls on both alike.
 */
async function measure(sessions: InferenceSession[]): Promise<Figures[]> {
  const t = sessions.map(() => ({ pre: [] as number[], th: [] as number[], tok: [] as number[] }));
  for (let i = 0; i < runs + 3; i++) {
    for (let j = 0; j < sessions.length; j++) {
      const qs = Array(batch).fill(QUESTION);
      const r = await sessions[j].answer(qs, { maxNewTokens: newTokens });
      if (i < 3) continue; // warm-up
      t[j].pre.push(r.timings.prefillMs);
      t[j].th.push(r.timings.thoughtMs);
      t[j].tok.push(r.timings.decodeMs / Math.max(1, r.timings.decodeSteps));
    }
  }
  return t.map((x) => ({
    prefillMs: median(x.pre),
    thoughtMs: median(x.th),
    perTokenMs: median(x.tok),
  }));
}

const results: Record<string, unknown>[] = [];
for (const kind of cli.vocab === "all" ? ["compact", "gpt2"] : [cli.vocab!]) {
  const tok = await tokenizer(kind);
  const V = tok.vocabSize;
  const cfg = presetConfig("small", V);
  const dir = await Deno.makeTempDir({ prefix: "lotus-bench-" });
  try {
    const train = TrainConfigSchema.parse({ mode: "lotus", k: 6, c: 13 });
    await saveCheckpoint(`${dir}/ck`, {
      meta: {
        model: cfg,
        train,
        special: tok.special,
        data: { dir: "bench", cot: "math", k: 6, c: 13 },
        preset: "small",
      },
      params: initParams(paramLayout(cfg), cfg, 0),
      state: { ...freshTrainState(), epoch: 6 },
      tokenizerJson: tok.toJSON(),
    });
    await exportCheckpoint(`${dir}/ck`, `${dir}/ex`, { format: "onnx" });
    const P = tok.encode(QUESTION + "\n").length;
    const backends = ["cpu", "onnx"] as const;
    const sessions = [
      await openInference(`${dir}/ck`, { backend: "cpu", threads, maxBatch: batch }),
      await openInference(`${dir}/ex`, { backend: "onnx", threads, maxBatch: batch }),
    ];
    try {
      const load = Deno.loadavg()[0];
      const figures = await measure(sessions);
      figures.forEach((m, j) => {
        results.push({
          vocab: V,
          questionTokens: P,
          batch,
          backend: backends[j],
          threads,
          runs,
          load,
          ...m,
        });
        console.log(
          `V=${V} P=${P} B=${batch} ${backends[j].padEnd(4)}  prefill ${
            m.prefillMs.toFixed(2)
          } ms  ` +
            `thought ${m.thoughtMs.toFixed(2)} ms  per answer token ${m.perTokenMs.toFixed(3)} ms` +
            `  (load ${load.toFixed(2)})`,
        );
      });
    } finally {
      for (const s of sessions) await s.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
await Deno.writeTextFile(
  new URL(`./results/${cli.out}`, import.meta.url),
  JSON.stringify(
    { date: new Date().toISOString(), cpus: navigator.hardwareConcurrency, results },
    null,
    2,
  ) +
    "\n",
);

// What verifying a checkpoint on load costs: loadCheckpoint on checkpoints of the `small`
// preset (the compact tokenizer's 4,096 tokens) and of the `gpt2` preset (GPT-2's 50,260),
// split into reading the files, verifyCheckpoint, and within it the pass that checks every
// weight is finite and the tokenizer's load; the rest (building the parameter slab) is the
// load itself. Random weights.
//
//   npx deno run --allow-all bench/checkpoint_load.ts [--runs N] [--preset small|gpt2|all]
//       [--out FILE]
//
// Prints the median over runs of each part and writes them to
// bench/results/checkpoint_load.json (or --out). The load average is recorded, since the
// machine may be shared; the checkpoints are written to a temporary directory (about 500 MB
// for gpt2) and removed.
import { parseArgs } from "node:util";
import {
  freshTrainState,
  loadCheckpoint,
  saveCheckpoint,
  verifyCheckpoint,
} from "../model/checkpoint.ts";
import { presetConfig, type PresetName, TrainConfigSchema } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { readSafetensors } from "../base/safetensors.ts";
import {
  fitCompactTokenizer,
  gpt2Tokenizer,
  type Tokenizer,
  tokenizerFromJson,
} from "../pipeline/tokenizer.ts";

const { values: cli } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "5" },
    preset: { type: "string", default: "all" },
    out: { type: "string", default: "checkpoint_load.json" },
  },
});
const runs = Number(cli.runs);

/** The compact tokenizer of the default data, filled up to 4,096 ids with unused tokens. */
async function compact4096(): Promise<Tokenizer> {
  const lines =
    (await Deno.readTextFile(new URL("../fixtures/default/train.jsonl", import.meta.url)))
      .split("\n").filter((l) => l.trim());
  const tok = fitCompactTokenizer(lines.map((l) => Object.values(JSON.parse(l)).join("\n")), {
    maxVocab: 4096,
  });
  const json = JSON.parse(tok.toJSON()) as { added_tokens: Record<string, unknown>[] };
  for (let id = tok.vocabSize; id < 4096; id++) {
    json.added_tokens.push({ id, content: `<|unused-${id}|>`, special: true, normalized: false });
  }
  return tokenizerFromJson(JSON.stringify(json), "compact");
}

const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Every value finite: the loop verifyCheckpoint runs over each weight tensor. */
function finitePass(data: Float32Array): boolean {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return false;
  return true;
}

const results: Record<string, unknown>[] = [];
const presets: PresetName[] = cli.preset === "all" ? ["small", "gpt2"] : [cli.preset as PresetName];
for (const preset of presets) {
  const tok = preset === "gpt2" ? await gpt2Tokenizer() : await compact4096();
  const cfg = presetConfig(preset, tok.vocabSize);
  const layout = paramLayout(cfg);
  const dir = await Deno.makeTempDir({ prefix: "lotus-bench-" });
  try {
    await saveCheckpoint(`${dir}/ck`, {
      meta: {
        model: cfg,
        train: TrainConfigSchema.parse({ mode: "lotus", k: 6, c: 13 }),
        special: tok.special,
        data: { dir: "bench", cot: "math", k: 6, c: 13 },
        preset,
      },
      params: initParams(layout, cfg, 0),
      state: { ...freshTrainState(), epoch: 6 },
      tokenizerJson: tok.toJSON(),
    });
    const t = { load: [] as number[], read: [] as number[], verify: [] as number[] };
    const part = { finite: [] as number[], tokenizer: [] as number[] };
    for (let r = 0; r <= runs; r++) {
      const t0 = performance.now();
      await loadCheckpoint(`${dir}/ck`);
      const t1 = performance.now();
      const config = JSON.parse(await Deno.readTextFile(`${dir}/ck/config.json`));
      const model = await readSafetensors(`${dir}/ck/model.safetensors`);
      const tokenizerJson = await Deno.readTextFile(`${dir}/ck/tokenizer.json`);
      const t2 = performance.now();
      verifyCheckpoint({
        dir: `${dir}/ck`,
        config,
        model,
        aux: null,
        optimizer: null,
        tokenizerJson,
      });
      const t3 = performance.now();
      for (const x of Object.values(model.tensors)) finitePass(x.data as Float32Array);
      const t4 = performance.now();
      tokenizerFromJson(tokenizerJson, "file");
      const t5 = performance.now();
      if (r === 0) continue; // warm-up
      t.load.push(t1 - t0), t.read.push(t2 - t1), t.verify.push(t3 - t2);
      part.finite.push(t4 - t3), part.tokenizer.push(t5 - t4);
    }
    const row = {
      preset,
      vocab: cfg.vocabSize,
      params: layout.mainTotal,
      runs,
      load: Deno.loadavg()[0],
      loadMs: median(t.load),
      readMs: median(t.read),
      verifyMs: median(t.verify),
      finiteMs: median(part.finite),
      tokenizerMs: median(part.tokenizer),
    };
    results.push(row);
    console.log(
      `${preset.padEnd(5)} ${(row.params / 1e6).toFixed(1)}M params, V=${row.vocab}: ` +
        `loadCheckpoint ${row.loadMs.toFixed(0)} ms (reading the files ${row.readMs.toFixed(0)} ` +
        `ms, verifyCheckpoint ${row.verifyMs.toFixed(0)} ms: finite weights ` +
        `${row.finiteMs.toFixed(1)} ms, tokenizer ${row.tokenizerMs.toFixed(0)} ms)`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
const out = new URL(`./results/${cli.out}`, import.meta.url);
await Deno.writeTextFile(
  out,
  JSON.stringify(
    { date: new Date().toISOString(), cpus: navigator.hardwareConcurrency, results },
    null,
    2,
  ) +
    "\n",
);
console.log(`wrote ${out.pathname}`);

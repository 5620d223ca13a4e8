/**
 * The cost of checking a dataset on load (figures go to docs/dataset-format.md).
 *
 *   npx deno run -A bench/dataset_verify_bench.ts [copies]
 *
 * Builds GSM8K train (7,473 records, GPT-2 tokenizer, K = 6, c = 13, the default shard size)
 * into a directory under the system temp directory; with `copies` > 1, the train file repeated
 * that many times. Then times, as the median of 7 runs each: reading the shards; decoding
 * them in memory with no check; `checkShard` in memory with `verify: "basic"` and `"full"`
 * (the cost of the checks alone); `readSplitShards` and `loadSplit` (the trainer's loader,
 * examples included) with each.
 *
 * Reads ../shared/data/gsm8k/train.jsonl, a folder beside the clone.
 *
 * @module
 */

import { buildDataset } from "../pipeline/build.ts";
import { readManifest } from "../pipeline/manifest.ts";
import { checkShard, readSplitShards } from "../pipeline/shard.ts";
import { decodeSafetensors } from "../base/safetensors.ts";
import { loadSplit } from "../train/dataset.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TRAIN = `${ROOT}../shared/data/gsm8k/train.jsonl`;
const copies = Number(Deno.args[0] ?? 1);

const tmp = await Deno.makeTempDir({ prefix: "lotus-bench-" });
let input = TRAIN;
if (copies > 1) {
  const text = await Deno.readTextFile(TRAIN);
  input = `${tmp}/train_x${copies}.jsonl`;
  await Deno.writeTextFile(input, text.repeat(copies));
}
const out = `${tmp}/ds`;
await buildDataset({ out, splits: [{ name: "train", inputs: [input] }] });
const m = await readManifest(out);
const info = m.splits.train;
let bytes = 0;
for (const s of info.shards) bytes += (await Deno.stat(`${out}/${s.file}`)).size;
console.log(
  `${info.counts.kept} records in ${info.shards.length} shard(s), ` +
    `${(bytes / 2 ** 20).toFixed(1)} MiB of shards`,
);

async function median(what: string, f: () => Promise<unknown>): Promise<number> {
  await f(); // warm: the file cache and the JIT
  const t: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now();
    await f();
    t.push(performance.now() - t0);
  }
  t.sort((a, b) => a - b);
  const mid = t[t.length >> 1];
  console.log(`${what.padEnd(40)} ${mid.toFixed(1).padStart(8)} ms`);
  return mid;
}

const files = await Promise.all(info.shards.map((s) => Deno.readFile(`${out}/${s.file}`)));
const ctx = (verify: "basic" | "full") => ({
  dir: out,
  vocabSize: m.tokenizer.vocabSize,
  k: m.options.k,
  c: m.options.c,
  records: info.counts.read,
  verify,
});
await median("read the shards", async () => {
  for (const s of info.shards) await Deno.readFile(`${out}/${s.file}`);
});
await median("decode, in memory, no check", () => {
  for (const b of files) decodeSafetensors(b);
  return Promise.resolve();
});
await median("checkShard basic, in memory", async () => {
  for (const [i, s] of info.shards.entries()) await checkShard(files[i], s, ctx("basic"), s.file);
});
await median("checkShard full, in memory", async () => {
  for (const [i, s] of info.shards.entries()) await checkShard(files[i], s, ctx("full"), s.file);
});
await median("readSplitShards, verify basic", () => readSplitShards(out, m, "train"));
await median(
  "readSplitShards, verify full",
  () => readSplitShards(out, m, "train", { verify: "full" }),
);
await median("loadSplit, verify basic", () => loadSplit(out, "train"));
await median("loadSplit, verify full", () => loadSplit(out, "train", { verify: "full" }));
await Deno.remove(tmp, { recursive: true });

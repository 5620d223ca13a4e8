/**
 * Step lengths in tokens, `encode(step + "\n")` as packing counts them, per tokenizer (GPT-2's
 * and the compact one fitted to the split) and CoT form (math, NL): p50, p90, p99 and max, and
 * the c that would hold nine steps in ten. Read from the manifests of dataset builds into a
 * temporary directory: GSM8K train (from ../shared/data, skipped with a message when absent)
 * and the synthetic set of bench/nl_study.ts (its train split's generator options).
 *
 * ```sh
 * npx deno run -A bench/step_lengths.ts [--out bench/results/step_lengths.json]
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { buildDataset } from "../pipeline/build.ts";
import type { StepLengthStats } from "../pipeline/step_lengths.ts";
import { writeFileAtomic } from "../base/atomic.ts";
import { NL_SYNTH, NL_TRAIN_N } from "./nl_study.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const GSM8K = `${ROOT}../shared/data/gsm8k/train.jsonl`;

const { values: a } = parseArgs({
  args: Deno.args,
  options: { out: { type: "string", default: `${ROOT}bench/results/step_lengths.json` } },
});

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

interface Row {
  data: string;
  tokenizer: string;
  form: string;
  stats: StepLengthStats;
}

const rows: Row[] = [];
const tmp = await Deno.makeTempDir({ prefix: "step-lengths-" });
try {
  const sets: { name: string; split: Parameters<typeof buildDataset>[0]["splits"][number] }[] = [];
  if (await exists(GSM8K)) {
    sets.push({ name: "GSM8K train", split: { name: "train", inputs: [GSM8K] } });
  } else console.error(`skipping GSM8K: ${GSM8K} is absent`);
  sets.push({
    name: `synthetic (nl_study train, ${NL_TRAIN_N})`,
    split: { name: "train", inputs: [], synthetic: { ...NL_SYNTH, n: NL_TRAIN_N, seed: 1 } },
  });
  for (const set of sets) {
    for (const tokenizer of ["gpt2", "compact"]) {
      const out = `${tmp}/${rows.length}`;
      const r = await buildDataset({ out, splits: [set.split], tokenizer, k: 6, c: 13 });
      const sl = r.manifest.splits.train.stepLengths!;
      for (const form of ["math", "nl"] as const) {
        rows.push({ data: set.name, tokenizer, form, stats: sl[form] });
      }
      await Deno.remove(out, { recursive: true });
    }
  }
} finally {
  await Deno.remove(tmp, { recursive: true });
}

console.log("| data | tokenizer | form | steps | p50 | p90 | p99 | max | > 13 | suggested c |");
console.log("| --- | --- | --- | --: | --: | --: | --: | --: | --: | --: |");
for (const r of rows) {
  const s = r.stats;
  console.log(
    `| ${r.data} | ${r.tokenizer} | ${r.form} | ${s.steps} | ${s.p50} | ${s.p90} | ${s.p99} | ` +
      `${s.max} | ${s.overC} | ${s.suggestedC} |`,
  );
}
await writeFileAtomic(a.out!, JSON.stringify(rows, null, 2) + "\n");
console.error(`wrote ${a.out}`);

/**
 * Write synthetic problems (pipeline/synthetic.ts) as GSM8K JSON lines, for the LOTUS-versus-CoT
 * experiment (bench/experiment.sh). Every option of `generate` is a flag.
 *
 * ```sh
 * npx deno run --allow-read --allow-write bench/synth_data.ts --out train.jsonl --n 20000 --seed 1 \
 *   --min-steps 2 --max-steps 3 --families ages --max-value 100 --digits 1
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { writeFileAtomic } from "../base/atomic.ts";
import { splitPath } from "../base/staging.ts";
import { FAMILIES, type Family, generate } from "../pipeline/synthetic.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    out: { type: "string" },
    n: { type: "string" },
    seed: { type: "string", default: "0" },
    "min-steps": { type: "string", default: "1" },
    "max-steps": { type: "string", default: "6" },
    families: { type: "string", default: FAMILIES.join(",") },
    "max-value": { type: "string", default: "1000" },
    digits: { type: "string", default: "2" },
  },
  strict: true,
});
if (!v.out || !v.n) {
  console.error("usage: synth_data.ts --out FILE --n N [--seed S] [--min-steps A] [--max-steps B]");
  console.error(`       [--families ${FAMILIES.join(",")}] [--max-value M] [--digits D]`);
  Deno.exit(2);
}
const families = v.families!.split(",").map((f) => f.trim()) as Family[];
const lines: string[] = [];
for (
  const p of generate({
    n: Number(v.n),
    seed: Number(v.seed),
    minSteps: Number(v["min-steps"]),
    maxSteps: Number(v["max-steps"]),
    families,
    maxValue: Number(v["max-value"]),
    digits: Number(v.digits),
  })
) {
  lines.push(JSON.stringify({ question: p.question, answer: `${p.rationale}\n#### ${p.answer}` }));
}
// The folder is made if missing, as the docs' command sequences expect.
await Deno.mkdir(splitPath(v.out).parent, { recursive: true });
await writeFileAtomic(v.out, lines.join("\n") + "\n");
console.error(`wrote ${lines.length} problems to ${v.out}`);

/**
 * Times the first three pipeline stages over all of GSM8K (train + test, main): read, then
 * segment, then validate under both CoT forms. Run 1 is a cold start (JIT warm-up, empty
 * expression cache), as `deno task build-dataset` would see it; the later runs show the warm
 * speed.
 *
 *   npx deno run --allow-read bench/read_segment_validate.ts [data dir] [runs]
 *
 * The data dir holds GSM8K's train.jsonl and test.jsonl; it defaults to ../shared/data/gsm8k,
 * a folder beside the clone.
 *
 * @module
 */
import { readProblems } from "../pipeline/read.ts";
import { segment } from "../pipeline/segment.ts";
import { validate } from "../pipeline/validate.ts";
import type { Problem, SegmentedRecord } from "../pipeline/types.ts";

const dir = Deno.args[0] ?? "../shared/data/gsm8k";
const runs = Number(Deno.args[1] ?? 5);
const files = ["train.jsonl", "test.jsonl"].map((f) => `${dir}/${f}`);

interface Times {
  read: number;
  segment: number;
  validateMath: number;
  validateNl: number;
  records: number;
}

async function once(): Promise<Times> {
  let t = performance.now();
  const problems: Problem[] = [];
  for (const f of files) for await (const p of readProblems(f)) problems.push(p);
  const read = performance.now() - t;

  t = performance.now();
  const segmented: SegmentedRecord[] = problems.map((p) => segment(p));
  const seg = performance.now() - t;

  let kept = 0;
  t = performance.now();
  for (const r of segmented) {
    if (validate(r, { cot: "math" }).validation.status !== "dropped") kept++;
  }
  const validateMath = performance.now() - t;
  t = performance.now();
  for (const r of segmented) if (validate(r, { cot: "nl" }).validation.status !== "dropped") kept++;
  const validateNl = performance.now() - t;
  if (kept === 0) throw new Error("nothing kept: wrong data?");
  return { read, segment: seg, validateMath, validateNl, records: problems.length };
}

const ms = (x: number) => `${x.toFixed(0).padStart(5)} ms`;
const all: Times[] = [];
for (let i = 0; i < runs; i++) {
  const r = await once();
  all.push(r);
  const total = r.read + r.segment + r.validateMath + r.validateNl;
  console.log(
    `run ${i + 1}: ${r.records} records  read ${ms(r.read)}  segment ${ms(r.segment)}  ` +
      `validate math ${ms(r.validateMath)}  validate nl ${ms(r.validateNl)}  total ${ms(total)}`,
  );
}
const totals = all.slice(1).map((r) => r.read + r.segment + r.validateMath + r.validateNl).sort(
  (a, b) => a - b,
);
if (totals.length > 0) {
  console.log(`warm median total: ${ms(totals[Math.floor(totals.length / 2)])}`);
}

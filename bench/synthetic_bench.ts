/**
 * Times the synthetic generator at GSM8K-Aug scale: N records (default 385,000) generated,
 * segmented and validated (math form), streamed one at a time as the build does, and checks
 * that a second run with the same seed gives the same records (by a hash of every field).
 *
 *   npx deno run --allow-read --allow-env bench/synthetic_bench.ts [n] [seed] [minSteps..maxSteps]
 *
 * Prints the time of each part, records per second, the peak resident memory seen, and the
 * status counts (all should be ok).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { generate } from "../pipeline/synthetic.ts";
import { segment } from "../pipeline/segment.ts";
import { validate } from "../pipeline/validate.ts";

const n = Number(Deno.args[0] ?? 385_000);
const seed = Number(Deno.args[1] ?? 1);
const [minSteps, maxSteps] = (Deno.args[2] ?? "1..6").split("..").map(Number);

let peakRss = 0;
const sampleRss = () => {
  peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
};

function run(full: boolean) {
  const hash = createHash("sha256");
  const status: Record<string, number> = {};
  let gen = 0;
  let seg = 0;
  let val = 0;
  let steps = 0;
  const it = generate({ n, seed, minSteps, maxSteps });
  let i = 0;
  while (true) {
    let t = performance.now();
    const next = it.next();
    gen += performance.now() - t;
    if (next.done) break;
    const p = next.value;
    hash.update(`${p.id}\u0000${p.question}\u0000${p.rationale}\u0000${p.answer}\n`);
    if (full) {
      t = performance.now();
      const s = segment(p);
      seg += performance.now() - t;
      steps += s.math.length;
      t = performance.now();
      const v = validate(s, { cot: "math" });
      val += performance.now() - t;
      status[v.validation.status] = (status[v.validation.status] ?? 0) + 1;
    }
    if (++i % 10_000 === 0) sampleRss();
  }
  sampleRss();
  return { gen, seg, val, steps, status, digest: hash.digest("hex").slice(0, 16) };
}

const t0 = performance.now();
const a = run(true);
const total = (performance.now() - t0) / 1000;
console.log(
  `${n} records (seed ${seed}, ${minSteps}..${maxSteps} steps, ${a.steps} steps in all): ` +
    `${total.toFixed(1)} s, ${(n / total).toFixed(0)} records/s`,
);
console.log(
  `  generate ${(a.gen / 1000).toFixed(1)} s, segment ${(a.seg / 1000).toFixed(1)} s, ` +
    `validate ${(a.val / 1000).toFixed(1)} s; status ${JSON.stringify(a.status)}`,
);
const b = run(false);
console.log(
  `  generation only, second run: ${(b.gen / 1000).toFixed(1)} s; same records: ` +
    `${a.digest === b.digest} (${a.digest})`,
);
console.log(`  peak RSS ${(peakRss / 2 ** 20).toFixed(0)} MiB`);

/**
 * Augments all of GSM8K train and reports the share of problems augmented, the reasons the
 * others were not, the variants made and the time, with the test questions excluded as near
 * copies (decontamination).
 *
 *   npx deno run --allow-read --allow-env bench/augment_bench.ts [variants] [data dir]
 *
 * The data dir holds GSM8K's train.jsonl and test.jsonl; it defaults to ../shared/data/gsm8k,
 * a folder beside the clone.
 *
 * @module
 */
import { augment, AugmentReport } from "../pipeline/augment.ts";
import { NgramIndex } from "../pipeline/overlap.ts";
import { readProblems } from "../pipeline/read.ts";

const variants = Number(Deno.args[0] ?? 10);
const dir = Deno.args[1] ?? "../shared/data/gsm8k";

const exclude = new NgramIndex();
for await (const p of readProblems(`${dir}/test.jsonl`)) exclude.add(p.id, p.question);

const report = new AugmentReport();
const perProblem: number[] = [];
const t0 = performance.now();
for await (const p of readProblems(`${dir}/train.jsonl`)) {
  const it = augment(p, { variants, seed: 1, exclude });
  let n = 0;
  for (;;) {
    const r = it.next();
    if (r.done) {
      report.add(r.value);
      break;
    }
    n++;
  }
  if (n > 0) perProblem.push(n);
}
const s = (performance.now() - t0) / 1000;
const sum = report.summary();
const full = perProblem.filter((n) => n === variants).length;
console.log(
  `${sum.problems} problems, ${variants} variants asked each: ${sum.augmented} augmented ` +
    `(${(100 * sum.share).toFixed(1)}%), ${sum.variants} variants (${full} problems got all ` +
    `${variants}), ${s.toFixed(1)} s`,
);
for (const [reason, n] of Object.entries(sum.reasons)) {
  console.log(
    `  ${reason.padEnd(26)} ${String(n).padStart(5)} (${(100 * n / sum.problems).toFixed(1)}%)`,
  );
}

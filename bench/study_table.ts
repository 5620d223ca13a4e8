/**
 * The table of the training-protocol study (bench/study.ts): one row per configuration, over
 * its seeds, from bench/results/study/<run>/result.json. Accuracy is on the 1,000-question
 * synthetic test split; the interval is Wilson's on the seeds' answers pooled. Compute is
 * counted in optimiser steps (and token positions forwarded), the CoT run a LOTUS run starts
 * from included, so that rows of equal total compute can be set side by side.
 *
 *   npx deno run -A bench/study_table.ts      (writes bench/results/study/table.md)
 *
 * @module
 */
import type { RunSummary } from "../eval/evaluate.ts";
import { writeFileAtomic } from "../base/atomic.ts";
import { wilson } from "./experiment_table.ts";

const DIR = new URL("./results/study", import.meta.url).pathname;

interface Result {
  spec: { name: string; from?: string; seed: number };
  summary: { steps: number; tokens: number; best?: { step: number; valAccuracy: number } };
  test: RunSummary;
  trainSeconds: number;
  /** The CoT start's result when this run was made (absent: look it up by name). */
  start?: { test: RunSummary; summary: Result["summary"] };
}

async function results(): Promise<Map<string, Result>> {
  const out = new Map<string, Result>();
  for await (const e of Deno.readDir(DIR)) {
    if (!e.isDirectory) continue;
    try {
      out.set(e.name, JSON.parse(await Deno.readTextFile(`${DIR}/${e.name}/result.json`)));
    } catch { /* not finished */ }
  }
  return out;
}

/** The study's table, as Markdown. */
export async function studyTable(): Promise<string> {
  const all = await results();
  const groups = new Map<string, Result[]>();
  for (const [name, r] of all) {
    const g = name.replace(/-s\d+$/, "");
    groups.set(g, [...(groups.get(g) ?? []), r]);
  }
  const lines = [
    "| configuration | seeds | test acc % (mean) | 95% CI (pooled) | per seed | minus its CoT start (points) | steps (with its CoT start) | positions (M) | best step |",
    "| --- | --: | --: | --: | --- | --: | --: | --: | --: |",
  ];
  for (const [name, unsorted] of [...groups].sort(([a], [b]) => a.localeCompare(b))) {
    const rs = [...unsorted].sort((x, y) => x.spec.seed - y.spec.seed);
    const correct = rs.reduce((s, r) => s + r.test.correct, 0);
    const n = rs.reduce((s, r) => s + r.test.n, 0);
    const [lo, hi] = wilson(correct, n);
    const mean = rs.reduce((s, r) => s + r.test.accuracy, 0) / rs.length;
    const start = (r: Result) => r.start ?? (r.spec.from ? all.get(r.spec.from) : undefined);
    const steps = rs.map((r) => r.summary.steps + (start(r)?.summary.steps ?? 0));
    const tokens = rs.map((r) => r.summary.tokens + (start(r)?.summary.tokens ?? 0));
    const avg = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    const from = rs[0].spec.from ? `${rs[0].summary.steps} + ${start(rs[0])?.summary.steps}` : "";
    // The goal's measure: LOTUS against the CoT model it started from, seed by seed.
    const gaps = rs.flatMap((r) => {
      const s = start(r);
      return s ? [100 * (r.test.accuracy - s.test.accuracy)] : [];
    });
    const gap = gaps.length ? avg(gaps).toFixed(1) : "–";
    lines.push(
      `| ${name} | ${rs.length} | ${(100 * mean).toFixed(1)} | ${(100 * lo).toFixed(1)}–${
        (100 * hi).toFixed(1)
      } | ${rs.map((r) => (100 * r.test.accuracy).toFixed(1)).join(", ")} | ${gap} | ${
        from || Math.round(avg(steps))
      } | ${(avg(tokens) / 1e6).toFixed(2)} | ${
        rs.map((r) => r.summary.best?.step ?? "–").join(", ")
      } |`,
    );
  }
  return lines.join("\n") + "\n";
}

if (import.meta.main) {
  const t = await studyTable();
  await writeFileAtomic(`${DIR}/table.md`, t);
  console.log(t);
}

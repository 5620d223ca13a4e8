/**
 * The end-of-build table: counts, reasons, step-count histogram and token counts, one
 * column per split, as plain aligned text.
 *
 * @module
 */

import type { Manifest } from "./manifest.ts";
import type { SkippedRecord } from "./build.ts";

/**
 * Format the summary of `splits` (default: all) from a manifest. `skipped` (the `skipped`
 * list of `buildDataset`'s result) adds the input records skipped as unusable, one line each
 * with `file:line`, the reason and the problem.
 *
 * @example
 * ```ts ignore
 * import { buildDataset, DEFAULT_BUILD, DEFAULT_OUT, defaultSplits } from "./mod.ts";
 * import { formatSummary } from "./summary.ts";
 * const summary = await buildDataset({ ...DEFAULT_BUILD, out: DEFAULT_OUT, splits: defaultSplits() });
 * console.log(formatSummary(summary.manifest, summary.built));
 * ```
 */
export function formatSummary(
  m: Manifest,
  splits: string[] = Object.keys(m.splits),
  skipped: readonly SkippedRecord[] = [],
): string {
  const infos = splits.map((s) => m.splits[s]);
  const rows: [string, (string | number)[]][] = [];
  const row = (label: string, f: (i: (typeof infos)[number]) => string | number) =>
    rows.push([label, infos.map(f)]);
  const union = (
    f: (i: (typeof infos)[number]) => Record<string, number>,
  ) => [...new Set(infos.flatMap((i) => Object.keys(f(i))))];

  row("records read", (i) => i.counts.read);
  row("  skipped (unreadable)", (i) => i.counts.skipped);
  row("kept", (i) => i.counts.kept);
  row("  ok", (i) => i.counts.ok);
  row("  flagged", (i) => i.counts.flagged);
  for (const r of union((i) => i.counts.flaggedByReason).sort()) {
    row(`    ${r}`, (i) => i.counts.flaggedByReason[r] ?? 0);
  }
  row("dropped", (i) => i.counts.dropped);
  for (const r of union((i) => i.counts.droppedByReason).sort()) {
    row(`    ${r}`, (i) => i.counts.droppedByReason[r] ?? 0);
  }
  const steps = union((i) => i.stepHistogram).map(Number).sort((a, b) => a - b);
  for (const n of steps) row(`steps = ${n}`, (i) => i.stepHistogram[String(n)] ?? 0);
  row("tokens: questions", (i) => i.tokens.question);
  row("tokens: steps", (i) => i.tokens.steps);
  row("tokens: answers", (i) => i.tokens.answer);
  row("longest step", (i) => i.tokens.maxStep);
  row(
    `steps > c = ${m.options.c} (${[...new Set(infos.map((i) => i.options.longStep))].join("/")})`,
    (i) => i.tokens.truncatedSteps,
  );
  // Step lengths in both forms under this tokenizer, and the c that holds 9 steps in 10.
  if (infos.some((i) => i.stepLengths)) {
    for (const form of ["math", "nl"] as const) {
      row(
        `${form} step tokens p50/p90/p99/max`,
        (i) => {
          const s = i.stepLengths?.[form];
          return s ? `${s.p50}/${s.p90}/${s.p99}/${s.max}` : "";
        },
      );
      row(`  ${form} steps > c; suggested c`, (i) => {
        const s = i.stepLengths?.[form];
        return s ? `${s.overC}/${s.steps}; ${s.suggestedC}` : "";
      });
    }
  }
  row(
    "longest lotus / cot / nocot",
    (i) => `${i.tokens.maxLotus}/${i.tokens.maxCot}/${i.tokens.maxNocot}`,
  );
  row("shards", (i) => i.shards.length);
  // Generated records, augmentation and decontamination, when any split has them.
  if (infos.some((i) => i.synthetic)) row("synthetic records", (i) => i.synthetic?.n ?? "");
  if (infos.some((i) => i.exclude)) {
    row("excluded near copies", (i) => i.exclude?.dropped ?? "");
  }
  if (infos.some((i) => i.augment)) {
    row(
      "augmented problems",
      (i) =>
        i.augment
          ? `${i.augment.augmented}/${i.augment.problems} (${(100 * i.augment.share).toFixed(1)}%)`
          : "",
    );
    row("  variants added", (i) => i.augment?.made ?? "");
    const reasons = [...new Set(infos.flatMap((i) => Object.keys(i.augment?.reasons ?? {})))];
    for (const r of reasons.sort()) {
      row(`  not augmented: ${r}`, (i) => i.augment ? i.augment.reasons[r] ?? 0 : "");
    }
  }

  const head: [string, (string | number)[]] = ["split", splits];
  const all = [head, ...rows];
  const w0 = Math.max(...all.map(([l]) => l.length));
  const ws = splits.map((_, j) => Math.max(...all.map(([, v]) => String(v[j]).length)));
  const lines = all.map(([l, v]) =>
    [l.padEnd(w0), ...v.map((x, j) => String(x).padStart(ws[j]))].join("  ").trimEnd()
  );
  const t = m.tokenizer;
  lines.push(
    `K = ${m.options.k}, c = ${m.options.c}, cot = ${m.options.cot}; tokenizer ${t.kind} ` +
      `(${t.vocabSize} ids, sha256 ${t.sha256.slice(0, 12)})`,
  );
  const shown = skipped.filter((s) => splits.includes(s.split));
  if (shown.length > 0) {
    lines.push("skipped records (each one is a row of its split's report.csv):");
    for (const split of splits) {
      const mine = shown.filter((s) => s.split === split);
      for (const s of mine) {
        lines.push(`  ${split}  ${s.file}:${s.line}  ${s.reason}  ${s.problem}`);
      }
      const more = m.splits[split].counts.skipped - mine.length;
      if (more > 0) lines.push(`  ${split}  and ${more} more in ${m.splits[split].report}`);
    }
  }
  return lines.join("\n");
}

/**
 * Each speed change's prediction against what a GPU run measured. `bench/gpu_all.sh` runs the
 * reference benchmark with the defaults and then, one variant at a time, with one change turned
 * off (its "before"); the change's measured effect is the default's figure less the variant's.
 * {@linkcode PREDICTIONS} holds, for each variant, the change it undoes and the effect that
 * bench/NOTES.md predicted for it, in ms (negative: the change saves time) on the training
 * step, the batch-1 thought phase and the batch-1 answer token.
 *
 *   npx deno run -A check/predictions.ts DIR [--json PATH]
 *
 * DIR is a gpu_all.sh output folder: run.log (each variant's rows, `variant: {row}`, among them
 * the variant "default", the same short benchmark with the defaults) and bench.json (the full
 * benchmark, used for the defaults when run.log has no "default"). Prints one line a change and
 * measure: predicted, measured, and whether the measurement fell in the predicted range, beyond
 * it (saved more) or short of it; none is judged when run.log says the benchmark ran dry (no GPU). The variants run a few steps each, so differences of a few
 * percent are noise.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { z } from "zod";

/** The three figures a change is predicted on, in ms. */
export type Measure = "step" | "thought" | "token";

/** A change, the gpu_all.sh variant that turns it off, and its predicted effect [lo, hi] ms. */
export interface Prediction {
  variant: string;
  change: string;
  effect: Partial<Record<Measure, [number, number]>>;
}

/** bench/NOTES.md's predictions, by the variant that is each change's before. */
export const PREDICTIONS: readonly Prediction[] = [
  {
    variant: "heuristic-gemm",
    change: "17. GEMM algorithms chosen by timing",
    effect: { step: [-19, -4], thought: [-2, -0.5] },
  },
  {
    variant: "fp32-rows",
    change: "20. the attention backward's rows in bf16, once a call",
    effect: { step: [-8, 4] },
  },
  {
    variant: "64-row-blocks",
    change: "21. tensor-core attention blocks sized to the sequence",
    effect: { step: [-20, -5], thought: [-0.2, 0.2] },
  },
  {
    variant: "gemm-few-rows",
    change: "23. bf16 forwards of 1 to 8 rows by one kernel of our own",
    effect: { token: [-0.45, -0.1] },
  },
  {
    variant: "no-lookahead",
    change: "25 and 26. attention tiles staged a step ahead",
    effect: { step: [-15, -2], thought: [-0.3, -0.1] },
  },
  {
    variant: "separate-gelu-bwd",
    change: "28. GELU's backward formed by the fc matmul's bias pass",
    effect: { step: [-5, -2] },
  },
  {
    variant: "no-pdl",
    change: "29. programmatic dependent launch of every kernel",
    effect: { step: [-4, -1], thought: [-1, -0.3], token: [-0.2, -0.05] },
  },
  {
    variant: "gemm-skinny-rows",
    change: "30. bf16 forwards of 9 to 128 rows by a split-K kernel, where timing keeps it",
    effect: { step: [-0.2, 0.2], thought: [-1.5, 0], token: [-0.05, 0.05] },
  },
  {
    variant: "separate-gelu-fwd",
    change: "31. GELU's forward formed by the few-row kernel after it",
    effect: { step: [-0.2, 0.2], thought: [-0.4, 0], token: [-0.06, -0.02] },
  },
  {
    variant: "fp32-qkv",
    change: "32. each layer's qkv kept in bf16 storage",
    effect: { step: [-7, -2], thought: [-0.1, 0.1], token: [-0.05, 0.05] },
  },
  {
    variant: "fp32-fch",
    change: "33. each layer's MLP first projection kept in bf16 storage",
    effect: { step: [-5, -2], thought: [-0.1, 0.1], token: [-0.05, 0.05] },
  },
  {
    variant: "separate-norm-fwd",
    change: "36. LayerNorm's forward formed by the gemv kernel after it",
    effect: { step: [-0.2, 0.2], thought: [-0.06, 0.02], token: [-0.06, 0] },
  },
];

const RowSchema = z.object({
  section: z.string(),
  name: z.string(),
  value: z.number().nullable().optional(),
  note: z.string().optional(),
});
type Row = z.infer<typeof RowSchema>;

/** The three figures of one benchmark's rows, in ms (missing ones undefined). */
export function figuresOf(rows: Row[]): Partial<Record<Measure, number>> {
  const out: Partial<Record<Measure, number>> = {};
  for (const r of rows) {
    if (r.section === "train" && /examples\/s$/.test(r.name)) {
      const ms = r.note?.match(/([\d.]+) ms\/step/);
      if (ms) out.step = Number(ms[1]);
    } else if (r.section === "infer" && typeof r.value === "number") {
      if (r.name.startsWith("thought phase (")) out.thought = r.value;
      else if (r.name.startsWith("LOTUS answer token")) out.token = r.value;
    }
  }
  return out;
}

/** Each variant's rows from gpu_all.sh's run.log (lines `variant: {row}`), by variant. */
export function variantRows(log: string): Map<string, Row[]> {
  const out = new Map<string, Row[]>();
  for (const line of log.split("\n")) {
    const m = line.match(/^([a-z0-9-]+): (\{.*\})\s*$/);
    if (!m) continue;
    let row: Row;
    try {
      row = RowSchema.parse(JSON.parse(m[2]));
    } catch {
      continue; // another program's output that happens to look alike
    }
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1])!.push(row);
  }
  return out;
}

/**
 * The defaults' figures: the variant "default" of run.log (the same short benchmark as the
 * others) when it ran, else the full benchmark's rows (bench.json's, read by `benchRows`).
 */
export function defaultFigures(
  variants: Map<string, Row[]>,
  benchRows: () => unknown,
): Partial<Record<Measure, number>> {
  const short = variants.get("default");
  return figuresOf(short ?? z.array(RowSchema).parse(benchRows()));
}

/** One line of the comparison. */
export interface Check {
  change: string;
  variant: string;
  measure: Measure;
  predicted: [number, number];
  /** default less variant, ms; null when either run lacks the figure. */
  measured: number | null;
  verdict:
    | "as predicted"
    | "beyond (saved more)"
    | "short"
    | "not measured"
    | "not judged (no GPU)";
}

/** The predictions against the default figures and each variant's. */
export function checkPredictions(
  defaults: Partial<Record<Measure, number>>,
  variants: Map<string, Row[]>,
  predictions: readonly Prediction[] = PREDICTIONS,
  dry = false,
): Check[] {
  const out: Check[] = [];
  for (const p of predictions) {
    const v = variants.has(p.variant) ? figuresOf(variants.get(p.variant)!) : {};
    for (const [measure, range] of Object.entries(p.effect) as [Measure, [number, number]][]) {
      const a = defaults[measure], b = v[measure];
      const measured = a === undefined || b === undefined ? null : a - b;
      // A dry run's variants ran on the CPU engine, where the settings they turn off do not
      // exist: their differences are noise, and say nothing of a prediction.
      const verdict = measured === null
        ? "not measured"
        : dry
        ? "not judged (no GPU)"
        : measured < range[0]
        ? "beyond (saved more)"
        : measured > range[1]
        ? "short"
        : "as predicted";
      out.push({
        change: p.change,
        variant: p.variant,
        measure,
        predicted: range,
        measured,
        verdict,
      });
    }
  }
  return out;
}

const UNITS: Record<Measure, string> = {
  step: "ms a training step",
  thought: "ms, batch-1 thought phase",
  token: "ms, batch-1 answer token",
};

/** The comparison as a fixed-width table. */
export function formatChecks(checks: Check[]): string {
  const fmt = (x: number) => (Math.abs(x) < 10 ? x.toFixed(2) : x.toFixed(1));
  const rows = checks.map((c) => [
    c.change,
    c.variant,
    UNITS[c.measure],
    `${fmt(c.predicted[0])} to ${fmt(c.predicted[1])}`,
    c.measured === null ? "-" : fmt(c.measured),
    c.verdict,
  ]);
  const head = ["change", "its before (variant)", "measure", "predicted", "measured", "verdict"];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((x, i) => x.padEnd(w[i])).join("  ").trimEnd();
  return [line(head), line(w.map((n) => "-".repeat(n))), ...rows.map(line)].join("\n");
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { json: { type: "string" }, help: { type: "boolean", short: "h" } },
    allowPositionals: true,
  });
  if (values.help || positionals.length !== 1) {
    console.error("usage: deno run -A check/predictions.ts DIR [--json PATH]");
    Deno.exit(values.help ? 0 : 2);
  }
  const dir = positionals[0];
  let defaults: Partial<Record<Measure, number>>, variants: Map<string, Row[]>, dry: boolean;
  try {
    const runLog = Deno.readTextFileSync(`${dir}/run.log`);
    variants = variantRows(runLog);
    // The benchmark's own verdict: it says DRY RUN when it ran on the CPU engine.
    dry = runLog.includes("DRY RUN");
    defaults = defaultFigures(
      variants,
      () => JSON.parse(Deno.readTextFileSync(`${dir}/bench.json`)).rows,
    );
  } catch (e) {
    console.error(
      `predictions: ${dir}: cannot read run.log and bench.json (${(e as Error).message}); ` +
        "give the folder that bench/gpu_all.sh wrote",
    );
    Deno.exit(1);
  }
  const checks = checkPredictions(defaults, variants, PREDICTIONS, dry);
  console.log(formatChecks(checks));
  if (values.json) {
    const tmp = `${values.json}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify({ defaults, checks }, null, 1) + "\n");
    Deno.renameSync(tmp, values.json);
  }
}

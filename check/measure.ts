/**
 * The arithmetic of the GPU benchmark (bench/gpu_bench.ts) and its verdicts: token positions,
 * model FLOP utilisation, medians, random examples of the reference's shape, target judging and
 * the final table. Apart from the benchmark so that tests check it without running it.
 *
 * @module
 */
import type { Example } from "../train/batch.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";
import type { Rng } from "../base/rng.ts";

/** The measured bf16 dense peak of the H200, as the reference implementation reports it. */
export const PEAK_BF16_FLOPS = 790e12;

/** The GPU benchmark's targets, derived from the reference implementation's figures on an H200
 * (docs/gpu-bench.md, "Targets"). */
export const TARGETS = {
  trainExamplesPerSec: 690,
  peakGiB: 18,
  thoughtMs: 4,
  answerTokenMs: 0.5,
  speedup30: 4,
  speedup90: 10,
  evalSeconds: 10,
} as const;

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = xs.toSorted((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Token positions one LOTUS training example forwards: the question once, R+1 passes over
 * BOT and the K*c latents, and the suffix (EOT, any remaining steps, the answer). */
export function lotusPositions(P: number, K: number, c: number, R: number, S: number): number {
  return P + (R + 1) * (1 + K * c) + S;
}

/** Model FLOP utilisation by the 6 * N * positions count. */
export function mfu(params: number, positionsPerSec: number, peak = PEAK_BF16_FLOPS): number {
  return 6 * params * positionsPerSec / peak;
}

/** The special ids at the top of a vocabulary of V, as check/torch_reference.py places them. */
export function specialsOf(V: number): SpecialIds {
  return { eos: V - 4, pad: V - 4, bot: V - 3, eot: V - 2, lat: V - 1 };
}

/** One random training example of the reference's shape: K steps of exactly c tokens (so every
 * latent slot has a target) and an answer of `answer` tokens ending in EOS. */
export function randomExample(
  rng: Rng,
  V: number,
  shape: { question: number; answer: number; K: number; c: number },
  index: number,
): Example {
  const ids = (n: number) => Int32Array.from({ length: n }, () => rng.below(V - 4));
  const ans = ids(shape.answer);
  ans[shape.answer - 1] = specialsOf(V).eos;
  return {
    q: ids(shape.question),
    steps: Array.from({ length: shape.K }, () => ids(shape.c)),
    ans,
    index,
  };
}

/** A row of the final table. */
export interface BenchRow {
  section: string;
  name: string;
  value: number | null;
  unit: string;
  /** The target, as "<= x" or ">= x"; empty when none. */
  target: string;
  /** Whether the target is met; null when not judged (no target, a dry run, or not run). */
  met: boolean | null;
  note?: string;
}

/** Judges `value` against a target "<= x" or ">= x". */
export function judge(value: number | null, target: string): boolean | null {
  if (value === null || !Number.isFinite(value) || !target) return null;
  const [op, x] = target.split(" ");
  return op === "<=" ? value <= Number(x) : value >= Number(x);
}

/** The table printed last. */
export function formatBenchTable(rows: BenchRow[]): string {
  const fmt = (v: number | null) =>
    v === null
      ? "-"
      : Math.abs(v) >= 100
      ? v.toFixed(0)
      : Math.abs(v) >= 1
      ? v.toFixed(2)
      : v.toPrecision(3);
  const cells = rows.map((r) => [
    r.section,
    r.name,
    `${fmt(r.value)} ${r.unit}`.trim(),
    r.target,
    r.met === null ? (r.target ? "not judged" : "") : r.met ? "met" : "MISSED",
    r.note ?? "",
  ]);
  const head = ["section", "measure", "value", "target", "verdict", "note"];
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(w[i])).join("  ").trimEnd();
  return [line(head), line(w.map((n) => "-".repeat(n))), ...cells.map(line)].join("\n");
}

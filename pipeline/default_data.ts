/**
 * The project's default data: what `deno task build-dataset` builds when given no `--input`.
 *
 * This is the one place that decides it: seeded synthetic problems (pipeline/synthetic.ts) of
 * 1 to 3 steps with one-digit operands, which a tiny model learns in minutes on two CPU
 * cores, plus the hand-written GSM8K-format problems under fixtures/default/. The compact
 * tokenizer keeps the vocabulary near a thousand ids, and K = 3 blocks of c = 16 slots hold
 * every chain (1.8% of steps, money with cents, are longer than 16 tokens and truncated as
 * targets).
 *
 * @module
 */

import type { SplitSpec } from "./build.ts";

/** Where the default build goes when `--out` is not given. */
export const DEFAULT_OUT = "out/data/default";

function fixture(name: string): string {
  const abs = decodeURIComponent(new URL(`../fixtures/default/${name}`, import.meta.url).pathname);
  // Relative to the working directory when the project is under it, so the manifest names
  // the same path on every machine; absolute otherwise.
  const cwd = Deno.cwd().replace(/\/$/, "") + "/";
  return abs.startsWith(cwd) ? abs.slice(cwd.length) : abs;
}

/**
 * The default splits: `train` and `valid`.
 *
 * @example
 * ```ts
 * import { defaultSplits } from "./default_data.ts";
 * console.assert(defaultSplits().map((s) => s.name).join() === "train,valid");
 * ```
 */
export function defaultSplits(): SplitSpec[] {
  const synth = { minSteps: 1, maxSteps: 3, digits: 1, maxValue: 100 };
  return [
    { name: "train", inputs: [fixture("train.jsonl")], synthetic: { n: 4000, seed: 1, ...synth } },
    { name: "valid", inputs: [fixture("valid.jsonl")], synthetic: { n: 200, seed: 2, ...synth } },
  ];
}

/** The build options of the default data (command-line flags override them). */
export const DEFAULT_BUILD: { tokenizer: string; k: number; c: number } = {
  tokenizer: "compact",
  k: 3,
  c: 16,
};

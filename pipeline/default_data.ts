/**
 * The project's default data: what `deno task build-dataset` builds when given no `--input`.
 *
 * This is the one place that decides it. Today it is the hand-written GSM8K-format problems
 * under fixtures/default/ (a train and a valid file); a seeded synthetic generator will add
 * its files here.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { relative, resolve } from "node:path";
import type { SplitSpec } from "./build.ts";

/** Where the default build goes when `--out` is not given. */
export const DEFAULT_OUT = "out/data/default";

function fixture(name: string): string {
  const abs = fileURLToPath(new URL(`../fixtures/default/${name}`, import.meta.url));
  // Relative to the working directory when the project is under it, so the manifest names
  // the same path on every machine; absolute otherwise.
  const rel = relative(Deno.cwd(), abs);
  return rel.startsWith("..") || resolve(rel) !== abs ? abs : rel;
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
  return [
    { name: "train", inputs: [fixture("train.jsonl")] },
    { name: "valid", inputs: [fixture("valid.jsonl")] },
  ];
}

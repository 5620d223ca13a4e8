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

import { BuildError, type SplitSpec } from "./build.ts";
import { readManifest } from "./manifest.ts";
import { basename } from "./read/record.ts";

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

/**
 * Refuses the default build into `out` when a split there that the default build would replace
 * (train, valid) holds other data: a directory a user built from their own files, which a
 * `deno task build-dataset --out DIR` without `--input` would overwrite with the default data.
 * A directory without a readable manifest is left to the build.
 *
 * @throws {BuildError} naming the split, where its data came from, and what to give instead.
 */
export async function refuseDefaultOver(out: string): Promise<void> {
  let splits;
  try {
    splits = (await readManifest(out)).splits;
  } catch {
    return;
  }
  for (const spec of defaultSplits()) {
    const info = splits[spec.name];
    if (!info) continue;
    // Paths are as given when the split was built, from the working directory of then.
    const paths = info.sources.map((s) => s.path);
    const same = paths.length === spec.inputs.length &&
      paths.every((p, i) => p.endsWith(`fixtures/default/${basename(spec.inputs[i])}`)) &&
      info.synthetic?.n === spec.synthetic?.n && info.synthetic?.seed === spec.synthetic?.seed;
    if (!same) {
      const from = paths.length > 0 ? paths.join(", ") : "generated problems";
      throw new BuildError(
        `${out}: split ${spec.name} holds other data (from ${from}) than the default data, ` +
          `which a build without --input writes into train and valid, replacing it: give ` +
          `--input FILE (and --split NAME) to build a split of your own there, another --out, ` +
          `or, for the default data there, move or remove ${out} first`,
      );
    }
  }
}

/**
 * Loading a dataset directory (docs/dataset-format.md) for training: the manifest and the
 * ragged tensors of a split, as {@linkcode Example}s (zero-copy views into the shards).
 *
 * The trainer assembles every batch from the ragged components, so one dataset serves every
 * curriculum stage, any K and c, and the explicit-CoT and no-CoT baselines.
 *
 * @module
 */

import { type Manifest, readManifest } from "../pipeline/manifest.ts";
import { readSplitShards, VERIFY_MODES, type VerifyMode } from "../pipeline/shard.ts";
import { type OptionNames, refuseUnknownOptions, refuseUnlisted } from "../base/options.ts";
import { sha256Hex } from "../base/sha256.ts";
import type { Example } from "./batch.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";

export { DatasetError } from "../pipeline/shard.ts";

/** A split loaded for training or evaluation. */
export interface SplitData {
  /** Split name. */
  name: string;
  /** The dataset directory. */
  dir: string;
  /** The directory's manifest (every split, not only this one). */
  manifest: Manifest;
  /** The split's records in shard order, as views into the shards' tensors. */
  examples: Example[];
  /** The special token ids of the dataset's tokenizer. */
  special: SpecialIds;
  /** Number of token ids of the dataset's tokenizer, LOTUS tokens included. */
  vocabSize: number;
}

/** Options of {@linkcode loadSplit}. */
export interface LoadSplitOptions {
  /**
   * How much to check against the manifest: `basic` (the default: counts, shapes, sizes,
   * offsets, token ids) or `full` (also every file's sha256); docs/dataset-format.md.
   */
  verify?: VerifyMode;
}

/** Every option of {@linkcode LoadSplitOptions}. */
const LOAD_SPLIT_OPTIONS: OptionNames<LoadSplitOptions> = { verify: true };

/**
 * Load split `split` of the dataset in `dir`, checked against its manifest
 * (pipeline/shard.ts, {@linkcode readSplitShards}).
 *
 * @throws {DatasetError} when the split is missing or does not match the manifest.
 * @throws {ManifestError} when the manifest is missing or invalid.
 * @throws {RangeError} for an option {@linkcode LoadSplitOptions} does not have, or a
 * `verify` that is neither `"basic"` nor `"full"`.
 *
 * @example
 * ```ts ignore
 * import { loadSplit } from "./dataset.ts";
 * const train = await loadSplit("out/data/default", "train", { verify: "full" });
 * console.log(train.examples.length);
 * ```
 */
export async function loadSplit(
  dir: string,
  split: string,
  opts: LoadSplitOptions = {},
): Promise<SplitData> {
  refuseUnknownOptions("loadSplit", opts, LOAD_SPLIT_OPTIONS);
  refuseUnlisted("loadSplit", "verify", opts.verify, VERIFY_MODES);
  const manifest = await readManifest(dir);
  const examples: Example[] = [];
  for (const t of await readSplitShards(dir, manifest, split, opts)) {
    const rsOff = t.record_step_offsets, sOff = t.step_offsets, sIds = t.step_ids;
    for (let i = 0; i < t.record_index.length; i++) {
      const steps: Int32Array[] = [];
      for (let s = rsOff[i]; s < rsOff[i + 1]; s++) steps.push(sIds.subarray(sOff[s], sOff[s + 1]));
      examples.push({
        q: t.question_ids.subarray(t.question_offsets[i], t.question_offsets[i + 1]),
        steps,
        ans: t.answer_ids.subarray(t.answer_offsets[i], t.answer_offsets[i + 1]),
        index: t.record_index[i],
      });
    }
  }
  return {
    name: split,
    dir,
    manifest,
    examples,
    special: manifest.tokenizer.special,
    vocabSize: manifest.tokenizer.vocabSize,
  };
}

/**
 * A fingerprint of what a run trains on: the dataset's options and tokenizer and the shard
 * hashes of split `split`. It does not change when other splits are added.
 */
export function datasetFingerprint(manifest: Manifest, split: string): string {
  const info = manifest.splits[split];
  return sha256Hex(JSON.stringify({
    options: manifest.options,
    tokenizer: manifest.tokenizer.sha256,
    shards: info ? info.shards.map((s) => s.sha256) : null,
  }));
}

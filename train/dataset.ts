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
import { getTensor, readSafetensors } from "../base/safetensors.ts";
import { sha256Hex } from "../base/sha256.ts";
import type { Example } from "./batch.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";

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

/** Raised when a dataset directory cannot be used; the message says what to do. */
export class DatasetError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "DatasetError";
  }
}

/**
 * Load split `split` of the dataset in `dir`.
 *
 * @example
 * ```ts ignore
 * import { loadSplit } from "./dataset.ts";
 * const train = await loadSplit("out/data/default", "train");
 * console.log(train.examples.length);
 * ```
 */
export async function loadSplit(dir: string, split: string): Promise<SplitData> {
  const manifest = await readManifest(dir);
  const info = manifest.splits[split];
  if (!info) {
    throw new DatasetError(
      `${dir}: has no split "${split}" (it has: ${Object.keys(manifest.splits).join(", ")}); ` +
        `build it with deno task build-dataset --split ${split} --out ${dir}`,
    );
  }
  const examples: Example[] = [];
  for (const shard of info.shards) {
    const path = `${dir}/${shard.file}`;
    const f = await readSafetensors(path);
    const g = (name: string) => getTensor(f, name, "I32", undefined, path);
    const qIds = g("question_ids"), qOff = g("question_offsets");
    const sIds = g("step_ids"), sOff = g("step_offsets"), rsOff = g("record_step_offsets");
    const aIds = g("answer_ids"), aOff = g("answer_offsets"), rec = g("record_index");
    const n = rec.length;
    if (qOff.length !== n + 1 || aOff.length !== n + 1 || rsOff.length !== n + 1) {
      throw new DatasetError(`${path}: offset tensors do not match record_index (${n} records)`);
    }
    for (let i = 0; i < n; i++) {
      const steps: Int32Array[] = [];
      for (let s = rsOff[i]; s < rsOff[i + 1]; s++) steps.push(sIds.subarray(sOff[s], sOff[s + 1]));
      examples.push({
        q: qIds.subarray(qOff[i], qOff[i + 1]),
        steps,
        ans: aIds.subarray(aOff[i], aOff[i + 1]),
        index: rec[i],
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

/** The tokenizer file of a dataset directory. */
export function tokenizerPathOf(d: SplitData): string {
  return `${d.dir}/${d.manifest.tokenizer.file}`;
}

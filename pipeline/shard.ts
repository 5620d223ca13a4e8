/**
 * Shard assembly: packed records in, the named int32 tensors of one safetensors shard out
 * (docs/dataset-format.md, "Tensors in each shard"). Padded layouts are right-padded to the
 * longest row of the shard: ids with PAD, labels with -100.
 *
 * @module
 */

import { IGNORE, type PackedRecord } from "./pack.ts";
import type { Tensor } from "../base/safetensors.ts";

/** A packed record and its 0-based line in `<split>.records.jsonl`. */
export interface ShardRow {
  /** The record's token sequences. */
  packed: PackedRecord;
  /** Its line in the split's records.jsonl. */
  recordIndex: number;
}

/** Layout options a shard needs. */
export interface ShardOptions {
  /** Latent blocks K. */
  k: number;
  /** Slots per block c. */
  c: number;
  /** The PAD id (= EOS). */
  pad: number;
}

/** Tensor names in the order they are written. */
export const SHARD_TENSORS = [
  "question_ids",
  "question_offsets",
  "step_ids",
  "step_offsets",
  "record_step_offsets",
  "answer_ids",
  "answer_offsets",
  "record_index",
  "lotus_input_ids",
  "lotus_labels",
  "lotus_lengths",
  "lotus_bot",
  "lotus_step_targets",
  "cot_input_ids",
  "cot_labels",
  "cot_lengths",
  "nocot_input_ids",
  "nocot_labels",
  "nocot_lengths",
] as const;

function i32(shape: number[], data: Int32Array): Tensor {
  return { dtype: "I32", shape, data };
}

/** Concatenate ragged rows, returning the flat ids and the [n+1] offsets. */
function ragged(rows: number[][]): [Int32Array, Int32Array] {
  const offsets = new Int32Array(rows.length + 1);
  for (let i = 0; i < rows.length; i++) offsets[i + 1] = offsets[i] + rows[i].length;
  const flat = new Int32Array(offsets[rows.length]);
  for (let i = 0; i < rows.length; i++) flat.set(rows[i], offsets[i]);
  return [flat, offsets];
}

/** Right-pad rows to the longest: [N, T] ids, [N, T] labels and [N] lengths. */
function padded(
  ids: number[][],
  labels: number[][],
  pad: number,
): [Tensor, Tensor, Tensor] {
  const n = ids.length;
  let t = 0;
  for (const r of ids) if (r.length > t) t = r.length;
  const x = new Int32Array(n * t).fill(pad);
  const y = new Int32Array(n * t).fill(IGNORE);
  const len = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    x.set(ids[i], i * t);
    y.set(labels[i], i * t);
    len[i] = ids[i].length;
  }
  return [i32([n, t], x), i32([n, t], y), i32([n], len)];
}

/**
 * Build a shard's tensors, in {@linkcode SHARD_TENSORS} order.
 *
 * @example
 * ```ts
 * import { shardTensors } from "./shard.ts";
 * const t = shardTensors([], { k: 6, c: 13, pad: 50256 });
 * console.assert(t.lotus_step_targets.shape.join() === "0,6,13");
 * ```
 */
export function shardTensors(rows: ShardRow[], opts: ShardOptions): Record<string, Tensor> {
  const n = rows.length;
  const p = rows.map((r) => r.packed);
  const [qIds, qOff] = ragged(p.map((r) => r.question));
  const allSteps: number[][] = [];
  const recSteps = new Int32Array(n + 1);
  for (let i = 0; i < n; i++) {
    for (const s of p[i].steps) allSteps.push(s);
    recSteps[i + 1] = allSteps.length;
  }
  const [sIds, sOff] = ragged(allSteps);
  const [aIds, aOff] = ragged(p.map((r) => r.answer));
  const kc = opts.k * opts.c;
  const targets = new Int32Array(n * kc);
  for (let i = 0; i < n; i++) targets.set(p[i].stepTargets, i * kc);
  const [lx, ly, ll] = padded(p.map((r) => r.lotusIds), p.map((r) => r.lotusLabels), opts.pad);
  const [cx, cy, cl] = padded(p.map((r) => r.cotIds), p.map((r) => r.cotLabels), opts.pad);
  const [nx, ny, nl] = padded(p.map((r) => r.nocotIds), p.map((r) => r.nocotLabels), opts.pad);
  return {
    question_ids: i32([qIds.length], qIds),
    question_offsets: i32([n + 1], qOff),
    step_ids: i32([sIds.length], sIds),
    step_offsets: i32([sOff.length], sOff),
    record_step_offsets: i32([n + 1], recSteps),
    answer_ids: i32([aIds.length], aIds),
    answer_offsets: i32([n + 1], aOff),
    record_index: i32([n], Int32Array.from(rows, (r) => r.recordIndex)),
    lotus_input_ids: lx,
    lotus_labels: ly,
    lotus_lengths: ll,
    lotus_bot: i32([n], Int32Array.from(p, (r) => r.lotusBot)),
    lotus_step_targets: i32([n, opts.k, opts.c], targets),
    cot_input_ids: cx,
    cot_labels: cy,
    cot_lengths: cl,
    nocot_input_ids: nx,
    nocot_labels: ny,
    nocot_lengths: nl,
  };
}

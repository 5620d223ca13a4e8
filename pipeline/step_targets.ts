/**
 * Step targets: where the tokens of the first K gold steps are supervised in the loop region
 * (BOT + K*c latents, loop row 0 = BOT), under each long-step policy.
 *
 * Block k's targets start at loop row k*c: token j of step S_k is the target of row k*c + j
 * (BOT predicts S_0[0]; the last latent of block k-1 predicts S_k[0]). The policies differ
 * only for a step longer than c tokens:
 *
 * - `truncate`: only j < c is supervised; the rest of the step has no target.
 * - `drop`: the record never reaches packing's layout (pipeline/pack.ts drops it), so every
 *   step fits and the layout is `truncate`'s.
 * - `spill`: the step runs on into the following slots for its whole length, as the reference
 *   implementation's step loss reads `logits[k*c : k*c + len(S_k)]`. A row that both a spilled
 *   step and the next block's own step reach (row k*c + c + j' gets S_k[c + j'] and
 *   S_{k+1}[j']) is supervised with both targets: the two cross-entropy terms add, and each
 *   counts in the step loss's denominator. Targets past the loop region's last row (K*c, the
 *   last latent, which no block reaches otherwise) are cut: the last block holds at most
 *   c + 1 targets, block k at most (K - k)*c + 1.
 *
 * Two views of the same layout:
 *
 * - {@linkcode blockTargets}: `[K, W]` with `[k, j] = S_k[j]` (row k*c + j), -100 where there
 *   is none; W = c, or K*c + 1 under `spill` (block 0 reaches row K*c). This is the dataset's
 *   `lotus_step_targets` tensor.
 * - {@linkcode slotTargets}: per loop row, the target(s), as layers of `[1 + K*c]`: layer m
 *   holds the targets S_k[j] with m*c <= j < (m+1)*c, at row k*c + j. Layer 0 is each block's
 *   own step (j < c); layers m >= 1 exist only under `spill`. A row holds at most one target
 *   per layer, so the training step (train/step.ts) takes one cross-entropy per layer over the
 *   same logits and adds them.
 *
 * @module
 */

/** The label value the loss ignores. */
export const IGNORE_TARGET: -100 = -100;

/** What to do with a step (among the first K) longer than c tokens. */
export type LongStep = "truncate" | "drop" | "spill";

/** Every long-step policy, in the order the docs list them. */
export const LONG_STEPS: readonly LongStep[] = ["truncate", "drop", "spill"];

/** The width W of the `[K, W]` block-target layout: c, or K*c + 1 under `spill`. */
export function stepTargetWidth(K: number, c: number, longStep: LongStep): number {
  return longStep === "spill" ? K * c + 1 : c;
}

/**
 * How many tokens of step `k` (of `len` tokens) are targets: min(len, c), or under `spill`
 * every token whose row k*c + j is inside the loop region (j <= (K - k)*c).
 */
export function supervisedLength(
  k: number,
  len: number,
  K: number,
  c: number,
  longStep: LongStep,
): number {
  if (longStep !== "spill") return Math.min(len, c);
  return Math.max(0, Math.min(len, (K - k) * c + 1));
}

/**
 * The `[K, W]` block targets of the first K steps (see the module doc), W from
 * {@linkcode stepTargetWidth}.
 *
 * @example
 * ```ts
 * import { blockTargets } from "./step_targets.ts";
 * // K = 2, c = 2; S_0 has 3 tokens: under spill its third token is block 0's j = 2 (row 2).
 * const t = blockTargets([[7, 8, 9], [5]], 2, 2, "spill");
 * console.assert(Array.from(t).join() === "7,8,9,-100,-100,5,-100,-100,-100,-100");
 * ```
 */
export function blockTargets(
  steps: readonly ArrayLike<number>[],
  K: number,
  c: number,
  longStep: LongStep,
): Int32Array {
  const W = stepTargetWidth(K, c, longStep);
  const out = new Int32Array(K * W).fill(IGNORE_TARGET);
  for (let k = 0; k < Math.min(K, steps.length); k++) {
    const n = supervisedLength(k, steps[k].length, K, c, longStep);
    for (let j = 0; j < n; j++) out[k * W + j] = steps[k][j];
  }
  return out;
}

/** The per-row step targets of one example (see {@linkcode slotTargets}). */
export interface SlotTargets {
  /** Layers of `[1 + K*c]` targets, layer 0 first; -100 where a layer has no target. */
  layers: Int32Array[];
  /** Same shapes: the block k whose step the target belongs to, -1 where none. */
  blocks: Int32Array[];
  /** Targets in all layers (the step loss's denominator share of this example). */
  count: number;
  /** Step tokens among the first K steps that have no target (truncated or cut). */
  unsupervised: number;
}

/**
 * The loop-row targets of the first K steps, as layers (module doc). Layer 0 always exists;
 * under `spill`, one more layer per c tokens a step runs past its block.
 *
 * @example
 * ```ts
 * import { slotTargets } from "./step_targets.ts";
 * // K = 2, c = 2, rows 0..4. S_0 = [7, 8, 9] spills onto row 2, which S_1 = [5, 6] also starts.
 * const s = slotTargets([[7, 8, 9], [5, 6]], 2, 2, "spill");
 * console.assert(Array.from(s.layers[0]).join() === "7,8,5,6,-100");
 * console.assert(Array.from(s.layers[1]).join() === "-100,-100,9,-100,-100");
 * console.assert(s.count === 5);
 * ```
 */
export function slotTargets(
  steps: readonly ArrayLike<number>[],
  K: number,
  c: number,
  longStep: LongStep,
): SlotTargets {
  const L = 1 + K * c;
  const layers: Int32Array[] = [], blocks: Int32Array[] = [];
  const layer = (m: number) => {
    while (layers.length <= m) {
      layers.push(new Int32Array(L).fill(IGNORE_TARGET));
      blocks.push(new Int32Array(L).fill(-1));
    }
  };
  layer(0);
  let count = 0, unsupervised = 0;
  for (let k = 0; k < Math.min(K, steps.length); k++) {
    const st = steps[k], n = supervisedLength(k, st.length, K, c, longStep);
    unsupervised += st.length - n;
    for (let j = 0; j < n; j++) {
      const m = Math.floor(j / c);
      layer(m);
      layers[m][k * c + j] = st[j];
      blocks[m][k * c + j] = k;
      count++;
    }
  }
  return { layers, blocks, count, unsupervised };
}

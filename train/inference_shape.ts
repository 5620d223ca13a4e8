/**
 * The LOTUS shape (K, R, c) a checkpoint answers with: the curriculum stage it reached, with
 * overrides. Shared by every inference backend and by export.
 *
 * @module
 */

import type { LotusMeta } from "./checkpoint.ts";
import { stageShape } from "./config.ts";
import { stageOf } from "./trainer.ts";

/** LOTUS shape overrides (the fields of an answer request that bear on the shape). */
export interface ShapeOverrides {
  /** Latent blocks; default: the checkpoint's K. */
  k?: number;
  /** Loop iterations; default: the checkpoint's R (= K when tied). */
  r?: number;
}

/**
 * The LOTUS shape for inference: the curriculum stage the checkpoint reached (its final K
 * and R once training ran through the curriculum), with overrides. As in the reference's
 * eval, R follows K unless the run fixed R or `opts.r` is given.
 */
export function inferenceShape(
  meta: LotusMeta,
  epoch: number,
  opts: ShapeOverrides = {},
): { K: number; R: number; c: number } {
  const t = meta.train;
  if (t.mode === "cot" || t.mode === "nocot") return { K: 0, R: 0, c: t.c };
  const reached = stageShape(t, stageOf(t, epoch));
  const K = opts.k ?? reached.k;
  const R = opts.r ?? (opts.k !== undefined && t.r === null ? K : reached.r);
  return { K, R, c: t.c };
}

/**
 * The schedule of a run, in one place: the curriculum (which K and R each epoch trains at, and
 * which shape a checkpoint answers with), the learning rate at each step, and the data order
 * of each epoch. Pure functions of a {@linkcode TrainConfig}: training, inference and export
 * all read the curriculum from here.
 *
 * @example
 * ```ts
 * import { TrainConfigSchema } from "../model/config.ts";
 * import { stageOf, stageShape } from "./schedule.ts";
 * const cfg = TrainConfigSchema.parse({ k: 3, c: 12 });
 * // The reference's curriculum: stage s = epoch, K = R = s, up to K.
 * console.assert(stageOf(cfg, 1) === 1 && stageShape(cfg, stageOf(cfg, 5)).k === 3);
 * ```
 *
 * @module
 */

import type { LotusMeta } from "../model/checkpoint.ts";
import type { TrainConfig } from "../model/config.ts";
import { Rng } from "../base/rng.ts";

/**
 * K and R at curriculum stage `stage` (the reference: K = R = min(s, max)). With a fixed
 * `r`, R is that value whenever K > 0. Baselines (cot, nocot) have no latents: K = R = 0.
 */
export function stageShape(cfg: TrainConfig, stage: number): { k: number; r: number } {
  if (cfg.mode === "cot" || cfg.mode === "nocot") return { k: 0, r: 0 };
  const k = Math.min(stage, cfg.k);
  const r = cfg.r === null ? k : (k === 0 ? 0 : cfg.r);
  return { k, r };
}

/**
 * The curriculum stage of a step (0-based `step`, in epoch `epoch`): min(step /
 * stepsPerStage, K) when stages are counted in steps, else min(epoch / epochsPerStage, K); K
 * when the curriculum is off. Baselines are always at their only stage.
 */
export function stageOf(cfg: TrainConfig, epoch: number, step = 0): number {
  if (cfg.stepsPerStage > 0) return Math.min(Math.floor(step / cfg.stepsPerStage), cfg.k);
  if (cfg.epochsPerStage === 0) return cfg.k;
  return Math.min(Math.floor(epoch / cfg.epochsPerStage), cfg.k);
}

/** Whether `stage` is the run's last: K for LOTUS; the baselines have only one. */
export function isFinalStage(cfg: TrainConfig, stage: number): boolean {
  return cfg.mode === "cot" || cfg.mode === "nocot" || stage >= cfg.k;
}

/** The first step of the final stage (K), for a run of `stepsPerEpoch` steps an epoch. */
export function finalStageStart(cfg: TrainConfig, stepsPerEpoch: number): number {
  if (cfg.mode === "cot" || cfg.mode === "nocot") return 0;
  if (cfg.stepsPerStage > 0) return cfg.stepsPerStage * cfg.k;
  return cfg.epochsPerStage * cfg.k * stepsPerEpoch;
}

/**
 * The run's length in optimiser steps: the final stage's start plus `finalStageSteps` when it
 * is set, else `steps`, else `epochs` epochs.
 */
export function totalSteps(cfg: TrainConfig, stepsPerEpoch: number): number {
  if (cfg.finalStageSteps !== null) {
    return finalStageStart(cfg, stepsPerEpoch) + cfg.finalStageSteps;
  }
  return cfg.steps ?? cfg.epochs * stepsPerEpoch;
}

/**
 * Learning rate at `step` (0-based) in curriculum stage `stage`: the base rate is `lrLatent`
 * from stage 1 on when set, else `lr`; linear warmup, then constant or cosine to minLrRatio.
 */
export function lrAt(cfg: TrainConfig, step: number, total: number, stage = 0): number {
  const lr = stage >= 1 && cfg.lrLatent !== null ? cfg.lrLatent : cfg.lr;
  if (cfg.warmupSteps > 0 && step < cfg.warmupSteps) return lr * (step + 1) / cfg.warmupSteps;
  if (cfg.schedule === "constant") return lr;
  const span = Math.max(1, total - cfg.warmupSteps);
  const t = Math.min(1, (step - cfg.warmupSteps) / span);
  const min = lr * cfg.minLrRatio;
  return min + (lr - min) * 0.5 * (1 + Math.cos(Math.PI * t));
}

/** The example order of an epoch: a permutation of 0..n-1 seeded by `seed` and `epoch`. */
export function epochOrder(n: number, seed: number, epoch: number): Int32Array {
  const idx = new Int32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  new Rng(seed, epoch).shuffle(idx);
  return idx;
}

/** LOTUS shape overrides (the fields of an answer request that bear on the shape). */
export interface ShapeOverrides {
  /** Latent blocks; default: the checkpoint's K. */
  k?: number;
  /**
   * Loop iterations; default: the checkpoint's R, or `k` when `k` is given and the run tied R
   * to K.
   */
  r?: number;
}

/** A LOTUS shape: K latent blocks of c slots, R loop iterations (all 0 for the baselines). */
export interface LotusShape {
  /** Latent blocks. */
  K: number;
  /** Loop iterations. */
  R: number;
  /** Latent slots per block. */
  c: number;
}

/** Where a run stands: its epoch, and the optimiser steps it has taken. */
export interface RunProgress {
  /** The epoch of the last step taken (0-based). */
  epoch: number;
  /** Optimiser steps taken. */
  step: number;
}

/**
 * The LOTUS shape for inference: the curriculum stage of the last step the checkpoint trained
 * (its final K and R once training ran through the curriculum), with overrides. As in the
 * reference's eval, R follows K unless the run fixed R or `opts.r` is given.
 */
export function inferenceShape(
  meta: LotusMeta,
  at: RunProgress,
  opts: ShapeOverrides = {},
): LotusShape {
  const t = meta.train;
  if (t.mode === "cot" || t.mode === "nocot") return { K: 0, R: 0, c: t.c };
  const reached = stageShape(t, stageOf(t, at.epoch, Math.max(0, at.step - 1)));
  return withShapeOverrides(meta, { K: reached.k, R: reached.r, c: t.c }, opts);
}

/**
 * A reached LOTUS shape (a session's `shape`) with an answer request's overrides, as
 * {@linkcode inferenceShape} applies them: K is `opts.k` when given; R is `opts.r` when given,
 * else K when `opts.k` is given and the run did not fix R (R follows K), else the reached R.
 * Baselines (explicit CoT, no CoT) have no latent loop: K = R = 0.
 */
export function withShapeOverrides(
  meta: Pick<LotusMeta, "train">,
  reached: LotusShape,
  opts: ShapeOverrides = {},
): LotusShape {
  const t = meta.train;
  if (t.mode === "cot" || t.mode === "nocot") return { K: 0, R: 0, c: reached.c };
  const K = opts.k ?? reached.K;
  const R = opts.r ?? (opts.k !== undefined && t.r === null ? K : reached.R);
  return { K, R, c: reached.c };
}

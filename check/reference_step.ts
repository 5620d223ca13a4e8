/**
 * One LOTUS training step at the reference's shape (GPT-2 small by default, K = R = 6, c = 13,
 * a 60-token question, an 8-token answer, batch 64; random tokens and seeded random weights),
 * as the trainer runs it: zero the gradients, forward and backward through every pass, the
 * global-norm clip and AdamW. Shared by the GPU benchmark, the op profile and the emulated
 * engine's tests.
 *
 * @module
 */
import type { Engine } from "../engine/ffi.ts";
import { presetConfig, type PresetName, TrainConfigSchema } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { adamwOf, Model } from "../model/model.ts";
import { type LotusOptions, LotusRunner, type StepLosses } from "../train/step.ts";
import { lotusBatch, suffixOf } from "../train/batch.ts";
import type { Rng } from "../base/rng.ts";
import { lotusPositions, randomExample, specialsOf } from "./measure.ts";

/** The shape of the reference step. */
export interface ReferenceShape {
  preset: PresetName;
  V: number;
  B: number;
  Q: number;
  A: number;
  K: number;
  c: number;
}

/** A prepared step and what it holds on the engine. */
export interface ReferenceStep {
  /** Runs one step; returns the runner's losses. */
  step(): StepLosses;
  /** Token positions forwarded per example. */
  positions: number;
  /** The backbone's parameter count. */
  params: number;
  /** Frees the runner and the model. */
  free(): void;
}

/**
 * Builds the model (weights `opts.params`, else seeded with 0), a batch of random examples drawn
 * from `draw`, and a runner with recomputation on, as training on CUDA defaults to.
 * `maxGraphs: 0` launches every op from the host (no CUDA graphs).
 */
export function referenceStep(
  eng: Engine,
  s: ReferenceShape,
  draw: Rng,
  opts: { maxGraphs?: number; params?: Float32Array } = {},
): ReferenceStep {
  const mcfg = presetConfig(s.preset, s.V);
  const layout = paramLayout(mcfg);
  const sp = specialsOf(s.V);
  const cfg = TrainConfigSchema.parse({ mode: "lotus", k: s.K, c: s.c, batch: s.B });
  const model = new Model(eng, mcfg, opts.params ?? initParams(layout, mcfg, 0), true);
  const shape = { question: s.Q, answer: s.A, K: s.K, c: s.c };
  const exs = Array.from({ length: s.B }, (_, i) => randomExample(draw, s.V, shape, i));
  const S = suffixOf(exs[0], s.K, sp.eot).length;
  const R = s.K;
  const runner = new LotusRunner(
    model,
    { B: s.B, P: s.Q, K: s.K, c: s.c, R, S, auxT: 0, recompute: true, maxGraphs: opts.maxGraphs },
    true,
  );
  const batch = lotusBatch(exs, sp, { K: s.K, R, c: s.c });
  const lopts: LotusOptions = {
    lambda: cfg.lambda,
    auxWeight: 0,
    stepLoss: cfg.stepLoss,
    injection: "add",
  };
  return {
    step: () => {
      model.zeroGrad();
      const l = runner.step(batch, lopts, exs);
      model.optimizerStep(adamwOf(cfg, 1e-4));
      return l;
    },
    positions: lotusPositions(s.Q, s.K, s.c, R, S),
    params: layout.mainTotal,
    free: () => {
      runner.free();
      model.free();
    },
  };
}

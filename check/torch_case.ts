/**
 * The torch case of the GPU check: a checkpoint, one LOTUS batch and one plain batch, and
 * each engine's losses and logits on them, written so that check/torch_reference.py compare
 * can check them exactly (docs/gpu-check.md).
 *
 * @module
 */
import type { Engine } from "../engine/ffi.ts";
import {
  perturbedParams,
  randomExamples,
  specialsFor,
  STEP_SPECS,
  type StepSpec,
} from "./parity.ts";
import { lotusBatch } from "../train/batch.ts";
import { LotusRunner } from "../train/step.ts";
import { Model } from "../model/model.ts";
import { Arena, Chunk, Scratch } from "../model/stack.ts";
import { Rng } from "../base/rng.ts";
import { TrainConfigSchema } from "../model/config.ts";
import { freshTrainState, saveCheckpoint } from "../model/checkpoint.ts";
import { type Tensor, writeSafetensors } from "../base/safetensors.ts";

/** A plain (non-looped) forward's logits [B*T, V], positions 0..T-1, no padding. */
function plainLogits(model: Model, ids: Int32Array, B: number, T: number): Float32Array {
  const eng = model.eng, C = model.cfg.dModel, V = model.cfg.vocabSize;
  const arena = new Arena(eng);
  try {
    const sc = new Scratch(arena, B * T, C, false, model.main.shape);
    const ch = new Chunk(arena, model.main.shape, B, T, 0, false);
    const pid = arena.i32(B * T), ppos = arena.i32(B * T), logits = arena.f32(B * T * V);
    eng.upload(pid, ids);
    eng.upload(ppos, Int32Array.from({ length: B * T }, (_, i) => i % T));
    eng.embedFwd(ch.x[0], pid, ppos, model.wte, model.wpe, B * T, C);
    model.main.forward(ch, sc, B, T, null, null, null, ppos);
    eng.matmulFwd(logits, ch.h, model.head, null, B * T, C, V);
    const out = new Float32Array(B * T * V);
    eng.download(out, logits);
    return out;
  } finally {
    arena.free();
  }
}

/**
 * Writes the torch case into `dir`: `checkpoint/` (the step spec's model with perturbed
 * parameters) and `batch.safetensors` (the LOTUS batch's arrays, a plain batch `plain_ids`,
 * and for each named engine `deno.<name>.losses` [loss, ans, step], `.suffix_logits` and
 * `.plain_logits`; the metadata has K, R, c, lambda, injection, step_loss and the engines).
 */
export async function writeTorchCase(
  dir: string,
  engines: [string, Engine][],
  stepSpec: StepSpec = STEP_SPECS[0],
): Promise<void> {
  // The reference has no aux decoder: its loss is answer + lambda * step.
  const spec = { ...stepSpec, opts: { ...stepSpec.opts, auxWeight: 0 } };
  const cfg = spec.model, V = cfg.vocabSize;
  const sp = specialsFor(V);
  const params = perturbedParams(cfg, 21);
  const exs = randomExamples(spec.B, V, 21);
  const b = lotusBatch(exs, sp, spec);
  const train = TrainConfigSchema.parse({
    k: spec.K,
    c: spec.c,
    r: spec.R,
    lambda: spec.opts.lambda,
    injection: spec.opts.injection,
    stepLoss: spec.opts.stepLoss,
  });
  await saveCheckpoint(`${dir}/checkpoint`, {
    meta: {
      model: cfg,
      train,
      special: sp,
      data: { dir: "", cot: "math", k: spec.K, c: spec.c },
      preset: "gpu-check",
    },
    params,
    state: freshTrainState(),
    tokenizerJson: '{"note": "random-token test case: no tokenizer"}\n',
  });
  const PB = 3, PT = 20;
  const rng = new Rng(5);
  const plainIds = Int32Array.from({ length: PB * PT }, () => rng.below(V - 4));
  const i32 = (data: Int32Array, shape: number[]): Tensor => ({ dtype: "I32", shape, data });
  const u8 = (data: Uint8Array, shape: number[]): Tensor => ({ dtype: "U8", shape, data });
  const { B, P, L, S } = b;
  const tensors: Record<string, Tensor> = {
    prefix_ids: i32(b.prefixIds, [B, P]),
    prefix_pos: i32(b.prefixPos, [B, P]),
    prefix_valid: u8(b.prefixValid, [B, P]),
    loop_ids: i32(b.loopIds, [B, L]),
    loop_ids_replace: i32(b.loopIdsReplace, [B, L]),
    loop_pos: i32(b.loopPos, [B, L]),
    loop_valid: u8(b.loopValid, [B, P + L]),
    suffix_ids: i32(b.suffixIds, [B, S]),
    suffix_pos: i32(b.suffixPos, [B, S]),
    suffix_valid: u8(b.suffixValid, [B, P + L + S]),
    suffix_targets: i32(b.suffixTargets, [B, S]),
    step_targets: i32(b.stepTargets, [B, L]),
    step_block: i32(b.stepBlock, [B, L]),
    plain_ids: i32(plainIds, [PB, PT]),
  };
  for (const [name, eng] of engines) {
    const model = new Model(eng, cfg, params, false);
    const runner = new LotusRunner(
      model,
      { B, P, K: spec.K, c: spec.c, R: spec.R, S, auxT: 0 },
      false,
    );
    try {
      const l = runner.step(b, spec.opts, exs);
      const logits = new Float32Array(B * S * V);
      eng.download(logits, runner.logits);
      tensors[`deno.${name}.losses`] = {
        dtype: "F64",
        shape: [3],
        data: Float64Array.of(l.loss, l.ans, l.step),
      };
      tensors[`deno.${name}.suffix_logits`] = { dtype: "F32", shape: [B, S, V], data: logits };
      tensors[`deno.${name}.plain_logits`] = {
        dtype: "F32",
        shape: [PB, PT, V],
        data: plainLogits(model, plainIds, PB, PT),
      };
    } finally {
      runner.free();
      model.free();
    }
  }
  await writeSafetensors(`${dir}/batch.safetensors`, tensors, {
    K: String(spec.K),
    R: String(spec.R),
    c: String(spec.c),
    lambda: String(spec.opts.lambda),
    injection: spec.opts.injection,
    step_loss: spec.opts.stepLoss,
    engines: engines.map(([n]) => n).join(","),
  });
}

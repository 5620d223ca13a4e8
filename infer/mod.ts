/**
 * Answering questions from a checkpoint: a session on the native engines (or on
 * onnxruntime-node over an export), the answers with their phase timings, and the latent
 * readout of LOTUS checkpoints.
 *
 * @example
 * ```ts ignore
 * import { openInference } from "./mod.ts";
 * const s = await openInference("out/runs/default");
 * const r = await s.answer(["Ann has 2 pens and buys 3 more. How many pens does she have?"]);
 * console.log(r.answers[0].answer, r.timings);
 * await s.close();
 * ```
 *
 * @module
 */
export { openInference, type OpenInferenceOptions } from "./inference.ts";
export {
  type Answer,
  type AnswerBatch,
  type AnswerOptions,
  DEFAULT_INFERENCE_BACKEND,
  EnvPermissionError,
  type InferenceBackend,
  type InferenceSession,
  OnnxRuntimeError,
  SessionClosedError,
} from "./session.ts";
export {
  bestReadings,
  type BlockScore,
  readoutIds,
  readoutRows,
  readoutTexts,
  scoreReadout,
  topK,
} from "./readout.ts";

// The errors openInference throws.
export { CheckpointError } from "../model/checkpoint.ts";
export { EngineError } from "../engine/ffi.ts";
export { ExportError } from "../export/export.ts";
export { StagingError } from "../base/staging.ts";

// Types that the signatures above use.
export type { Precision } from "../engine/ffi.ts";
export type { BackendName } from "../engine/types.ts";
export type { LotusMeta } from "../model/checkpoint.ts";
export type { Arch, Mode, ModelConfig, RopeScaling, TrainConfig } from "../model/config.ts";
export type { Timings } from "../model/generate.ts";
export type { SpecialIds, Tokenizer } from "../pipeline/tokenizer.ts";
export type { LotusShape } from "../train/schedule.ts";

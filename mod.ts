/**
 * lotus-deno: turn grade-school math problems into latent chain-of-thought training data,
 * and train looped Transformers on it (LOTUS).
 *
 * @module
 */
export * from "./pipeline/types.ts";
export * from "./pipeline/safetensors.ts";
export * from "./pipeline/atomic.ts";

// Pipeline: reading, segmentation and validation (docs/pipeline.md).
export {
  detectFormat,
  type Format,
  FormatError,
  FORMATS,
  InputError,
  type ReadOptions,
  readProblems,
} from "./pipeline/read.ts";
export { segment, type SegmentOptions } from "./pipeline/segment.ts";
export {
  type CotForm,
  type ReasonInfo,
  REASONS,
  statusOf,
  validate,
  type ValidateOptions,
} from "./pipeline/validate.ts";
export {
  type Agreement,
  compareStated,
  evaluateExpression,
  ExpressionError,
} from "./pipeline/arith.ts";
export { answerNumber, numbersInText, readNumber, type WrittenNumber } from "./pipeline/numbers.ts";
export { type AnnotationScan, scanAnnotations } from "./pipeline/annotations.ts";
export { splitSentences } from "./pipeline/sentences.ts";

// Dataset pipeline: tokenization, packing, writing (pipe-build).
export * from "./pipeline/tokenizer.ts";
export * from "./pipeline/bpe_fit.ts";
export * from "./pipeline/pack.ts";
export * from "./pipeline/shard.ts";
export * from "./pipeline/manifest.ts";
export * from "./pipeline/writer.ts";
export * from "./pipeline/build.ts";
export * from "./pipeline/default_data.ts";
export * from "./pipeline/summary.ts";

// ---- native engine (train/engine): building the library, and its FFI binding ----
export { Engine, EngineError, LE_ABI_VERSION, openEngine } from "./train/engine/ffi.ts";
export type { EngineOptions, Ptr } from "./train/engine/ffi.ts";
export { buildEngine, EngineBuildError, planEngineBuild } from "./train/engine/build.ts";
export type {
  Backend as EngineBackend,
  BuildEngineOptions,
  EngineBuildPlan,
} from "./train/engine/build.ts";

// ---- training: configuration, model, the LOTUS step, the trainer, checkpoints, inference ----
export * from "./train/config.ts";
export * from "./train/params.ts";
export * from "./train/batch.ts";
export * from "./train/data.ts";
export * from "./train/stack.ts";
export * from "./train/model.ts";
export * from "./train/lotus.ts";
export * from "./train/generate.ts";
export * from "./train/checkpoint.ts";
export * from "./train/trainer.ts";
export * from "./train/inference.ts";
export * from "./train/readout.ts";
export * from "./train/answer.ts";

// ---- evaluation (eval/): readers, scoring, latency, latent readout, pictures, report ----
export * from "./eval/items.ts";
export * from "./eval/alternatives.ts";
export * from "./eval/evaluate.ts";
export * from "./eval/train_log.ts";
export * from "./eval/svg.ts";
export * from "./eval/report.ts";

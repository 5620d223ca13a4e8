/**
 * lotus-deno: turn grade-school math problems into latent chain-of-thought training data, and
 * train looped Transformers on it with LOTUS ("Bridging the Gap Between Latent and Explicit
 * Reasoning with Looped Transformers") on a native engine behind Deno FFI.
 *
 * This module exports the stages and their option and result types. Each layer has its own
 * entry point with the rest of its API: `./pipeline/mod.ts`, `./model/mod.ts`,
 * `./train/mod.ts`, `./infer/mod.ts`, `./export/mod.ts`, `./eval/mod.ts`, `./engine/mod.ts`
 * and `./base/mod.ts` (the subpaths `./pipeline`, `./model`, … of deno.json's exports).
 *
 * @example Build a dataset, train 20 steps of LOTUS alone, answer a question
 * ```ts ignore
 * import { buildDataset, DEFAULT_BUILD, defaultSplits, openInference, train } from "./mod.ts";
 *
 * await buildDataset({ ...DEFAULT_BUILD, out: "out/data/lib", splits: defaultSplits() });
 * // recipe "none": no explicit-CoT start first (the default recipe trains one, 8 epochs).
 * const run = await train({
 *   data: "out/data/lib",
 *   out: "out/runs/lib",
 *   recipe: "none",
 *   train: { steps: 20 },
 * });
 * const session = await openInference(run.checkpoint);
 * const { answers } = await session.answer(["Mia buys 3 packs of 4 pens. How many pens?"]);
 * console.log(answers[0].text);
 * await session.close();
 * ```
 *
 * @module
 */

// The dataset pipeline.
export type { Problem, SegmentedRecord, ValidatedRecord } from "./pipeline/types.ts";
export { FormatError, InputError, type ReadOptions, readProblems } from "./pipeline/read.ts";
export { segment, type SegmentOptions } from "./pipeline/segment.ts";
export { type CotForm, validate, type ValidateOptions } from "./pipeline/validate.ts";
export {
  findSpecialTokenText,
  findSpecialTokenTexts,
  fitCompactTokenizer,
  gpt2Tokenizer,
  type Tokenizer,
  tokenizerFromFile,
} from "./pipeline/tokenizer.ts";
export {
  buildDataset,
  BuildError,
  type BuildOptions,
  type BuildSummary,
} from "./pipeline/build.ts";
export { type Manifest, readManifest } from "./pipeline/manifest.ts";
export { DEFAULT_BUILD, defaultSplits } from "./pipeline/default_data.ts";

// Models and checkpoints.
export {
  type Arch,
  type ModelConfig,
  type Preset,
  type PresetName,
  PRESETS,
  type RopeScaling,
  type TrainConfig,
} from "./model/config.ts";
export {
  type CheckpointData,
  loadCheckpoint,
  type LoadedCheckpoint,
  type LotusMeta,
} from "./model/checkpoint.ts";

// Training.
export { train } from "./train/recipe.ts";
export type { TrainOptions, TrainPhase, TrainResult } from "./train/types.ts";
export { resolveTrainConfig, TrainConfigError } from "./train/options.ts";

// Inference, export and evaluation.
export { openInference, type OpenInferenceOptions } from "./infer/inference.ts";
export type {
  Answer,
  AnswerBatch,
  AnswerOptions,
  InferenceBackend,
  InferenceSession,
} from "./infer/session.ts";
export { exportCheckpoint, type ExportOptions, type ExportResult } from "./export/export.ts";
export { checkExport } from "./export/export_check.ts";
export { type EvalResult, type EvalRunOptions, EvalStopped, runEval } from "./eval/evaluate.ts";
export { type EvalItem, loadEvalItems } from "./eval/items.ts";
export { EvalOutputError, writeEvalOutputs } from "./eval/report.ts";

// The errors the stages throw, each with a message that names the file or option at fault.
export { ManifestError } from "./pipeline/manifest.ts";
export { DatasetError } from "./pipeline/shard.ts";
export { TokenizerError } from "./pipeline/tokenizer.ts";
export { BuildStopped, WriteError } from "./pipeline/writer.ts";
export { CheckpointError } from "./model/checkpoint.ts";
export { HfLlamaError } from "./model/hf_llama.ts";
export { NonFiniteError } from "./train/trainer.ts";
export { TrainLogError } from "./train/run_log.ts";
export { StagingError } from "./base/staging.ts";
export { ExportError } from "./export/export.ts";
export { EngineError } from "./engine/ffi.ts";
export { EnvPermissionError, OnnxRuntimeError, SessionClosedError } from "./infer/session.ts";

// The native engine.
export type { BackendName } from "./engine/types.ts";
export { type Engine, openEngine, type Precision } from "./engine/ffi.ts";
export { selectEngine } from "./engine/backend.ts";
export { buildEngine, EngineBuildError } from "./engine/build.ts";

// Types that the signatures above use.
export type { SelectEngineOptions } from "./engine/backend.ts";
export type { BuildEngineOptions } from "./engine/build.ts";
export type { EngineOptions, Ptr } from "./engine/ffi.ts";
export type { StepKind } from "./eval/alternatives.ts";
export type {
  BlockReadout,
  ExampleResult,
  ReadoutSummary,
  RunSummary,
  StepBucket,
} from "./eval/evaluate.ts";
export type { EvalFormat, EvalReadOptions } from "./eval/items.ts";
export type { EvalProvenance, ReportFiles, ReportOptions } from "./eval/report.ts";
export type { ExportFormat } from "./export/export.ts";
export type { LotusJson } from "./export/hf_files.ts";
export type { CheckpointForUse, LoadCheckpointOptions, TrainState } from "./model/checkpoint.ts";
export type { Mode } from "./model/config.ts";
export type { Timings } from "./model/generate.ts";
export type { BuildHooks, BuildProgress, SkippedRecord, SplitSpec } from "./pipeline/build.ts";
export type {
  AugmentInfo,
  ExcludeInfo,
  ShardInfo,
  SourceInfo,
  SplitCounts,
  SplitInfo,
  SyntheticInfo,
  TensorInfo,
  TokenCounts,
} from "./pipeline/manifest.ts";
export type { StepLengthStats } from "./pipeline/step_lengths.ts";
export type { LongStep } from "./pipeline/pack.ts";
export type { VerifyMode } from "./pipeline/shard.ts";
export type { Format } from "./pipeline/read/detect.ts";
export type { InputReason } from "./pipeline/read/input_error.ts";
export type { SplitExtras } from "./pipeline/split_source.ts";
export type { Family, SyntheticOptions } from "./pipeline/synthetic.ts";
export type { CompactOptions, SpecialIds, SpecialTokenText } from "./pipeline/tokenizer.ts";
export type { MathStep, SourceRef, Validation, ValidationStatus } from "./pipeline/types.ts";
export type { DatasetShape, RecipeName } from "./train/options.ts";
export type { LogRecord } from "./train/run_log.ts";
export type { LotusShape } from "./train/schedule.ts";

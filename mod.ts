/**
 * lotus-deno: turn grade-school math problems into latent chain-of-thought training data,
 * and train looped Transformers on it (LOTUS).
 *
 * @module
 */
export * from "./pipeline/types.ts";
export * from "./base/safetensors.ts";
export * from "./base/atomic.ts";

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

// ---- native engine (engine): building the library, and its FFI binding ----
export { Engine, EngineError, LE_ABI_VERSION, openEngine } from "./engine/ffi.ts";
export type { EngineOptions, Ptr } from "./engine/ffi.ts";
export { buildEngine, EngineBuildError, planEngineBuild } from "./engine/build.ts";
export type {
  Backend as EngineBackend,
  BuildEngineOptions,
  EngineBuildPlan,
} from "./engine/build.ts";

// ---- CUDA engine: choosing a backend, the driver probe, precision, engine parity checks ----
export { type BackendName, selectEngine, type SelectEngineOptions } from "./engine/backend.ts";
export { cudaMemInfo, type CudaProbe, probeCuda } from "./engine/cuda_probe.ts";
export { type Precision, PRECISION_MODES } from "./engine/ffi.ts";
/** Engine parity checks (what the GPU check runs): `parity.compareOps(test, ref, "bf16")`. */
export * as parity from "./check/parity.ts";

// ---- training: configuration, model, the LOTUS step, the trainer, checkpoints, inference ----
export * from "./model/config.ts";
export * from "./model/params.ts";
export * from "./train/batch.ts";
export * from "./train/dataset.ts";
export * from "./model/stack.ts";
export * from "./model/model.ts";
export * from "./train/step.ts";
export * from "./model/generate.ts";
export * from "./model/checkpoint.ts";
export * from "./train/trainer.ts";
export * from "./infer/inference.ts";
export * from "./infer/readout.ts";
export * from "./pipeline/answer.ts";

// Export: Hugging Face and ONNX directories from a checkpoint (docs/export.md). The ONNX
// inference backend itself (infer/onnx_session.ts) is not re-exported here: it imports
// onnxruntime-node, which importing mod.ts should not load; reach it through
// openInference(dir, { backend: "onnx" }) in infer/inference.ts.
export {
  checkpointFingerprint,
  exportCheckpoint,
  ExportError,
  type ExportFormat,
  type ExportOptions,
  type ExportResult,
  readLotusJson,
} from "./export/export.ts";
export { checkExport, gpt2TensorShapes } from "./export/export_check.ts";
export { type LotusJson, LotusJsonSchema, ONNX_FILES } from "./export/hf_files.ts";
export {
  gpt2Graph,
  gpt2Weights,
  type GraphInput,
  ONNX_OPSET,
  WEIGHTS_FILE,
} from "./export/onnx_gpt2.ts";
export { type Attr, type Dim, GraphBuilder, WeightFile } from "./export/onnx_builder.ts";
export {
  AttributeType,
  DataType,
  decodeModel,
  encodeModel,
  type OnnxAttribute,
  type OnnxGraph,
  type OnnxModel,
  type OnnxNode,
  type OnnxTensor,
  type OnnxValueInfo,
} from "./export/onnx_proto.ts";

// Synthetic data and augmentation (docs/pipeline.md, "Synthetic problems" and "Augmentation").
export {
  FAMILIES,
  type Family,
  generate,
  generateRecords,
  MAX_STEPS,
  otherFamilies,
  type ResolvedSyntheticOptions,
  resolveSyntheticOptions,
  synthesize,
  SyntheticGenerationError,
  type SyntheticOptions,
  SyntheticOptionsError,
  type SyntheticRecord,
} from "./pipeline/synthetic.ts";
export { hashString, Rng } from "./base/rng.ts";
export {
  augment,
  AUGMENT_REASONS,
  type AugmentOptions,
  AugmentOptionsError,
  type AugmentOutcome,
  augmentProblem,
  type AugmentReason,
  AugmentReport,
  type AugmentSummary,
  verifyVariant,
} from "./pipeline/augment.ts";
export {
  excludeIndex,
  type StreamAugmentOptions,
  withVariants,
} from "./pipeline/augment_stream.ts";
export {
  estimateWithExtras,
  openSplitSource,
  type SourceReadOptions,
  type SplitExtras,
  type SplitExtrasInfo,
  type SplitSource,
} from "./pipeline/split_source.ts";
export {
  NEAR_COPY_THRESHOLD,
  type Nearest,
  NgramIndex,
  type NgramOptions,
  ngrams,
  words,
} from "./pipeline/overlap.ts";

// ---- evaluation (eval/): readers, scoring, latency, latent readout, pictures, report ----
export * from "./eval/items.ts";
export * from "./eval/alternatives.ts";
export * from "./eval/evaluate.ts";
export * from "./train/run_log.ts";
export * from "./eval/svg.ts";
export * from "./eval/report.ts";

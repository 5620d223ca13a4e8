/**
 * The dataset pipeline: read grade-school math problems (GSM8K JSON lines and Parquet, iCoT
 * text, Coconut JSON, natural-language JSON lines, CSV), segment each chain of thought into
 * per-latent gold steps in math and natural-language forms, validate them with mathjs,
 * generate and augment problems, tokenize, pack into padded K-block tensors, and write a
 * dataset directory (manifest, safetensors shards, records, report). docs/pipeline.md and
 * docs/dataset-format.md describe each stage and the files.
 *
 * @example
 * ```ts ignore
 * import { readProblems, segment, validate } from "./mod.ts";
 * for await (const p of readProblems("fixtures/pipeline/gsm8k.jsonl")) {
 *   const r = validate(segment(p), { cot: "math" });
 *   console.log(r.id, r.validation.status, r.math.map((s) => s.text));
 * }
 * ```
 *
 * @module
 */
export type {
  MathStep,
  Problem,
  SegmentedRecord,
  SourceRef,
  ValidatedRecord,
  Validation,
  ValidationStatus,
} from "./types.ts";

// Reading, segmentation and validation.
export {
  detectFormat,
  type Format,
  FormatError,
  FORMATS,
  InputError,
  type InputReason,
  type ReadOptions,
  readProblems,
} from "./read.ts";
export {
  DEFAULT_MAX_COT_STEPS,
  DEFAULT_MAX_FIELD_BYTES,
  fieldSizeError,
  stepCountError,
} from "./limits.ts";
export { segment, type SegmentOptions } from "./segment.ts";
export {
  type CotForm,
  decidingForm,
  type ReasonInfo,
  REASONS,
  statusOf,
  validate,
  type ValidateOptions,
} from "./validate.ts";
export {
  type Agreement,
  compareStated,
  evaluateExpression,
  ExpressionError,
  MAX_EXACT,
  NoFiniteValueError,
  NumberTooLargeError,
} from "./arith.ts";
export { answerNumber, numbersInText, readNumber, type WrittenNumber } from "./numbers.ts";
export { answersMatch, extractAnswer } from "./answer.ts";
export { type AnnotationScan, scanAnnotations } from "./annotations.ts";
export { splitSentences } from "./sentences.ts";

// Tokenizers.
export {
  type CompactOptions,
  findSpecialTokenText,
  findSpecialTokenTexts,
  fitCompactTokenizer,
  gpt2Tokenizer,
  LOTUS_TOKENS,
  type SpecialIds,
  type SpecialTokenText,
  type Tokenizer,
  TokenizerError,
  tokenizerFromFile,
  tokenizerFromJson,
} from "./tokenizer.ts";

// Packing and the dataset directory.
export {
  IGNORE,
  type LongStep,
  type PackedRecord,
  type PackOptions,
  type PackOutcome,
  packRecord,
} from "./pack.ts";
export {
  blockTargets,
  LONG_STEPS,
  type SlotTargets,
  slotTargets,
  stepTargetWidth,
  supervisedLength,
} from "./step_targets.ts";
export {
  type AugmentInfo,
  type ExcludeInfo,
  type Manifest,
  MANIFEST_FILE,
  ManifestError,
  manifestFiles,
  parseManifest,
  readManifest,
  type ShardInfo,
  type SourceInfo,
  type SplitCounts,
  type SplitInfo,
  type SyntheticInfo,
  type TensorInfo,
  type TokenCounts,
} from "./manifest.ts";
export type { SplitExtras } from "./split_source.ts";
export {
  checkShard,
  DatasetError,
  readDatasetTokenizer,
  readShard,
  readSplitShards,
  SHARD_SHAPES,
  SHARD_TENSORS,
  type ShardContext,
  type ShardData,
  type ShardTensorName,
  VERIFY_MODES,
  type VerifyMode,
} from "./shard.ts";
export {
  buildDataset,
  BuildError,
  type BuildHooks,
  type BuildOptions,
  type BuildProgress,
  type BuildSummary,
  resolveBuildOptions,
  type ResolvedBuildOptions,
  SKIPPED_LISTED,
  type SkippedRecord,
  type SplitSpec,
} from "./build.ts";
export { BuildStopped, WriteError } from "./writer.ts";
export { DEFAULT_BUILD, DEFAULT_OUT, defaultSplits } from "./default_data.ts";
export { formatSummary } from "./summary.ts";
export { nearestRank, StepLengths, type StepLengthStats } from "./step_lengths.ts";

// Synthetic problems and augmentation.
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
} from "./synthetic.ts";
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
} from "./augment.ts";
export { excludeIndex, type StreamAugmentOptions, withVariants } from "./augment_stream.ts";
export { NEAR_COPY_THRESHOLD, type Nearest, NgramIndex, type NgramOptions } from "./overlap.ts";

/**
 * LOTUS training: batches of the method's three regions, the LOTUS step (prefix once, R + 1
 * loop passes, suffix, step and answer losses, the backward through every pass), the
 * curriculum and learning-rate schedule, the run log, and the trainer that ties them to a
 * dataset directory and writes checkpoints.
 *
 * @example
 * ```ts ignore
 * import { train } from "./mod.ts";
 * const r = await train({ data: "out/data/default", out: "out/runs/lib", preset: "tiny" });
 * console.log(r.valAccuracy, r.checkpoint);
 * ```
 *
 * @module
 */
export { NonFiniteError } from "./trainer.ts";
export type { TrainOptions, TrainPhase, TrainResult } from "./types.ts";
export { train } from "./recipe.ts";
export {
  checkSettings,
  curriculumNotes,
  type DatasetShape,
  DEFAULT_COT_START_EPOCHS,
  defaultRecipe,
  LOTUS_FROM_COT_LR_RATIO,
  RECIPE_NAMES,
  recipeSettings,
  resolveTrainConfig,
  resumeTrainConfig,
  TrainConfigError,
} from "./options.ts";
export {
  epochOrder,
  finalStageStart,
  inferenceShape,
  isFinalStage,
  type LotusShape,
  lrAt,
  type ShapeOverrides,
  stageOf,
  stageShape,
  totalSteps,
  withShapeOverrides,
} from "./schedule.ts";
export {
  LOG_COLUMNS,
  type LogRecord,
  readTrainLog,
  runDirOf,
  TrainLogError,
  trainLogPath,
} from "./run_log.ts";
export {
  DataParallel,
  type GradBucket,
  gradBuckets,
  shardRange,
  type World,
  worldFromEnv,
} from "./data_parallel.ts";
export { DatasetError, loadSplit, type LoadSplitOptions, type SplitData } from "./dataset.ts";
export {
  type AuxBatch,
  auxBatch,
  type Example,
  type LotusBatch,
  lotusBatch,
  type PlainBatch,
  plainBatch,
} from "./batch.ts";
export {
  type GradReady,
  type LossDenominators,
  type LotusCapacity,
  type LotusOptions,
  LotusRunner,
  MAX_STEP_GRAPHS,
  PlainRunner,
  type StepLosses,
} from "./step.ts";

// Types that the signatures above use.
export type { Engine, Precision, Ptr } from "../engine/ffi.ts";
export type { BackendName } from "../engine/types.ts";
export type { LotusMeta } from "../model/checkpoint.ts";
export type {
  Arch,
  Mode,
  ModelConfig,
  PresetName,
  RopeScaling,
  TrainConfig,
} from "../model/config.ts";
export type { AdamWStep, Model } from "../model/model.ts";
export type { BlockLayout, ParamLayout, ParamTensor } from "../model/params.ts";
export type { Dropout } from "../model/stack.ts";
export type {
  AugmentInfo,
  ExcludeInfo,
  Manifest,
  ShardInfo,
  SourceInfo,
  SplitCounts,
  SplitInfo,
  SyntheticInfo,
  TensorInfo,
  TokenCounts,
} from "../pipeline/manifest.ts";
export type { VerifyMode } from "../pipeline/shard.ts";
export type { StepLengthStats } from "../pipeline/step_lengths.ts";
export type { LongStep } from "../pipeline/step_targets.ts";
export type { SpecialIds } from "../pipeline/tokenizer.ts";
export type { RecipeName } from "./options.ts";
export type { RunProgress } from "./schedule.ts";

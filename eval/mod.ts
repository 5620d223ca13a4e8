/**
 * Evaluation: test items from any supported file (GSM8K, GSM-Hard, SVAMP, MultiArith, a
 * built dataset), exact-match accuracy, thought-phase and per-token latency, the LOTUS latent
 * readout scored against the gold steps (alternative valid steps included), and the report
 * (CSV, JSON, SVG charts, one HTML page).
 *
 * @example
 * ```ts ignore
 * import { openInference } from "../infer/mod.ts";
 * import { loadEvalItems, runEval } from "./mod.ts";
 * const session = await openInference("out/runs/default");
 * const items = await loadEvalItems("out/data/default", { split: "valid" });
 * const result = await runEval(session, items, { batch: 32 });
 * console.log(result.runs[0].accuracy);
 * await session.close();
 * ```
 *
 * @module
 */
export {
  type BlockReadout,
  type EvalResult,
  type EvalRunOptions,
  EvalStopped,
  type ExampleResult,
  type ReadoutSummary,
  runEval,
  type RunSummary,
  type StepBucket,
} from "./evaluate.ts";
export {
  EVAL_FORMATS,
  type EvalFormat,
  type EvalItem,
  type EvalReadOptions,
  loadEvalItems,
  readEvalItems,
} from "./items.ts";
export {
  checkEvalOut,
  EvalOutputError,
  type EvalProvenance,
  prepareEvalOut,
  type ReportFiles,
  reportHtml,
  type ReportOptions,
  writeEvalOutputs,
} from "./report.ts";
export {
  classifyNlStep,
  classifyStep,
  nlCalculation,
  type NlStepContext,
  type StepContext,
  type StepKind,
  type StepVerdict,
  validNlValue,
} from "./alternatives.ts";
export { accuracySeries, curveNotes, lossSeries } from "./curves.ts";
export {
  type LineChartOptions,
  lineChartSvg,
  type ReadoutBlockView,
  type ReadoutExampleView,
  readoutSvg,
  type Series,
} from "./svg.ts";

// The errors the functions above throw, besides their own.
export { InputError } from "../pipeline/read/input_error.ts";
export { DatasetError } from "../pipeline/shard.ts";
export { ManifestError } from "../pipeline/manifest.ts";
export { StagingError } from "../base/staging.ts";

// Types that the signatures above use.
export type {
  Answer,
  AnswerBatch,
  AnswerOptions,
  InferenceBackend,
  InferenceSession,
} from "../infer/session.ts";
export type { BackendName } from "../engine/types.ts";
export type { LotusMeta } from "../model/checkpoint.ts";
export type { Arch, Mode, ModelConfig, RopeScaling, TrainConfig } from "../model/config.ts";
export type { Timings } from "../model/generate.ts";
export type { Format } from "../pipeline/read/detect.ts";
export type { InputReason } from "../pipeline/read/input_error.ts";
export type { VerifyMode } from "../pipeline/shard.ts";
export type { SpecialIds, Tokenizer } from "../pipeline/tokenizer.ts";
export type { SourceRef } from "../pipeline/types.ts";
export type { LogRecord } from "../train/run_log.ts";
export type { LotusShape } from "../train/schedule.ts";

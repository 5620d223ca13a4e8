/**
 * Export: a checkpoint to a Hugging Face GPT-2 or Llama directory (loadable by transformers and
 * @huggingface/transformers) and/or an ONNX one (the backbone with a key/value cache, for
 * onnxruntime), with the LOTUS settings in lotus.json, and the structural check of an export.
 *
 * @example
 * ```ts ignore
 * import { checkExport, exportCheckpoint } from "./mod.ts";
 * const r = await exportCheckpoint("out/runs/default", "out/export/default", { format: "both" });
 * console.log(r, await checkExport("out/export/default")); // [] when the export is sound
 * ```
 *
 * @module
 */
export {
  checkpointFingerprint,
  exportCheckpoint,
  ExportError,
  type ExportFormat,
  type ExportOptions,
  type ExportResult,
  readLotusJson,
} from "./export.ts";
export { checkExport, checkOnnxWeights, gpt2TensorShapes } from "./export_check.ts";
export { type LotusJson, lotusSummaryIssue, ONNX_FILES } from "./hf_files.ts";

// Types that the signatures above use.
export type { LotusMeta } from "../model/checkpoint.ts";
export type { Arch, Mode, ModelConfig, RopeScaling, TrainConfig } from "../model/config.ts";
export type { SpecialIds } from "../pipeline/tokenizer.ts";

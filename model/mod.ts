/**
 * The model layer that training, inference and export all stand on: the decoder (GPT-2 or
 * Llama architecture) and its configuration, its parameters in engine memory, greedy generation with a key/value
 * cache (the LOTUS thought phase included), and checkpoint files with Hugging Face GPT-2
 * tensor names.
 *
 * @example
 * ```ts
 * import { paramLayout, presetConfig } from "./mod.ts";
 * const cfg = presetConfig("tiny", 512);
 * console.assert(paramLayout(cfg).mainTotal > 100_000);
 * ```
 *
 * @module
 */
export {
  type Arch,
  archOf,
  ARCHS,
  LLAMA32_ROPE_SCALING,
  type LlamaShape,
  llamaShape,
  type Mode,
  type ModelConfig,
  parseModelConfig,
  parseTrainConfig,
  type Preset,
  presetConfig,
  type PresetName,
  PRESETS,
  type RopeScaling,
  type TrainConfig,
} from "./config.ts";
export { HfLlamaError } from "./hf_llama.ts";
export { ropeInvFreq } from "./rope.ts";
export {
  type BlockLayout,
  initParams,
  initSpecialRows,
  type ParamLayout,
  paramLayout,
  type ParamTensor,
} from "./params.ts";
export { adamwOf, type AdamWStep, Model } from "./model.ts";
export {
  type GenerateOptions,
  type Generation,
  Generator,
  type GeneratorCapacity,
  MAX_GRAPHS,
  type Timings,
} from "./generate.ts";
export { GraphCache } from "./graphs.ts";
export {
  type CheckpointData,
  checkpointDirOf,
  CheckpointError,
  type CheckpointFiles,
  type CheckpointForUse,
  loadCheckpoint,
  type LoadCheckpointOptions,
  type LoadedCheckpoint,
  loadHfInit,
  type LotusMeta,
  progressOf,
  readSavedTrainState,
  recoverCheckpoint,
  saveCheckpoint,
  type TrainState,
  trainStateNote,
  type VerifiedCheckpoint,
  verifyCheckpoint,
} from "./checkpoint.ts";

// Types that the signatures above use.
export type { Engine, Ptr } from "../engine/ffi.ts";
export type { BackendName } from "../engine/types.ts";
export type { SpecialIds, Tokenizer } from "../pipeline/tokenizer.ts";
export type {
  Dtype,
  SafetensorsFile,
  SafetensorsHeader,
  Tensor,
  TensorData,
  TensorEntry,
} from "../base/safetensors.ts";

/**
 * lotus-deno: turn grade-school math problems into latent chain-of-thought training data,
 * and train looped Transformers on it (LOTUS).
 *
 * @module
 */
export * from "./pipeline/types.ts";
export * from "./pipeline/safetensors.ts";
export * from "./pipeline/atomic.ts";

// ---- native engine (train/engine): building the library, and its FFI binding ----
export { Engine, EngineError, LE_ABI_VERSION, openEngine } from "./train/engine/ffi.ts";
export type { EngineOptions, Ptr } from "./train/engine/ffi.ts";
export { buildEngine, EngineBuildError, planEngineBuild } from "./train/engine/build.ts";
export type {
  Backend as EngineBackend,
  BuildEngineOptions,
  EngineBuildPlan,
} from "./train/engine/build.ts";

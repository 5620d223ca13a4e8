/**
 * The native engine: a C ABI of coarse operations (embedding, LayerNorm, matmul, attention
 * over a cached prefix, GELU, cross-entropy, AdamW, each with its backward) in two libraries,
 * C++ for the CPU and CUDA for NVIDIA GPUs, built on first use and loaded with Deno FFI. It
 * imports nothing else of the project. docs/engine.md describes the ABI.
 *
 * @example
 * ```ts ignore
 * import { selectEngine } from "./mod.ts";
 * const eng = selectEngine("auto", { threads: 1 }); // CUDA when usable, else the CPU
 * const p = eng.alloc(16);
 * eng.upload(p, new Float32Array([1, 2, 3, 4]));
 * const out = new Float32Array(4);
 * eng.download(out, p);
 * console.log(eng.backend, out);
 * eng.free(p);
 * eng.close();
 * ```
 *
 * @module
 */
export {
  Engine,
  EngineError,
  type EngineOptions,
  LE_ABI_VERSION,
  openEngine,
  type Precision,
  PRECISION_MODES,
  PRECISIONS,
  PRECISIONS_TEXT,
  type Ptr,
} from "./ffi.ts";
export { type BackendName, BACKENDS, MAX_THREADS } from "./types.ts";
export { selectEngine, type SelectEngineOptions } from "./backend.ts";
export {
  buildEngine,
  type BuildEngineOptions,
  EngineBuildError,
  type EngineBuildPlan,
  planEngineBuild,
} from "./build.ts";
export { cudaMemInfo, type CudaProbe, probeCuda } from "./cuda_probe.ts";

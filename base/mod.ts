/**
 * The floor of lotus-deno: file formats and utilities that know nothing of LOTUS. Safetensors
 * files (read and write, numpy-compatible), atomic file writes, directories replaced whole
 * with the leftovers of killed processes cleared (staging.ts), the one seeded random
 * generator every stage uses, and CRC-32.
 *
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "./mod.ts";
 * const bytes = encodeSafetensors({ w: { dtype: "F32", shape: [2], data: Float32Array.of(1, 2) } });
 * console.assert(decodeSafetensors(bytes).tensors.w.shape[0] === 2);
 * ```
 *
 * @module
 */
export {
  type ArrayOf,
  decodeSafetensors,
  type Dtype,
  dtypeBytes,
  encodeSafetensors,
  getTensor,
  readSafetensors,
  readSafetensorsHeader,
  SafetensorsError,
  type SafetensorsFile,
  type SafetensorsHeader,
  type Tensor,
  type TensorData,
  type TensorEntry,
  writeSafetensors,
} from "./safetensors.ts";
export { writeFileAtomic, writeFileAtomicSync } from "./atomic.ts";
export {
  followLink,
  replaceDir,
  splitPath,
  StagingError,
  type SweepResult,
  sweepStale,
  TempLease,
} from "./staging.ts";
export { hashString, Rng } from "./rng.ts";
export { crc32 } from "./crc32.ts";

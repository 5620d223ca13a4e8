/**
 * The floor of lotus-deno: file formats and utilities that know nothing of LOTUS. Safetensors
 * files (read and write, numpy-compatible), atomic file writes, the one seeded random
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
  SafetensorsError,
  type SafetensorsFile,
  type Tensor,
  type TensorData,
  writeSafetensors,
} from "./safetensors.ts";
export { writeFileAtomic, writeFileAtomicSync } from "./atomic.ts";
export { hashString, Rng } from "./rng.ts";
export { crc32 } from "./crc32.ts";

/**
 * The names the engine's callers choose a backend by.
 *
 * @module
 */

/**
 * Where the engine runs: "cpu" (the C++ library), "cuda" (the CUDA library), or "auto"
 * (CUDA when this machine has a usable GPU, else the CPU; see selectEngine in
 * backend.ts). A loaded engine is always "cpu" or "cuda".
 */
export type BackendName = "cpu" | "cuda" | "auto";

/** Every {@linkcode BackendName}, in the order the command lines list them. */
export const BACKENDS: readonly BackendName[] = ["cpu", "cuda", "auto"];

/**
 * The most CPU threads the CPU engine takes (engine_cpu.cpp's `le_set_num_threads` refuses
 * more); the command lines' `--threads` stops there.
 */
export const MAX_THREADS = 4096;

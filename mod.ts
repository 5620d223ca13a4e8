/**
 * lotus-deno: turn grade-school math problems into latent chain-of-thought training data,
 * and train looped Transformers on it (LOTUS).
 *
 * @module
 */
export * from "./pipeline/types.ts";
export * from "./pipeline/safetensors.ts";
export * from "./pipeline/atomic.ts";

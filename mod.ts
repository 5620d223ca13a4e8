/**
 * lotus-deno: turn grade-school math problems into latent chain-of-thought training data,
 * and train looped Transformers on it (LOTUS).
 *
 * @module
 */
export * from "./pipeline/types.ts";
export * from "./pipeline/safetensors.ts";
export * from "./pipeline/atomic.ts";

// Dataset pipeline: tokenization, packing, writing (pipe-build).
export * from "./pipeline/tokenizer.ts";
export * from "./pipeline/bpe_fit.ts";
export * from "./pipeline/pack.ts";
export * from "./pipeline/shard.ts";
export * from "./pipeline/manifest.ts";
export * from "./pipeline/writer.ts";

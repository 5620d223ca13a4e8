/**
 * Helpers for tests that run small models on the CPU engine.
 *
 * @module
 */
import { type Engine, openEngine } from "../engine/ffi.ts";
import { type ModelConfig, ModelConfigSchema } from "../model/config.ts";
import { Rng } from "../base/rng.ts";
import { perturbedParams } from "../check/parity.ts";
import { Model } from "../model/model.ts";
import type { Example } from "../train/batch.ts";
import { LOTUS_TOKENS, type SpecialIds } from "../pipeline/tokenizer.ts";

let shared: Engine | null = null;

/** One CPU engine for the whole test process (built on first use). */
export function cpuEngine(): Engine {
  shared ??= openEngine({ backend: "cpu", threads: 2, quiet: true });
  return shared;
}

/** A tiny model configuration. */
export function tinyConfig(over: Partial<ModelConfig> = {}): ModelConfig {
  return ModelConfigSchema.parse({
    vocabSize: 24,
    maxPositions: 64,
    dModel: 16,
    nHead: 2,
    nLayer: 2,
    auxLayers: 0,
    auxHeads: 2,
    ...over,
  });
}

/**
 * A tiny Llama ({@linkcode tinyConfig} with `over`): grouped-query attention (2 heads, 1 KV head), SwiGLU, and Llama 3 rotary
 * scaling set so that the test's positions meet all three bands (kept, blended, divided).
 */
export function tinyLlamaConfig(over: Partial<ModelConfig> = {}): ModelConfig {
  return tinyConfig({
    arch: "llama",
    nKvHead: 1,
    dFf: 24,
    ropeTheta: 10000,
    ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 16 },
    normEps: 1e-5,
    ...over,
  });
}

/** GPT-2 initialisation, with weights scaled up so that gradients are not tiny. */
export function tinyParams(cfg: ModelConfig, seed: number, scale = 5): Float32Array {
  return perturbedParams(cfg, seed, scale);
}

/** A model on the shared engine. */
export function tinyModel(cfg: ModelConfig, params: Float32Array, training = true): Model {
  return new Model(cpuEngine(), cfg, params, training);
}

/** Special ids for a vocabulary of `v`: the last four ids. */
export function tinySpecials(v: number): SpecialIds {
  return { eos: v - 4, pad: v - 4, bot: v - 3, eot: v - 2, lat: v - 1 };
}

/**
 * A tokenizer.json for a vocabulary of `v` whose special ids are {@linkcode tinySpecials}:
 * one letter per id below v - 4 (BPE without merges), then EOS and the LOTUS tokens.
 */
export function tinyTokenizerJson(v: number): string {
  const n = v - 4, vocab: Record<string, number> = {};
  for (let i = 0; i < n; i++) vocab[String.fromCharCode(0x61 + i)] = i;
  const texts = ["<|endoftext|>", LOTUS_TOKENS.bot, LOTUS_TOKENS.eot, LOTUS_TOKENS.lat];
  const added = texts.map((content, i) => ({
    id: n + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return JSON.stringify({
    version: "1.0",
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    model: { type: "BPE", unk_token: null, vocab, merges: [] },
  });
}

/** Random examples over ids [0, v-4). */
export function randomExamples(n: number, v: number, seed: number, eos: number): Example[] {
  const rng = new Rng(seed);
  const seq = (len: number) => Int32Array.from({ length: len }, () => rng.below(v - 4));
  return Array.from({ length: n }, (_, i) => {
    const steps = Array.from({ length: 1 + rng.below(3) }, () => seq(1 + rng.below(3)));
    const ans = Int32Array.from([...seq(1 + rng.below(2)), eos]);
    return { q: seq(2 + rng.below(4)), steps, ans, index: i };
  });
}

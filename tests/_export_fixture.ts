/**
 * Tiny checkpoints for the export and ONNX tests: a compact tokenizer fitted to a few
 * problems written here, random GPT-2 (or Llama, {@linkcode TINY_LLAMA}) weights scaled up so
 * that greedy decoding does not collapse onto one token, saved as `deno task train` saves
 * them.
 *
 * @module
 */
import { CHECKSUMS_FILE, freshTrainState, saveCheckpoint } from "../model/checkpoint.ts";
import { writeChecksums } from "../base/checksums.ts";
import { type ModelConfig, ModelConfigSchema, TrainConfigSchema } from "../model/config.ts";
import { fitCompactTokenizer, type Tokenizer } from "../pipeline/tokenizer.ts";
import { tinyParams } from "./_tiny.ts";

/** Problems written for these tests. */
export const FIXTURE_QUESTIONS = [
  "Mia bakes 4 trays of 6 rolls. How many rolls?",
  "A bus holds 30 people and 12 get off. How many are left?",
  "Sam reads 7 pages a day for 5 days. How many pages?",
  "Lea has 9 shells and finds 8 more. How many shells?",
];

const TEXTS = [
  ...FIXTURE_QUESTIONS.map((q) => q + "\n"),
  "<<4*6=24>>\n### 24\n",
  "<<30-12=18>>\n### 18\n",
  "<<7*5=35>>\n### 35\n",
  "<<9+8=17>>\n### 17\n",
];

/**
 * The model fields of a tiny Llama (pass as `model`, with `nKvHead` and `tieEmbeddings` to
 * taste): head size 16 with rope_theta 10000 puts the rotary wavelengths at 6.3, 20, 63, ...
 * positions, so that Llama 3's scaling (original length 32, frequency factors 1 and 4) keeps
 * the first, blends the second and divides the rest.
 */
export const TINY_LLAMA: Partial<ModelConfig> = {
  arch: "llama",
  dModel: 64,
  nHead: 4,
  nLayer: 2,
  nKvHead: 2,
  dFf: 96,
  ropeTheta: 10000,
  ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 32 },
  normEps: 1e-5,
  tieEmbeddings: true,
};

/** What kind of tiny checkpoint to make. */
export interface TinyCheckpointOptions {
  mode?: "lotus" | "lotus-aux" | "cot" | "nocot";
  k?: number;
  c?: number;
  r?: number | null;
  injection?: "add" | "replace";
  seed?: number;
  /** Weight scale over GPT-2's initialisation. */
  scale?: number;
  model?: Partial<ModelConfig>;
}

/** Save a tiny checkpoint in `dir`; returns its config and tokenizer. */
export async function tinyCheckpoint(
  dir: string,
  opts: TinyCheckpointOptions = {},
): Promise<{ cfg: ModelConfig; tok: Tokenizer; params: Float32Array }> {
  const tok = fitCompactTokenizer(TEXTS, { maxVocab: 300 });
  const cfg = ModelConfigSchema.parse({
    vocabSize: tok.vocabSize,
    maxPositions: 128,
    dModel: 16,
    nHead: 2,
    nLayer: 2,
    auxLayers: 0,
    auxHeads: 2,
    ...opts.model,
  });
  const k = opts.k ?? 2;
  const train = TrainConfigSchema.parse({
    mode: opts.mode ?? "lotus",
    k,
    c: opts.c ?? 3,
    r: opts.r ?? null,
    injection: opts.injection ?? "add",
    maxNewTokens: 24,
  });
  const params = tinyParams(cfg, opts.seed ?? 3, opts.scale ?? 6);
  await saveCheckpoint(dir, {
    meta: {
      model: cfg,
      train,
      special: tok.special,
      data: { dir: "fixture", cot: "math", k, c: train.c },
      preset: "tiny",
    },
    params,
    // The final curriculum stage: K = R = k.
    state: { ...freshTrainState(), step: 10, epoch: k, rng: 1 },
    tokenizerJson: tok.toJSON(),
  });
  return { cfg, tok, params };
}

/**
 * Record checkpoint `dir`'s files as they are now in its checksums.json, as a save records
 * them: a checkpoint edited by a test then passes the check against the record, and the
 * checks behind it are the ones tested.
 */
export async function recordChecksums(dir: string): Promise<void> {
  const names = [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && e.name !== CHECKSUMS_FILE)
    .map((e) => e.name)
    .sort();
  await writeChecksums(dir, names);
}

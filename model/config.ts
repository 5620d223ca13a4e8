/**
 * Model and training configuration: zod schemas, presets and defaults.
 *
 * Everything a run depends on is in these two plain objects, so a checkpoint's
 * `config.json` describes it completely and `--resume` can check that nothing changed.
 *
 * @module
 */

import { z } from "zod";

/** The backbone's architecture: GPT-2 (the default) or the Llama family (Llama 3.x). */
export type Arch = "gpt2" | "llama";

/** Every {@linkcode Arch}. */
export const ARCHS: readonly Arch[] = ["gpt2", "llama"];

/**
 * Llama 3's rotary frequency scaling (config.json's `rope_scaling` with
 * `rope_type: "llama3"`): long wavelengths are divided by `factor`, short ones kept, and the
 * band between blended.
 */
export interface RopeScaling {
  /** How much longer the context is than the one trained at first. */
  factor: number;
  /** Wavelengths above originalMaxPositions / lowFreqFactor are divided by factor. */
  lowFreqFactor: number;
  /** Wavelengths below originalMaxPositions / highFreqFactor are kept. */
  highFreqFactor: number;
  /** The context length the scaling refers to. */
  originalMaxPositions: number;
}

/** The zod schema of {@linkcode RopeScaling}. */
export const RopeScalingSchema: z.ZodType<RopeScaling> = z.object({
  factor: z.number().positive(),
  lowFreqFactor: z.number().positive(),
  highFreqFactor: z.number().positive(),
  originalMaxPositions: z.number().int().positive(),
}).refine((r) => r.highFreqFactor > r.lowFreqFactor, {
  message: "highFreqFactor must be greater than lowFreqFactor",
  path: ["highFreqFactor"],
});

/**
 * The shape of the decoder (plus the optional LOTUS-aux decoder). The fields from `arch` on
 * matter only to the Llama architecture; a GPT-2 config leaves them out.
 */
export interface ModelConfig {
  /** Vocabulary size, including the added LOTUS tokens. */
  vocabSize: number;
  /** Context length: the size of the learned position table. */
  maxPositions: number;
  /** Width of the residual stream. */
  dModel: number;
  /** Number of attention heads; must divide dModel. */
  nHead: number;
  /** Number of Transformer blocks. */
  nLayer: number;
  /** LOTUS-aux decoder blocks (0 = no auxiliary decoder). Training only; not exported. */
  auxLayers: number;
  /** LOTUS-aux decoder heads (the reference uses 8, or 4 when dModel < 512). */
  auxHeads: number;
  /** The architecture (absent: "gpt2"). */
  arch?: Arch;
  /** Llama: key/value heads (grouped-query attention); must divide nHead. Absent: nHead. */
  nKvHead?: number;
  /** Llama: the MLP's intermediate width (SwiGLU). Absent: 4 * dModel. */
  dFf?: number;
  /** Llama: the rotary base (rope_theta). Absent: 500000. */
  ropeTheta?: number;
  /** Llama: Llama 3's rotary frequency scaling, or null / absent for none. */
  ropeScaling?: RopeScaling | null;
  /** Llama: RMSNorm's epsilon (rms_norm_eps). Absent: 1e-5. */
  normEps?: number;
  /** Llama: the LM head is the token embedding (absent: true); false adds `lm_head.weight`. */
  tieEmbeddings?: boolean;
}

/** The Llama fields of a config with their defaults filled in. */
export interface LlamaShape {
  /** Key/value heads. */
  nKvHead: number;
  /** SwiGLU intermediate width. */
  dFf: number;
  /** Rotary base. */
  ropeTheta: number;
  /** Llama 3 frequency scaling, or null. */
  ropeScaling: RopeScaling | null;
  /** RMSNorm epsilon. */
  normEps: number;
  /** Whether the LM head is the token embedding. */
  tieEmbeddings: boolean;
}

/** The architecture of a config ("gpt2" when the field is absent). */
export function archOf(cfg: ModelConfig): Arch {
  return cfg.arch ?? "gpt2";
}

/** The Llama fields of a config, defaults filled in (GPT-2 configs get the same defaults). */
export function llamaShape(cfg: ModelConfig): LlamaShape {
  return {
    nKvHead: cfg.nKvHead ?? cfg.nHead,
    dFf: cfg.dFf ?? 4 * cfg.dModel,
    ropeTheta: cfg.ropeTheta ?? 500000,
    ropeScaling: cfg.ropeScaling ?? null,
    normEps: cfg.normEps ?? 1e-5,
    tieEmbeddings: cfg.tieEmbeddings ?? true,
  };
}

/** The zod schema of {@linkcode ModelConfig} (config.json's "lotus.model"). */
export const ModelConfigSchema: z.ZodType<ModelConfig> = z.object({
  /** Vocabulary size, including the added LOTUS tokens. */
  vocabSize: z.number().int().min(8),
  /** Context length: the size of the learned position table. */
  maxPositions: z.number().int().min(8),
  /** Width of the residual stream. */
  dModel: z.number().int().min(4),
  /** Number of attention heads; must divide dModel. */
  nHead: z.number().int().min(1),
  /** Number of Transformer blocks. */
  nLayer: z.number().int().min(1),
  /** LOTUS-aux decoder blocks (0 = no auxiliary decoder). Training only; not exported. */
  auxLayers: z.number().int().min(0).default(0),
  /** LOTUS-aux decoder heads (the reference uses 8, or 4 when dModel < 512). */
  auxHeads: z.number().int().min(1).default(4),
  arch: z.enum(["gpt2", "llama"]).optional(),
  nKvHead: z.number().int().min(1).optional(),
  dFf: z.number().int().min(1).optional(),
  ropeTheta: z.number().positive().optional(),
  ropeScaling: RopeScalingSchema.nullable().optional(),
  normEps: z.number().positive().optional(),
  tieEmbeddings: z.boolean().optional(),
}).refine((m) => m.dModel % m.nHead === 0, {
  message: "dModel must be divisible by nHead",
  path: ["nHead"],
}).refine((m) => m.dModel % m.auxHeads === 0, {
  message: "dModel must be divisible by auxHeads",
  path: ["auxHeads"],
}).refine((m) => m.nHead % (m.nKvHead ?? m.nHead) === 0, {
  message: "nHead must be divisible by nKvHead",
  path: ["nKvHead"],
}).refine((m) => m.arch !== "llama" || (m.dModel / m.nHead) % 2 === 0, {
  message: "a Llama head size (dModel / nHead) must be even (rotary pairs)",
  path: ["nHead"],
}).refine((m) => m.arch === "llama" || m.nKvHead === undefined || m.nKvHead === m.nHead, {
  message: "nKvHead differs from nHead only in the Llama architecture",
  path: ["nKvHead"],
});

/**
 * Validate a model configuration (missing optional fields get their defaults).
 *
 * @example
 * ```ts
 * import { parseModelConfig } from "./config.ts";
 * const cfg = parseModelConfig({ vocabSize: 64, maxPositions: 32, dModel: 16, nHead: 2, nLayer: 1 });
 * console.assert(cfg.auxLayers === 0);
 * ```
 */
export function parseModelConfig(raw: unknown): ModelConfig {
  return ModelConfigSchema.parse(raw);
}

/** The name of a preset model size. */
export type PresetName = "tiny" | "small" | "gpt2" | "llama-tiny" | "llama-1b" | "llama-3b";

/** A named model size, with the learning rate training uses when none is given. */
export interface Preset {
  /** Context length. */
  maxPositions: number;
  /** Width of the residual stream. */
  dModel: number;
  /** Attention heads. */
  nHead: number;
  /** Transformer blocks. */
  nLayer: number;
  /** The default learning rate (training from scratch; smaller models tolerate larger rates). */
  lr: number;
  /** The architecture and its fields (absent: GPT-2). */
  llama?: {
    nKvHead: number;
    dFf: number;
    ropeTheta: number;
    ropeScaling: RopeScaling | null;
    normEps: number;
    tieEmbeddings: boolean;
  };
}

/** Llama 3.2's rotary scaling (config.json of Llama-3.2-1B and -3B). */
export const LLAMA32_ROPE_SCALING: RopeScaling = {
  factor: 32,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositions: 8192,
};

/**
 * The named model sizes. The vocabulary comes from the dataset's tokenizer.
 */
export const PRESETS: Readonly<Record<PresetName, Preset>> = {
  /** For tests and the default job: trains in minutes on two CPU cores. */
  tiny: { maxPositions: 512, dModel: 64, nHead: 4, nLayer: 2, lr: 3e-3 },
  /** A few million parameters, for CPU experiments. */
  small: { maxPositions: 1024, dModel: 256, nHead: 4, nLayer: 4, lr: 1e-3 },
  /** GPT-2 small (124M with the GPT-2 vocabulary), the reference implementation's backbone. */
  gpt2: { maxPositions: 1024, dModel: 768, nHead: 12, nLayer: 12, lr: 3e-4 },
  /** A Llama-architecture model the size of "tiny" (grouped-query attention, 2 KV heads). */
  "llama-tiny": {
    maxPositions: 512,
    dModel: 64,
    nHead: 4,
    nLayer: 2,
    lr: 3e-3,
    llama: {
      nKvHead: 2,
      dFf: 176,
      ropeTheta: 500000,
      ropeScaling: LLAMA32_ROPE_SCALING,
      normEps: 1e-5,
      tieEmbeddings: true,
    },
  },
  /** Llama-3.2-1B's shape (1.24B parameters with its 128256-token vocabulary). */
  "llama-1b": {
    maxPositions: 131072,
    dModel: 2048,
    nHead: 32,
    nLayer: 16,
    lr: 1e-5,
    llama: {
      nKvHead: 8,
      dFf: 8192,
      ropeTheta: 500000,
      ropeScaling: LLAMA32_ROPE_SCALING,
      normEps: 1e-5,
      tieEmbeddings: true,
    },
  },
  /** Llama-3.2-3B's shape (3.21B parameters with its 128256-token vocabulary). */
  "llama-3b": {
    maxPositions: 131072,
    dModel: 3072,
    nHead: 24,
    nLayer: 28,
    lr: 1e-5,
    llama: {
      nKvHead: 8,
      dFf: 8192,
      ropeTheta: 500000,
      ropeScaling: LLAMA32_ROPE_SCALING,
      normEps: 1e-5,
      tieEmbeddings: true,
    },
  },
};

/** Every {@linkcode PresetName}. */
export const PRESET_NAMES: readonly PresetName[] = [
  "tiny",
  "small",
  "gpt2",
  "llama-tiny",
  "llama-1b",
  "llama-3b",
];

/**
 * The preset of an architecture: a Llama preset for "llama" (tiny becomes llama-tiny; the
 * llama-* presets stay), a GPT-2 one for "gpt2" (llama-tiny becomes tiny). Other pairs have
 * no counterpart and are refused, naming the presets to choose from.
 *
 * @example
 * ```ts
 * import { presetForArch } from "./config.ts";
 * console.assert(presetForArch("tiny", "llama") === "llama-tiny");
 * ```
 */
export function presetForArch(preset: PresetName, arch: Arch): PresetName {
  const isLlama = PRESETS[preset]?.llama !== undefined;
  if ((arch === "llama") === isLlama) return preset;
  if (arch === "llama" && preset === "tiny") return "llama-tiny";
  if (arch === "gpt2" && preset === "llama-tiny") return "tiny";
  const choices = PRESET_NAMES.filter((p) =>
    (PRESETS[p].llama !== undefined) === (arch === "llama")
  );
  throw new Error(
    `preset "${preset}" has no ${arch} counterpart; choose one of ${choices.join(", ")}`,
  );
}

/**
 * The model configuration of a preset for a vocabulary.
 *
 * @example
 * ```ts
 * import { presetConfig } from "./config.ts";
 * const cfg = presetConfig("tiny", 512);
 * console.assert(cfg.dModel === 64);
 * ```
 */
export function presetConfig(name: PresetName, vocabSize: number, auxLayers = 0): ModelConfig {
  const p = PRESETS[name];
  if (!p) throw new Error(`unknown preset "${name}"; choose one of ${Object.keys(PRESETS)}`);
  return ModelConfigSchema.parse({
    maxPositions: p.maxPositions,
    dModel: p.dModel,
    nHead: p.nHead,
    nLayer: p.nLayer,
    vocabSize,
    auxLayers,
    auxHeads: p.dModel >= 512 ? 8 : 4,
    ...(p.llama ? { arch: "llama", ...p.llama } : {}),
  });
}

/**
 * What the model is trained to do: LOTUS, LOTUS with the auxiliary decoder, or a baseline
 * (explicit chain of thought, or the answer alone).
 */
export type Mode = "lotus" | "lotus-aux" | "cot" | "nocot";

/** Every {@linkcode Mode}. */
export const MODES: readonly Mode[] = ["lotus", "lotus-aux", "cot", "nocot"];

/** The zod schema of {@linkcode Mode}. */
export const ModeSchema: z.ZodType<Mode> = z.enum(["lotus", "lotus-aux", "cot", "nocot"]);

/** Epochs a run trains when neither steps nor epochs are given. */
export const DEFAULT_EPOCHS = 15;

/** The optimisation, schedule and LOTUS settings of a run. */
export interface TrainConfig {
  /** What the model is trained to do. */
  mode: Mode;
  /** Latent blocks at the final curriculum stage (the reference's max_latent_stage). */
  k: number;
  /** Latent slots per block (c_thought). */
  c: number;
  /**
   * Loop iterations R. null: tied to K at every stage, as the reference trains (R = K = s).
   * A number fixes R at every stage with latents (0 is the "no loop" ablation).
   */
  r: number | null;
  /** Weight of the step loss (the reference's intermediate_loss_weight). */
  lambda: number;
  /** Weight of the LOTUS-aux decoder loss. */
  auxWeight: number;
  /**
   * Which states the LOTUS-aux decoder reads: every block after the loop ("after"), or block
   * r-1 at pass r ("in-loop", the reference's default).
   */
  auxReads: "after" | "in-loop";
  /** Step loss on the final pass's logits ("after", the default) or per pass ("in-loop"). */
  stepLoss: "after" | "in-loop";
  /** Latent injection: embedding + previous state ("add"), or the state alone ("replace"). */
  injection: "add" | "replace";
  /** Epochs per curriculum stage; stage s = min(epoch / epochsPerStage, k). 0 = no curriculum. */
  epochsPerStage: number;
  /**
   * Optimiser steps per curriculum stage, instead of epochs (0: stages follow
   * epochsPerStage); stage s = min(step / stepsPerStage, k).
   */
  stepsPerStage: number;
  /**
   * Steps to train once the final stage (K) is reached; the run's length then follows from the
   * curriculum, and steps and epochs are ignored. null: the length is steps or epochs.
   */
  finalStageSteps: number | null;
  /** The learning rate from stage 1 on (the latent stages); null: lr throughout. */
  lrLatent: number | null;
  /**
   * Epochs of explicit CoT trained first, in `<out>/cot-start`, for a LOTUS run to start from
   * (the reference starts LOTUS from its CoT model); 0 = none. Used only by lotus and
   * lotus-aux runs without an `init`.
   */
  cotStartEpochs: number;
  /**
   * Keep the best checkpoint of the final stage in `<out>/best`: the run evaluates at the end of
   * every epoch of its final stage (at the trained K and R) and saves when validation accuracy
   * improves.
   */
  keepBest: boolean;
  /**
   * Dropout probability during training (0 = none): on each block's input and on each
   * attention and MLP projection's output, with masks drawn afresh for every chunk (the
   * question, each loop pass, the answer) and step.
   */
  dropout: number;
  /** Peak learning rate. */
  lr: number;
  /** Learning-rate schedule after warmup. */
  schedule: "constant" | "cosine";
  /** Linear warmup steps. */
  warmupSteps: number;
  /** Final LR as a fraction of lr, for the cosine schedule. */
  minLrRatio: number;
  /** AdamW weight decay. */
  weightDecay: number;
  /** AdamW beta1. */
  beta1: number;
  /** AdamW beta2. */
  beta2: number;
  /** AdamW epsilon. */
  eps: number;
  /** Global-norm gradient clip (0 = off). */
  clip: number;
  /** Examples per optimiser step. */
  batch: number;
  /** Total optimiser steps; null = derived from epochs. */
  steps: number | null;
  /** Epochs when steps is null. */
  epochs: number;
  /** Seed of initialisation and data order. */
  seed: number;
  /** Evaluate every this many steps (0 = only at the end). */
  evalEvery: number;
  /** Validation examples used for greedy accuracy (0 = all). */
  evalExamples: number;
  /** Maximum tokens generated per answer during evaluation. */
  maxNewTokens: number;
  /** Save a checkpoint every this many steps (0 = only at the end). */
  saveEvery: number;
  /**
   * A step whose loss or gradient norm is not finite: "stop" the run (the default; the
   * weights stay those of the last good step), or "skip" its update and go on (at most ten
   * in a row).
   */
  onNonFinite: "stop" | "skip";
}

/** The zod schema of {@linkcode TrainConfig}, with every default. */
export const TrainConfigSchema: z.ZodType<TrainConfig> & {
  shape: Record<keyof TrainConfig, z.ZodType>;
} = z.object({
  mode: ModeSchema.default("lotus"),
  /** Latent blocks at the final curriculum stage (the reference's max_latent_stage). */
  k: z.number().int().min(0).default(6),
  /** Latent slots per block (c_thought). */
  c: z.number().int().min(1).default(13),
  /**
   * Loop iterations R. null: tied to K at every stage, as the reference trains (R = K = s).
   * A number fixes R at every stage with latents (0 is the "no loop" ablation).
   */
  r: z.number().int().min(0).nullable().default(null),
  /** Weight of the step loss (the reference's intermediate_loss_weight). */
  lambda: z.number().min(0).default(0.05),
  /** Weight of the LOTUS-aux decoder loss. */
  auxWeight: z.number().min(0).default(1),
  auxReads: z.enum(["after", "in-loop"]).default("after"),
  /** Step loss on the final pass's logits ("after", the default) or per pass ("in-loop"). */
  stepLoss: z.enum(["after", "in-loop"]).default("after"),
  /** Latent injection: embedding + previous state ("add"), or the state alone ("replace"). */
  injection: z.enum(["add", "replace"]).default("add"),
  /** Epochs per curriculum stage; stage s = min(epoch / epochsPerStage, k). 0 = no curriculum. */
  epochsPerStage: z.number().int().min(0).default(1),
  stepsPerStage: z.number().int().min(0).default(0),
  finalStageSteps: z.number().int().min(1).nullable().default(null),
  lrLatent: z.number().positive().nullable().default(null),
  cotStartEpochs: z.number().int().min(0).default(0),
  keepBest: z.boolean().default(false),
  dropout: z.number().min(0).max(0.9).default(0),
  lr: z.number().positive().default(1e-3),
  /** Learning-rate schedule after warmup. */
  schedule: z.enum(["constant", "cosine"]).default("constant"),
  warmupSteps: z.number().int().min(0).default(0),
  /** Final LR as a fraction of lr, for the cosine schedule. */
  minLrRatio: z.number().min(0).max(1).default(0.1),
  weightDecay: z.number().min(0).default(0.01),
  beta1: z.number().min(0).max(1).default(0.9),
  beta2: z.number().min(0).max(1).default(0.999),
  eps: z.number().positive().default(1e-8),
  /** Global-norm gradient clip (0 = off). */
  clip: z.number().min(0).default(1),
  batch: z.number().int().min(1).default(16),
  /** Total optimiser steps; null = derived from epochs. */
  steps: z.number().int().min(1).nullable().default(null),
  /** Epochs when steps is null. */
  epochs: z.number().int().min(1).default(DEFAULT_EPOCHS),
  seed: z.number().int().min(0).default(0),
  /** Evaluate every this many steps (0 = only at the end). */
  evalEvery: z.number().int().min(0).default(0),
  /** Validation examples used for greedy accuracy (0 = all). */
  evalExamples: z.number().int().min(0).default(200),
  /** Maximum tokens generated per answer during evaluation. */
  maxNewTokens: z.number().int().min(1).default(64),
  /** Save a checkpoint every this many steps (0 = only at the end). */
  saveEvery: z.number().int().min(0).default(0),
  onNonFinite: z.enum(["stop", "skip"]).default("stop"),
});

/**
 * Validate a training configuration; every missing field gets its default. The defaults
 * that depend on the dataset and the preset (K, c, the learning rate) are filled by
 * resolveTrainConfig in train/options.ts, which the library's train() and the CLI share.
 *
 * @example
 * ```ts
 * import { parseTrainConfig } from "./config.ts";
 * const cfg = parseTrainConfig({ mode: "cot", k: 3 });
 * console.assert(cfg.lambda === 0.05 && cfg.r === null);
 * ```
 */
export function parseTrainConfig(raw: unknown): TrainConfig {
  return TrainConfigSchema.parse(raw);
}

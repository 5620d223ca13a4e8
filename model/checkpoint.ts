/**
 * Checkpoints: a directory that Hugging Face `transformers.GPT2LMHeadModel` loads as it is,
 * plus what an exact resume needs.
 *
 * ```
 * checkpoint/
 *   model.safetensors      backbone, Hugging Face GPT-2 names, Conv1D weights [in, out]
 *   aux.safetensors        LOTUS-aux decoder (training only; absent otherwise)
 *   config.json            GPT-2 config fields + "lotus": model/train config, special ids
 *   tokenizer.json         the dataset's tokenizer
 *   optimizer.safetensors  AdamW moments m, v over the whole parameter slab
 *   train_state.json       step, epoch, position in the data order, RNG state, best accuracy
 * ```
 *
 * A checkpoint is written into a temporary sibling directory and swapped in with renames
 * (base/staging.ts, replaceDir), so an interrupted save leaves the previous checkpoint intact;
 * what a killed save leaves beside it is cleared, and a set-aside checkpoint put back, by the
 * next save or load.
 *
 * @module
 */

import { z } from "zod";
import {
  decodeSafetensors,
  type SafetensorsFile,
  type Tensor,
  writeSafetensors,
} from "../base/safetensors.ts";
import { writeFileAtomic } from "../base/atomic.ts";
import { replaceDir, splitPath, sweepStale } from "../base/staging.ts";
import {
  type ModelConfig,
  ModelConfigSchema,
  type TrainConfig,
  TrainConfigSchema,
} from "./config.ts";
import { type ParamLayout, paramLayout } from "./params.ts";
import { gpt2ConfigJson } from "./hf_config.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";
import { rethrowIfDenied } from "../base/exists.ts";

/** Raised for a checkpoint that cannot be read or does not fit; says what to do. */
export class CheckpointError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

/** The trainer's position, saved for an exact resume. */
export const TrainStateSchema: z.ZodType<TrainState> = z.object({
  /** Optimiser steps taken. */
  step: z.number().int().min(0),
  /** Current epoch (0-based) and the next batch within it. */
  epoch: z.number().int().min(0),
  batchInEpoch: z.number().int().min(0),
  /** RNG state (uint32). */
  rng: z.number().int(),
  /** Best validation accuracy seen (-1: none yet). */
  bestAccuracy: z.number(),
  /** Token positions processed so far. */
  tokens: z.number().min(0),
  /** Training wall time so far, seconds. */
  seconds: z.number().min(0),
});

/** The trainer's position, saved in train_state.json for an exact resume. */
export interface TrainState {
  /** Optimiser steps taken. */
  step: number;
  /** Current epoch (0-based). */
  epoch: number;
  /** The next batch within the epoch. */
  batchInEpoch: number;
  /** RNG state (uint32). */
  rng: number;
  /** Best validation accuracy seen (-1: none yet). */
  bestAccuracy: number;
  /** Token positions processed so far. */
  tokens: number;
  /** Training wall time so far, seconds. */
  seconds: number;
}

/** The `lotus` section of config.json. */
export const LotusMetaSchema: z.ZodType<LotusMeta> = z.object({
  model: ModelConfigSchema,
  train: TrainConfigSchema,
  special: z.object({
    eos: z.number().int(),
    pad: z.number().int(),
    bot: z.number().int(),
    eot: z.number().int(),
    lat: z.number().int(),
  }),
  /** The dataset's CoT form and its K, c (informational). */
  data: z.object({
    dir: z.string(),
    cot: z.string(),
    k: z.number().int(),
    c: z.number().int(),
    fingerprint: z.string().optional(),
  }),
  preset: z.string(),
});

/** The `lotus` section of config.json: what the model is and how it was trained. */
export interface LotusMeta {
  /** The model's shape. */
  model: ModelConfig;
  /** The run's training settings. */
  train: TrainConfig;
  /** The special token ids (EOS, PAD, BOT, EOT, LAT). */
  special: SpecialIds;
  /**
   * The dataset it was trained on: directory, CoT form, K and c, and a fingerprint of the
   * training split (tokenizer and shard hashes) that a resume compares.
   */
  data: { dir: string; cot: string; k: number; c: number; fingerprint?: string };
  /** The preset the model was made from (tiny, small, gpt2, or another name for a
   * model configured by hand). */
  preset: string;
}

/** Everything a checkpoint holds. */
export interface CheckpointData {
  /** The `lotus` section of config.json: model shape, training settings, special ids. */
  meta: LotusMeta;
  /** The whole parameter slab (backbone and aux decoder), in the model's own layout. */
  params: Float32Array;
  /**
   * AdamW moments over the whole slab (optimizer.safetensors). Saved when given; loaded only
   * when asked for (`withOptimizer`).
   */
  moments?: { m: Float32Array; v: Float32Array };
  /** The trainer's position (train_state.json). */
  state: TrainState;
  /** The text of the dataset's tokenizer.json. */
  tokenizerJson: string;
}

/** A Hugging Face GPT-2 config for a model, with the run's "lotus" section. */
export function hfConfig(
  cfg: ModelConfig,
  sp: SpecialIds,
  meta: LotusMeta,
): Record<string, unknown> {
  return { ...gpt2ConfigJson(cfg, sp, false), lotus: meta };
}

/** Transpose a row-major [r, c] matrix. */
function transpose(src: Float32Array, r: number, c: number): Float32Array {
  const out = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = src[i * c + j];
  return out;
}

/**
 * The tensors of `prefix` ("transformer." for the backbone, "aux." for the aux decoder) in
 * Hugging Face layout.
 */
export function toHfTensors(
  params: Float32Array,
  layout: ParamLayout,
  prefix: string,
): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const t of layout.tensors) {
    if (!t.name.startsWith(prefix)) continue;
    const v = params.subarray(t.offset, t.offset + t.size);
    if (t.hfTransposed) {
      out[t.name] = {
        dtype: "F32",
        shape: [t.shape[1], t.shape[0]],
        data: transpose(v, t.shape[0], t.shape[1]),
      };
    } else {
      out[t.name] = { dtype: "F32", shape: t.shape, data: v.slice() };
    }
  }
  return out;
}

/**
 * Fill `params` from Hugging Face-layout tensors. Names may carry the "transformer." prefix
 * or not (both GPT-2 layouts exist). `vocabRows` rows of the token embedding are taken from
 * the file when it is smaller than the model's vocabulary (new special tokens): the caller
 * initialises the rest. Wrong names or shapes raise a CheckpointError naming `what`.
 */
export function fromHfTensors(
  file: SafetensorsFile,
  params: Float32Array,
  layout: ParamLayout,
  prefix: string,
  what: string,
  opts: { allowVocabGrowth?: boolean } = {},
): { vocabRows: number } {
  let vocabRows = -1;
  for (const t of layout.tensors) {
    if (!t.name.startsWith(prefix)) continue;
    const short = prefix === "transformer." ? t.name.slice(prefix.length) : t.name;
    const src = file.tensors[t.name] ?? file.tensors[short];
    if (!src) {
      throw new CheckpointError(
        `${what}: tensor "${t.name}" is missing; expected Hugging Face GPT-2 names ` +
          `(e.g. transformer.h.0.attn.c_attn.weight)`,
      );
    }
    if (src.dtype !== "F32") {
      throw new CheckpointError(`${what}: tensor "${t.name}" is ${src.dtype}; only F32 is read`);
    }
    const want = t.hfTransposed ? [t.shape[1], t.shape[0]] : t.shape;
    const dst = params.subarray(t.offset, t.offset + t.size);
    const data = src.data as Float32Array;
    const isWte = t.name.endsWith("wte.weight") || t.name === "aux.head.weight";
    if (
      isWte && opts.allowVocabGrowth && src.shape.length === 2 && src.shape[1] === want[1] &&
      src.shape[0] <= want[0]
    ) {
      dst.set(data.subarray(0, src.shape[0] * want[1]));
      if (t.name.endsWith("wte.weight")) vocabRows = src.shape[0];
      continue;
    }
    if (src.shape.length !== want.length || src.shape.some((d, i) => d !== want[i])) {
      throw new CheckpointError(
        `${what}: tensor "${t.name}" has shape [${src.shape}], the model needs [${want}]; ` +
          `check the preset (--preset) against the checkpoint's config`,
      );
    }
    dst.set(t.hfTransposed ? transpose(data, want[0], want[1]) : data);
  }
  return { vocabRows };
}

/** Paths inside a run directory. */
export function checkpointDirOf(runOrCheckpoint: string): string {
  try {
    Deno.statSync(`${runOrCheckpoint}/config.json`);
    return runOrCheckpoint;
  } catch (e) {
    rethrowIfDenied(e);
    return `${runOrCheckpoint}/checkpoint`;
  }
}

/**
 * The first non-finite value of a parameter slab, as "tensor[index] = value", or null when
 * every value is finite.
 */
export function firstNonFinite(params: Float32Array, layout: ParamLayout): string | null {
  for (let i = 0; i < params.length; i++) {
    if (Number.isFinite(params[i])) continue;
    const t = layout.tensors.find((t) => i >= t.offset && i < t.offset + t.size);
    return `${t ? t.name : "parameter"}[${t ? i - t.offset : i}] = ${params[i]}`;
  }
  return null;
}

/**
 * Save a checkpoint to `dir` atomically (temporary directory, then renames). Weights or
 * optimiser moments that are not all finite are refused with a {@linkcode CheckpointError}
 * before anything is written: the previous checkpoint stays.
 */
export async function saveCheckpoint(dir: string, data: CheckpointData): Promise<void> {
  const layout = paramLayout(data.meta.model);
  const bad = firstNonFinite(data.params, layout) ??
    (data.moments
      ? firstNonFinite(data.moments.m, layout) ?? firstNonFinite(data.moments.v, layout)
      : null);
  if (bad !== null) {
    throw new CheckpointError(
      `${dir}: refusing to write a checkpoint with a non-finite value (${bad}); the previous ` +
        `checkpoint, if any, is kept`,
    );
  }
  await replaceDir(dir, async (tmp) => {
    await writeSafetensors(
      `${tmp}/model.safetensors`,
      toHfTensors(data.params, layout, "transformer."),
      {
        format: "pt",
      },
    );
    if (layout.aux) {
      await writeSafetensors(`${tmp}/aux.safetensors`, toHfTensors(data.params, layout, "aux."), {
        format: "pt",
      });
    }
    if (data.moments) {
      await writeSafetensors(`${tmp}/optimizer.safetensors`, {
        m: { dtype: "F32", shape: [data.moments.m.length], data: data.moments.m },
        v: { dtype: "F32", shape: [data.moments.v.length], data: data.moments.v },
      });
    }
    const cfg = hfConfig(data.meta.model, data.meta.special, data.meta);
    await writeFileAtomic(`${tmp}/config.json`, JSON.stringify(cfg, null, 2) + "\n");
    await writeFileAtomic(`${tmp}/tokenizer.json`, data.tokenizerJson);
    await writeFileAtomic(`${tmp}/train_state.json`, JSON.stringify(data.state, null, 2) + "\n");
  });
}

/**
 * Put back a checkpoint that a process killed in the middle of {@linkcode saveCheckpoint}'s
 * swap left set aside, and remove the temporary directories of dead saves, for a run or
 * checkpoint directory (base/staging.ts). Loading calls it; it changes nothing otherwise.
 */
export async function recoverCheckpoint(runOrCheckpoint: string): Promise<void> {
  for (const target of [runOrCheckpoint, `${runOrCheckpoint}/checkpoint`]) {
    const { parent, stem } = splitPath(target);
    await sweepStale(parent, stem, ["tmp", "old"]);
  }
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new CheckpointError(
      `${path}: cannot read (${(e as Error).message}); is this a checkpoint directory?`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

async function readSt(path: string): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    return decodeSafetensors(bytes, path);
  } catch (e) {
    throw new CheckpointError((e as Error).message);
  }
}

/**
 * Load a checkpoint directory (or a run directory holding `checkpoint/`). With
 * `withOptimizer`, the AdamW moments must be present and are returned in `moments`.
 *
 * @throws {CheckpointError} when a file is missing or unreadable, config.json was not
 * written by the trainer, or a tensor's name, dtype or shape does not fit the model.
 *
 * @example
 * ```ts ignore
 * import { loadCheckpoint } from "./checkpoint.ts";
 * const ck = await loadCheckpoint("out/runs/default");
 * console.log(ck.meta.train.mode, ck.meta.model.nLayer, ck.state.step, ck.params.length);
 * ```
 */
export async function loadCheckpoint(
  dirIn: string,
  opts: { withOptimizer?: boolean } = {},
): Promise<CheckpointData> {
  await recoverCheckpoint(dirIn);
  const dir = checkpointDirOf(dirIn);
  const cfg = await readJson(`${dir}/config.json`) as { lotus?: unknown };
  const metaRes = LotusMetaSchema.safeParse(cfg.lotus);
  if (!metaRes.success) {
    const i = metaRes.error.issues[0];
    throw new CheckpointError(
      `${dir}/config.json: field "lotus.${i.path.join(".")}": ${i.message}; ` +
        `the directory was not written by deno task train`,
    );
  }
  const meta = metaRes.data;
  const layout = paramLayout(meta.model);
  const params = new Float32Array(layout.total);
  fromHfTensors(
    await readSt(`${dir}/model.safetensors`),
    params,
    layout,
    "transformer.",
    `${dir}/model.safetensors`,
  );
  if (layout.aux) {
    fromHfTensors(
      await readSt(`${dir}/aux.safetensors`),
      params,
      layout,
      "aux.",
      `${dir}/aux.safetensors`,
    );
  }
  let moments: CheckpointData["moments"];
  if (opts.withOptimizer) {
    const f = await readSt(`${dir}/optimizer.safetensors`);
    const m = f.tensors.m?.data, v = f.tensors.v?.data;
    if (
      !(m instanceof Float32Array) || !(v instanceof Float32Array) || m.length !== layout.total ||
      v.length !== layout.total
    ) {
      throw new CheckpointError(
        `${dir}/optimizer.safetensors: expected F32 tensors m and v of ${layout.total} floats`,
      );
    }
    moments = { m: m.slice(), v: v.slice() };
  }
  const stRes = TrainStateSchema.safeParse(await readJson(`${dir}/train_state.json`));
  if (!stRes.success) {
    const i = stRes.error.issues[0];
    throw new CheckpointError(`${dir}/train_state.json: field "${i.path.join(".")}": ${i.message}`);
  }
  let tokenizerJson: string;
  try {
    tokenizerJson = await Deno.readTextFile(`${dir}/tokenizer.json`);
  } catch (e) {
    throw new CheckpointError(`${dir}/tokenizer.json: cannot read (${(e as Error).message})`);
  }
  return { meta, params, moments, state: stRes.data, tokenizerJson };
}

/**
 * Read a local Hugging Face GPT-2 `model.safetensors` into a fresh parameter slab (for
 * `--init`). Token-embedding rows beyond the file's vocabulary (the LOTUS tokens) are left
 * for the caller to initialise; their count is returned.
 */
export async function loadHfInit(
  path: string,
  cfg: ModelConfig,
  base: Float32Array,
): Promise<{ params: Float32Array; vocabRows: number }> {
  const layout = paramLayout(cfg);
  const params = base.slice();
  const { vocabRows } = fromHfTensors(await readSt(path), params, layout, "transformer.", path, {
    allowVocabGrowth: true,
  });
  return { params, vocabRows };
}

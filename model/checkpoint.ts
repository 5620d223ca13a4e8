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
  readSafetensorsHeader,
  type SafetensorsFile,
  type SafetensorsHeader,
  type Tensor,
  writeSafetensors,
} from "../base/safetensors.ts";
import { writeFileAtomic } from "../base/atomic.ts";
import { fieldIssue, jsonErrorText } from "../base/json.ts";
import {
  checksumMismatch,
  type Checksums,
  CHECKSUMS_FILE,
  ChecksumsError,
  readChecksums as readChecksumsRecord,
  writeChecksums,
} from "../base/checksums.ts";
import { followLink, replaceDir, splitPath, StagingError, sweepStale } from "../base/staging.ts";
import {
  type ModelConfig,
  ModelConfigSchema,
  type TrainConfig,
  TrainConfigSchema,
} from "./config.ts";
import { type ParamLayout, paramLayout } from "./params.ts";
import { gpt2ConfigJson } from "./hf_config.ts";
import { llamaConfigJson } from "./hf_llama.ts";
import { archOf } from "./config.ts";
import { type SpecialIds, type Tokenizer, tokenizerFromJson } from "../pipeline/tokenizer.ts";
import { exists, rethrowIfDenied } from "../base/exists.ts";
import { type OptionNames, refuseUnknownOptions } from "../base/options.ts";

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
  bestStep: z.number().int().min(-1).default(-1),
  /** Token positions processed so far. */
  tokens: z.number().min(0),
  /** Training wall time so far, seconds. */
  seconds: z.number().min(0),
  /** AdamW updates applied, when fewer than `step` (steps skipped for a non-finite value). */
  updates: z.number().int().min(0).optional(),
  /** An evaluation a stop signal cut short at `step`, which a resume runs first. */
  evalDue: z.boolean().optional(),
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
  /** The step of that accuracy (-1: none). */
  bestStep: number;
  /** Token positions processed so far. */
  tokens: number;
  /** Training wall time so far, seconds. */
  seconds: number;
  /**
   * AdamW updates applied (the bias correction's step), written only when fewer than `step`:
   * steps skipped for a non-finite loss or gradient count in `step` but update nothing.
   * Absent: `step`.
   */
  updates?: number;
  /**
   * The evaluation due at `step` (periodic, or an epoch's end with `keepBest`) was cut short by
   * a stop signal: a resume runs it before its next step. Absent: none is due.
   */
  evalDue?: boolean;
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
    longStep: z.enum(["truncate", "drop", "spill"]).optional(),
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
   * The dataset it was trained on: directory, CoT form, K and c, the training split's
   * long-step policy (absent in older checkpoints: `truncate`), and a fingerprint of the
   * training split (tokenizer and shard hashes) that a resume compares.
   */
  data: {
    dir: string;
    cot: string;
    k: number;
    c: number;
    longStep?: "truncate" | "drop" | "spill";
    fingerprint?: string;
  };
  /** The preset the model was made from (tiny, small, gpt2, or another name for a
   * model configured by hand). */
  preset: string;
}

/** The train state of a run that has not started: step 0, no evaluation yet. */
export function freshTrainState(): TrainState {
  return {
    step: 0,
    epoch: 0,
    batchInEpoch: 0,
    rng: 0,
    bestAccuracy: -1,
    bestStep: -1,
    tokens: 0,
    seconds: 0,
  };
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

/** A Hugging Face GPT-2 or Llama config for a model, with the run's "lotus" section. */
export function hfConfig(
  cfg: ModelConfig,
  sp: SpecialIds,
  meta: LotusMeta,
): Record<string, unknown> {
  const hf = archOf(cfg) === "llama" ? llamaConfigJson(cfg, sp) : gpt2ConfigJson(cfg, sp, false);
  return { ...hf, lotus: meta };
}

/**
 * Whether tensor `name` belongs to the part `prefix` names: "aux." the aux decoder, any
 * other prefix the backbone (GPT-2's "transformer." names, or Llama's "model." and
 * "lm_head.").
 */
function inPart(name: string, prefix: string): boolean {
  return prefix === "aux." ? name.startsWith("aux.") : !name.startsWith("aux.");
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
    if (!inPart(t.name, prefix)) continue;
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
    if (!inPart(t.name, prefix)) continue;
    const short = t.name.startsWith("transformer.") ? t.name.slice(prefix.length) : t.name;
    const src = file.tensors[t.name] ?? file.tensors[short];
    if (!src) {
      const llamaName = t.name.startsWith("model.") || t.name === "lm_head.weight";
      throw new CheckpointError(
        `${what}: tensor "${t.name}" is missing; expected Hugging Face ` +
          (llamaName
            ? `Llama names (e.g. model.layers.0.self_attn.q_proj.weight)`
            : `GPT-2 names (e.g. transformer.h.0.attn.c_attn.weight)`),
      );
    }
    if (src.dtype !== "F32") {
      throw new CheckpointError(`${what}: tensor "${t.name}" is ${src.dtype}; only F32 is read`);
    }
    const want = t.hfTransposed ? [t.shape[1], t.shape[0]] : t.shape;
    const dst = params.subarray(t.offset, t.offset + t.size);
    const data = src.data as Float32Array;
    const isWte = t.name.endsWith("wte.weight") || t.name === "aux.head.weight" ||
      t.name === "model.embed_tokens.weight" || t.name === "lm_head.weight";
    if (
      isWte && opts.allowVocabGrowth && src.shape.length === 2 && src.shape[1] === want[1] &&
      src.shape[0] <= want[0]
    ) {
      dst.set(data.subarray(0, src.shape[0] * want[1]));
      if (t.name.endsWith("wte.weight") || t.name === "model.embed_tokens.weight") {
        vocabRows = src.shape[0];
      }
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
  const bad = nonFinite(params);
  if (bad === null) return null;
  const i = bad.at, t = layout.tensors.find((t) => i >= t.offset && i < t.offset + t.size);
  return `${t ? t.name : "parameter"}[${t ? i - t.offset : i}] = ${bad.value}`;
}

/**
 * What in `data` {@linkcode loadCheckpoint} would refuse, as "what: why", or null: settings
 * that their schemas refuse, a parameter slab or AdamW moment not of the model's size, or a
 * tokenizer that is not JSON.
 */
function unsavable(data: CheckpointData): string | null {
  const meta = LotusMetaSchema.safeParse(data.meta);
  if (!meta.success) return fieldIssue(meta.error, "meta.");
  const state = TrainStateSchema.safeParse(data.state);
  if (!state.success) return fieldIssue(state.error, "state.");
  const n = paramLayout(meta.data.model).total;
  const sizes = [["params", data.params], ["moments.m", data.moments?.m], [
    "moments.v",
    data.moments?.v,
  ]] as const;
  for (const [what, slab] of sizes) {
    if (slab !== undefined && slab.length !== n) {
      return `${what} holds ${slab.length} values; the model of meta.model has ${n} parameters`;
    }
  }
  try {
    if (!isRecord(JSON.parse(data.tokenizerJson))) return "tokenizerJson: not a JSON object";
  } catch (e) {
    return `tokenizerJson: not valid JSON (${jsonErrorText(e)})`;
  }
  return null;
}

/**
 * Save a checkpoint to `dir` atomically (temporary directory, then renames). Data that
 * {@linkcode loadCheckpoint} would refuse (settings out of their schemas, a parameter slab or
 * moments not of the model's size, a tokenizer that is not JSON) and weights or optimiser
 * moments that are not all finite are refused with a {@linkcode CheckpointError} before
 * anything is written: the previous checkpoint stays.
 */
export async function saveCheckpoint(dir: string, data: CheckpointData): Promise<void> {
  const problem = unsavable(data);
  if (problem !== null) {
    throw new CheckpointError(
      `${dir}: refusing to write a checkpoint that could not be loaded (${problem}); the ` +
        `previous checkpoint, if any, is kept`,
    );
  }
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
    // Last: what each file holds, so that a load can tell a file changed since.
    await writeChecksums(tmp, [
      "model.safetensors",
      ...(layout.aux ? ["aux.safetensors"] : []),
      ...(data.moments ? ["optimizer.safetensors"] : []),
      "config.json",
      "tokenizer.json",
      "train_state.json",
    ]);
  });
}

/**
 * Put back a checkpoint that a process killed in the middle of {@linkcode saveCheckpoint}'s
 * swap left set aside, and remove the temporary directories of dead saves, for a run or
 * checkpoint directory (base/staging.ts). Loading calls it; it changes nothing otherwise.
 */
export async function recoverCheckpoint(runOrCheckpoint: string): Promise<void> {
  for (const given of [runOrCheckpoint, `${runOrCheckpoint}/checkpoint`]) {
    // A checkpoint kept elsewhere through a link was set aside beside where it points.
    let target: string;
    try {
      target = await followLink(given);
    } catch (e) {
      if (e instanceof StagingError) continue; // the loader names what is missing
      if (e instanceof Deno.errors.NotADirectory) return;
      throw e;
    }
    const { parent, stem } = splitPath(target);
    try {
      await sweepStale(parent, stem, ["tmp", "old"]);
    } catch (e) {
      // A file given for the directory holds no save to recover; its loader says what it is.
      if (e instanceof Deno.errors.NotADirectory) return;
      throw e;
    }
  }
}

/**
 * Refuses a checkpoint path at which there is nothing (once {@linkcode recoverCheckpoint} has
 * put back what a killed save set aside), or a file (a checkpoint's model.safetensors, say):
 * a checkpoint is a directory.
 */
async function refuseNoDirectory(dirIn: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dirIn);
  } catch (e) {
    rethrowIfDenied(e);
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    throw new CheckpointError(
      `${dirIn}: no such checkpoint (nothing is there); give a checkpoint or run directory ` +
        `written by deno task train`,
    );
  }
  if (!info.isDirectory) {
    throw new CheckpointError(
      `${dirIn} is a file, not a checkpoint; give the checkpoint or run directory (written ` +
        `by deno task train) that holds it`,
    );
  }
}

/**
 * A two-phase run (an explicit-CoT start, then LOTUS) stopped in its CoT start has no
 * checkpoint of its own yet: say so, and where its CoT model is, rather than that config.json
 * cannot be read. `dirIn` is the directory given, `dir` the checkpoint directory it names
 * ({@linkcode checkpointDirOf}).
 */
export async function refuseUnsavedRun(dirIn: string, dir: string): Promise<void> {
  if (await exists(`${dir}/config.json`)) return;
  const run = dirIn.replace(/\/+$/, "");
  const cot = `${run}/cot-start`;
  if (!(await exists(`${cot}/checkpoint/config.json`))) return;
  const best = await exists(`${cot}/best/config.json`);
  // The run's plan says which phase it is in: the CoT start, or LOTUS (which saves at its end
  // or every --save-every steps, so a run under way has no checkpoint of its own for a while).
  let phase = "cot-start";
  try {
    phase = JSON.parse(await Deno.readTextFile(`${run}/plan.json`)).phase ?? phase;
  } catch (e) {
    rethrowIfDenied(e);
  }
  const where = phase === "lotus"
    ? "its LOTUS phase has not saved yet (it saves at its end, or every --save-every steps)"
    : "the run is in, or stopped in, its explicit-CoT start";
  throw new CheckpointError(
    `${run}: no checkpoint yet: ${where}; a stopped run continues with deno task train ` +
      `--resume ${run}, and ${best ? `${cot}/best` : cot} holds the CoT model`,
  );
}

/**
 * What to do about a config.json that cannot be parsed. Saves write it whole, and each save
 * replaces the whole checkpoint directory: the run keeps no earlier copy of it.
 */
const CONFIG_DAMAGED = "the file is damaged (a save writes it whole, so it was cut short or " +
  "changed since): restore it from a copy of the checkpoint. Each save replaces the whole " +
  "checkpoint, so the run keeps no earlier copy of it; the run's other checkpoints, those " +
  "it has of checkpoint/, best/, cot-start/checkpoint/ and cot-start/best/, are other " +
  "saves to evaluate or to start from (--init) instead. Otherwise train again";

/** What to do about a train_state.json that cannot be read, for `dir`'s checkpoint. */
function stateAdvice(dir: string): string {
  return `--resume needs this file (eval, infer and export do not): restore it from a ` +
    `copy of the checkpoint (each save replaces the whole checkpoint, so the run keeps no ` +
    `earlier one), or start a new run from these weights with deno task train --init ${dir} ` +
    `(a fresh optimiser and schedule)`;
}

/** The file a save writes last: each other file's size and the SHA-256 of each piece. */
export { CHECKSUMS_FILE };

/**
 * The checksums a save recorded in checkpoint `dir` (base/checksums.ts), or null when it has
 * none (a directory that is no checkpoint, or files put together by hand).
 */
async function readChecksums(dir: string): Promise<Checksums | null> {
  try {
    return await readChecksumsRecord(`${dir}/${CHECKSUMS_FILE}`);
  } catch (e) {
    if (!(e instanceof ChecksumsError)) throw e;
    throw new CheckpointError(`${e.message}; ${SUMS_DAMAGED}`);
  }
}

const SUMS_DAMAGED = "the file is damaged (a save writes it whole); restore it from a copy of " +
  "the checkpoint, or use another save of the run (checkpoint/, best/, cot-start/)";

/** What to do about checkpoint `dir` without checksums.json. */
function sumsMissing(dir: string): string {
  return `${dir}/${CHECKSUMS_FILE}: missing; every save writes it last, so these files were ` +
    `copied in part, put together by hand, or saved by a version from before saves recorded ` +
    `checksums, and they cannot be checked against what the save wrote: copy the whole ` +
    `checkpoint directory again from where it was saved, or, to keep the files as they are, ` +
    `save them once with a record: loadCheckpoint(dir, { checksums: "optional" }) then ` +
    `saveCheckpoint (docs/training.md, "Verification on load", has the command)`;
}

/**
 * Refuses file `name` of checkpoint `dir` when it is not what the save wrote: its bytes (or,
 * with `bytes` null, its size alone) against the recorded ones. Files with no record pass.
 */
async function checkSum(
  dir: string,
  name: string,
  bytes: Uint8Array | null,
  sums: Checksums | null,
): Promise<void> {
  if (!sums?.files[name]) return;
  const have = bytes ?? { size: (await Deno.stat(`${dir}/${name}`)).size };
  const problem = await checksumMismatch(dir, name, sums, have);
  if (problem === null) return;
  throw new CheckpointError(
    `${dir}/${name}: changed since it was saved (${problem} by the save, ${CHECKSUMS_FILE}); ` +
      `its values cannot be trusted: restore the checkpoint from a copy, use another save of ` +
      `the run (checkpoint/, best/, cot-start/), or train again`,
  );
}

/** config.json, parsed (checked against the save's record when there is one). */
async function readConfig(path: string, sums: Checksums | null = null): Promise<unknown> {
  let text: string;
  try {
    const bytes = await Deno.readFile(path);
    await checkSum(splitPath(path).parent, "config.json", bytes, sums);
    text = new TextDecoder().decode(bytes);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    if (e instanceof Deno.errors.NotFound && sums?.files["config.json"]) {
      throw new CheckpointError(`${path}: missing; ${FILE_GONE}`);
    }
    throw new CheckpointError(
      `${path}: cannot read (${(e as Error).message}); is this a checkpoint directory?`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(
      `${path}: not valid JSON (${jsonErrorText(e)}); ${CONFIG_DAMAGED}`,
    );
  }
}

/** What to do about a file of a checkpoint's that is gone. */
const FILE_GONE = "a save writes the checkpoint whole, so it was removed since: restore the " +
  "checkpoint from a copy, use another save of the run (checkpoint/, best/, cot-start/), or " +
  "train again";

/** A resume's message for a checkpoint without its optimizer state. */
const OPTIMIZER_GONE = "a resume needs the AdamW moments it holds (a save of a run always writes " +
  "it): restore the checkpoint from a copy, or start a new run from these weights with --init";

async function readSt(
  path: string,
  sums: Checksums | null = null,
  gone = FILE_GONE,
): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CheckpointError(`${path}: missing; ${gone}`);
    throw new CheckpointError(`${path}: cannot read (${(e as Error).message})`);
  }
  const { parent, stem } = splitPath(path);
  await checkSum(parent, stem, bytes, sums);
  try {
    return decodeSafetensors(bytes, path);
  } catch (e) {
    throw new CheckpointError((e as Error).message);
  }
}

/** The files of a checkpoint directory as read, before any check. */
export interface CheckpointFiles {
  /** The checkpoint directory, named in errors. */
  dir: string;
  /** config.json, parsed. */
  config: unknown;
  /** model.safetensors. */
  model: SafetensorsFile;
  /** aux.safetensors, or null when the directory has none. */
  aux: SafetensorsFile | null;
  /**
   * optimizer.safetensors, or null when the directory has none: its header, and its
   * tensors when they were read (a resume).
   */
  optimizer: { header: SafetensorsHeader; file?: SafetensorsFile } | null;
  /** The text of tokenizer.json. */
  tokenizerJson: string;
}

/** What {@linkcode verifyCheckpoint} found consistent: the configuration and the tokenizer. */
export interface VerifiedCheckpoint {
  /** The `lotus` section of config.json. */
  meta: LotusMeta;
  /** The checkpoint's tokenizer, loaded from tokenizer.json. */
  tokenizer: Tokenizer;
}

/** What to do about a checkpoint whose files disagree. */
const RESTORE = "restore the checkpoint's files from the run that wrote them, or train again";

/** config.json's GPT-2 fields and the fields of "lotus.model" they must equal. */
/** config.json's Llama fields and the "lotus.model" fields they must equal. */
const LLAMA_FIELDS = [
  ["vocab_size", "vocabSize"],
  ["max_position_embeddings", "maxPositions"],
  ["hidden_size", "dModel"],
  ["num_hidden_layers", "nLayer"],
  ["num_attention_heads", "nHead"],
] as const;

const GPT2_FIELDS = [
  ["vocab_size", "vocabSize"],
  ["n_positions", "maxPositions"],
  ["n_embd", "dModel"],
  ["n_layer", "nLayer"],
  ["n_head", "nHead"],
] as const;

/** config.json's GPT-2 token ids and the special ids they must equal. */
const GPT2_IDS = [["eos_token_id", "eos"], ["bos_token_id", "eos"], [
  "pad_token_id",
  "pad",
]] as const;

/** Pairs of special tokens that must have distinct ids (PAD may share EOS's). */
export const DISTINCT_SPECIALS: readonly (readonly [keyof SpecialIds, keyof SpecialIds])[] = [
  ["eos", "bot"],
  ["eos", "eot"],
  ["eos", "lat"],
  ["bot", "eot"],
  ["bot", "lat"],
  ["eot", "lat"],
  ["pad", "bot"],
  ["pad", "eot"],
  ["pad", "lat"],
] as const;

const isRecord = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v);

/** The first non-finite value of `data`, with the count of them, or null. */
export function nonFinite(data: Float32Array): { at: number; value: number; count: number } | null {
  for (let i = 0; i < data.length; i++) {
    if (Number.isFinite(data[i])) continue;
    let count = 1;
    for (let j = i + 1; j < data.length; j++) if (!Number.isFinite(data[j])) count++;
    return { at: i, value: data[i], count };
  }
  return null;
}

/**
 * Check the tensors of one weight file against the layout: every tensor of `prefix` that the
 * configuration implies is there (full or short GPT-2 name) as F32 with its shape, and
 * nothing else is. Returns the file's name of each layout tensor.
 */
function checkTensorNames(
  path: string,
  file: SafetensorsFile,
  layout: ParamLayout,
  prefix: string,
  m: ModelConfig,
): Map<string, string> {
  const described = `the model that config.json field "lotus.model" describes (nLayer ` +
    `${m.nLayer}, dModel ${m.dModel}, vocabSize ${m.vocabSize}, maxPositions ` +
    `${m.maxPositions}` + (prefix === "aux." ? `, auxLayers ${m.auxLayers})` : ")");
  const fix = `the weights and config.json are of different models: ${RESTORE}`;
  const keys = new Map<string, string>();
  for (const t of layout.tensors) {
    if (!inPart(t.name, prefix)) continue;
    const short = t.name.startsWith("transformer.") ? t.name.slice(prefix.length) : t.name;
    const key = t.name in file.tensors ? t.name : short in file.tensors ? short : null;
    if (key === null) {
      throw new CheckpointError(
        `${path}: tensor "${t.name}" is missing, but ${described} has it; ${fix}`,
      );
    }
    const src = file.tensors[key];
    if (src.dtype !== "F32") {
      throw new CheckpointError(
        `${path}: tensor "${t.name}" is ${src.dtype}; checkpoints hold F32 weights: ${RESTORE}`,
      );
    }
    const want = t.hfTransposed ? [t.shape[1], t.shape[0]] : t.shape;
    if (src.shape.length !== want.length || src.shape.some((d, i) => d !== want[i])) {
      throw new CheckpointError(
        `${path}: tensor "${t.name}" has shape [${src.shape}], but ${described} needs ` +
          `[${want}]; ${fix}`,
      );
    }
    keys.set(t.name, key);
  }
  const used = new Set(keys.values());
  for (const name of Object.keys(file.tensors)) {
    if (used.has(name)) continue;
    const layer = /(?:^|\.)(?:h|layers)\.(\d+)\./.exec(name);
    const field = prefix === "aux." ? "auxLayers" : "nLayer";
    throw new CheckpointError(
      layer && Number(layer[1]) >= m[field]
        ? `${path}: tensor "${name}" belongs to layer ${layer[1]}, but config.json field ` +
          `"lotus.model.${field}" is ${m[field]}; ${fix}`
        : `${path}: tensor "${name}" is not a tensor of ${described}; ${fix}`,
    );
  }
  return keys;
}

/**
 * Check that the files of a checkpoint directory describe one consistent model, before any
 * of it is used. {@linkcode loadCheckpoint} runs it, and through it evaluation, inference,
 * export and resume. It checks:
 *
 * - config.json: the "lotus" section is valid; its GPT-2 fields (`vocab_size`,
 *   `n_positions`, `n_embd`, `n_layer`, `n_head`, the token ids) agree with it;
 * - the special ids: inside the vocabulary, and EOS, BOT, EOT and LAT distinct (PAD may
 *   only share EOS's id);
 * - the weights: every tensor the configuration implies, with its shape and nothing else,
 *   in model.safetensors (and aux.safetensors for a LOTUS-aux model); every value finite;
 * - optimizer.safetensors, when present: F32 moments `m` and `v` of one value per
 *   parameter (and finite, when its tensors were read);
 * - tokenizer.json: it loads, has `vocabSize` tokens, and its EOS and LOTUS tokens have the
 *   special ids of config.json.
 *
 * The weights' finiteness costs one pass over them: 9 ms for the `small` preset (4.5 M
 * parameters) and 0.25 s for `gpt2` (124 M), of a 2.5 s load (bench/checkpoint_load.ts).
 *
 * @throws {CheckpointError} naming the first file and field at fault and what to do.
 *
 * @example
 * ```ts ignore
 * import { verifyCheckpoint } from "./checkpoint.ts";
 * import { readSafetensors } from "../base/safetensors.ts";
 * const dir = "out/runs/default/checkpoint";
 * const { meta, tokenizer } = verifyCheckpoint({
 *   dir,
 *   config: JSON.parse(await Deno.readTextFile(`${dir}/config.json`)),
 *   model: await readSafetensors(`${dir}/model.safetensors`),
 *   aux: null,
 *   optimizer: null,
 *   tokenizerJson: await Deno.readTextFile(`${dir}/tokenizer.json`),
 * });
 * console.log(meta.model.nLayer, tokenizer.vocabSize === meta.model.vocabSize);
 * ```
 */
export function verifyCheckpoint(f: CheckpointFiles): VerifiedCheckpoint {
  const { dir } = f;
  const cfgPath = `${dir}/config.json`;
  if (!isRecord(f.config)) {
    throw new CheckpointError(
      `${cfgPath}: not a JSON object; the directory was not written by deno task train`,
    );
  }
  const cfg = f.config;
  if (cfg.lotus === undefined) {
    // A Hugging Face model directory (or an export that lost its lotus.json): its config.json
    // has the model's fields but none of this project's.
    throw new CheckpointError(
      `${cfgPath}: no "lotus" section, so ${dir} is not a checkpoint of deno task train ` +
        `(a Hugging Face model directory has none); pass a checkpoint or run directory, or ` +
        `start a run from its weights with deno task train --init (docs/training.md)`,
    );
  }
  const metaRes = LotusMetaSchema.safeParse(cfg.lotus);
  if (!metaRes.success) {
    throw new CheckpointError(
      `${cfgPath}: ${fieldIssue(metaRes.error, "lotus.")}; the directory was not written by ` +
        `deno task train`,
    );
  }
  const meta = metaRes.data, m = meta.model, sp = meta.special, V = m.vocabSize;

  // The special ids: in the vocabulary, distinct where they must be.
  for (const k of ["eos", "pad", "bot", "eot", "lat"] as const) {
    if (sp[k] < 0 || sp[k] >= V) {
      throw new CheckpointError(
        `${cfgPath}: field "lotus.special.${k}" is ${sp[k]}, outside the vocabulary [0, ${V}) ` +
          `of "lotus.model.vocabSize"; the special ids come from the dataset's tokenizer: ` +
          RESTORE,
      );
    }
  }
  for (const [a, b] of DISTINCT_SPECIALS) {
    if (sp[a] === sp[b]) {
      throw new CheckpointError(
        `${cfgPath}: fields "lotus.special.${a}" and "lotus.special.${b}" are both ${sp[a]}; ` +
          `EOS, BOT, EOT and LAT must be distinct tokens (PAD may share EOS's id only): ` +
          RESTORE,
      );
    }
  }

  // The GPT-2 (or Llama) fields, which Hugging Face readers use, against the "lotus" section.
  const llama = archOf(m) === "llama";
  for (const [hf, ours] of llama ? LLAMA_FIELDS : GPT2_FIELDS) {
    if (cfg[hf] !== m[ours]) {
      throw new CheckpointError(
        `${cfgPath}: field "${hf}" is ${JSON.stringify(cfg[hf])}, but "lotus.model.${ours}" ` +
          `is ${m[ours]}; the two describe one model and must agree: ${RESTORE}`,
      );
    }
  }
  if ("n_ctx" in cfg && cfg.n_ctx !== m.maxPositions) {
    throw new CheckpointError(
      `${cfgPath}: field "n_ctx" is ${JSON.stringify(cfg.n_ctx)}, but ` +
        `"lotus.model.maxPositions" is ${m.maxPositions}; the two must agree: ${RESTORE}`,
    );
  }
  for (const [hf, ours] of GPT2_IDS) {
    if (cfg[hf] !== sp[ours]) {
      throw new CheckpointError(
        `${cfgPath}: field "${hf}" is ${JSON.stringify(cfg[hf])}, but "lotus.special.${ours}" ` +
          `is ${sp[ours]}; the two must agree: ${RESTORE}`,
      );
    }
  }

  // The weights' names and shapes.
  const layout = paramLayout(m);
  const modelPath = `${dir}/model.safetensors`, auxPath = `${dir}/aux.safetensors`;
  const weights: [string, SafetensorsFile, Map<string, string>][] = [
    [modelPath, f.model, checkTensorNames(modelPath, f.model, layout, "transformer.", m)],
  ];
  if (layout.aux) {
    if (!f.aux) {
      throw new CheckpointError(
        `${auxPath}: missing, but config.json field "lotus.model.auxLayers" is ${m.auxLayers} ` +
          `(a LOTUS-aux model); ${RESTORE}`,
      );
    }
    weights.push([auxPath, f.aux, checkTensorNames(auxPath, f.aux, layout, "aux.", m)]);
  } else if (f.aux) {
    throw new CheckpointError(
      `${auxPath}: present, but config.json field "lotus.model.auxLayers" is 0 (no LOTUS-aux ` +
        `decoder); the file belongs to another checkpoint: ${RESTORE}`,
    );
  }

  // The optimiser's moments: one value per parameter.
  if (f.optimizer) {
    const optPath = `${dir}/optimizer.safetensors`, n = layout.total;
    const fix = "the file belongs to another model or is damaged: delete it to evaluate, " +
      "infer or export (a resume needs it: resume from another checkpoint)";
    const h = f.optimizer.header.tensors;
    for (const k of ["m", "v"]) {
      const t = h[k];
      if (!t || t.dtype !== "F32" || t.shape.length !== 1 || t.shape[0] !== n) {
        throw new CheckpointError(
          `${optPath}: tensor "${k}" is ${t ? `${t.dtype} [${t.shape}]` : "missing"}, but the ` +
            `AdamW moments of this model's ${n} parameters are F32 [${n}]; ${fix}`,
        );
      }
    }
    const extra = Object.keys(h).find((k) => k !== "m" && k !== "v");
    if (extra !== undefined) {
      throw new CheckpointError(
        `${optPath}: tensor "${extra}" is not an AdamW moment (only "m" and "v" are); ${fix}`,
      );
    }
  }

  // The tokenizer: this checkpoint's vocabulary and special tokens.
  const copy = `copy the tokenizer.json of the dataset it was trained on ` +
    `(config.json field "lotus.data.dir": ${JSON.stringify(meta.data.dir)})`;
  const tokenizer = tokenizerOfModel(f.tokenizerJson, `${dir}/tokenizer.json`, {
    vocabSize: V,
    special: sp,
    owner: "checkpoint",
    file: "config.json",
    vocabField: "lotus.model.vocabSize",
    specialField: "lotus.special.",
  }, copy);

  // Every value finite: one pass over the weights (and the moments, when read).
  const diverged = "the weights diverged or the file is damaged: use an earlier checkpoint, " +
    "or train again (a lower --lr; --on-non-finite skip steps over rare spikes)";
  for (const [path, file, keys] of weights) {
    for (const key of keys.values()) {
      const bad = nonFinite(file.tensors[key].data as Float32Array);
      if (bad) {
        throw new CheckpointError(
          `${path}: tensor "${key}" holds non-finite values (the first: [${bad.at}] = ` +
            `${bad.value}; ${bad.count} of its ${file.tensors[key].data.length} values); ` +
            diverged,
        );
      }
    }
  }
  const moments = f.optimizer?.file;
  if (moments) {
    for (const k of ["m", "v"]) {
      const bad = nonFinite(moments.tensors[k]?.data as Float32Array);
      if (bad) {
        throw new CheckpointError(
          `${dir}/optimizer.safetensors: tensor "${k}" holds non-finite values (the first: ` +
            `[${bad.at}] = ${bad.value}; ${bad.count} in all); a resume would carry them into ` +
            `training: resume from an earlier checkpoint`,
        );
      }
    }
  }
  return { meta, tokenizer };
}

/** A checkpoint as {@linkcode loadCheckpoint} returns it: verified, with its tokenizer. */
export interface LoadedCheckpoint extends CheckpointData {
  /** The checkpoint's tokenizer (tokenizer.json), checked against config.json. */
  tokenizer: Tokenizer;
}

/**
 * A checkpoint loaded with `trainState: "optional"` (evaluation, inference, export): as
 * {@linkcode LoadedCheckpoint}, but `state` is null when train_state.json is missing or
 * damaged, and `stateProblem` then says why.
 */
export interface CheckpointForUse extends Omit<LoadedCheckpoint, "state"> {
  /** The trainer's position, or null when train_state.json could not be read. */
  state: TrainState | null;
  /** Why `state` is null (the file and the problem), else null. */
  stateProblem: string | null;
}

/** Options of {@linkcode loadCheckpoint}. */
export interface LoadCheckpointOptions {
  /** Read the AdamW moments (a resume): optimizer.safetensors must be present. */
  withOptimizer?: boolean;
  /**
   * "require" (the default, what a resume needs): a missing or damaged train_state.json is a
   * {@linkcode CheckpointError}. "optional": evaluation, inference and export, which use it
   * only for the curriculum stage the checkpoint reached, get `state` null instead.
   */
  trainState?: "require" | "optional";
  /**
   * "require" (the default): a checkpoint without checksums.json, which every save writes, is
   * a {@linkcode CheckpointError}. "optional": such a checkpoint (files put together by hand,
   * or saved before saves recorded them) is loaded with every other check but none against a
   * record; {@linkcode saveCheckpoint} of what it loads writes a checkpoint with one.
   */
  checksums?: "require" | "optional";
}

/** Every option of {@linkcode LoadCheckpointOptions}. */
const LOAD_OPTIONS: OptionNames<LoadCheckpointOptions> = {
  withOptimizer: true,
  trainState: true,
  checksums: true,
};

/**
 * Where a checkpoint's training stood, for the shape it answers with: its train state's epoch
 * and step, or, without one (train_state.json missing or damaged), the start of the run's
 * final curriculum stage, where a finished run's checkpoint is.
 */
export function progressOf(
  meta: LotusMeta,
  state: { epoch: number; step: number } | null,
): { epoch: number; step: number } {
  if (state) return { epoch: state.epoch, step: state.step };
  const t = meta.train;
  return { epoch: t.epochsPerStage * t.k, step: t.stepsPerStage * t.k + 1 };
}

/**
 * The one-line note for a checkpoint used without its train state (`problem`, from
 * {@linkcode CheckpointForUse.stateProblem}): what is assumed instead. `assumed` is the shape
 * taken, for a LOTUS checkpoint whose shape depends on the stage it reached.
 */
export function trainStateNote(
  meta: LotusMeta,
  problem: string,
  assumed: { K: number; R: number },
): string {
  const t = meta.train;
  const staged = t.mode !== "cot" && t.mode !== "nocot" && t.k > 0 &&
    (t.epochsPerStage > 0 || t.stepsPerStage > 0);
  return `${problem}; only --resume needs train_state.json` +
    (staged
      ? `; without it the checkpoint is taken to have reached its final curriculum stage, ` +
        `K = ${assumed.K}, R = ${assumed.R}, as a finished run has (--k and --r choose another)`
      : "");
}

/** What a tokenizer must match: a model's vocabulary and special ids, and where they are read. */
export interface TokenizerModel {
  /** The model's vocabulary size. */
  vocabSize: number;
  /** The model's special token ids. */
  special: SpecialIds;
  /** What the model is, named in errors: a checkpoint or an export. */
  owner: "checkpoint" | "export";
  /** The file that records them (named in errors), e.g. config.json. */
  file: string;
  /** The field of `file` holding the vocabulary size. */
  vocabField: string;
  /** The prefix of the fields of `file` holding the special ids, e.g. "lotus.special.". */
  specialField: string;
}

/**
 * The tokenizer of `json` (the text of `tokPath`), refused with `fix` when it cannot be
 * loaded or does not belong to `model`: another vocabulary size, or other special ids.
 */
export function tokenizerOfModel(
  json: string,
  tokPath: string,
  model: TokenizerModel,
  fix: string,
): Tokenizer {
  let tokenizer: Tokenizer;
  try {
    tokenizer = tokenizerFromJson(json, "file", tokPath);
  } catch (e) {
    throw new CheckpointError(`${(e as Error).message}; ${fix}`);
  }
  const { vocabSize: V, special: sp, file } = model;
  if (tokenizer.vocabSize !== V) {
    throw new CheckpointError(
      `${tokPath}: ${tokenizer.vocabSize} tokens, but ${file} field ` +
        `"${model.vocabField}" is ${V}; the tokenizer does not belong to this ${model.owner}: ` +
        fix,
    );
  }
  for (const k of ["eos", "bot", "eot", "lat"] as const) {
    if (tokenizer.special[k] !== sp[k]) {
      throw new CheckpointError(
        `${tokPath}: the ${k.toUpperCase()} token has id ${tokenizer.special[k]}, but ` +
          `${file} field "${model.specialField}${k}" says ${sp[k]}; the tokenizer does not ` +
          `belong to this ${model.owner}: ${fix}`,
      );
    }
  }
  return tokenizer;
}

/**
 * Load a checkpoint directory (or a run directory holding `checkpoint/`), verified by
 * {@linkcode verifyCheckpoint} before anything is built from it, and each file against the
 * save's checksums.json (required unless `checksums: "optional"`). With `withOptimizer`, the
 * AdamW moments must be present and are returned in `moments`. With `trainState:
 * "optional"` (evaluation, inference, export) a missing or damaged train_state.json gives
 * `state` null and the reason in `stateProblem`; otherwise (a resume) it is an error.
 *
 * @throws {RangeError} for an option that {@linkcode LoadCheckpointOptions} does not have.
 * @throws {CheckpointError} when a file is missing (checksums.json included) or unreadable,
 * differs from the save's record of it, config.json was not
 * written by the trainer, or the files do not describe one consistent, finite model.
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
  opts: LoadCheckpointOptions & { trainState: "optional" },
): Promise<CheckpointForUse>;
/** Load a checkpoint for a resume: train_state.json must be there and sound. */
export async function loadCheckpoint(
  dirIn: string,
  opts?: LoadCheckpointOptions,
): Promise<LoadedCheckpoint>;
/** Load a checkpoint (the implementation of both forms). */
export async function loadCheckpoint(
  dirIn: string,
  opts: LoadCheckpointOptions = {},
): Promise<LoadedCheckpoint | CheckpointForUse> {
  refuseUnknownOptions("loadCheckpoint", opts, LOAD_OPTIONS);
  await recoverCheckpoint(dirIn);
  await refuseNoDirectory(dirIn);
  const dir = checkpointDirOf(dirIn);
  await refuseUnsavedRun(dirIn, dir);
  const sums = await readChecksums(dir);
  if (sums === null && !(await exists(`${dir}/config.json`))) {
    // config.json tells a checkpoint directory: one whose save recorded it has lost it since.
    if (dir !== dirIn && (await readChecksums(dirIn))?.files["config.json"]) {
      throw new CheckpointError(`${dirIn}/config.json: missing; ${FILE_GONE}`);
    }
    // Nothing of a save there: another kind of directory, not a damaged checkpoint.
    throw new CheckpointError(
      `${dirIn}: no config.json here or in ${dir}; give a checkpoint or run directory ` +
        `written by deno task train`,
    );
  }
  const config = await readConfig(`${dir}/config.json`, sums);
  const model = await readSt(`${dir}/model.safetensors`, sums);
  const auxPath = `${dir}/aux.safetensors`, optPath = `${dir}/optimizer.safetensors`;
  const aux = await exists(auxPath) ? await readSt(auxPath, sums) : null;
  let optimizer: CheckpointFiles["optimizer"] = null;
  if (opts.withOptimizer || await exists(optPath)) {
    let header: SafetensorsHeader;
    if (!(await exists(optPath))) {
      throw new CheckpointError(`${optPath}: missing; ${OPTIMIZER_GONE}`);
    }
    try {
      header = await readSafetensorsHeader(optPath);
    } catch (e) {
      throw new CheckpointError((e as Error).message);
    }
    // The moments themselves only for a resume: eval, infer and export never use them.
    // Read whole for a resume, and checked whole; its size alone otherwise.
    if (!opts.withOptimizer) await checkSum(dir, "optimizer.safetensors", null, sums);
    optimizer = {
      header,
      file: opts.withOptimizer ? await readSt(optPath, sums, OPTIMIZER_GONE) : undefined,
    };
  }
  let tokenizerJson: string;
  try {
    const bytes = await Deno.readFile(`${dir}/tokenizer.json`);
    await checkSum(dir, "tokenizer.json", bytes, sums);
    tokenizerJson = new TextDecoder().decode(bytes);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`${dir}/tokenizer.json: missing; ${FILE_GONE}`);
    }
    throw new CheckpointError(`${dir}/tokenizer.json: cannot read (${(e as Error).message})`);
  }
  const { meta, tokenizer } = verifyCheckpoint({
    dir,
    config,
    model,
    aux,
    optimizer,
    tokenizerJson,
  });
  // After the checks of what the files hold, which name a more precise problem (a directory
  // of another kind among them).
  if (sums === null && opts.checksums !== "optional") {
    throw new CheckpointError(sumsMissing(dir));
  }
  const layout = paramLayout(meta.model);
  const params = new Float32Array(layout.total);
  fromHfTensors(model, params, layout, "transformer.", `${dir}/model.safetensors`);
  if (layout.aux) fromHfTensors(aux!, params, layout, "aux.", auxPath);
  let moments: CheckpointData["moments"];
  if (optimizer?.file) {
    const t = optimizer.file.tensors;
    moments = { m: (t.m.data as Float32Array).slice(), v: (t.v.data as Float32Array).slice() };
  }
  const state = await readTrainState(dir, sums);
  if (typeof state !== "string") {
    return { meta, params, moments, state, stateProblem: null, tokenizerJson, tokenizer };
  }
  if (opts.trainState !== "optional") throw new CheckpointError(`${state}; ${stateAdvice(dir)}`);
  return { meta, params, moments, state: null, stateProblem: state, tokenizerJson, tokenizer };
}

/**
 * train_state.json of checkpoint directory `dir`, checked; or, when it is missing or damaged,
 * what is wrong with it (the file and the problem).
 */
async function readTrainState(
  dir: string,
  sums: Checksums | null = null,
): Promise<TrainState | string> {
  const path = `${dir}/train_state.json`;
  let text: string;
  try {
    const bytes = await Deno.readFile(path);
    text = new TextDecoder().decode(bytes);
    // Inference goes on without a damaged train_state.json; what it says is the problem.
    await checkSum(dir, "train_state.json", bytes, sums);
  } catch (e) {
    rethrowIfDenied(e);
    if (e instanceof CheckpointError) return e.message;
    return `${path}: cannot read (${(e as Error).message})`;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return `${path}: not valid JSON (${jsonErrorText(e)}); the file is damaged (a save ` +
      `writes it whole, so it was cut short or changed since)`;
  }
  const res = TrainStateSchema.safeParse(raw);
  return res.success ? res.data : `${path}: ${fieldIssue(res.error)}`;
}

/**
 * The train state a save recorded in checkpoint directory `dir` (its train_state.json, checked
 * against the save's checksums), or null when the directory holds none that reads: the step a
 * save was made at, without loading its weights.
 *
 * @example
 * ```ts ignore
 * import { readSavedTrainState } from "./checkpoint.ts";
 * const s = await readSavedTrainState("out/runs/default/best");
 * console.log(s?.step, s?.bestAccuracy);
 * ```
 */
export async function readSavedTrainState(dir: string): Promise<TrainState | null> {
  let sums: Checksums | null;
  try {
    sums = await readChecksums(dir);
  } catch (e) {
    if (e instanceof CheckpointError) return null;
    throw e;
  }
  const state = await readTrainState(dir, sums);
  return typeof state === "string" ? null : state;
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
  // A checkpoint of this project's is checked against its save's record, as a load checks it.
  const sums = await readChecksums(splitPath(path).parent);
  const { vocabRows } = fromHfTensors(
    await readSt(path, sums),
    params,
    layout,
    "transformer.",
    path,
    {
      allowVocabGrowth: true,
    },
  );
  return { params, vocabRows };
}

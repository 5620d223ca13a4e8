/**
 * The training loop (nanoGPT's shape): data, forward, backward, clip, step, log, evaluate,
 * checkpoint. The LOTUS step lives in step.ts, the curriculum, learning rate and data order
 * in schedule.ts, the log format in run_log.ts; this module runs them, and owns faults,
 * signals, evaluation during training and checkpoints.
 *
 * Determinism: the data order of epoch e is a shuffle drawn from `new Rng(seed, e)`
 * (schedule.ts's epochOrder), the CPU engine is deterministic for a fixed thread count, and
 * the state saved in train_state.json (step, epoch, position in the epoch) is all a resume
 * needs, so an interrupted and resumed run ends with the same weights, bit for bit, as an
 * uninterrupted one.
 *
 * @module
 */

import {
  HfLlamaError,
  llamaInitConfig,
  loadLlamaWeights,
  modelConfigFromLlamaJson,
} from "../model/hf_llama.ts";
import { type Precision, PRECISIONS, PRECISIONS_TEXT } from "../engine/ffi.ts";
import { selectEngine } from "../engine/backend.ts";
import { type BackendName, BACKENDS } from "../engine/types.ts";
import { z } from "zod";
import {
  type Arch,
  archOf,
  ARCHS,
  type ModelConfig,
  PRESET_NAMES,
  presetConfig,
  presetForArch,
  type PresetName,
  type TrainConfig,
  TrainConfigSchema,
} from "../model/config.ts";
import {
  type Example,
  lotusBatch,
  lotusLength,
  plainBatch,
  plainLength,
  suffixOf,
} from "./batch.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";
import { initParams, initSpecialRows, paramLayout } from "../model/params.ts";
import {
  epochOrder,
  finalStageStart,
  isFinalStage,
  lrAt,
  stageOf,
  stageShape,
  totalSteps,
} from "./schedule.ts";
import { type LogRecord, readTrainLog, RunLog } from "./run_log.ts";
import {
  checkSettings,
  curriculumNotes,
  defaultRecipe,
  type RecipeName,
  recipeSettings,
  resolveTrainConfig,
  RESUME_MAY_CHANGE,
  resumeChanges,
  resumeRunDir,
  resumeTrainConfig,
  TrainConfigError,
  unusedSettingNotes,
} from "./options.ts";
import { adamwOf, Model } from "../model/model.ts";
import {
  type LotusOptions,
  LotusRunner,
  MAX_STEP_GRAPHS,
  PlainRunner,
  type StepLosses,
} from "./step.ts";
import { Generator } from "../model/generate.ts";
import { DatasetError, datasetFingerprint, loadSplit, type SplitData } from "./dataset.ts";
import { type Manifest, ManifestError, readManifest } from "../pipeline/manifest.ts";
import {
  type CheckpointData,
  checkpointDirOf,
  CheckpointError,
  freshTrainState,
  loadCheckpoint,
  loadHfInit,
  type LotusMeta,
  LotusMetaSchema,
  saveCheckpoint,
  type TrainState,
} from "../model/checkpoint.ts";
import { answersMatch, extractAnswer } from "../pipeline/answer.ts";
import { type Tokenizer, tokenizerDifference, tokenizerFromJson } from "../pipeline/tokenizer.ts";
import { writeFileAtomic } from "../base/atomic.ts";
import { readSafetensorsHeader } from "../base/safetensors.ts";
import { fieldIssue } from "../base/json.ts";
import { absolutePath, splitPath } from "../base/staging.ts";
import { exists, isDirectory, rethrowIfDenied } from "../base/exists.ts";
import { mixSeed } from "../base/rng.ts";
// A run listens for the stop signals from the end of its set-up to its end (the current step
// ends, a checkpoint is saved); the CoT start of a two-phase run goes on listening until LOTUS
// ends, so that a signal between the phases, or while LOTUS sets up, stops LOTUS as well.
import { signalTurns, type StopWatch, watchStopSignals } from "../base/signals.ts";
import { readDatasetTokenizer, VERIFY_MODES, type VerifyMode } from "../pipeline/shard.ts";
import { DataParallel, type World, worldFromEnv } from "./data_parallel.ts";
import { type Engine, openEngine } from "../engine/ffi.ts";
import { probeCuda } from "../engine/cuda_probe.ts";
import {
  claimRunDir,
  completedRun,
  holdsSavedRun,
  lockRunDir,
  makeRunDir,
  notARun,
  readSummary,
  refuseEvalOutput,
  removeMadeDirs,
  removeRunEntries,
  RUN_ENTRIES,
  RUN_LOCK,
  type SetAside,
  settleReplaced,
} from "./run_dir.ts";

/** Everything `deno task train` takes. */
export interface TrainOptions {
  /** Dataset directory; with `resume`, defaults to the one the run trained on. */
  data?: string;
  /**
   * Run directory: logs and `checkpoint/`. Needed for a fresh run; with `resume`, it defaults
   * to the run resumed (the only directory a resume writes to).
   */
  out?: string;
  /**
   * Model size (default "tiny"; a resume keeps the run's, an `init` model of this project
   * brings its own, and a Hugging Face Llama directory the Llama preset of its size).
   */
  preset?: PresetName;
  /**
   * The backbone: "gpt2" or "llama"; the preset becomes its counterpart in that architecture
   * (tiny and llama-tiny; see presetForArch). Absent: the preset's own.
   */
  arch?: Arch;
  /**
   * Training settings; what is not given is resolved by {@linkcode resolveTrainConfig}: K and c
   * from the dataset, the learning rate from the preset, the rest from the defaults.
   */
  train?: Partial<TrainConfig>;
  /** Where to run (default "cpu"). */
  backend?: BackendName;
  /** Matmul precision on CUDA: bf16 (default), tf32 or fp32 (engine/ffi.ts). The CPU engine
   * has only fp32, its default. */
  precision?: Precision;
  /**
   * Keep fewer activations and recompute the normalisations, attention outputs and MLP
   * activations in the backward (no matmul; bit-identical gradients; LotusCapacity.recompute
   * in train/step.ts). Default: on with the CUDA engine, where memory is the limit; off on the
   * CPU, where the extra work costs time and memory is plenty.
   */
  recompute?: boolean;
  /**
   * CUDA engine: record a batch shape's training step as a CUDA graph at its second
   * occurrence and replay it from the third (LotusCapacity.maxGraphs in train/step.ts; the
   * same bits as running its ops). Default on; the CPU engine has no graphs.
   */
  graphs?: boolean;
  /** CPU threads (0: all cores). */
  threads?: number;
  /**
   * Examples a forward and backward take at once (on each rank of a data-parallel run): a
   * step runs its batch (a rank its part) in micro-batches of at most this many and adds up
   * their gradients, each divided by the whole batch's target counts, so that the step is
   * the batch's, to float rounding, in the memory of a micro-batch. Evaluations run in
   * batches of this size too, when it is smaller than the batch. Default: the whole batch (a
   * rank's part; evaluations: the batch). Not saved with the run: a resume may give another
   * (its steps then differ from the first N's by float rounding, and with dropout by masks).
   */
  microBatch?: number;
  /**
   * Weights to start from: a local Hugging Face GPT-2 model.safetensors, a run or checkpoint
   * directory (the reference starts LOTUS from its explicit-CoT model this way), or a local
   * Hugging Face Llama directory (config.json with model_type "llama", model.safetensors or
   * sharded safetensors), whose config.json then sets the model's shape.
   */
  init?: string;
  /**
   * A named recipe whose settings apply under the ones `train` gives (train/options.ts,
   * recipeSettings): "from-cot" (the default for LOTUS: explicit CoT first, then LOTUS from it),
   * "paper" (the reference's LOTUS protocol) or "none" (the default for the baselines).
   */
  recipe?: RecipeName;
  /** A run or checkpoint directory to continue exactly. */
  resume?: string;
  /**
   * Replace the run `out` already holds (its checkpoints, best weights, CoT start, plan and
   * logs). Without it, a fresh run into a directory that holds one is refused, so that a
   * finished or stopped run is not lost to a mistyped `--out`.
   */
  overwrite?: boolean;
  /** The split trained on (default "train"). */
  trainSplit?: string;
  /**
   * The split evaluated on (default "valid"); when the dataset lacks it, evaluation reports
   * accuracy on the training examples.
   */
  valSplit?: string;
  /** Stop (after saving a checkpoint) once this many steps have run in this process. */
  stopAfter?: number;
  /**
   * How much of the dataset to check against its manifest on load: `basic` (the default:
   * counts, shapes, sizes, offsets, token ids) or `full` (also every file's sha256);
   * docs/dataset-format.md.
   */
  verifyData?: VerifyMode;
  /**
   * Print nothing on stderr: no progress line, no notes, and not the compiler's command when
   * the engine is built on first use.
   */
  quiet?: boolean;
  /**
   * Stops the run when aborted, as SIGTERM does: at the end of the step under way, saved and
   * resumable, with `interrupted` "SIGTERM" (a fresh run aborted before its second step saves
   * nothing: {@linkcode TrainResult.nothingSaved}). Looked at once the run's set-up is done:
   * aborted before, the run stops before its first step.
   */
  signal?: AbortSignal;
  /**
   * Called with every log record (on every rank of a data-parallel run), and the phase it is
   * of: a run of the "from-cot" recipe logs its CoT start's steps (numbered from 1, into
   * `out/cot-start`), then LOTUS's (numbered from 1 again, into `out`).
   */
  onLog?: (rec: LogRecord, phase: TrainPhase) => void;
  /**
   * Data-parallel runs (started by mpirun, docs/distributed.md): how many seconds a rank
   * waits at a collective for the others before it ends the job with a message (default
   * 600; 0: no limit). Ignored by a single process.
   */
  commTimeout?: number;
  /**
   * Data-parallel runs: "on" (the default) sums each block's gradient over the ranks as soon
   * as the backward is done with it, while the backward goes on; "off" sums the whole
   * gradient once, after the backward. The result is the same (docs/distributed.md).
   */
  commOverlap?: "on" | "off";
}

/**
 * The phase of a run that a log record is of: `cot-start`, the explicit-CoT start of the
 * "from-cot" recipe (its log is `out/cot-start`'s); `main`, the run asked for (its log is
 * `out`'s).
 */
export type TrainPhase = "cot-start" | "main";

/** {@linkcode TrainOptions} with the run directory resolved. */
type RunOptions = TrainOptions & { out: string };

/**
 * `opts` with its run directory: `out`, else the run `resume` names.
 *
 * @throws {TrainConfigError} (`--out`) when neither is given.
 */
function withRunDir(opts: TrainOptions): RunOptions {
  if (opts.out !== undefined) return opts as RunOptions;
  if (opts.resume !== undefined) return { ...opts, out: resumeRunDir(opts.resume) };
  throw new TrainConfigError(
    "--out",
    "--out: give the run directory (only a resume, which writes to the run it continues, may " +
      "leave it out)",
  );
}

/** What a run returns. */
export interface TrainResult {
  /** Optimiser steps the model has taken, those before a resume included. */
  steps: number;
  /**
   * The total loss of the last step run; for a call that ran none (a resume that only
   * evaluated), the one the log holds for the last step, else NaN.
   */
  finalLoss: number;
  /**
   * Mean answer loss of the last evaluation this call ran: at the end of a completed run, or
   * the latest periodic one (`evalEvery`) before a stop; undefined when none ran.
   */
  valLoss?: number;
  /** Greedy exact-match accuracy (0 to 1) of that evaluation; undefined when none ran. */
  valAccuracy?: number;
  /**
   * True when the evaluations ran on training examples, because the dataset has no
   * validation split (`valSplit`, default `valid`) or none of its examples fits the model's
   * positions: `valLoss` and `valAccuracy` are then the training set's.
   */
  evalOnTraining?: boolean;
  /** The checkpoint directory written, `<out>/checkpoint` (not written with `nothingSaved`). */
  checkpoint: string;
  /** Parameters of the backbone (what inference and export use; an aux decoder excluded). */
  params: number;
  /** Token positions forwarded per second of training, over the whole run. */
  tokensPerSec: number;
  /** Training wall time in seconds, over the whole run (the part before a resume included). */
  seconds: number;
  /**
   * The signal that stopped the run early (it was saved and can be resumed, unless
   * `nothingSaved`); null otherwise.
   */
  interrupted: Deno.Signal | null;
  /**
   * True when the signal stopped a fresh run (not a resume) before or in its first step
   * (`steps` says which: 0 or 1): nothing was saved, and what the run had written into `out` is
   * gone (the directories it made for it too; in a directory that was there, its lock file
   * stays; the run an `overwrite` set aside is back in place), so that the same call starts it
   * again. A stop that comes later, or in LOTUS after its CoT start, saves as usual.
   */
  nothingSaved?: boolean;
  /** Steps whose update was skipped for a non-finite loss or gradient (`onNonFinite: "skip"`). */
  skippedSteps: number;
  /**
   * With `keepBest`: the best validation accuracy of the final stage, its step and the
   * directory holding its weights (`<out>/best`); undefined when no evaluation improved on it.
   */
  best?: { step: number; valAccuracy: number; dir: string };
  /** True when the run reached its last step (not stopped by a signal or `stopAfter`). */
  completed: boolean;
  /** The explicit-CoT run this LOTUS run started from (`cotStartEpochs`), when it trained one. */
  cotStart?: TrainResult;
  /** This process's rank and the job's size, in a data-parallel run; undefined otherwise. */
  world?: { rank: number; size: number };
}

/**
 * The weights file `--init` names: a model.safetensors, or a run, checkpoint or model directory
 * (a CoT run's, say), whose model.safetensors it takes.
 */
async function initFile(path: string): Promise<string> {
  let dir = false;
  try {
    dir = (await Deno.stat(path)).isDirectory;
  } catch (e) {
    rethrowIfDenied(e);
    throw new TrainConfigError("--init", `--init ${path}: not found`);
  }
  if (!dir) return path;
  const ck = checkpointDirOf(path);
  // A bare directory of weights (no config.json) is read as it is, not as a run.
  if (ck !== path && !(await exists(ck)) && (await exists(`${path}/model.safetensors`))) {
    return `${path}/model.safetensors`;
  }
  return `${ck}/model.safetensors`;
}

/**
 * Refuses a dataset whose tokenizer is not that of the Hugging Face Llama directory `dir` (its
 * tokenizer.json with the LOTUS tokens appended): its ids would index other tokens' rows. A
 * directory without a tokenizer.json cannot tell a padded vocabulary (`vocabSize`, its
 * config.json's, above its tokenizer's ids) from another tokenizer's: a dataset with fewer ids
 * than that is refused there; one with as many or more is taken as built with its tokenizer.
 */
async function checkLlamaTokenizer(
  dir: string,
  vocabSize: number,
  tok: Tokenizer,
  dataDir: string,
): Promise<void> {
  const path = `${dir}/tokenizer.json`;
  let text: string | null = null;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    rethrowIfDenied(e);
  }
  if (text === null) {
    if (tok.vocabSize >= vocabSize) return;
    throw new TrainConfigError(
      "--init",
      `--init ${dir}: its config.json's vocab_size is ${vocabSize}, more than the dataset's ` +
        `vocabulary (${tok.vocabSize}), and it has no tokenizer.json to tell a padded ` +
        `vocabulary from another tokenizer: put the model's tokenizer.json there, and build ` +
        `the dataset with it (--tokenizer)`,
    );
  }
  const diff = tokenizerDifference(text, tok, path);
  if (diff !== null) {
    throw new TrainConfigError(
      "--init",
      `--init ${dir}: the dataset ${dataDir} was not built with this model's tokenizer ` +
        `(${diff}): build it with --tokenizer ${path}`,
    );
  }
}

/** What `--init` accepts, for the messages that refuse one. */
const INIT_TAKES = "--init takes a Hugging Face GPT-2 model.safetensors, a run, checkpoint or " +
  "export directory of this project (or its model.safetensors), or a downloaded Hugging Face " +
  "Llama directory";

/**
 * Checks, before the dataset loads, that `--init` (not a Hugging Face Llama directory, which
 * its loader checks) names weights: a safetensors file whose header reads. A file of another
 * kind, or a directory without model.safetensors where one is looked for, is a
 * {@linkcode TrainConfigError} naming --init and what it takes. `ours`: `init` is a checkpoint
 * or export of this project (its config.json read already); otherwise a directory whose
 * config.json names a model type this project cannot load is refused as such first.
 */
async function checkInitWeights(init: string, ours: boolean): Promise<void> {
  if (!ours && (await initIsDirectory(init))) await refuseOtherModelType(init);
  const file = await initFile(init);
  try {
    await readSafetensorsHeader(file);
  } catch (e) {
    rethrowIfDenied(e);
    const what = !(await exists(file))
      ? `${init} is a directory without ${file.slice(init.replace(/\/+$/, "").length + 1)}`
      : file === init
      ? `not a safetensors file (${(e as Error).message})`
      : `${file} is not a safetensors file (${(e as Error).message})`;
    throw new TrainConfigError("--init", `--init ${init}: ${what}; ${INIT_TAKES}`);
  }
}

/**
 * Refuses `--precision` other than fp32 on the CPU engine, which computes in fp32 only, as the
 * options are resolved rather than when the engine opens. `--backend auto` keeps its fallback:
 * without a GPU it runs the CPU in fp32 and says so.
 */
function refuseCpuPrecision(opts: Pick<TrainOptions, "backend" | "precision">): void {
  const p = opts.precision;
  if (p === undefined || p === "fp32" || (opts.backend ?? "cpu") !== "cpu") return;
  throw new TrainConfigError(
    "--precision",
    `--precision ${p} needs the CUDA engine, and --backend ` +
      `${opts.backend === undefined ? "cpu (the default)" : "cpu"} computes in fp32 only: give ` +
      `--backend cuda (or auto), or leave --precision out`,
  );
}

/**
 * Refuses an `--init` directory whose config.json names a model type this project cannot
 * load (Hugging Face GPT-2 and Llama are the two), rather than failing later on tensor names.
 */
async function refuseOtherModelType(dir: string): Promise<void> {
  let type: unknown;
  try {
    type = JSON.parse(await Deno.readTextFile(`${dir}/config.json`))?.model_type;
  } catch (e) {
    rethrowIfDenied(e);
    return; // no readable config.json: the weights' names decide
  }
  if (typeof type === "string" && type !== "gpt2" && type !== "llama") {
    throw new TrainConfigError(
      "--init",
      `${dir}/config.json: model_type "${type}" is not one this project loads (gpt2, llama); ` +
        `start from a Hugging Face GPT-2 or Llama model`,
    );
  }
}

/** What `--init` says of itself when it is this project's checkpoint or export. */
interface InitMeta {
  /** The directory holding the weights, the tokenizer and the settings. */
  dir: string;
  /** The run's settings: config.json's "lotus" section, or an export's lotus.json. */
  meta: LotusMeta;
}

/**
 * The settings of the model `--init` names, when it is a checkpoint of this project (its
 * config.json has a "lotus" section) or an export of one (lotus.json): the model's shape, the
 * preset and the mode it trained in. Null for other weights (a Hugging Face download).
 */
async function initMetaOf(init: string): Promise<InitMeta | null> {
  let isDirArg = false;
  try {
    isDirArg = (await Deno.stat(init)).isDirectory;
  } catch (e) {
    rethrowIfDenied(e);
    return null; // initFile says it is not found
  }
  const dir = isDirArg ? checkpointDirOf(init) : splitPath(init).parent;
  const read = async (path: string): Promise<unknown> => {
    try {
      return JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      rethrowIfDenied(e);
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw new TrainConfigError("--init", `${path}: unreadable (${(e as Error).message})`);
    }
  };
  const parse = (raw: unknown, path: string): InitMeta => {
    const r = LotusMetaSchema.safeParse(raw);
    if (!r.success) {
      throw new TrainConfigError(
        "--init",
        `${path}: ${fieldIssue(r.error)}; not a checkpoint of this project that --init can ` +
          `start from`,
      );
    }
    return { dir, meta: r.data };
  };
  const cfg = await read(`${dir}/config.json`);
  if (cfg !== null && typeof cfg === "object" && "lotus" in cfg) {
    return parse((cfg as { lotus: unknown }).lotus, `${dir}/config.json`);
  }
  const lotusJson = await read(`${dir}/lotus.json`);
  if (lotusJson !== null && typeof lotusJson === "object" && "lotus" in lotusJson) {
    return parse((lotusJson as { lotus: unknown }).lotus, `${dir}/lotus.json`);
  }
  return null;
}

/**
 * Refuses weights to start from (`--init`) whose run used another tokenizer than the dataset's:
 * their embedding rows would land on ids that mean other tokens. Only a checkpoint or export of
 * this project says which tokenizer it used; Hugging Face weights are taken as they are. Two
 * tokenizer.json texts with the same token under every id are the same tokenizer.
 */
async function checkInitTokenizer(
  dir: string,
  tok: Tokenizer,
  init: string,
  dataDir: string,
): Promise<void> {
  let text: string, theirs: Tokenizer;
  try {
    text = await Deno.readTextFile(`${dir}/tokenizer.json`);
    theirs = tokenizerFromJson(text, "file", `${dir}/tokenizer.json`);
  } catch (e) {
    rethrowIfDenied(e);
    return; // nothing readable to compare: loading the weights checks their shapes
  }
  if (theirs.sha256 === tok.sha256) return;
  // The same tokens under the same ids, written another way, are the same tokenizer.
  let same = theirs.vocabSize === tok.vocabSize;
  for (let id = 0; same && id < tok.vocabSize; id++) {
    same = theirs.decode([id]) === tok.decode([id]);
  }
  if (same) return;
  throw new TrainConfigError(
    "--init",
    `--init ${init} was trained with another tokenizer (${dir}/tokenizer.json: ` +
      `${theirs.vocabSize} ids) than --data ${dataDir} uses (${tok.vocabSize} ids); its token ` +
      `rows would stand for other tokens: start from a run on a dataset built with the same ` +
      `tokenizer (build-dataset --tokenizer ${dir}/tokenizer.json)`,
  );
}

/**
 * The preset of a run started from `--init`: a checkpoint or export of this project fixes the
 * model's shape, so a `--preset` or `--arch` that names another is refused; a Hugging Face
 * Llama directory is a Llama, so `--arch gpt2` is refused. Otherwise `fallback`, then --arch's
 * counterpart.
 */
function initPreset(
  opts: Pick<TrainOptions, "init" | "preset" | "arch">,
  initMeta: InitMeta | null,
  hfLlama: boolean,
  fallback: PresetName,
): PresetName {
  if (initMeta) {
    const theirs = initMeta.meta.preset, arch = archOf(initMeta.meta.model);
    const known = (PRESET_NAMES as readonly string[]).includes(theirs);
    if (opts.preset !== undefined && opts.preset !== theirs) {
      throw new TrainConfigError(
        "--preset",
        `--preset ${opts.preset}: --init ${opts.init} holds a ${theirs} model (${arch}), ` +
          `whose shape the run takes; leave --preset out`,
      );
    }
    if (opts.arch !== undefined && opts.arch !== arch) {
      throw new TrainConfigError(
        "--arch",
        `--arch ${opts.arch}: --init ${opts.init} holds a ${arch} model, whose shape the run ` +
          `takes; leave --arch out`,
      );
    }
    return known ? theirs as PresetName : fallback;
  }
  if (hfLlama && opts.arch === "gpt2") {
    throw new TrainConfigError(
      "--arch",
      `--arch gpt2: --init ${opts.init} is a Hugging Face Llama model; leave --arch out`,
    );
  }
  if (!opts.arch) return fallback;
  try {
    return presetForArch(fallback, opts.arch);
  } catch (e) {
    throw new TrainConfigError("--arch", (e as Error).message);
  }
}

/** The Llama preset nearest a Hugging Face Llama config.json in size (for its defaults). */
function llamaPresetOf(json: unknown): PresetName {
  const hidden = Number((json as Record<string, unknown>).hidden_size);
  return hidden >= 3072 ? "llama-3b" : hidden >= 1024 ? "llama-1b" : "llama-tiny";
}

/** Dropout seeds are mixSeed(seed, DROPOUT_TAG + step): apart from other streams of the seed. */
const DROPOUT_TAG = 0x4452_0000;
/**
 * A step's micro-batch j > 0 draws its masks from mixSeed(its rank's seed, MICRO_TAG + j),
 * apart from the chunk tags the runner mixes into that seed.
 */
const MICRO_TAG = 0x4d42_0000;

/** The batch evaluations run in: the run's batch, or a micro-batch when smaller. */
function evalBatchOf(opts: RunOptions, cfg: TrainConfig): number {
  return Math.min(opts.microBatch ?? Infinity, cfg.batch);
}

/** `exs` in consecutive parts of at most `n` examples (the last may be shorter). */
function microBatches<T>(exs: readonly T[], n: number): T[][] {
  const parts: T[][] = [];
  for (let i = 0; i < exs.length; i += n) parts.push(exs.slice(i, i + n));
  return parts;
}

/**
 * A step's losses from its micro-batches': each is its share of the whole batch's means, so
 * the shares add up; the target counts (the whole batch's) are the first's.
 */
function sumLosses(ls: StepLosses[]): StepLosses {
  if (ls.length === 1) return ls[0];
  const sum = (f: "loss" | "ans" | "step" | "aux") => ls.reduce((a, x) => a + x[f], 0);
  return { ...ls[0], loss: sum("loss"), ans: sum("ans"), step: sum("step"), aux: sum("aux") };
}

/** With `onNonFinite: "skip"`, this many skipped steps in a row stop the run all the same. */
const MAX_SKIPS_IN_A_ROW = 10;

/**
 * A step's loss or gradient norm was not finite, so the run stopped before updating the
 * weights (see {@linkcode TrainConfig.onNonFinite}). The last checkpoint holds finite weights.
 */
export class NonFiniteError extends Error {
  /** The step (1-based) whose update was refused. */
  readonly step: number;
  /** Create the error for `step`. */
  constructor(step: number, message: string) {
    super(message);
    this.name = "NonFiniteError";
    this.step = step;
  }
}

/**
 * A resume must train on the dataset it started on: the same training split (shard hashes),
 * tokenizer and options. Older checkpoints, saved without the fingerprint, are compared by
 * K, c and CoT form.
 */
function checkResumeData(
  meta: LotusMeta,
  dataDir: string,
  data: SplitData,
  fingerprint: string,
): void {
  const o = data.manifest.options;
  const same = meta.data.fingerprint !== undefined
    ? meta.data.fingerprint === fingerprint
    : meta.data.k === o.k && meta.data.c === o.c && meta.data.cot === o.cot;
  if (!same && absolutePath(dataDir) === absolutePath(meta.data.dir)) {
    throw new TrainConfigError(
      "--data",
      `${dataDir} changed since the run being resumed trained on it (its training split, ` +
        `tokenizer or options differ: rebuilt?); a resume needs the data it trained on: ` +
        `rebuild it as it was, or start a new run from the run's weights with --init`,
    );
  }
  if (!same) {
    throw new TrainConfigError(
      "--data",
      `--data ${dataDir} is not the dataset the run being resumed trained on (${meta.data.dir}: ` +
        `its training split, tokenizer or options differ); resume with --data ${meta.data.dir}`,
    );
  }
}

/** Tokens a step forwards (positions over all passes), for throughput. */
function positionsOf(
  mode: TrainConfig["mode"],
  exs: Example[],
  K: number,
  R: number,
  c: number,
): number {
  let n = 0;
  for (const e of exs) {
    if (mode === "cot" || mode === "nocot") n += plainLength(e, mode === "cot");
    else n += e.q.length + (R + 1) * (1 + K * c) + suffixOf(e, K, 0).length;
  }
  return n;
}

/** Keep the examples that fit the context at every stage; returns how many were cut. */
function fitting(
  exs: Example[],
  cfg: TrainConfig,
  maxPos: number,
): { kept: Example[]; cut: number } {
  const kept = exs.filter((e) => {
    if (cfg.mode === "cot" || cfg.mode === "nocot") {
      return plainLength(e, cfg.mode === "cot") <= maxPos;
    }
    for (let s = 0; s <= cfg.k; s++) {
      if (lotusLength(e, stageShape(cfg, s).k, cfg.c) > maxPos) return false;
    }
    return true;
  });
  return { kept, cut: exs.length - kept.length };
}

/** Refuses a `batch` larger than the `usable` examples of the training split. */
function refuseBatchOver(usable: number, batch: number): void {
  if (usable >= batch) return;
  throw new TrainConfigError(
    "--batch",
    `the training split has ${usable} usable examples, fewer than --batch ${batch}: ` +
      (usable > 0 ? `give a --batch of at most ${usable}, or ` : "give ") + "a larger split",
  );
}

/**
 * The model config of a run that starts from no model of this project: that of the Hugging Face
 * Llama `config.json` `llamaJson` read from `llamaDir` when there is one, else the preset's.
 */
function freshModelConfig(
  preset: PresetName,
  llamaDir: string | null,
  llamaJson: unknown | null,
  vocabSize: number,
  auxLayers: number,
): ModelConfig {
  return llamaJson !== null
    ? modelConfigFromLlamaJson(llamaJson, vocabSize, auxLayers, `${llamaDir}/config.json`)
    : presetConfig(preset, vocabSize, auxLayers);
}

/** Batch capacity over every stage of a run. */
function capacityOf(exs: Example[], cfg: TrainConfig, B: number) {
  let P = 1, S = 1, step = 0, T = 1, R = 0;
  for (let s = 0; s <= cfg.k; s++) R = Math.max(R, stageShape(cfg, s).r);
  for (const e of exs) {
    P = Math.max(P, e.q.length);
    S = Math.max(S, suffixOf(e, 0, 0).length);
    T = Math.max(T, plainLength(e, cfg.mode === "cot"));
    for (let k = 0; k < Math.min(cfg.k, e.steps.length); k++) {
      step = Math.max(step, e.steps[k].length);
    }
  }
  return { B, P, K: cfg.k, c: cfg.c, R, S, auxT: cfg.c + step, T };
}

/**
 * Evaluate on validation examples: mean answer loss (teacher-forced, at the stage's K and R)
 * and greedy exact-match accuracy.
 */
export function evaluate(
  model: Model,
  exs: Example[],
  sp: SpecialIds,
  tok: Tokenizer,
  cfg: TrainConfig,
  K: number,
  R: number,
  batch: number,
): { loss: number; accuracy: number; n: number } {
  if (exs.length === 0) return { loss: NaN, accuracy: NaN, n: 0 };
  let s: EvalSums = { lossSum: 0, lossN: 0, correct: 0, n: 0 };
  for (const sums of evaluating(model, exs, sp, tok, cfg, K, R, batch)) s = sums;
  return { loss: s.lossN ? s.lossSum / s.lossN : NaN, accuracy: s.correct / exs.length, n: s.n };
}

/** What {@linkcode evaluate} adds up: summed answer loss, its tokens, correct answers. */
interface EvalSums {
  lossSum: number;
  lossN: number;
  correct: number;
  /** The examples evaluated. */
  n: number;
}

/**
 * {@linkcode evaluate}'s sums, a batch at a time: it yields the sums so far after each batch,
 * so that its caller can look for a stop signal between two. Ended early (a `break` out of
 * its loop), it frees what it allocated.
 */
function* evaluating(
  model: Model,
  exs: Example[],
  sp: SpecialIds,
  tok: Tokenizer,
  cfg: TrainConfig,
  K: number,
  R: number,
  batch: number,
): IterableIterator<EvalSums> {
  const cap = capacityOf(exs, cfg, batch);
  let lossSum = 0, lossN = 0, correct = 0;
  // No answer runs past the model's context (its position table): one that would is cut
  // where the context ends, so a --max-new-tokens above it needs no room beyond it either.
  const maxPos = model.cfg.maxPositions;
  const plain = cfg.mode === "cot" || cfg.mode === "nocot";
  let gen: Generator | null = null;
  let lotusRun: LotusRunner | null = null, plainRun: PlainRunner | null = null;
  try {
    // Made inside: one that cannot be allocated frees those made before it.
    gen = new Generator(model, {
      B: batch,
      P: cap.P,
      K,
      c: cfg.c,
      maxNewTokens: Math.min(cfg.maxNewTokens, maxPos),
    });
    lotusRun = plain ? null : new LotusRunner(model, { ...cap, K: Math.max(K, 0), R }, false);
    plainRun = plain ? new PlainRunner(model, batch, cap.T, false) : null;
    for (let i = 0; i < exs.length; i += batch) {
      const part = exs.slice(i, i + batch);
      const l: StepLosses = plain
        ? plainRun!.step(plainBatch(part, sp, cfg.mode === "cot"))
        : lotusRun!.step(lotusBatch(part, sp, { K, R, c: cfg.c }), {
          lambda: 0,
          auxWeight: 0,
          stepLoss: cfg.stepLoss,
          injection: cfg.injection,
          auxReads: cfg.auxReads,
        }, part);
      lossSum += l.ans * l.nAns, lossN += l.nAns;
      // The last new token's position is the longest question's length, the latents and the
      // budget, less one: it stays below maxPos (fitting() left room for one token at least).
      const P = Math.max(...part.map((e) => e.q.length)), L = plain ? 0 : 1 + K * cfg.c;
      const g = gen.generate(part.map((e) => e.q), sp, {
        mode: plain ? cfg.mode as "cot" | "nocot" : "lotus",
        K,
        c: cfg.c,
        R,
        injection: cfg.injection,
        maxNewTokens: Math.max(1, Math.min(cfg.maxNewTokens, maxPos - P - L)),
      });
      for (let j = 0; j < part.length; j++) {
        const gold = extractAnswer(tok.decode(part[j].ans.subarray(0, part[j].ans.length - 1)));
        if (answersMatch(extractAnswer(tok.decode(g.tokens[j])), gold)) correct++;
      }
      yield { lossSum, lossN, correct, n: i + part.length };
    }
  } finally {
    gen?.free();
    lotusRun?.free();
    plainRun?.free();
  }
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  return m > 0 ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

/** The id of the token that begins "<<", whose row initialises BOT, EOT and LAT. */
function seedTokenId(tok: Tokenizer): number {
  const ids = tok.encode("<<");
  return ids.length ? ids[0] : 0;
}

/** Matmul precision of training on the CUDA engine unless asked otherwise: bf16 operands, fp32
 * accumulation, fp32 master weights and AdamW state, as the reference trains. */
const CUDA_TRAIN_PRECISION = "bf16" as const;

/** Seconds a data-parallel rank waits at a collective before it ends the job. */
const DEFAULT_COMM_TIMEOUT = 600;

/**
 * The engine of a run. A data-parallel rank on CUDA (or "auto" with a GPU) takes the GPU of
 * its local rank, modulo the GPUs it sees: the N ranks mpirun starts on one machine take GPUs
 * 0..N-1, and a rank that sees one GPU (CUDA_VISIBLE_DEVICES set per rank) takes that one.
 */
function engineFor(opts: RunOptions, world: World | null, log: (s: string) => void): Engine {
  const backend = opts.backend ?? "cpu";
  const probe = world && backend !== "cpu" ? probeCuda() : null;
  if (world && probe && (backend === "cuda" || (backend === "auto" && probe.available))) {
    return openEngine({
      backend: "cuda",
      device: probe.devices > 0 ? world.localRank % probe.devices : world.localRank,
      threads: opts.threads ?? 0,
      precision: opts.precision ?? CUDA_TRAIN_PRECISION,
      quiet: true,
      log,
    });
  }
  const cores = navigator.hardwareConcurrency;
  if ((opts.threads ?? 0) > cores) {
    log(
      `note: --threads ${opts.threads} is more than this machine's ${cores} cores; the CPU ` +
        `engine's threads then wait on each other (0 uses every core)`,
    );
  }
  return selectEngine(backend, {
    threads: opts.threads ?? 0,
    log,
    quiet: opts.quiet,
    precision: opts.precision,
    cudaPrecision: CUDA_TRAIN_PRECISION,
  });
}

/** What a caller of {@linkcode trainRun} already knows of the run. */
interface RunContext {
  /** The directory a stopped run tells the user to resume (the whole run's, for its CoT start). */
  resumeAs?: string;
  /** {@linkcode initMetaOf} of `opts.init`, when the caller has read it: it is not read again. */
  initMeta?: InitMeta | null;
  /**
   * Stop signals the caller listened for before this run's own listeners: one seen stops the
   * run as a signal during it does.
   */
  stop?: StopWatch;
  /**
   * Given: the run's own watch is left listening when the run ends, and put here for the caller
   * to close (the CoT start's, handed to LOTUS as its `stop`).
   */
  keepListening?: { watch?: StopWatch };
  /**
   * A fresh run (its whole call's first phase) that a stop signal ends before or in its first
   * step has nothing to keep: it saves nothing and returns with `nothingSaved`, and the caller
   * clears what it wrote. Not given (a resume, LOTUS after its CoT start), such a stop saves.
   */
  dropUntrained?: boolean;
  /** Called as the run's first step begins (its caller clears a run that fails before). */
  onFirstStep?: () => void;
  /**
   * The steps this process has taken, in this run's phases so far: `stopAfter` counts them
   * all, and the run adds its own.
   */
  taken?: { steps: number };
}

/**
 * `--resume run` and the flags of `opts` that a resume does not take from the run, yet needs to
 * go on as the run went: a backend other than the default CPU, the precision and the
 * micro-batch (without it, a resume runs each whole batch at once, which may not fit in
 * memory). For the messages that say how to resume.
 *
 * @example
 * ```ts
 * import { resumeArgs } from "./trainer.ts";
 * console.assert(resumeArgs("out/runs/a", { backend: "cuda", microBatch: 16 }) ===
 *   "--resume out/runs/a --backend cuda --micro-batch 16");
 * ```
 */
export function resumeArgs(
  run: string,
  opts: Pick<TrainOptions, "backend" | "precision" | "microBatch">,
): string {
  return [
    `--resume ${run}`,
    (opts.backend ?? "cpu") !== "cpu" ? `--backend ${opts.backend}` : "",
    opts.precision ? `--precision ${opts.precision}` : "",
    opts.microBatch ? `--micro-batch ${opts.microBatch}` : "",
  ].filter((s) => s !== "").join(" ");
}

/**
 * One training run into `opts.out`: the whole of {@linkcode train} but the CoT start. `world`:
 * this rank in a data-parallel run.
 */
async function trainRun(
  opts: RunOptions,
  world: World | null = null,
  ctx: RunContext = {},
): Promise<TrainResult> {
  const resume = resumeArgs(ctx.resumeAs ?? opts.out, opts);
  // In a data-parallel run, rank 0 alone prints and writes.
  const root = world === null || world.rank === 0;
  const log = (s: string) => {
    if (!opts.quiet && root) console.error(s);
  };
  if (root) await Deno.mkdir(opts.out, { recursive: true });

  let resumed: CheckpointData | null = null;
  if (opts.resume) resumed = await loadCheckpoint(opts.resume, { withOptimizer: true });
  if (resumed && opts.data === undefined && (await relativeNotFound(resumed.meta.data.dir))) {
    refuseMovedData(resumed.meta.data.dir, resumeRunDir(opts.resume!));
  }
  const dataDir = opts.data ?? resumed?.meta.data.dir;
  if (dataDir === undefined) throw new TrainConfigError("--data", "give a dataset directory");
  const verify = { verify: opts.verifyData };
  const trainData: SplitData = await loadSplit(dataDir, opts.trainSplit ?? "train", verify);
  // --init at a checkpoint or export of this project: the model's shape is the one it trained.
  const initMeta = resumed || !opts.init
    ? null
    : ctx.initMeta !== undefined
    ? ctx.initMeta
    : await initMetaOf(opts.init);
  // --init at a Hugging Face Llama directory: the model's shape is its config.json's, and the
  // defaults (the learning rate) are those of the Llama preset of its size unless --preset is
  // given.
  const llamaDir = !resumed && !initMeta && opts.init && (await isDirectory(opts.init))
    ? opts.init
    : null;
  const llamaJson = llamaDir ? await llamaInitConfig(llamaDir) : null;
  if (llamaDir && !llamaJson) await refuseOtherModelType(llamaDir);
  const preset: string = resumed ? resumed.meta.preset : initPreset(
    opts,
    initMeta,
    llamaJson !== null,
    opts.preset ?? (llamaJson ? llamaPresetOf(llamaJson) : "tiny"),
  );
  if (resumed) refuseOtherPreset(opts, resumed.meta.preset);
  if (resumed && opts.arch !== undefined && opts.arch !== archOf(resumed.meta.model)) {
    throw new TrainConfigError(
      "--arch",
      `--arch ${opts.arch} contradicts the run being resumed (${archOf(resumed.meta.model)}); ` +
        `leave --arch out`,
    );
  }
  const trainSplit = opts.trainSplit ?? "train";
  const fingerprint = datasetFingerprint(trainData.manifest, trainSplit);
  if (resumed) checkResumeData(resumed.meta, dataDir, trainData, fingerprint);
  const cfg: TrainConfig = resumed
    ? resumeTrainConfig(resumed.meta.train, opts.train ?? {})
    : resolveTrainConfig(
      { ...recipeSettings(opts.recipe ?? "none", preset as PresetName), ...opts.train },
      preset as PresetName,
      {
        dir: dataDir,
        k: trainData.manifest.options.k,
        c: trainData.manifest.options.c,
      },
    );
  refuseAuxWithoutWeight(cfg);
  const sp = trainData.special;
  // Steps longer than c: the training split's policy (spill adds target layers to a batch).
  const longStep = trainData.manifest.splits[trainSplit].options.longStep;
  const tok = await readDatasetTokenizer(dataDir, trainData.manifest);
  const auxLayers = cfg.mode === "lotus-aux" ? 1 : 0;
  const mcfg: ModelConfig = resumed
    ? resumed.meta.model
    : initMeta
    ? { ...initMeta.meta.model, vocabSize: trainData.vocabSize, auxLayers }
    : freshModelConfig(preset as PresetName, llamaDir, llamaJson, trainData.vocabSize, auxLayers);
  if (llamaJson) {
    // Its config.json is checked: vocab_size is a positive integer.
    const { vocab_size } = llamaJson as { vocab_size: number };
    await checkLlamaTokenizer(llamaDir!, vocab_size, tok, dataDir);
  }
  if (mcfg.vocabSize !== trainData.vocabSize) {
    throw new Error(
      `the checkpoint's vocabulary (${mcfg.vocabSize}) differs from the dataset's ` +
        `(${trainData.vocabSize}); resume on the dataset it was trained on`,
    );
  }

  let valExamples: Example[] = [];
  const valName = opts.valSplit ?? "valid";
  if (trainData.manifest.splits[valName]) {
    valExamples = (await loadSplit(dataDir, valName, verify)).examples;
  } else if (opts.valSplit !== undefined && opts.valSplit !== "valid") {
    throw new TrainConfigError(
      "--val-split",
      `--val-split ${opts.valSplit}: ${dataDir} has no such split (it has ` +
        `${Object.keys(trainData.manifest.splits).join(", ")}); name one of those`,
    );
  } else {
    log(`no "${valName}" split in ${dataDir}: evaluation reports training-set accuracy`);
  }
  const { kept: trainEx, cut } = fitting(trainData.examples, cfg, mcfg.maxPositions);
  if (cut > 0) {
    log(`${cut} training examples exceed ${mcfg.maxPositions} positions and are skipped`);
  }
  refuseBatchOver(trainEx.length, cfg.batch);
  const val = fitting(valExamples, cfg, mcfg.maxPositions);
  if (val.cut > 0) {
    log(`${val.cut} validation examples exceed ${mcfg.maxPositions} positions and are skipped`);
  }
  valExamples = val.kept;
  const evalSet = (valExamples.length ? valExamples : trainEx).slice(
    0,
    cfg.evalExamples > 0 ? cfg.evalExamples : undefined,
  );

  const stepsPerEpoch = Math.floor(trainEx.length / cfg.batch);
  const total = totalSteps(cfg, stepsPerEpoch);
  // A run that has taken its steps and finished them (its summary says so) has nothing left;
  // one stopped during its last step still owes its final evaluation, which the end of the
  // loop below gives it.
  if (
    resumed && resumed.state.step >= total &&
    ((await completedRun(opts.out, resumed.state.step)) ||
      ((await readSummary(opts.out, resumed.state.step)) === null &&
        (await finalEvalLogged(opts.out, resumed.state.step))))
  ) {
    log(
      `${opts.out} is complete (${resumed.state.step} of ${total} steps): nothing to train; ` +
        `give a larger ${
          cfg.finalStageSteps !== null ? "--final-stage-steps" : "--steps or --epochs"
        } to train it further`,
    );
    return await completeRunResult(opts.out, resumed, paramLayout(mcfg).mainTotal, world);
  }
  // A length below the steps taken would end the run where it never stood, marked complete.
  if (resumed && resumed.state.step > total) {
    const flag = cfg.finalStageSteps !== null
      ? "--final-stage-steps"
      : cfg.steps !== null
      ? "--steps"
      : "--epochs";
    // The least value of the flag, in its own unit, that reaches the steps taken.
    const taken = resumed.state.step;
    const [least, unit] = flag === "--final-stage-steps"
      ? [taken - finalStageStart(cfg, stepsPerEpoch), "steps after the final stage starts"]
      : flag === "--steps"
      ? [taken, "steps"]
      : [Math.ceil(taken / stepsPerEpoch), `epochs of ${stepsPerEpoch} steps`];
    throw new TrainConfigError(
      flag,
      `${flag} gives ${opts.out} ${total} steps, fewer than the ${taken} it has taken: give ` +
        `${flag} ${least} or more (${unit}), or leave ${flag} out to go on to the run's own ` +
        `length`,
    );
  }
  if (!resumed) {
    for (const note of curriculumNotes(cfg, stepsPerEpoch, total)) log(`note: ${note}`);
  }

  const eng = engineFor(opts, world, log);
  let dp: DataParallel | null = null;
  let model: Model | null = null;
  let runner: LotusRunner | PlainRunner | null = null;
  // SIGINT (Ctrl-C), SIGTERM or SIGHUP finishes the current step, saves a checkpoint and returns
  // (the run stays resumable). The loop yields to the event loop once a step, so a signal is
  // seen within one step.
  let interrupted: Deno.Signal | null = null;
  let ownStop: StopWatch | null = null;
  // A signal this run's listeners saw, or its caller's before them (between two phases).
  const stopSeen = () => ownStop?.signal ?? ctx.stop?.signal ?? null;
  let failure: Error | null = null;
  try {
    if (world) {
      dp = DataParallel.join(eng, world, opts.commTimeout ?? DEFAULT_COMM_TIMEOUT);
      if (cfg.batch < dp.size) {
        throw new TrainConfigError(
          "--batch",
          `--batch ${cfg.batch} is smaller than the ${dp.size} ranks: each rank needs at least ` +
            `one example of every batch`,
        );
      }
    }
    // Parameters: resume, a local HF GPT-2, or GPT-2 initialisation.
    const layout = paramLayout(mcfg);
    let params: Float32Array;
    if (resumed) params = resumed.params;
    else {
      params = initParams(layout, mcfg, cfg.seed);
      let vocabRows = 0;
      if (llamaJson) {
        vocabRows = (await loadLlamaWeights(llamaDir!, layout, params)).vocabRows;
        log(`initialised from ${llamaDir} (Llama, ${vocabRows} vocabulary rows)`);
      } else if (opts.init) {
        const file = await initFile(opts.init);
        if (initMeta) await checkInitTokenizer(initMeta.dir, tok, opts.init, dataDir);
        const r = await loadHfInit(file, mcfg, params);
        params = r.params;
        vocabRows = r.vocabRows;
        log(`initialised from ${opts.init} (${vocabRows} vocabulary rows)`);
      }
      // The LOTUS tokens' rows start as copies of the seed token's (the reference's "<<"),
      // unless the weights come from a LOTUS run of this project, which trained them.
      const specials = [sp.bot, sp.eot, sp.lat];
      const trained = initMeta !== null &&
        (initMeta.meta.train.mode === "lotus" || initMeta.meta.train.mode === "lotus-aux") &&
        specials.every((id) => id < vocabRows);
      if (trained) log("the BOT, EOT and latent token rows are the LOTUS run's, as trained");
      else initSpecialRows(params, layout, mcfg.dModel, seedTokenId(tok), specials);
    }
    model = new Model(eng, mcfg, params, true);
    const { updates, ...resumedState } = resumed?.state ?? freshTrainState();
    // The model counts the updates from here; a save writes its count (updatesOf).
    const state: TrainState = resumedState;
    if (resumed?.moments) {
      model.uploadMoments(resumed.moments.m, resumed.moments.v, updates ?? state.step);
    }
    if (dp) {
      // Every rank must run the same schedule on the same data from the same point.
      // The evaluation's batch and whether one is due too: its rounds are collectives.
      dp.agree(
        "the run (examples, steps, batch, resume step, epoch, dataset, evaluation batch, " +
          "evaluation due)",
        [
          trainEx.length,
          total,
          cfg.batch,
          state.step,
          state.epoch,
          state.batchInEpoch,
          ...[0, 4, 8, 12].map((i) => parseInt(fingerprint.slice(i, i + 4), 16) || 0),
          evalBatchOf(opts, cfg),
          state.evalDue ? 1 : 0,
        ],
      );
      dp.broadcastModel(model, resumed?.moments !== undefined);
    }

    const runLog = root ? new RunLog(opts.out, resumed ? state.step : null) : null;
    if (runLog?.missing) {
      const { from, to } = runLog.missing;
      log(
        `note: ${opts.out}/log.jsonl and log.csv end before the checkpoint's step ${to} (cut ` +
          `short or removed): steps ${from} to ${to} have no log records`,
      );
    }
    // A log write that fails (a full disk, say) stops the run as a stop signal would: after
    // the step, saved (data-parallel ranks with it, at the next step's end); the run then ends
    // with an error that says so. Later records go unwritten. (The cast keeps TypeScript from
    // narrowing it to null: only writeLog sets it.)
    let logError = null as Error | null;
    const writeLog = (r: LogRecord) => {
      if (runLog && !logError) {
        try {
          runLog.write(r);
        } catch (e) {
          rethrowIfDenied(e);
          logError = e as Error;
        }
      }
      opts.onLog?.(r, "main");
    };
    // Each rank's runner holds its part of a batch only, or a micro-batch of it.
    const rankBatch = dp ? Math.ceil(cfg.batch / dp.size) : cfg.batch;
    const micro = Math.min(opts.microBatch ?? Infinity, rankBatch);
    const evalBatch = evalBatchOf(opts, cfg);
    const cap = capacityOf(trainEx, cfg, micro);
    // One runner for the whole run: its buffers are sized for the largest batch of any stage.
    const withDropout = cfg.dropout > 0;
    const recompute = opts.recompute ?? eng.backend === "cuda";
    const maxGraphs = opts.graphs === false ? 0 : MAX_STEP_GRAPHS;
    runner = cfg.mode === "cot" || cfg.mode === "nocot"
      ? new PlainRunner(model, cap.B, cap.T, true, withDropout, recompute, maxGraphs)
      : new LotusRunner(model, { ...cap, dropout: withDropout, recompute, maxGraphs }, true);
    const meta: LotusMeta = {
      model: mcfg,
      train: cfg,
      special: sp,
      data: {
        dir: dataDir,
        cot: trainData.manifest.options.cot,
        k: trainData.manifest.options.k,
        c: trainData.manifest.options.c,
        longStep,
        fingerprint,
      },
      preset,
    };
    const ckptDir = `${opts.out}/checkpoint`;
    // Whether this run has saved (a checkpoint or a best), on every rank alike.
    let savedInRun = false;
    const bestDir = `${opts.out}/best`;
    // Whether ckptDir holds a checkpoint of this run (resumed from it, or saved there), and
    // whether this run has saved a best.
    let ckptSaved = resumed !== null, bestSaved = false;
    const save = async (dir = ckptDir) => {
      savedInRun = true;
      if (!root) return;
      const mom = model!.downloadMoments();
      try {
        await saveCheckpoint(dir, {
          meta,
          params: model!.downloadParams(),
          moments: mom,
          state: model!.step === state.step ? state : { ...state, updates: model!.step },
          tokenizerJson: tok.toJSON(),
        });
      } catch (e) {
        if (
          e instanceof CheckpointError || e instanceof Deno.errors.NotCapable ||
          e instanceof Deno.errors.PermissionDenied
        ) throw e;
        // A full disk, say: the write goes through a temporary copy, so the last save stands.
        // A fresh run's first phase without a checkpoint has nothing to resume: with nothing
        // saved, the same command starts it again; with a best saved, only --overwrite does.
        const fix = "fix the cause (free disk space, say)";
        const resumable = ckptSaved || !ctx.dropUntrained;
        throw new Error(
          `cannot save the checkpoint ${dir} at step ${state.step} ` +
            `(${(e as Error).message}); ` +
            (resumable
              ? `what was saved there before is kept: ${fix} and resume with ${resume}`
              : bestSaved
              ? `there is no checkpoint to resume, only ${bestDir} (the best weights so far): ` +
                `${fix} and run the command again with --overwrite, after moving ${bestDir} ` +
                `aside to keep it`
              : `nothing of this run was saved before: ${fix} and run the same command again`),
          { cause: e },
        );
      }
      if (dir === ckptDir) ckptSaved = true;
      else bestSaved = true;
    };
    // Data-parallel ranks stop together: a signal seen by any rank is summed with the next
    // step's losses (or an evaluation's next round), and every rank stops after it.
    let stopAll = false;
    // An evaluation: its log record and line, or null when a stop signal came before its
    // last batch. Data-parallel ranks, which sum it together, agree on a stop after each round
    // of batches (a rank whose part has no batch left takes part in the round all the same).
    const runEval = async (stage: number) => {
      const { k: K, r: R } = stageShape(cfg, stage);
      const part = dp ? dp.shard(evalSet) : evalSet;
      // The longest part's batches (parts differ in length by one at most: shardRange).
      const rounds = dp ? Math.ceil(Math.ceil(evalSet.length / dp.size) / evalBatch) : Infinity;
      let sums: EvalSums = { lossSum: 0, lossN: 0, correct: 0, n: 0 };
      // A long evaluation shows its progress as the steps do (a line every 5 s off a terminal).
      let shown = performance.now(), progressShown = false;
      const batches = evaluating(model!, part, sp, tok, cfg, K, R, evalBatch);
      try {
        for (let round = 1;; round++) {
          const next = batches.next();
          if (!next.done) sums = next.value;
          if (dp ? round >= rounds : next.done || sums.n === part.length) break;
          const now = performance.now();
          if (!quiet && now - shown > 5000) {
            progress(`eval @${state.step}: ${sums.n} of ${part.length} examples`);
            shown = now, progressShown = true;
          }
          await signalTurns();
          const stop = stopSeen() ? 1 : 0;
          if (dp ? dp.sum([stop])[0] > 0 : stop) return null;
        }
      } finally {
        // Frees what the evaluation allocated when it ended early.
        batches.return?.();
      }
      if (tty && progressShown) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
      if (dp) {
        const [lossSum, lossN, correct] = dp.sum([sums.lossSum, sums.lossN, sums.correct]);
        sums = { lossSum, lossN, correct, n: evalSet.length };
      }
      const ev = {
        loss: sums.lossN ? sums.lossSum / sums.lossN : NaN,
        accuracy: evalSet.length ? sums.correct / evalSet.length : NaN,
        n: evalSet.length,
      };
      const rec: LogRecord = {
        kind: "eval",
        step: state.step,
        epoch: state.epoch,
        stage,
        K,
        R,
        valLoss: ev.loss,
        valAccuracy: ev.accuracy,
        valExamples: ev.n,
        seconds: state.seconds,
      };
      writeLog(rec);
      log(
        `eval @${state.step}: loss ${ev.loss.toFixed(4)}, accuracy ${
          (100 * ev.accuracy).toFixed(1)
        }% ` +
          `(${ev.n} examples, K=${K}, R=${R})`,
      );
      if (!cfg.keepBest) state.bestAccuracy = Math.max(state.bestAccuracy, ev.accuracy);
      return ev;
    };
    // An evaluation that a stop signal cuts short leaves the run to stop at once; the
    // periodic or epoch's one is then due (saved in the state), and a resume runs it first.
    let evalStopped = false;
    // The latest evaluation (the cast keeps TypeScript from narrowing it to null: only evalAt
    // sets it).
    let lastEval = null as { loss: number; accuracy: number } | null;
    const evalAt = async (stage: number): Promise<boolean> => {
      const ev = await runEval(stage);
      if (ev === null) {
        evalStopped = true;
        // A data-parallel rank stops with the others on a signal it did not see itself.
        interrupted ??= stopSeen() ?? "SIGTERM";
        if (dp) stopAll = true;
        if (state.step < total) state.evalDue = true;
        return false;
      }
      delete state.evalDue;
      lastEval = ev;
      await considerBest(ev, stage);
      return true;
    };
    // --keep-best: the final stage's best validation accuracy, and its weights in best/.
    const considerBest = async (ev: { accuracy: number }, stage: number) => {
      if (!cfg.keepBest || !isFinalStage(cfg, stage) || !(ev.accuracy > state.bestAccuracy)) {
        return;
      }
      state.bestAccuracy = ev.accuracy;
      state.bestStep = state.step;
      await save(bestDir);
      const what = runner instanceof PlainRunner ? "best so far" : "best of the final stage";
      log(`${what}: ${(100 * ev.accuracy).toFixed(1)}% at step ${state.step}`);
    };

    log(
      `training ${cfg.mode} ${preset} (${(layout.mainTotal / 1e6).toFixed(2)}M params) on ` +
        `${trainEx.length} examples, ${total} steps of ${cfg.batch}` +
        (micro < rankBatch ? ` in micro-batches of ${micro}` : "") +
        `, backend ${eng.backend}` +
        (resumed ? `, resuming at step ${state.step}` : ""),
    );
    // From this line on a stop signal ends the run at a step's end, saved (before it, the
    // process ends at once; before the first step of a fresh run, nothing is saved: see
    // RunContext.dropUntrained).
    ownStop = watchStopSignals(undefined, opts.signal);
    if (ctx.keepListening) ctx.keepListening.watch = ownStop;
    // Let a signal sent before now reach its listener, so that one from before the first
    // step stops the run there.
    await signalTurns();
    interrupted ??= stopSeen();
    const quiet = opts.quiet || !root;
    const tty = !quiet && Deno.stderr.isTerminal();
    // A progress line: rewritten in place on a terminal, one line each elsewhere.
    const progress = (line: string) => {
      if (tty) Deno.stderr.writeSync(new TextEncoder().encode(`\r\x1b[K${line}`));
      else console.error(line);
    };
    // The first step's line comes at once (it says the run works, and how fast), then one
    // every 5 s.
    // A resume that has no step left to run (only its final evaluation) reports the loss its
    // last step logged.
    let lastLoss = resumed ? await loggedLoss(opts.out, state.step) : NaN;
    let lastLine = -Infinity, runSteps = 0, skipped = 0, skipsInARow = 0;
    const taken = ctx.taken ?? { steps: 0 };
    let tokWindow = 0, timeWindow = 0;
    const t0 = performance.now() - state.seconds * 1000;
    let order = epochOrder(trainEx.length, cfg.seed, state.epoch);
    // Data-parallel: each part of the gradient is summed as soon as the backward is done
    // with it (an engine library without the nonblocking collectives: after the backward).
    const overlap = dp !== null && opts.commOverlap !== "off" && dp.canOverlap;
    const overlapOf = () => (overlap ? dp!.overlap(model!) : undefined);
    // A resume of a run stopped during an evaluation runs it first (at the last step, the
    // final evaluation serves). Data-parallel ranks all run it, a rank that has seen a signal
    // too: they agree on the stop in its rounds, or after the next step.
    if (state.evalDue && !(dp ? stopAll : interrupted)) {
      if (state.step < total) await evalAt(stageOf(cfg, state.epoch, state.step - 1));
      else delete state.evalDue;
    }
    if (state.step < total) ctx.onFirstStep?.();
    while (state.step < total && !(dp ? stopAll : interrupted)) {
      if (state.batchInEpoch >= stepsPerEpoch) {
        state.epoch++, state.batchInEpoch = 0;
        order = epochOrder(trainEx.length, cfg.seed, state.epoch);
      }
      const stage = stageOf(cfg, state.epoch, state.step);
      const { k: K, r: R } = stageShape(cfg, stage);
      const start = state.batchInEpoch * cfg.batch;
      const batchExs = Array.from(order.subarray(start, start + cfg.batch), (i) => trainEx[i]);
      // A data-parallel rank runs its part of the global batch, in micro-batches of at most
      // `micro` examples: each one's gradient adds into the slab, divided by the global batch's
      // target counts, so that the sum is the global batch's step.
      const exs = dp ? dp.shard(batchExs) : batchExs;
      const parts = microBatches(exs, micro);
      const shares = dp !== null || parts.length > 1;
      const ts = performance.now();
      model.zeroGrad();
      // Masks depend on the seed and the step alone, so a resumed run draws the same ones
      // (each rank of a data-parallel run, and each micro-batch after a step's first, its own).
      const dropSeed = mixSeed(BigInt(cfg.seed), DROPOUT_TAG + state.step);
      const rankSeed = dp ? mixSeed(dropSeed, dp.rank) : dropSeed;
      const dropoutOf = (j: number) =>
        cfg.dropout > 0
          ? { p: cfg.dropout, seed: j === 0 ? rankSeed : mixSeed(rankSeed, MICRO_TAG + j) }
          : undefined;
      // Every part is queued before any loss is read: one host wait for the step.
      const queued: (() => StepLosses)[] = [];
      if (runner instanceof PlainRunner) {
        const cot = cfg.mode === "cot";
        // The global batch's target count divides every part's loss.
        const den = shares ? plainBatch(batchExs, sp, cot).nTargets : undefined;
        // Every part's batch is built before the first runs: none waits on the host between.
        const bs = parts.map((p) => plainBatch(p, sp, cot));
        for (let j = 0; j < parts.length; j++) {
          const ready = j === parts.length - 1 ? overlapOf() : undefined;
          queued.push(runner.queue(bs[j], dropoutOf(j), den, ready));
        }
      } else {
        const lopts: LotusOptions = {
          lambda: cfg.lambda,
          auxWeight: cfg.mode === "lotus-aux" ? cfg.auxWeight : 0,
          stepLoss: cfg.stepLoss,
          injection: cfg.injection,
          auxReads: cfg.auxReads,
        };
        if (shares) {
          const global = lotusBatch(batchExs, sp, { K, R, c: cfg.c, longStep });
          lopts.denominators = runner.denominators(global, lopts, batchExs);
        }
        const bs = parts.map((p) => lotusBatch(p, sp, { K, R, c: cfg.c, longStep }));
        for (let j = 0; j < parts.length; j++) {
          // Data-parallel: the gradient's all-reduce starts during the last part's backward.
          const ready = j === parts.length - 1 ? overlapOf() : undefined;
          queued.push(runner.queue(bs[j], { ...lopts, dropout: dropoutOf(j), ready }, parts[j]));
        }
      }
      let l = sumLosses(queued.map((read) => read()));
      if (dp) {
        // The global gradient and losses: each rank's are its share of the global means.
        dp.allReduceGrads(model);
        interrupted ??= stopSeen();
        const [loss, ans, stp, aux, stop] = dp.sum([
          l.loss,
          l.ans,
          l.step,
          l.aux,
          interrupted || logError ? 1 : 0,
        ]);
        l = { ...l, loss, ans, step: stp, aux };
        if (stop > 0) {
          stopAll = true;
          // Rank 0's failed log write ends its run with that error instead.
          if (!logError) interrupted ??= "SIGTERM";
        }
      }
      const lr = lrAt(cfg, state.step, total, stage);
      // The norm comes first: a step whose loss or gradient is not finite changes nothing.
      const gradNorm = model.gradNorm();
      if (Number.isFinite(l.loss) && Number.isFinite(gradNorm)) {
        model.applyUpdate(adamwOf(cfg, lr));
        skipsInARow = 0;
      } else {
        const what = `step ${state.step + 1}: the loss is ${l.loss} and the gradient norm ` +
          `${gradNorm}`;
        if (cfg.onNonFinite === "skip" && ++skipsInARow <= MAX_SKIPS_IN_A_ROW) {
          skipped++;
          log(`${what}; its update is skipped (--on-non-finite skip)`);
        } else {
          failure = new NonFiniteError(
            state.step + 1,
            `${what}${skipsInARow > 1 ? ` (${skipsInARow} such steps in a row)` : ""}; the ` +
              `weights were not updated, and the checkpoint holds those of step ${state.step}. ` +
              (cfg.onNonFinite === "skip"
                ? `Lower --lr (or --lambda): skipping steps did not bring the loss back`
                : `Lower --lr (or --lambda), or pass --on-non-finite skip to step over rare ` +
                  `spikes`),
          );
          break;
        }
      }
      const dt = (performance.now() - ts) / 1000;
      const toks = positionsOf(cfg.mode, batchExs, K, R, cfg.c);
      state.step++, state.batchInEpoch++, runSteps++, taken.steps++;
      state.tokens += toks;
      state.seconds = (performance.now() - t0) / 1000;
      tokWindow += toks, timeWindow += dt;
      lastLoss = l.loss;
      const tps = tokWindow / timeWindow;
      writeLog({
        kind: "train",
        step: state.step,
        epoch: state.epoch,
        stage,
        K,
        R,
        lr,
        loss: l.loss,
        ansLoss: l.ans,
        stepLoss: l.step,
        auxLoss: l.aux,
        gradNorm,
        tokensPerSec: Math.round(toks / dt),
        seconds: state.seconds,
      });
      const now = performance.now();
      if (!quiet && (tty || now - lastLine > 5000 || state.step === total)) {
        const eta = (total - state.step) * (timeWindow / Math.max(1, runSteps));
        const where = runner instanceof PlainRunner
          ? `epoch ${state.epoch + 1}`
          : `stage ${stage} (K=${K}, R=${R})`;
        const line = `step ${state.step}/${total} | ${where} | loss ` +
          `${l.loss.toFixed(4)} | ${Math.round(tps)} tok/s | ETA ${fmtTime(eta)}`;
        progress(line);
        lastLine = now;
      }
      const periodic = cfg.evalEvery > 0 && state.step % cfg.evalEvery === 0;
      // With --keep-best, every epoch of the final stage ends with an evaluation.
      const epochEnd = cfg.keepBest && isFinalStage(cfg, stage) &&
        state.batchInEpoch >= stepsPerEpoch;
      const evalNow = (periodic || epochEnd) && state.step < total;
      // A failed log write stops the run after this step; its evaluation, not run or not
      // logged, is due on resume.
      if (logError && !dp) {
        if (evalNow) state.evalDue = true;
        break;
      }
      if (evalNow) {
        if (tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
        if (!(await evalAt(stage))) break;
        if (logError && !dp) {
          state.evalDue = true;
          break;
        }
      }
      if (cfg.saveEvery > 0 && state.step % cfg.saveEvery === 0 && state.step < total) await save();
      if (opts.stopAfter && taken.steps >= opts.stopAfter) break;
      // Let a signal that came during the step reach its listener: the run stops after the
      // step it came in.
      await signalTurns();
      interrupted ??= stopSeen();
    }
    if (tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
    // One that came during the last step's evaluation or save (a stopAfter ends the loop first).
    interrupted ??= stopSeen();
    // A signal after the ranks' last agreed step changes nothing here: they all finish alike
    // (the final evaluation's rounds agree on it, and stop there).
    if (dp && !stopAll) interrupted = null;
    const logFailure = () =>
      logError && new Error(
        `cannot write the run's log (${logError.message}); training stopped at step ` +
          `${state.step} and saved its checkpoint: fix the cause (free disk space, say) and ` +
          `resume with ${resume}`,
        { cause: logError },
      );
    // Data-parallel ranks all run the final evaluation, rank 0 too (its records unwritten),
    // since they sum it together; a single process skips it.
    if (!dp) failure ??= logFailure();
    // A fresh run stopped before its second step has nothing worth keeping: a signal before
    // its first step trained nothing, one during it is the usual moment to stop a mistyped
    // command (data-parallel ranks agree on a stop only after a step). It saves nothing (not
    // even a summary), and the caller clears what it wrote; unless the first step saved
    // already (--save-every 1, a kept best), which stays.
    if (
      ctx.dropUntrained && !resumed && interrupted && runSteps <= 1 && state.step < total &&
      !failure && !savedInRun
    ) {
      return {
        steps: state.step,
        finalLoss: NaN,
        checkpoint: ckptDir,
        params: layout.mainTotal,
        tokensPerSec: 0,
        seconds: state.seconds,
        interrupted,
        skippedSteps: 0,
        completed: false,
        nothingSaved: true,
        ...(dp ? { world: { rank: dp.rank, size: dp.size } } : {}),
      };
    }
    if (state.step >= total && !interrupted && !failure) {
      await evalAt(stageOf(cfg, state.epoch, Math.max(0, state.step - 1)));
    }
    failure ??= logFailure();
    if (interrupted) {
      const when = evalStopped ? "during the evaluation at" : "at";
      log(`${interrupted} ${when} step ${state.step}: saving; resume with ${resume}`);
    }
    await save();
    // The others wait for rank 0's checkpoint, so that what follows (a next phase, a resume)
    // finds it complete.
    dp?.barrier();
    if (failure) throw failure;
    if (root) {
      await writeFileAtomic(
        `${opts.out}/summary.json`,
        JSON.stringify(
          {
            steps: state.step,
            total,
            finalLoss: lastLoss,
            valLoss: lastEval?.loss,
            valAccuracy: lastEval?.accuracy,
            // Taken all its steps and evaluated at the end: a resume has nothing left to do.
            completed: state.step >= total && !interrupted,
            ...keptBest(cfg.keepBest, state, bestDir),
            tokens: state.tokens,
            seconds: state.seconds,
          },
          null,
          2,
        ) + "\n",
      );
    }
    if (dp && dp.gradReductions > 0) {
      // Rank 0's wait includes the others' lag behind it (load imbalance), not only transfer.
      log(
        `data parallel: ${dp.size} ranks; the gradient all-reduce took ` +
          `${(1000 * dp.gradSeconds / dp.gradReductions).toFixed(1)} ms a step on rank 0 ` +
          `after the backward; ` +
          `${(100 * dp.overlappedFloats / dp.reducedFloats).toFixed(1)}% of the gradient ` +
          `started during it`,
      );
    }
    log(`checkpoint written to ${checkpointDirOf(opts.out)}`);
    return {
      steps: state.step,
      finalLoss: lastLoss,
      valLoss: lastEval?.loss,
      valAccuracy: lastEval?.accuracy,
      ...(valExamples.length === 0 ? { evalOnTraining: true } : {}),
      checkpoint: ckptDir,
      params: layout.mainTotal,
      tokensPerSec: state.tokens / Math.max(1e-9, state.seconds),
      seconds: state.seconds,
      interrupted,
      skippedSteps: skipped,
      completed: state.step >= total && !interrupted,
      ...keptBest(cfg.keepBest, state, bestDir),
      ...(dp ? { world: { rank: dp.rank, size: dp.size } } : {}),
    };
  } finally {
    if (!ctx.keepListening) ownStop?.close();
    runner?.free();
    model?.free();
    dp?.free();
    eng.close();
  }
}
/**
 * Train a model on a dataset directory. Writes `out/log.jsonl`, `out/log.csv`,
 * `out/summary.json` and `out/checkpoint/` (saved every `saveEvery` steps and at the end).
 * SIGINT finishes the current step, saves a checkpoint and returns; `resume` continues such a
 * run exactly. A fresh run stopped before or in its first step saves nothing and leaves nothing
 * of itself in `out` ({@linkcode TrainResult.nothingSaved}): the same call starts it again.
 *
 * A LOTUS run with `cotStartEpochs` (the "from-cot" recipe, the default for LOTUS) first trains
 * explicit CoT into `out/cot-start` (a run of its own, at the preset's learning rate, its best
 * checkpoint kept), then LOTUS from that checkpoint; `out/plan.json` records the run so that
 * `resume` continues it in either phase. An `init` that is a model of this project (a run,
 * checkpoint or export, or its model.safetensors) skips the CoT start; other weights (a Hugging
 * Face GPT-2 model.safetensors or Llama directory) are where the CoT start begins. LOTUS's
 * settings are checked against the dataset's manifest before the CoT start trains.
 *
 * @throws {TrainConfigError} when a setting contradicts the dataset (resolveTrainConfig) or
 * the run being resumed, the training split has fewer usable examples than a batch, mode is
 * lotus-aux with auxWeight 0, or the recipe is unknown.
 * @throws {ManifestError} when the dataset directory has no readable manifest.
 * @throws {DatasetError} when the training split is missing or its shards are inconsistent.
 * @throws {CheckpointError} when `resume` or `init` cannot be read or does not fit.
 * @throws {HfLlamaError} when `init` is a Hugging Face Llama directory whose config.json or
 * weights the engine's Llama cannot take.
 * @throws {TrainLogError} when the log of the run being resumed (log.jsonl) is damaged.
 * @throws {EngineError} when the engine of `backend` cannot be opened.
 * @throws {NonFiniteError} when the loss or gradient stops being finite.
 * @throws {Error} when the checkpoint of `resume` has another vocabulary than the dataset.
 *
 * @example
 * ```ts ignore
 * import { train } from "./trainer.ts";
 * // 200 steps of LOTUS, after the default recipe's explicit-CoT start (8 epochs of the
 * // dataset, into out/runs/tiny/cot-start); recipe: "none" trains LOTUS alone.
 * const r = await train({
 *   data: "out/data/default",
 *   out: "out/runs/tiny",
 *   preset: "tiny",
 *   train: { mode: "lotus", steps: 200, batch: 16 },
 *   quiet: true,
 * });
 * console.log(`${r.steps} steps, accuracy ${r.valAccuracy}, checkpoint in ${r.checkpoint}`);
 * ```
 */
export async function train(options: TrainOptions): Promise<TrainResult> {
  const opts = withRunDir(options);
  const world = worldFromEnv();
  if (world === null) return await trainPhases(opts, null);
  // A data-parallel rank (mpirun): leave the job once the run is done. A failure leaves
  // without MPI_Finalize: the process exits non-zero and mpirun ends the other ranks.
  const res = await trainPhases(opts, world);
  const eng = engineFor(opts, world, () => {});
  try {
    eng.commFinalize();
  } finally {
    eng.close();
  }
  return res;
}

/** A run's kept best, as its result and summary give it: only when one was kept. */
function keptBest(
  keepBest: boolean,
  state: Pick<TrainState, "bestStep" | "bestAccuracy">,
  dir: string,
): Pick<TrainResult, "best"> {
  return keepBest && state.bestStep > 0
    ? { best: { step: state.bestStep, valAccuracy: state.bestAccuracy, dir } }
    : {};
}

/**
 * What a resume of a run that has already taken all its steps returns: the run as its last
 * save left it, its summary.json's figures included. Nothing is written.
 */
async function completeRunResult(
  out: string,
  ck: CheckpointData,
  params: number,
  world: World | null,
): Promise<TrainResult> {
  let summary = await readSummary(out, ck.state.step);
  if (summary === null) {
    // Lost (or left from an earlier end) to a kill after the final evaluation: the log has
    // the figures; the summary is written again from them.
    const records = await readTrainLog(out);
    const lastTrain = records.findLast((r) => r.kind === "train");
    const lastEval = records.findLast((r) => r.kind === "eval");
    const { step, tokens, seconds } = ck.state;
    summary = {
      steps: step,
      total: step,
      finalLoss: lastTrain?.loss,
      valLoss: lastEval?.valLoss,
      valAccuracy: lastEval?.valAccuracy,
      completed: true,
      ...keptBest(ck.meta.train.keepBest, ck.state, `${out}/best`),
      tokens,
      seconds,
    };
    if (world === null || world.rank === 0) {
      await writeFileAtomic(`${out}/summary.json`, JSON.stringify(summary, null, 2) + "\n");
    }
  }
  const num = (v: unknown) => (typeof v === "number" ? v : undefined);
  const { step, tokens, seconds } = ck.state;
  return {
    steps: step,
    finalLoss: num(summary.finalLoss) ?? NaN,
    valLoss: num(summary.valLoss),
    valAccuracy: num(summary.valAccuracy),
    checkpoint: checkpointDirOf(out),
    params,
    tokensPerSec: tokens / Math.max(1e-9, seconds),
    seconds,
    interrupted: null,
    skippedSteps: 0,
    completed: true,
    ...keptBest(ck.meta.train.keepBest, ck.state, `${out}/best`),
    ...(world ? { world: { rank: world.rank, size: world.size } } : {}),
  };
}

/** Whether `path` is `dir` or lies under it (by their absolute paths). */
function within(path: string, dir: string): boolean {
  const d = absolutePath(dir), p = absolutePath(path);
  return p === d || p.startsWith(`${d}/`);
}

/**
 * Refuses a `--preset` or `--arch` (resolved together: tiny with --arch llama is llama-tiny)
 * that names another preset than `recorded`, the one of the run being resumed.
 */
function refuseOtherPreset(opts: Pick<TrainOptions, "preset" | "arch">, recorded: string): void {
  if (opts.preset === undefined && opts.arch === undefined) return;
  let asked: string | null;
  try {
    asked = opts.arch !== undefined
      ? presetForArch((opts.preset ?? recorded) as PresetName, opts.arch)
      : opts.preset!;
  } catch {
    asked = null; // no such counterpart: not the recorded preset either
  }
  if (asked === recorded) return;
  // The flag at fault: --arch when the preset given is the recorded one (or none is).
  const flag = opts.arch !== undefined && (opts.preset ?? recorded) === recorded
    ? "--arch"
    : "--preset";
  const given = [
    ...(opts.preset !== undefined ? [`--preset ${opts.preset}`] : []),
    ...(opts.arch !== undefined ? [`--arch ${opts.arch}`] : []),
  ];
  throw new TrainConfigError(
    flag,
    `${given.join(" ")} contradicts the run being resumed (preset ${recorded}); leave ${flag} out`,
  );
}

/**
 * What a resume of a two-phase run's plan takes from the command: the settings a resume may
 * change (its length, evaluation, saving), over the plan's. Any other setting, or a --data,
 * that differs from what the plan recorded is a {@linkcode TrainConfigError} naming it: the
 * resumed run trains as it was started.
 */
async function resumePlanSettings(
  opts: RunOptions,
  planned: Partial<TrainOptions>,
): Promise<Pick<TrainOptions, "train" | "data" | "valSplit">> {
  const saved = planned.train ?? {};
  // The plan records the preset --arch resolved (tiny with --arch llama: llama-tiny).
  if (planned.preset !== undefined) refuseOtherPreset(opts, planned.preset);
  // A relative path not found from here: --data gives the run's dataset, as it is found now.
  const moved = planned.data !== undefined && (await relativeNotFound(planned.data));
  if (moved && opts.data === undefined) refuseMovedData(planned.data!, opts.out);
  const data = moved ? opts.data : planned.data ?? opts.data;
  // What the plan's run trains with: its settings, the recipe's and the defaults, the dataset's
  // K and c (null when the dataset cannot be read; then the settings as recorded are compared).
  let resolved: TrainConfig | null = null;
  try {
    const m = JSON.parse(await Deno.readTextFile(`${data}/manifest.json`));
    resolved = resolveTrainConfig(saved, planned.preset ?? "tiny", {
      dir: data!,
      k: m.options.k,
      c: m.options.c,
    });
  } catch (e) {
    rethrowIfDenied(e);
  }
  const train = { ...saved, ...resumeChanges(resolved ?? saved, opts.train ?? {}) };
  if (
    !moved && opts.data !== undefined && data !== undefined &&
    absolutePath(opts.data) !== absolutePath(data)
  ) {
    throw new TrainConfigError(
      "--data",
      `--data ${opts.data} contradicts the run being resumed, which trains on ${data}; leave ` +
        `--data out`,
    );
  }
  // The validation split is one of the settings a resume may change.
  return { train, data, valSplit: opts.valSplit ?? planned.valSplit };
}

/**
 * Whether a run's recorded dataset path is relative (as `--data` was given) and holds no
 * dataset from this working directory: it is relative to the directory the run was started in.
 */
async function relativeNotFound(stored: string): Promise<boolean> {
  return !stored.startsWith("/") && !(await exists(`${stored}/manifest.json`));
}

/**
 * Refuses a resume without `--data` of a run whose dataset is {@linkcode relativeNotFound}:
 * advice to build a dataset there would build a new one in the wrong place; the run's own
 * dataset is given with `--data`.
 */
function refuseMovedData(stored: string, run: string): never {
  throw new TrainConfigError(
    "--data",
    `--resume ${run}: the run trained on the dataset ${stored}, a path relative to the ` +
      `directory the run was started in, and there is no dataset at ${stored} from here ` +
      `(${Deno.cwd()}); pass --data <that dataset> (its path from here, or an absolute one). ` +
      `If it was removed, rebuild it as it was built (the same build-dataset command) and ` +
      `pass that --data: a dataset built otherwise is refused by its fingerprint`,
  );
}

/** Refuses lotus-aux without an aux loss: its aux decoder would learn nothing. */
function refuseAuxWithoutWeight(cfg: TrainConfig): void {
  if (cfg.mode === "lotus-aux" && cfg.auxWeight <= 0) {
    throw new TrainConfigError("--aux-weight", "--mode lotus-aux needs --aux-weight > 0");
  }
}

/**
 * Refuses, before a fresh run's CoT start trains or anything is written, the settings of the
 * two-phase run `opts` (its recipe's settings merged into `train`, its preset resolved) that the
 * LOTUS phase after the CoT start would refuse as it sets up: a K or c that contradicts the
 * dataset ({@linkcode resolveTrainConfig}), lotus-aux without an aux weight, a `--batch` larger
 * than the training split's usable examples ({@linkcode refuseFewUsable}). The same errors, from
 * the same checks, on the dataset's manifest (and the training split where the manifest cannot
 * tell). `llamaJson`: the Hugging Face Llama `config.json` of `opts.init`, where the CoT start
 * begins from one. A dataset whose manifest cannot be read is left to the CoT start's loading,
 * which reports it. (A resume takes the settings of its plan, checked so when the run began; a
 * dataset changed since is refused by its fingerprint.)
 */
async function refuseLotusSettings(opts: RunOptions, llamaJson: unknown | null): Promise<void> {
  if (opts.data === undefined) return;
  let manifest: Manifest;
  try {
    manifest = await readManifest(opts.data);
  } catch (e) {
    if (e instanceof ManifestError) return;
    throw e;
  }
  const preset = opts.preset ?? "tiny";
  const cfg = resolveTrainConfig(opts.train ?? {}, preset, {
    dir: opts.data,
    k: manifest.options.k,
    c: manifest.options.c,
  });
  refuseAuxWithoutWeight(cfg);
  await refuseFewUsable(opts.data, manifest, opts.trainSplit ?? "train", cfg, {
    preset,
    init: opts.init,
    llamaJson,
  });
}

/**
 * Refuses, as the two phases of a run with a CoT start would as each sets up, a `cfg.batch`
 * larger than the examples of split `split` of the dataset in `dir` (its manifest `manifest`)
 * that fit the model's positions ({@linkcode fitting}) in the explicit-CoT layout and in the
 * LOTUS layout of `cfg` at every stage: the fewer of the two is the count refused, as the phase
 * with fewer would refuse it. The model is the CoT start's ({@linkcode freshModelConfig}: the
 * Llama `config.json` `model.llamaJson` of `model.init`, else the preset's). Where the manifest's
 * longest explicit-CoT row, with K·c latents, BOT and EOT added, fits, every record fits both
 * layouts and the split is not read; otherwise it is loaded. A split, a Llama config or shards
 * that cannot be used are left to the CoT start, which reports them.
 */
async function refuseFewUsable(
  dir: string,
  manifest: Manifest,
  split: string,
  cfg: TrainConfig,
  model: { preset: PresetName; init: string | undefined; llamaJson: unknown | null },
): Promise<void> {
  const info = manifest.splits[split];
  if (info === undefined) return;
  let maxPos: number;
  try {
    maxPos = freshModelConfig(
      model.preset,
      model.init ?? null,
      model.llamaJson,
      manifest.tokenizer.vocabSize,
      0,
    ).maxPositions;
  } catch (e) {
    if (e instanceof HfLlamaError) return;
    throw e;
  }
  // A LOTUS row at any stage is at most the explicit-CoT row plus K·c latents, BOT and EOT.
  let usable = info.shards.reduce((n, s) => n + s.records, 0);
  if (info.tokens.maxCot + 2 + cfg.k * cfg.c > maxPos) {
    let examples: Example[];
    try {
      examples = (await loadSplit(dir, split)).examples;
    } catch (e) {
      if (e instanceof DatasetError || e instanceof ManifestError) return;
      throw e;
    }
    usable = Math.min(
      fitting(examples, { ...cfg, mode: "cot" }, maxPos).kept.length,
      fitting(examples, cfg, maxPos).kept.length,
    );
  }
  refuseBatchOver(usable, cfg.batch);
}

/**
 * The options of {@linkcode train} that are not training settings, each as its flag takes it:
 * a value outside this schema is refused before anything is written, rather than passed to the
 * engine (a fractional thread count) or ignored (an unknown `arch` or `verifyData`).
 */
const RunOptionsSchema = z.object({
  threads: z.number().int().min(0).optional(),
  microBatch: z.number().int().min(1).optional(),
  stopAfter: z.number().int().min(1).optional(),
  commTimeout: z.number().int().min(0).optional(),
  arch: z.enum(ARCHS).optional(),
  backend: z.enum(BACKENDS).optional(),
  precision: z.enum(PRECISIONS).optional(),
  verifyData: z.enum(VERIFY_MODES).optional(),
  commOverlap: z.enum(["on", "off"]).optional(),
});

/** The flag and the hint of each {@linkcode RunOptionsSchema} field, for its message. */
const RUN_OPTION_FLAGS: Record<keyof z.infer<typeof RunOptionsSchema>, [string, string]> = {
  threads: ["--threads", "a whole number, at least 0 (0: all cores)"],
  microBatch: ["--micro-batch", "a whole number of examples, at least 1"],
  stopAfter: ["--stop-after", "a whole number of steps, at least 1"],
  commTimeout: ["--comm-timeout", "a whole number of seconds, at least 0 (0: no limit)"],
  arch: ["--arch", ARCHS.join(" or ")],
  backend: ["--backend", BACKENDS.join(", ")],
  precision: ["--precision", PRECISIONS_TEXT],
  verifyData: ["--verify-data", VERIFY_MODES.join(" or ")],
  commOverlap: ["--comm-overlap", "on or off"],
};

/** Refuses a {@linkcode RunOptionsSchema} field out of range, naming its flag. */
function checkRunOptions(opts: RunOptions): void {
  const r = RunOptionsSchema.safeParse(opts);
  if (r.success) return;
  const key = r.error.issues[0].path[0] as keyof typeof RUN_OPTION_FLAGS;
  const [flag, want] = RUN_OPTION_FLAGS[key];
  const v = opts[key];
  throw new TrainConfigError(
    flag,
    `${flag} ${typeof v === "string" ? JSON.stringify(v) : String(v)}: give ${want}`,
  );
}

/** {@linkcode train} in this process, as one rank of `world` when it is given. */
async function trainPhases(opts: RunOptions, world: World | null): Promise<TrainResult> {
  const root = world === null || world.rank === 0;
  const note = (s: string) => {
    if (!opts.quiet && root) console.error(s);
  };
  // Settings are checked before anything is written (a plan, a CoT start).
  checkSettings(opts.train ?? {});
  checkRunOptions(opts);
  refuseCpuPrecision(opts);
  if (opts.resume && opts.overwrite) {
    throw new TrainConfigError(
      "--overwrite",
      "--resume continues a run and --overwrite replaces one: give one of them",
    );
  }
  if (opts.resume && opts.init !== undefined) {
    throw new TrainConfigError(
      "--init",
      `--init ${opts.init}: a resume continues from the run's own weights; leave --init out, ` +
        `or start a new run from it without --resume`,
    );
  }
  // A recipe is settings a resume would not take (recipe "none" sets nothing).
  if (opts.resume && opts.recipe !== undefined && opts.recipe !== "none") {
    throw new TrainConfigError(
      "--recipe",
      `--recipe ${opts.recipe}: a resume continues the run with the settings it started with; ` +
        `leave --recipe out`,
    );
  }
  if (opts.resume) {
    const given = opts.resume.replace(/\/+$/, "");
    const run = resumeRunDir(given);
    if (given === run && (await exists(`${run}/config.json`))) {
      throw new TrainConfigError(
        "--resume",
        `--resume ${given} is a saved model (a kept best, say), not a run directory: resume ` +
          `the run it belongs to, or start a new run from it with --init ${given}`,
      );
    }
    const { parent, stem } = splitPath(run);
    if (stem === "cot-start" && (await exists(`${parent}/${PLAN_FILE}`))) {
      throw new TrainConfigError(
        "--resume",
        `--resume ${given} is the CoT start of the run in ${parent}: --resume ${parent} ` +
          `continues it, and LOTUS after it`,
      );
    }
    // Before anything is made or locked: a mistyped path, a file, a dataset or a kept best
    // that is not there is no run, and stays as it was.
    const found = await notARun(run);
    if (found !== null) {
      throw new TrainConfigError(
        "--resume",
        `--resume ${given}: no such run (${found}); give the run directory that train --out ` +
          `wrote`,
      );
    }
    if (absolutePath(opts.out) !== absolutePath(run)) {
      throw new TrainConfigError(
        "--out",
        `--out ${opts.out}: --resume ${given} continues the run in ${run}, where it writes; ` +
          `leave --out out, or start a new run from its weights with --init ${run}`,
      );
    }
    const lock = root ? await lockRunDir(run, note) : null;
    try {
      await settleReplaced(run, note, world);
      const plan = (await exists(`${run}/${PLAN_FILE}`))
        ? await readPlan(`${run}/${PLAN_FILE}`)
        : null;
      // Stopped in the CoT start, or before LOTUS saved anything: pick the plan up where it is.
      if (
        plan &&
        (plan.phase === "cot-start" || !(await exists(`${checkpointDirOf(run)}/config.json`)))
      ) {
        const { phase: _, ...planned } = plan;
        return await trainWithCotStart(
          {
            ...opts,
            ...planned,
            ...(await resumePlanSettings(opts, planned)),
            out: run,
            resume: undefined,
          },
          true,
          world,
        );
      }
      return await trainRun(opts, world);
    } finally {
      lock?.close();
    }
  }
  // A Hugging Face Llama directory is weights to start from, not a run: the CoT start begins
  // there. The preset (its size's Llama preset unless given, then --arch's counterpart) is
  // resolved here so that the recipe's rate and the plan name the model both phases train.
  // A checkpoint or export of this project is a trained model: its preset and shape are kept,
  // and the CoT start is skipped.
  const initMeta = opts.init !== undefined ? await initMetaOf(opts.init) : null;
  const hfLlama = !initMeta && opts.init !== undefined && await isDirectory(opts.init)
    ? await llamaInitConfig(opts.init)
    : null;
  if (opts.init !== undefined && !hfLlama) await checkInitWeights(opts.init, initMeta !== null);
  const preset = initPreset(
    opts,
    initMeta,
    hfLlama !== null,
    opts.preset ?? (hfLlama ? llamaPresetOf(hfLlama) : "tiny"),
  );
  const mode = opts.train?.mode ?? TrainConfigSchema.parse({}).mode;
  if (opts.recipe === "from-cot" && mode !== "lotus" && mode !== "lotus-aux") {
    throw new TrainConfigError(
      "--recipe",
      `--recipe from-cot trains explicit CoT and then LOTUS from it; --mode ${mode} is a ` +
        `baseline: leave --recipe out, or give --mode lotus`,
    );
  }
  const r = opts.train?.r ?? TrainConfigSchema.parse({}).r;
  for (const n of unusedSettingNotes(opts.train ?? {}, mode, r)) note(`note: ${n}`);
  const given: Partial<TrainConfig> = {
    ...recipeSettings(opts.recipe ?? defaultRecipe(mode), preset),
    ...opts.train,
  };
  const lotus = mode === "lotus" || mode === "lotus-aux";
  const initIsRun = initMeta !== null ||
    (opts.init !== undefined && !hfLlama && await initIsDirectory(opts.init));
  const run = { ...opts, preset, recipe: "none" as const, train: given };
  const cotStart = lotus && (given.cotStartEpochs ?? 0) > 0 && !initIsRun;
  // What LOTUS would refuse after the CoT start is refused before it.
  if (cotStart) await refuseLotusSettings(run, hfLlama);
  const init = opts.init;
  if (
    opts.overwrite && init !== undefined &&
    RUN_ENTRIES.some((e) => within(init, `${opts.out}/${e}`))
  ) {
    throw new TrainConfigError(
      "--overwrite",
      `--init ${init} is part of the run in --out ${opts.out}, which --overwrite replaces; ` +
        `copy it elsewhere or train into another --out`,
    );
  }
  if (root) await refuseEvalOutput(opts.out);
  // The directories made here go again if the run fails before its first step, or is stopped
  // before its second.
  const made = root ? await makeRunDir(opts.out) : [];
  const lock = root ? await lockRunDir(opts.out, note) : null;
  try {
    await settleReplaced(opts.out, note, world);
    const aside = root ? await claimRunDir(opts.out, opts.overwrite) : null;
    let res: TrainResult;
    // Whether a step has begun: a failure before it (a setting the dataset refuses, a missing
    // GPU) leaves nothing of the run, as a stop before the second step does.
    let stepped = false;
    const onFirstStep = () => {
      stepped = true;
    };
    try {
      res = cotStart
        ? await trainWithCotStart(run, false, world, initMeta, onFirstStep)
        : await trainRun(run, world, { initMeta, dropUntrained: true, onFirstStep });
    } catch (e) {
      // The replaced run stays replaced once the new one has saved weights of its own.
      if (aside) await ((await holdsSavedRun(opts.out)) ? aside.discard() : aside.restore());
      else if (root && !stepped && !(await holdsSavedRun(opts.out))) {
        await clearFreshRun(opts.out, made);
      }
      throw e;
    }
    if (res.nothingSaved) {
      if (root) await dropUntrainedRun(opts.out, aside, made, stoppedWhen(res), note);
    } else await aside?.discard();
    return res;
  } finally {
    lock?.close();
  }
}

/**
 * Clear what a fresh run stopped before its second step wrote into `out` (its logs, a plan, a
 * CoT start), so that the same command runs again: the run `--overwrite` set aside comes back
 * (`aside`); otherwise the run's entries go, and with them the directories {@linkcode makeRunDir}
 * made for it (`made`) and its lock file there. Nothing that `out` held before is touched
 * ({@linkcode claimRunDir} left no run entries in it). Stop signals are held off meanwhile, so
 * that a second Ctrl-C does not cut it short. Says what it did in `note`.
 */
async function dropUntrainedRun(
  out: string,
  aside: SetAside | null,
  made: readonly string[],
  when: string,
  note: (s: string) => void,
): Promise<void> {
  const held = watchStopSignals();
  try {
    let what: string;
    if (aside) {
      await aside.restore();
      what = `the run --overwrite set aside is back in place in ${out}`;
    } else {
      what = (await clearFreshRun(out, made))
        ? `${out}, made by this run, is removed`
        : `what the run wrote in ${out} is removed`;
    }
    note(`${when}; ${what}`);
  } finally {
    held.close();
  }
}

/**
 * Removes what a fresh run that kept nothing wrote into `out` (its run entries), and the
 * directories {@linkcode makeRunDir} made for it (`made`) with its lock file there; a directory
 * that was there before keeps its lock file and all it held. Returns whether `out` went.
 */
async function clearFreshRun(out: string, made: readonly string[]): Promise<boolean> {
  await removeRunEntries(out);
  if (made.length === 0) return false;
  // Removed while still held: a process that opens it from now on makes a lock of its own.
  await Deno.remove(`${out}/${RUN_LOCK}`).catch(rethrowIfDenied);
  return await removeMadeDirs(made);
}

/**
 * What became of a run that a signal stopped with {@linkcode TrainResult.nothingSaved}, e.g.
 * `SIGINT in the first step: nothing was saved`.
 */
export function stoppedWhen(res: TrainResult): string {
  return res.steps === 0
    ? `${res.interrupted} before the first step: nothing was trained or saved`
    : `${res.interrupted} in the first step: nothing was saved`;
}

/** Where a two-phase run records what it was asked, for `resume` before LOTUS has saved. */
const PLAN_FILE = "plan.json";

/** The part of {@linkcode TrainOptions} a plan keeps: what defines the run. */
const PlanSchema = z.object({
  data: z.string(),
  preset: z.enum(PRESET_NAMES as [PresetName, ...PresetName[]]),
  train: z.record(z.string(), z.unknown()),
  init: z.string().optional(),
  trainSplit: z.string().optional(),
  valSplit: z.string().optional(),
  /** The phase under way: the CoT start, or LOTUS from it. */
  phase: z.enum(["cot-start", "lotus"]),
});

/** A run's plan, checked: its settings as the schema takes them. */
async function readPlan(
  path: string,
): Promise<Partial<TrainOptions> & { phase: "cot-start" | "lotus" }> {
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    rethrowIfDenied(e);
    // The run writes it whole (through a temporary file): one that is not JSON was damaged or
    // edited since.
    throw new TrainConfigError(
      "--resume",
      e instanceof SyntaxError
        ? `${path}: not valid JSON (${e.message}); the plan is damaged: fix it, or start the ` +
          `run again with --overwrite instead of --resume`
        : `${path}: unreadable (${(e as Error).message}); make it readable, then resume again`,
    );
  }
  const p = PlanSchema.safeParse(raw);
  if (!p.success) {
    throw new TrainConfigError(
      "--resume",
      `${path}: not a run plan (${fieldIssue(p.error)}); fix it, or start the run again ` +
        `with --overwrite instead of --resume`,
    );
  }
  // Unknown or invalid settings fail here, naming the field.
  const t = TrainConfigSchema.safeParse({ ...p.data.train });
  if (!t.success) {
    throw new TrainConfigError(
      "--resume",
      `${path}: ${fieldIssue(t.error, "train.")}; the plan is damaged: fix ` +
        `that field, or start the run again with --overwrite`,
    );
  }
  return { ...p.data, train: p.data.train as Partial<TrainConfig> };
}

/** Whether `--init` names a directory; a path that does not exist is an error naming it. */
async function initIsDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (e) {
    rethrowIfDenied(e);
    throw new TrainConfigError("--init", `--init ${path}: not found`);
  }
}

/** The loss the run in `dir` logged for `step`, or NaN when its log has none. */
async function loggedLoss(dir: string, step: number): Promise<number> {
  try {
    const rec = (await readTrainLog(dir)).findLast((r) => r.kind === "train" && r.step === step);
    return rec?.loss ?? NaN;
  } catch (e) {
    rethrowIfDenied(e);
    return NaN;
  }
}

/**
 * Whether the log of the run in `dir` ends with an evaluation at `step`: the final one, which
 * a run that lost its summary.json (killed just before writing it) has already done.
 */
async function finalEvalLogged(dir: string, step: number): Promise<boolean> {
  try {
    const last = (await readTrainLog(dir)).at(-1);
    return last?.kind === "eval" && last.step === step;
  } catch (e) {
    rethrowIfDenied(e);
    return false;
  }
}

/**
 * What the CoT start shares with the LOTUS run: the data order, batch, evaluation and the
 * optimiser's settings. Its length, mode and learning rate (the preset's) are its own.
 */
const SHARED_WITH_COT_START: readonly (keyof TrainConfig)[] = [
  "batch",
  "seed",
  "evalEvery",
  "evalExamples",
  "maxNewTokens",
  "saveEvery",
  "onNonFinite",
  "dropout",
  "schedule",
  "warmupSteps",
  "minLrRatio",
  "weightDecay",
  "beta1",
  "beta2",
  "eps",
  "clip",
];

/**
 * The CoT start, then LOTUS from it. `resuming`: continue what `out` holds (a CoT start
 * stopped part way is resumed, a completed one reused); otherwise both phases start afresh.
 * `initMeta`: {@linkcode initMetaOf} of `opts.init`, where the caller has read it.
 *
 * SIGINT, SIGTERM or SIGHUP stops the run, resumable, from the end of the CoT start's set-up on: between
 * the phases too, and while LOTUS sets up, when LOTUS stops before its first step (after one
 * agreed step in a data-parallel run), saves and prints the resume hint, as a stop during a
 * phase does. One during the CoT start's set-up ends the process at once, nothing saved, as for
 * any run; one before or in the first step of a fresh run's CoT start saves nothing either (the
 * caller clears the run): a fresh run in the same directory then starts over.
 */
async function trainWithCotStart(
  opts: RunOptions,
  resuming: boolean,
  world: World | null,
  initMeta?: InitMeta | null,
  onFirstStep?: () => void,
): Promise<TrainResult> {
  const cotListening: { watch?: StopWatch } = {};
  try {
    return await cotStartThenLotus(opts, resuming, world, initMeta, cotListening, onFirstStep);
  } finally {
    cotListening.watch?.close();
  }
}

/**
 * {@linkcode trainWithCotStart}. `cotListening` gets the CoT start's watch of stop signals, which
 * listens on until the caller closes it: LOTUS stops on a signal it saw.
 */
async function cotStartThenLotus(
  opts: RunOptions,
  resuming: boolean,
  world: World | null,
  initMeta: InitMeta | null | undefined,
  cotListening: { watch?: StopWatch },
  onFirstStep?: () => void,
): Promise<TrainResult> {
  const root = world === null || world.rank === 0;
  const log = (s: string) => {
    if (!opts.quiet && root) console.error(s);
  };
  const given = opts.train ?? {};
  if (opts.data === undefined) throw new TrainConfigError("--data", "give a dataset directory");
  if (root) await Deno.mkdir(opts.out, { recursive: true });
  const writePlan = async (phase: "cot-start" | "lotus") => {
    if (!root) return;
    const plan: z.input<typeof PlanSchema> = {
      data: opts.data!,
      preset: opts.preset ?? "tiny",
      train: given,
      init: opts.init,
      trainSplit: opts.trainSplit,
      valSplit: opts.valSplit,
      phase,
    };
    await writeFileAtomic(`${opts.out}/${PLAN_FILE}`, JSON.stringify(plan, null, 2) + "\n");
  };
  await writePlan("cot-start");
  const cotDir = `${opts.out}/cot-start`;
  if (!resuming && given.steps != null) {
    log(
      `note: --steps ${given.steps} is the LOTUS phase's length; the CoT start trains its ` +
        `${given.cotStartEpochs} epochs first (--cot-start-epochs; --recipe none skips it)`,
    );
  }
  const cotTrain: Partial<TrainConfig> = {
    mode: "cot",
    epochs: given.cotStartEpochs,
    keepBest: true,
  };
  for (const key of SHARED_WITH_COT_START) {
    if (given[key] !== undefined) (cotTrain as Record<string, unknown>)[key] = given[key];
  }
  let cotStart: TrainResult | undefined;
  // stopAfter counts the steps of both phases.
  const taken = { steps: 0 };
  if (resuming && await completedRun(cotDir)) {
    log(`the CoT start in ${cotDir} is complete`);
  } else {
    const again = resuming && await exists(`${checkpointDirOf(cotDir)}/config.json`);
    log(
      `phase 1 of 2: explicit CoT for ${given.cotStartEpochs} epochs into ${cotDir}, the ` +
        `model LOTUS starts from${again ? " (resumed)" : ""}`,
    );
    cotStart = await trainRun(
      {
        ...opts,
        out: cotDir,
        recipe: "none",
        resume: again ? cotDir : undefined,
        onLog: opts.onLog && ((r) => opts.onLog!(r, "cot-start")),
        // Resumed: what a resume may change and the CoT start shares (evaluation, saving).
        train: again
          ? Object.fromEntries(
            SHARED_WITH_COT_START.filter((k) => RESUME_MAY_CHANGE.includes(k))
              .filter((k) => given[k] !== undefined).map((k) => [k, given[k]]),
          )
          : cotTrain,
      },
      world,
      // A fresh run's CoT start stopped before its second step saves nothing (the caller
      // clears the run); a resumed one saves, as LOTUS after it does.
      {
        resumeAs: opts.out,
        initMeta,
        keepListening: cotListening,
        dropUntrained: !resuming,
        onFirstStep,
        taken,
      },
    );
    // Stopped in the CoT start: its result is the run's, and LOTUS has not started.
    if (!cotStart.completed) return cotStart;
  }
  const start = (await exists(`${cotDir}/best/config.json`)) ? `${cotDir}/best` : cotDir;
  await writePlan("lotus");
  if (opts.stopAfter && taken.steps >= opts.stopAfter) {
    log(`stopped after ${taken.steps} steps (--stop-after): LOTUS starts on resume`);
    return { ...cotStart!, completed: false };
  }
  log(`phase 2 of 2: LOTUS from ${start}`);
  // LOTUS keeps the shape the CoT start trained (a Hugging Face Llama's config.json's, say).
  const res = await trainRun(
    { ...opts, init: start, recipe: "none", resume: undefined },
    world,
    { stop: cotListening.watch, onFirstStep, taken },
  );
  return cotStart ? { ...res, cotStart } : res;
}

/**
 * The options of `train` (recipe.ts), as `deno task train` gives them, and what a run
 * returns.
 *
 * @module
 */

import type { Precision } from "../engine/ffi.ts";
import type { BackendName } from "../engine/types.ts";
import type { Arch, PresetName, TrainConfig } from "../model/config.ts";
import type { LogRecord } from "./run_log.ts";
import type { RecipeName } from "./options.ts";
import type { VerifyMode } from "../pipeline/shard.ts";

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
   * Training settings; what is not given is resolved by `resolveTrainConfig` (options.ts): K
   * and c from the dataset, the learning rate from the preset, the rest from the defaults.
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

/** {@linkcode TrainOptions} with the run directory resolved (recipe.ts's `withRunDir`). */
export type RunOptions = TrainOptions & { out: string };

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

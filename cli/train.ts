/**
 * `deno task train`: a dataset directory in, a checkpoint out. A thin layer over
 * {@linkcode train} in train/recipe.ts, which resolves every setting left unset.
 *
 * @module
 */

import {
  ARCHS,
  MODES,
  PRESET_NAMES,
  PRESETS,
  type TrainConfig,
  TrainConfigSchema,
} from "../model/config.ts";
import { BACKENDS, MAX_THREADS } from "../engine/types.ts";
import { PRECISIONS } from "../engine/ffi.ts";
import { resumeArgs } from "../train/trainer.ts";
import { stoppedWhen, train } from "../train/recipe.ts";
import { signalExitCode, unlessGone } from "../base/signals.ts";
import { DEFAULT_COT_START_EPOCHS, RECIPE_NAMES, resumeRunDir } from "../train/options.ts";
import { VERIFY_MODES } from "../pipeline/shard.ts";
import {
  type ArgsOf,
  cliMain,
  decimal,
  defineCommand,
  type FlagTable,
  flagTable,
  inGroup,
  nonEmpty,
  oneOf,
  pickSet,
  wholeNumber,
} from "./_common.ts";

/** The library's defaults, shown in the help; the command never fills them in itself. */
const DEFAULTS = TrainConfigSchema.parse({});
const libraryDefault = (key: keyof TrainConfig) => String(DEFAULTS[key]);

/** A flag table whose every key is a {@linkcode TrainConfig} field (checked by the compiler). */
function settingFlags<
  const F extends FlagTable & { [K in keyof F]: K extends keyof TrainConfig ? unknown : never },
>(flags: F): F {
  return flags;
}

/** The flags that set the run: where it reads and writes, and how it runs. */
const RUN_FLAGS = flagTable({
  data: {
    value: "DIR",
    help: "dataset directory from deno task build-dataset",
    schema: nonEmpty("a directory"),
    defaultText: "out/data/default; with --resume, the run's",
  },
  out: {
    value: "DIR",
    help: "run directory: logs, checkpoint/",
    schema: nonEmpty("a directory"),
    defaultText: "out/runs/default; with --resume, the resumed run's",
  },
  preset: {
    value: "NAME",
    help: "model size",
    schema: oneOf(PRESET_NAMES),
    defaultText: "tiny; with --resume, the run's; with --init, the model's (a Hugging Face " +
      "Llama directory: the Llama preset of its size)",
  },
  arch: {
    value: "A",
    help: "backbone architecture: the preset's counterpart in gpt2 or llama (tiny <-> llama-tiny)",
    schema: oneOf(ARCHS),
    defaultText: "the preset's",
  },
  backend: { value: "B", help: "where to run", schema: oneOf(BACKENDS), default: "cpu" },
  precision: {
    value: "P",
    help: "CUDA matmuls (the CPU has only fp32)",
    schema: oneOf(PRECISIONS),
    defaultText: "bf16 on CUDA, fp32 on the CPU",
  },
  recompute: {
    value: "on|off",
    help: "keep fewer activations in training and recompute the normalisations, attention " +
      "outputs and MLP activations in the backward (same gradients, less memory)",
    schema: oneOf(["on", "off"]),
    defaultText: "on with the CUDA engine, off on the CPU",
  },
  graphs: {
    value: "on|off",
    help: "CUDA: record each batch shape's training step as a CUDA graph at its second step " +
      "and replay it from the third (same results, one host call a step)",
    schema: oneOf(["on", "off"]),
    defaultText: "on (the CPU engine has no graphs)",
  },
  threads: {
    value: "N",
    help: "CPU threads, 0 = all cores",
    schema: wholeNumber(0, MAX_THREADS),
    default: 0,
  },
  microBatch: {
    value: "N",
    help: "examples a forward and backward take at once (a rank's, under mpirun): each step " +
      "adds up the gradients of its batch's micro-batches, the same step in less memory; " +
      "evaluations run in batches of N too",
    schema: wholeNumber(1),
    defaultText: "the whole batch",
  },
  init: {
    value: "PATH",
    help: "start from a local Hugging Face GPT-2 model.safetensors, a run, checkpoint or " +
      "export of this project (a CoT run, for LOTUS; the model keeps its shape), or a " +
      "downloaded Hugging Face Llama directory (its config.json sets the model)",
    schema: nonEmpty("a path"),
  },
  resume: {
    value: "DIR",
    help: "continue a run (or checkpoint) directory exactly",
    schema: nonEmpty("a directory"),
  },
  overwrite: {
    help: "replace the run --out already holds (without it, a fresh run into a run " +
      "directory is refused)",
  },
  valSplit: {
    value: "NAME",
    help: "validation split",
    schema: nonEmpty("a split name"),
    default: "valid",
  },
  stopAfter: {
    value: "N",
    help: "stop after N steps in this process (the run stays resumable)",
    schema: wholeNumber(1),
  },
  recipe: {
    value: "NAME",
    help: "settings in one flag, under the ones given: from-cot = explicit CoT first, then " +
      "LOTUS from it at a third of the learning rate; paper = the reference's LOTUS protocol; " +
      "none (docs/training.md)",
    schema: oneOf(RECIPE_NAMES),
    defaultText: "from-cot for lotus and lotus-aux, none for cot and nocot",
  },
  verifyData: {
    value: "HOW",
    help: "check the dataset against its manifest: basic (counts, shapes, offsets, token ids) " +
      "or full (also every file's sha256)",
    schema: oneOf(VERIFY_MODES),
    default: "basic",
  },
  commTimeout: {
    value: "S",
    help: "under mpirun: seconds a rank waits at a collective for the others before it " +
      "ends the job (0 = no limit; docs/distributed.md)",
    schema: wholeNumber(0),
    default: 600,
  },
  commOverlap: {
    value: "ON",
    help: "under mpirun: on = sum each block's gradient over the ranks as soon as the " +
      "backward is done with it, off = the whole gradient after the backward " +
      "(docs/distributed.md)",
    schema: oneOf(["on", "off"]),
    default: "on",
  },
  quiet: { help: "no progress output" },
});

/**
 * The flags that are training settings: each key is a {@linkcode TrainConfig} field, and only
 * the ones given reach train(), which resolves the rest (docs/training.md).
 */
const CONFIG_FLAGS = inGroup(
  "Training settings (docs/training.md)",
  settingFlags({
    mode: {
      value: "MODE",
      help: "what the model learns",
      schema: oneOf(MODES),
      defaultText: libraryDefault("mode"),
    },
    k: {
      value: "N",
      help: "latent blocks at the last curriculum stage",
      schema: wholeNumber(0),
      defaultText: "the dataset's K",
    },
    c: {
      value: "N",
      help: "latent slots per block",
      schema: wholeNumber(1),
      defaultText: "the dataset's c",
    },
    r: {
      value: "N",
      help: "loop iterations; 0 is the no-loop ablation",
      schema: wholeNumber(0),
      defaultText: "R = K at every stage, as the reference",
    },
    lambda: {
      value: "X",
      help: "step-loss weight",
      schema: decimal({ min: 0 }),
      defaultText: libraryDefault("lambda"),
    },
    auxWeight: {
      value: "X",
      help: "LOTUS-aux decoder loss weight",
      schema: decimal({ min: 0 }),
      defaultText: libraryDefault("auxWeight"),
    },
    auxReads: {
      value: "WHERE",
      help: "LOTUS-aux: the decoder reads every block after the loop, or block r-1 at pass r",
      schema: oneOf(["after", "in-loop"]),
      defaultText: libraryDefault("auxReads"),
    },
    stepLoss: {
      value: "WHERE",
      help: "step loss on the final pass or per pass",
      schema: oneOf(["after", "in-loop"]),
      defaultText: libraryDefault("stepLoss"),
    },
    injection: {
      value: "HOW",
      help: "latent injection",
      schema: oneOf(["add", "replace"]),
      defaultText: libraryDefault("injection"),
    },
    epochsPerStage: {
      value: "N",
      help: "curriculum: stage s = min(epoch / N, K); 0 = no curriculum",
      schema: wholeNumber(0),
      defaultText: libraryDefault("epochsPerStage"),
    },
    stepsPerStage: {
      value: "N",
      help: "curriculum in steps instead: stage s = min(step / N, K); 0 = use epochs",
      schema: wholeNumber(0),
      defaultText: libraryDefault("stepsPerStage"),
    },
    finalStageSteps: {
      value: "N",
      help: "train N steps once the final stage is reached (then --steps and --epochs are unused)",
      schema: wholeNumber(1),
    },
    lrLatent: {
      value: "X",
      help: "learning rate from stage 1 on (the latent stages)",
      schema: decimal({ above: 0 }),
      defaultText: "--lr",
    },
    cotStartEpochs: {
      value: "N",
      help: "LOTUS: first train explicit CoT for N epochs (into <out>/cot-start) and start " +
        "from it; 0 = no CoT start. An --init model of this project (a run) skips it",
      schema: wholeNumber(0),
      defaultText: `${DEFAULT_COT_START_EPOCHS} with --recipe from-cot, else 0`,
    },
    keepBest: {
      help: "evaluate after every epoch of the final stage and keep the best in <out>/best",
    },
    lr: {
      value: "X",
      help: "learning rate",
      schema: decimal({ above: 0 }),
      defaultText: `the preset's: ${
        PRESET_NAMES.map((p) => `${p} ${PRESETS[p].lr.toExponential()}`).join(", ")
      }; a third of it for LOTUS with --recipe from-cot`,
    },
    dropout: {
      value: "P",
      help: "dropout probability in training (block inputs, attention and MLP outputs)",
      schema: decimal({ min: 0, max: 0.9 }),
      defaultText: libraryDefault("dropout"),
    },
    schedule: {
      value: "S",
      help: "learning-rate schedule after warmup",
      schema: oneOf(["constant", "cosine"]),
      defaultText: libraryDefault("schedule"),
    },
    warmupSteps: {
      flag: "warmup",
      value: "N",
      help: "linear warmup steps",
      schema: wholeNumber(0),
      defaultText: libraryDefault("warmupSteps"),
    },
    weightDecay: {
      value: "X",
      help: "AdamW weight decay",
      schema: decimal({ min: 0 }),
      defaultText: libraryDefault("weightDecay"),
    },
    clip: {
      value: "X",
      help: "global-norm gradient clip, 0 = off",
      schema: decimal({ min: 0 }),
      defaultText: libraryDefault("clip"),
    },
    batch: {
      value: "N",
      help: "examples per step",
      schema: wholeNumber(1),
      defaultText: libraryDefault("batch"),
    },
    steps: {
      value: "N",
      help: "optimiser steps; overrides --epochs (with a CoT start, the LOTUS phase's: " +
        "--cot-start-epochs sets the CoT start's length)",
      schema: wholeNumber(1),
    },
    epochs: {
      value: "N",
      help: "epochs (with a CoT start, of the LOTUS phase)",
      schema: wholeNumber(1),
      defaultText: libraryDefault("epochs"),
    },
    seed: {
      value: "N",
      help: "seed of initialisation and data order",
      schema: wholeNumber(0),
      defaultText: libraryDefault("seed"),
    },
    evalEvery: {
      value: "N",
      help: "evaluate every N steps as well as at the end; 0 = only at the end",
      schema: wholeNumber(0),
      defaultText: libraryDefault("evalEvery"),
    },
    evalExamples: {
      value: "N",
      help: "validation examples for accuracy, 0 = all",
      schema: wholeNumber(0),
      defaultText: libraryDefault("evalExamples"),
    },
    maxNewTokens: {
      value: "N",
      help: "generation budget during evaluation",
      schema: wholeNumber(1),
      defaultText: libraryDefault("maxNewTokens"),
    },
    saveEvery: {
      value: "N",
      help: "save a checkpoint every N steps as well as at the end; 0 = only at the end",
      schema: wholeNumber(0),
      defaultText: libraryDefault("saveEvery"),
    },
    onNonFinite: {
      value: "WHAT",
      help: "a step with a non-finite loss or gradient: stop the run, or skip its update " +
        "(at most 10 in a row)",
      schema: oneOf(["stop", "skip"]),
      defaultText: libraryDefault("onNonFinite"),
    },
  }),
);

/** `deno task train`, declared. */
export const command = defineCommand({
  name: "train",
  summary: "Train a looped Transformer with LOTUS (or a baseline) on a dataset directory from " +
    "deno task build-dataset, and write a checkpoint. With no flags it trains the tiny preset " +
    "on the default dataset (out/data/default) into out/runs/default.",
  flags: { ...RUN_FLAGS, ...CONFIG_FLAGS },
  examples: [
    { what: "tiny LOTUS on the default dataset", command: "deno task train" },
    {
      what: "small LOTUS on a GSM8K dataset (see deno task build-dataset --help)",
      command: "deno task train --data out/data/gsm8k --preset small --epochs 5 " +
        "--out out/runs/gsm8k",
    },
    {
      what: "the explicit chain-of-thought baseline on the same data",
      command: "deno task train --data out/data/gsm8k --preset small --mode cot --epochs 5 " +
        "--out out/runs/cot",
    },
    {
      what: "continue a run exactly where it stopped",
      command: "deno task train --resume out/runs/gsm8k",
    },
  ],
});

/** Validated `deno task train` values. */
export type TrainArgs = ArgsOf<typeof command>;

/** Parse argv into validated values, or "help" (exported for tests). */
export function parseTrainArgs(argv: string[]): TrainArgs | "help" {
  return command.parse(argv);
}

/** The training settings given on the command line, and only those: train() resolves the rest. */
export function trainSettings(a: TrainArgs): Partial<TrainConfig> {
  const s: Partial<TrainConfig> = pickSet(
    a,
    Object.keys(CONFIG_FLAGS) as (keyof typeof CONFIG_FLAGS)[],
  );
  // A switch left off is not a setting: the library's default (or a recipe's) stands.
  if (s.keepBest === false) delete s.keepBest;
  return s;
}

async function main(a: TrainArgs): Promise<number> {
  const run = pickSet(a, Object.keys(RUN_FLAGS) as (keyof typeof RUN_FLAGS)[]);
  const out = a.out ?? (a.resume ? resumeRunDir(a.resume) : "out/runs/default");
  const res = await train({
    ...run,
    recompute: a.recompute === undefined ? undefined : a.recompute === "on",
    graphs: a.graphs === undefined ? undefined : a.graphs === "on",
    out,
    data: a.data ?? (a.resume ? undefined : "out/data/default"),
    train: trainSettings(a),
  });
  // A data-parallel run's result is the same on every rank: rank 0 reports it.
  if (res.world && res.world.rank !== 0) {
    return res.interrupted ? signalExitCode(res.interrupted) : 0;
  }
  if (res.interrupted) {
    // After SIGHUP the terminal may be gone: the exit status says how the run ended.
    unlessGone(() =>
      console.log(
        res.nothingSaved
          ? `stopped by ${stoppedWhen(res)}; rerun the same command`
          : `stopped by ${res.interrupted} at step ${res.steps}; checkpoint in ${res.checkpoint}`,
      )
    );
    return signalExitCode(res.interrupted);
  }
  if (!res.completed) {
    // --stop-after: the run goes on with --resume.
    console.log(
      `stopped by --stop-after ${a.stopAfter} at step ${res.steps}; checkpoint in ` +
        `${res.checkpoint}; go on with ${resumeArgs(out, run)}`,
    );
    return 0;
  }
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  if (res.cotStart) {
    const c = res.cotStart;
    console.log(
      `CoT start: ${c.steps} steps` +
        (c.best
          ? `, best validation accuracy ${pct(c.best.valAccuracy)} at step ${c.best.step}`
          : c.valAccuracy !== undefined
          ? `, validation accuracy ${pct(c.valAccuracy)}`
          : "") +
        `; LOTUS started from ${c.best?.dir ?? c.checkpoint}`,
    );
  }
  console.log(
    `done: ${res.steps} steps, final loss ${res.finalLoss.toFixed(4)}` +
      (res.valAccuracy !== undefined
        ? `, ${
          res.evalOnTraining
            ? "training-set accuracy (no usable validation split)"
            : "validation accuracy"
        } ${(100 * res.valAccuracy).toFixed(1)}%`
        : "") +
      `, ${Math.round(res.tokensPerSec)} tok/s; checkpoint in ${res.checkpoint}`,
  );
  if (res.best) {
    console.log(
      `best of the final stage: ${pct(res.best.valAccuracy)} at step ${res.best.step}, in ` +
        res.best.dir,
    );
  }
  return 0;
}

if (import.meta.main) await cliMain(command, main);

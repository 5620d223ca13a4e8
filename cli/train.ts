/**
 * `deno task train`: a dataset directory in, a checkpoint out. A thin layer over
 * {@linkcode train} in train/trainer.ts.
 *
 * @module
 */

import { z } from "zod";
import { ModeSchema, PRESET_NAMES, type PresetName, type TrainConfig } from "../model/config.ts";
import { train } from "../train/trainer.ts";
import { cliMain, parseCommandLine } from "./_common.ts";

const HELP = `deno task train [options]

Train a looped Transformer with LOTUS (or a baseline) on a dataset directory from
deno task build-dataset, and write a checkpoint. With no options it trains the tiny preset on
the default dataset (out/data/default) into out/runs/default.

  --data DIR            dataset directory               (default out/data/default)
  --out DIR             run directory: logs, checkpoint/ (default out/runs/default)
  --preset NAME         tiny | small | gpt2             (default tiny)
  --mode MODE           lotus | lotus-aux | cot | nocot (default lotus)
  --k N                 latent blocks at the last stage (default: the dataset's K)
  --c N                 latent slots per block          (default: the dataset's c)
  --r N                 loop iterations; default: R = K at every stage (the reference)
  --lambda X            step-loss weight                (default 0.05)
  --aux-weight X        LOTUS-aux decoder loss weight   (default 1)
  --step-loss WHERE     after | in-loop                 (default after)
  --injection HOW       add | replace                   (default add)
  --epochs-per-stage N  curriculum: stage s = min(epoch / N, K); 0 = no curriculum (default 1)
  --lr X                learning rate (default: the preset's; tiny 3e-3, small 1e-3, gpt2 3e-4)
  --schedule S          constant | cosine               (default constant)
  --warmup N            warmup steps                    (default 0)
  --weight-decay X      AdamW weight decay              (default 0.01)
  --clip X              global-norm gradient clip, 0 = off (default 1)
  --batch N             examples per step               (default 16)
  --steps N             optimiser steps (overrides --epochs)
  --epochs N            epochs                          (default 15)
  --seed N              seed for initialisation and data order (default 0)
  --eval-every N        evaluate every N steps (always at the end)
  --eval-examples N     validation examples for accuracy, 0 = all (default 200)
  --max-new-tokens N    generation budget during evaluation (default 64)
  --save-every N        checkpoint every N steps (always at the end)
  --backend B           cpu | cuda | auto               (default cpu)
  --precision P         CUDA matmuls: fp32 | tf32 | bf16 (default fp32)
  --threads N           CPU threads, 0 = all cores      (default 0)
  --init PATH           start from a local Hugging Face GPT-2 model.safetensors
  --resume DIR          continue a run (or checkpoint) directory exactly
  --val-split NAME      validation split                (default valid)
  --stop-after N        stop after N steps in this process (the run stays resumable)
  --quiet               no progress output
  -h, --help            this help
`;

const ArgsSchema = z.object({
  data: z.string().default("out/data/default"),
  out: z.string().default("out/runs/default"),
  preset: z.enum(PRESET_NAMES as [PresetName, ...PresetName[]]).default("tiny"),
  backend: z.enum(["cpu", "cuda", "auto"]).default("cpu"),
  precision: z.enum(["fp32", "tf32", "bf16"]).default("fp32"),
  threads: z.coerce.number().int().min(0).default(0),
  init: z.string().optional(),
  resume: z.string().optional(),
  valSplit: z.string().default("valid"),
  stopAfter: z.coerce.number().int().min(1).optional(),
  quiet: z.boolean().default(false),
  // training config (validated again by TrainConfigSchema)
  mode: ModeSchema.optional(),
  k: z.coerce.number().int().min(0).optional(),
  c: z.coerce.number().int().min(1).optional(),
  r: z.coerce.number().int().min(0).optional(),
  lambda: z.coerce.number().min(0).optional(),
  auxWeight: z.coerce.number().min(0).optional(),
  stepLoss: z.enum(["after", "in-loop"]).optional(),
  injection: z.enum(["add", "replace"]).optional(),
  epochsPerStage: z.coerce.number().int().min(0).optional(),
  lr: z.coerce.number().positive().optional(),
  schedule: z.enum(["constant", "cosine"]).optional(),
  warmup: z.coerce.number().int().min(0).optional(),
  weightDecay: z.coerce.number().min(0).optional(),
  clip: z.coerce.number().min(0).optional(),
  batch: z.coerce.number().int().min(1).optional(),
  steps: z.coerce.number().int().min(1).optional(),
  epochs: z.coerce.number().int().min(1).optional(),
  seed: z.coerce.number().int().min(0).optional(),
  evalEvery: z.coerce.number().int().min(0).optional(),
  evalExamples: z.coerce.number().int().min(0).optional(),
  maxNewTokens: z.coerce.number().int().min(1).optional(),
  saveEvery: z.coerce.number().int().min(0).optional(),
});

const STRING_FLAGS = [
  "data",
  "out",
  "preset",
  "backend",
  "precision",
  "threads",
  "init",
  "resume",
  "val-split",
  "stop-after",
  "mode",
  "k",
  "c",
  "r",
  "lambda",
  "aux-weight",
  "step-loss",
  "injection",
  "epochs-per-stage",
  "lr",
  "schedule",
  "warmup",
  "weight-decay",
  "clip",
  "batch",
  "steps",
  "epochs",
  "seed",
  "eval-every",
  "eval-examples",
  "max-new-tokens",
  "save-every",
];

/** Parse argv into validated options (exported for tests). */
export function parseTrainArgs(argv: string[]): z.infer<typeof ArgsSchema> | "help" {
  return parseCommandLine(
    argv,
    "train",
    { strings: STRING_FLAGS, booleans: ["quiet"] },
    ArgsSchema,
  );
}

async function main(argv: string[]): Promise<number> {
  const a = parseTrainArgs(argv);
  if (a === "help") {
    console.log(HELP);
    return 0;
  }
  const t: Partial<TrainConfig> = {};
  const keys = [
    "mode",
    "k",
    "c",
    "r",
    "lambda",
    "auxWeight",
    "stepLoss",
    "injection",
    "epochsPerStage",
    "lr",
    "schedule",
    "weightDecay",
    "clip",
    "batch",
    "steps",
    "epochs",
    "seed",
    "evalEvery",
    "evalExamples",
    "maxNewTokens",
    "saveEvery",
  ] as const;
  for (const k of keys) if (a[k] !== undefined) (t as Record<string, unknown>)[k] = a[k];
  if (a.warmup !== undefined) t.warmupSteps = a.warmup;
  const res = await train({
    data: a.data,
    out: a.out,
    preset: a.preset,
    train: t,
    backend: a.backend,
    precision: a.precision,
    threads: a.threads,
    init: a.init,
    resume: a.resume,
    valSplit: a.valSplit,
    stopAfter: a.stopAfter,
    quiet: a.quiet,
  });
  console.log(
    `done: ${res.steps} steps, final loss ${res.finalLoss.toFixed(4)}` +
      (res.valAccuracy !== undefined
        ? `, validation accuracy ${(100 * res.valAccuracy).toFixed(1)}%`
        : "") +
      `, ${Math.round(res.tokensPerSec)} tok/s; checkpoint in ${res.checkpoint}`,
  );
  return 0;
}

if (import.meta.main) await cliMain(() => main(Deno.args));

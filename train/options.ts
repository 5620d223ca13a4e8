/**
 * One way to resolve a run's settings, shared by the library's train() and `deno task train`:
 * what the user gave, then the dataset's K and c, then the preset's learning rate, then the
 * schema's defaults. A value that contradicts the dataset is an error that names it.
 *
 * @module
 */

import {
  parseTrainConfig,
  type PresetName,
  PRESETS,
  type TrainConfig,
  TrainConfigSchema,
} from "../model/config.ts";
import { finalStageStart } from "./schedule.ts";
import { nearestName } from "../base/suggest.ts";

/** What {@linkcode resolveTrainConfig} needs to know of the dataset (its manifest's options). */
export interface DatasetShape {
  /** The dataset directory, for messages. */
  dir: string;
  /** Latent blocks the dataset's step targets were packed for. */
  k: number;
  /** Latent slots per block of the dataset's step targets. */
  c: number;
}

/** A setting that contradicts the dataset it trains on. */
export class TrainConfigError extends Error {
  /** The option at fault, as the command line spells it (`--k`). */
  readonly flag: string;
  /** Create an error about `flag`. */
  constructor(flag: string, message: string) {
    super(message);
    this.name = "TrainConfigError";
    this.flag = flag;
  }
}

/**
 * The full training configuration of a run. `given` overrides everything; K and c default to
 * the dataset's (an explicit c other than the dataset's, or a K above it, is a
 * {@linkcode TrainConfigError}: the step targets were packed for the dataset's shape); the
 * learning rate defaults to the preset's; every other field to the schema's default.
 *
 * No recipe applies here: {@linkcode train} resolves `{ ...recipeSettings(recipe, preset),
 * ...given }`, the recipe being `defaultRecipe(mode)` when none is named (for LOTUS "from-cot":
 * an explicit-CoT start, then a third of the preset's learning rate).
 *
 * @example
 * ```ts
 * import { defaultRecipe, recipeSettings, resolveTrainConfig } from "./options.ts";
 * const shape = { dir: "d", k: 3, c: 16 };
 * const cfg = resolveTrainConfig({ mode: "lotus" }, "tiny", shape);
 * console.assert(cfg.k === 3 && cfg.c === 16 && cfg.lr === 3e-3);
 * // What train({ preset: "tiny", train: { mode: "lotus" } }) runs: the from-cot recipe's.
 * const given = { ...recipeSettings(defaultRecipe("lotus"), "tiny"), mode: "lotus" as const };
 * const run = resolveTrainConfig(given, "tiny", shape);
 * console.assert(run.cotStartEpochs === 8 && run.lr === 1e-3);
 * ```
 */
export function resolveTrainConfig(
  given: Partial<TrainConfig>,
  preset: PresetName,
  dataset: DatasetShape,
): TrainConfig {
  checkSettings(given);
  const where = `the dataset ${dataset.dir}`;
  if (given.c !== undefined && given.c !== dataset.c) {
    throw new TrainConfigError(
      "--c",
      `--c ${given.c} contradicts ${where}, built with c = ${dataset.c} slots per block; ` +
        `rebuild it with --c ${given.c}, or leave --c out to use ${dataset.c}`,
    );
  }
  if (given.k !== undefined && given.k > dataset.k) {
    throw new TrainConfigError(
      "--k",
      `--k ${given.k} exceeds ${where}, built with K = ${dataset.k} blocks; rebuild it with ` +
        `--k ${given.k}, or give at most --k ${dataset.k}`,
    );
  }
  const preset_ = PRESETS[preset];
  if (!preset_) {
    throw new TrainConfigError(
      "--preset",
      `unknown preset "${preset}"; choose one of ${Object.keys(PRESETS).join(", ")}`,
    );
  }
  return parseTrainConfig({
    ...given,
    k: given.k ?? dataset.k,
    c: given.c ?? dataset.c,
    lr: given.lr ?? preset_.lr,
  });
}

/**
 * Notes on a run's curriculum worth saying before it starts: a LOTUS run too short to leave
 * stage 0 (explicit CoT, no latents), or one that never reaches its final K.
 */
export function curriculumNotes(
  cfg: TrainConfig,
  stepsPerEpoch: number,
  totalSteps: number,
): string[] {
  const off = cfg.stepsPerStage === 0 && cfg.epochsPerStage === 0;
  if (cfg.mode === "cot" || cfg.mode === "nocot") return [];
  if (cfg.k === 0) {
    return [
      `K = 0: this ${cfg.mode} run has no latent blocks, so every step trains explicit CoT ` +
      `(as --mode cot would); give --k, or a dataset built with K above 0, for latents`,
    ];
  }
  if (off) return [];
  const stageLength = cfg.stepsPerStage > 0
    ? cfg.stepsPerStage
    : cfg.epochsPerStage * stepsPerEpoch;
  const unit = cfg.stepsPerStage > 0
    ? `${cfg.stepsPerStage} steps each`
    : `${cfg.epochsPerStage} epoch(s) of ${stepsPerEpoch} steps`;
  if (totalSteps <= stageLength) {
    return [
      `this run of ${totalSteps} steps never leaves curriculum stage 0 (explicit CoT, no ` +
      `latents): stage 1 starts at step ${stageLength} (${unit}); train longer, or pass ` +
      `--epochs-per-stage 0 to train at K = ${cfg.k} from the start`,
    ];
  }
  const final = finalStageStart(cfg, stepsPerEpoch);
  if (totalSteps <= final) {
    const reached = Math.floor((totalSteps - 1) / stageLength);
    return [
      `this run of ${totalSteps} steps stops at curriculum stage ${reached} of ${cfg.k}: the ` +
      `final stage (K = ${cfg.k}) starts at step ${final}`,
    ];
  }
  return [];
}

/**
 * The settings a resume may change: how long the run goes on (with a cosine schedule the rest
 * of the decay follows the new total), and how often it evaluates and saves. Everything else
 * defines the run and must stay as it was saved.
 */
export const RESUME_MAY_CHANGE: readonly (keyof TrainConfig)[] = [
  "steps",
  "epochs",
  "finalStageSteps",
  "evalEvery",
  "evalExamples",
  "saveEvery",
  "maxNewTokens",
  "onNonFinite",
];

/**
 * Checks each setting a caller gives on its own: a name that is not a {@linkcode TrainConfig}
 * field (a typo the schema would drop) or a value its field refuses is a
 * {@linkcode TrainConfigError} naming the setting's flag, rather than a silent default or a raw
 * schema error. Unset (undefined) settings pass.
 *
 * @example
 * ```ts
 * import { checkSettings } from "./options.ts";
 * checkSettings({ steps: 20, batch: 8 });
 * try {
 *   checkSettings({ stepz: 20 } as never);
 * } catch (e) {
 *   console.assert((e as Error).message.includes('did you mean "steps"'));
 * }
 * ```
 */
export function checkSettings(given: Partial<TrainConfig>): void {
  const fields = Object.keys(TrainConfigSchema.shape) as (keyof TrainConfig)[];
  for (const [key, value] of Object.entries(given)) {
    if (value === undefined) continue;
    if (!(fields as string[]).includes(key)) {
      const near = nearestName(key, fields);
      throw new TrainConfigError(
        flagOf(key as keyof TrainConfig),
        `"${key}" is not a training setting${near ? ` (did you mean "${near}"?)` : ""}; the ` +
          `settings are TrainConfig's fields (model/config.ts)`,
      );
    }
    const r = TrainConfigSchema.shape[key as keyof TrainConfig].safeParse(value);
    if (!r.success) {
      const flag = flagOf(key as keyof TrainConfig);
      throw new TrainConfigError(
        flag,
        `${flag} ${typeof value === "number" ? String(value) : JSON.stringify(value)}: ` +
          r.error.issues[0].message.toLowerCase(),
      );
    }
  }
}

/**
 * The run directory of `--resume DIR`: DIR, or its parent when DIR is the run's `checkpoint/`.
 *
 * @example
 * ```ts
 * import { resumeRunDir } from "./options.ts";
 * console.assert(resumeRunDir("out/runs/a/checkpoint/") === "out/runs/a");
 * ```
 */
export function resumeRunDir(dir: string): string {
  const d = dir.replace(/\/+$/, "");
  return d.endsWith("/checkpoint") ? d.slice(0, -"/checkpoint".length) : d;
}

/** The command-line flag of a training setting. */
export function flagOf(key: keyof TrainConfig): string {
  if (key === "warmupSteps") return "--warmup";
  return optionFlag(key);
}

/**
 * An option's name spelt as a flag of `deno task train` (`valSplit` → `--val-split`), for
 * {@linkcode TrainConfigError}'s `flag`; a training setting's is {@linkcode flagOf}'s.
 */
export function optionFlag(name: string): string {
  return "--" + name.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
}

/**
 * The configuration of a resumed run: the saved one, with the settings of
 * {@linkcode RESUME_MAY_CHANGE} that `given` sets. Any other given setting that differs from
 * the saved value is a {@linkcode TrainConfigError} naming its flag.
 *
 * @example
 * ```ts
 * import { parseTrainConfig } from "../model/config.ts";
 * import { resumeTrainConfig } from "./options.ts";
 * const saved = parseTrainConfig({ k: 3, c: 12, lr: 3e-3, steps: 100 });
 * console.assert(resumeTrainConfig(saved, { steps: 200 }).steps === 200);
 * try {
 *   resumeTrainConfig(saved, { lr: 1e-3 });
 * } catch (e) {
 *   console.assert((e as Error).message.startsWith("--lr"));
 * }
 * ```
 */
export function resumeTrainConfig(
  saved: TrainConfig,
  given: Partial<TrainConfig>,
): TrainConfig {
  checkSettings(given);
  return parseTrainConfig({ ...saved, ...resumeChanges(saved, given) });
}

/**
 * What a resume changes of a run that trains with `saved`: the settings of
 * {@linkcode RESUME_MAY_CHANGE} that `given` sets (epochs without steps clears steps: the one
 * given decides the length). Any other given setting that differs from the saved value (a
 * setting `saved` lacks is the run's default) is a {@linkcode TrainConfigError} naming its flag.
 */
export function resumeChanges(
  saved: Partial<TrainConfig>,
  given: Partial<TrainConfig>,
): Partial<TrainConfig> {
  const out: Partial<TrainConfig> = {};
  for (const [k, v] of Object.entries(given) as [keyof TrainConfig, unknown][]) {
    if (v === undefined) continue;
    if (RESUME_MAY_CHANGE.includes(k)) {
      (out as Record<string, unknown>)[k] = v;
      if (k === "epochs" && given.steps === undefined) out.steps = null;
      // With the final stage's steps set, they alone decide the length (train/schedule.ts).
      const finalSteps = given.finalStageSteps !== undefined
        ? given.finalStageSteps
        : saved.finalStageSteps;
      if ((k === "steps" || k === "epochs") && finalSteps != null) {
        throw new TrainConfigError(
          flagOf(k),
          `${flagOf(k)} ${v} would not change the run being resumed, whose length is its ` +
            `final stage's steps (--final-stage-steps ${finalSteps}): give a larger ` +
            `--final-stage-steps to train it further`,
        );
      }
    } else if (v !== saved[k]) {
      const flag = flagOf(k);
      throw new TrainConfigError(
        flag,
        `${flag} ${v} contradicts the run being resumed, which trains with ` +
          `${saved[k] === undefined ? "its default" : `${flag} ${saved[k]}`}; a resume ` +
          `continues the same run: leave ${flag} out, or start a new run from its weights ` +
          `with --init <run>/checkpoint/model.safetensors`,
      );
    }
  }
  return out;
}

/** The name of a recipe: a set of settings given in one flag (`--recipe`). */
export type RecipeName = "none" | "paper" | "from-cot";

/** Recipe names, for option parsing. */
export const RECIPE_NAMES: readonly RecipeName[] = ["none", "paper", "from-cot"];

/**
 * The learning rate of LOTUS started from trained weights, as a fraction of the preset's: at
 * `tiny`, LOTUS from the CoT model reached 52.4% test accuracy at a third of the preset's rate,
 * 47.7% at the preset's, 35.8% at a tenth and 21.7% at a thirtieth (three seeds each,
 * docs/results.md).
 */
export const LOTUS_FROM_COT_LR_RATIO = 1 / 3;

/** Epochs of explicit CoT that the from-cot recipe trains before LOTUS. */
export const DEFAULT_COT_START_EPOCHS = 8;

/**
 * The settings of a recipe for a preset. Values the caller gives override the recipe's.
 *
 * - "none": nothing; the schema's defaults and the preset's learning rate.
 * - "from-cot" (the default of LOTUS runs): explicit CoT first ({@linkcode
 *   DEFAULT_COT_START_EPOCHS} epochs at the preset's learning rate, best checkpoint kept), then
 *   LOTUS from it at {@linkcode LOTUS_FROM_COT_LR_RATIO} of that rate, one epoch per curriculum
 *   stage, the best checkpoint of the final stage kept. The best recipe of the training study
 *   (docs/results.md).
 * - "paper": the reference implementation's LOTUS protocol for GPT-2: one epoch per stage up
 *   to K = R (30 epochs in all, so most of training at the final K), the learning rate 1e-4,
 *   constant, at batch 128, weight decay 0.01 and clip 1, λ 0.05 after the loop, dropout 0.1,
 *   the aux decoder (if any) reading block r-1 at pass r, and the best checkpoint of the final
 *   stage kept. The reference starts it from its explicit-CoT model: give `init` (a CoT run's
 *   directory) or `cotStartEpochs`.
 *
 * @example
 * ```ts
 * import { recipeSettings } from "./options.ts";
 * console.assert(recipeSettings("paper", "gpt2").lr === 1e-4);
 * console.assert(recipeSettings("from-cot", "tiny").cotStartEpochs === 8);
 * ```
 */
export function recipeSettings(name: RecipeName, preset: PresetName): Partial<TrainConfig> {
  switch (name) {
    case "none":
      return {};
    case "from-cot":
      return {
        cotStartEpochs: DEFAULT_COT_START_EPOCHS,
        lr: (PRESETS[preset]?.lr ?? 1e-3) * LOTUS_FROM_COT_LR_RATIO,
        epochsPerStage: 1,
        stepsPerStage: 0,
        keepBest: true,
      };
    case "paper":
      return {
        epochsPerStage: 1,
        stepsPerStage: 0,
        epochs: 30,
        lr: 1e-4,
        schedule: "constant",
        warmupSteps: 0,
        weightDecay: 0.01,
        clip: 1,
        batch: 128,
        lambda: 0.05,
        stepLoss: "after",
        injection: "add",
        dropout: 0.1,
        auxReads: "in-loop",
        keepBest: true,
      };
    default:
      // Only a caller without the types reaches this.
      throw new TrainConfigError(
        "--recipe",
        `--recipe ${JSON.stringify(name)}: not a recipe; name one of none, paper, from-cot`,
      );
  }
}

/** Settings that only a LOTUS run (lotus, lotus-aux) reads. */
const LOTUS_ONLY: readonly (keyof TrainConfig)[] = [
  "k",
  "r",
  "lambda",
  "stepLoss",
  "injection",
  "lrLatent",
  "cotStartEpochs",
  "epochsPerStage",
  "stepsPerStage",
  "finalStageSteps",
];

/** Settings that only the LOTUS-aux decoder reads. */
const AUX_ONLY: readonly (keyof TrainConfig)[] = ["auxWeight", "auxReads"];

/**
 * Notes on settings the user gave that the run will not use, or that switch a loss off: a
 * LOTUS setting in a baseline mode, an aux-decoder setting without the decoder, `--steps` or
 * `--epochs` beside `--final-stage-steps` and `--epochs-per-stage` beside `--steps-per-stage`
 * (which win), and R = 0 (no loop) with a loss read inside the loop. `given` is what the user set (not a recipe's
 * settings); `mode` and `r` are the run's.
 *
 * @example
 * ```ts
 * import { unusedSettingNotes } from "./options.ts";
 * console.assert(unusedSettingNotes({ lambda: 0.5 }, "cot", null)[0].includes("--lambda"));
 * ```
 */
export function unusedSettingNotes(
  given: Partial<TrainConfig>,
  mode: TrainConfig["mode"],
  r: number | null,
): string[] {
  const set = (keys: readonly (keyof TrainConfig)[]) =>
    keys.filter((k) => given[k] !== undefined).map(flagOf);
  const notes: string[] = [];
  const lotus = mode === "lotus" || mode === "lotus-aux";
  const unused = [
    ...(lotus ? [] : set(LOTUS_ONLY)),
    ...(mode === "lotus-aux" ? [] : set(AUX_ONLY)),
  ];
  if (unused.length > 0) {
    notes.push(`--mode ${mode} does not use ${unused.join(", ")}: the run ignores them`);
  }
  if (lotus) {
    // A flag that decides the same thing as another one given with it, which the run ignores.
    const ignored = (winner: keyof TrainConfig, losers: (keyof TrainConfig)[], what: string) => {
      const lost = set(losers);
      if (given[winner] && lost.length > 0) {
        notes.push(`${flagOf(winner)} sets ${what}: the run ignores ${lost.join(", ")}`);
      }
    };
    ignored("finalStageSteps", ["steps", "epochs"], "the run's length");
    ignored("stepsPerStage", ["epochsPerStage"], "the curriculum's stages");
  }
  if (lotus && r === 0 && given.stepLoss === "in-loop") {
    notes.push(
      "--r 0 with --step-loss in-loop: no loop pass reads the step targets, so the " +
        "step loss is 0 and --lambda does nothing",
    );
  }
  if (mode === "lotus-aux" && r === 0 && given.auxReads === "in-loop") {
    notes.push(
      "--r 0 with --aux-reads in-loop: no loop pass feeds the aux decoder, so its " +
        "loss is 0 and it is not trained",
    );
  }
  return notes;
}

/**
 * The recipe a run gets when it names none: "from-cot" for LOTUS (lotus, lotus-aux), "none" for
 * the baselines.
 */
export function defaultRecipe(mode: TrainConfig["mode"]): RecipeName {
  return mode === "lotus" || mode === "lotus-aux" ? "from-cot" : "none";
}

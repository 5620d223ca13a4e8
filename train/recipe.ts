/**
 * A training command as a whole ({@linkcode train}): its options checked before anything is
 * written, the run directory claimed (fresh, resumed or replaced), and the recipe's phases
 * run: an explicit-CoT start, then LOTUS from its best, recorded in plan.json so that a resume
 * goes on in the phase it stopped in. Each phase is one run of trainer.ts's loop.
 *
 * @module
 */

import { HfLlamaError, llamaInitConfig } from "../model/hf_llama.ts";
import { PRECISIONS, PRECISIONS_TEXT } from "../engine/ffi.ts";
import { BACKENDS } from "../engine/types.ts";
import { z } from "zod";
import {
  ARCHS,
  PRESET_NAMES,
  type PresetName,
  type TrainConfig,
  TrainConfigSchema,
} from "../model/config.ts";
import type { Example } from "./batch.ts";
import {
  checkSettings,
  curriculumNotes,
  defaultRecipe,
  flagOf,
  optionFlag,
  recipeSettings,
  resolveTrainConfig,
  RESUME_MAY_CHANGE,
  resumeChanges,
  resumeRunDir,
  TrainConfigError,
  unusedSettingNotes,
} from "./options.ts";
import { totalSteps } from "./schedule.ts";
import { DatasetError, loadSplit } from "./dataset.ts";
import { type Manifest, ManifestError, readManifest } from "../pipeline/manifest.ts";
import { checkpointDirOf } from "../model/checkpoint.ts";
import { writeFileAtomic } from "../base/atomic.ts";
import { fieldIssue } from "../base/json.ts";
import {
  notAnOption,
  type OptionKind,
  type OptionNames,
  refuseMistyped,
  unknownOption,
} from "../base/options.ts";
import { absolutePath, splitPath } from "../base/staging.ts";
import { exists, isDirectory, rethrowIfDenied } from "../base/exists.ts";
import { type StopWatch, unlessGone, watchStopSignals } from "../base/signals.ts";
import { noSuchSplit, VERIFY_MODES } from "../pipeline/shard.ts";
import { type World, worldFromEnv, worldNote } from "./data_parallel.ts";
import {
  claimRunDir,
  completedRun,
  holdsSavedRun,
  lockRunDir,
  makeRunDir,
  notARun,
  refuseEvalOutput,
  removeMadeDirs,
  removeRunEntries,
  RUN_ENTRIES,
  RUN_LOCK,
  type SetAside,
  settleReplaced,
} from "./run_dir.ts";
import { engineFor, trainRun } from "./trainer.ts";
import {
  refuseAuxWithoutWeight,
  refuseBatchOver,
  refuseMovedData,
  refuseOtherPreset,
  relativeNotFound,
} from "./run_setup.ts";
import type { RunOptions, TrainOptions, TrainResult } from "./types.ts";
import {
  checkInitWeights,
  freshModelConfig,
  initIsDirectory,
  type InitMeta,
  initMetaOf,
  initPreset,
  llamaPresetOf,
} from "./init.ts";
import { fitting } from "./batch.ts";

/**
 * Train a model on a dataset directory. Writes `out/log.jsonl`, `out/log.csv`, `out/summary.json`
 * and `out/checkpoint/` (saved every `saveEvery` steps and at the end). A stop signal (SIGINT,
 * SIGTERM, SIGHUP) finishes the current step, saves a checkpoint and returns; `resume` continues
 * such a run exactly. A fresh run stopped before or in its first step saves nothing and leaves
 * nothing of itself in `out` ({@linkcode TrainResult.nothingSaved}): the same call starts it
 * again.
 *
 * A LOTUS run with `cotStartEpochs` (the "from-cot" recipe, the default for LOTUS) first trains
 * explicit CoT into `out/cot-start` (a run of its own, at the preset's learning rate, its best
 * checkpoint kept), then LOTUS from that checkpoint; `out/plan.json` records the run so that
 * `resume` continues it in either phase. An `init` that is a model of this project (a run,
 * checkpoint or export, or its model.safetensors) skips the CoT start; other weights (a Hugging
 * Face GPT-2 model.safetensors or Llama directory) are where the CoT start begins. LOTUS's
 * settings are checked against the dataset's manifest before the CoT start trains.
 *
 * @throws {TrainConfigError} for an option that {@linkcode TrainOptions} lacks (a training
 * setting given beside `train` rather than in it, or a misspelt name), or when a setting
 * contradicts the dataset (resolveTrainConfig) or
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
 * import { train } from "./recipe.ts";
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
  checkTrainOptions(options);
  const opts = withRunDir(options);
  const world = worldFromEnv();
  if (world === null) return await trainPhases(opts, null);
  if (!opts.quiet && world.rank === 0) unlessGone(() => console.error(worldNote(world)));
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

/** Every option of {@linkcode TrainOptions}, for the check of what plain JavaScript passes. */
const TRAIN_OPTIONS: OptionNames<TrainOptions> = {
  data: true,
  out: true,
  preset: true,
  arch: true,
  train: true,
  backend: true,
  precision: true,
  recompute: true,
  graphs: true,
  threads: true,
  microBatch: true,
  init: true,
  recipe: true,
  resume: true,
  overwrite: true,
  trainSplit: true,
  valSplit: true,
  stopAfter: true,
  verifyData: true,
  quiet: true,
  signal: true,
  onLog: true,
  commTimeout: true,
  commOverlap: true,
};

/** The options of {@linkcode TrainOptions} that are strings, booleans or functions. */
const TRAIN_OPTION_KINDS: Record<string, OptionKind> = {
  data: "string",
  out: "string",
  init: "string",
  resume: "string",
  trainSplit: "string",
  valSplit: "string",
  recompute: "boolean",
  graphs: "boolean",
  overwrite: "boolean",
  quiet: "boolean",
  onLog: "function",
  signal: "AbortSignal",
  train: "object",
};

/**
 * Refuses an option that {@linkcode TrainOptions} does not have, which a caller that is not
 * type-checked can pass and which would otherwise be ignored: a training setting given beside
 * `train` rather than in it (`steps`), or a misspelt option; and a string, boolean or function
 * option given a value of another kind (`recompute: "off"`, which would switch it on).
 *
 * @throws {TrainConfigError} naming the option, and where it belongs or the nearest name.
 */
function checkTrainOptions(options: TrainOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new TrainConfigError("--data", "train() needs an options object ({ data, out, ... })");
  }
  const settings = Object.keys(TrainConfigSchema.shape) as (keyof TrainConfig)[];
  const u = unknownOption(options, TRAIN_OPTIONS, settings);
  if (u === undefined) {
    refuseMistyped(
      "train()",
      options,
      TRAIN_OPTION_KINDS,
      (message, name) => new TrainConfigError(optionFlag(name), message),
    );
    return;
  }
  if ((settings as string[]).includes(u.key)) {
    throw new TrainConfigError(
      flagOf(u.key as keyof TrainConfig),
      `train(): "${u.key}" is a training setting: give it in train, as train: { ${u.key}: ... }`,
    );
  }
  throw new TrainConfigError(
    optionFlag(u.key),
    `train(): ${notAnOption(u)}; the options are TrainOptions' fields (train/types.ts), the ` +
      `training settings go in train`,
  );
}

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
 * Refuses, before a fresh run's CoT start trains or anything is written, the settings of the
 * two-phase run `opts` (its recipe's settings merged into `train`, its preset resolved) that the
 * LOTUS phase after the CoT start would refuse as it sets up: a K or c that contradicts the
 * dataset ({@linkcode resolveTrainConfig}), lotus-aux without an aux weight, a `--batch` larger
 * than the training split's usable examples ({@linkcode refuseFewUsable}). The same errors, from
 * the same checks, on the dataset's manifest (and the training split where the manifest cannot
 * tell). `llamaJson`: the Hugging Face Llama `config.json` of `opts.init`, where the CoT start
 * begins from one. A dataset whose manifest cannot be read (a file, a directory that is no
 * dataset) is refused here too, with {@linkcode ManifestError}, before the CoT start's first line
 * says it trains. (A resume takes the settings of its plan, checked so when the run began; a
 * dataset changed since is refused by its fingerprint.) Returns the LOTUS phase's curriculum
 * notes ({@linkcode curriculumNotes}: a run too short to reach its final stage), for the user to
 * hear before the CoT start trains; none where the usable examples are not known here.
 */
async function refuseLotusSettings(
  opts: RunOptions,
  llamaJson: unknown | null,
): Promise<string[]> {
  if (opts.data === undefined) return [];
  // A --data that is no dataset is refused here, before the CoT start's line announces it.
  const manifest: Manifest = await readManifest(opts.data);
  const preset = opts.preset ?? "tiny";
  const cfg = resolveTrainConfig(opts.train ?? {}, preset, {
    dir: opts.data,
    k: manifest.options.k,
    c: manifest.options.c,
  });
  refuseAuxWithoutWeight(cfg);
  const usable = await refuseFewUsable(opts.data, manifest, opts.trainSplit ?? "train", cfg, {
    preset,
    init: opts.init,
    llamaJson,
  });
  if (usable === null) return [];
  // The LOTUS phase's curriculum notes, said before the CoT start trains rather than after.
  const stepsPerEpoch = Math.floor(usable / cfg.batch);
  return curriculumNotes(cfg, stepsPerEpoch, totalSteps(cfg, stepsPerEpoch));
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
 * that cannot be used are left to the CoT start, which reports them (null is returned); a
 * missing split is refused with {@linkcode noSuchSplit}, as loading it would refuse it. Returns
 * the examples that fit the LOTUS layout: the LOTUS phase's training examples.
 */
async function refuseFewUsable(
  dir: string,
  manifest: Manifest,
  split: string,
  cfg: TrainConfig,
  model: { preset: PresetName; init: string | undefined; llamaJson: unknown | null },
): Promise<number | null> {
  const info = manifest.splits[split];
  // Refused here, as the CoT start would refuse it, before its first line says it trains.
  if (info === undefined) throw noSuchSplit(dir, manifest, split);
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
    if (e instanceof HfLlamaError) return null;
    throw e;
  }
  // A LOTUS row at any stage is at most the explicit-CoT row plus K·c latents, BOT and EOT.
  let usable = info.shards.reduce((n, s) => n + s.records, 0);
  let lotus = usable;
  if (info.tokens.maxCot + 2 + cfg.k * cfg.c > maxPos) {
    let examples: Example[];
    try {
      examples = (await loadSplit(dir, split)).examples;
    } catch (e) {
      if (e instanceof DatasetError || e instanceof ManifestError) return null;
      throw e;
    }
    lotus = fitting(examples, cfg, maxPos).kept.length;
    usable = Math.min(fitting(examples, { ...cfg, mode: "cot" }, maxPos).kept.length, lotus);
  }
  refuseBatchOver(usable, cfg.batch);
  return lotus;
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
    if (!opts.quiet && root) unlessGone(() => console.error(s));
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
  if (cotStart) {
    for (const n of await refuseLotusSettings(run, hfLlama)) note(`note: LOTUS phase: ${n}`);
  }
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
 * SIGINT, SIGTERM or SIGHUP stops the run, resumable, from the end of the CoT start's set-up on:
 * between the phases too, and while LOTUS sets up, when LOTUS stops before its first step (after
 * one agreed step in a data-parallel run), saves and prints the resume hint, as a stop during a
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
    if (!opts.quiet && root) unlessGone(() => console.error(s));
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
  // With --final-stage-steps, --steps is ignored, and the note on the settings says so.
  if (!resuming && given.steps != null && !given.finalStageSteps) {
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

/** Whether `path` is `dir` or lies under it (by their absolute paths). */
function within(path: string, dir: string): boolean {
  const d = absolutePath(dir), p = absolutePath(path);
  return p === d || p.startsWith(`${d}/`);
}

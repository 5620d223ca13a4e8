/**
 * A run settled before its engine opens ({@linkcode setUpRun}): the checkpoint it resumes, its
 * dataset, what it starts from, its settings, model shape and length, and the refusals that
 * need no engine, which the recipe also makes before a CoT start trains.
 *
 * @module
 */

import { llamaInitConfig } from "../model/hf_llama.ts";
import {
  archOf,
  type ModelConfig,
  presetForArch,
  type PresetName,
  type TrainConfig,
} from "../model/config.ts";
import type { Example } from "./batch.ts";
import { paramLayout } from "../model/params.ts";
import { finalStageStart, totalSteps } from "./schedule.ts";
import { readTrainLog } from "./run_log.ts";
import {
  curriculumNotes,
  recipeSettings,
  resolveTrainConfig,
  resumeRunDir,
  resumeTrainConfig,
  TrainConfigError,
} from "./options.ts";
import { datasetFingerprint, loadSplit, type SplitData } from "./dataset.ts";
import {
  type CheckpointData,
  checkpointDirOf,
  loadCheckpoint,
  type LotusMeta,
  readSavedTrainState,
  type TrainState,
} from "../model/checkpoint.ts";
import type { Tokenizer } from "../pipeline/tokenizer.ts";
import { writeFileAtomic } from "../base/atomic.ts";
import { absolutePath } from "../base/staging.ts";
import { nearestName } from "../base/suggest.ts";
import { exists, isDirectory, rethrowIfDenied } from "../base/exists.ts";
import { readDatasetTokenizer } from "../pipeline/shard.ts";
import type { World } from "./data_parallel.ts";
import { completedRun, readSummary } from "./run_dir.ts";
import {
  checkLlamaTokenizer,
  freshModelConfig,
  type InitMeta,
  initMetaOf,
  initPreset,
  llamaPresetOf,
  refuseOtherModelType,
} from "./init.ts";
import { fitting } from "./batch.ts";
import type { LongStep } from "../pipeline/step_targets.ts";
import type { RunOptions, TrainOptions, TrainResult } from "./types.ts";

/** What {@linkcode setUpRun} settles of a run before its engine opens. */
export interface RunSetup {
  /** The checkpoint the run resumes (with its optimizer state), or null for a fresh run. */
  resumed: CheckpointData | null;
  /** The dataset directory, given or the resumed run's. */
  dataDir: string;
  /** The training split as loaded. */
  trainData: SplitData;
  /** What `--init` says of itself when it is a checkpoint or export of this project. */
  initMeta: InitMeta | null;
  /** The Hugging Face Llama directory `--init` names, or null. */
  llamaDir: string | null;
  /** The config.json of `llamaDir`, parsed. */
  llamaJson: unknown | null;
  /** The preset: recorded (a resume), fixed by `--init`, given, or the default. */
  preset: string;
  /** The training split's fingerprint (its shards, tokenizer and options). */
  fingerprint: string;
  /** The training settings, resolved (a resume: the run's, with what a resume may change). */
  cfg: TrainConfig;
  /** The training split's policy for steps longer than c. */
  longStep: LongStep;
  /** The dataset's tokenizer. */
  tok: Tokenizer;
  /** The model's shape. */
  mcfg: ModelConfig;
  /** The training examples that fit the model's positions at every stage. */
  trainEx: Example[];
  /** The examples evaluations run on (at most `evalExamples`). */
  evalSet: Example[];
  /**
   * True when there are no validation examples (no such split, or none fits the model):
   * evaluations then run on training examples.
   */
  evalOnTraining: boolean;
  /** Steps in an epoch. */
  stepsPerEpoch: number;
  /** Steps in the whole run. */
  total: number;
  /**
   * The train state of a best/ that a resumed run saved after its checkpoint and that beats
   * the checkpoint's best ({@linkcode laterBest}), or null: the trainer keeps it as the best
   * to beat.
   */
  laterBest: TrainState | null;
}

/**
 * What run `opts` is, settled before its engine opens: the checkpoint it resumes, its dataset
 * and examples, what it starts from, its preset, settings and model shape, and its length.
 * The refusals that need no engine come from here, before anything is trained: a setting that
 * contradicts the dataset or the run being resumed, too few usable examples for a batch, a
 * length below the steps a resumed run has taken. A resumed run that is already complete gives
 * its result instead (`complete`), and nothing is written but a summary it had lost.
 * `ctx.initMeta`: {@linkcode initMetaOf} of `opts.init`, when the caller has read it.
 */
export async function setUpRun(
  opts: RunOptions,
  world: World | null,
  ctx: { initMeta?: InitMeta | null },
  log: (s: string) => void,
): Promise<RunSetup | { complete: TrainResult }> {
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
    const names = Object.keys(trainData.manifest.splits);
    const near = nearestName(opts.valSplit, names);
    throw new TrainConfigError(
      "--val-split",
      `--val-split ${opts.valSplit}: ${dataDir} has no such split (it has ` +
        `${names.join(", ")}); ${near === undefined ? "" : `did you mean "${near}"? Or `}` +
        `name one of those`,
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
  // run's loop (trainer.ts) gives it.
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
    return {
      complete: await completeRunResult(opts.out, resumed, paramLayout(mcfg).mainTotal, world),
    };
  }
  // A length below the steps taken would end the run where it never stood, marked complete.
  if (resumed && resumed.state.step > total) {
    refuseShorter(
      cfg,
      stepsPerEpoch,
      total,
      resumed.state.step,
      `the ${resumed.state.step} it has taken`,
      opts.out,
    );
  }
  // A best/ saved after the checkpoint stays the best to beat (trainer.ts): past the run's
  // last step, the run would end naming a best from a step it never reaches.
  const later = resumed && cfg.keepBest ? await laterBest(opts.out, resumed.state) : null;
  if (later && later.step > total) {
    refuseShorter(
      cfg,
      stepsPerEpoch,
      total,
      later.step,
      `step ${later.step}, which ${opts.out}/best holds (saved after the checkpoint's step ` +
        `${resumed!.state.step} by a run stopped before its next save)`,
      opts.out,
    );
  }
  if (!resumed) {
    for (const note of curriculumNotes(cfg, stepsPerEpoch, total)) log(`note: ${note}`);
  }
  return {
    resumed,
    dataDir,
    trainData,
    initMeta,
    llamaDir,
    llamaJson,
    preset,
    fingerprint,
    cfg,
    longStep,
    tok,
    mcfg,
    trainEx,
    evalSet,
    evalOnTraining: valExamples.length === 0,
    stepsPerEpoch,
    total,
    laterBest: later,
  };
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

/**
 * Refuses a resume whose length, `total` steps, falls short of `step`, which the run has
 * reached (`what` says how), naming the flag that sets the length and the least value of it,
 * in its own unit, that reaches `step`.
 */
function refuseShorter(
  cfg: TrainConfig,
  stepsPerEpoch: number,
  total: number,
  step: number,
  what: string,
  out: string,
): never {
  const flag = cfg.finalStageSteps !== null
    ? "--final-stage-steps"
    : cfg.steps !== null
    ? "--steps"
    : "--epochs";
  const [least, unit] = flag === "--final-stage-steps"
    ? [step - finalStageStart(cfg, stepsPerEpoch), "steps after the final stage starts"]
    : flag === "--steps"
    ? [step, "steps"]
    : [Math.ceil(step / stepsPerEpoch), `epochs of ${stepsPerEpoch} steps`];
  throw new TrainConfigError(
    flag,
    `${flag} gives ${out} ${total} steps, fewer than ${what}: give ${flag} ${least} or more ` +
      `(${unit}), or leave ${flag} out to go on to the run's own length`,
  );
}

/**
 * The train state of `out`'s best/ when a run saved it after the checkpoint whose state is
 * `state` (the run was stopped between that save and its next checkpoint) and it beats that
 * checkpoint's best; else null. Its weights are the best the run reached, though the
 * checkpoint does not record them.
 */
async function laterBest(out: string, state: TrainState): Promise<TrainState | null> {
  const later = await readSavedTrainState(`${out}/best`);
  return later && later.step > state.step && later.bestStep === later.step &&
      later.bestAccuracy > state.bestAccuracy
    ? later
    : null;
}

/** Refuses a `batch` larger than the `usable` examples of the training split. */
export function refuseBatchOver(usable: number, batch: number): void {
  if (usable >= batch) return;
  throw new TrainConfigError(
    "--batch",
    `the training split has ${usable} usable examples, fewer than --batch ${batch}: ` +
      (usable > 0 ? `give a --batch of at most ${usable}, or ` : "give ") + "a larger split",
  );
}

/** A run's kept best, as its result and summary give it: only when one was kept. */
export function keptBest(
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

/**
 * Refuses a `--preset` or `--arch` (resolved together: tiny with --arch llama is llama-tiny)
 * that names another preset than `recorded`, the one of the run being resumed.
 */
export function refuseOtherPreset(
  opts: Pick<TrainOptions, "preset" | "arch">,
  recorded: string,
): void {
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
 * Whether a run's recorded dataset path is relative (as `--data` was given) and holds no
 * dataset from this working directory: it is relative to the directory the run was started in.
 */
export async function relativeNotFound(stored: string): Promise<boolean> {
  return !stored.startsWith("/") && !(await exists(`${stored}/manifest.json`));
}

/**
 * Refuses a resume without `--data` of a run whose dataset is {@linkcode relativeNotFound}:
 * advice to build a dataset there would build a new one in the wrong place; the run's own
 * dataset is given with `--data`.
 */
export function refuseMovedData(stored: string, run: string): never {
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
export function refuseAuxWithoutWeight(cfg: TrainConfig): void {
  if (cfg.mode === "lotus-aux" && cfg.auxWeight <= 0) {
    throw new TrainConfigError("--aux-weight", "--mode lotus-aux needs --aux-weight > 0");
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

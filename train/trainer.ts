/**
 * One run's training loop (nanoGPT's shape): data, forward, backward, clip, step, log,
 * evaluate, checkpoint. The run is settled first by run_setup.ts (resume, data, settings,
 * model shape, length); the LOTUS step lives in step.ts, the curriculum, learning rate and data
 * order in schedule.ts, the log format in run_log.ts, the validation evaluation in
 * evaluation.ts. This module runs them, and owns faults, stop signals and checkpoints.
 * recipe.ts runs a whole command: its checks, the run directory and the recipe's phases.
 *
 * Determinism: the data order of epoch e is a shuffle drawn from `new Rng(seed, e)`
 * (schedule.ts's epochOrder), the CPU engine is deterministic for a fixed thread count, and
 * the state saved in train_state.json (step, epoch, position in the epoch) is all a resume
 * needs, so an interrupted and resumed run ends with the same weights, bit for bit, as an
 * uninterrupted one.
 *
 * @module
 */

import { loadLlamaWeights } from "../model/hf_llama.ts";
import { selectEngine } from "../engine/backend.ts";
import type { TrainConfig } from "../model/config.ts";
import { lotusBatch, plainBatch } from "./batch.ts";
import { initParams, initSpecialRows, paramLayout } from "../model/params.ts";
import { epochOrder, isFinalStage, lrAt, stageOf, stageShape } from "./schedule.ts";
import { type LogRecord, readTrainLog, RunLog } from "./run_log.ts";
import { TrainConfigError } from "./options.ts";
import { adamwOf, Model } from "../model/model.ts";
import {
  type LotusOptions,
  LotusRunner,
  MAX_STEP_GRAPHS,
  PlainRunner,
  type StepLosses,
} from "./step.ts";
import {
  checkpointDirOf,
  CheckpointError,
  freshTrainState,
  loadHfInit,
  type LotusMeta,
  saveCheckpoint,
  type TrainState,
} from "../model/checkpoint.ts";
import type { Tokenizer } from "../pipeline/tokenizer.ts";
import { writeFileAtomic } from "../base/atomic.ts";
import { rethrowIfDenied } from "../base/exists.ts";
import { mixSeed } from "../base/rng.ts";
// A run listens for the stop signals from the end of its set-up to its end (the current step
// ends, a checkpoint is saved); the CoT start of a two-phase run goes on listening until LOTUS
// ends, so that a signal between the phases, or while LOTUS sets up, stops LOTUS as well.
import { signalTurns, type StopWatch, unlessGone, watchStopSignals } from "../base/signals.ts";
import { DataParallel, type World } from "./data_parallel.ts";
import { type Engine, openEngine } from "../engine/ffi.ts";
import { probeCuda } from "../engine/cuda_probe.ts";
import { checkInitTokenizer, initFile, type InitMeta } from "./init.ts";
import { type EvalSums, evaluating } from "./evaluation.ts";
import { capacityOf, positionsOf } from "./batch.ts";
import type { RunOptions, TrainOptions, TrainResult } from "./types.ts";
import { keptBest, setUpRun } from "./run_setup.ts";

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
export function engineFor(
  opts: RunOptions,
  world: World | null,
  log: (s: string) => void,
): Engine {
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
  /** init.ts's `initMetaOf` of `opts.init`, when the caller has read it: it is not read again. */
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
 * One training run into `opts.out`: the whole of `train` (recipe.ts) but the CoT start. `world`:
 * this rank in a data-parallel run.
 */
export async function trainRun(
  opts: RunOptions,
  world: World | null = null,
  ctx: RunContext = {},
): Promise<TrainResult> {
  const resume = resumeArgs(ctx.resumeAs ?? opts.out, opts);
  // In a data-parallel run, rank 0 alone prints and writes. A write to a terminal that SIGHUP
  // closed fails; the run goes on to save without it.
  const root = world === null || world.rank === 0;
  const log = (s: string) => {
    if (!opts.quiet && root) unlessGone(() => console.error(s));
  };
  const toStderr = (s: string) =>
    unlessGone(() => Deno.stderr.writeSync(new TextEncoder().encode(s)));
  if (root) await Deno.mkdir(opts.out, { recursive: true });

  const setup = await setUpRun(opts, world, ctx, log);
  if ("complete" in setup) return setup.complete;
  const { resumed, dataDir, trainData, initMeta, llamaDir, llamaJson, preset, fingerprint } = setup;
  const { cfg, longStep, tok, mcfg, trainEx, evalSet, stepsPerEpoch, total, laterBest } = setup;
  const sp = trainData.special;

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
    // A best saved after the checkpoint this run resumes from (the run was killed between that
    // save and its next checkpoint) holds weights the state does not record. It stays the best
    // to beat, as it was in the run that saved it: otherwise a replay that does not beat the
    // checkpoint's best (other evaluation settings, say) leaves best/ holding weights that the
    // summary does not name.
    // run_setup.ts has read it (and refused one past the run's last step).
    if (laterBest) {
      state.bestStep = laterBest.bestStep;
      state.bestAccuracy = laterBest.bestAccuracy;
      log(
        `note: ${opts.out}/best holds step ${laterBest.step} ` +
          `(${(100 * laterBest.bestAccuracy).toFixed(1)}%), saved after the checkpoint's step ` +
          `${state.step} by a run stopped before its next save; it stays the best to beat`,
      );
    }
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
      if (tty && progressShown) toStderr("\r\x1b[K");
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
      if (tty) toStderr(`\r\x1b[K${line}`);
      else unlessGone(() => console.error(line));
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
        if (tty) toStderr("\n");
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
    if (tty) toStderr("\n");
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
      ...(setup.evalOnTraining ? { evalOnTraining: true } : {}),
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

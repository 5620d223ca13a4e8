/**
 * `deno task eval`: a checkpoint and an evaluation set in; accuracy, latency, the latent
 * readout, pictures and an HTML report out. A thin layer over eval/*.ts.
 *
 * @module
 */

import { isDirectory } from "../base/exists.ts";
import { z } from "zod";
import { BACKENDS, MAX_THREADS } from "../engine/types.ts";
import { openInference } from "../infer/inference.ts";
import { checkpointDirOf } from "../model/checkpoint.ts";
import {
  DEFAULT_INFERENCE_BACKEND,
  type InferenceBackend,
  shapeRequestNotes,
} from "../infer/session.ts";
import {
  datasetSplit,
  detectEvalFormat,
  EVAL_FORMATS,
  type EvalFormat,
  loadEvalItems,
} from "../eval/items.ts";
import { EvalStopped, runEval } from "../eval/evaluate.ts";
import { prepareEvalOut, writeEvalOutputs } from "../eval/report.ts";
import { evalOutputMark, removeMadeDirs } from "../train/run_dir.ts";
import {
  signalExitCode,
  signalTurns,
  type StopWatch,
  unlessGone,
  watchStopSignals,
} from "../base/signals.ts";
import { type LogRecord, readTrainLog, runDirOf, trainLogPath } from "../train/run_log.ts";
import { curveNotes } from "../eval/curves.ts";
import { VERIFY_MODES } from "../pipeline/shard.ts";
import type { InputError } from "../pipeline/read/input_error.ts";
import {
  type ArgsOf,
  CliError,
  cliMain,
  defineCommand,
  keptBestNote,
  nonEmpty,
  oneOf,
  wholeNumber,
} from "./_common.ts";

const rList = z.string().transform((s, ctx) => {
  const parts = s.split(",").map((p) => p.trim());
  // Each parsed as the other integer flags are (so 0x10 is refused, not read as 16).
  const whole = wholeNumber(0);
  const out = parts.map((p) => {
    const r = whole.safeParse(p);
    return r.success ? r.data : NaN;
  });
  if (!out.length || out.some((n) => !Number.isInteger(n) || n < 0)) {
    ctx.addIssue({ code: "custom", message: `must be a list of integers >= 0, got "${s}"` });
    return z.NEVER;
  }
  if (new Set(out).size !== out.length) {
    ctx.addIssue({ code: "custom", message: `names an R twice: "${s}"` });
    return z.NEVER;
  }
  return out;
});

/** `deno task eval`, declared. */
export const command = defineCommand({
  name: "eval",
  summary: "Answer an evaluation set with a checkpoint (greedy, batched), score exact-match " +
    "accuracy, time the thought phase, read the LOTUS latents out through the LM head, and " +
    "write predictions.csv, summary.json, accuracy_by_steps.csv, readout.csv, SVG pictures " +
    "and report.html into --out (docs/eval.md).",
  flags: {
    checkpoint: {
      value: "DIR",
      help: "a checkpoint (or run) directory from deno task train; a run directory means its " +
        "last checkpoint, and RUN/best its kept best",
      schema: nonEmpty("a directory"),
      required: true,
    },
    data: {
      value: "FILE|DIR",
      help: "evaluation file, or a dataset directory from deno task build-dataset",
      schema: nonEmpty("a file or directory"),
      required: true,
    },
    format: {
      value: "F",
      help: "what --data is",
      schema: oneOf(["auto", ...EVAL_FORMATS]),
      default: "auto",
    },
    split: {
      value: "NAME",
      help: "split of a dataset directory",
      schema: nonEmpty("a split name"),
      defaultText: "test, else valid",
    },
    batch: {
      value: "N",
      help: "questions per batch; 1 gives batch-1 latency",
      schema: wholeNumber(1),
      default: 16,
    },
    r: {
      value: "LIST",
      help: "loop iterations, such as 4 or 0,1,2,4,6",
      schema: rList,
      defaultText: "the checkpoint's R; with --k, that K when the run tied R to K",
    },
    k: {
      value: "N",
      help: "latent blocks",
      schema: wholeNumber(0),
      defaultText: "the checkpoint's K",
    },
    limit: { value: "N", help: "evaluate the first N items", schema: wholeNumber(1) },
    maxNewTokens: { value: "N", help: "generation budget", schema: wholeNumber(1), default: 64 },
    out: {
      value: "DIR",
      help: "output directory",
      schema: nonEmpty("a directory"),
      default: "out/eval",
    },
    backend: {
      value: "B",
      help: "where to run",
      schema: oneOf<InferenceBackend>([...BACKENDS, "onnx"]),
      default: DEFAULT_INFERENCE_BACKEND,
    },
    threads: {
      value: "N",
      help: "CPU threads, 0 = all cores",
      schema: wholeNumber(0, MAX_THREADS),
      default: 0,
    },
    readoutExamples: {
      value: "N",
      help: "examples drawn in readout.svg (0: no readout.svg)",
      schema: wholeNumber(0),
      default: 6,
    },
    onError: {
      value: "E",
      help: "a malformed record",
      schema: oneOf(["throw", "skip"]),
      default: "throw",
    },
    verifyData: {
      value: "HOW",
      help: "check a dataset directory against its manifest: basic (counts, shapes, offsets, " +
        "token ids) or full (also every file's sha256)",
      schema: oneOf(VERIFY_MODES),
      default: "basic",
    },
    quiet: { help: "no progress output" },
  },
  examples: [
    {
      what: "the default run on the default dataset's valid split",
      command: "deno task eval --checkpoint out/runs/default --data out/data/default --split valid",
    },
    {
      what: "an R sweep on the GSM8K test set",
      command: "deno task eval --checkpoint out/runs/gsm8k --data data/gsm8k/test.jsonl " +
        "--r 0,1,2,4,6 --out out/eval/gsm8k",
    },
    {
      what: "batch-1 latency on the first 200 GSM-Hard problems",
      command: "deno task eval --checkpoint out/runs/gsm8k --data " +
        "data/gsm_hard/gsmhardv2.jsonl --batch 1 --limit 200 --out out/eval/gsm-hard",
    },
  ],
});

/** Validated `deno task eval` values. */
export type EvalArgs = ArgsOf<typeof command>;

/** Parse argv into validated values, or "help" (exported for tests). */
export function parseEvalArgs(argv: string[]): EvalArgs | "help" {
  return command.parse(argv);
}

/**
 * The run's log for the report's curves, or null. A log that cannot be read never blocks the
 * evaluation: one line says why, and the report goes without the curves; so does a line for
 * the records the curves leave out (a run that diverged).
 */
async function readCurves(
  checkpoint: string,
  log: (s: string) => void,
): Promise<LogRecord[] | null> {
  try {
    const runDir = await runDirOf(checkpoint);
    if (!runDir) return null;
    const records = await readTrainLog(runDir);
    const note = curveNotes(records, await trainLogPath(runDir));
    if (note) log(note);
    return records;
  } catch (e) {
    log(`${(e as Error).message.split("\n")[0]}; evaluating without the training curves`);
    return null;
  }
}

/**
 * Run an evaluation as the command does; returns the summary path (exported for tests). A
 * stop signal (SIGINT, SIGTERM, SIGHUP) stops it after the current batch: nothing is written, the
 * directories made for `--out` are removed, and an {@linkcode EvalStopped} says so.
 */
export async function evalCommand(a: EvalArgs, log: (s: string) => void): Promise<string> {
  // Listening from the start: a signal before the output is written never ends the process
  // at once (leaving the directories made for --out), and one while it is written waits for
  // the new set to be swapped in whole.
  const stop = watchStopSignals();
  const earlier = (await evalOutputMark(a.out).catch(() => null)) !== null;
  let made: string[] = [];
  try {
    made = await prepareEvalOut(a.out);
    return await evaluateInto(a, log, stop);
  } catch (e) {
    const gone = made.length > 0 && (await removeMadeDirs(made));
    if (e instanceof EvalStopped) {
      e.message += ": nothing was written" +
        (earlier
          ? ` (the earlier evaluation in ${a.out} is kept)`
          : gone
          ? ` (${a.out}, made by this run, is removed)`
          : "") +
        "; run the command again";
    }
    throw e;
  } finally {
    stop.close();
  }
}

/** How many skipped records the log names one by one. */
const SKIPS_SHOWN = 10;

/** Where a skipped record is: `file:line`, or `file: element n` in a JSON array. */
function placeOf(e: InputError): string {
  const at = e.message.indexOf(`: ${e.problem}`);
  return at < 0 ? e.file : e.message.slice(0, at);
}

/** {@linkcode evalCommand} once `--out` is ready. */
async function evaluateInto(
  a: EvalArgs,
  log: (s: string) => void,
  stop: StopWatch,
): Promise<string> {
  const stopSignal = async () => {
    await signalTurns();
    return stop.signal;
  };
  const format = a.format === "auto" ? await detectEvalFormat(a.data) : a.format as EvalFormat;
  if (format !== "dataset" && (await isDirectory(a.data))) {
    throw new CliError(
      `--format ${format} reads --data ${a.data} as a ${format} file, and it is a directory; ` +
        `leave out --format (or give --format dataset) for a dataset directory, or give a file`,
    );
  }
  if (a.split !== undefined && format !== "dataset") {
    throw new CliError(
      a.format === "auto"
        ? `--split ${a.split}: --data ${a.data} is a ${format} file, not a dataset directory ` +
          `with splits; leave --split out, or give the dataset directory`
        : `--split ${a.split}: --format ${format} reads --data ${a.data} as a ${format} file, ` +
          `and --split applies only to a dataset directory (--format dataset, or auto); leave ` +
          `out --split or --format`,
    );
  }
  if (a.verifyData === "full" && format !== "dataset") {
    throw new CliError(
      `--verify-data full: --data ${a.data} is read as a ${format} file, and --verify-data ` +
        `checks a dataset directory against its manifest; leave out --verify-data, or give ` +
        `the dataset directory`,
    );
  }
  const split = format === "dataset" ? await datasetSplit(a.data, a.split) : undefined;
  const skips: InputError[] = [];
  const items = await loadEvalItems(a.data, {
    format,
    split,
    limit: a.limit,
    onError: a.onError,
    onSkip: (e) => skips.push(e),
    verify: a.verifyData,
  });
  const skipped = skips.length;
  if (items.length === 0) {
    throw new CliError(
      skipped === 0
        ? `${a.data}: no items to evaluate: it holds no record (a CSV header or an empty ` +
          `JSON array, say); check the path, or give a file that holds problems`
        : `${a.data}: no items to evaluate: ` +
          `--on-error skip skipped all ${skipped} records (the first, ${placeOf(skips[0])}: ${
            skips[0].problem
          }); check that --data is the file meant and that it is read as the right format ` +
          `(${format}, ${a.format === "auto" ? "detected" : "from --format"}), or fix the records`,
    );
  }
  log(
    `${items.length} items from ${a.data} (${format}${split ? `, split ${split}` : ""})` +
      (skipped ? `, ${skipped} malformed records skipped` : ""),
  );
  // Name the skipped records, as build-dataset lists its own, so that they can be found.
  for (const e of skips.slice(0, SKIPS_SHOWN)) log(`  skipped ${placeOf(e)}: ${e.problem}`);
  if (skipped > SKIPS_SHOWN) log(`  ... and ${skipped - SKIPS_SHOWN} more`);
  const early = await stopSignal();
  if (early) throw new EvalStopped(early, 0, items.length, null);
  const trainLog = await readCurves(a.checkpoint, log);
  const best = await keptBestNote(a.checkpoint, "evaluating");
  if (best) log(best);
  const session = await openInference(a.checkpoint, {
    backend: a.backend,
    threads: a.threads,
    // No batch holds more than the items: a --batch above them needs no room for the rest.
    maxBatch: Math.min(a.batch, items.length),
    maxNewTokens: a.maxNewTokens,
  });
  for (
    const note of [
      ...(session.notes ?? []),
      ...shapeRequestNotes(session.meta.train.mode, session.shape, a),
    ]
  ) {
    log(`note: ${note}`);
  }
  let result;
  try {
    const t0 = performance.now();
    result = await runEval(session, items, {
      batch: a.batch,
      r: a.r,
      k: a.k,
      maxNewTokens: a.maxNewTokens,
      onBatch: (done, total, R) => {
        if (done === total || done % (a.batch * 8) === 0) {
          log(`R=${R}: ${done}/${total} (${((performance.now() - t0) / 1000).toFixed(0)}s)`);
        }
      },
      stopSignal,
    });
  } finally {
    await session.close();
  }
  const files = await writeEvalOutputs(
    a.out,
    {
      checkpoint: a.checkpoint,
      data: a.data,
      format,
      split,
      backend: session.backend,
      mode: session.meta.train.mode,
      preset: session.meta.preset,
      cot: session.meta.data.cot,
      loaded: checkpointDirOf(a.checkpoint),
      limit: a.limit,
      skipped,
      maxNewTokens: a.maxNewTokens,
      batch: a.batch,
    },
    result,
    { trainLog, readoutExamples: a.readoutExamples },
  );
  for (const r of result.runs) {
    log(
      `K=${r.K} R=${r.R}: accuracy ${(100 * r.accuracy).toFixed(1)}% (${r.correct}/${r.n}` +
        (r.tooLong ? `; ${r.tooLong} too long for the context, counted wrong` : "") + "), " +
        `thought ${r.latency.thoughtMsPerExample.toFixed(2)} ms/example at batch ` +
        `${Math.min(a.batch, items.length)}` +
        (r.readout
          ? `, readout top-1 ${(100 * r.readout.top1).toFixed(1)}% top-5 ${
            (100 * r.readout.top5).toFixed(1)
          }%`
          : ""),
    );
  }
  log(`wrote ${files.summary}, ${files.predictions} and ${files.html}`);
  return files.summary;
}

async function main(a: EvalArgs): Promise<number> {
  try {
    // After SIGHUP the terminal may be gone: what is printed then is dropped, and the exit
    // status says how the evaluation ended.
    await evalCommand(a, a.quiet ? () => {} : (s) => unlessGone(() => console.error(s)));
  } catch (e) {
    if (!(e instanceof EvalStopped)) throw e;
    unlessGone(() => console.log(e.message));
    return signalExitCode(e.signal);
  }
  return 0;
}

if (import.meta.main) await cliMain(command, main);

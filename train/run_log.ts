/**
 * The run log, in one module: the record the trainer writes at every step and evaluation,
 * the writer (log.jsonl and log.csv in the run directory), and the reader that evaluation and
 * the experiment tables use. The record's schema is declared once, below; the CSV columns
 * and the reader's checks derive from it.
 *
 * @example
 * ```ts ignore
 * import { readTrainLog } from "./run_log.ts";
 * const log = await readTrainLog("out/runs/default");
 * console.log(log.filter((r) => r.kind === "eval").map((r) => r.valAccuracy));
 * ```
 *
 * @module
 */
import { parse } from "csv-parse/sync";
import { stringify } from "csv-stringify/sync";
import { z } from "zod";
import { writeFileAtomicSync } from "../base/atomic.ts";
import { exists } from "../base/exists.ts";
import { fieldIssue, jsonErrorText } from "../base/json.ts";

// A non-finite value (a diverged loss) is written as null in JSON and reads back as NaN; in
// log.csv it is written as NaN, Infinity or -Infinity and reads back as that number.
const num = z.union([z.number(), z.nan(), z.literal(Infinity), z.literal(-Infinity)]).optional();

/** A record's JSON with null (how JSON writes NaN and infinities) read as NaN. */
function nullsAsNaN(raw: unknown): unknown {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return raw;
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, v === null ? NaN : v]));
}
const LogRecordSchema = z.object({
  kind: z.enum(["train", "eval"]),
  step: z.number(),
  epoch: z.number(),
  stage: z.number(),
  K: z.number(),
  R: z.number(),
  lr: num,
  loss: num,
  ansLoss: num,
  stepLoss: num,
  auxLoss: num,
  gradNorm: num,
  tokensPerSec: num,
  valLoss: num,
  valAccuracy: num,
  valExamples: num,
  seconds: z.number(),
});

/**
 * One line of log.jsonl (one row of log.csv): a training step ("train": the losses, the
 * gradient norm before clipping, the learning rate, throughput) or an evaluation ("eval":
 * validation loss and accuracy), with the step, epoch and curriculum stage (K, R) it ran at
 * and the seconds of training so far.
 */
export interface LogRecord {
  /** A training step or an evaluation. */
  kind: "train" | "eval";
  /** Optimiser steps done. */
  step: number;
  /** The epoch (0-based). */
  epoch: number;
  /** The curriculum stage. */
  stage: number;
  /** Latent blocks at this stage. */
  K: number;
  /** Loop iterations at this stage. */
  R: number;
  /** Learning rate of this step. */
  lr?: number;
  /** Total loss. */
  loss?: number;
  /** Answer loss. */
  ansLoss?: number;
  /** Step loss (unweighted). */
  stepLoss?: number;
  /** LOTUS-aux decoder loss (unweighted). */
  auxLoss?: number;
  /** Global gradient norm before clipping. */
  gradNorm?: number;
  /** Token positions forwarded per second in this step. */
  tokensPerSec?: number;
  /** Validation answer loss. */
  valLoss?: number;
  /** Validation exact-match accuracy in [0, 1]. */
  valAccuracy?: number;
  /** Validation examples scored. */
  valExamples?: number;
  /** Seconds of training so far. */
  seconds: number;
}

// The schema and the interface describe one record: a change to one that the other lacks
// fails to type-check here.
const _sameShape: [z.infer<typeof LogRecordSchema>, LogRecord] = [
  {} as LogRecord,
  {} as z.infer<typeof LogRecordSchema>,
];

/** The columns of log.csv, in order: the record's fields. */
export const LOG_COLUMNS: readonly (keyof LogRecord)[] = Object.keys(
  LogRecordSchema.shape,
) as (keyof LogRecord)[];

/**
 * Appends log records to log.jsonl and log.csv in a run directory. A new run starts both
 * files empty; a resumed one keeps the records up to the step it resumes from and drops
 * those written after it (they are redone). When log.jsonl was cut short or removed, the
 * records come from log.csv if it reaches further; whatever neither file holds is named in
 * {@linkcode RunLog.missing}. Both files are rewritten whole through a temporary file, so a
 * kill during the rewrite leaves the old ones.
 */
export class RunLog {
  #jsonl: string;
  #csv: string;
  /**
   * The steps a resumed run's log has no record of (both files ended before the checkpoint's
   * step), or null when it has them all.
   */
  readonly missing: { from: number; to: number } | null = null;
  /** Open the log of `dir`; `resumeStep` null starts a new log. */
  constructor(dir: string, resumeStep: number | null) {
    this.#jsonl = `${dir}/log.jsonl`;
    this.#csv = `${dir}/log.csv`;
    if (resumeStep === null) {
      Deno.writeTextFileSync(this.#jsonl, "");
      Deno.writeTextFileSync(this.#csv, stringify([LOG_COLUMNS as string[]]));
      return;
    }
    const upTo = (rs: LogRecord[]) => rs.filter((r) => r.step <= resumeStep);
    const lastStep = (rs: LogRecord[]) => rs.findLast((r) => r.kind === "train")?.step ?? 0;
    let keep = upTo(parseLog(this.#jsonl, readIfThere(this.#jsonl)));
    if (lastStep(keep) < resumeStep) {
      // log.jsonl ends early: log.csv, written record for record beside it, may not.
      let fromCsv: LogRecord[] = [];
      try {
        fromCsv = upTo(parseCsvLog(this.#csv, readIfThere(this.#csv)));
      } catch (e) {
        if (!(e instanceof TrainLogError)) throw e;
      }
      if (lastStep(fromCsv) > lastStep(keep)) keep = fromCsv;
    }
    if (lastStep(keep) < resumeStep) this.missing = { from: lastStep(keep) + 1, to: resumeStep };
    writeFileAtomicSync(this.#jsonl, keep.map((r) => JSON.stringify(r) + "\n").join(""));
    writeFileAtomicSync(
      this.#csv,
      stringify([LOG_COLUMNS as string[], ...keep.map((r) => rowOf(r))]),
    );
  }
  /**
   * Append one record to both files, or to neither: when a write fails (a full disk), both
   * files are cut back to their length before it, where that can be done, and the error is
   * thrown.
   */
  write(r: LogRecord): void {
    const sizes = [this.#jsonl, this.#csv].map((f) => {
      try {
        return Deno.statSync(f).size;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return 0; // removed: the append makes it again
        throw e;
      }
    });
    try {
      Deno.writeTextFileSync(this.#jsonl, JSON.stringify(r) + "\n", { append: true });
      Deno.writeTextFileSync(this.#csv, stringify([rowOf(r)]), { append: true });
    } catch (e) {
      [this.#jsonl, this.#csv].forEach((f, i) => {
        try {
          Deno.truncateSync(f, sizes[i]);
        } catch { /* the reader drops a last line cut short */ }
      });
      throw e;
    }
  }
}

/** The text of `path`, or "" when there is no such file. */
function readIfThere(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    return "";
  }
}

/**
 * The records of log.jsonl's text. A last line cut short (the process was killed while
 * writing it) is dropped; any other bad line is a {@linkcode TrainLogError} naming it.
 */
function parseLog(path: string, text: string): LogRecord[] {
  const lines = text.split("\n");
  const out: LogRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "") continue;
    let raw: unknown;
    try {
      raw = JSON.parse(lines[i]);
    } catch (e) {
      const last = lines.slice(i + 1).every((l) => l.trim() === "");
      if (last && !text.endsWith("\n")) break; // cut short by a kill: redone on resume
      throw new TrainLogError(
        `${path}:${i + 1}: invalid JSON (${jsonErrorText(e)}); the line is damaged: ` +
          `mend it from its record in log.csv (the same records, a row each), or delete it; ` +
          `eval's training curves and --resume then do without that one record`,
      );
    }
    const r = LogRecordSchema.safeParse(nullsAsNaN(raw));
    if (!r.success) {
      throw new TrainLogError(
        `${path}:${i + 1}: ${fieldIssue(r.error)}; the line is not a ` +
          "record of deno task train's log (damaged, or written by another program)",
      );
    }
    out.push(r.data);
  }
  return out;
}

function rowOf(r: LogRecord): (string | number)[] {
  return LOG_COLUMNS.map((k) => r[k] ?? "");
}

/** A run's log that cannot be read; names the file and line. */
export class TrainLogError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "TrainLogError";
  }
}

/**
 * The run directory of a checkpoint: the directory itself when it holds log.jsonl/log.csv,
 * else its parent (`run/checkpoint` -> `run`), else null.
 */
export async function runDirOf(checkpoint: string): Promise<string | null> {
  const dir = checkpoint.replace(/\/+$/, "");
  const parent = dir.includes("/") ? dir.slice(0, dir.lastIndexOf("/")) || "/" : ".";
  for (const d of [dir, parent]) {
    if (await exists(`${d}/log.jsonl`) || await exists(`${d}/log.csv`)) return d;
  }
  return null;
}

/** The file {@linkcode readTrainLog} reads in a run directory: log.jsonl, else log.csv. */
export async function trainLogPath(runDir: string): Promise<string> {
  const jsonl = `${runDir}/log.jsonl`;
  return await exists(jsonl) ? jsonl : `${runDir}/log.csv`;
}

/** The records of a run's log: log.jsonl when present, else log.csv. */
export async function readTrainLog(runDir: string): Promise<LogRecord[]> {
  const path = await trainLogPath(runDir);
  if (path.endsWith(".jsonl")) return parseLog(path, await Deno.readTextFile(path));
  const csv = path;
  if (!(await exists(csv))) {
    throw new TrainLogError(`${runDir}: has neither log.jsonl nor log.csv; pass a run directory`);
  }
  return parseCsvLog(csv, await Deno.readTextFile(csv));
}

/** The records of log.csv's text; a bad row is a {@linkcode TrainLogError} naming it. */
function parseCsvLog(csv: string, text: string): LogRecord[] {
  let rows: Record<string, string>[];
  try {
    rows = parse(text, { columns: true }) as Record<string, string>[];
  } catch (e) {
    throw new TrainLogError(`${csv}: not a CSV log (${(e as Error).message})`);
  }
  return rows.map((row, i) => {
    const o: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(row)) {
      if (v === "") continue;
      o[k] = k === "kind" ? v : Number(v);
    }
    const r = LogRecordSchema.safeParse(o);
    if (!r.success) {
      const is = r.error.issues[0];
      throw new TrainLogError(`${csv}:${i + 2}: column "${is.path.join(".")}": ${is.message}`);
    }
    return r.data;
  });
}

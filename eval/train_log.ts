/**
 * Reading a training run's log (log.jsonl, or log.csv when the JSON lines are missing), as
 * the trainer writes it (train/trainer.ts), and turning it into chart series.
 *
 * @module
 */
import { parse } from "csv-parse/sync";
import { z } from "zod";
import type { LogRecord } from "../train/trainer.ts";
import type { Series } from "./svg.ts";
import { exists } from "../pipeline/exists.ts";

const num = z.number().optional();
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

/**
 * The records of a run's log: log.jsonl when present, else log.csv.
 *
 * @example
 * ```ts ignore
 * import { readTrainLog } from "./train_log.ts";
 * const log = await readTrainLog("out/runs/default");
 * console.log(log.filter((r) => r.kind === "eval").map((r) => r.valAccuracy));
 * ```
 */
export async function readTrainLog(runDir: string): Promise<LogRecord[]> {
  const jsonl = `${runDir}/log.jsonl`;
  if (await exists(jsonl)) {
    const out: LogRecord[] = [];
    const lines = (await Deno.readTextFile(jsonl)).split("\n");
    for (let i = 0; i < lines.length; i++) {
      if (lines[i].trim() === "") continue;
      let raw: unknown;
      try {
        raw = JSON.parse(lines[i]);
      } catch (e) {
        throw new TrainLogError(`${jsonl}:${i + 1}: invalid JSON (${(e as Error).message})`);
      }
      const r = LogRecordSchema.safeParse(raw);
      if (!r.success) {
        const is = r.error.issues[0];
        throw new TrainLogError(
          `${jsonl}:${i + 1}: field "${is.path.join(".")}": ${is.message}; ` +
            "the file was not written by deno task train",
        );
      }
      out.push(r.data);
    }
    return out;
  }
  const csv = `${runDir}/log.csv`;
  if (!(await exists(csv))) {
    throw new TrainLogError(`${runDir}: has neither log.jsonl nor log.csv; pass a run directory`);
  }
  const rows = parse(await Deno.readTextFile(csv), { columns: true }) as Record<string, string>[];
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

/** Loss series against step: total, answer and step loss (and aux when present). */
export function lossSeries(log: LogRecord[], prefix = ""): Series[] {
  const train = log.filter((r) => r.kind === "train");
  const pick = (f: (r: LogRecord) => number | undefined, name: string): Series => ({
    name: prefix + name,
    points: train.map((r) => [r.step, f(r) ?? NaN] as [number, number]),
  });
  const out = [pick((r) => r.loss, "loss"), pick((r) => r.ansLoss, "answer loss")];
  if (train.some((r) => (r.stepLoss ?? 0) > 0)) out.push(pick((r) => r.stepLoss, "step loss"));
  if (train.some((r) => (r.auxLoss ?? 0) > 0)) out.push(pick((r) => r.auxLoss, "aux loss"));
  return out;
}

/** Validation accuracy (and loss) against step, from the log's eval records. */
export function accuracySeries(log: LogRecord[], name = "validation accuracy"): Series {
  return {
    name,
    points: log.filter((r) => r.kind === "eval").map((r) => [r.step, r.valAccuracy ?? NaN]),
  };
}

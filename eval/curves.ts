/**
 * Chart series from a run's log (train/run_log.ts): the losses and the validation accuracy
 * against the step.
 *
 * @module
 */
import type { LogRecord } from "../train/run_log.ts";
import type { Series } from "./svg.ts";

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

/**
 * One line saying which records of a run's log the curves leave out: training records whose
 * loss is not finite (a run that diverged) and evaluations whose accuracy is not; null when
 * every record has its values. `source` names the log file.
 *
 * @example
 * ```ts
 * import { curveNotes } from "./curves.ts";
 * const rec = { kind: "train" as const, epoch: 0, stage: 0, K: 0, R: 0, seconds: 1 };
 * const log = [{ ...rec, step: 1, loss: 3 }, { ...rec, step: 2, loss: NaN }];
 * const note = curveNotes(log, "log.jsonl");
 * console.assert(note!.includes("1 of 2 training records"));
 * ```
 */
export function curveNotes(log: LogRecord[], source: string): string | null {
  const train = log.filter((r) => r.kind === "train");
  const evals = log.filter((r) => r.kind === "eval");
  const badTrain = train.filter((r) => !Number.isFinite(r.loss));
  const badEval = evals.filter((r) => !Number.isFinite(r.valAccuracy));
  if (badTrain.length === 0 && badEval.length === 0) return null;
  const from = badTrain.length ? Math.min(...badTrain.map((r) => r.step)) : NaN;
  if (train.length > 0 && badTrain.length === train.length) {
    return `${source}: no training record has a finite loss (the run diverged from step ` +
      `${from}); the report has no loss curve`;
  }
  const parts: string[] = [];
  if (badTrain.length) {
    parts.push(
      `${badTrain.length} of ${train.length} training records have a non-finite loss, from ` +
        `step ${from} on (the run diverged)`,
    );
  }
  if (badEval.length) {
    parts.push(`${badEval.length} of ${evals.length} evaluations a non-finite accuracy`);
  }
  return `${source}: ${parts.join(", and ")}; they are left out of the curves`;
}

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

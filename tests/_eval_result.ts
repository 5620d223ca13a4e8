/**
 * A hand-made evaluation result for the report's tests: two R values, three examples each,
 * with known accuracies, a training log, and the provenance of a LOTUS checkpoint.
 *
 * @module
 */
import type { BlockReadout, EvalResult, ExampleResult } from "../eval/evaluate.ts";
import { summariseReadout } from "../eval/evaluate.ts";
import type { LogRecord } from "../train/run_log.ts";

function block(k: number, gold: string, text: string, hits: boolean[]): BlockReadout {
  return {
    block: k,
    gold,
    text,
    goldTokens: [...gold, "\n"],
    readoutTokens: [...text.padEnd(hits.length + 2, "?")],
    top1: hits,
    top5: hits.map(() => true),
    kind: gold === text ? "gold" : "invalid",
    alternativeTop5: false,
  };
}

function example(i: number, R: number, correct: boolean): ExampleResult {
  return {
    index: i,
    id: `fx:${i + 1}`,
    K: 2,
    R,
    question: `Question ${i} with a comma, and "quotes"?`,
    gold: String(i),
    goldSteps: 2,
    text: `<<${i}+0=${i}>>\n### ${correct ? i : i + 1}`,
    predicted: String(correct ? i : i + 1),
    correct,
    tokens: 9,
    thoughtTokens: 0,
    prefillMs: 1,
    thoughtMs: 2 + R,
    decodeMs: 3,
    readout: [
      block(0, `<<${i}+0=${i}>>`, `<<${i}+0=${i}>>`, [true, true, true]),
      block(1, "<<1*1=1>>", "<<1*2=1>>", [true, false]),
    ],
  };
}

/** Two R values, three examples each, with known accuracies 2/3 and 1/3. */
export function fakeResult(): EvalResult {
  const runs = [0, 2].map((R) => {
    const rows = [0, 1, 2].map((i) => example(i, R, R === 0 ? i < 2 : i < 1));
    const correct = rows.filter((r) => r.correct).length;
    return {
      rows,
      summary: {
        mode: "lotus",
        K: 2,
        R,
        c: 4,
        n: 3,
        correct,
        accuracy: correct / 3,
        tooLong: 0,
        latency: {
          batch: 1,
          prefillMsPerExample: 1,
          thoughtMsPerExample: 2 + R,
          thoughtMsMedian: 2 + R,
          decodeMsPerExample: 3,
          msPerDecodeStep: 0.3,
          msPerAnswerToken: 0.3,
          tokensMean: 9,
          thoughtTokensMean: 0,
        },
        byGoldSteps: [{ steps: "2", n: 3, correct, accuracy: correct / 3 }],
        readout: summariseReadout(rows.map((r) => r.readout!)),
      },
    };
  });
  return { examples: runs.flatMap((r) => r.rows), runs: runs.map((r) => r.summary) };
}

export const LOG: LogRecord[] = [
  ...Array.from({ length: 20 }, (_, s) => ({
    kind: "train" as const,
    step: s + 1,
    epoch: 0,
    stage: 1,
    K: 1,
    R: 1,
    loss: 4 / (s + 1),
    ansLoss: 3 / (s + 1),
    stepLoss: 10 / (s + 1),
    seconds: s,
  })),
  { kind: "eval", step: 10, epoch: 0, stage: 1, K: 1, R: 1, valAccuracy: 0.1, seconds: 10 },
  { kind: "eval", step: 20, epoch: 0, stage: 1, K: 1, R: 1, valAccuracy: 0.4, seconds: 20 },
];

export const PROV = {
  checkpoint: "runs/x/checkpoint",
  data: "fixtures/eval/x.jsonl",
  format: "gsm8k",
  backend: "cpu",
  mode: "lotus",
  preset: "tiny",
  cot: "math",
};

/** {@linkcode fakeResult} as a CoT checkpoint's: no latent blocks, no readout. */
export function cotResult(): EvalResult {
  const res = fakeResult();
  return {
    examples: res.examples.map((e) => ({ ...e, K: 0, R: 0, readout: undefined })),
    runs: res.runs.map((r) => ({ ...r, mode: "cot", K: 0, R: 0, readout: undefined })),
  };
}

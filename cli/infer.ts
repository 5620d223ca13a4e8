/**
 * `deno task infer`: answer questions with a checkpoint on any backend, and show the latent
 * readout per block and the phase timings. A thin layer over {@linkcode openInference}.
 *
 * @module
 */

import { z } from "zod";
import { BACKENDS, MAX_THREADS } from "../engine/types.ts";
import { openInference } from "../infer/inference.ts";
import {
  type AnswerBatch,
  DEFAULT_INFERENCE_BACKEND,
  type InferenceBackend,
  shapeRequestNotes,
} from "../infer/session.ts";
import { readoutTexts } from "../infer/readout.ts";
import {
  type ArgsOf,
  cliMain,
  defineCommand,
  keptBestNote,
  nonEmpty,
  oneOf,
  wholeNumber,
} from "./_common.ts";

/** `deno task infer`, declared. */
export const command = defineCommand({
  name: "infer",
  summary: "Answer questions with a checkpoint and print, for each, the answer, the generated " +
    "text, the latent readout of every block (the argmax token of each slot, decoded) and the " +
    "phase timings (docs/export.md).",
  flags: {
    checkpoint: {
      value: "DIR",
      help: "checkpoint or run directory; with --backend onnx also an export directory",
      schema: nonEmpty("a directory"),
      default: "out/runs/default",
    },
    backend: {
      value: "B",
      help: "where to run; onnx runs onnxruntime-node on an export directory, or exports " +
        "a checkpoint once to DIR/onnx-cache/",
      schema: oneOf<InferenceBackend>([...BACKENDS, "onnx"]),
      default: DEFAULT_INFERENCE_BACKEND,
    },
    k: {
      value: "N",
      help: "latent blocks",
      schema: wholeNumber(0),
      defaultText: "the checkpoint's K",
    },
    r: {
      value: "N",
      help: "loop iterations",
      schema: wholeNumber(0),
      defaultText: "the checkpoint's R; with --k, that K when the run tied R to K",
    },
    maxNewTokens: { value: "N", help: "generation budget", schema: wholeNumber(1), default: 64 },
    threads: {
      value: "N",
      help: "CPU threads, 0 = all cores",
      schema: wholeNumber(0, MAX_THREADS),
      default: 0,
    },
    json: { help: "one JSON object per question instead of text" },
  },
  positionals: {
    name: "questions",
    value: "QUESTION...",
    help: 'the questions, each quoted; after --, one that starts with "-"',
    schema: z.array(z.string().trim().min(1, "a question is empty")).min(
      1,
      'give at least one question, e.g. deno task infer "Ann has 2 pens and buys 3. How many?"',
    ),
  },
  examples: [
    {
      what: "one question to the default run, with its latent readout",
      command: 'deno task infer "Mia buys 3 packs of 4 pencils. She gives away 5. How many are ' +
        'left?"',
    },
    {
      what: "an export on onnxruntime, as JSON",
      command: "deno task infer --checkpoint out/export/default --backend onnx --json " +
        '"Ann has 2 pens and buys 3. How many pens?"',
    },
    {
      what: "the same checkpoint with fewer latent blocks and loop iterations",
      command: 'deno task infer --k 1 --r 1 "Ann has 2 pens and buys 3. How many pens?"',
    },
  ],
});

/** Validated `deno task infer` values. */
export type InferArgs = ArgsOf<typeof command>;

/** Parse argv into validated values, or "help" (exported for tests). */
export function parseInferArgs(argv: string[]): InferArgs | "help" {
  return command.parse(argv);
}

const ms = (x: number) => `${x.toFixed(1)} ms`;

/** The text report of one answered batch; an empty answer is shown as `(none: ...)`. */
export function formatAnswers(
  questions: string[],
  batch: AnswerBatch,
  readouts: string[][],
  backend: string,
): string {
  const t = batch.timings;
  const lines = [
    batch.K > 0
      ? `backend ${backend}; LOTUS K=${batch.K} c=${batch.c} R=${batch.R}`
      : `backend ${backend}; no latents (K = 0: a baseline, or LOTUS at curriculum stage 0)`,
  ];
  questions.forEach((q, i) => {
    const a = batch.answers[i];
    lines.push(
      "",
      `question: ${q}`,
      // An empty answer (nothing after "###") would print as a blank that reads as lost.
      `answer:   ${a.answer === "" ? "(none: no answer in the text)" : a.answer}`,
      `text:     ${JSON.stringify(a.text)}`,
    );
    if (readouts[i].length > 0) {
      lines.push("latent readout:");
      readouts[i].forEach((r, k) => lines.push(`  block ${k + 1}: ${JSON.stringify(r)}`));
    }
  });
  const perToken = t.decodeSteps > 0 ? `, ${ms(t.decodeMs / t.decodeSteps)} per token` : "";
  lines.push(
    "",
    `timings (batch of ${questions.length}): prefill ${ms(t.prefillMs)}, thought ` +
      `${ms(t.thoughtMs)}, decode ${ms(t.decodeMs)} over ${t.decodeSteps} steps${perToken}`,
  );
  return lines.join("\n");
}

async function main(a: InferArgs): Promise<number> {
  const best = await keptBestNote(a.checkpoint, "answering with");
  if (best) console.error(best);
  const s = await openInference(a.checkpoint, {
    backend: a.backend,
    threads: a.threads,
    maxBatch: a.questions.length,
    maxNewTokens: a.maxNewTokens,
  });
  try {
    for (const note of [...(s.notes ?? []), ...shapeRequestNotes(s.meta.train.mode, s.shape, a)]) {
      console.error(`note: ${note}`);
    }
    const batch = await s.answer(a.questions, {
      k: a.k,
      r: a.r,
      maxNewTokens: a.maxNewTokens,
      latentLogits: true,
    });
    const V = s.meta.model.vocabSize;
    const readouts = batch.answers.map((ans) =>
      ans.latentLogits && batch.K > 0
        ? readoutTexts(
          ans.latentLogits,
          batch.K,
          batch.c,
          V,
          (ids) => s.tokenizer.decode(ids),
          s.meta.data.longStep === "spill",
        )
        : []
    );
    if (a.json) {
      batch.answers.forEach((ans, i) =>
        console.log(JSON.stringify({
          question: a.questions[i],
          answer: ans.answer,
          text: ans.text,
          readout: readouts[i],
          backend: s.backend,
          K: batch.K,
          c: batch.c,
          R: batch.R,
          timings: batch.timings,
        }))
      );
    } else console.log(formatAnswers(a.questions, batch, readouts, s.backend));
  } finally {
    await s.close();
  }
  return 0;
}

if (import.meta.main) await cliMain(command, main);

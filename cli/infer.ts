/**
 * `deno task infer`: answer questions with a checkpoint on any backend, and show the latent
 * readout per block and the phase timings. A thin layer over {@linkcode openInference}.
 *
 * @module
 */

import { z } from "zod";
import { type AnswerBatch, DEFAULT_INFERENCE_BACKEND, openInference } from "../infer/inference.ts";
import { readoutTexts } from "../infer/readout.ts";
import { cliMain, parseCommandLine } from "./_common.ts";

const HELP = `deno task infer --checkpoint DIR "question" ["question" ...] [options]

Answer questions with a checkpoint and print, for each, the answer, the generated text, the
latent readout of every block (the argmax token of each slot, decoded) and the phase timings.

  --checkpoint DIR      checkpoint, run directory, or export directory (default out/runs/default)
  --backend B           cpu | cuda | auto | onnx            (default ${DEFAULT_INFERENCE_BACKEND})
                        onnx runs onnxruntime-node; given a checkpoint, it exports it once
                        to DIR/onnx-cache/ (or pass a deno task export directory)
  --k N                 latent blocks (default: the checkpoint's K)
  --r N                 loop iterations (default: the checkpoint's R)
  --max-new-tokens N    generation budget                   (default 64)
  --threads N           CPU threads, 0 = all cores          (default 0)
  --json                one JSON object per question instead of text
  -h, --help            this help
`;

const int = (min: number) => z.coerce.number().int().min(min);

const ArgsSchema = z.object({
  checkpoint: z.string().min(1).default("out/runs/default"),
  backend: z.enum(["cpu", "cuda", "auto", "onnx"]).default(DEFAULT_INFERENCE_BACKEND),
  k: int(0).optional(),
  r: int(0).optional(),
  maxNewTokens: int(1).default(64),
  threads: int(0).default(0),
  json: z.boolean().default(false),
  questions: z.array(z.string().trim().min(1, "a question is empty")).min(
    1,
    'give at least one question, e.g. deno task infer "Ann has 2 pens and buys 3. How many?"',
  ),
});

/** Parse argv into validated options (exported for tests). */
export function parseInferArgs(argv: string[]): z.infer<typeof ArgsSchema> | "help" {
  return parseCommandLine(argv, "infer", {
    strings: ["checkpoint", "backend", "k", "r", "max-new-tokens", "threads"],
    booleans: ["json"],
    positionals: "questions",
  }, ArgsSchema);
}

const ms = (x: number) => `${x.toFixed(1)} ms`;

/** The text report of one answered batch. */
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
      : `backend ${backend}; no latents (baseline)`,
  ];
  questions.forEach((q, i) => {
    const a = batch.answers[i];
    lines.push(
      "",
      `question: ${q}`,
      `answer:   ${a.answer}`,
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

async function main(argv: string[]): Promise<number> {
  const a = parseInferArgs(argv);
  if (a === "help") {
    console.log(HELP);
    return 0;
  }
  const s = await openInference(a.checkpoint, {
    backend: a.backend,
    threads: a.threads,
    maxBatch: a.questions.length,
    maxNewTokens: a.maxNewTokens,
  });
  try {
    const batch = await s.answer(a.questions, {
      k: a.k,
      r: a.r,
      maxNewTokens: a.maxNewTokens,
      latentLogits: true,
    });
    const V = s.meta.model.vocabSize;
    const readouts = batch.answers.map((ans) =>
      ans.latentLogits && batch.K > 0
        ? readoutTexts(ans.latentLogits, batch.K, batch.c, V, (ids) => s.tokenizer.decode(ids))
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

if (import.meta.main) await cliMain(() => main(Deno.args));

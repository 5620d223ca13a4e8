/**
 * `deno task eval`: a checkpoint and an evaluation set in; accuracy, latency, the latent
 * readout, pictures and an HTML report out. A thin layer over eval/*.ts.
 *
 * @module
 */

import { z } from "zod";
import { DEFAULT_INFERENCE_BACKEND, openInference } from "../infer/inference.ts";
import {
  datasetSplit,
  detectEvalFormat,
  EVAL_FORMATS,
  type EvalFormat,
  loadEvalItems,
} from "../eval/items.ts";
import { runEval } from "../eval/evaluate.ts";
import { writeEvalOutputs } from "../eval/report.ts";
import { readTrainLog, runDirOf } from "../train/run_log.ts";
import { CliError, cliMain, parseCommandLine } from "./_common.ts";

const HELP = `deno task eval --checkpoint DIR --data FILE|DIR [options]

Answer an evaluation set with a checkpoint (greedy, batched), score exact-match accuracy,
time the thought phase, read the LOTUS latents out through the LM head, and write
predictions.csv, summary.json, accuracy_by_steps.csv, readout.csv, SVG pictures and
report.html into --out.

  --checkpoint DIR     a checkpoint (or run) directory from deno task train   (required)
  --data FILE|DIR      evaluation file, or a dataset directory from build-dataset (required)
  --format F           auto | ${EVAL_FORMATS.join(" | ")} (default auto)
  --split NAME         split of a dataset directory (default test, else valid)
  --batch N            questions per batch (default 16; 1 gives batch-1 latency)
  --r LIST             loop iterations, e.g. 4 or 0,1,2,4,6 (default: the checkpoint's R)
  --k N                latent blocks (default: the checkpoint's K)
  --limit N            evaluate the first N items
  --max-new-tokens N   generation budget (default 64)
  --out DIR            output directory (default out/eval)
  --backend B          cpu | cuda | auto | onnx (default ${DEFAULT_INFERENCE_BACKEND})
  --threads N          CPU threads, 0 = all cores (default 0)
  --readout-examples N examples drawn in readout.svg (default 6)
  --on-error E         throw | skip malformed records (default throw)
  --quiet              no progress output
  -h, --help           this help
`;

const rList = z.string().transform((s, ctx) => {
  const parts = s.split(",").map((p) => p.trim()).filter((p) => p !== "");
  const out = parts.map(Number);
  if (!out.length || out.some((n) => !Number.isInteger(n) || n < 0)) {
    ctx.addIssue({ code: "custom", message: `expected a list of integers >= 0, got "${s}"` });
    return z.NEVER;
  }
  return out;
});

const ArgsSchema = z.object({
  checkpoint: z.string({ error: "required: a checkpoint directory" }),
  data: z.string({ error: "required: an evaluation file or dataset directory" }),
  format: z.enum(["auto", ...EVAL_FORMATS] as [string, ...string[]]).default("auto"),
  split: z.string().optional(),
  batch: z.coerce.number().int().min(1).default(16),
  r: rList.optional(),
  k: z.coerce.number().int().min(0).optional(),
  limit: z.coerce.number().int().min(1).optional(),
  maxNewTokens: z.coerce.number().int().min(1).default(64),
  out: z.string().default("out/eval"),
  backend: z.enum(["cpu", "cuda", "auto", "onnx"]).default(DEFAULT_INFERENCE_BACKEND),
  threads: z.coerce.number().int().min(0).default(0),
  readoutExamples: z.coerce.number().int().min(0).default(6),
  onError: z.enum(["throw", "skip"]).default("throw"),
  quiet: z.boolean().default(false),
});

/** Validated `deno task eval` options. */
export type EvalArgs = z.infer<typeof ArgsSchema>;

const STRING_FLAGS = [
  "checkpoint",
  "data",
  "format",
  "split",
  "batch",
  "r",
  "k",
  "limit",
  "max-new-tokens",
  "out",
  "backend",
  "threads",
  "readout-examples",
  "on-error",
];

/** Parse argv into validated options (exported for tests). */
export function parseEvalArgs(argv: string[]): EvalArgs | "help" {
  return parseCommandLine(argv, "eval", { strings: STRING_FLAGS, booleans: ["quiet"] }, ArgsSchema);
}

/** Run an evaluation as the command does; returns the summary path (exported for tests). */
export async function evalCommand(a: EvalArgs, log: (s: string) => void): Promise<string> {
  const format = a.format === "auto" ? await detectEvalFormat(a.data) : a.format as EvalFormat;
  const split = format === "dataset" ? await datasetSplit(a.data, a.split) : undefined;
  let skipped = 0;
  const items = await loadEvalItems(a.data, {
    format,
    split,
    limit: a.limit,
    onError: a.onError,
    onSkip: () => skipped++,
  });
  if (items.length === 0) throw new CliError(`${a.data}: no items to evaluate`);
  log(
    `${items.length} items from ${a.data} (${format}${split ? `, split ${split}` : ""})` +
      (skipped ? `, ${skipped} malformed records skipped` : ""),
  );
  const session = await openInference(a.checkpoint, {
    backend: a.backend,
    threads: a.threads,
    maxBatch: a.batch,
    maxNewTokens: a.maxNewTokens,
  });
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
    });
  } finally {
    session.close();
  }
  const runDir = await runDirOf(a.checkpoint);
  const trainLog = runDir ? await readTrainLog(runDir) : null;
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
    },
    result,
    { trainLog, readoutExamples: a.readoutExamples },
  );
  for (const r of result.runs) {
    log(
      `K=${r.K} R=${r.R}: accuracy ${(100 * r.accuracy).toFixed(1)}% (${r.correct}/${r.n}` +
        (r.tooLong ? `; ${r.tooLong} too long for the context, counted wrong` : "") + "), " +
        `thought ${r.latency.thoughtMsPerExample.toFixed(2)} ms/example at batch ${a.batch}` +
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

async function main(argv: string[]): Promise<number> {
  const a = parseEvalArgs(argv);
  if (a === "help") {
    console.log(HELP);
    return 0;
  }
  await evalCommand(a, a.quiet ? () => {} : (s) => console.error(s));
  return 0;
}

if (import.meta.main) await cliMain(() => main(Deno.args));

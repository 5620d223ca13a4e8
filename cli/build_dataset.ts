/**
 * `deno task build-dataset`: build a dataset directory from problem files (or, with no
 * `--input`, from the project's default data). A thin layer over pipeline/build.ts.
 *
 * @module
 */

import process from "node:process";
import cliProgress from "cli-progress";
import { z } from "zod";
import {
  buildDataset,
  type BuildOptions,
  type BuildProgress,
  MAX_C,
  MAX_K,
  MAX_VARIANTS,
} from "../pipeline/build.ts";
import {
  DEFAULT_BUILD,
  DEFAULT_OUT,
  defaultSplits,
  refuseDefaultOver,
} from "../pipeline/default_data.ts";
import { MAX_SPLIT_NAME, SPLIT_NAME } from "../pipeline/manifest.ts";
import { FORMATS } from "../pipeline/read.ts";
import { BuildStopped, DEFAULT_SHARD_SIZE } from "../pipeline/writer.ts";
import { signalExitCode, unlessGone } from "../base/signals.ts";
import { formatSummary } from "../pipeline/summary.ts";
import { DEFAULT_MAX_COT_STEPS, DEFAULT_MAX_FIELD_BYTES } from "../pipeline/limits.ts";
import {
  FAMILIES,
  type Family,
  MAX_STEPS,
  otherFamilies,
  type SyntheticOptions,
} from "../pipeline/synthetic.ts";
import { type ArgsOf, cliMain, defineCommand, oneOf, wholeNumber } from "./_common.ts";

/** A comma-separated list of synthetic families. */
const familyList = z.string()
  .transform((s) => s.split(",").map((f) => f.trim()).filter((f) => f !== ""))
  .refine((fs) => fs.length > 0, "needs at least one family")
  .superRefine((fs, ctx) => {
    const unknown = fs.filter((f) => !(FAMILIES as readonly string[]).includes(f));
    if (unknown.length > 0) {
      ctx.addIssue({
        code: "custom",
        message: `has no family ${unknown.map((f) => JSON.stringify(f)).join(", ")}: ` +
          `takes families from ${FAMILIES.join(",")}`,
      });
    }
  })
  .transform((fs) => fs as Family[]);

const MORE_DATA = "More data (docs/pipeline.md, sections 7-9)";

/** `deno task build-dataset`, declared. */
export const command = defineCommand({
  name: "build-dataset",
  usage: [
    "--input FILE [--input FILE ...] --out DIR [options]",
    "--synthetic N --out DIR [options]",
    "[--out DIR]",
  ],
  summary: `Build a LOTUS dataset directory (docs/dataset-format.md) from problem files, from \
generated problems, or both.

With neither --input nor --synthetic it builds train and valid from the default data \
(4,000 + 200 synthetic problems and the hand-written fixtures/default/, ${DEFAULT_BUILD.tokenizer} \
tokenizer, K = ${DEFAULT_BUILD.k}, c = ${DEFAULT_BUILD.c}) into ${DEFAULT_OUT}.`,
  flags: {
    input: {
      value: "FILE",
      help: "input file; all of them go into one split",
      schema: z.string().min(1, "needs a file name"),
      multiple: true,
    },
    split: {
      value: "NAME",
      help: "split to build; other splits in DIR are kept",
      schema: z.string().regex(
        SPLIT_NAME,
        "must use letters, digits, _ . - and not start with . or -",
      ).max(MAX_SPLIT_NAME, `must have at most ${MAX_SPLIT_NAME} characters`),
      defaultText: "train",
    },
    out: {
      value: "DIR",
      help: "dataset directory; required with --input or --synthetic",
      schema: z.string().min(1, "needs a directory"),
      defaultText: `${DEFAULT_OUT} without them`,
    },
    format: {
      value: "F",
      help: "input format; auto goes by extension and content",
      schema: oneOf(["auto", ...FORMATS]),
      default: "auto",
    },
    cot: {
      value: "F",
      help: "calculator steps or sentences",
      schema: oneOf(["math", "nl"]),
      defaultText: "math, or DIR's",
    },
    k: {
      value: "N",
      help: `latent blocks K (0 to ${MAX_K})`,
      schema: wholeNumber(0, MAX_K),
      defaultText: "6, or DIR's",
    },
    c: {
      value: "N",
      help: `latent slots per block c (1 to ${MAX_C})`,
      schema: wholeNumber(1, MAX_C),
      defaultText: "13, or DIR's",
    },
    tokenizer: {
      value: "T",
      help: "gpt2, compact or the PATH of a tokenizer.json",
      schema: z.string().min(1, "needs gpt2, compact or a path"),
      defaultText: "gpt2, or the one already in DIR",
    },
    longStep: {
      value: "S",
      help: "a step longer than c tokens: truncate its targets, drop the record, or spill its " +
        "targets into the next block's slots",
      schema: oneOf(["truncate", "drop", "spill"]),
      default: "truncate",
    },
    socratic: {
      value: "S",
      help: "GSM8K socratic sub-questions",
      schema: oneOf(["strip", "keep"]),
      default: "strip",
    },
    onError: {
      value: "E",
      help: "an input record that is malformed, not UTF-8 or over a size limit; skipped ones " +
        "are listed in the summary and report.csv",
      schema: oneOf(["throw", "skip"]),
      default: "throw",
    },
    shardSize: {
      value: "N",
      help: "records per safetensors shard",
      schema: wholeNumber(1),
      defaultText: String(DEFAULT_SHARD_SIZE),
    },
    maxFieldBytes: {
      value: "N",
      help: "most UTF-8 bytes in a record's question, chain of thought or answer; a longer " +
        "one is an input error, as --on-error says",
      schema: wholeNumber(1),
      defaultText: String(DEFAULT_MAX_FIELD_BYTES),
    },
    maxCotSteps: {
      value: "N",
      help: "most steps a record may have in either CoT form; more is an input error",
      schema: wholeNumber(1),
      defaultText: String(DEFAULT_MAX_COT_STEPS),
    },
    synthetic: {
      value: "N",
      help: "add N generated problems to the split, after the inputs (with no --input, the " +
        "split has only these)",
      schema: wholeNumber(1),
      group: MORE_DATA,
    },
    steps: {
      value: "A..B",
      help: `calculator steps per generated problem; at most ${MAX_STEPS}`,
      schema: z.string().regex(/^\d+(\.\.\d+)?$/, "must be A..B, such as 2..6"),
      defaultText: "1..6",
      group: MORE_DATA,
    },
    seed: {
      value: "S",
      help: "seed of the generator and of --augment",
      schema: wholeNumber(0),
      defaultText: "0",
      group: MORE_DATA,
    },
    maxValue: {
      value: "V",
      help: "cap on every generated value (100 to 1e9)",
      schema: wholeNumber(100, 1e9),
      defaultText: "1000",
      group: MORE_DATA,
    },
    digits: {
      value: "D",
      help: "most digits of a generated operand (1 to 6)",
      schema: wholeNumber(1, 6),
      defaultText: "2",
      group: MORE_DATA,
    },
    families: {
      value: "LIST",
      help: `generate only these families, comma-separated: ${FAMILIES.join(",")}`,
      schema: familyList,
      group: MORE_DATA,
    },
    excludeFamilies: {
      value: "LIST",
      help: "generate every family but these (a held-out split)",
      schema: familyList,
      group: MORE_DATA,
    },
    augment: {
      value: "N",
      help: `add up to N variants (1 to ${MAX_VARIANTS}) of each input problem, with new ` +
        "numbers, next to it (generated problems are not augmented)",
      schema: wholeNumber(1, MAX_VARIANTS),
      group: MORE_DATA,
    },
    exclude: {
      value: "FILE",
      help:
        "keep out of the split every input or generated problem whose question is a near copy " +
        "of one in FILE (any input format, or GSM-Hard, MultiArith or SVAMP, or a dataset " +
        "directory: every split's questions), and make no variants of it",
      schema: z.string().min(1, "needs a file name"),
      multiple: true,
      group: MORE_DATA,
    },
  },
  notes: `Held-out splits: --families or --exclude-families picks the template families, and a \
--steps range above the training one (train --steps 1..4, test --steps 5..8) the lengths.

A second --split into an existing DIR reuses its tokenizer, K, c and --cot (giving other values \
is an error).`,
  examples: [
    { what: "the default dataset, into out/data/default", command: "deno task build-dataset" },
    {
      what: "GSM8K's training set, with the GPT-2 tokenizer",
      command: "deno task build-dataset --input data/gsm8k/train.jsonl " +
        "--out out/data/gsm8k --tokenizer gpt2",
    },
    {
      what: "GSM8K's test set, as a second split of that dataset (same tokenizer, K and c)",
      command: "deno task build-dataset --input data/gsm8k/test.jsonl --split test " +
        "--out out/data/gsm8k",
    },
    {
      what: "2,000 generated problems of 1 to 4 steps",
      command: "deno task build-dataset --synthetic 2000 --steps 1..4 --tokenizer compact " +
        "--out out/data/synth",
    },
  ],
});

/** Validated `deno task build-dataset` values. */
export type BuildArgs = ArgsOf<typeof command>;

/** Parse the command line into build options, or "help" for -h/--help. */
export function parseCli(args: string[]): BuildOptions | "help" {
  const v = command.parse(args);
  return v === "help" ? "help" : buildOptions(v);
}

/** The build options of parsed values; the rules that tie flags together are checked here. */
export function buildOptions(v: BuildArgs): BuildOptions {
  const common = {
    format: v.format,
    cot: v.cot,
    k: v.k,
    c: v.c,
    tokenizer: v.tokenizer,
    longStep: v.longStep,
    socratic: v.socratic,
    onError: v.onError,
    shardSize: v.shardSize,
    maxFieldBytes: v.maxFieldBytes,
    maxCotSteps: v.maxCotSteps,
  };
  const synthetic = syntheticOptions(v);
  const extras = {
    ...(synthetic ? { synthetic } : {}),
    ...(v.augment !== undefined ? { augment: { variants: v.augment, seed: v.seed ?? 0 } } : {}),
    ...(v.exclude ? { exclude: v.exclude } : {}),
  };
  if (!v.input || v.input.length === 0) {
    if (v.augment !== undefined) {
      throw command.error("--augment needs --input: it adds variants of the input problems");
    }
    if (synthetic) {
      if (!v.out) throw command.error("--out DIR is required with --synthetic");
      return {
        ...common,
        out: v.out,
        splits: [{ name: v.split ?? "train", inputs: [], ...extras }],
      };
    }
    if (v.exclude) throw command.error("--exclude needs --input or --synthetic");
    if (v.split) {
      throw command.error("--split needs --input (the default data builds train and valid)");
    }
    return {
      ...common,
      tokenizer: v.tokenizer ?? DEFAULT_BUILD.tokenizer,
      k: v.k ?? DEFAULT_BUILD.k,
      c: v.c ?? DEFAULT_BUILD.c,
      out: v.out ?? DEFAULT_OUT,
      splits: defaultSplits(),
    };
  }
  if (!v.out) throw command.error("--out DIR is required with --input");
  return {
    ...common,
    out: v.out,
    splits: [{ name: v.split ?? "train", inputs: v.input, ...extras }],
  };
}

/** The generator's options from the command line, or undefined without --synthetic. */
function syntheticOptions(v: BuildArgs): SyntheticOptions | undefined {
  // --seed seeds the generator and --augment; the default data's seeds are its own.
  if (v.seed !== undefined && v.synthetic === undefined && v.augment === undefined) {
    throw command.error("--seed needs --synthetic N or --augment N");
  }
  const generatorFlags = ["steps", "maxValue", "digits", "families", "excludeFamilies"] as const;
  if (v.synthetic === undefined) {
    const stray = generatorFlags.find((f) => v[f] !== undefined);
    if (stray) throw command.error(`${command.flagOf(stray)} needs --synthetic N`);
    return undefined;
  }
  if (v.families && v.excludeFamilies) {
    throw command.error("give --families or --exclude-families, not both");
  }
  let minSteps: number | undefined;
  let maxSteps: number | undefined;
  if (v.steps !== undefined) {
    const [a, b = a] = v.steps.split("..").map(Number);
    if (a < 1 || b > MAX_STEPS || a > b) {
      throw command.error(`--steps must be A..B with 1 <= A <= B <= ${MAX_STEPS}`);
    }
    [minSteps, maxSteps] = [a, b];
  }
  const families = v.families ?? (v.excludeFamilies && otherFamilies(v.excludeFamilies));
  if (families && families.length === 0) {
    throw command.error("--exclude-families leaves no family to generate");
  }
  return {
    n: v.synthetic,
    ...(v.seed !== undefined ? { seed: v.seed } : {}),
    ...(minSteps !== undefined ? { minSteps, maxSteps } : {}),
    ...(v.maxValue !== undefined ? { maxValue: v.maxValue } : {}),
    ...(v.digits !== undefined ? { digits: v.digits } : {}),
    ...(families ? { families } : {}),
  };
}

/** Progress on stderr: a bar on a terminal, else a line every few seconds. */
function progressReporter(): { onProgress(p: BuildProgress): void; stop(): void } {
  const start = Date.now();
  const tty = Deno.stderr.isTerminal();
  // deno-lint-ignore no-explicit-any -- cli-progress ships no types
  let bar: any = null;
  let barKey = "";
  let lastLine = start;
  const label = (p: BuildProgress) =>
    `${p.split}${p.phase === "fit" ? " (fitting tokenizer)" : ""}`;
  return {
    onProgress: (p) => unlessGone(() => show(p)),
    stop() {
      bar?.stop();
    },
  };

  // The bar on a terminal, or a line every 3 s elsewhere.
  function show(p: BuildProgress): void {
    const now = Date.now();
    if (now - start < 1000) return; // short builds stay quiet
    if (tty) {
      const key = `${p.phase}:${p.split}`;
      if (bar && key !== barKey) {
        bar.stop();
        bar = null;
      }
      if (!bar) {
        bar = new cliProgress.SingleBar({
          format: `${label(p)} |{bar}| {value}/{total} records`,
          stream: process.stderr,
          hideCursor: true,
        }, cliProgress.Presets.shades_classic);
        bar.start(p.total ?? p.records, p.records);
        barKey = key;
      }
      if (p.total === null || p.records > p.total) bar.setTotal(p.records);
      bar.update(p.records);
    } else if (now - lastLine >= 3000) {
      lastLine = now;
      const of = p.total ? ` of ~${p.total} (${Math.round((100 * p.records) / p.total)}%)` : "";
      console.error(
        `${label(p)}: ${p.records} records${of}, ${((now - start) / 1000).toFixed(0)} s`,
      );
    }
  }
}

/** Build the dataset the values describe, with progress on stderr and a summary on stdout. */
async function main(v: BuildArgs): Promise<number> {
  const opts = buildOptions(v);
  // The default data (no --input, no --synthetic) replaces train and valid of --out.
  if (!v.input?.length && v.synthetic === undefined) await refuseDefaultOver(opts.out);
  const progress = progressReporter();
  try {
    const t0 = performance.now();
    const summary = await buildDataset(opts, { onProgress: progress.onProgress });
    progress.stop();
    console.log(formatSummary(summary.manifest, summary.built, summary.skipped));
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    console.log(`wrote ${summary.built.join(", ")} to ${summary.out} in ${secs} s`);
    return 0;
  } catch (e) {
    // After SIGHUP the terminal may be gone: what is printed then is dropped, and the exit
    // status says how the build ended.
    unlessGone(() => progress.stop());
    if (e instanceof BuildStopped) {
      unlessGone(() => console.error(e.message));
      return signalExitCode(e.signal);
    }
    // One line: every error the pipeline raises names the file, line or option first.
    if (!(e instanceof Error) || !e.message.includes("\n")) throw e;
    throw new Error(e.message.split("\n")[0], { cause: e });
  }
}

if (import.meta.main) await cliMain(command, main);

/**
 * `deno task build-dataset`: build a dataset directory from problem files (or, with no
 * `--input`, from the project's default data). A thin layer over pipeline/build.ts.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import cliProgress from "cli-progress";
import { z } from "zod";
import { buildDataset, type BuildOptions, type BuildProgress } from "../pipeline/build.ts";
import { DEFAULT_OUT, defaultSplits } from "../pipeline/default_data.ts";
import { FORMATS } from "../pipeline/read.ts";
import { formatSummary } from "../pipeline/summary.ts";
import {
  FAMILIES,
  type Family,
  MAX_STEPS,
  otherFamilies,
  type SyntheticOptions,
} from "../pipeline/synthetic.ts";

const HELP = `Build a LOTUS dataset directory (docs/dataset-format.md).

Usage:
  deno task build-dataset --input FILE [--input FILE ...] --out DIR [options]
  deno task build-dataset [--out DIR]      build train and valid from the default data
                                           (fixtures/default/) into ${DEFAULT_OUT}

Options:
  --input FILE        input file (repeat for several); all go into one split
  --split NAME        split to build (default train); other splits in DIR are kept
  --out DIR           dataset directory (required with --input)
  --format F          auto|${FORMATS.join("|")} (default auto: by extension and content)
  --cot F             math|nl: calculator steps or sentences (default math, or DIR's)
  --k N               latent blocks K (default 6, or DIR's)
  --c N               latent slots per block c (default 13, or DIR's)
  --tokenizer T       gpt2|compact|PATH to a tokenizer.json (default gpt2, or the one
                      already in DIR)
  --long-step S       truncate|drop: a step longer than c tokens (default truncate)
  --socratic S        strip|keep: GSM8K socratic sub-questions (default strip)
  --on-error E        throw|skip: a malformed input record (default throw)
  --shard-size N      records per safetensors shard (default 16384)
  -h, --help          show this help

More data (docs/pipeline.md, sections 7-9):
  --synthetic N       add N generated problems to the split, after the inputs (with no
                      --input, the split has only these)
  --steps A..B        calculator steps per generated problem (default 1..6; max 20)
  --seed S            seed of the generator and of --augment (default 0)
  --max-value V       cap on every generated value (default 1000)
  --digits D          most digits of a generated operand (default 2)
  --families LIST     generate only these families, comma-separated:
                      ${FAMILIES.join(",")}
  --exclude-families LIST
                      generate every family but these (a held-out split)
  --augment N         add up to N variants of each input problem, with new numbers, next
                      to it (generated problems are not augmented)
  --exclude FILE      keep out of the split every input problem whose question is a near
                      copy of one in FILE (any input format; repeat for several), and make
                      no variants of it

Held-out splits: --families or --exclude-families picks the template families, and a
--steps range above the training one (train --steps 1..4, test --steps 5..8) the lengths.

A second --split into an existing DIR reuses its tokenizer, K, c and --cot (giving other
values is an error).
`;

function oneOf<T extends string>(flag: string, values: readonly T[]) {
  return z.enum(values as [T, ...T[]], { error: `${flag} must be one of ${values.join("|")}` });
}

function wholeNumber(flag: string, min: number) {
  return z.string()
    .regex(/^\d+$/, `${flag} must be a whole number`)
    .transform(Number)
    .refine((n) => n >= min, `${flag} must be at least ${min}`);
}

const CliSchema = z.object({
  input: z.array(z.string().min(1, "--input needs a file name")).optional(),
  split: z.string().regex(
    /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/,
    "--split must use letters, digits, _ . - and not start with . or -",
  ).optional(),
  out: z.string().min(1, "--out needs a directory").optional(),
  format: oneOf("--format", ["auto", ...FORMATS]).default("auto"),
  cot: oneOf("--cot", ["math", "nl"] as const).optional(),
  k: wholeNumber("--k", 0).optional(),
  c: wholeNumber("--c", 1).optional(),
  tokenizer: z.string().min(1, "--tokenizer needs gpt2, compact or a path").optional(),
  "long-step": oneOf("--long-step", ["truncate", "drop"] as const).default("truncate"),
  socratic: oneOf("--socratic", ["strip", "keep"] as const).default("strip"),
  "on-error": oneOf("--on-error", ["throw", "skip"] as const).default("throw"),
  "shard-size": wholeNumber("--shard-size", 1).optional(),
  synthetic: wholeNumber("--synthetic", 1).optional(),
  steps: z.string().regex(/^\d+(\.\.\d+)?$/, "--steps must be A..B, such as 2..6").optional(),
  seed: wholeNumber("--seed", 0).optional(),
  "max-value": wholeNumber("--max-value", 100).optional(),
  digits: wholeNumber("--digits", 1).optional(),
  families: familyList("--families").optional(),
  "exclude-families": familyList("--exclude-families").optional(),
  augment: wholeNumber("--augment", 1).optional(),
  exclude: z.array(z.string().min(1, "--exclude needs a file name")).optional(),
  help: z.boolean().optional(),
});

function familyList(flag: string) {
  return z.string().transform((s) => s.split(",").map((f) => f.trim()).filter((f) => f !== ""))
    .refine((fs) => fs.length > 0, `${flag} needs at least one family`)
    .refine(
      (fs) => fs.every((f) => (FAMILIES as readonly string[]).includes(f)),
      `${flag} takes families from ${FAMILIES.join(",")}`,
    )
    .transform((fs) => fs as Family[]);
}

/** Raised for command-line mistakes; exit code 2. */
class UsageError extends Error {}

/** Parse the command line into build options, or null for --help. */
export function parseCli(args: string[]): BuildOptions | null {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        input: { type: "string", multiple: true },
        split: { type: "string" },
        out: { type: "string" },
        format: { type: "string" },
        cot: { type: "string" },
        k: { type: "string" },
        c: { type: "string" },
        tokenizer: { type: "string" },
        "long-step": { type: "string" },
        socratic: { type: "string" },
        "on-error": { type: "string" },
        "shard-size": { type: "string" },
        synthetic: { type: "string" },
        steps: { type: "string" },
        seed: { type: "string" },
        "max-value": { type: "string" },
        digits: { type: "string" },
        families: { type: "string" },
        "exclude-families": { type: "string" },
        augment: { type: "string" },
        exclude: { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message.split("\n")[0]);
  }
  const res = CliSchema.safeParse(values);
  if (!res.success) throw new UsageError(res.error.issues[0].message);
  const v = res.data;
  if (v.help) return null;
  const common = {
    format: v.format,
    cot: v.cot,
    k: v.k,
    c: v.c,
    tokenizer: v.tokenizer,
    longStep: v["long-step"],
    socratic: v.socratic,
    onError: v["on-error"],
    shardSize: v["shard-size"],
  };
  const synthetic = syntheticOptions(v);
  const extras = {
    ...(synthetic ? { synthetic } : {}),
    ...(v.augment !== undefined ? { augment: { variants: v.augment, seed: v.seed ?? 0 } } : {}),
    ...(v.exclude ? { exclude: v.exclude } : {}),
  };
  if (!v.input || v.input.length === 0) {
    if (v.augment !== undefined) {
      throw new UsageError("--augment needs --input: it adds variants of the input problems");
    }
    if (synthetic) {
      if (!v.out) throw new UsageError("--out DIR is required with --synthetic");
      return {
        ...common,
        out: v.out,
        splits: [{ name: v.split ?? "train", inputs: [], ...extras }],
      };
    }
    if (v.exclude) throw new UsageError("--exclude needs --input or --synthetic");
    if (v.split) {
      throw new UsageError("--split needs --input (the default data builds train and valid)");
    }
    return { ...common, out: v.out ?? DEFAULT_OUT, splits: defaultSplits() };
  }
  if (!v.out) throw new UsageError("--out DIR is required with --input");
  return {
    ...common,
    out: v.out,
    splits: [{ name: v.split ?? "train", inputs: v.input, ...extras }],
  };
}

/** The generator's options from the command line, or undefined without --synthetic. */
function syntheticOptions(v: z.infer<typeof CliSchema>): SyntheticOptions | undefined {
  const generatorFlags = ["steps", "max-value", "digits", "families", "exclude-families"] as const;
  if (v.synthetic === undefined) {
    const stray = generatorFlags.find((f) => v[f] !== undefined);
    if (stray) throw new UsageError(`--${stray} needs --synthetic N`);
    return undefined;
  }
  if (v.families && v["exclude-families"]) {
    throw new UsageError("give --families or --exclude-families, not both");
  }
  let minSteps: number | undefined;
  let maxSteps: number | undefined;
  if (v.steps !== undefined) {
    const [a, b = a] = v.steps.split("..").map(Number);
    if (a < 1 || b > MAX_STEPS || a > b) {
      throw new UsageError(`--steps must be A..B with 1 <= A <= B <= ${MAX_STEPS}`);
    }
    [minSteps, maxSteps] = [a, b];
  }
  const families = v.families ?? (v["exclude-families"] && otherFamilies(v["exclude-families"]));
  if (families && families.length === 0) {
    throw new UsageError("--exclude-families leaves no family to generate");
  }
  return {
    n: v.synthetic,
    ...(v.seed !== undefined ? { seed: v.seed } : {}),
    ...(minSteps !== undefined ? { minSteps, maxSteps } : {}),
    ...(v["max-value"] !== undefined ? { maxValue: v["max-value"] } : {}),
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
    onProgress(p) {
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
    },
    stop() {
      bar?.stop();
    },
  };
}

/** Run the command; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let opts: BuildOptions | null;
  try {
    opts = parseCli(args);
  } catch (e) {
    console.error(`build-dataset: ${(e as Error).message} (see --help)`);
    return 2;
  }
  if (opts === null) {
    console.log(HELP);
    return 0;
  }
  const progress = progressReporter();
  try {
    const t0 = performance.now();
    const summary = await buildDataset(opts, { onProgress: progress.onProgress });
    progress.stop();
    console.log(formatSummary(summary.manifest, summary.built));
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    console.log(`wrote ${summary.built.join(", ")} to ${summary.out} in ${secs} s`);
    return 0;
  } catch (e) {
    progress.stop();
    // One line, no stack: every error the pipeline raises names the file, line or option.
    const msg = e instanceof Error ? e.message : String(e);
    console.error(`build-dataset: error: ${msg.split("\n")[0]}`);
    if (Deno.env.get("LOTUS_DEBUG")) console.error(e);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));

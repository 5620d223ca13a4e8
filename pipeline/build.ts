/**
 * The build orchestrator: read -> segment -> validate -> tokenize -> pack -> write, for one
 * or more splits into one dataset directory (docs/dataset-format.md). Every stage is its own
 * module and usable alone; this one only composes them, streams, and keeps the output
 * atomic (see pipeline/writer.ts).
 *
 * @module
 */

import { Sha256, sha256Hex } from "../base/sha256.ts";
import { z } from "zod";
import { detectFormat, type Format, FORMATS, type InputError, type InputReason } from "./read.ts";
import { basename, idLabels } from "./read/record.ts";
import { readLinesOrErrors } from "./read/lines.ts";
import { notRegularFile, openInput } from "./read/open.ts";
import { DEFAULT_MAX_COT_STEPS, DEFAULT_MAX_FIELD_BYTES, stepCountError } from "./limits.ts";
import { segment } from "./segment.ts";
import { type CotForm, validate } from "./validate.ts";
import {
  compactTokenizerFromFitter,
  gpt2Tokenizer,
  type Tokenizer,
  tokenizerFromFile,
  tokenizerFromJson,
} from "./tokenizer.ts";
import { BpeFitter } from "./bpe_fit.ts";
import { checkPackOptions, type LongStep, packRecord, stepTexts } from "./pack.ts";
import { StepLengths } from "./step_lengths.ts";
import {
  type Manifest,
  MANIFEST_FILE,
  MANIFEST_VERSION,
  ManifestError,
  manifestFiles,
  manifestText,
  MAX_SPLIT_NAME,
  readManifest,
  type Schema,
  SPLIT_NAME,
  SPLIT_NAME_LENGTH_RULE,
  SPLIT_NAME_RULE,
  type SplitCounts,
  type SplitInfo,
} from "./manifest.ts";
import {
  BuildStopped,
  DEFAULT_SHARD_SIZE,
  isBuildLeftover,
  SplitWriter,
  StagedDir,
  WriteError,
} from "./writer.ts";
import {
  estimateWithExtras,
  openSplitSource,
  type SplitExtras,
  type SplitSource,
} from "./split_source.ts";
import {
  resolveSyntheticOptions,
  type SyntheticOptions,
  SyntheticOptionsError,
} from "./synthetic.ts";
import { DIRECTORY_MARKERS, isDirectory, rethrowIfDenied } from "../base/exists.ts";
import {
  notAnOption,
  type OptionNames,
  refuseMistyped,
  refuseUnknownOptions,
  unknownOption,
} from "../base/options.ts";

/**
 * One split to build: its name and its input files, read in order, and optionally generated
 * records, augmentation and decontamination (pipeline/split_source.ts).
 */
export interface SplitSpec extends SplitExtras {
  /** Split name: `train`, `valid`, `test`, ... */
  name: string;
  /** Input files (may be empty when the split has generated records). */
  inputs: string[];
}

/**
 * Options of {@linkcode buildDataset}. Everything but `out` and `splits` has a default; when
 * `out` already holds a dataset, K, c and `cot` default to its values.
 */
export interface BuildOptions {
  /** The dataset directory. */
  out: string;
  /** The splits to build; other splits already in `out` are kept. */
  splits: SplitSpec[];
  /** Input format (default `auto`: detected per file). */
  format?: Format | "auto";
  /** Step form (default `math`). */
  cot?: CotForm;
  /** Latent blocks K (default 6). */
  k?: number;
  /** Slots per block c (default 13). */
  c?: number;
  /**
   * `gpt2`, `compact` or a tokenizer.json path. Default: the directory's tokenizer when it
   * has one, else `gpt2`. The compact tokenizer is fitted to the first split's texts.
   */
  tokenizer?: string;
  /** Steps longer than c (default `truncate`). */
  longStep?: LongStep;
  /** GSM8K socratic sub-questions (default `strip`). */
  socratic?: "strip" | "keep";
  /** Malformed input records (default `throw`). */
  onError?: "throw" | "skip";
  /** Records per shard (default 16,384). */
  shardSize?: number;
  /**
   * The most UTF-8 bytes an input record's question, chain of thought and answer may each
   * have (default 65,536); a longer one is an input error (reason `too_large`).
   */
  maxFieldBytes?: number;
  /** The most steps a record may have in either CoT form (default 256); checked likewise. */
  maxCotSteps?: number;
}

/** Progress of a build, reported about once per 1,000 records and at each file's end. */
export interface BuildProgress {
  /** `fit`: first pass collecting text for the compact tokenizer; `build`: the real pass. */
  phase: "fit" | "build";
  /** The split being built. */
  split: string;
  /** The input file being read. */
  file: string;
  /** Records read so far in this split and phase. */
  records: number;
  /** Estimated records in the split (its input lines), or null when unknown. */
  total: number | null;
}

/** Hooks of {@linkcode buildDataset}. */
export interface BuildHooks {
  /** Called with progress; must be cheap. */
  onProgress?(p: BuildProgress): void;
  /**
   * Called before each change the commit makes to `--out` (a rename into place, a removal),
   * with a description of it. Throwing stops the commit there, as a kill would.
   */
  onCommitStep?(step: string): void;
  /**
   * Stops the build when aborted, as SIGTERM does: what it wrote is removed and it rejects
   * with a {@linkcode BuildStopped} whose `signal` is "SIGTERM" (once the files are being
   * moved into place, it waits for the last move: the new dataset is then `written`).
   */
  signal?: AbortSignal;
}

/** An input record the build skipped (`--on-error skip`), as the summary lists it. */
export interface SkippedRecord {
  /** The split it was read for. */
  split: string;
  /** The input file, as given. */
  file: string;
  /** 1-based line (row, element) of the record. */
  line: number;
  /** Why: `malformed`, `invalid_utf8` or `too_large`. */
  reason: InputReason;
  /** What is wrong (the field, if one is, and the problem). */
  problem: string;
}

/** How many skipped records per split {@linkcode BuildSummary.skipped} lists. */
export const SKIPPED_LISTED = 20;

/** What a build did. */
export interface BuildSummary {
  /** The dataset directory. */
  out: string;
  /** The manifest as written (all splits of the directory). */
  manifest: Manifest;
  /** The splits this build wrote, in the order given. */
  built: string[];
  /** Whether the directory's existing tokenizer was reused. */
  reusedTokenizer: boolean;
  /**
   * The first {@linkcode SKIPPED_LISTED} input records of each split that were skipped as
   * unusable, in input order; the split's report.csv has them all, the manifest their count.
   */
  skipped: SkippedRecord[];
}

/** Raised for bad options or a directory that does not fit them; the message says what to do. */
export class BuildError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "BuildError";
  }
}

/** {@linkcode BuildOptions} with every default filled in (`tokenizer` stays optional). */
export interface ResolvedBuildOptions {
  /** The dataset directory. */
  out: string;
  /** The splits to build. */
  splits: SplitSpec[];
  /** Input format. */
  format: Format | "auto";
  /** Step form. */
  cot: CotForm;
  /** Latent blocks K. */
  k: number;
  /** Slots per block c. */
  c: number;
  /** `gpt2`, `compact` or a path; undefined: the directory's, else gpt2. */
  tokenizer?: string;
  /** Steps longer than c. */
  longStep: LongStep;
  /** GSM8K socratic sub-questions. */
  socratic: "strip" | "keep";
  /** Malformed input records. */
  onError: "throw" | "skip";
  /** Records per shard. */
  shardSize: number;
  /** The most UTF-8 bytes per question, chain of thought and answer. */
  maxFieldBytes: number;
  /** The most steps in either CoT form. */
  maxCotSteps: number;
}

const positiveInt = z.number().int().min(1);

/** The most latent blocks K a dataset may have. */
export const MAX_K = 64;
/** The most latent slots per block c a dataset may have. */
export const MAX_C = 256;
/** The most augmented variants per input problem. */
export const MAX_VARIANTS = 1000;

/** The zod schema of {@linkcode BuildOptions}; parsing applies the defaults. */
export const BuildOptionsSchema: Schema<ResolvedBuildOptions> = z.object({
  out: z.string().min(1, "give an output directory"),
  splits: z.array(
    z.object({
      name: z.string().regex(SPLIT_NAME, SPLIT_NAME_RULE).max(
        MAX_SPLIT_NAME,
        SPLIT_NAME_LENGTH_RULE,
      ),
      inputs: z.array(z.string().min(1)),
      // Checked in full by resolveSyntheticOptions (resolveBuildOptions).
      synthetic: z.custom<SyntheticOptions>((v) => typeof v === "object" && v !== null)
        .optional(),
      augment: z.object({
        variants: z.number().int().min(0, "variants must be 0 or more").max(
          MAX_VARIANTS,
          `variants must be at most ${MAX_VARIANTS}`,
        ),
        seed: z.number().int().min(0, "seed must be 0 or more").optional(),
      }).optional(),
      exclude: z.array(z.string().min(1)).optional(),
    }).refine(
      (s) => s.inputs.length > 0 || s.synthetic !== undefined,
      "give at least one input file or synthetic records",
    ),
  ).min(1, "give at least one split"),
  format: z.enum(["auto", ...FORMATS] as ["auto", ...Format[]]).default("auto"),
  cot: z.enum(["math", "nl"]).default("math"),
  k: z.number().int().min(0, "K must be 0 or more").max(MAX_K, `K must be at most ${MAX_K}`)
    .default(6),
  c: positiveInt.max(MAX_C, `c must be at most ${MAX_C}`).default(13),
  tokenizer: z.string().min(1).optional(),
  longStep: z.enum(["truncate", "drop", "spill"]).default("truncate"),
  socratic: z.enum(["strip", "keep"]).default("strip"),
  onError: z.enum(["throw", "skip"]).default("throw"),
  shardSize: positiveInt.default(DEFAULT_SHARD_SIZE),
  maxFieldBytes: positiveInt.default(DEFAULT_MAX_FIELD_BYTES),
  maxCotSteps: positiveInt.default(DEFAULT_MAX_COT_STEPS),
});

/** Every option of {@linkcode BuildOptions}. */
const BUILD_OPTIONS: OptionNames<BuildOptions> = {
  out: true,
  splits: true,
  format: true,
  cot: true,
  k: true,
  c: true,
  tokenizer: true,
  longStep: true,
  socratic: true,
  onError: true,
  shardSize: true,
  maxFieldBytes: true,
  maxCotSteps: true,
};

/** Every field of a {@linkcode SplitSpec}. */
const SPLIT_FIELDS: OptionNames<SplitSpec> = {
  name: true,
  inputs: true,
  synthetic: true,
  augment: true,
  exclude: true,
};

/** Every field of a split's `augment`. */
const AUGMENT_FIELDS: OptionNames<NonNullable<SplitSpec["augment"]>> = {
  variants: true,
  seed: true,
};

/** Every hook of {@linkcode BuildHooks}. */
const BUILD_HOOKS: OptionNames<BuildHooks> = {
  onProgress: true,
  onCommitStep: true,
  signal: true,
};

const buildError = (message: string) => new BuildError(message);

/**
 * Refuses a key that {@linkcode BuildOptions}, a split or its `augment` does not have (from
 * JavaScript, or a value cast past the type), which would otherwise be ignored: a misspelt
 * option, or a split's field given beside `splits`.
 */
function refuseUnknownBuildOptions(opts: BuildOptions): void {
  if (typeof opts !== "object" || opts === null || Array.isArray(opts)) {
    // Not an object: refused, naming what it is.
    refuseUnknownOptions("buildDataset", opts, BUILD_OPTIONS, buildError);
    return;
  }
  const fields = Object.keys(SPLIT_FIELDS);
  const u = unknownOption(opts, BUILD_OPTIONS, fields);
  if (u !== undefined) {
    throw buildError(
      fields.includes(u.key)
        ? `buildDataset: "${u.key}" is a split's field: give it in splits, as ` +
          `splits: [{ name: "train", ${u.key}: ... }]`
        : `buildDataset: ${notAnOption(u)}`,
    );
  }
  if (!Array.isArray(opts.splits)) return; // the schema says what splits must be
  for (const [i, s] of (opts.splits as unknown[]).entries()) {
    if (typeof s !== "object" || s === null) continue;
    refuseUnknownOptions(`buildDataset: splits.${i}`, s, SPLIT_FIELDS, buildError);
    const augment = (s as SplitSpec).augment;
    if (typeof augment !== "object" || augment === null) continue;
    refuseUnknownOptions(`buildDataset: splits.${i}.augment`, augment, AUGMENT_FIELDS, buildError);
  }
}

/**
 * Validate options and apply defaults; throws {@linkcode BuildError} naming the field, or a
 * key that the options, a split or its `augment` does not have.
 */
export function resolveBuildOptions(opts: BuildOptions): ResolvedBuildOptions {
  refuseUnknownBuildOptions(opts);
  const res = BuildOptionsSchema.safeParse(opts);
  if (!res.success) {
    const issue = res.error.issues[0];
    throw new BuildError(`option ${issue.path.join(".")}: ${issue.message}`);
  }
  for (const [i, s] of res.data.splits.entries()) {
    if (s.synthetic === undefined) continue;
    try {
      resolveSyntheticOptions(s.synthetic);
    } catch (e) {
      if (!(e instanceof SyntheticOptionsError)) throw e;
      throw new BuildError(
        `option splits.${i}.${e.message.replace(/^synthetic option /, "synthetic.")}`,
      );
    }
  }
  const names = res.data.splits.map((s) => s.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) {
    throw new BuildError(`split "${dup}" is given twice; give each split once`);
  }
  return res.data;
}

/**
 * A build's reads and opens, given up when a signal stops it ({@linkcode StagedDir}'s
 * `untilStopped` and `orStop`), so that one waiting on a pipe, a FIFO or a stalled file system
 * does not hold the stop back.
 */
type Guard = Pick<StagedDir, "untilStopped" | "orStop">;

async function fileSha256(
  path: string,
  guard: Guard,
): Promise<{ sha256: string; bytes: number }> {
  const h = new Sha256();
  let bytes = 0;
  const f = await guard.orStop(openInput(path));
  try {
    for await (const chunk of guard.untilStopped(f.readable)) {
      h.update(chunk);
      bytes += chunk.length;
    }
  } catch (e) {
    if (e instanceof BuildStopped) throw e;
    throw new BuildError(`${path}: cannot read (${(e as Error).message})`);
  }
  return { sha256: h.hex(), bytes };
}

/** Newlines in a text file: an estimate of its record count for progress. */
async function countLines(path: string, guard: Guard): Promise<number> {
  let n = 0;
  const f = await guard.orStop(openInput(path));
  for await (const chunk of guard.untilStopped(f.readable)) {
    let i = -1;
    while ((i = chunk.indexOf(10, i + 1)) !== -1) n++;
  }
  return n;
}

async function estimateRecords(
  inputs: { path: string; format: Format }[],
  guard: Guard,
): Promise<number | null> {
  let total = 0;
  for (const { path, format } of inputs) {
    if (format === "parquet" || format === "coconut") return null;
    total += await countLines(path, guard);
  }
  return total;
}

async function existingManifest(out: string): Promise<Manifest | null> {
  try {
    await Deno.stat(`${out}/${MANIFEST_FILE}`);
  } catch (e) {
    rethrowIfDenied(e);
    return null;
  }
  try {
    return await readManifest(out);
  } catch (e) {
    if (e instanceof ManifestError) {
      throw new BuildError(
        `${e.message}. --out ${out} holds a dataset this build cannot extend; ` +
          `choose another --out or delete the directory`,
      );
    }
    throw e;
  }
}

/**
 * Refuses an `out` that has no manifest but holds files other than those an interrupted
 * build leaves ({@linkcode isBuildLeftover}): a build writes tokenizer.json there and removes
 * the dataset files no manifest names, so it would overwrite or delete what another tool
 * keeps there (a model directory, say). A missing or empty directory is fine.
 */
async function checkFreshOut(out: string): Promise<void> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(out)) names.push(e.name);
  } catch (e) {
    rethrowIfDenied(e);
    if (e instanceof Deno.errors.NotADirectory) {
      const file = await Deno.stat(out).then((s) => s.isFile, () => false);
      // A WriteError, as failing to create the directory is; said before that is tried.
      throw new WriteError(
        file
          ? `--out ${out} is a file; give a dataset directory (a new one, or one that ` +
            `deno task build-dataset made)`
          : `--out ${out}: a part of the path is a file, not a directory; give a dataset ` +
            `directory whose parents are directories`,
      );
    }
    return; // missing: the build creates it
  }
  // Marks of a directory (and a run's lock), not content a build could overwrite or delete.
  const foreign = names.filter((n) =>
    !DIRECTORY_MARKERS.has(n) && n !== ".run.lock" && !isBuildLeftover(n, names)
  ).sort();
  if (foreign.length === 0) return;
  const shown = foreign.slice(0, 3).join(", ") + (foreign.length > 3 ? ", ..." : "");
  throw new BuildError(
    `--out ${out} is not empty and holds no dataset (no ${MANIFEST_FILE}): it has ${shown}. ` +
      `A build writes tokenizer.json and dataset files there and removes files it does not ` +
      `list, so it does not build into a directory it did not make: choose an empty or new ` +
      `directory for --out`,
  );
}

/**
 * Refuses splits that would repeat records of splits `old` keeps (those this build does not
 * replace): an input file with the sha256 of one of their sources, or generated records of
 * the same seed and numbers. Returns the sha256 of each input file hashed.
 */
async function checkAgainstKept(
  out: string,
  old: Manifest,
  splits: readonly SplitSpec[],
  guard: Guard,
): Promise<Map<string, { sha256: string; bytes: number }>> {
  const sums = new Map<string, { sha256: string; bytes: number }>();
  const rebuilt = new Set(splits.map((s) => s.name));
  const kept = Object.entries(old.splits).filter(([name]) => !rebuilt.has(name));
  if (kept.length === 0) return sums;
  for (const s of splits) {
    for (const path of s.inputs) {
      const sum = await fileSha256(path, guard);
      sums.set(path, sum);
      // A split rebuilt from a file it already had keeps an overlap this build did not make
      // (an older version allowed one): it may be rebuilt as it was.
      const had = old.splits[s.name]?.sources.some((x) => x.sha256 === sum.sha256) ?? false;
      for (const [name, info] of had ? [] : kept) {
        const src = info.sources.find((x) => x.sha256 === sum.sha256);
        if (src === undefined) continue;
        throw new BuildError(
          `${path}: the same content (sha256) as ${src.path}, a source of split ${name} ` +
            `already in ${out}; split ${s.name} would repeat its records: give split ${s.name} ` +
            `another file, or build into a new --out`,
        );
      }
    }
    if (s.synthetic === undefined) continue;
    const seed = s.synthetic.seed ?? 0, from = s.synthetic.start ?? 1;
    const to = from + s.synthetic.n;
    // Where a kept split's (or this split's previous) generated records lie.
    const rangeOf = async (info: SplitInfo) => {
      const g = info.synthetic!;
      const gFrom = g.start ?? await firstSyntheticIndex(`${out}/${info.records}`, g.seed) ?? 1;
      return { seed: g.seed, from: gFrom, to: gFrom + g.n };
    };
    const before = old.splits[s.name];
    const was = before?.synthetic ? await rangeOf(before) : null;
    for (const [name, info] of kept) {
      if (info.synthetic === undefined || info.synthetic.seed !== seed) continue;
      const { from: gFrom, to: gTo } = await rangeOf(info);
      if (!rangesOverlap({ from: gFrom, to: gTo }, { from, to })) continue;
      // An overlap the split's previous build already had (an older version allowed one) is
      // not made by this build: the split may be rebuilt as it was.
      if (was !== null && was.seed === seed && rangesOverlap(was, { from: gFrom, to: gTo })) {
        continue;
      }
      throw new BuildError(
        `split ${s.name} would generate records ${Math.max(gFrom, from)} to ` +
          `${Math.min(gTo, to) - 1} with seed ${seed}, which split ${name} already in ${out} ` +
          `has: the same problems in two splits; pass another --seed for split ${s.name}, or ` +
          `build into a new --out`,
      );
    }
  }
  return sums;
}

/** Whether two ranges of generated record numbers, [from, to), share a number. */
function rangesOverlap(a: { from: number; to: number }, b: { from: number; to: number }): boolean {
  return a.from < b.to && b.from < a.to && a.from < a.to && b.from < b.to;
}

/**
 * The number of the first generated record of seed `seed` in a split's records file: where
 * the generator started, for a manifest written before it recorded `start`. Null when the
 * file holds none.
 */
async function firstSyntheticIndex(records: string, seed: number): Promise<number | null> {
  const id = new RegExp(`"id":"synthetic:${seed}:(\\d+)"`);
  for await (const l of readLinesOrErrors(records)) {
    if (l instanceof Error) return null;
    const m = id.exec(l.text);
    if (m) return Number(m[1]);
  }
  return null;
}

async function reuseTokenizer(
  out: string,
  m: Manifest,
  asked: string | undefined,
): Promise<Tokenizer> {
  const path = `${out}/${m.tokenizer.file}`;
  const text = await Deno.readTextFile(path);
  // Hashed before it is parsed: a file cut short is the same edit as one replaced.
  if (sha256Hex(text) !== m.tokenizer.sha256) {
    throw new BuildError(
      `${path}: its sha256 does not match ${out}/${MANIFEST_FILE}; the directory was edited. ` +
        `Rebuild all splits into a fresh --out`,
    );
  }
  const tok = tokenizerFromJson(text, m.tokenizer.kind, path);
  if (asked !== undefined) {
    // A tokenizer.json path names the same tokenizer when it holds the same one, whatever
    // kind the directory's was built as (a copy of a compact tokenizer, say).
    const same = asked === m.tokenizer.kind ||
      (asked !== "gpt2" && asked !== "compact" &&
        (await tokenizerFromFile(asked)).sha256 === tok.sha256);
    if (!same) {
      throw new BuildError(
        `--tokenizer ${asked} differs from the ${m.tokenizer.kind} tokenizer already in ${out}; ` +
          `a directory has one tokenizer: leave --tokenizer out to reuse it, or use another --out`,
      );
    }
  }
  return tok;
}

/**
 * Makes sure the build's records get ids no other record of the build has, and returns each
 * input file's id name ({@linkcode idLabels}): files sharing a basename are told apart by
 * their paths. The same file given twice, or two splits generating records with the same
 * seed, would repeat records and their ids: a {@linkcode BuildError} says so. (Ids a file
 * carries itself are checked as it is read.)
 */
async function checkUniqueIds(splits: readonly SplitSpec[]): Promise<Map<string, string>> {
  const files = new Map<string, { path: string; split: string }>();
  for (const s of splits) {
    for (const path of s.inputs) {
      let real = path;
      try {
        real = await Deno.realPath(path);
      } catch (e) {
        rethrowIfDenied(e);
      }
      const first = files.get(real);
      if (first !== undefined) {
        const where = first.split === s.name
          ? `both for split ${s.name}`
          : `for splits ${first.split} and ${s.name}`;
        throw new BuildError(
          `${path}: the same file as ${first.path} (${where}); its records would be read twice, ` +
            `with the same ids: give each input file once`,
        );
      }
      files.set(real, { path, split: s.name });
    }
  }
  const generated: { split: string; seed: number; from: number; to: number }[] = [];
  for (const s of splits) {
    if (s.synthetic === undefined) continue;
    const seed = s.synthetic.seed ?? 0, from = s.synthetic.start ?? 1;
    const mine = { split: s.name, seed, from, to: from + s.synthetic.n };
    const first = generated.find((g) => g.seed === seed && rangesOverlap(g, mine));
    if (first !== undefined) {
      throw new BuildError(
        `splits ${first.split} and ${s.name} both generate records ` +
          `${Math.max(first.from, from)} to ${Math.min(first.to, mine.to) - 1} with seed ` +
          `${seed}: the same problems, with the same ids (synthetic:${seed}:<n>); give each ` +
          "split its own seed",
      );
    }
    generated.push(mine);
  }
  return idLabels(splits.flatMap((s) => s.inputs));
}

type Stage = (p: BuildProgress) => void;

/**
 * Segment and validate every problem of a split's source, in order. A record with more steps
 * than `maxCotSteps` is an input error: thrown, or passed to `skip`, before it is validated
 * or tokenized.
 */
async function* validated(
  source: SplitSource,
  o: ResolvedBuildOptions,
  skip: (e: InputError) => void,
) {
  for await (const { path, problem } of source.problems) {
    const segmented = segment(problem, { socratic: o.socratic });
    const tooMany = stepCountError(segmented, o.maxCotSteps);
    if (tooMany !== null) {
      if (o.onError === "throw") throw tooMany;
      skip(tooMany);
      continue;
    }
    yield { path, record: validate(segmented, { cot: o.cot }) };
  }
}

async function fitCompact(
  spec: SplitSpec,
  inputs: { path: string; format: Format }[],
  o: ResolvedBuildOptions,
  total: number | null,
  progress: Stage,
  guard: Guard,
): Promise<Tokenizer> {
  const fitter = new BpeFitter();
  let n = 0;
  const source = await guard.orStop(openSplitSource(inputs, spec, {
    onError: o.onError,
    onSkip: () => {},
    maxFieldBytes: o.maxFieldBytes,
  }));
  for await (const { path, record } of guard.untilStopped(validated(source, o, () => {}))) {
    if (++n % 1000 === 0) {
      progress({ phase: "fit", split: spec.name, file: path, records: n, total });
    }
    if (record.validation.status === "dropped") continue;
    fitter.add(record.question + "\n");
    for (const s of stepTexts(record, o.cot)) fitter.add(s + "\n");
    fitter.add("### " + record.answer);
  }
  return compactTokenizerFromFitter(fitter);
}

/**
 * Why a split kept no record, from its counts: what was read, skipped, dropped (and why) and
 * left out by `--exclude`; when every record was skipped, `firstSkip` names the first and the
 * format it was read as.
 */
function emptySplitMessage(
  split: string,
  c: SplitCounts,
  excluded: number,
  cot: CotForm,
  firstSkip?: { skip: SkippedRecord; format: Format },
): string {
  const reasons = Object.entries(c.droppedByReason).sort((a, b) => b[1] - a[1]).slice(0, 3)
    .map(([r, n]) => `${r} ${n}`).join(", ");
  const out = excluded > 0 ? `, ${excluded} left out as near copies of --exclude questions` : "";
  const why = c.read + c.skipped === 0 && excluded === 0
    ? "its inputs hold no record"
    : `${c.read} records read, ${c.skipped} skipped as unreadable, ${c.dropped} dropped` +
      (reasons ? ` (${reasons})` : "") + out;
  // Prose chains of thought without calculator annotations (GSM8K-Aug's train_no_aug.txt,
  // GSM8K-Aug-NL) drop under the math form and are kept under nl, which the check alone does
  // not tell.
  if (cot === "math" && c.dropped > 0 && c.droppedByReason.no_annotation === c.dropped) {
    return `split ${split} kept no record: ${why}; nothing was written. Every record's chain ` +
      `of thought is prose without <<expr=value>> calculator annotations, which the math CoT ` +
      `form needs: build it with --cot nl (into a new --out, or one whose splits are nl) to ` +
      `supervise the latents with its sentences`;
  }
  // Every record unreadable (--on-error skip): the usual cause is the wrong --format.
  if (c.read === 0 && c.skipped > 0 && firstSkip) {
    const { skip, format } = firstSkip;
    return `split ${split} kept no record: ${why}; nothing was written. The first, read as ` +
      `${format}: ${skip.file}:${skip.line}: ${skip.problem}; check --format (leave it out to ` +
      `detect the format) and the --input files`;
  }
  if (c.read + c.skipped === 0 && excluded > 0) {
    return `split ${split} kept no record: ${why}; nothing was written. Every problem of the ` +
      `split is a near copy of an --exclude question: check that no --exclude file is one of ` +
      `its --input files or a copy of one (--exclude names the evaluation sets to keep out)`;
  }
  return `split ${split} kept no record: ${why}; nothing was written. Check its --input ` +
    `files (docs/pipeline.md, "Checks and reasons", says what each reason means)`;
}

/**
 * Build the given splits into `opts.out`. Existing splits not named are kept; a directory
 * that already has a manifest must have the same K, c and CoT form, and its tokenizer is
 * reused. Nothing appears in `out` until every file is written.
 *
 * While it runs, it listens for SIGINT, SIGTERM and SIGHUP: a signal removes what the build wrote and
 * rejects with a `BuildStopped` (pipeline/writer.ts) that says what `out` holds (a signal while the files
 * are moved into place waits for them, and `out` then holds the new dataset). The process is
 * not ended: that is the caller's choice.
 *
 * @throws {BuildError} for bad options (naming the option, or a key that the options, a split,
 * its `augment` or the hooks do not have), or a directory that does not fit them.
 *
 * @example
 * ```ts ignore
 * import { buildDataset } from "./build.ts";
 * const s = await buildDataset({
 *   out: "out/data/mine",
 *   splits: [{ name: "train", inputs: ["data/train.jsonl"] }],
 *   k: 6, c: 13, cot: "math",
 * });
 * console.log(s.manifest.splits.train.counts);
 * ```
 */
export async function buildDataset(
  opts: BuildOptions,
  hooks: BuildHooks = {},
): Promise<BuildSummary> {
  resolveBuildOptions(opts); // bad options fail before the directory is looked at
  refuseUnknownOptions("buildDataset: hooks", hooks, BUILD_HOOKS, buildError);
  refuseMistyped(
    "buildDataset: hooks",
    hooks,
    { onProgress: "function", onCommitStep: "function", signal: "AbortSignal" },
    buildError,
  );
  const old = await existingManifest(opts.out);
  // K, c and the CoT form left out follow the directory being extended.
  const o = resolveBuildOptions({
    ...opts,
    k: opts.k ?? old?.options.k,
    c: opts.c ?? old?.options.c,
    cot: opts.cot ?? old?.options.cot,
  });
  const packOpts = { k: o.k, c: o.c, cot: o.cot, longStep: o.longStep };
  checkPackOptions(packOpts);
  const progress: Stage = hooks.onProgress ?? (() => {});

  if (old) {
    const mismatch = (["k", "c", "cot"] as const).filter((f) => old.options[f] !== o[f]);
    if (mismatch.length > 0) {
      const what = mismatch.map((f) => `${f} = ${old.options[f]} there, ${o[f]} here`).join("; ");
      throw new BuildError(
        `${o.out} already holds splits built with other options (${what}); every split of a ` +
          `directory shares K, c and the CoT form: pass the same values or use another --out`,
      );
    }
  } else await checkFreshOut(o.out);

  // From here on SIGINT, SIGTERM and SIGHUP remove what the build wrote and stop it with a
  // BuildStopped (StagedDir), seen between records.
  const staged = await StagedDir.open(o.out);
  // An abort stops the build as SIGTERM does.
  const stopOnAbort = () => staged.stop("SIGTERM");
  if (hooks.signal?.aborted) stopOnAbort();
  else hooks.signal?.addEventListener("abort", stopOnAbort, { once: true });
  const guard: Guard = staged;
  let writer: SplitWriter | undefined;
  try {
    // Formats are detected once per file, before anything is written.
    const inputsBySplit = new Map<string, { path: string; format: Format; idLabel?: string }[]>();
    for (const s of o.splits) {
      const list = [];
      for (const path of s.exclude ?? []) {
        let info: Deno.FileInfo;
        try {
          info = await Deno.stat(path);
        } catch (e) {
          rethrowIfDenied(e);
          throw new BuildError(`${path}: file of questions to exclude not found; check --exclude`);
        }
        // Refused here, with openInput's own advice (to save a pipe to a file): the exclude
        // reader's errors say to give a file of questions, which a FIFO's path already is.
        if (!info.isFile && !info.isDirectory) throw notRegularFile(path);
      }
      for (const path of s.inputs) {
        try {
          await Deno.stat(path);
        } catch (e) {
          rethrowIfDenied(e);
          throw new BuildError(`${path}: input file not found; check --input`);
        }
        const format = o.format === "auto"
          ? await staged.orStop(detectFormat(path))
          : (o.format as Format);
        list.push({ path, format });
      }
      inputsBySplit.set(s.name, list);
    }
    const labels = await checkUniqueIds(o.splits);
    const sums = old ? await checkAgainstKept(o.out, old, o.splits, guard) : new Map();
    for (const list of inputsBySplit.values()) {
      for (const input of list) input.idLabel = labels.get(input.path);
    }
    const totals = new Map<string, number | null>();
    if (hooks.onProgress) {
      for (const s of o.splits) {
        totals.set(
          s.name,
          estimateWithExtras(await estimateRecords(inputsBySplit.get(s.name)!, guard), s),
        );
      }
    }

    let tok: Tokenizer;
    const reused = old !== null;
    if (old) tok = await reuseTokenizer(o.out, old, o.tokenizer);
    else if (o.tokenizer === undefined || o.tokenizer === "gpt2") tok = await gpt2Tokenizer();
    else if (o.tokenizer === "compact") {
      const first = o.splits[0];
      tok = await fitCompact(
        first,
        inputsBySplit.get(first.name)!,
        o,
        totals.get(first.name) ?? null,
        progress,
        guard,
      );
    } else tok = await tokenizerFromFile(o.tokenizer);

    const files: string[] = [];
    const splits: Record<string, SplitInfo> = { ...(old?.splits ?? {}) };
    const listed: SkippedRecord[] = [];
    for (const spec of o.splits) {
      const inputs = inputsBySplit.get(spec.name)!;
      const total = totals.get(spec.name) ?? null;
      staged.throwIfStopped();
      writer = await SplitWriter.open(staged.path, spec.name, {
        k: o.k,
        c: o.c,
        pad: tok.special.pad,
        cot: o.cot,
        shardSize: o.shardSize,
        longStep: o.longStep,
      });
      let skipped = 0;
      let n = 0;
      let lastFile = "";
      // Skips arrive from the reader between records; their report rows are written in
      // input order, before the next record's.
      const pending: InputError[] = [];
      const onSkip = (e: InputError) => pending.push(e);
      const writeSkips = async (w: SplitWriter) => {
        for (const e of pending.splice(0)) {
          const id = `${labels.get(e.file) ?? basename(e.file)}:${e.line}`;
          await w.skip({ id, file: e.file, line: e.line, reason: e.reason, error: e.problem });
          if (skipped++ < SKIPPED_LISTED) {
            listed.push({
              split: spec.name,
              file: e.file,
              line: e.line,
              reason: e.reason,
              problem: e.problem,
            });
          }
        }
      };
      const source = await guard.orStop(openSplitSource(inputs, spec, {
        onError: o.onError,
        onSkip,
        maxFieldBytes: o.maxFieldBytes,
      }));
      const lengths = { math: new StepLengths(), nl: new StepLengths() };
      for await (const { path, record } of guard.untilStopped(validated(source, o, onSkip))) {
        await writeSkips(writer);
        const outcome = packRecord(record, tok, packOpts);
        if (outcome.packed) {
          // Both forms' step lengths, whichever is built: the report's basis for choosing c.
          for (const s of outcome.packed.steps) lengths[o.cot].add(s.length);
          const other = o.cot === "math" ? "nl" : "math";
          for (const s of stepTexts(record, other)) lengths[other].add(tok.encode(s + "\n").length);
        }
        await writer.add(record, outcome);
        staged.throwIfStopped();
        lastFile = path;
        if (++n % 1000 === 0) {
          progress({ phase: "build", split: spec.name, file: path, records: n, total });
        }
      }
      await writeSkips(writer);
      progress({ phase: "build", split: spec.name, file: lastFile, records: n, total: total ?? n });
      const result = await writer.finish(skipped);
      writer = undefined;
      if (result.counts.kept === 0) {
        const excluded = source.info().exclude?.dropped ?? 0;
        const skip = listed.find((x) => x.split === spec.name);
        const format = inputs.find((i) => i.path === skip?.file)?.format;
        throw new BuildError(
          emptySplitMessage(
            spec.name,
            result.counts,
            excluded,
            o.cot,
            skip && format ? { skip, format } : undefined,
          ),
        );
      }
      const sources = [];
      for (const { path, format } of inputs) {
        sources.push({ path, format, ...(sums.get(path) ?? await fileSha256(path, guard)) });
      }
      const extras = source.info();
      if (extras.exclude) {
        const sums = [];
        for (const f of extras.exclude.files) {
          // A dataset directory is pinned by its manifest, which holds its files' sha256s.
          const file = (await isDirectory(f)) ? `${f}/${MANIFEST_FILE}` : f;
          sums.push((await fileSha256(file, guard)).sha256);
        }
        extras.exclude = { ...extras.exclude, sha256: sums };
      }
      splits[spec.name] = {
        sources,
        options: {
          format: o.format,
          socratic: o.socratic,
          longStep: o.longStep,
          onError: o.onError,
          shardSize: o.shardSize,
        },
        ...result,
        stepLengths: { math: lengths.math.stats(o.c), nl: lengths.nl.stats(o.c) },
        ...extras,
      };
      files.push(...SplitWriter.files(result));
    }
    staged.throwIfStopped();
    if (!reused) {
      // After the splits' files: a first build killed in its commit leaves tokenizer.json
      // only beside them, which is how the next build knows it (isBuildLeftover).
      await Deno.writeTextFile(`${staged.path}/tokenizer.json`, tok.toJSON());
      files.push("tokenizer.json");
    }
    const manifest: Manifest = {
      format: "lotus-dataset",
      version: MANIFEST_VERSION,
      options: { k: o.k, c: o.c, cot: o.cot },
      tokenizer: {
        kind: tok.kind,
        file: "tokenizer.json",
        sha256: tok.sha256,
        vocabSize: tok.vocabSize,
        special: { ...tok.special },
      },
      splits,
    };
    await Deno.writeTextFile(`${staged.path}/${MANIFEST_FILE}`, manifestText(manifest));
    files.push(MANIFEST_FILE);
    // The files have names of their own content, the manifest goes last: until its rename
    // the old dataset is intact, after it the new one is complete. Files no manifest names
    // (the replaced splits', and those of builds killed before their manifest) go last.
    // Only files a build of this dataset wrote are removed: those the old manifest names and
    // those with a build's names.
    const previous = old ? manifestFiles(old) : [];
    await staged.commit(files, manifestFiles(manifest), hooks.onCommitStep, previous);
    return {
      out: o.out,
      manifest,
      built: o.splits.map((s) => s.name),
      reusedTokenizer: reused,
      skipped: listed,
    };
  } catch (e) {
    writer?.abort();
    await staged.abort();
    // A stop signal's removal of the staging directory can fail the write in progress.
    throw staged.stopped ?? e;
  } finally {
    hooks.signal?.removeEventListener("abort", stopOnAbort);
  }
}

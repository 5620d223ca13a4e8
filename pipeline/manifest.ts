/**
 * `manifest.json`, the index of a dataset directory (docs/dataset-format.md): the options,
 * the tokenizer's hash and special ids, and per split the sources, counts, histograms and
 * every shard's tensors. The trainer reads a directory through {@linkcode readManifest}.
 *
 * @module
 */

import { z } from "zod";
import { exists, rethrowIfDenied } from "../base/exists.ts";
import { fieldIssue, jsonErrorText } from "../base/json.ts";
import type { StepLengthStats } from "./step_lengths.ts";

/** The manifest format version this module writes and reads. */
export const MANIFEST_VERSION = 1 as const;

/** One tensor of a shard. */
export interface TensorInfo {
  /** Tensor name (docs/dataset-format.md). */
  name: string;
  /** Dimensions. */
  shape: number[];
  /** Element type; the pipeline writes I32. */
  dtype: "I32" | "I64" | "F32" | "F16" | "BF16" | "U8";
}

/** One safetensors shard of a split. */
export interface ShardInfo {
  /** File name inside the directory, `<split>-<build id>-NNNNN.safetensors`. */
  file: string;
  /** Records in the shard (N). */
  records: number;
  /** Hex sha256 of the file. */
  sha256: string;
  /** Every tensor, in file order. */
  tensors: TensorInfo[];
}

/** How many records went where. */
export interface SplitCounts {
  /** Records read (the lines of records.jsonl). */
  read: number;
  /** Input records the reader skipped as unreadable (--on-error skip); not in records.jsonl. */
  skipped: number;
  /** Records packed into shards (ok + flagged). */
  kept: number;
  /** Kept records with no reason. */
  ok: number;
  /** Kept records with reasons. */
  flagged: number;
  /** Records not packed. */
  dropped: number;
  /**
   * Per reason code: dropped records it dropped (a reason that only flags under the build's CoT
   * form is not counted for a record that another reason dropped).
   */
  droppedByReason: Record<string, number>;
  /** Per reason code: flagged (kept) records that carry it. */
  flaggedByReason: Record<string, number>;
}

/** Token counts over the kept records (sums, and maxima where named `max`). */
export interface TokenCounts {
  /** Question tokens. */
  question: number;
  /** Step tokens (the chosen CoT form). */
  steps: number;
  /** Answer tokens, `###` and EOS included. */
  answer: number;
  /** `lotus` layout tokens. */
  lotus: number;
  /** `cot` layout tokens. */
  cot: number;
  /** `nocot` layout tokens. */
  nocot: number;
  /** Longest `lotus` row. */
  maxLotus: number;
  /** Longest `cot` row. */
  maxCot: number;
  /** Longest `nocot` row. */
  maxNocot: number;
  /** Longest step. */
  maxStep: number;
  /** Steps among the first K longer than c tokens (truncated, or spilled under `spill`). */
  truncatedSteps: number;
}

/** One input file of a split. */
export interface SourceInfo {
  /** The path as given. */
  path: string;
  /** The format it was read as. */
  format: string;
  /** Its size. */
  bytes: number;
  /** Hex sha256 of its bytes. */
  sha256: string;
}

/** The generated records of a split (`--synthetic`): the generator's options and a hash. */
export interface SyntheticInfo {
  /** Records generated. */
  n: number;
  /** The number of the first (absent in directories built before it was recorded: 1). */
  start?: number;
  /** Seed. */
  seed: number;
  /** Fewest calculator steps. */
  minSteps: number;
  /** Most calculator steps. */
  maxSteps: number;
  /** Cap on every value. */
  maxValue: number;
  /** Most digits of a drawn operand. */
  digits: number;
  /** Template families drawn from. */
  families: string[];
  /** Hex sha256 of the generated problems (id, question, rationale, answer of each, in order). */
  sha256: string;
}

/** Augmentation of a split's input problems (`--augment`): the options and the outcome. */
export interface AugmentInfo {
  /** Variants asked per problem. */
  variants: number;
  /** Seed of the draws. */
  seed: number;
  /** Input problems seen. */
  problems: number;
  /** Problems with at least one variant. */
  augmented: number;
  /** augmented / problems. */
  share: number;
  /** Variants added to the split. */
  made: number;
  /** Problems not augmented, by reason code (pipeline/augment.ts). */
  reasons: Record<string, number>;
}

/** Decontamination of a split (`--exclude`): the files whose questions were kept out. */
export interface ExcludeInfo {
  /** Files whose questions were indexed. */
  files: string[];
  /**
   * Hex sha256 of each file, in the order of `files` (of its manifest.json for a dataset
   * directory): which evaluation set was kept out (absent in datasets built before it was
   * recorded).
   */
  sha256?: string[];
  /** Questions indexed. */
  questions: number;
  /** Containment at or above which a question counted as a near copy. */
  threshold: number;
  /** Input problems dropped as near copies (their variants were not made). */
  dropped: number;
}

/** One split of the directory. */
export interface SplitInfo {
  /** Input files, in the order read. */
  sources: SourceInfo[];
  /** The options of this split's build. */
  options: {
    format: string;
    socratic: "strip" | "keep";
    longStep: "truncate" | "drop" | "spill";
    onError: "throw" | "skip";
    shardSize: number;
  };
  /** Record counts. */
  counts: SplitCounts;
  /** Kept records by step count (chosen CoT form); keys are step counts. */
  stepHistogram: Record<string, number>;
  /**
   * Step lengths in tokens of the kept records, under the dataset's tokenizer, in both CoT
   * forms whichever was built (pipeline/step_lengths.ts); `overC` counts against the build's
   * c. Absent in datasets built before it was recorded.
   */
  stepLengths?: { math: StepLengthStats; nl: StepLengthStats };
  /** Token counts. */
  tokens: TokenCounts;
  /** `<split>-<build id>.records.jsonl`. */
  records: string;
  /** `<split>-<build id>.report.csv`. */
  report: string;
  /** Hex sha256 of the records file (absent in directories built before it was recorded). */
  recordsSha256?: string;
  /** Hex sha256 of the report file (absent in directories built before it was recorded). */
  reportSha256?: string;
  /** The shards, in record order. */
  shards: ShardInfo[];
  /** Generated records added after the inputs, when the split has any. */
  synthetic?: SyntheticInfo;
  /** Augmentation of the input problems, when asked. */
  augment?: AugmentInfo;
  /** Decontamination, when asked. */
  exclude?: ExcludeInfo;
}

/** Default records per shard: a split's `options.shardSize` unless its build said otherwise. */
export const DEFAULT_SHARD_SIZE = 16384;

/** The whole manifest. */
export interface Manifest {
  /** Always `lotus-dataset`. */
  format: "lotus-dataset";
  /** {@linkcode MANIFEST_VERSION}. */
  version: 1;
  /** Options that every split of the directory shares. */
  options: { k: number; c: number; cot: "math" | "nl" };
  /** The directory's tokenizer. */
  tokenizer: {
    kind: "gpt2" | "compact" | "file";
    /** `tokenizer.json`. */
    file: string;
    /** Hex sha256 of the tokenizer.json text. */
    sha256: string;
    /** Number of ids, LOTUS tokens included. */
    vocabSize: number;
    /** EOS = PAD, BOT, EOT, LAT. */
    special: { eos: number; pad: number; bot: number; eot: number; lat: number };
  };
  /** Splits by name. */
  splits: Record<string, SplitInfo>;
}

/**
 * A validator for unknown input: the part of a zod schema this project's API exposes, so
 * that callers need not depend on zod's types.
 */
export interface Schema<T> {
  /** Validate, throwing zod's error on failure. */
  parse(data: unknown): T;
  /** Validate without throwing. */
  safeParse(data: unknown): SchemaResult<T>;
}

/** What {@linkcode Schema.safeParse} returns. */
export type SchemaResult<T> =
  | { success: true; data: T }
  | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };

const count = z.number().int().nonnegative();
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, "must be a hex sha256");
const fileName = z.string().regex(
  /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/,
  "must be a plain file name in the directory",
);

/** A split name: letters, digits, `_`, `.` and `-`, not starting with `.` or `-`. */
export const SPLIT_NAME: RegExp = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** The message for a bad split name. */
export const SPLIT_NAME_RULE =
  "a split name uses letters, digits, _ . - and does not start with . or -";

/**
 * The longest split name a build takes: it begins the names of the split's files
 * (`<split>-<hash>-00000.safetensors`), which file systems cap at 255 bytes.
 */
export const MAX_SPLIT_NAME = 100;

/** The message for a split name over {@linkcode MAX_SPLIT_NAME} characters. */
export const SPLIT_NAME_LENGTH_RULE =
  `a split name has at most ${MAX_SPLIT_NAME} characters (it begins its files' names)`;

const splitName = z.string().regex(SPLIT_NAME, SPLIT_NAME_RULE);

const ShardInfoSchema = z.object({
  file: fileName,
  records: count,
  sha256,
  tensors: z.array(z.object({
    name: z.string(),
    shape: z.array(count),
    dtype: z.enum(["I32", "I64", "F32", "F16", "BF16", "U8"]),
  })),
});

const StepLengthStatsSchema = z.object({
  steps: count,
  p50: count,
  p90: count,
  p99: count,
  max: count,
  overC: count,
  suggestedC: count,
});

const SplitInfoSchema = z.object({
  sources: z.array(z.object({ path: z.string(), format: z.string(), bytes: count, sha256 })),
  options: z.object({
    format: z.string(),
    socratic: z.enum(["strip", "keep"]),
    longStep: z.enum(["truncate", "drop", "spill"]),
    onError: z.enum(["throw", "skip"]),
    shardSize: count,
  }),
  counts: z.object({
    read: count,
    skipped: count,
    kept: count,
    ok: count,
    flagged: count,
    dropped: count,
    droppedByReason: z.record(z.string(), count),
    flaggedByReason: z.record(z.string(), count),
  }),
  stepHistogram: z.record(z.string(), count),
  stepLengths: z.object({ math: StepLengthStatsSchema, nl: StepLengthStatsSchema }).optional(),
  tokens: z.object({
    question: count,
    steps: count,
    answer: count,
    lotus: count,
    cot: count,
    nocot: count,
    maxLotus: count,
    maxCot: count,
    maxNocot: count,
    maxStep: count,
    truncatedSteps: count,
  }),
  records: fileName,
  report: fileName,
  recordsSha256: sha256.optional(),
  reportSha256: sha256.optional(),
  shards: z.array(ShardInfoSchema),
  synthetic: z.object({
    n: count,
    start: count.optional(),
    seed: count,
    minSteps: count,
    maxSteps: count,
    maxValue: count,
    digits: count,
    families: z.array(z.string()),
    sha256,
  }).optional(),
  augment: z.object({
    variants: count,
    seed: count,
    problems: count,
    augmented: count,
    share: z.number().min(0).max(1),
    made: count,
    reasons: z.record(z.string(), count),
  }).optional(),
  exclude: z.object({
    files: z.array(z.string()),
    sha256: z.array(z.string()).optional(),
    questions: count,
    threshold: z.number().min(0).max(1),
    dropped: count,
  }).optional(),
});

/** The zod schema of {@linkcode Manifest}; parsing rebuilds objects in schema key order. */
export const ManifestSchema: Schema<Manifest> = z.object({
  format: z.literal("lotus-dataset"),
  version: z.literal(MANIFEST_VERSION),
  options: z.object({
    k: count,
    c: count.min(1),
    cot: z.enum(["math", "nl"]),
  }),
  tokenizer: z.object({
    kind: z.enum(["gpt2", "compact", "file"]),
    file: fileName,
    sha256,
    vocabSize: count,
    special: z.object({ eos: count, pad: count, bot: count, eot: count, lat: count }),
  }),
  splits: z.record(splitName, SplitInfoSchema),
});

/** Raised for a missing, unreadable or invalid manifest; names the file and the field. */
export class ManifestError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "ManifestError";
  }
}

/** Manifest file name inside a dataset directory. */
export const MANIFEST_FILE = "manifest.json";

/**
 * The manifest's text: 2-space JSON with keys in schema order, splits in name order and a
 * final newline, so the same content always gives the same bytes however it was assembled.
 */
export function manifestText(m: Manifest): string {
  const canon = ManifestSchema.parse(m); // zod rebuilds objects in schema key order
  const splits: Record<string, SplitInfo> = {};
  for (const name of Object.keys(canon.splits).sort()) splits[name] = canon.splits[name];
  return JSON.stringify({ ...canon, splits }, null, 2) + "\n";
}

/**
 * Parse and validate manifest text. `what` names the file in errors.
 */
export function parseManifest(text: string, what = MANIFEST_FILE): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ManifestError(
      `${what}: not valid JSON (${jsonErrorText(e)}); rebuild the dataset`,
    );
  }
  const version = (raw as { version?: unknown } | null)?.version;
  if (typeof version === "number" && version !== MANIFEST_VERSION) {
    throw new ManifestError(
      `${what}: field "version" is ${version}, this lotus-deno reads version ` +
        `${MANIFEST_VERSION}; rebuild the dataset with this version`,
    );
  }
  const res = ManifestSchema.safeParse(raw);
  if (!res.success) {
    throw new ManifestError(
      `${what}: ${fieldIssue(res.error)}; ` +
        `the directory was not written by deno task build-dataset, or was edited; rebuild it`,
    );
  }
  return res.data;
}

/**
 * Every file a manifest names, the manifest itself excluded: the tokenizer, then per split
 * (in name order) its records, its report and its shards. A dataset directory is exactly
 * these files and manifest.json; nothing else in it is read.
 */
export function manifestFiles(m: Manifest): string[] {
  const files = [m.tokenizer.file];
  for (const name of Object.keys(m.splits).sort()) {
    const s = m.splits[name];
    files.push(s.records, s.report, ...s.shards.map((x) => x.file));
  }
  return files;
}

/**
 * What `dir` is when it holds a training run's, a checkpoint's, an export's or a model's files
 * (given where a dataset is wanted), with where its dataset is named; else null.
 */
async function trainingOutput(dir: string): Promise<string | null> {
  const trainedOn = "give the dataset it was trained on";
  const trained = `${trainedOn} (the checkpoint's config.json names it, at lotus.data.dir)`;
  if (await exists(`${dir}/lotus.json`)) return `an export: ${trainedOn}`;
  if (await exists(`${dir}/config.json`)) {
    let lotus = false;
    try {
      lotus = JSON.parse(await Deno.readTextFile(`${dir}/config.json`))?.lotus !== undefined;
    } catch (e) {
      rethrowIfDenied(e);
    }
    return lotus ? `a checkpoint: ${trained}` : "a model directory: give a dataset directory";
  }
  for (const f of ["checkpoint", "plan.json", "log.jsonl"]) {
    if (await exists(`${dir}/${f}`)) return `a training run: ${trained}`;
  }
  return null;
}

/**
 * Read and validate `<dir>/manifest.json`, and check that every file it names exists.
 *
 * @example
 * ```ts ignore
 * import { readManifest } from "./manifest.ts";
 * const m = await readManifest("out/data/default");
 * console.log(m.options.k, Object.keys(m.splits));
 * ```
 */
export async function readManifest(dir: string): Promise<Manifest> {
  const path = `${dir}/${MANIFEST_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    rethrowIfDenied(e);
    if (e instanceof Deno.errors.NotADirectory) {
      throw new ManifestError(
        `${dir} is a file, not a dataset directory: give the directory deno task ` +
          `build-dataset wrote (${MANIFEST_FILE}, its shards and tokenizer.json)`,
      );
    }
    if (e instanceof Deno.errors.NotFound) {
      const kind = await trainingOutput(dir);
      throw new ManifestError(
        kind
          ? `${dir} is not a dataset directory (no ${MANIFEST_FILE}) but ${kind}`
          : `${path}: not found; build the dataset first (deno task build-dataset --out ${dir})`,
      );
    }
    throw new ManifestError(`${path}: cannot read (${(e as Error).message})`);
  }
  const m = parseManifest(text, path);
  for (const f of manifestFiles(m)) {
    try {
      await Deno.stat(`${dir}/${f}`);
    } catch (e) {
      rethrowIfDenied(e);
      throw new ManifestError(
        `${path}: lists ${f}, which is missing from ${dir}; rebuild the dataset`,
      );
    }
  }
  return m;
}

/**
 * `manifest.json`, the index of a dataset directory (docs/dataset-format.md): the options,
 * the tokenizer's hash and special ids, and per split the sources, counts, histograms and
 * every shard's tensors. The trainer reads a directory through {@linkcode readManifest}.
 *
 * @module
 */

import { z } from "zod";

/** The manifest format version this module writes and reads. */
export const MANIFEST_VERSION = 1;

const count = z.number().int().nonnegative();
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, "must be a hex sha256");
const fileName = z.string().regex(
  /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/,
  "must be a plain file name in the directory",
);

/** A split name: letters, digits, `_`, `.` and `-`, not starting with `.` or `-`. */
export const SplitNameSchema = z.string().regex(
  /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/,
  "a split name uses letters, digits, _ . - and does not start with . or -",
);

/** One tensor of a shard. */
export const TensorInfoSchema = z.object({
  name: z.string(),
  shape: z.array(count),
  dtype: z.enum(["I32", "I64", "F32", "F16", "BF16", "U8"]),
});

/** One safetensors shard of a split. */
export const ShardInfoSchema = z.object({
  file: fileName,
  records: count,
  sha256,
  tensors: z.array(TensorInfoSchema),
});

/** How many records went where. */
export const SplitCountsSchema = z.object({
  /** Records read (the lines of records.jsonl). */
  read: count,
  /** Input records the reader skipped as unreadable (--on-error skip); not in records.jsonl. */
  skipped: count,
  /** Records packed into shards (ok + flagged). */
  kept: count,
  ok: count,
  flagged: count,
  dropped: count,
  /** Per reason code: dropped records that carry it. */
  droppedByReason: z.record(z.string(), count),
  /** Per reason code: flagged (kept) records that carry it. */
  flaggedByReason: z.record(z.string(), count),
});

/** Token counts over the kept records. */
export const TokenCountsSchema = z.object({
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
  /** Steps among the first K longer than c tokens (truncated as targets). */
  truncatedSteps: count,
});

/** One split of the directory. */
export const SplitInfoSchema = z.object({
  /** Input files as given, with the format they were read as. */
  sources: z.array(z.object({ path: z.string(), format: z.string(), bytes: count, sha256 })),
  options: z.object({
    format: z.string(),
    socratic: z.enum(["strip", "keep"]),
    longStep: z.enum(["truncate", "drop"]),
    onError: z.enum(["throw", "skip"]),
    shardSize: count,
  }),
  counts: SplitCountsSchema,
  /** Kept records by step count (chosen CoT form); keys are step counts. */
  stepHistogram: z.record(z.string(), count),
  tokens: TokenCountsSchema,
  records: fileName,
  report: fileName,
  shards: z.array(ShardInfoSchema),
});

/** The whole manifest. */
export const ManifestSchema = z.object({
  format: z.literal("lotus-dataset"),
  version: z.literal(MANIFEST_VERSION),
  /** Options that every split of the directory shares. */
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
  splits: z.record(SplitNameSchema, SplitInfoSchema),
});

/** A validated manifest. */
export type Manifest = z.infer<typeof ManifestSchema>;
/** One split's entry. */
export type SplitInfo = z.infer<typeof SplitInfoSchema>;
/** One shard's entry. */
export type ShardInfo = z.infer<typeof ShardInfoSchema>;

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
      `${what}: not valid JSON (${(e as Error).message}); rebuild the dataset`,
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
    const issue = res.error.issues[0];
    throw new ManifestError(
      `${what}: field "${issue.path.join(".")}": ${issue.message}; ` +
        `the directory was not written by deno task build-dataset, or was edited; rebuild it`,
    );
  }
  return res.data;
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
    if (e instanceof Deno.errors.NotFound) {
      throw new ManifestError(
        `${path}: not found; build the dataset first (deno task build-dataset --out ${dir})`,
      );
    }
    throw new ManifestError(`${path}: cannot read (${(e as Error).message})`);
  }
  const m = parseManifest(text, path);
  const files = [m.tokenizer.file];
  for (const s of Object.values(m.splits)) {
    files.push(
      s.records,
      s.report,
      ...s.shards.map((x) => x.file),
    );
  }
  for (const f of files) {
    try {
      await Deno.stat(`${dir}/${f}`);
    } catch {
      throw new ManifestError(
        `${path}: lists ${f}, which is missing from ${dir}; rebuild the dataset`,
      );
    }
  }
  return m;
}

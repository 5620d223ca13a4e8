/**
 * Writing a dataset directory (docs/dataset-format.md).
 *
 * {@linkcode StagedDir} keeps `--out` free of half-written files: everything is written into
 * `<out>/.staging-<pid>` and renamed into place at the end, the manifest last; the staging
 * directory is removed on error and on SIGINT/SIGTERM. A signal that arrives while the files
 * are being moved into place waits until they all are, so an interrupted build leaves either
 * the previous output or the complete new one, never a mix.
 *
 * {@linkcode SplitWriter} streams one split: each record's line goes to records.jsonl and
 * report.csv as it arrives, kept records gather into a shard that is written when it fills,
 * and only counts stay in memory.
 *
 * @module
 */

import { Sha256 } from "../base/sha256.ts";
import { stringify } from "csv-stringify/sync";
import { encodeSafetensors } from "../base/safetensors.ts";
import type { PackOutcome } from "./pack.ts";
import { type ShardRow, shardTensors } from "./shard.ts";
import type { ShardInfo, SplitInfo } from "./manifest.ts";
import type { ValidatedRecord } from "./types.ts";
import { exists } from "../base/exists.ts";

/** Raised when the output directory cannot be written. */
export class WriteError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "WriteError";
  }
}

const active = new Set<StagedDir>();
const SIGNALS: { sig: Deno.Signal; code: number }[] = [
  { sig: "SIGINT", code: 130 },
  { sig: "SIGTERM", code: 143 },
];
const handlers = new Map<Deno.Signal, () => void>();
/** Commits in progress, and the exit code of a signal that arrived during one. */
let committing = 0;
let pendingExit: number | null = null;

function onSignal(code: number): void {
  if (committing > 0) {
    pendingExit ??= code;
    return;
  }
  for (const s of active) s.removeSync();
  Deno.exit(code);
}

function listen(): void {
  if (handlers.size > 0 || Deno.build.os === "windows") return;
  for (const { sig, code } of SIGNALS) {
    const h = () => onSignal(code);
    Deno.addSignalListener(sig, h);
    handlers.set(sig, h);
  }
}

function unlisten(): void {
  if (active.size > 0) return;
  for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  handlers.clear();
}

/**
 * A staging directory inside an output directory. Files are written under
 * {@linkcode StagedDir.path} and moved into the output by {@linkcode StagedDir.commit}.
 *
 * While one is open, SIGINT and SIGTERM remove it and exit (130 and 143).
 */
export class StagedDir {
  /** The output directory. */
  readonly out: string;
  /** The staging directory, `<out>/.staging-<pid>`. */
  readonly path: string;
  #open = true;
  readonly #createdOut: boolean;

  private constructor(out: string, path: string, createdOut: boolean) {
    this.out = out;
    this.path = path;
    this.#createdOut = createdOut;
  }

  /** Create `out` (if needed) and a fresh staging directory inside it. */
  static async open(out: string): Promise<StagedDir> {
    const path = `${out}/.staging-${Deno.pid}`;
    const s = new StagedDir(out, path, !(await exists(out)));
    // Listen before anything is created, so that no signal can leave a staging directory
    // behind (removeSync tolerates one that does not exist yet).
    active.add(s);
    listen();
    try {
      await Deno.mkdir(out, { recursive: true });
      await Deno.remove(path, { recursive: true }).catch(() => {});
      await Deno.mkdir(path);
    } catch (e) {
      s.#close();
      throw new WriteError(`${out}: cannot create the output directory (${(e as Error).message})`);
    }
    return s;
  }

  /**
   * Move `files` (names inside the staging directory) into the output directory in the
   * given order, then delete `stale` files from the output, then remove the staging
   * directory. Put the manifest last in `files`.
   */
  async commit(files: string[], stale: string[] = []): Promise<void> {
    committing++; // a signal from here on waits for the last rename
    try {
      for (const f of files) await Deno.rename(`${this.path}/${f}`, `${this.out}/${f}`);
      for (const f of stale) {
        if (!files.includes(f)) await Deno.remove(`${this.out}/${f}`).catch(() => {});
      }
      await Deno.remove(this.path, { recursive: true }).catch(() => {});
    } finally {
      committing--;
      this.#close();
      if (pendingExit !== null && committing === 0) onSignal(pendingExit);
    }
  }

  /**
   * Remove the staging directory and everything in it, and the output directory too if
   * this build created it and it is empty.
   */
  async abort(): Promise<void> {
    if (!this.#open) return;
    await Deno.remove(this.path, { recursive: true }).catch(() => {});
    // Without recursive, remove fails on a non-empty directory, which is what we want.
    if (this.#createdOut) await Deno.remove(this.out).catch(() => {});
    this.#close();
  }

  #close(): void {
    this.#open = false;
    active.delete(this);
    unlisten();
  }

  /** Synchronous twin of {@linkcode StagedDir.abort}, for signal handlers. */
  removeSync(): void {
    try {
      Deno.removeSync(this.path, { recursive: true });
    } catch { /* not created yet, or already gone */ }
    try {
      if (this.#createdOut) Deno.removeSync(this.out);
    } catch { /* not created yet, or not empty */ }
  }
}

/** A file written in large appends through an in-memory buffer. */
class BufferedFile {
  #file: Deno.FsFile;
  #parts: string[] = [];
  #size = 0;
  static readonly FLUSH = 1 << 20;
  readonly #enc = new TextEncoder();

  constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  async write(s: string): Promise<void> {
    this.#parts.push(s);
    this.#size += s.length;
    if (this.#size >= BufferedFile.FLUSH) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#parts.length === 0) return;
    const bytes = this.#enc.encode(this.#parts.join(""));
    this.#parts = [];
    this.#size = 0;
    let off = 0;
    while (off < bytes.length) off += await this.#file.write(bytes.subarray(off));
  }

  async close(): Promise<void> {
    await this.flush();
    this.#file.close();
  }

  closeQuietly(): void {
    try {
      this.#file.close();
    } catch { /* already closed */ }
  }
}

/** Options of a {@linkcode SplitWriter}. */
export interface SplitWriterOptions {
  /** Latent blocks K. */
  k: number;
  /** Slots per block c. */
  c: number;
  /** PAD id. */
  pad: number;
  /** Records per shard (default 16,384). */
  shardSize?: number;
  /** Which step form the tokens came from (for the step histogram). */
  cot: "math" | "nl";
}

/** The file and count parts of a split's manifest entry, as a {@linkcode SplitWriter} saw them. */
export type SplitResult = Pick<
  SplitInfo,
  "counts" | "stepHistogram" | "tokens" | "records" | "report" | "shards"
>;

/** Header of `<split>.report.csv`. */
export const REPORT_COLUMNS = [
  "index",
  "id",
  "file",
  "line",
  "status",
  "reasons",
  "math_steps",
  "nl_steps",
  "question_tokens",
  "step_tokens",
  "answer_tokens",
  "lotus_length",
  "cot_length",
  "nocot_length",
  "truncated_steps",
  "error",
] as const;

/**
 * The report row of an input record the build could not use and skipped (`--on-error skip`):
 * it has no records.jsonl line, so its `index` and count columns are empty.
 */
export interface SkippedRow {
  /** `<file basename>:<line>`, the id the record would have had. */
  id: string;
  /** The input file, as given. */
  file: string;
  /** 1-based line (row, element) of the record. */
  line: number;
  /** Why: `malformed`, `invalid_utf8` or `too_large`; the row's `reasons` column. */
  reason: string;
  /** What is wrong, for the `error` column. */
  error: string;
}

/** Default records per shard. */
export const DEFAULT_SHARD_SIZE = 16384;

function sortedCounts(m: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of [...m.keys()].sort()) out[k] = m.get(k)!;
  return out;
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/**
 * Streams one split into a staging directory: `<split>.records.jsonl`,
 * `<split>.report.csv` and `<split>-NNNNN.safetensors`.
 *
 * @example
 * ```ts ignore
 * const w = await SplitWriter.open(staged.path, "train", { k: 6, c: 13, pad: 50256, cot: "math" });
 * for (const rec of records) await w.add(rec, packRecord(rec, tok, packOpts));
 * const result = await w.finish(skipped);
 * ```
 */
export class SplitWriter {
  readonly #dir: string;
  readonly #split: string;
  readonly #opts: Required<SplitWriterOptions>;
  readonly #records: BufferedFile;
  readonly #report: BufferedFile;
  #rows: ShardRow[] = [];
  #shards: ShardInfo[] = [];
  #index = 0;
  #counts = { read: 0, kept: 0, ok: 0, flagged: 0, dropped: 0 };
  #dropped = new Map<string, number>();
  #flagged = new Map<string, number>();
  #hist = new Map<number, number>();
  #tokens = {
    question: 0,
    steps: 0,
    answer: 0,
    lotus: 0,
    cot: 0,
    nocot: 0,
    maxLotus: 0,
    maxCot: 0,
    maxNocot: 0,
    maxStep: 0,
    truncatedSteps: 0,
  };

  private constructor(
    dir: string,
    split: string,
    opts: Required<SplitWriterOptions>,
    records: BufferedFile,
    report: BufferedFile,
  ) {
    this.#dir = dir;
    this.#split = split;
    this.#opts = opts;
    this.#records = records;
    this.#report = report;
  }

  /** Start writing split `split` into directory `dir`. */
  static async open(dir: string, split: string, opts: SplitWriterOptions): Promise<SplitWriter> {
    const full = { shardSize: DEFAULT_SHARD_SIZE, ...opts };
    if (!Number.isInteger(full.shardSize) || full.shardSize < 1) {
      throw new WriteError(`shardSize = ${full.shardSize}: must be an integer >= 1`);
    }
    const create = { write: true, create: true, truncate: true } as const;
    const records = new BufferedFile(await Deno.open(`${dir}/${split}.records.jsonl`, create));
    const report = new BufferedFile(await Deno.open(`${dir}/${split}.report.csv`, create));
    await report.write(stringify([[...REPORT_COLUMNS]]));
    return new SplitWriter(dir, split, full, records, report);
  }

  /** Records added so far. */
  get count(): number {
    return this.#index;
  }

  /** Write one record: its records.jsonl line, its report row and, if kept, its tensors. */
  async add(rec: ValidatedRecord, outcome: PackOutcome): Promise<void> {
    const index = this.#index++;
    const { validation: v, packed: p } = outcome;
    this.#counts.read++;
    const line = {
      index,
      id: rec.id,
      source: { file: rec.source.file, line: rec.source.line },
      question: rec.question,
      rationale: rec.rationale,
      mathSteps: rec.mathSteps,
      answer: rec.answer,
      answerValue: rec.answerValue,
      math: rec.math.map((s) => ({ expr: s.expr, value: s.value, text: s.text })),
      nl: rec.nl,
      nlDerived: rec.nlDerived ?? false,
      unbalancedAnnotations: rec.unbalancedAnnotations ?? 0,
      // Packing's reasons have no detail line; the validator's are kept as they are.
      validation: { status: v.status, reasons: v.reasons, details: v.details ?? [] },
      tokens: p
        ? {
          question: p.question.length,
          steps: p.steps.map((s) => s.length),
          answer: p.answer.length,
        }
        : null,
    };
    await this.#records.write(JSON.stringify(line) + "\n");
    const stepTokens = p ? p.steps.reduce((a, s) => a + s.length, 0) : "";
    await this.#report.write(stringify([[
      index,
      rec.id,
      rec.source.file,
      rec.source.line,
      v.status,
      v.reasons.join(";"),
      rec.math.length,
      rec.nl.length,
      p ? p.question.length : "",
      stepTokens,
      p ? p.answer.length : "",
      p ? p.lotusIds.length : "",
      p ? p.cotIds.length : "",
      p ? p.nocotIds.length : "",
      p ? p.truncatedSteps : "",
      "",
    ]]));

    if (v.status === "dropped" || !p) {
      this.#counts.dropped++;
      for (const r of v.reasons) bump(this.#dropped, r);
      return;
    }
    this.#counts.kept++;
    if (v.status === "flagged") {
      this.#counts.flagged++;
      for (const r of v.reasons) bump(this.#flagged, r);
    } else this.#counts.ok++;
    const nSteps = this.#opts.cot === "math" ? rec.math.length : rec.nl.length;
    this.#hist.set(nSteps, (this.#hist.get(nSteps) ?? 0) + 1);
    const t = this.#tokens;
    t.question += p.question.length;
    t.steps += typeof stepTokens === "number" ? stepTokens : 0;
    t.answer += p.answer.length;
    t.lotus += p.lotusIds.length;
    t.cot += p.cotIds.length;
    t.nocot += p.nocotIds.length;
    t.maxLotus = Math.max(t.maxLotus, p.lotusIds.length);
    t.maxCot = Math.max(t.maxCot, p.cotIds.length);
    t.maxNocot = Math.max(t.maxNocot, p.nocotIds.length);
    for (const s of p.steps) t.maxStep = Math.max(t.maxStep, s.length);
    t.truncatedSteps += p.truncatedSteps;

    this.#rows.push({ packed: p, recordIndex: index });
    if (this.#rows.length >= this.#opts.shardSize) await this.#flushShard();
  }

  /** Write the report row of a skipped input record, in input order among the others. */
  async skip(row: SkippedRow): Promise<void> {
    const empty = new Array(REPORT_COLUMNS.length - 7).fill("");
    await this.#report.write(
      stringify([["", row.id, row.file, row.line, "skipped", row.reason, ...empty, row.error]]),
    );
  }

  async #flushShard(): Promise<void> {
    const file = `${this.#split}-${String(this.#shards.length).padStart(5, "0")}.safetensors`;
    const tensors = shardTensors(this.#rows, this.#opts);
    const bytes = encodeSafetensors(tensors);
    await Deno.writeFile(`${this.#dir}/${file}`, bytes);
    this.#shards.push({
      file,
      records: this.#rows.length,
      sha256: new Sha256().update(bytes).hex(),
      tensors: Object.entries(tensors).map(([name, t]) => ({
        name,
        shape: t.shape,
        dtype: t.dtype as "I32",
      })),
    });
    this.#rows = [];
  }

  /**
   * Write the last shard (a split always has at least one, possibly with 0 records), close
   * the files and return the split's counts. `skipped` is the number of input records the
   * reader skipped.
   */
  async finish(skipped = 0): Promise<SplitResult> {
    if (this.#rows.length > 0 || this.#shards.length === 0) await this.#flushShard();
    await this.#records.close();
    await this.#report.close();
    const hist: Record<string, number> = {};
    for (const k of [...this.#hist.keys()].sort((a, b) => a - b)) {
      hist[String(k)] = this.#hist.get(k)!;
    }
    return {
      counts: {
        read: this.#counts.read,
        skipped,
        kept: this.#counts.kept,
        ok: this.#counts.ok,
        flagged: this.#counts.flagged,
        dropped: this.#counts.dropped,
        droppedByReason: sortedCounts(this.#dropped),
        flaggedByReason: sortedCounts(this.#flagged),
      },
      stepHistogram: hist,
      tokens: { ...this.#tokens },
      records: `${this.#split}.records.jsonl`,
      report: `${this.#split}.report.csv`,
      shards: this.#shards,
    };
  }

  /** Close the files without finishing (the staging directory is removed by its owner). */
  abort(): void {
    this.#records.closeQuietly();
    this.#report.closeQuietly();
  }

  /** The file names this split produces, given its shard count. */
  static files(split: string, shards: ShardInfo[]): string[] {
    return [`${split}.records.jsonl`, `${split}.report.csv`, ...shards.map((s) => s.file)];
  }
}

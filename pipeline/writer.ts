/**
 * Writing a dataset directory (docs/dataset-format.md).
 *
 * {@linkcode StagedDir} keeps `--out` free of half-written files and commits a build as a
 * whole. Everything is written into `<out>/.staging-<pid>` under names unique to the build's
 * content (`<split>-<build id>-NNNNN.safetensors`, `<split>-<build id>.records.jsonl`, ...),
 * moved into `--out`, where no file of the current dataset has such a name, and then the
 * manifest, which names every file, replaces the old one in one rename. Until that rename the
 * old manifest and the old files are untouched; after it, the new ones are complete. Files
 * that no manifest names are removed last, and by the next build if this one is killed first.
 *
 * The staging directory is removed on error and on SIGINT/SIGTERM, which then stop the build
 * with a {@linkcode BuildStopped} (the process is not ended); a signal that arrives while the
 * files are being moved into place waits until they all are. One left by a killed
 * build is removed by the next build into the same directory (base/staging.ts decides,
 * with a lock, that its owner is gone).
 *
 * {@linkcode SplitWriter} streams one split: each record's line goes to records.jsonl and
 * report.csv as it arrives, kept records gather into a shard that is written when it fills,
 * and only counts stay in memory.
 *
 * @module
 */

import { Sha256, sha256Hex } from "../base/sha256.ts";
import { stringify } from "csv-stringify/sync";
import { encodeSafetensors } from "../base/safetensors.ts";
import { type LongStep, PACK_REASONS, type PackOutcome } from "./pack.ts";
import { decidingForm, REASONS } from "./validate.ts";
import { type ShardRow, shardTensors } from "./shard.ts";
import { DEFAULT_SHARD_SIZE, MANIFEST_FILE, type ShardInfo, type SplitInfo } from "./manifest.ts";
import type { ValidatedRecord } from "./types.ts";
import { exists } from "../base/exists.ts";
import { removeTreeSync, sweepStale, TempLease } from "../base/staging.ts";
import { STOP_SIGNALS } from "../base/signals.ts";

/** Raised when the output directory cannot be written. */
export class WriteError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "WriteError";
  }
}

/**
 * A build stopped by SIGINT, SIGTERM or SIGHUP ({@linkcode buildDataset} rejects with it): what the
 * build had written is removed, and the message says what `out` holds. The library never
 * exits the process; `deno task build-dataset` prints the message and exits 130, 143 or 129.
 */
export class BuildStopped extends Error {
  /** The signal that stopped the build. */
  readonly signal: Deno.Signal;
  /**
   * True when the signal came while the files were moved into place, which it waits for, and
   * the output holds the new dataset.
   */
  readonly written: boolean;
  /** Create the error. */
  constructor(signal: Deno.Signal, message: string, written = false) {
    super(message);
    this.name = "BuildStopped";
    this.signal = signal;
    this.written = written;
  }
}

const active = new Set<StagedDir>();
const handlers = new Map<Deno.Signal, () => void>();

function listen(): void {
  if (handlers.size > 0 || Deno.build.os === "windows") return;
  for (const sig of STOP_SIGNALS) {
    const h = () => {
      for (const s of active) s.stop(sig);
    };
    Deno.addSignalListener(sig, h);
    handlers.set(sig, h);
  }
}

function unlisten(): void {
  if (active.size > 0) return;
  for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  handlers.clear();
}

/** The tag of the staging directory: `<out>/.staging-<pid>` (base/staging.ts names). */
const STAGING = "staging";

/**
 * The names a build gives the files of a split ({@linkcode SplitWriter.finish}):
 * `<split>-<build id>-NNNNN.safetensors`, `<split>-<build id>.records.jsonl` and
 * `<split>-<build id>.report.csv`, the build id being 12 hex digits. A build removes such a
 * file from `--out` when no manifest names it (a replaced split's, or one a killed build
 * moved there), and so does it with the files the directory's previous manifest named; any
 * other file in `--out` is left alone.
 */
export const DATASET_FILE: RegExp =
  /^[A-Za-z0-9_][A-Za-z0-9_.-]*-[0-9a-f]{12}(-\d{5}\.safetensors|\.records\.jsonl|\.report\.csv)$/;

/**
 * What a build leaves in `--out` when it is interrupted before its manifest is in place: its
 * staging directory and lock (`.staging-<pid>`, `.lock-<pid>`, when it was killed outright)
 * and, killed during its commit, files already moved there ({@linkcode DATASET_FILE} names,
 * and `tokenizer.json`, which a build moves after its splits' files). Tells whether `name`,
 * an entry of a directory holding `names` and no manifest, is such a leftover.
 */
export function isBuildLeftover(name: string, names: readonly string[]): boolean {
  if (/^\.(staging|lock)-\d+$/.test(name) || DATASET_FILE.test(name)) return true;
  return name === "tokenizer.json" && names.some((n) => DATASET_FILE.test(n));
}

/** Holds an exclusive lock on a directory, so that two commits into it do not interleave. */
async function lockDir(dir: string): Promise<Deno.FsFile | null> {
  if (Deno.build.os === "windows") return null;
  const f = await Deno.open(dir, { read: true });
  await f.lock(true);
  return f;
}

/**
 * A staging directory inside an output directory. Files are written under
 * {@linkcode StagedDir.path} and moved into the output by {@linkcode StagedDir.commit}.
 *
 * While one is open, SIGINT, SIGTERM and SIGHUP remove it at once (or, during its commit, when the
 * commit ends) and leave a {@linkcode BuildStopped} in {@linkcode StagedDir.stopped}, which
 * the build throws at its next {@linkcode StagedDir.throwIfStopped}, or at once from a read
 * that {@linkcode StagedDir.untilStopped} guards.
 */
export class StagedDir {
  /** The output directory. */
  readonly out: string;
  /** The staging directory, `<out>/.staging-<pid>`. */
  readonly path: string;
  #open = true;
  #lease: TempLease | null = null;
  readonly #createdOut: boolean;
  #committing = false;
  #signal: Deno.Signal | null = null;
  #stopped: BuildStopped | null = null;
  #rejectStop: (e: BuildStopped) => void = () => {};
  /** Rejects with the stop when a signal stops the build outside its commit. */
  readonly #whenStopped = new Promise<never>((_, reject) => this.#rejectStop = reject);

  private constructor(out: string, createdOut: boolean) {
    this.out = out;
    this.path = `${out}/.${STAGING}-${Deno.pid}`;
    this.#createdOut = createdOut;
    this.#whenStopped.catch(() => {}); // awaited only while a read is raced against it
  }

  /**
   * Create `out` (if needed) and a fresh staging directory inside it, after removing the
   * staging directories that builds killed earlier left there.
   */
  static async open(out: string): Promise<StagedDir> {
    const s = new StagedDir(out, !(await exists(out)));
    // Listen before anything is created, so that no signal can leave a staging directory
    // behind (removeSync tolerates one that does not exist yet).
    active.add(s);
    listen();
    try {
      await Deno.mkdir(out, { recursive: true });
      await sweepStale(out, "", [STAGING]);
      s.#lease = TempLease.acquire(out, "");
      s.#lease.path(STAGING);
      // Synchronous, so that a signal handler never runs while the directory is being made
      // (an asynchronous mkdir still in flight would create it after the handler removed it).
      removeTreeSync(s.path);
      Deno.mkdirSync(s.path);
    } catch (e) {
      s.removeSync();
      s.#close();
      throw new WriteError(`${out}: cannot create the output directory (${(e as Error).message})`);
    }
    if (s.#stopped) {
      s.removeSync();
      s.#close();
      throw s.#stopped;
    }
    return s;
  }

  /** The stop a signal made, or null: the build throws it ({@linkcode throwIfStopped}). */
  get stopped(): BuildStopped | null {
    return this.#stopped;
  }

  /** Throws {@linkcode StagedDir.stopped} when a signal has stopped the build. */
  throwIfStopped(): void {
    if (this.#stopped) throw this.#stopped;
  }

  /**
   * `work`, or the {@linkcode BuildStopped} of a signal that comes first: an open or a read
   * waiting on a pipe, a FIFO or a stalled file system is given up.
   */
  orStop<T>(work: Promise<T>): Promise<T> {
    this.throwIfStopped();
    work.catch(() => {}); // given up, it may fail later, unheard
    return Promise.race([work, this.#whenStopped]);
  }

  /**
   * The items of `items`, until a signal stops the build: a read still waiting then (on a
   * pipe, a FIFO or a stalled file system) is given up, and the loop throws the
   * {@linkcode BuildStopped} at once rather than when the read returns.
   */
  async *untilStopped<T>(items: AsyncIterable<T>): AsyncGenerator<T> {
    const it = items[Symbol.asyncIterator]();
    let pending = false;
    try {
      while (true) {
        pending = true;
        const r = await this.orStop(it.next());
        pending = false;
        if (r.done) return;
        yield r.value;
      }
    } finally {
      // Closing the source waits for a read in flight, which may never return: leave it.
      if (!pending) await it.return?.();
    }
  }

  /**
   * A stop signal: the staging directory is removed at once, and the build is to stop. During
   * the commit it waits for the commit's end, which says what the output then holds.
   */
  stop(sig: Deno.Signal): void {
    if (this.#signal !== null || !this.#open) return;
    this.#signal = sig;
    if (this.#committing) return;
    this.removeSync();
    this.#stopped = new BuildStopped(
      sig,
      `stopped by ${sig}: nothing was changed in ${this.out} (what the build had written is ` +
        `removed); rerun the same command`,
    );
    this.#rejectStop(this.#stopped);
  }

  /**
   * Move `files` (names inside the staging directory) into the output directory in the
   * given order, then remove the files of the output that `named` does not list and that
   * {@linkcode DATASET_FILE} matches or `previous` (the files the output's current manifest
   * names) lists, then the staging directory. No other file is removed. Put the manifest last in
   * `files`, and let no other name in `files` be one the output's current manifest lists
   * with other content: then the output holds the old dataset until the manifest's rename
   * and the new one after it. `onStep` is called before each change to the output (tests
   * interrupt the commit with it).
   */
  async commit(
    files: string[],
    named: Iterable<string>,
    onStep?: (step: string) => void,
    previous: Iterable<string> = [],
  ): Promise<void> {
    this.throwIfStopped();
    this.#committing = true; // a signal from here on waits for the last rename
    let dirLock: Deno.FsFile | null = null;
    let renamed = 0;
    try {
      dirLock = await lockDir(this.out);
      for (const f of files) {
        onStep?.(`rename ${f}`);
        await Deno.rename(`${this.path}/${f}`, `${this.out}/${f}`);
        renamed++;
      }
      const keep = new Set([...named, ...files, MANIFEST_FILE]);
      for (const f of await unnamedFiles(this.out, keep, new Set(previous))) {
        onStep?.(`remove ${f}`);
        await Deno.remove(`${this.out}/${f}`).catch(() => {});
      }
    } finally {
      dirLock?.close();
      await this.#lease?.release();
      this.#committing = false;
      this.#close();
      const sig = this.#signal;
      if (sig !== null && renamed === files.length) {
        this.#stopped = new BuildStopped(
          sig,
          `stopped by ${sig} after the build was written: ${this.out} holds it`,
          true,
        );
      } else if (sig !== null) {
        const moved = renamed > 0
          ? ` (the ${renamed} files the build had moved there are removed by the next build)`
          : "";
        this.#stopped = new BuildStopped(
          sig,
          `stopped by ${sig}: ${this.out} still holds what it held before${moved}; rerun the ` +
            `same command`,
        );
      }
    }
    this.throwIfStopped();
  }

  /**
   * Remove the staging directory and everything in it, and the output directory too if
   * this build created it and it is empty.
   */
  async abort(): Promise<void> {
    if (!this.#open) return;
    await this.#lease?.release();
    // Without recursive, remove fails on a non-empty directory, which is what we want.
    if (this.#createdOut) await Deno.remove(this.out).catch(() => {});
    this.#close();
  }

  #close(): void {
    this.#open = false;
    active.delete(this);
    unlisten();
  }

  /** Synchronous twin of {@linkcode StagedDir.abort}, for the signal handlers. */
  removeSync(): void {
    // Without the lease the staging directory is not this build's: its path is the process's,
    // and another build of this process into the same directory, which holds the lease, is
    // writing there.
    this.#lease?.releaseSync();
    try {
      if (this.#createdOut) Deno.removeSync(this.out);
    } catch { /* not created yet, or not empty */ }
  }
}

/**
 * The files of `dir` that `keep` does not list and that a build wrote: {@linkcode DATASET_FILE}
 * names and those in `previous`.
 */
async function unnamedFiles(
  dir: string,
  keep: Set<string>,
  previous: Set<string>,
): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const built = DATASET_FILE.test(e.name) || previous.has(e.name);
    if (e.isFile && built && !keep.has(e.name)) out.push(e.name);
  }
  return out.sort();
}

/** A file written in large appends through an in-memory buffer, hashed as it is written. */
class BufferedFile {
  #file: Deno.FsFile;
  #parts: string[] = [];
  #size = 0;
  readonly #hash = new Sha256();
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
    this.#hash.update(bytes);
    let off = 0;
    while (off < bytes.length) off += await this.#file.write(bytes.subarray(off));
  }

  /** Flush, close, and return the hex sha256 of everything written. */
  async close(): Promise<string> {
    await this.flush();
    this.#file.close();
    return this.#hash.hex();
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
  /** The long-step policy the records were packed with (default `truncate`). */
  longStep?: LongStep;
}

/** The file and count parts of a split's manifest entry, as a {@linkcode SplitWriter} saw them. */
export type SplitResult = Pick<
  SplitInfo,
  | "counts"
  | "stepHistogram"
  | "tokens"
  | "records"
  | "report"
  | "recordsSha256"
  | "reportSha256"
  | "shards"
>;

/** Header of the report file, `<split>-<build id>.report.csv`. */
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

/** Default records per shard (manifest.ts: the manifest records a split's shard size). */
export { DEFAULT_SHARD_SIZE };

function sortedCounts(m: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of [...m.keys()].sort()) out[k] = m.get(k)!;
  return out;
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/**
 * The build id of a split: 12 hex digits of a hash of its files' hashes, so that the same
 * content always gets the same file names and other content other ones.
 */
export function buildId(shardHashes: string[], records: string, report: string): string {
  return sha256Hex(JSON.stringify({ shards: shardHashes, records, report })).slice(0, 12);
}

/** Every reason code, validation's and packing's, with what it does under each CoT form. */
const ALL_REASONS = { ...REASONS, ...PACK_REASONS };

/**
 * Streams one split into a staging directory. While it writes, the files have provisional
 * names (starting with `.`); {@linkcode SplitWriter.finish} gives them their final ones,
 * `<split>-<build id>.records.jsonl`, `<split>-<build id>.report.csv` and
 * `<split>-<build id>-NNNNN.safetensors`, the build id ({@linkcode buildId}) coming from
 * their content.
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
    const full = { shardSize: DEFAULT_SHARD_SIZE, longStep: "truncate" as LongStep, ...opts };
    if (!Number.isInteger(full.shardSize) || full.shardSize < 1) {
      throw new WriteError(`shardSize = ${full.shardSize}: must be an integer >= 1`);
    }
    const create = { write: true, create: true, truncate: true } as const;
    const records = new BufferedFile(await Deno.open(`${dir}/.${split}.records.jsonl`, create));
    const report = new BufferedFile(await Deno.open(`${dir}/.${split}.report.csv`, create));
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
      // The validator's details, and packing's where it gives one (special_token_text).
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
      // The reasons that drop under this build's CoT form: a flag-only reason the record also
      // carries (no_annotation under --cot nl, say) did not drop it.
      const form = decidingForm(this.#opts.cot, rec.nlDerived ?? false);
      const dropping = v.reasons.filter((r) => ALL_REASONS[r]?.[form] === "drop");
      for (const r of dropping.length > 0 ? dropping : v.reasons) bump(this.#dropped, r);
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

  /** The provisional name of shard `i` (the final one has the build id). */
  #part(i: number): string {
    return `.${this.#split}-${String(i).padStart(5, "0")}.safetensors`;
  }

  /** Write the report row of a skipped input record, in input order among the others. */
  async skip(row: SkippedRow): Promise<void> {
    const empty = new Array(REPORT_COLUMNS.length - 7).fill("");
    await this.#report.write(
      stringify([["", row.id, row.file, row.line, "skipped", row.reason, ...empty, row.error]]),
    );
  }

  async #flushShard(): Promise<void> {
    const file = this.#part(this.#shards.length);
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
   * the files, give them their final names and return the split's counts. `skipped` is the
   * number of input records the reader skipped.
   */
  async finish(skipped = 0): Promise<SplitResult> {
    if (this.#rows.length > 0 || this.#shards.length === 0) await this.#flushShard();
    const recordsSha256 = await this.#records.close();
    const reportSha256 = await this.#report.close();
    const id = buildId(this.#shards.map((s) => s.sha256), recordsSha256, reportSha256);
    const name = `${this.#split}-${id}`;
    const rename = (from: string, to: string) =>
      Deno.rename(`${this.#dir}/${from}`, `${this.#dir}/${to}`);
    await rename(`.${this.#split}.records.jsonl`, `${name}.records.jsonl`);
    await rename(`.${this.#split}.report.csv`, `${name}.report.csv`);
    for (const [i, s] of this.#shards.entries()) {
      s.file = `${name}-${String(i).padStart(5, "0")}.safetensors`;
      await rename(this.#part(i), s.file);
    }
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
      records: `${name}.records.jsonl`,
      report: `${name}.report.csv`,
      recordsSha256,
      reportSha256,
      shards: this.#shards,
    };
  }

  /** Close the files without finishing (the staging directory is removed by its owner). */
  abort(): void {
    this.#records.closeQuietly();
    this.#report.closeQuietly();
  }

  /** The files of a finished split: the records, the report and the shards. */
  static files(result: Pick<SplitInfo, "records" | "report" | "shards">): string[] {
    return [result.records, result.report, ...result.shards.map((s) => s.file)];
  }
}

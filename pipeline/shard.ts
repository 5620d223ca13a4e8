/**
 * Shards, both ways (docs/dataset-format.md, "Tensors in each shard"). {@linkcode shardTensors}
 * turns packed records into the named int32 tensors of one safetensors shard; padded layouts
 * are right-padded to the longest row of the shard: ids with PAD, labels with -100.
 * {@linkcode readShard} and {@linkcode readSplitShards} read them back for training and
 * evaluation, and check them against the manifest on the way (see "Verification" in
 * docs/dataset-format.md): a dataset that does not match its manifest is refused, never used.
 *
 * @module
 */

import { IGNORE, type PackedRecord } from "./pack.ts";
import { type LongStep, stepTargetWidth } from "./step_targets.ts";
import {
  decodeSafetensors,
  dtypeBytes,
  SafetensorsError,
  type Tensor,
} from "../base/safetensors.ts";
import { sha256HexAsync } from "../base/sha256.ts";
import { refuseUnlisted } from "../base/options.ts";
import { nearestName } from "../base/suggest.ts";
import type { Manifest, ShardInfo, TensorInfo } from "./manifest.ts";
import { type Tokenizer, TokenizerError, tokenizerFromJson } from "./tokenizer.ts";
import { rebuildCommand, rebuildDatasetCommands } from "./rebuild_command.ts";

/** A packed record and its 0-based line in `<split>.records.jsonl`. */
export interface ShardRow {
  /** The record's token sequences. */
  packed: PackedRecord;
  /** Its line in the split's records.jsonl. */
  recordIndex: number;
}

/** Layout options a shard needs. */
export interface ShardOptions {
  /** Latent blocks K. */
  k: number;
  /** Slots per block c. */
  c: number;
  /** The PAD id (= EOS). */
  pad: number;
  /** The long-step policy, which sets the step targets' width W (default `truncate`: W = c). */
  longStep?: LongStep;
}

/** Tensor names in the order they are written. */
export const SHARD_TENSORS = [
  "question_ids",
  "question_offsets",
  "step_ids",
  "step_offsets",
  "record_step_offsets",
  "answer_ids",
  "answer_offsets",
  "record_index",
  "lotus_input_ids",
  "lotus_labels",
  "lotus_lengths",
  "lotus_bot",
  "lotus_step_targets",
  "cot_input_ids",
  "cot_labels",
  "cot_lengths",
  "nocot_input_ids",
  "nocot_labels",
  "nocot_lengths",
] as const;

/** The name of a shard tensor. */
export type ShardTensorName = typeof SHARD_TENSORS[number];

/**
 * The shape of each tensor, by dimension: `N` is the shard's records, `K` the build's, `W` the
 * step targets' width (c, or K*c + 1 under `--long-step spill`; pipeline/step_targets.ts); any
 * other letter is a length that must be equal wherever it repeats, and `X+1`
 * is one more than `X`.
 */
export const SHARD_SHAPES: { readonly [K in ShardTensorName]: readonly string[] } = {
  question_ids: ["Q"],
  question_offsets: ["N+1"],
  step_ids: ["S"],
  step_offsets: ["M+1"],
  record_step_offsets: ["N+1"],
  answer_ids: ["A"],
  answer_offsets: ["N+1"],
  record_index: ["N"],
  lotus_input_ids: ["N", "T"],
  lotus_labels: ["N", "T"],
  lotus_lengths: ["N"],
  lotus_bot: ["N"],
  lotus_step_targets: ["N", "K", "W"],
  cot_input_ids: ["N", "U"],
  cot_labels: ["N", "U"],
  cot_lengths: ["N"],
  nocot_input_ids: ["N", "V"],
  nocot_labels: ["N", "V"],
  nocot_lengths: ["N"],
};

function i32(shape: number[], data: Int32Array): Tensor {
  return { dtype: "I32", shape, data };
}

/** Concatenate ragged rows, returning the flat ids and the [n+1] offsets. */
function ragged(rows: number[][]): [Int32Array, Int32Array] {
  const offsets = new Int32Array(rows.length + 1);
  for (let i = 0; i < rows.length; i++) offsets[i + 1] = offsets[i] + rows[i].length;
  const flat = new Int32Array(offsets[rows.length]);
  for (let i = 0; i < rows.length; i++) flat.set(rows[i], offsets[i]);
  return [flat, offsets];
}

/** Right-pad rows to the longest: [N, T] ids, [N, T] labels and [N] lengths. */
function padded(
  ids: number[][],
  labels: number[][],
  pad: number,
): [Tensor, Tensor, Tensor] {
  const n = ids.length;
  let t = 0;
  for (const r of ids) if (r.length > t) t = r.length;
  const x = new Int32Array(n * t).fill(pad);
  const y = new Int32Array(n * t).fill(IGNORE);
  const len = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    x.set(ids[i], i * t);
    y.set(labels[i], i * t);
    len[i] = ids[i].length;
  }
  return [i32([n, t], x), i32([n, t], y), i32([n], len)];
}

/**
 * Build a shard's tensors, in {@linkcode SHARD_TENSORS} order.
 *
 * @example
 * ```ts
 * import { shardTensors } from "./shard.ts";
 * const t = shardTensors([], { k: 6, c: 13, pad: 50256 });
 * console.assert(t.lotus_step_targets.shape.join() === "0,6,13");
 * ```
 */
export function shardTensors(rows: ShardRow[], opts: ShardOptions): Record<string, Tensor> {
  const n = rows.length;
  const p = rows.map((r) => r.packed);
  const [qIds, qOff] = ragged(p.map((r) => r.question));
  const allSteps: number[][] = [];
  const recSteps = new Int32Array(n + 1);
  for (let i = 0; i < n; i++) {
    for (const s of p[i].steps) allSteps.push(s);
    recSteps[i + 1] = allSteps.length;
  }
  const [sIds, sOff] = ragged(allSteps);
  const [aIds, aOff] = ragged(p.map((r) => r.answer));
  const w = stepTargetWidth(opts.k, opts.c, opts.longStep ?? "truncate");
  const kw = opts.k * w;
  const targets = new Int32Array(n * kw);
  for (let i = 0; i < n; i++) {
    if (p[i].stepTargets.length !== kw) {
      throw new RangeError(
        `record ${rows[i].recordIndex}: ${p[i].stepTargets.length} step targets, expected ` +
          `K*W = ${kw} (packed with another K, c or long-step policy)`,
      );
    }
    targets.set(p[i].stepTargets, i * kw);
  }
  const [lx, ly, ll] = padded(p.map((r) => r.lotusIds), p.map((r) => r.lotusLabels), opts.pad);
  const [cx, cy, cl] = padded(p.map((r) => r.cotIds), p.map((r) => r.cotLabels), opts.pad);
  const [nx, ny, nl] = padded(p.map((r) => r.nocotIds), p.map((r) => r.nocotLabels), opts.pad);
  return {
    question_ids: i32([qIds.length], qIds),
    question_offsets: i32([n + 1], qOff),
    step_ids: i32([sIds.length], sIds),
    step_offsets: i32([sOff.length], sOff),
    record_step_offsets: i32([n + 1], recSteps),
    answer_ids: i32([aIds.length], aIds),
    answer_offsets: i32([n + 1], aOff),
    record_index: i32([n], Int32Array.from(rows, (r) => r.recordIndex)),
    lotus_input_ids: lx,
    lotus_labels: ly,
    lotus_lengths: ll,
    lotus_bot: i32([n], Int32Array.from(p, (r) => r.lotusBot)),
    lotus_step_targets: i32([n, opts.k, w], targets),
    cot_input_ids: cx,
    cot_labels: cy,
    cot_lengths: cl,
    nocot_input_ids: nx,
    nocot_labels: ny,
    nocot_lengths: nl,
  };
}

// ---------------------------------------------------------------------------------------------
// Reading a shard back, checked against the manifest.

/** A shard's tensors by name, as views into the file's bytes. */
export type ShardData = { readonly [K in ShardTensorName]: Int32Array };

/**
 * How much a dataset is checked on load. `basic` (the default) costs a pass over the data
 * already in memory: counts, dtypes, shapes, file sizes, offsets, token ids, record indices.
 * `full` also hashes every file of the split and the tokenizer against the manifest.
 */
export type VerifyMode = "basic" | "full";

/** The names of {@linkcode VerifyMode}, for option parsing. */
export const VERIFY_MODES: readonly VerifyMode[] = ["basic", "full"];

/** Raised when a dataset directory cannot be used; the message names the file and what to do. */
export class DatasetError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "DatasetError";
  }
}

/** What a shard is checked against, besides its manifest entry. */
export interface ShardContext {
  /** The dataset directory, which holds the shard's file. */
  dir: string;
  /** The tokenizer's vocabulary size: every token id is below it. */
  vocabSize: number;
  /** The build's K. */
  k: number;
  /** The build's c. */
  c: number;
  /** The split's long-step policy (default `truncate`), which sets the step targets' width. */
  longStep?: LongStep;
  /** Lines of the split's records file: every record_index is below it. */
  records: number;
  /** Every record_index must be above this one (the previous shard's last); default -1. */
  after?: number;
  /** How much to check (default `basic`). */
  verify?: VerifyMode;
}

/**
 * The error for a split `split` that the dataset in `dir` (its manifest `manifest`) lacks,
 * naming the splits it has, and the one its name is near (a misspelling) or else the command
 * that builds the missing one.
 */
export function noSuchSplit(dir: string, manifest: Manifest, split: string): DatasetError {
  const names = Object.keys(manifest.splits);
  const near = nearestName(split, names);
  return new DatasetError(
    `${dir}: has no split "${split}" (it has: ${names.join(", ")}); ` +
      (near === undefined
        ? `build it with deno task build-dataset --input FILE --split ${split} --out ${dir}`
        : `did you mean "${near}"?`),
  );
}

/**
 * A shard, records or report file of a split found not to match the manifest: a
 * {@linkcode DatasetError} whose advice, until {@linkcode readSplitShards} gives the command
 * that rebuilds that split, is the general one. `what` is the problem alone.
 */
class SplitDamage extends DatasetError {
  constructor(readonly what: string) {
    super(
      damagedMessage(
        what,
        "rebuild the split from what the directory's manifest.json records for it " +
          "(splits.NAME: its sources and options)",
      ),
    );
  }
}

function damagedMessage(what: string, advice: string): string {
  return `${what}; the dataset does not match its manifest (damaged, edited, or written by an ` +
    `interrupted copy): ${advice}`;
}

/** A split's file found damaged: `what`, the problem, with the general advice. */
function damaged(what: string): SplitDamage {
  return new SplitDamage(what);
}

/**
 * Damage to the directory as a whole (its tokenizer, or the manifest's account of it): the
 * advice is to build the dataset again into a new directory, split by split in the manifest's
 * order, with the commands that rebuild each from what the manifest records, the first of them
 * with the directory's tokenizer, K, c and CoT form ({@linkcode rebuildDatasetCommands}).
 */
function damagedDir(what: string, manifest: Manifest): DatasetError {
  const commands = rebuildDatasetCommands(manifest, "NEW");
  const file = manifest.tokenizer.kind === "file"
    ? ` (TOKENIZER.json: the tokenizer.json the dataset was built with, whose sha256 the ` +
      `manifest lists)`
    : "";
  return new DatasetError(
    damagedMessage(
      what,
      `rebuild it into a new directory NEW, split by split: ${commands.join("; then ")}` +
        file,
    ),
  );
}

/** The manifest's listing of a shard follows {@linkcode SHARD_TENSORS} and the shape rules. */
function checkListing(
  info: ShardInfo,
  k: number,
  c: number,
  w: number,
  where: string,
) {
  const names = info.tensors.map((t) => t.name);
  if (names.join() !== SHARD_TENSORS.join()) {
    throw damaged(`${where}: lists tensors [${names}], expected [${SHARD_TENSORS}]`);
  }
  const bound = new Map<string, number>([["N", info.records], ["K", k], ["W", w]]);
  for (const t of info.tensors) {
    const rule = SHARD_SHAPES[t.name as ShardTensorName];
    const ok = t.dtype === "I32" && t.shape.length === rule.length &&
      rule.every((sym, i) => {
        const plus = sym.endsWith("+1") ? 1 : 0;
        const name = plus ? sym.slice(0, -2) : sym;
        const v = t.shape[i] - plus;
        if (v < 0) return false;
        if (!bound.has(name)) bound.set(name, v);
        return bound.get(name) === v;
      });
    if (!ok) {
      throw damaged(
        `${where}: tensor "${t.name}" is listed as ${t.dtype} [${t.shape}], expected I32 ` +
          `[${rule}] with N = ${info.records} records, K = ${k}, W = ${w} (c = ${c})`,
      );
    }
  }
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The first index of `a` outside [lo, hi) (and not `IGNORE` when `ignore`), or -1. */
function firstOutside(a: Int32Array, lo: number, hi: number, ignore = false): number {
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if ((v < lo || v >= hi) && !(ignore && v === IGNORE)) return i;
  }
  return -1;
}

/**
 * Decode and check the bytes of one shard against its manifest entry `info`: the dtype and
 * shape of every tensor as listed, the file size they imply, offsets that start at 0, never
 * decrease and end at their ids' length, token ids in [0, vocabSize) (labels and step targets
 * may also be -100), lengths within their rows, and record indices increasing and below
 * `ctx.records`. With `verify: "full"`, the sha256 of the bytes too. `path` names the file in
 * errors.
 *
 * @throws {DatasetError} naming the file, the tensor and the record, saying to rebuild.
 */
export async function checkShard(
  bytes: Uint8Array,
  info: ShardInfo,
  ctx: ShardContext,
  path: string,
): Promise<ShardData> {
  if (ctx.verify === "full") {
    const got = await sha256HexAsync(bytes);
    if (got !== info.sha256) {
      throw damaged(`${path}: sha256 is ${got}, the manifest lists ${info.sha256}`);
    }
  }
  let file;
  try {
    file = decodeSafetensors(bytes, path);
  } catch (e) {
    if (e instanceof SafetensorsError) throw damaged(e.message);
    throw e;
  }
  const out = {} as Record<ShardTensorName, Int32Array>;
  const listed = new Map<string, TensorInfo>(info.tensors.map((t) => [t.name, t]));
  for (const [name, t] of Object.entries(file.tensors)) {
    const want = listed.get(name);
    if (!want) {
      throw damaged(`${path}: has tensor "${name}", which the manifest does not list`);
    }
    if (t.dtype !== want.dtype || t.shape.join() !== want.shape.join()) {
      throw damaged(
        `${path}: tensor "${name}" has dtype ${t.dtype} and shape [${t.shape}], the manifest ` +
          `lists ${want.dtype} [${want.shape}]`,
      );
    }
    out[name as ShardTensorName] = t.data as Int32Array;
  }
  for (const t of info.tensors) {
    if (!out[t.name as ShardTensorName]) {
      throw damaged(`${path}: tensor "${t.name}" is missing`);
    }
  }
  // The listed tensors fill the file exactly: nothing is appended.
  const data = info.tensors.reduce((a, t) => a + numel(t.shape) * dtypeBytes(t.dtype), 0);
  const header = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (8 + header + data !== bytes.length) {
    throw damaged(
      `${path}: ${bytes.length} bytes, but its ${header}-byte header and the manifest's ` +
        `tensors (${data} bytes) make ${8 + header + data} bytes`,
    );
  }
  const w = stepTargetWidth(ctx.k, ctx.c, ctx.longStep ?? "truncate");
  checkListing(info, ctx.k, ctx.c, w, `${path}: the manifest`);
  checkValues(out, ctx, path);
  return out;
}

function checkValues(t: ShardData, ctx: ShardContext, path: string): void {
  const v = ctx.vocabSize, n = t.record_index.length;
  const fail = (name: string, what: string) => damaged(`${path}: tensor "${name}": ${what}`);
  const offsets = (name: ShardTensorName, len: number) => {
    const o = t[name];
    if (o[0] !== 0) throw fail(name, `starts at ${o[0]}, not 0`);
    for (let i = 1; i < o.length; i++) {
      if (o[i] < o[i - 1]) throw fail(name, `decreases at entry ${i} (${o[i - 1]} > ${o[i]})`);
    }
    if (o[o.length - 1] !== len) {
      throw fail(name, `ends at ${o[o.length - 1]}, not at ${len} (the length it indexes)`);
    }
  };
  offsets("question_offsets", t.question_ids.length);
  offsets("answer_offsets", t.answer_ids.length);
  offsets("step_offsets", t.step_ids.length);
  offsets("record_step_offsets", t.step_offsets.length - 1);
  const ids = (name: ShardTensorName, ignore = false) => {
    const i = firstOutside(t[name], 0, v, ignore);
    if (i >= 0) {
      throw fail(name, `token id ${t[name][i]} at index ${i} is outside [0, ${v}), the vocabulary`);
    }
  };
  for (const name of ["question_ids", "step_ids", "answer_ids"] as const) ids(name);
  for (const layout of ["lotus", "cot", "nocot"] as const) {
    ids(`${layout}_input_ids`);
    ids(`${layout}_labels`, true);
    const lens = t[`${layout}_lengths`];
    const width = n === 0 ? 0 : t[`${layout}_input_ids`].length / n;
    const i = firstOutside(lens, 0, width + 1);
    if (i >= 0) throw fail(`${layout}_lengths`, `record ${i}: ${lens[i]} outside [0, ${width}]`);
  }
  ids("lotus_step_targets", true);
  for (let i = 0; i < n; i++) {
    const b = t.lotus_bot[i];
    if (b < 0 || b >= t.lotus_lengths[i]) {
      throw fail("lotus_bot", `record ${i}: ${b} outside [0, ${t.lotus_lengths[i]})`);
    }
  }
  let prev = ctx.after ?? -1;
  for (let i = 0; i < n; i++) {
    const r = t.record_index[i];
    if (r <= prev || r >= ctx.records) {
      throw fail(
        "record_index",
        `record ${i}: ${r} is ` +
          (r <= prev
            ? `not above the one before (${prev})`
            : `not below ${ctx.records}, the number of lines of the records file`),
      );
    }
    prev = r;
  }
}

/**
 * Read shard `info` of the dataset in `ctx.dir` and check it ({@linkcode checkShard}).
 *
 * @throws {DatasetError} when the file is missing or does not match the manifest.
 */
export async function readShard(info: ShardInfo, ctx: ShardContext): Promise<ShardData> {
  const path = `${ctx.dir}/${info.file}`;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw damaged(`${path}: missing`);
    throw e;
  }
  return checkShard(bytes, info, ctx, path);
}

/** The hex sha256 of file `file` of `dir` against the manifest's `want`: the problem, or null. */
async function hashProblem(dir: string, file: string, want: string): Promise<string | null> {
  const path = `${dir}/${file}`;
  const got = await sha256HexAsync(await Deno.readFile(path));
  return got === want ? null : `${path}: sha256 is ${got}, the manifest lists ${want}`;
}

/**
 * The tokenizer of the dataset in `dir`, whose manifest is `manifest`: its tokenizer.json,
 * read as a tokenizer of kind `kind`, once its sha256 is found to be the one the manifest
 * records, and its vocabulary size and special ids the manifest's. The file is small, so this
 * is checked whatever the verification mode: a tokenizer.json replaced since the build
 * (another dataset's, even a valid one) or cut short, or a manifest whose ids were edited,
 * would otherwise decode the split's token ids into other text, or mark the latents with
 * other tokens, and go into the checkpoints trained on it.
 *
 * @throws {DatasetError} when the file is missing, damaged or not the manifest's tokenizer.
 *
 * @example
 * ```ts ignore
 * import { readManifest } from "./manifest.ts";
 * import { readDatasetTokenizer } from "./shard.ts";
 * const dir = "out/data/default";
 * const tok = await readDatasetTokenizer(dir, await readManifest(dir));
 * console.log(tok.vocabSize);
 * ```
 */
export async function readDatasetTokenizer(
  dir: string,
  manifest: Manifest,
  kind: Tokenizer["kind"] = "file",
): Promise<Tokenizer> {
  const path = `${dir}/${manifest.tokenizer.file}`;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw damagedDir(`${path}: missing`, manifest);
    throw e;
  }
  const got = await sha256HexAsync(bytes);
  if (got !== manifest.tokenizer.sha256) {
    throw damagedDir(
      `${path}: sha256 is ${got}, the manifest lists ${manifest.tokenizer.sha256} (the file ` +
        `was replaced or cut short since the build)`,
      manifest,
    );
  }
  let tok: Tokenizer;
  try {
    tok = tokenizerFromJson(new TextDecoder().decode(bytes), kind, path);
  } catch (e) {
    if (e instanceof TokenizerError) throw damagedDir(e.message, manifest);
    throw e;
  }
  // The manifest's own account of the tokenizer: what the shards were checked against.
  const listed = manifest.tokenizer;
  const fields: [string, number, number][] = [
    ["vocabSize", listed.vocabSize, tok.vocabSize],
    ...(["eos", "pad", "bot", "eot", "lat"] as const).map((k): [string, number, number] => [
      `special.${k}`,
      listed.special[k],
      tok.special[k],
    ]),
  ];
  for (const [field, inManifest, inFile] of fields) {
    if (inManifest !== inFile) {
      throw damagedDir(
        `${dir}/manifest.json: field "tokenizer.${field}" is ${inManifest}, where its ` +
          `${manifest.tokenizer.file} has ${inFile}`,
        manifest,
      );
    }
  }
  return tok;
}

/**
 * Read every shard of split `split` of the dataset in `dir`, whose manifest is `manifest`,
 * checking the split's record count (`counts.kept` against the shards' records) and each
 * shard ({@linkcode checkShard}). With `verify: "full"`, also the sha256 of every file of
 * the split (shards, records, report) and of the tokenizer.
 *
 * @throws {DatasetError} when the split is missing (naming a split near the name given) or
 * does not match the manifest.
 * @throws {RangeError} for a `verify` that is not one of {@linkcode VERIFY_MODES}.
 *
 * @example
 * ```ts ignore
 * import { readManifest } from "./manifest.ts";
 * import { readSplitShards } from "./shard.ts";
 * const dir = "out/data/default";
 * const shards = await readSplitShards(dir, await readManifest(dir), "train", { verify: "full" });
 * console.log(shards.reduce((n, s) => n + s.record_index.length, 0));
 * ```
 */
export async function readSplitShards(
  dir: string,
  manifest: Manifest,
  split: string,
  opts: { verify?: VerifyMode } = {},
): Promise<ShardData[]> {
  refuseUnlisted("readSplitShards", "verify", opts.verify, VERIFY_MODES);
  const info = manifest.splits[split];
  if (!info) throw noSuchSplit(dir, manifest, split);
  const verify = opts.verify ?? "basic";
  if (verify === "full") {
    const problem = await hashProblem(dir, manifest.tokenizer.file, manifest.tokenizer.sha256);
    if (problem !== null) throw damagedDir(problem, manifest);
  }
  const { vocabSize } = manifest.tokenizer, { k, c } = manifest.options;
  const out: ShardData[] = [];
  let after = -1;
  try {
    const listed = info.shards.reduce((a, s) => a + s.records, 0);
    if (listed !== info.counts.kept) {
      throw damaged(
        `${dir}/manifest.json: split "${split}" counts ${info.counts.kept} kept records, its ` +
          `shards list ${listed} records`,
      );
    }
    if (verify === "full") {
      const files: [string, string | undefined][] = [
        [info.records, info.recordsSha256],
        [info.report, info.reportSha256],
      ];
      for (const [file, want] of files) {
        const problem = want === undefined ? null : await hashProblem(dir, file, want);
        if (problem !== null) throw damaged(problem);
      }
    }
    for (const shard of info.shards) {
      const longStep = info.options.longStep;
      const ctx = { dir, vocabSize, k, c, longStep, records: info.counts.read, after, verify };
      const data = await readShard(shard, ctx);
      if (data.record_index.length > 0) after = data.record_index[data.record_index.length - 1];
      out.push(data);
    }
  } catch (e) {
    // The split's own files: the advice is the command that builds that split again.
    if (!(e instanceof SplitDamage)) throw e;
    throw new DatasetError(
      damagedMessage(e.what, `rebuild split ${split} with ${rebuildCommand(dir, split, info)}`),
    );
  }
  return out;
}

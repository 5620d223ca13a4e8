/**
 * The ONNX inference backend: a LOTUS checkpoint run by onnxruntime-node on any CPU, without
 * the native engine. {@linkcode OnnxBackbone} runs the exported graphs (export/onnx_gpt2.ts,
 * export/onnx_llama.ts);
 * {@linkcode openOnnxInference} drives the LOTUS schedule over them from TypeScript, as
 * model/generate.ts does on the engine:
 *
 * 1. the question prefix once (token ids, left-padded; its keys and values are kept);
 * 2. pass 0 over BOT and the K*c latents (token ids), then R passes whose inputs are input
 *    embeddings: `e_LAT + h` ("add") or `h` ("replace") at the latents, BOT plain, with `h`
 *    the previous pass's post-final-norm states at the same positions;
 * 3. EOT attending to the prefix and pass R's keys and values, then greedy decoding with the
 *    cache until EOS or the budget.
 *
 * Only this module (and the tests and benchmark) imports onnxruntime-node: infer/inference.ts
 * loads it on demand, so the trainer's module graph stays free of it.
 *
 * @module
 */

// First: it switches onnxruntime's telemetry off before the library loads.
import "./ort_env.ts";
import * as ort from "onnxruntime-node";
import { leftPadQuestions } from "../model/generate.ts";
import {
  checkpointDirOf,
  CheckpointError,
  loadCheckpoint,
  progressOf,
  refuseUnsavedRun,
  tokenizerOfModel,
  trainStateNote,
} from "../model/checkpoint.ts";
import {
  checkpointFingerprint,
  exportCheckpoint,
  ExportError,
  readLotusJson,
} from "../export/export.ts";
import { checkOnnxWeights } from "../export/export_check.ts";
import { type LotusJson, ONNX_FILES } from "../export/hf_files.ts";
import { decodeModel } from "../export/onnx_proto.ts";
import {
  kvHeads,
  pastKey,
  pastValue,
  presentKey,
  presentValue,
  tokenEmbeddingName,
} from "../export/onnx_decoder.ts";
import { inferenceShape } from "../train/schedule.ts";
import type { Timings } from "../model/generate.ts";
import {
  type Answer,
  type AnswerBatch,
  type AnswerOptions,
  checkAnswerRequest,
  checkContext,
  type InferenceSession,
  SessionClosedError,
} from "./session.ts";
import { extractAnswer } from "../pipeline/answer.ts";
import type { Tokenizer } from "../pipeline/tokenizer.ts";
import { canWriteIn, exists, rethrowIfDenied } from "../base/exists.ts";
import { sha256Hex } from "../base/sha256.ts";
import { absolutePath, splitPath } from "../base/staging.ts";
import { readFull } from "../base/read_full.ts";
import {
  CHECKSUMS_FILE,
  ChecksumsError,
  readChecksums,
  verifyChecksums,
  writeChecksums,
} from "../base/checksums.ts";

/** The directory the ONNX backend keeps its export of a checkpoint in. */
export const ONNX_CACHE_DIR = "onnx-cache";

/**
 * The record of an ONNX cache's files, in the cache: the size and piecewise SHA-256 of every
 * file the export wrote (base/checksums.ts, as a checkpoint's checksums.json), taken once it
 * is in place and compared before the cache is used again.
 */
export const ONNX_CACHE_RECORD = CHECKSUMS_FILE;

/** The record of the cache's files that earlier versions wrote (whole-file sha256). */
const OLD_CACHE_RECORD = "cache.json";

/**
 * Keys and values of every layer for `length` positions: [B, kv heads, length, head size]
 * (kv heads: nHead, or a Llama's nKvHead).
 */
export interface KvCache {
  /** Positions held. */
  readonly length: number;
  /** Per layer: key, value. */
  readonly layers: [ort.Tensor, ort.Tensor][];
}

/** The backbone's shape, read from the export. */
export interface BackboneShape {
  /** Transformer blocks. */
  nLayer: number;
  /** Attention heads. */
  nHead: number;
  /** Key/value heads: the cache's (nHead, or fewer in a Llama with grouped-query attention). */
  nKvHead: number;
  /** Width of the residual stream (C). */
  dModel: number;
  /** Rows of the token embedding and of the logits (V). */
  vocabSize: number;
}

/** What one backbone run returns (fields present when asked for). */
export interface BackboneOutput {
  /** [B, n, V]: the logits of the last n rows (n = logitsToKeep, or every row when 0). */
  logits?: Float32Array;
  /** [B, T, C] post-final-norm hidden states. */
  hidden?: Float32Array;
  /** The past followed by this run's keys and values. */
  present: KvCache;
}

/** Arguments of {@linkcode OnnxBackbone.forward}. */
export interface ForwardArgs {
  /** [B, T] positions. */
  positions: Int32Array;
  /** [B, past + T]: 1 where a key may be attended to. */
  mask: Uint8Array;
  /** Keys and values to attend to (length 0 for none). */
  past: KvCache;
  /** Logits of the last n rows; 0 = every row; undefined = no logits. */
  logitsToKeep?: number;
  /** Return the hidden states. */
  hidden?: boolean;
}

const i64 = (a: ArrayLike<number>, dims: number[]) =>
  new ort.Tensor("int64", BigInt64Array.from(Array.from(a, (v) => BigInt(v))), dims);

/** The two exported graphs in onnxruntime sessions. */
export class OnnxBackbone {
  /** The backbone's shape, from the export's lotus.json. */
  readonly shape: BackboneShape;
  readonly #ids: ort.InferenceSession;
  readonly #embeds: ort.InferenceSession;
  readonly #wte: { path: string; offset: number };

  private constructor(
    shape: BackboneShape,
    ids: ort.InferenceSession,
    embeds: ort.InferenceSession,
    wte: { path: string; offset: number },
  ) {
    this.shape = shape;
    this.#ids = ids;
    this.#embeds = embeds;
    this.#wte = wte;
  }

  /**
   * Open the graphs of an export directory. `threads` sets onnxruntime's intra-op threads
   * (0: its default, every core).
   */
  static async open(dir: string, opts: { threads?: number } = {}): Promise<OnnxBackbone> {
    const lotus = await readLotusJson(dir);
    if (!lotus.onnx) {
      throw new ExportError(
        `${dir}/lotus.json: field "onnx" is null: this export has no ONNX graphs; export ` +
          `with --format onnx or both`,
      );
    }
    const m = lotus.lotus.model;
    const shape = {
      nLayer: m.nLayer,
      nHead: m.nHead,
      nKvHead: kvHeads(m),
      dModel: m.dModel,
      vocabSize: m.vocabSize,
    };
    const idsPath = `${dir}/${lotus.onnx.ids}`;
    let graph;
    try {
      graph = decodeModel(await Deno.readFile(idsPath));
    } catch (e) {
      throw new ExportError(`${idsPath}: cannot read (${(e as Error).message}); export again`);
    }
    const wteName = tokenEmbeddingName(m);
    const wte = graph.graph.initializer.find((t) => t.name === wteName);
    const offset = Number(wte?.externalData?.find((e) => e.key === "offset")?.value ?? NaN);
    const location = wte?.externalData?.find((e) => e.key === "location")?.value;
    if (!location || !Number.isFinite(offset)) {
      throw new ExportError(
        `${idsPath}: the token embedding "${wteName}" is not in an external file`,
      );
    }
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: ["cpu"],
      graphOptimizationLevel: "all",
      intraOpNumThreads: opts.threads ?? 0,
      logSeverityLevel: 3,
      // Idle pool threads would otherwise spin between runs and take the core that the
      // JavaScript thread needs to prepare the next one: measured 2.6x slower decode steps
      // on two cores (bench/onnx_vs_engine.ts).
      extra: { session: { intra_op: { allow_spinning: "0" } } },
    };
    const open = async (path: string) => {
      try {
        return await ort.InferenceSession.create(path, options);
      } catch (e) {
        throw new ExportError(
          `${path}: onnxruntime cannot load it (${(e as Error).message}); export again`,
        );
      }
    };
    const dirOf = idsPath.slice(0, idsPath.lastIndexOf("/"));
    return new OnnxBackbone(
      shape,
      await open(idsPath),
      await open(`${dir}/${lotus.onnx.embeds}`),
      { path: `${dirOf}/${location}`, offset },
    );
  }

  /** A cache of no positions for a batch of `B`. */
  emptyCache(B: number): KvCache {
    const { nLayer, nHead, nKvHead, dModel } = this.shape;
    const dims = [B, nKvHead, 0, dModel / nHead];
    const t = () => new ort.Tensor("float32", new Float32Array(0), dims);
    return { length: 0, layers: Array.from({ length: nLayer }, () => [t(), t()]) };
  }

  /** Rows of the token embedding table, read from the weight file: [ids.length, C]. */
  async tokenEmbeddings(ids: number[]): Promise<Float32Array> {
    const C = this.shape.dModel, out = new Float32Array(ids.length * C);
    const f = await Deno.open(this.#wte.path, { read: true });
    try {
      for (let i = 0; i < ids.length; i++) {
        const row = new Uint8Array(C * 4);
        await f.seek(this.#wte.offset + ids[i] * C * 4, Deno.SeekMode.Start);
        if ((await readFull(f, row)) < row.length) {
          throw new ExportError(`${this.#wte.path}: ends inside the embeddings`);
        }
        out.set(new Float32Array(row.buffer), i * C);
      }
    } finally {
      f.close();
    }
    return out;
  }

  /**
   * Run the backbone over T new positions of a batch of B: token ids [B, T], or input
   * embeddings [B, T, C] (without positions, which the graph adds).
   */
  async forward(
    input: { ids: ArrayLike<number> } | { embeds: Float32Array },
    B: number,
    T: number,
    args: ForwardArgs,
  ): Promise<BackboneOutput> {
    const { nLayer, dModel: C } = this.shape;
    const S = args.past.length + T;
    const feeds: Record<string, ort.Tensor> = {
      attention_mask: i64(args.mask, [B, S]),
      position_ids: i64(args.positions, [B, T]),
      num_logits_to_keep: i64([args.logitsToKeep ?? 1], []),
    };
    let session = this.#ids;
    if ("ids" in input) feeds.input_ids = i64(input.ids, [B, T]);
    else {
      feeds.inputs_embeds = new ort.Tensor("float32", input.embeds, [B, T, C]);
      session = this.#embeds;
    }
    const fetches: string[] = [];
    for (let l = 0; l < nLayer; l++) {
      feeds[pastKey(l)] = args.past.layers[l][0];
      feeds[pastValue(l)] = args.past.layers[l][1];
      fetches.push(presentKey(l), presentValue(l));
    }
    if (args.logitsToKeep !== undefined) fetches.push("logits");
    if (args.hidden) fetches.push("last_hidden_state");
    const out = await session.run(feeds, fetches);
    return {
      logits: args.logitsToKeep !== undefined ? out.logits.data as Float32Array : undefined,
      hidden: args.hidden ? out.last_hidden_state.data as Float32Array : undefined,
      present: {
        length: S,
        layers: Array.from(
          { length: nLayer },
          (_, l) => [out[presentKey(l)], out[presentValue(l)]] as [ort.Tensor, ort.Tensor],
        ),
      },
    };
  }

  /** Release the sessions. */
  async close(): Promise<void> {
    await this.#ids.release();
    await this.#embeds.release();
  }
}

/**
 * What keeps `dir` from being an ONNX export (the backend's cache of a checkpoint, or one
 * `deno task export` wrote): undefined when there is nothing there, null when it holds
 * lotus.json and the graph, otherwise what is missing (or that it is not a directory). Its
 * files are checked against their record apart from this.
 */
async function exportDamage(dir: string): Promise<string | null | undefined> {
  let info;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    rethrowIfDenied(e);
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw e;
  }
  if (!info.isDirectory) return `${dir} is not a directory`;
  if ((await Array.fromAsync(Deno.readDir(dir))).length === 0) return `${dir} is empty`;
  const onnxDir = ONNX_FILES.ids.slice(0, ONNX_FILES.ids.lastIndexOf("/"));
  for (const f of ["lotus.json", onnxDir, ONNX_FILES.ids]) {
    if (!(await exists(`${dir}/${f}`))) return `${dir}/${f} is missing`;
  }
  return null;
}

/** The files an ONNX cache must record: those the backend reads. */
const RECORDED = [
  "lotus.json",
  "tokenizer.json",
  ONNX_FILES.ids,
  ONNX_FILES.embeds,
  ONNX_FILES.weights,
];

/**
 * Why the ONNX cache of checkpoint `ck` cannot be used as it is, or null when it can: it was
 * exported from other weights, config.json or train state than the checkpoint's, or one of
 * its files is not the one its export wrote (a size or sha256 that differs from its record, a
 * file missing, no record). Throws only for a checkpoint that fails its own verification.
 */
async function staleCache(ck: string, cache: string): Promise<string | null> {
  let lotus;
  try {
    lotus = await readLotusJson(cache);
  } catch (e) {
    if (!(e instanceof ExportError)) throw e;
    return `${cache}/lotus.json cannot be read`;
  }
  const path = `${cache}/${ONNX_CACHE_RECORD}`;
  let sums;
  try {
    sums = await readChecksums(path);
  } catch (e) {
    if (!(e instanceof ChecksumsError)) throw e;
    return `${e.message.split("\n")[0]} (not a record of the cache's files)`;
  }
  if (sums === null) {
    return (await exists(`${cache}/${OLD_CACHE_RECORD}`))
      ? `${cache}/${OLD_CACHE_RECORD} is the record of an earlier version (whole-file sha256); ` +
        `the cache's files are now recorded in ${ONNX_CACHE_RECORD}`
      : `${path} is missing (the cache has no record of its files)`;
  }
  const missing = RECORDED.find((f) => !(f in sums.files));
  if (missing !== undefined) return `${path} does not record ${missing}`;
  if (lotus.source.sha256 !== (await checkpointFingerprint(ck))) {
    return `${ck}'s config.json or weights changed since ${cache} was exported`;
  }
  // The cache was exported from a sound checkpoint, but the checkpoint is verified again: a
  // file damaged or replaced since (tokenizer.json, optimizer.safetensors) is refused here
  // as the engines refuse it.
  const { state } = await loadCheckpoint(ck, { trainState: "optional" });
  if (lotus.epoch !== state?.epoch || (state && (lotus.step ?? 0) !== state.step)) {
    return `${ck}/train_state.json differs from the position ${cache} was exported at`;
  }
  const bad = await verifyChecksums(cache, sums);
  if (bad !== null) {
    return `${cache}/${bad.name} is not the file exported there (${bad.problem}, ` +
      `${ONNX_CACHE_RECORD})`;
  }
  return null;
}

/** An environment variable, or undefined when unset or not readable (no --allow-env). */
function envOrUndefined(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Where the ONNX cache of checkpoint `ck` goes when `ck` cannot be written to: under the
 * user's cache directory ($XDG_CACHE_HOME, else $HOME/.cache), in `lotus-deno/onnx-cache/`,
 * named by a digest of the checkpoint's real path (so each checkpoint has its own, checked
 * against it as a cache inside it would be).
 */
function userCacheFor(ck: string): string {
  const xdg = envOrUndefined("XDG_CACHE_HOME"), home = envOrUndefined("HOME");
  const root = xdg ?? (home ? `${home}/.cache` : undefined);
  if (root === undefined) {
    throw new ExportError(
      `${ck} cannot be written to, so its ONNX cache cannot be kept there, and neither ` +
        `$XDG_CACHE_HOME nor $HOME is set to keep it elsewhere: export it once with deno task ` +
        `export --checkpoint ${ck} --format onnx --out DIR, and pass DIR instead`,
    );
  }
  const key = sha256Hex(Deno.realPathSync(ck)).slice(0, 16);
  return `${root}/lotus-deno/${ONNX_CACHE_DIR}/${key}`;
}

/**
 * The export directory for `path`: `path` itself when it is an export with ONNX graphs,
 * whose weights are checked first (they lie in their file and are finite); otherwise `path`
 * is a checkpoint (or a run directory), exported on first use to `<checkpoint>/onnx-cache/`
 * and exported again, with a one-line note to `log`, whenever the checkpoint's weights,
 * config or train state change or a file of the cache is not the one its export wrote (the
 * size and piecewise sha256 of every file is recorded in its checksums.json). A checkpoint
 * in a directory this process cannot write to, without a valid cache of its own, keeps its
 * cache under the user's cache directory instead ({@linkcode userCacheFor}). Calls for the
 * same checkpoint in one process take turns: a session opened while another is exporting the
 * checkpoint waits for that export and uses it.
 */
export async function onnxExportFor(
  path: string,
  log: (s: string) => void = console.error,
): Promise<string> {
  if ((await exportDamage(path)) === null) {
    const lotus = await readLotusJson(path);
    const problems = lotus.onnx ? await checkOnnxWeights(path, lotus.onnx) : [];
    if (problems.length > 0) {
      const more = problems.length > 1 ? ` (and ${problems.length - 1} more problems)` : "";
      throw new ExportError(
        `${path}/${problems[0]}${more}; the export is damaged: export the checkpoint again ` +
          `(deno task export), or pass the checkpoint itself, whose ONNX cache is checked`,
      );
    }
    return path;
  }
  if (await exists(`${path}/lotus.json`)) {
    throw new ExportError(
      `${path}: this export has no ONNX graphs (${ONNX_FILES.ids}); export with --format ` +
        `onnx or both, or pass the checkpoint`,
    );
  }
  const ck = checkpointDirOf(path);
  return await oneCacheAtATime(ck, () => cacheFor(path, ck, log));
}

/**
 * The cache exports of this process, by checkpoint directory: a session opened while another
 * exports the same checkpoint waits for that export, then finds its cache valid, rather than
 * meeting its lock.
 */
const cacheExports = new Map<string, Promise<unknown>>();

/** `f`, once every earlier call for the checkpoint `ck` in this process has settled. */
async function oneCacheAtATime<T>(ck: string, f: () => Promise<T>): Promise<T> {
  const key = absolutePath(ck);
  const before = cacheExports.get(key);
  const mine = (async () => {
    await before?.catch(() => {});
    return await f();
  })();
  cacheExports.set(key, mine);
  try {
    return await mine;
  } finally {
    if (cacheExports.get(key) === mine) cacheExports.delete(key);
  }
}

/** {@linkcode onnxExportFor} for `path`, a checkpoint or run directory, whose checkpoint is `ck`. */
async function cacheFor(path: string, ck: string, log: (s: string) => void): Promise<string> {
  try {
    await refuseUnsavedRun(path, ck);
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    throw new ExportError(e.message);
  }
  if (!(await exists(`${ck}/config.json`))) {
    throw new ExportError(
      `${path}: neither an export (no lotus.json) nor a checkpoint (no config.json here or ` +
        `in ${path}/checkpoint); pass a directory from deno task train or deno task export`,
    );
  }
  // Why a cache is not used (null: it is valid; undefined: there is none). Both places a cache
  // can be (the fixed name in the checkpoint, the path userCacheFor computes) are the
  // backend's own, so a damaged one is exported again whatever it holds.
  const stale = async (c: string) => {
    const damage = await exportDamage(c);
    return damage === null ? await staleCache(ck, c) : damage;
  };
  let cache = `${ck}/${ONNX_CACHE_DIR}`;
  let why = await stale(cache), elsewhere = "";
  if (why === null) return cache;
  if (!(await canWriteIn(ck))) {
    cache = userCacheFor(ck);
    elsewhere = `; ${ck} cannot be written to`;
    await Deno.mkdir(splitPath(cache).parent, { recursive: true });
    why = await stale(cache);
    if (why === null) return cache;
  }
  if (why !== undefined) log(`onnx: ${why}: exporting ${ck} to ${cache} again${elsewhere}`);
  else log(`onnx: exporting ${ck} to ${cache} (once per checkpoint${elsewhere})`);
  const r = await exportCheckpoint(ck, cache, { format: "onnx", replaceAny: true });
  // Last: a process killed before this leaves a cache without a record, exported again on
  // its next use.
  await writeChecksums(cache, r.files, ONNX_CACHE_RECORD);
  return cache;
}

/**
 * The tokenizer of export `dir`, refused when it is missing, damaged, or not the model's
 * (another vocabulary size or other special ids than lotus.json's).
 */
async function exportTokenizer(dir: string, lotus: LotusJson): Promise<Tokenizer> {
  const path = `${dir}/tokenizer.json`, again = "export the checkpoint again (deno task export)";
  let json: string;
  try {
    json = await Deno.readTextFile(path);
  } catch (e) {
    rethrowIfDenied(e);
    const what = e instanceof Deno.errors.NotFound
      ? "missing"
      : `cannot read (${(e as Error).message})`;
    throw new ExportError(`${path}: ${what}; ${again}`);
  }
  try {
    return tokenizerOfModel(json, path, {
      vocabSize: lotus.lotus.model.vocabSize,
      special: lotus.special,
      owner: "export",
      file: "lotus.json",
      vocabField: "lotus.model.vocabSize",
      specialField: "special.",
    }, again);
  } catch (e) {
    throw new ExportError((e as Error).message);
  }
}

/** Index of the largest value of each of `rows` rows of width V (lowest index on ties). */
function argmaxRows(logits: Float32Array, rows: number, V: number): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0, bv = logits[r * V];
    for (let v = 1; v < V; v++) {
      const x = logits[r * V + v];
      if (x > bv) bv = x, best = v;
    }
    out[r] = best;
  }
  return out;
}

/**
 * Open an export directory, or a checkpoint (exported to a cache on first use, see
 * {@linkcode onnxExportFor}), for inference on onnxruntime-node.
 *
 * @example
 * ```ts ignore
 * import { openOnnxInference } from "./onnx_session.ts";
 * const s = await openOnnxInference("out/export/default");
 * console.log((await s.answer(["Ann has 2 pens and buys 3. How many pens?"])).answers[0]);
 * await s.close();
 * ```
 */
export async function openOnnxInference(
  path: string,
  opts: { threads?: number; maxBatch?: number; maxNewTokens?: number; quiet?: boolean } = {},
): Promise<InferenceSession & AsyncDisposable> {
  // Quiet: the export's line is one of the session's notes rather than printed.
  const logged: string[] = [];
  const dir = await onnxExportFor(path, opts.quiet ? (line) => logged.push(line) : undefined);
  const lotus: LotusJson = await readLotusJson(dir);
  const tok = await exportTokenizer(dir, lotus);
  const net = await OnnxBackbone.open(dir, { threads: opts.threads });
  const meta = lotus.lotus, sp = lotus.special, V = net.shape.vocabSize, C = net.shape.dModel;
  const [eBot, eLat] = [
    await net.tokenEmbeddings([sp.bot]),
    await net.tokenEmbeddings([sp.lat]),
  ];
  const maxBatch = opts.maxBatch ?? 32, maxNew = opts.maxNewTokens ?? 64;
  // Without an epoch (the checkpoint's train_state.json could not be read when it was
  // exported), the export is at its final curriculum stage, as lotus.json's K and R say.
  const progress = progressOf(
    meta,
    lotus.epoch === undefined ? null : { epoch: lotus.epoch, step: lotus.step ?? 0 },
  );
  const base = inferenceShape(meta, progress);
  const notes = lotus.epoch === undefined
    ? [
      ...logged,
      trainStateNote(
        meta,
        `${dir}/lotus.json: no "epoch": the checkpoint's train_state.json could not be read ` +
          `when it was exported`,
        base,
      ),
    ]
    : logged;
  const lotusMode = lotus.mode === "lotus";

  let closed = false;
  async function close(): Promise<void> {
    // A second close does nothing, as on the native backend.
    if (closed) return;
    closed = true;
    await net.close();
  }
  async function answer(questions: string[], o: AnswerOptions = {}): Promise<AnswerBatch> {
    if (closed) throw new SessionClosedError();
    checkAnswerRequest(questions, o, maxBatch, tok);
    const { K, R, c } = inferenceShape(meta, progress, o);
    const budget = o.maxNewTokens ?? maxNew;
    const B = questions.length;
    const pre = leftPadQuestions(
      questions.map((q) => Int32Array.from(tok.encode(q.trim() + "\n"))),
      sp.pad,
    );
    const P = pre.P, L = lotusMode ? 1 + K * c : 0;
    checkContext(
      Array.from(pre.qLen),
      { lotus: lotusMode, K, c, budget },
      meta.model.maxPositions,
    );
    const T0 = performance.now();
    const prefix = await net.forward({ ids: pre.ids }, B, P, {
      positions: pre.pos,
      mask: pre.valid,
      past: net.emptyCache(B),
      logitsToKeep: lotusMode ? undefined : 1,
    });
    const T1 = performance.now();

    let past = prefix.present;
    let latentLogits: Float32Array | undefined;
    let T2 = T1;
    if (lotusMode) {
      const ids = new Int32Array(B * L).fill(sp.lat), pos = new Int32Array(B * L);
      const mask = new Uint8Array(B * (P + L));
      for (let b = 0; b < B; b++) {
        ids[b * L] = sp.bot;
        for (let i = 0; i < L; i++) pos[b * L + i] = pre.qLen[b] + i;
        mask.set(pre.valid.subarray(b * P, (b + 1) * P), b * (P + L));
        mask.fill(1, b * (P + L) + P, (b + 1) * (P + L));
      }
      let h: Float32Array | undefined;
      let pass: BackboneOutput | undefined;
      let input: { ids: Int32Array } | { embeds: Float32Array } = { ids };
      const args = { positions: pos, mask, past: prefix.present };
      for (let r = 0; r <= R; r++) {
        if (r > 0) {
          // Latent i's input is e_LAT + h_i ("add") or h_i ("replace"); BOT stays plain.
          const x = new Float32Array(B * L * C);
          for (let b = 0; b < B; b++) {
            x.set(eBot, b * L * C);
            for (let i = 1; i < L; i++) {
              const at = (b * L + i) * C;
              for (let j = 0; j < C; j++) {
                x[at + j] = (lotus.injection === "add" ? eLat[j] : 0) + h![at + j];
              }
            }
          }
          input = { embeds: x };
        }
        pass = await net.forward(input, B, L, { ...args, hidden: r < R });
        h = pass.hidden;
      }
      past = pass!.present;
      T2 = performance.now();
      // The readout is a measurement, not part of answering: as on the engine, it is timed in
      // no phase. The last pass runs again for the logits of every loop row.
      if (o.latentLogits) {
        latentLogits = (await net.forward(input, B, L, { ...args, logitsToKeep: 0 })).logits;
      }
    }
    const T2d = performance.now();

    const out: number[][] = Array.from({ length: B }, () => []);
    const done = new Uint8Array(B);
    const accept = (next: Int32Array) => {
      for (let b = 0; b < B; b++) {
        if (done[b]) continue;
        if (next[b] === sp.eos) done[b] = 1;
        else out[b].push(next[b]);
      }
    };
    const stepMs: number[] = [];
    let steps = 0, tStep = T2d;
    let next: Int32Array = new Int32Array(B).fill(sp.eot);
    if (!lotusMode) {
      // The prefix's last row already predicts the first answer token.
      next = argmaxRows(prefix.logits!, B, V);
      accept(next);
      steps = 1;
      const now = performance.now();
      stepMs.push(now - tStep), tStep = now;
    }
    while (steps < budget && !done.every((d) => d === 1)) {
      const len = past.length;
      const pos = new Int32Array(B), mask = new Uint8Array(B * (len + 1));
      for (let b = 0; b < B; b++) {
        pos[b] = pre.qLen[b] + (len - P);
        mask.set(pre.valid.subarray(b * P, (b + 1) * P), b * (len + 1));
        mask.fill(1, b * (len + 1) + P, (b + 1) * (len + 1));
      }
      const step = await net.forward({ ids: next }, B, 1, {
        positions: pos,
        mask,
        past,
        logitsToKeep: 1,
      });
      past = step.present;
      next = argmaxRows(step.logits!, B, V);
      accept(next);
      steps++;
      const now = performance.now();
      stepMs.push(now - tStep), tStep = now;
    }
    const T3 = performance.now();
    // Built as a variable: Timings may carry more fields on other branches (per-step times).
    const timings = {
      prefillMs: T1 - T0,
      thoughtMs: T2 - T1,
      decodeMs: T3 - T2d,
      decodeSteps: steps,
      stepMs,
    };
    const answers: Answer[] = out.map((t, i) => {
      const text = tok.decode(t);
      return {
        text,
        answer: extractAnswer(text),
        tokens: t,
        latentLogits: latentLogits ? latentLogits.slice(i * L * V, (i + 1) * L * V) : undefined,
      };
    });
    const result: Timings = timings;
    return {
      answers,
      timings: result,
      K: lotusMode ? K : 0,
      R: lotusMode ? R : 0,
      c,
    };
  }

  return {
    meta,
    tokenizer: tok,
    backend: "onnx",
    shape: base,
    notes,
    answer,
    close,
    [Symbol.asyncDispose]: close,
  };
}

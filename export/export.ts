/**
 * Export a checkpoint to standard formats (docs/export.md):
 *
 * - `hf`: a Hugging Face directory (config.json, model.safetensors, the tokenizer files,
 *   generation_config.json) that Python `transformers` loads as GPT2LMHeadModel, or as
 *   LlamaForCausalLM for a Llama checkpoint;
 * - `onnx`: the backbone as ONNX graphs under `onnx/` (token ids in, and input embeddings in,
 *   sharing one weight file; export/onnx_gpt2.ts or export/onnx_llama.ts), with the same JSON
 *   files, which `@huggingface/transformers` runs for text generation and which the ONNX
 *   inference backend drives for LOTUS;
 * - `both`: one directory with everything.
 *
 * Every export also holds `lotus.json` (K, c, R, the injection, the special-token ids). The
 * directory is written beside its destination and renamed into place (base/staging.ts,
 * replaceDir), so an interrupted export never leaves half a directory, and what a killed
 * export leaves beside it is cleared by the next one.
 *
 * @module
 */

import { Sha256 } from "../base/sha256.ts";
import { fieldIssue } from "../base/json.ts";
import { type OptionNames, refuseMistyped, refuseUnknownOptions } from "../base/options.ts";
import {
  CHECKSUM_PIECE,
  type Checksums,
  CHECKSUMS_FILE,
  ChecksumsError,
  fileChecksum,
  readChecksums,
} from "../base/checksums.ts";
import {
  checkpointDirOf,
  CheckpointError,
  loadCheckpoint,
  progressOf,
  recoverCheckpoint,
  refuseUnsavedRun,
  toHfTensors,
  trainStateNote,
} from "../model/checkpoint.ts";
import { absolutePath, followLink, replaceDir, StagingError } from "../base/staging.ts";
import { signalTurns } from "../base/signals.ts";
import { paramLayout } from "../model/params.ts";
import { inferenceShape } from "../train/schedule.ts";
import { gpt2Graph, gpt2Weights } from "./onnx_gpt2.ts";
import { llamaGraph, llamaWeights } from "./onnx_llama.ts";
import { ONNX_OPSET } from "./onnx_decoder.ts";
import { llamaConfigJson } from "../model/hf_llama.ts";
import { encodeModel } from "./onnx_proto.ts";
import {
  exportTokenizerJson,
  generationConfigJson,
  gpt2ConfigJson,
  type LotusJson,
  LotusJsonSchema,
  lotusSummaryIssue,
  ONNX_FILES,
  type SpecialTexts,
  specialTokensMapJson,
  tokenizerConfigJson,
  tokenText,
} from "./hf_files.ts";
import { writeSafetensors } from "../base/safetensors.ts";
import { exists, rethrowIfDenied } from "../base/exists.ts";

/** Raised when a checkpoint cannot be exported, or an export cannot be read; says what to do. */
export class ExportError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "ExportError";
  }
}

/** What to write: Hugging Face safetensors, ONNX graphs, or both in one directory. */
export type ExportFormat = "hf" | "onnx" | "both";

/** Options of {@linkcode exportCheckpoint}. */
export interface ExportOptions {
  /** Default "both". */
  format?: ExportFormat;
  /**
   * Replace whatever `out` holds, not only an earlier export or an empty directory: for a
   * directory that the caller alone owns (the ONNX backend's cache of a checkpoint, whose
   * damaged contents are exported again). Default false.
   */
  replaceAny?: boolean;
  /**
   * Stops the export when aborted (`deno task export` aborts it on SIGINT, SIGTERM or SIGHUP): it is
   * looked at between the files, and an export it stops is removed, `out` left as it was,
   * and the promise rejects with an {@linkcode ExportError} that says so.
   */
  signal?: AbortSignal;
}

/** Every option of {@linkcode ExportOptions}. */
const EXPORT_OPTIONS: OptionNames<ExportOptions> = { format: true, replaceAny: true, signal: true };

/** What an export wrote. */
export interface ExportResult {
  /** The export directory. */
  dir: string;
  /** Files written, relative to `dir`. */
  files: string[];
  /** Total bytes written. */
  bytes: number;
  /** The `lotus.json` content. */
  lotus: LotusJson;
  /**
   * What the export assumed, one line each: a checkpoint without a readable
   * train_state.json is exported at its final curriculum stage.
   */
  notes: string[];
}

/** The files of a checkpoint that {@linkcode checkpointFingerprint} covers. */
const FINGERPRINTED = ["config.json", "model.safetensors"] as const;

/**
 * sha256 (hex) of a checkpoint's config.json and model.safetensors: what an export was made
 * from, so a cached export can tell that its checkpoint changed. It is a digest of each file's
 * size and piece digests, as the checkpoint's checksums.json records them (base/checksums.ts):
 * taken from that record when the checkpoint has one (a load verifies the files against it),
 * so the weights are not hashed a second time; computed from the files, a piece at a time,
 * otherwise. Either way the same checkpoint has the same fingerprint.
 */
export async function checkpointFingerprint(checkpoint: string): Promise<string> {
  const dir = checkpointDirOf(checkpoint);
  let sums: Checksums | null = null;
  try {
    sums = await readChecksums(`${dir}/${CHECKSUMS_FILE}`);
  } catch (e) {
    // A damaged record: the files themselves say what they hold (a load refuses the record).
    if (!(e instanceof ChecksumsError)) throw e;
  }
  const h = new Sha256().update("lotus-checkpoint-fingerprint 2\n");
  for (const f of FINGERPRINTED) {
    let rec = sums?.pieceBytes === CHECKSUM_PIECE ? sums.files[f] : undefined;
    if (rec === undefined) {
      try {
        rec = await fileChecksum(`${dir}/${f}`);
      } catch (e) {
        rethrowIfDenied(e);
        throw new ExportError(
          `${dir}/${f}: cannot read (${(e as Error).message}); is this a checkpoint directory?`,
        );
      }
    }
    h.update(`${f} ${rec.bytes} ${rec.sha256.join(" ")}\n`);
  }
  return h.hex();
}

/** Read and validate an export's `lotus.json`. */
export async function readLotusJson(dir: string): Promise<LotusJson> {
  const path = `${dir}/lotus.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new ExportError(
      `${path}: cannot read (${(e as Error).message}); export the checkpoint again ` +
        `with deno task export`,
    );
  }
  const res = LotusJsonSchema.safeParse(raw);
  if (!res.success) {
    throw new ExportError(
      `${path}: ${fieldIssue(res.error)}; export the checkpoint again with deno task export`,
    );
  }
  const issue = lotusSummaryIssue(res.data);
  if (issue !== null) {
    throw new ExportError(
      `${path}: ${issue}; the file was edited since the export: export the checkpoint again ` +
        `with deno task export`,
    );
  }
  return res.data;
}

/**
 * What an export directory holds: the entries an earlier export may have there. A file the
 * export writes must be listed (its top-level entry), or the next export over it is refused;
 * export_test re-exports over a `both` export to keep the two in step.
 */
const EXPORT_ENTRIES: readonly string[] = [
  "config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "lotus.json",
  "model.safetensors",
  "onnx",
];

/**
 * Export a checkpoint (or a run directory holding `checkpoint/`) to `out`. An existing `out`
 * is replaced only when it is an earlier export (it holds lotus.json) with no other files, or
 * is empty, unless `opts.replaceAny` is set.
 *
 * @throws {ExportError} for an option that {@linkcode ExportOptions} does not have or a
 * `format` it does not know, or when the checkpoint cannot be read or `out` cannot take the
 * export, saying what to do.
 * @throws {StagingError} when this process is already exporting to `out` (two exports to one
 * directory at once): wait for that one.
 *
 * @example
 * ```ts ignore
 * import { exportCheckpoint } from "./export.ts";
 * const r = await exportCheckpoint("out/runs/default", "out/export/default", { format: "both" });
 * console.log(r.files);
 * ```
 */
export async function exportCheckpoint(
  checkpoint: string,
  out: string,
  opts: ExportOptions = {},
): Promise<ExportResult> {
  refuseUnknownOptions("exportCheckpoint", opts, EXPORT_OPTIONS, (m) => new ExportError(m));
  // A truthy "no" would replace whatever out holds.
  refuseMistyped(
    "exportCheckpoint",
    opts,
    { replaceAny: "boolean", signal: "AbortSignal" },
    (m) => new ExportError(m),
  );
  // "out/." or "..": the directory they name, by its path. Renamed as they stand, "." and
  // ".." cannot be (the system refuses), and a relative path would lose its way once the
  // working directory is the one replaced.
  if (/(^|\/)\.\.?\/*$/.test(out)) out = absolutePath(out);
  // A link (out/export/default -> /data/exports/default): the export goes where it points and
  // the link stays. Renamed into place as it stands, the new export would take the link's
  // place, and the directory it points to would keep the earlier export.
  const given = out;
  try {
    out = await followLink(out);
  } catch (e) {
    throw e instanceof StagingError ? new ExportError(e.message) : e;
  }
  const format = opts.format ?? "both";
  if (!["hf", "onnx", "both"].includes(format)) {
    throw new ExportError(`format "${format}": must be hf, onnx or both`);
  }
  if (await exists(`${checkpoint}/lotus.json`)) {
    let from = "";
    try {
      from = `: export from ${
        (await readLotusJson(checkpoint)).source.checkpoint
      }, it was made from`;
    } catch { /* an unreadable lotus.json: say what the directory is all the same */ }
    throw new ExportError(
      `${checkpoint} is an export (it holds lotus.json), not a checkpoint${from}`,
    );
  }
  let outInfo: Deno.FileInfo | null = null;
  try {
    outInfo = await Deno.stat(out);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (outInfo !== null && !outInfo.isDirectory && !opts.replaceAny) {
    throw new ExportError(`${out}: exists and is a file; choose another --out`);
  }
  await recoverCheckpoint(checkpoint);
  const dir = checkpointDirOf(checkpoint);
  try {
    await refuseUnsavedRun(checkpoint, dir);
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    throw new ExportError(`cannot export: ${e.message}`);
  }
  if (!(await exists(`${dir}/config.json`))) {
    throw new ExportError(
      `${checkpoint}: no config.json here or in ${checkpoint}/checkpoint; pass a checkpoint ` +
        `directory written by deno task train`,
    );
  }
  // Replacing `out` must not replace the checkpoint: `out` may not be it, nor hold it (its run
  // directory, say), even with replaceAny.
  if (outInfo?.isDirectory) {
    const [outReal, ckReal] = [await Deno.realPath(out), await Deno.realPath(dir)];
    if (ckReal === outReal || ckReal.startsWith(outReal.replace(/\/?$/, "/"))) {
      throw new ExportError(
        `${out}: ${ckReal === outReal ? "is" : "holds"} the checkpoint being exported ` +
          `(${dir}), which the export would replace; choose another --out`,
      );
    }
  }
  let ck;
  try {
    // train_state.json only places the checkpoint in the curriculum: without it, the export
    // takes the final stage and says so.
    ck = await loadCheckpoint(dir, { trainState: "optional" });
  } catch (e) {
    throw new ExportError(`cannot export: ${(e as Error).message}`);
  }
  // loadCheckpoint verified the checkpoint: config.json, the weights (finite) and the
  // tokenizer (its vocabulary and special ids) describe one model.
  const meta = ck.meta, cfg = meta.model, sp = meta.special;
  const llama = cfg.arch === "llama";
  const tokPath = `${dir}/tokenizer.json`;
  const parsedTok = JSON.parse(ck.tokenizerJson);
  const text = (id: number, what: string) => {
    const t = tokenText(parsedTok, id);
    if (t === undefined) {
      throw new ExportError(`${tokPath}: no token with id ${id} (the ${what} token)`);
    }
    return t;
  };
  const texts: SpecialTexts = {
    eos: text(sp.eos, "EOS"),
    pad: text(sp.pad, "PAD"),
    bot: text(sp.bot, "BOT"),
    eot: text(sp.eot, "EOT"),
    lat: text(sp.lat, "LAT"),
  };
  const shape = inferenceShape(meta, progressOf(meta, ck.state));
  const notes = ck.stateProblem === null ? [] : [trainStateNote(meta, ck.stateProblem, shape)];
  const mode = meta.train.mode === "cot" || meta.train.mode === "nocot" ? meta.train.mode : "lotus";
  const withHf = format !== "onnx", withOnnx = format !== "hf";
  const lotus: LotusJson = {
    format: "lotus-export",
    version: 1,
    mode,
    K: shape.K,
    c: shape.c,
    R: shape.R,
    injection: meta.train.injection,
    special: sp,
    tokens: { bot: texts.bot, eot: texts.eot, lat: texts.lat },
    ...(ck.state ? { epoch: ck.state.epoch, step: ck.state.step } : {}),
    lotus: meta,
    onnx: withOnnx ? { ...ONNX_FILES, opset: ONNX_OPSET } : null,
    source: { checkpoint: dir, sha256: await checkpointFingerprint(dir) },
  };

  if (!opts.replaceAny && await exists(out)) {
    const names = (await Array.fromAsync(Deno.readDir(out))).map((e) => e.name);
    if (names.length > 0 && !names.includes("lotus.json")) {
      throw new ExportError(
        `${out}: exists and is not an export (no lotus.json); choose another --out or remove it`,
      );
    }
    // The export replaces the directory whole: a file added beside an earlier export (a model
    // card, notes) would go with it.
    const foreign = names.filter((n) => !EXPORT_ENTRIES.includes(n)).sort();
    if (foreign.length > 0) {
      const listed = foreign.slice(0, 5).join(", ") +
        (foreign.length > 5 ? ` and ${foreign.length - 5} more` : "");
      throw new ExportError(
        `${out}: holds ${listed} beside an earlier export; the export replaces the directory ` +
          `whole, which would delete ${foreign.length === 1 ? "it" : "them"}: move ` +
          `${foreign.length === 1 ? "it" : "them"} elsewhere first, or choose another --out`,
      );
    }
  }
  const files: string[] = [];
  // A signal that has come reaches its listener (and aborts) only after two turns of the
  // event loop (signalTurns), so each look at the signal waits for them first.
  const stopped = async () => {
    if (opts.signal) await signalTurns();
    if (opts.signal?.aborted) {
      throw new ExportError(
        `the export to ${out} was stopped (${String(opts.signal.reason)}) before it was ` +
          `complete: what it had written is removed, and ${out} is as it was`,
      );
    }
  };
  await stopped();
  await replaceDir(out, async (tmp) => {
    const json = async (name: string, obj: unknown) => {
      await Deno.writeTextFile(`${tmp}/${name}`, JSON.stringify(obj, null, 2) + "\n");
      files.push(name);
      await stopped();
    };
    await json(
      "config.json",
      llama ? llamaConfigJson(cfg, sp, withOnnx) : gpt2ConfigJson(cfg, sp, withOnnx),
    );
    await Deno.writeTextFile(`${tmp}/tokenizer.json`, exportTokenizerJson(ck.tokenizerJson));
    files.push("tokenizer.json");
    await stopped();
    await json("tokenizer_config.json", tokenizerConfigJson(parsedTok, texts, cfg.maxPositions));
    await json("special_tokens_map.json", specialTokensMapJson(texts));
    await json("generation_config.json", generationConfigJson(sp, meta.train.maxNewTokens));
    await json("lotus.json", lotus);
    if (withHf) {
      const tensors = toHfTensors(ck.params, paramLayout(cfg), "transformer.");
      await writeSafetensors(`${tmp}/model.safetensors`, tensors, { format: "pt" });
      files.push("model.safetensors");
      await stopped();
    }
    if (withOnnx) {
      await Deno.mkdir(`${tmp}/onnx`);
      const [weigh, graph] = llama ? [llamaWeights, llamaGraph] : [gpt2Weights, gpt2Graph];
      const weights = weigh(cfg, ck.params);
      await weights.write(`${tmp}/${ONNX_FILES.weights}`);
      await stopped();
      await Deno.writeFile(`${tmp}/${ONNX_FILES.ids}`, encodeModel(graph(cfg, weights, "ids")));
      await Deno.writeFile(
        `${tmp}/${ONNX_FILES.embeds}`,
        encodeModel(graph(cfg, weights, "embeds")),
      );
      files.push(ONNX_FILES.weights, ONNX_FILES.ids, ONNX_FILES.embeds);
      await stopped();
    }
  });
  let bytes = 0;
  for (const f of files) bytes += (await Deno.stat(`${out}/${f}`)).size;
  return { dir: given, files, bytes, lotus, notes };
}

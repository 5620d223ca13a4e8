/**
 * Inference from a checkpoint directory: load it on a backend, then answer questions given
 * as text. This is the one entry point that evaluation (`deno task eval`) and `deno task
 * infer` use, whatever the backend.
 *
 * @module
 */

import {
  CheckpointError,
  loadCheckpoint,
  progressOf,
  trainStateNote,
} from "../model/checkpoint.ts";
import type { Engine, Precision } from "../engine/ffi.ts";
import { Generator } from "../model/generate.ts";
import {
  type AnswerBatch,
  type AnswerOptions,
  checkAnswerRequest,
  checkContext,
  checkOpenOptions,
  DEFAULT_INFERENCE_BACKEND,
  type InferenceBackend,
  type InferenceSession,
  OnnxRuntimeError,
  SessionClosedError,
} from "./session.ts";
import { Model } from "../model/model.ts";
import { selectEngine } from "../engine/backend.ts";
import { inferenceShape } from "../train/schedule.ts";
import { extractAnswer } from "../pipeline/answer.ts";
import { exists } from "../base/exists.ts";
import { type OptionNames, refuseMistyped, refuseUnknownOptions } from "../base/options.ts";

/** Options of {@linkcode openInference}. */
export interface OpenInferenceOptions {
  /** Where to run (default {@linkcode DEFAULT_INFERENCE_BACKEND}). */
  backend?: InferenceBackend;
  /** Matmul precision on CUDA (default fp32). */
  precision?: Precision;
  /** CPU threads (0 or unset: all cores). */
  threads?: number;
  /** Questions per answer() call at most (default 32). */
  maxBatch?: number;
  /** Question length, in tokens, to size the buffers for up front. */
  maxQuestionTokens?: number;
  /** Generation budget per answer (default 64). */
  maxNewTokens?: number;
  /**
   * Print nothing on stderr. Otherwise opening a session may print the compiler's command when
   * the engine is built on first use, backend "auto"'s fallback to the CPU and why, and the
   * onnx backend's export of a checkpoint to its cache. With `quiet`, the last two are in the
   * session's `notes` instead (default false).
   */
  quiet?: boolean;
}

/** Every option of {@linkcode OpenInferenceOptions}. */
const OPEN_OPTIONS: OptionNames<OpenInferenceOptions> = {
  backend: true,
  precision: true,
  threads: true,
  maxBatch: true,
  maxQuestionTokens: true,
  maxNewTokens: true,
  quiet: true,
};

/**
 * What to do when onnxruntime-node does not load, from the first line of the error: a
 * missing --allow-ffi for its native library (under a `node_modules` that a project using
 * lotus-deno names in full) is granted; anything else is a missing or damaged install.
 */
function onnxLoadHint(message: string): string {
  const denied = /Requires ffi access to "([^"]+)"/.exec(message)?.[1];
  if (denied !== undefined) {
    const at = denied.lastIndexOf("/node_modules/");
    const dir = at < 0 ? denied : denied.slice(0, at + "/node_modules".length);
    return `grant --allow-ffi=${dir} (onnxruntime-node's native library), or use --backend cpu`;
  }
  return "run npm ci in the project, or use --backend cpu";
}

/**
 * Open a checkpoint for inference. The native backends load it into the engine; "onnx"
 * loads an export directory, or exports the checkpoint to a cache on first use (see
 * infer/onnx_session.ts), and imports onnxruntime-node only then. The session is closed by
 * `await s.close()`, or by leaving the block of an `await using s = await openInference(...)`.
 *
 * @throws {RangeError} for an option out of range, or one {@linkcode OpenInferenceOptions}
 * does not have, naming it.
 * @throws {CheckpointError} when a native backend is given no checkpoint it can read (an
 * export directory among them: its backend is "onnx").
 * @throws {ExportError} when the onnx backend is given a damaged export, or no checkpoint or
 * export.
 * @throws {EngineError} when the engine of the backend cannot be opened.
 * @throws {OnnxRuntimeError} when the onnx backend cannot load onnxruntime-node.
 * @throws {EnvPermissionError} when the onnx backend may not set ORT_DISABLE_TELEMETRY, which
 * keeps onnxruntime off the network.
 *
 * The session's `answer` rejects with a {@linkcode SessionClosedError} once it is closed.
 *
 * @example
 * ```ts ignore
 * import { openInference } from "./inference.ts";
 * const s = await openInference("out/runs/default", { backend: "cpu" });
 * const r = await s.answer(["Ann has 2 pens and buys 3. How many pens?"]);
 * console.log(r.answers[0].answer);
 * await s.close();
 * ```
 */
export async function openInference(
  checkpoint: string,
  opts: OpenInferenceOptions = {},
): Promise<InferenceSession & AsyncDisposable> {
  refuseUnknownOptions("openInference", opts, OPEN_OPTIONS);
  refuseMistyped("openInference", opts, { quiet: "boolean" });
  checkOpenOptions(opts);
  const backend = opts.backend ?? DEFAULT_INFERENCE_BACKEND;
  if (backend === "onnx") {
    // Loaded here only: onnxruntime-node stays out of the trainer's module graph. Its
    // telemetry is switched off first, with an error of its own when that is not allowed.
    await import("./ort_env.ts");
    let onnx: typeof import("./onnx_session.ts");
    try {
      onnx = await import("./onnx_session.ts");
    } catch (e) {
      const first = (e as Error).message.split("\n")[0];
      throw new OnnxRuntimeError(
        `backend onnx: cannot load onnxruntime-node (${first}); ${onnxLoadHint(first)}`,
        { cause: e },
      );
    }
    return onnx.openOnnxInference(checkpoint, opts);
  }
  const isExport = await exists(`${checkpoint}/lotus.json`);
  if (isExport) throw new CheckpointError(await exportRefusal(checkpoint, backend));
  // Verified on load: the weights, config.json and tokenizer.json describe one finite model.
  // train_state.json only places the checkpoint in the curriculum; without it the session
  // takes the final stage and says so in its notes.
  const ck = await loadCheckpoint(checkpoint, { trainState: "optional" });
  const progress = progressOf(ck.meta, ck.state);
  const tok = ck.tokenizer;
  const notes: string[] = [];
  const eng: Engine = selectEngine(backend, {
    threads: opts.threads ?? 0,
    precision: opts.precision ?? "fp32",
    quiet: opts.quiet,
    log: opts.quiet ? (line) => notes.push(line) : undefined,
  });
  let model: Model;
  try {
    model = new Model(eng, ck.meta.model, ck.params, false);
  } catch (e) {
    eng.close();
    throw e;
  }
  const maxBatch = opts.maxBatch ?? 32;
  const maxNew = opts.maxNewTokens ?? 64;
  const base = inferenceShape(ck.meta, progress);
  let gen: Generator | null = null;
  const sp = ck.meta.special;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    gen?.free();
    model.free();
    eng.close();
  };
  const mode = ck.meta.train.mode === "cot" || ck.meta.train.mode === "nocot"
    ? ck.meta.train.mode
    : "lotus";
  return {
    meta: ck.meta,
    tokenizer: tok,
    backend: eng.backend,
    shape: base,
    notes: ck.stateProblem === null
      ? notes
      : [...notes, trainStateNote(ck.meta, ck.stateProblem, base)],
    // Async like the ONNX backend's answer, so callers treat every backend alike; a throw
    // becomes a rejection.
    // deno-lint-ignore require-await
    async answer(questions: string[], o: AnswerOptions = {}): Promise<AnswerBatch> {
      if (closed) throw new SessionClosedError();
      checkAnswerRequest(questions, o, maxBatch, tok);
      const { K, R, c } = inferenceShape(ck.meta, progress, o);
      const ids = questions.map((q) => Int32Array.from(tok.encode(q.trim() + "\n")));
      const P = Math.max(...ids.map((q) => q.length));
      const budget = o.maxNewTokens ?? maxNew;
      checkContext(
        ids.map((q) => q.length),
        { lotus: mode === "lotus", K, c, budget },
        ck.meta.model.maxPositions,
      );
      // (Re)allocate the generator when the request outgrows it.
      if (!gen || P > gen.cap.P || K > gen.cap.K || budget > gen.cap.maxNewTokens) {
        // Dropped before the new one is made: if that fails (engine memory), the next call
        // allocates again rather than running on freed buffers.
        const old = gen;
        gen = null;
        old?.free();
        // Sized for the session's defaults too, but never past the model's context, which no
        // request can use (checkContext): a default budget or question length above it would
        // only take engine memory.
        const maxPos = ck.meta.model.maxPositions;
        gen = new Generator(model, {
          B: maxBatch,
          P: Math.min(Math.max(P, opts.maxQuestionTokens ?? 0), maxPos),
          K: mode === "lotus" ? Math.max(K, base.K) : 0,
          c,
          maxNewTokens: Math.min(Math.max(budget, maxNew), maxPos),
        });
      }
      const g = gen.generate(ids, sp, {
        mode,
        K,
        c,
        R,
        injection: ck.meta.train.injection,
        maxNewTokens: budget,
        latentLogits: o.latentLogits && mode === "lotus",
      });
      const L = 1 + K * c, V = ck.meta.model.vocabSize;
      const answers = g.tokens.map((t, i) => {
        const text = tok.decode(t);
        return {
          text,
          answer: extractAnswer(text),
          tokens: t,
          latentLogits: g.latentLogits
            ? g.latentLogits.slice(i * L * V, (i + 1) * L * V)
            : undefined,
        };
      });
      return {
        answers,
        timings: g.timings,
        K: mode === "lotus" ? K : 0,
        R: mode === "lotus" ? R : 0,
        c,
      };
    },
    close,
    // deno-lint-ignore require-await
    async [Symbol.asyncDispose]() {
      close();
    },
  };
}

/**
 * Why a native backend refuses export directory `dir`, and what to do: pass the checkpoint
 * it was made from (named when its lotus.json says), or use the onnx backend, which needs the
 * export's ONNX graphs (an `hf` export has none).
 */
async function exportRefusal(dir: string, backend: string): Promise<string> {
  let lotus: { onnx?: unknown; source?: { checkpoint?: unknown } } = {};
  try {
    lotus = JSON.parse(await Deno.readTextFile(`${dir}/lotus.json`)) ?? {};
  } catch { /* unreadable: the advice stays general */ }
  const from = typeof lotus.source?.checkpoint === "string"
    ? ` it was made from (${lotus.source.checkpoint})`
    : "";
  const onnx = lotus.onnx === null
    ? `; --backend onnx needs its ONNX graphs, which this export lacks: export with --format ` +
      `onnx or both`
    : ", or use --backend onnx";
  return `${dir} is an export directory; backend ${backend} reads checkpoints: pass the ` +
    `checkpoint${from}${onnx}`;
}

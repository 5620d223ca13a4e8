/**
 * What every inference backend offers: a session that answers batches of questions, with the
 * answers, the phase timings and, for LOTUS, the latent readout. infer/inference.ts opens one
 * on the native engines, infer/onnx_session.ts on onnxruntime.
 *
 * @module
 */

import { checkWhole } from "../base/whole.ts";
import { type OptionNames, refuseMistyped, refuseUnknownOptions } from "../base/options.ts";
import type { BackendName } from "../engine/types.ts";
import { PRECISIONS, PRECISIONS_TEXT } from "../engine/ffi.ts";
import type { LotusMeta } from "../model/checkpoint.ts";
import type { Timings } from "../model/generate.ts";
import { findSpecialTokenText, type Tokenizer } from "../pipeline/tokenizer.ts";
import type { LotusShape } from "../train/schedule.ts";

/**
 * Where inference runs: the native engines ("auto": CUDA when usable, else the CPU), or
 * onnxruntime-node ("onnx", infer/onnx_session.ts) over an export of the checkpoint.
 */
export type InferenceBackend = BackendName | "onnx";

/**
 * The backend used when none is given: the faster CPU path. On the `small` preset at batch
 * 1 on two idle cores, the native engine takes 37 ms for the thought phase and 0.28 ms per
 * answer token, against 39 ms and 0.99 ms for onnxruntime-node (bench/onnx_vs_engine.ts;
 * figures in docs/export.md). On a GPU machine, ask for "cuda" or "auto".
 */
export const DEFAULT_INFERENCE_BACKEND: InferenceBackend = "cpu";

/** What answer() says once its session is closed. */
export const SESSION_CLOSED = "the inference session is closed; open another with openInference";

/** A session's `answer` called after its `close`; the message says to open another. */
export class SessionClosedError extends Error {
  /** The message is {@linkcode SESSION_CLOSED}. */
  constructor() {
    super(SESSION_CLOSED);
    this.name = "SessionClosedError";
  }
}

/**
 * onnxruntime-node, which the ONNX backend runs on, cannot be loaded (not installed, or Deno
 * may not load its native code); the message says what kept it and what to do.
 */
export class OnnxRuntimeError extends Error {
  /** `message` starts with "backend onnx:". */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "OnnxRuntimeError";
  }
}

/**
 * The process may not set or read an environment variable that it needs, for want of Deno's
 * `--allow-env`; the message names the variable and the permission to grant.
 */
export class EnvPermissionError extends Error {
  /** `message` names the variable and the `--allow-env` to grant. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "EnvPermissionError";
  }
}

/**
 * Refuses `openInference`'s sizes that no answer could use: `maxBatch`,
 * `maxNewTokens` and `maxQuestionTokens` are whole numbers of at least 1, `threads` a whole
 * number of at least 0; `backend` one of {@linkcode InferenceBackend}'s, `precision` fp32,
 * tf32 or bf16.
 *
 * @throws {RangeError} naming the option.
 */
export function checkOpenOptions(
  opts: {
    backend?: string;
    precision?: string;
    maxBatch?: number;
    maxNewTokens?: number;
    maxQuestionTokens?: number;
    threads?: number;
  },
): void {
  const mins = [["maxBatch", 1], ["maxNewTokens", 1], ["maxQuestionTokens", 1], ["threads", 0]];
  for (
    const [name, min] of mins as [Exclude<keyof typeof opts, "backend" | "precision">, number][]
  ) {
    checkWhole(`openInference: ${name}`, opts[name], min);
  }
  const backends: readonly string[] = ["cpu", "cuda", "auto", "onnx"] satisfies InferenceBackend[];
  if (opts.backend !== undefined && !backends.includes(opts.backend)) {
    throw new RangeError(
      `openInference: backend ${JSON.stringify(opts.backend)}: use ${backends.join(", ")}`,
    );
  }
  if (opts.precision !== undefined && !(PRECISIONS as readonly string[]).includes(opts.precision)) {
    throw new RangeError(
      `openInference: precision ${JSON.stringify(opts.precision)}: use ${PRECISIONS_TEXT}`,
    );
  }
}

/**
 * Checks one `answer()` request, as every backend does before any work: a non-empty list of
 * strings, none of them empty or blank, none holding the text of one of `tok`'s special tokens (which encoding would turn
 * into the token itself: `<|endoftext|>` an end of sequence inside the question), at most
 * `maxBatch` of them, only options that {@linkcode AnswerOptions} has, and whole numbers for
 * them (k and r from 0, maxNewTokens from 1). Throws a RangeError that names what is wrong.
 *
 * @example
 * ```ts
 * import { checkAnswerRequest } from "./session.ts";
 * const tok = { specialTokens: new Map([["<|endoftext|>", 50256]]) };
 * checkAnswerRequest(["How many?"], { k: 3 }, 32, tok);
 * try {
 *   checkAnswerRequest(["How many?"], { k: -1 }, 32, tok);
 * } catch (e) {
 *   console.assert((e as Error).message.startsWith("k = -1"));
 * }
 * try {
 *   checkAnswerRequest(["How many? <|endoftext|>"], {}, 32, tok);
 * } catch (e) {
 *   console.assert((e as Error).message.startsWith('question 0 holds "<|endoftext|>"'));
 * }
 * ```
 */
export function checkAnswerRequest(
  questions: readonly string[],
  o: AnswerOptions,
  maxBatch: number,
  tok: Pick<Tokenizer, "specialTokens">,
): void {
  if (!Array.isArray(questions) || questions.length === 0) {
    throw new RangeError("answer() needs at least one question (an array of strings)");
  }
  const notText = questions.findIndex((q) => typeof q !== "string");
  if (notText >= 0) throw new RangeError(`question ${notText} is not a string`);
  // As the readers refuse a record with an empty question: nothing to answer.
  const blank = questions.findIndex((q) => q.trim() === "");
  if (blank >= 0) throw new RangeError(`question ${blank} is empty; give the question's text`);
  for (const [i, q] of questions.entries()) {
    const hit = findSpecialTokenText(q, tok);
    if (hit !== null) {
      throw new RangeError(`question ${i} ${hit.problem}; remove it from the question`);
    }
  }
  if (questions.length > maxBatch) {
    throw new RangeError(
      `${questions.length} questions exceed the session's batch of ${maxBatch} ` +
        `(maxBatch when the session is opened)`,
    );
  }
  refuseUnknownOptions("answer()", o, ANSWER_OPTIONS);
  refuseMistyped("answer()", o, { latentLogits: "boolean" });
  for (const [name, min] of [["k", 0], ["r", 0], ["maxNewTokens", 1]] as const) {
    checkWhole(name, o[name], min);
  }
}

/**
 * Checks that a request fits the model's context: its longest question (`lengths`, each
 * question's tokens), the latent region (`1 + K * c` positions for LOTUS, none for a
 * baseline), `budget` new tokens and the end. Throws a RangeError that names the question by
 * its index, and says to shorten it when it leaves no room for an answer with any options.
 *
 * @example
 * ```ts
 * import { checkContext } from "./session.ts";
 * checkContext([10, 20], { lotus: true, K: 2, c: 4, budget: 16 }, 64);
 * try {
 *   checkContext([10, 70], { lotus: false, K: 0, c: 4, budget: 16 }, 64);
 * } catch (e) {
 *   console.assert((e as Error).message.startsWith("question 1 "));
 * }
 * ```
 */
export function checkContext(
  lengths: readonly number[],
  o: { lotus: boolean; K: number; c: number; budget: number },
  maxPositions: number,
): void {
  const P = Math.max(...lengths), L = o.lotus ? 1 + o.K * o.c : 0;
  const need = P + L + o.budget + 1;
  if (need <= maxPositions) return;
  const which = `question ${lengths.indexOf(P)}`;
  // The least a question needs besides its tokens: BOT (LOTUS), one new token and the end.
  if (P + (o.lotus ? 1 : 0) + 2 > maxPositions) {
    throw new RangeError(
      `${which} is too long: its ${P} tokens leave no room for an answer in the model's ` +
        `${maxPositions} positions; shorten it`,
    );
  }
  throw new RangeError(
    `${which}, of ${P} tokens, plus the latents and ${o.budget} new tokens needs ${need} ` +
      `positions; the model has ${maxPositions}: ask for fewer new tokens (maxNewTokens, ` +
      `--max-new-tokens)` + (o.lotus && o.K > 0 ? " or fewer latent blocks (k, --k)" : ""),
  );
}

/**
 * What a user should hear about a requested shape before its answers: `--k`/`--r` given to a
 * baseline (explicit CoT or no CoT), which has no latent loop and ignores them; and a `--k`
 * above the K the checkpoint reached, whose extra blocks were never trained. Empty when there
 * is nothing to say.
 *
 * @example
 * ```ts
 * import { shapeRequestNotes } from "./session.ts";
 * const notes = shapeRequestNotes("lotus", { K: 3, R: 3, c: 16 }, { k: 5 });
 * console.assert(notes.length === 1 && notes[0].startsWith("--k 5"));
 * ```
 */
export function shapeRequestNotes(
  mode: string,
  reached: LotusShape,
  req: { k?: number; r?: number | readonly number[] },
): string[] {
  const rGiven = Array.isArray(req.r) ? req.r.length > 0 : req.r !== undefined;
  if (mode === "cot" || mode === "nocot") {
    const given = [req.k !== undefined ? "--k" : "", rGiven ? "--r" : ""].filter(Boolean);
    return given.length
      ? [
        `${given.join(" and ")}: a ${mode} checkpoint has no latent loop, so ${
          given.length > 1 ? "they are" : "it is"
        } ignored`,
      ]
      : [];
  }
  if (req.k !== undefined && req.k > reached.K) {
    return [
      `--k ${req.k}: the checkpoint was trained up to K = ${reached.K} latent blocks; the ` +
      `blocks past them were never trained, so answers may be worse than at K = ${reached.K}`,
    ];
  }
  return [];
}

/**
 * How to decode. Unset LOTUS shape fields default to the session's `shape`: the curriculum
 * stage of the checkpoint's last step (its final stage only once training ran through the
 * curriculum).
 */
export interface AnswerOptions {
  /** Latent blocks (LOTUS); default: the K of the session's `shape`. */
  k?: number;
  /**
   * Loop iterations (LOTUS); default: the R of the session's `shape`, or `k` when `k` is given
   * and the run tied R to K (no `--r` in training).
   */
  r?: number;
  /** Generation budget; default 64 (the reference's). */
  maxNewTokens?: number;
  /** Return the post-loop logits of the loop region. */
  latentLogits?: boolean;
}

/** Every option of {@linkcode AnswerOptions}. */
const ANSWER_OPTIONS: OptionNames<AnswerOptions> = {
  k: true,
  r: true,
  maxNewTokens: true,
  latentLogits: true,
};

/** One answered question. */
export interface Answer {
  /** The generated text (without EOS). */
  text: string;
  /**
   * The extracted answer (pipeline/answer.ts, `extractAnswer`): the number after the last
   * `###`; without `###`, the text's last number; without a number, the whole text.
   */
  answer: string;
  /** Generated token ids. */
  tokens: number[];
  /** [1 + K*c, V] post-loop logits of the loop region, when asked for (LOTUS only). */
  latentLogits?: Float32Array;
}

/** A batch's answers with the phase timings. */
export interface AnswerBatch {
  /** One answer per question, in the order asked. */
  answers: Answer[];
  /** Phase timings of the whole batch. */
  timings: Timings;
  /** Latent blocks used (0 for the baselines). */
  K: number;
  /** Loop iterations used (0 for the baselines). */
  R: number;
  /** Latent slots per block: the checkpoint's c. */
  c: number;
}

/** A checkpoint loaded for inference. */
export interface InferenceSession {
  /** The checkpoint's `lotus` settings: model shape, training settings, special ids. */
  readonly meta: LotusMeta;
  /** The checkpoint's tokenizer, which encodes the questions and decodes the answers. */
  readonly tokenizer: Tokenizer;
  /** Where the session runs: "cpu" or "cuda" (the native engines), or "onnx". */
  readonly backend: Exclude<InferenceBackend, "auto">;
  /** The default LOTUS shape (the stage the checkpoint reached). */
  readonly shape: LotusShape;
  /**
   * What the session had to assume, one line each, for the user to hear: a checkpoint
   * without a readable train_state.json answers at its final curriculum stage. Empty or
   * absent when there is nothing to say.
   */
  readonly notes?: readonly string[];
  /**
   * Answer a batch of questions (at most the session's maxBatch). Asynchronous because
   * onnxruntime runs asynchronously; the native engines answer at once.
   *
   * @throws {RangeError} (as a rejection) when the batch exceeds maxBatch, a question holds
   * the text of a special token of the tokenizer (`<|endoftext|>`, `<|latent|>`...), or a
   * question with the latents and the generation budget exceeds the model's context.
   * @throws {SessionClosedError} (as a rejection) once the session is closed.
   */
  answer(questions: string[], opts?: AnswerOptions): Promise<AnswerBatch>;
  /**
   * Free the session's engine memory or onnxruntime session; await it before exiting. The
   * session answers nothing after it (answer() rejects); a second close does nothing.
   */
  close(): void | Promise<void>;
}

/**
 * Evaluation of a checkpoint on items: batched greedy answers through an inference session,
 * exact-match scoring (pipeline/answer.ts), phase latencies, and, for LOTUS checkpoints, the
 * latent readout scored against the gold steps (infer/readout.ts, ./alternatives.ts).
 *
 * **Latency.** The session times each batch's phases with the engine synchronised. The
 * thought phase of LOTUS is pass 0 plus the R loop passes; that of an explicit-CoT checkpoint
 * is the decoding of the tokens before its first `#`, as the reference measures it. Figures
 * are per example: a batch's time divided by its size, so `--batch 1` gives the reference's
 * batch-1 numbers and larger batches give throughput-amortised ones.
 *
 * @module
 */
import { checkWhole } from "../base/whole.ts";
import { type OptionNames, refuseMistyped, refuseUnknownOptions } from "../base/options.ts";
import type { InferenceSession } from "../infer/session.ts";
import { answersMatch } from "../pipeline/answer.ts";
import { bestReadings, readoutRows, scoreReadout } from "../infer/readout.ts";
import {
  classifyNlStep,
  classifyStep,
  groundsLaterSteps,
  type StepKind,
  validNlValue,
  validStepValue,
} from "./alternatives.ts";
import type { EvalItem } from "./items.ts";
import { InputError } from "../pipeline/read/input_error.ts";
import { findSpecialTokenTexts } from "../pipeline/tokenizer.ts";
import { withShapeOverrides } from "../train/schedule.ts";

/** Options of {@linkcode runEval}. */
export interface EvalRunOptions {
  /**
   * Questions per batch, a whole number of at least 1 and at most the session's `maxBatch`
   * (default 16; 1 for the reference's latency figures).
   */
  batch?: number;
  /** Loop iterations to sweep; default: the checkpoint's R only. K stays the checkpoint's. */
  r?: number[];
  /** Latent blocks; default: the checkpoint's K. */
  k?: number;
  /**
   * Generation budget; default: the session's (the `maxNewTokens` it was opened with,
   * 64 unless it was given, the reference's).
   */
  maxNewTokens?: number;
  /** Score the latent readout of LOTUS checkpoints (default true). */
  readout?: boolean;
  /** Called after every batch. */
  onBatch?: (done: number, total: number, R: number) => void;
  /**
   * Asked before the first batch and after every batch: a signal returned stops the run with
   * an {@linkcode EvalStopped} (the command returns the stop signal seen, if any).
   */
  stopSignal?: () => Promise<Deno.Signal | null>;
  /**
   * Asked at the same points: aborted, it stops the run as a SIGTERM from `stopSignal` would
   * (an {@linkcode EvalStopped} whose `signal` is "SIGTERM").
   */
  signal?: AbortSignal;
}

/** Every option of {@linkcode EvalRunOptions}. */
const EVAL_RUN_OPTIONS: OptionNames<EvalRunOptions> = {
  batch: true,
  r: true,
  k: true,
  maxNewTokens: true,
  readout: true,
  onBatch: true,
  stopSignal: true,
  signal: true,
};

/** An evaluation stopped by a signal before its end ({@linkcode EvalRunOptions.stopSignal}). */
export class EvalStopped extends Error {
  /** The signal that stopped it. */
  readonly signal: Deno.Signal;
  /** Create the error: `done` of `total` questions answered at `R` (null: none yet). */
  constructor(signal: Deno.Signal, done: number, total: number, R: number | null) {
    super(`stopped by ${signal} after ${done} of ${total} items${R === null ? "" : ` at R=${R}`}`);
    this.name = "EvalStopped";
    this.signal = signal;
  }
}

/** One block of one example's readout. */
export interface BlockReadout {
  /** Block index k. */
  block: number;
  /** The gold step S_k as text. */
  gold: string;
  /** The argmax readout, decoded and cut at its first newline. */
  text: string;
  /** S_k token by token, decoded one by one. */
  goldTokens: string[];
  /** The argmax of each row the block reads (c; more under spill), decoded one by one. */
  readoutTokens: string[];
  /** Per scored slot (j < min(rows read, |S_k|)): argmax is gold; gold in the top 5. */
  top1: boolean[];
  /** Per scored slot: the gold token is among the 5 largest logits. */
  top5: boolean[];
  /**
   * The argmax reading's kind: math steps always; NL steps where the reading carries a number
   * (eval/alternatives.ts, `classifyNlStep`), else null.
   */
  kind: StepKind | null;
  /** Some reading among the block's 5 best is an alternative valid intermediate. */
  alternativeTop5: boolean | null;
}

/** One answered item at one R. */
export interface ExampleResult {
  /** Position of the item in the input. */
  index: number;
  /** The item's id. */
  id: string;
  /** The LOTUS shape used (K = R = 0 for baselines). */
  K: number;
  /** Loop iterations used (0 for baselines). */
  R: number;
  /** The question text. */
  question: string;
  /** The gold answer. */
  gold: string;
  /** Gold steps in the checkpoint's CoT form; null when the source has no chain of thought. */
  goldSteps: number | null;
  /** The generated text and the answer extracted from it. */
  text: string;
  /** The extracted answer. */
  predicted: string;
  /** Exact match with the gold answer. */
  correct: boolean;
  /** Tokens generated (without EOS), and those before the first `#` (the written thought). */
  tokens: number;
  /** Tokens before the first one holding `#` (the written thought of a CoT model). */
  thoughtTokens: number;
  /** Per-example milliseconds (the batch's time divided by its size). */
  prefillMs: number;
  /** Thought phase per example, ms (LOTUS: pass 0 + R passes; CoT: its written thought). */
  thoughtMs: number;
  /** Decoding per example, ms. */
  decodeMs: number;
  /** LOTUS checkpoints with gold steps: the readout, block by block. */
  readout?: BlockReadout[];
  /**
   * The question did not fit the model's context with the latents and the generation budget:
   * it was not answered and counts as wrong.
   */
  tooLong?: boolean;
}

/** Accuracy among items with the same number of gold steps. */
export interface StepBucket {
  /** The number of gold steps, or "n/a" for sources without a chain of thought. */
  steps: string;
  /** Items scored. */
  n: number;
  /** Items answered correctly. */
  correct: number;
  /** correct / n. */
  accuracy: number;
}

/** Readout figures over a run (definitions in docs/eval.md). */
export interface ReadoutSummary {
  /** Examples and blocks scored (blocks k < min(K, gold steps)). */
  examples: number;
  /** Blocks scored. */
  blocks: number;
  /** Slots scored, and the share whose argmax / top 5 holds the gold token. */
  positions: number;
  /** Share of scored slots whose argmax is the gold token. */
  top1: number;
  /** Share of scored slots whose gold token is in the top 5. */
  top5: number;
  /** Blocks whose decoded argmax is exactly the gold step. */
  blocksExact: number;
  /** Blocks whose decoded argmax is not the gold step (the denominator below). */
  blocksDiffering: number;
  /** Of the differing blocks: the argmax reading is an alternative valid intermediate. */
  alternativeTop1: number;
  /** Of the differing blocks: one of the 5 best readings is one. */
  alternativeTop5: number;
  /** Argmax readings by kind (math steps only). */
  kinds: Record<StepKind, number>;
}

/** The figures of one R. */
export interface RunSummary {
  /** The checkpoint's training mode. */
  mode: string;
  /** Latent blocks used (0 for baselines). */
  K: number;
  /** Loop iterations used (0 for baselines). */
  R: number;
  /** Slots per block. */
  c: number;
  /** Items scored. */
  n: number;
  /** Items answered correctly. */
  correct: number;
  /** correct / n; questions too long for the context count as wrong. */
  accuracy: number;
  /** Questions not answered because they did not fit the model's context. */
  tooLong: number;
  /** Per-example phase times (docs/eval.md). */
  latency: {
    batch: number;
    prefillMsPerExample: number;
    /** LOTUS: pass 0 + R loop passes. CoT: decoding the tokens before the first `#`. */
    thoughtMsPerExample: number;
    /** The median of the same: robust to another process taking the CPU for a moment. */
    thoughtMsMedian: number;
    decodeMsPerExample: number;
    /** Wall time of one decode step (one token for every unfinished example of the batch). */
    msPerDecodeStep: number;
    /**
     * Per-example time per generated token after the thought; null when no such token was
     * timed (a CoT model that never wrote `#` within the budget).
     */
    msPerAnswerToken: number | null;
    tokensMean: number;
    thoughtTokensMean: number;
  };
  /** Accuracy by number of gold steps. */
  byGoldSteps: StepBucket[];
  /** Readout figures (LOTUS checkpoints with gold steps). */
  readout?: ReadoutSummary;
}

/** Everything {@linkcode runEval} measured. */
export interface EvalResult {
  /** One row per item and R, R-major. */
  examples: ExampleResult[];
  /** One summary per R of the sweep. */
  runs: RunSummary[];
}

/** Index of the first token whose text holds `#`, or the token count when none does. */
export function thoughtLength(tokens: number[], decode: (ids: number[]) => string): number {
  for (let i = 0; i < tokens.length; i++) if (decode([tokens[i]]).includes("#")) return i;
  return tokens.length;
}

/** The steps of an item in a CoT form; null when it has none. */
export function goldStepsOf(item: EvalItem, cot: string): string[] | null {
  return cot === "nl" ? item.nl : item.math;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

function median(xs: number[]): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Refuses items whose question, or gold step in the form `cot` when the readout is scored
 * (`readout`), holds the text of one of the tokenizer's special tokens (`<|endoftext|>`,
 * `<|latent|>`...), which encoding would turn into the token itself: an
 * {@linkcode InputError} naming the item's file, line and field, before anything is answered.
 */
function checkItemTexts(
  session: InferenceSession,
  items: readonly EvalItem[],
  cot: string,
  readout: boolean,
): void {
  for (const it of items) {
    const steps = readout ? goldStepsOf(it, cot) ?? [] : [];
    const texts: [string, string][] = [
      ["question", it.question],
      ...steps.map((t, i): [string, string] => [`${cot} step ${i + 1}`, t]),
    ];
    const [first] = findSpecialTokenTexts(texts, session.tokenizer);
    if (first === undefined) continue;
    throw new InputError({
      file: it.source.file,
      line: it.source.line,
      field: first.label,
      problem: first.hit.problem,
      hint: `remove it from the ${first.label === "question" ? "question" : "step"}`,
    });
  }
}

/**
 * Answer every item at every R of the sweep, score, time and read out.
 *
 * @throws {InputError} for an item whose question, or gold step when the readout is scored,
 * holds the text of a special token of the session's tokenizer (`<|endoftext|>`,
 * `<|latent|>`...), naming its file and line, before any question is answered.
 * @throws {RangeError} for `items` that are not an array, an option
 * {@linkcode EvalRunOptions} does not have, a `batch` that is not a whole number of at least
 * 1, an `r` that is not a list, a `readout` that is not a boolean, and (from the
 * session's answer()) for one above the session's `maxBatch` or a `k`, `r` or `maxNewTokens`
 * out of range.
 *
 * @example
 * ```ts ignore
 * import { openInference } from "../infer/inference.ts";
 * import { loadEvalItems } from "./items.ts";
 * import { runEval } from "./evaluate.ts";
 * const s = await openInference("out/runs/default", { maxBatch: 16 });
 * const res = await runEval(s, await loadEvalItems("test.jsonl"), { r: [0, 2, 4] });
 * console.log(res.runs.map((r) => `${r.R}: ${r.accuracy}`));
 * await s.close();
 * ```
 */
export async function runEval(
  session: InferenceSession,
  items: EvalItem[],
  opts: EvalRunOptions = {},
): Promise<EvalResult> {
  refuseUnknownOptions("runEval", opts, EVAL_RUN_OPTIONS);
  refuseMistyped("runEval", opts, {
    onBatch: "function",
    stopSignal: "function",
    signal: "AbortSignal",
    readout: "boolean",
  });
  if (!Array.isArray(items)) {
    const what = items === null ? "null" : typeof items === "object" ? "an object" : typeof items;
    throw new RangeError(
      `runEval: items must be an array of EvalItem, as loadEvalItems gives (not ${what}); ` +
        `collect readEvalItems' items with Array.fromAsync`,
    );
  }
  const tok = session.tokenizer, decode = (ids: number[]) => tok.decode(ids);
  const mode = session.meta.train.mode;
  const lotus = mode === "lotus" || mode === "lotus-aux";
  const cot = session.meta.data.cot;
  // A model trained with spilled step targets is read on past its blocks' c rows.
  const spill = session.meta.data.longStep === "spill";
  checkWhole("runEval: batch", opts.batch, 1);
  if (opts.r !== undefined && !Array.isArray(opts.r)) {
    // answer() takes one r; a sweep is a list, and a bare number would be passed over.
    throw new RangeError(
      `runEval: r = ${JSON.stringify(opts.r)}: give a list of loop counts to sweep, as ` +
        `r: [${typeof opts.r === "number" ? opts.r : 2}]`,
    );
  }
  const batch = opts.batch ?? 16;
  const rs: (number | undefined)[] = lotus && opts.r?.length ? opts.r : [undefined];
  const V = session.meta.model.vocabSize;
  checkItemTexts(session, items, cot, lotus && opts.readout !== false);
  const fits = fitsContext(session, items, opts);
  if (items.length > 0 && !fits.includes(true)) throw noneFitError(session, items, opts);
  const answerIdx = items.map((_, i) => i).filter((i) => fits[i]);
  const answerable = answerIdx.map((i) => items[i]);
  const examples: ExampleResult[] = [], runs: RunSummary[] = [];
  const stopAt = async (done: number, R: number | null) => {
    const signal = opts.signal?.aborted ? "SIGTERM" : await opts.stopSignal?.();
    if (signal) throw new EvalStopped(signal, done, answerable.length, R);
  };
  await stopAt(0, null);
  // One untimed batch first: the first call allocates the generator and wakes the engine's
  // threads, which would otherwise be charged to the first R of the sweep.
  if (answerable.length) {
    await session.answer(answerable.slice(0, batch).map((it) => it.question), {
      k: opts.k,
      r: rs[0],
      maxNewTokens: opts.maxNewTokens,
      latentLogits: lotus && opts.readout !== false,
    });
  }
  for (const r of rs) {
    const rows: ExampleResult[] = [];
    // The shape the session runs (R follows a --k when the run did not fix R); each batch
    // reports it too.
    let shape = lotus
      ? withShapeOverrides(session.meta, session.shape, { k: opts.k, r })
      : { K: 0, R: 0, c: session.shape.c };
    let decodeMs = 0, decodeSteps = 0, answerMs = 0, answerTokens = 0;
    for (let i = 0; i < answerable.length; i += batch) {
      const part = answerable.slice(i, i + batch), B = part.length;
      const res = await session.answer(part.map((it) => it.question), {
        k: opts.k,
        r,
        maxNewTokens: opts.maxNewTokens,
        latentLogits: lotus && opts.readout !== false,
      });
      shape = { K: res.K, R: res.R, c: res.c };
      const t = res.timings;
      decodeMs += t.decodeMs, decodeSteps += t.decodeSteps;
      for (let b = 0; b < B; b++) {
        const it = part[b], a = res.answers[b];
        const steps = goldStepsOf(it, cot);
        const nThought = lotus ? 0 : mode === "cot" ? thoughtLength(a.tokens, decode) : 0;
        // Step s of the batch decodes token s of every example; an example's written thought
        // is its first nThought steps, its answer the steps after, up to its EOS.
        const thoughtMs = lotus ? t.thoughtMs / B : sum(t.stepMs, 0, nThought) / B;
        const nSteps = Math.min(a.tokens.length + 1, t.stepMs.length); // + its EOS, if reached
        answerMs += sum(t.stepMs, nThought, nSteps) / B;
        answerTokens += Math.max(0, nSteps - nThought);
        const row: ExampleResult = {
          index: answerIdx[i + b],
          id: it.id,
          K: res.K,
          R: res.R,
          question: it.question,
          gold: it.answer,
          goldSteps: steps ? steps.length : null,
          text: a.text,
          predicted: a.answer,
          correct: answersMatch(a.answer, it.answer),
          tokens: a.tokens.length,
          thoughtTokens: nThought,
          prefillMs: t.prefillMs / B,
          thoughtMs,
          decodeMs: t.decodeMs / B,
        };
        // No readout without latent blocks (K = 0): nothing was scored.
        if (a.latentLogits && res.K > 0 && steps && steps.length > 0) {
          row.readout = readoutOf(a.latentLogits, it, steps, cot, res.K, res.c, V, tok, spill);
        }
        rows.push(row);
      }
      opts.onBatch?.(Math.min(i + batch, answerable.length), answerable.length, res.R);
      await stopAt(Math.min(i + batch, answerable.length), lotus ? res.R : null);
    }
    for (let i = 0; i < items.length; i++) {
      if (fits[i]) continue;
      const it = items[i], steps = goldStepsOf(it, cot);
      rows.push({
        index: i,
        id: it.id,
        K: shape.K,
        R: shape.R,
        question: it.question,
        gold: it.answer,
        goldSteps: steps ? steps.length : null,
        text: "",
        predicted: "",
        correct: false,
        tokens: 0,
        thoughtTokens: 0,
        prefillMs: 0,
        thoughtMs: 0,
        decodeMs: 0,
        tooLong: true,
      });
    }
    rows.sort((a, b) => a.index - b.index);
    examples.push(...rows);
    runs.push(summarise(rows, {
      mode,
      ...shape,
      batch,
      msPerDecodeStep: decodeSteps ? decodeMs / decodeSteps : 0,
      msPerAnswerToken: answerTokens ? answerMs / answerTokens : null,
    }));
  }
  return { examples, runs };
}

/**
 * Which items fit the model's context: question, BOT and the K*c latents (LOTUS), the
 * generation budget and EOT. A question that does not fit is reported, not answered: a single
 * long question (GSM8K under a tokenizer fitted to other text) must not stop a whole run.
 */
export function fitsContext(
  session: InferenceSession,
  items: EvalItem[],
  opts: Pick<EvalRunOptions, "k" | "maxNewTokens"> = {},
): boolean[] {
  const { extra, max } = contextNeed(session, opts);
  return items.map((it) => questionTokens(session, it) + extra <= max);
}

/** Positions a question needs besides its own tokens, and the model's context. */
function contextNeed(
  session: InferenceSession,
  opts: Pick<EvalRunOptions, "k" | "maxNewTokens">,
) {
  const mode = session.meta.train.mode;
  const lotus = mode === "lotus" || mode === "lotus-aux";
  const K = lotus ? opts.k ?? session.shape.K : 0, c = session.shape.c;
  const budget = opts.maxNewTokens ?? 64;
  const extra = (lotus ? 1 + K * c : 0) + budget + 1;
  return { lotus, K, c, budget, extra, max: session.meta.model.maxPositions };
}

function questionTokens(session: InferenceSession, it: EvalItem): number {
  return session.tokenizer.encode(it.question.trim() + "\n").length;
}

/**
 * The error for a run where no question fits the context: a run of nothing but "too long"
 * rows would report 0% as if the model had answered. It names the options that bear on it.
 */
function noneFitError(
  session: InferenceSession,
  items: EvalItem[],
  opts: Pick<EvalRunOptions, "k" | "maxNewTokens">,
): RangeError {
  const { lotus, K, c, budget, extra, max } = contextNeed(session, opts);
  const P = Math.min(...items.map((it) => questionTokens(session, it)));
  const parts = [
    ...(lotus ? [`BOT and ${K} latent blocks of ${c} slots`] : []),
    `${budget} new tokens`,
    "EOT",
  ];
  return new RangeError(
    `no question fits the model's context of ${max} positions: the shortest question, ${P} ` +
      `tokens, needs ${P + extra} with ${parts.join(", ")}; ask for fewer new tokens ` +
      `(--max-new-tokens)` +
      (lotus ? " or fewer latent blocks (--k; R, --r, does not change the positions)" : ""),
  );
}

function sum(xs: number[], from: number, to: number): number {
  let s = 0;
  for (let i = from; i < Math.min(to, xs.length); i++) s += xs[i];
  return s;
}

function readoutOf(
  logits: Float32Array,
  item: EvalItem,
  steps: string[],
  cot: string,
  K: number,
  c: number,
  V: number,
  tok: { encode(t: string): number[]; decode(ids: ArrayLike<number>): string },
  spill: boolean,
): BlockReadout[] {
  // Gold steps are tokenised as the dataset does: encode(step + "\n").
  const gold = steps.map((s) => tok.encode(s + "\n"));
  const scores = scoreReadout(logits, K, c, V, gold, spill);
  const decode = (ids: number[]) => tok.decode(ids);
  const earlier: number[] = [];
  return scores.map((s) => {
    const full = tok.decode(s.readout), nl = full.indexOf("\n");
    const text = nl >= 0 ? full.slice(0, nl) : full;
    let kind: StepKind | null = null, alternativeTop5: boolean | null = null;
    const rows = readoutRows(s.block, K, c, spill);
    if (cot === "math") {
      const ctx = { question: item.question, gold: steps, block: s.block, earlierResults: earlier };
      kind = classifyStep(text, ctx).kind;
      alternativeTop5 = bestReadings(logits, s.block, c, V, 5, decode, 20, rows)
        .some((r) => classifyStep(r.text, ctx).kind === "alternative");
      // Only a valid reading grounds later blocks: an invalid one's value is not a number the
      // model had, even where its arithmetic holds.
      const v = groundsLaterSteps(kind) ? validStepValue(text) : null;
      if (v !== null) earlier.push(v);
    } else if (cot === "nl") {
      // NL blocks are judged where the reading carries a number (eval/alternatives.ts).
      const ctx = {
        question: item.question,
        goldNl: steps,
        goldMath: item.math,
        block: s.block,
        earlierResults: earlier,
      };
      kind = classifyNlStep(text, ctx)?.kind ?? null;
      alternativeTop5 = bestReadings(logits, s.block, c, V, 5, decode, 20, rows)
        .some((r) => classifyNlStep(r.text, ctx)?.kind === "alternative");
      const v = groundsLaterSteps(kind) ? validNlValue(text) : null;
      if (v !== null) earlier.push(v);
    }
    return {
      block: s.block,
      gold: steps[s.block],
      text,
      goldTokens: s.gold.map((id) => tok.decode([id])),
      readoutTokens: s.readout.map((id) => tok.decode([id])),
      top1: s.top1,
      top5: s.top5,
      kind,
      alternativeTop5,
    };
  });
}

function summarise(
  rows: ExampleResult[],
  x: {
    mode: string;
    K: number;
    R: number;
    c: number;
    batch: number;
    msPerDecodeStep: number;
    msPerAnswerToken: number | null;
  },
): RunSummary {
  const correct = rows.filter((r) => r.correct).length;
  const answered = rows.filter((r) => !r.tooLong);
  const buckets = new Map<string, { n: number; correct: number }>();
  for (const r of rows) {
    const key = r.goldSteps === null ? "n/a" : String(r.goldSteps);
    const b = buckets.get(key) ?? { n: 0, correct: 0 };
    b.n++, b.correct += r.correct ? 1 : 0;
    buckets.set(key, b);
  }
  const byGoldSteps = [...buckets.entries()]
    .sort(([a], [b]) => (a === "n/a" ? 1 : b === "n/a" ? -1 : Number(a) - Number(b)))
    .map(([steps, b]) => ({ steps, n: b.n, correct: b.correct, accuracy: b.correct / b.n }));
  const out: RunSummary = {
    mode: x.mode,
    K: x.K,
    R: x.R,
    c: x.c,
    n: rows.length,
    correct,
    accuracy: rows.length ? correct / rows.length : 0,
    tooLong: rows.length - answered.length,
    // Latency is over the answered questions only.
    latency: {
      batch: x.batch,
      prefillMsPerExample: mean(answered.map((r) => r.prefillMs)),
      thoughtMsPerExample: mean(answered.map((r) => r.thoughtMs)),
      thoughtMsMedian: median(answered.map((r) => r.thoughtMs)),
      decodeMsPerExample: mean(answered.map((r) => r.decodeMs)),
      msPerDecodeStep: x.msPerDecodeStep,
      msPerAnswerToken: x.msPerAnswerToken,
      tokensMean: mean(answered.map((r) => r.tokens)),
      thoughtTokensMean: mean(answered.map((r) => r.thoughtTokens)),
    },
    byGoldSteps,
  };
  const withReadout = rows.filter((r) => r.readout?.length);
  if (withReadout.length) out.readout = summariseReadout(withReadout.map((r) => r.readout!));
  return out;
}

/** Aggregate block readouts (exported for tests and for comparing runs). */
export function summariseReadout(examples: BlockReadout[][]): ReadoutSummary {
  let blocks = 0, positions = 0, hit1 = 0, hit5 = 0, exact = 0, differing = 0, alt1 = 0, alt5 = 0;
  const kinds: Record<StepKind, number> = {
    gold: 0,
    "gold-elsewhere": 0,
    alternative: 0,
    invalid: 0,
  };
  for (const ex of examples) {
    for (const b of ex) {
      blocks++;
      positions += b.top1.length;
      hit1 += b.top1.filter(Boolean).length;
      hit5 += b.top5.filter(Boolean).length;
      if (b.text.trim() === b.gold.trim()) exact++;
      else {
        differing++;
        if (b.kind === "alternative") alt1++;
        if (b.alternativeTop5) alt5++;
      }
      if (b.kind) kinds[b.kind]++;
    }
  }
  return {
    examples: examples.length,
    blocks,
    positions,
    top1: positions ? hit1 / positions : 0,
    top5: positions ? hit5 / positions : 0,
    blocksExact: exact,
    blocksDiffering: differing,
    alternativeTop1: differing ? alt1 / differing : 0,
    alternativeTop5: differing ? alt5 / differing : 0,
    kinds,
  };
}

/**
 * Packing: one validated record and a tokenizer in, the token sequences of
 * docs/dataset-format.md out: the ragged components (Q, each S_i, A) and the three layouts
 * (`lotus`, `cot`, `nocot`) with their labels, plus the per-slot step targets.
 *
 * The LOTUS layout follows the reference implementation (see docs/method.md): the latent
 * region is always K*c slots long, whatever the record's step count, and the step targets
 * put step k's tokens at loop indices k*c, k*c+1, ..., counted from BOT. A step longer than c
 * is truncated to c target tokens (and the record flagged), drops the record, or, as in the
 * reference, spills into the following slots (and the record is flagged), by `longStep`;
 * pipeline/step_targets.ts has the layout of each policy.
 *
 * @module
 */

import { findSpecialTokenTexts, type Tokenizer } from "./tokenizer.ts";
import type { ValidatedRecord, Validation } from "./types.ts";
import type { CotForm, ReasonInfo } from "./validate.ts";
import { blockTargets, LONG_STEPS, type LongStep, supervisedLength } from "./step_targets.ts";

export type { LongStep } from "./step_targets.ts";

/** The label value the loss ignores. */
export const IGNORE: -100 = -100;

/** Options of {@linkcode packRecord}. */
export interface PackOptions {
  /** Latent blocks K (one step per block). */
  k: number;
  /** Latent slots per block c. */
  c: number;
  /** Which step form to tokenise. */
  cot: CotForm;
  /**
   * A step (among the first K) longer than c: `truncate` its targets, `drop` the record, or
   * `spill` its targets into the following slots.
   */
  longStep: LongStep;
}

/**
 * Reason codes that packing adds to a record's validation, in the shape of validate.ts's
 * `REASONS` (so `{ ...REASONS, ...PACK_REASONS }` lists every code). They depend on the
 * tokenizer: `special_token_text` drops under either CoT form; which of the step reasons
 * applies depends on `--long-step`, not on the CoT form.
 */
export const PACK_REASONS: Record<string, ReasonInfo> = {
  special_token_text: {
    description:
      "the question, a step (of either form) or the answer holds the text of one of the " +
      "tokenizer's special tokens (<|endoftext|>, <|latent|>...), which encoding would turn " +
      "into the special token itself",
    math: "drop",
    nl: "drop",
  },
  step_truncated: {
    description:
      "a step among the first K is longer than c tokens; only its first c tokens are step " +
      "targets (--long-step truncate)",
    math: "flag",
    nl: "flag",
  },
  step_too_long: {
    description: "a step among the first K is longer than c tokens (--long-step drop)",
    math: "drop",
    nl: "drop",
  },
  step_spilled: {
    description:
      "a step among the first K is longer than c tokens; its targets run on into the next " +
      "block's slots (--long-step spill)",
    math: "flag",
    nl: "flag",
  },
  step_spill_cut: {
    description:
      "a spilled step runs past the last latent slot (K*c); the targets beyond it are cut " +
      "(--long-step spill)",
    math: "flag",
    nl: "flag",
  },
};

/** The token sequences of one record. All ids are plain numbers; labels use -100. */
export interface PackedRecord {
  /** Q = encode(question + "\n"). */
  question: number[];
  /** S_i = encode(step_i + "\n") for every step of the chosen form. */
  steps: number[][];
  /** A = encode("### " + answer) + [EOS]. */
  answer: number[];
  /** `Q BOT LAT*(K*c) EOT S_K ... S_{n-1} A`. */
  lotusIds: number[];
  /** -100 through EOT, then the ids. */
  lotusLabels: number[];
  /** Column of BOT (= Q's length). */
  lotusBot: number;
  /**
   * [K, W] row-major (W = c, or K*c + 1 under `spill`): [k, j] = S_k[j], the target of loop
   * row k*c + j, or -100 where block k has no step, S_k is shorter, or the row is cut
   * (pipeline/step_targets.ts).
   */
  stepTargets: Int32Array;
  /** `Q S_0 ... S_{n-1} A`. */
  cotIds: number[];
  /** -100 on Q, then the ids. */
  cotLabels: number[];
  /** `Q A`. */
  nocotIds: number[];
  /** -100 on Q, then the ids. */
  nocotLabels: number[];
  /** Number of steps among the first K longer than c tokens (truncated or spilled). */
  truncatedSteps: number;
  /** Step tokens among the first K steps without a target (truncated, or cut under spill). */
  unsupervisedTokens: number;
}

/** What packing made of a record: its final validation and, unless dropped, its tokens. */
export interface PackOutcome {
  /** Validation after packing: the validator's result plus any {@linkcode PACK_REASONS}. */
  validation: Validation;
  /** The token sequences; null when the record is dropped (by validation or by packing). */
  packed: PackedRecord | null;
}

/** Raised for options that cannot describe a layout. */
export class PackOptionsError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "PackOptionsError";
  }
}

/** Check K and c; throws {@linkcode PackOptionsError} naming the bad field. */
export function checkPackOptions(opts: PackOptions): void {
  if (!Number.isInteger(opts.k) || opts.k < 0) {
    throw new PackOptionsError(`k = ${opts.k}: must be an integer >= 0`);
  }
  if (!Number.isInteger(opts.c) || opts.c < 1) {
    throw new PackOptionsError(`c = ${opts.c}: must be an integer >= 1`);
  }
  if (opts.cot !== "math" && opts.cot !== "nl") {
    throw new PackOptionsError(`cot = ${opts.cot}: must be "math" or "nl"`);
  }
  if (!LONG_STEPS.includes(opts.longStep)) {
    throw new PackOptionsError(
      `longStep = ${opts.longStep}: must be one of ${LONG_STEPS.map((l) => `"${l}"`).join(", ")}`,
    );
  }
}

/** The step texts of `r` in the chosen form, without the trailing newline. */
export function stepTexts(r: ValidatedRecord, cot: CotForm): string[] {
  return cot === "math" ? r.math.map((s) => s.text) : r.nl;
}

function withReason(
  v: Validation,
  reason: string,
  action: "flag" | "drop",
  details: string[],
): Validation {
  const status = action === "drop" ? "dropped" : v.status === "ok" ? "flagged" : v.status;
  return {
    status,
    reasons: v.reasons.includes(reason) ? v.reasons : [...v.reasons, reason],
    details: [...(v.details ?? []), ...details],
  };
}

function ignoreThen(ignored: number, ids: number[]): number[] {
  const out = new Array<number>(ids.length);
  for (let i = 0; i < ids.length; i++) out[i] = i < ignored ? IGNORE : ids[i];
  return out;
}

/**
 * The `special_token_text` findings of a record: for each text packing could encode (the
 * question, the steps of both forms, the answer) that holds a special token's text
 * ({@linkcode findSpecialTokenTexts}), a line naming it. Both forms, so that records.jsonl shows
 * the same reasons whichever form is built.
 */
function specialTokenFindings(r: ValidatedRecord, tok: Tokenizer): string[] {
  const texts: [string, string][] = [
    ["question", r.question],
    ...r.math.map((s, i): [string, string] => [`math step ${i + 1}`, s.text]),
    ...r.nl.map((s, i): [string, string] => [`NL step ${i + 1}`, s]),
    ["answer", r.answer],
  ];
  return findSpecialTokenTexts(texts, tok).map(({ label, hit }) => `${label} ${hit.problem}`);
}

/**
 * Tokenise and lay out one record. Records that validation dropped are not tokenised, and
 * neither are records whose text holds a special token's text: they are dropped as
 * `special_token_text` (whatever validation said), with a detail line for each such text.
 *
 * @example
 * ```ts
 * import { packRecord } from "./pack.ts";
 * import { gpt2Tokenizer } from "./tokenizer.ts";
 * const tok = await gpt2Tokenizer();
 * const rec = {
 *   id: "x:1", source: { file: "x", line: 1 }, question: "What is 2+3?", rationale: null,
 *   mathSteps: null, answer: "5", answerValue: 5, nl: ["2+3 is 5."],
 *   math: [{ expr: "2+3", value: "5", text: "<<2+3=5>>" }],
 *   validation: { status: "ok" as const, reasons: [] },
 * };
 * const { packed } = packRecord(rec, tok, { k: 2, c: 4, cot: "math", longStep: "truncate" });
 * console.assert(packed!.lotusIds[packed!.lotusBot] === tok.special.bot);
 * ```
 */
export function packRecord(r: ValidatedRecord, tok: Tokenizer, opts: PackOptions): PackOutcome {
  const special = specialTokenFindings(r, tok);
  if (special.length > 0) {
    return {
      validation: withReason(r.validation, "special_token_text", "drop", special),
      packed: null,
    };
  }
  if (r.validation.status === "dropped") return { validation: r.validation, packed: null };
  const { k: K, c } = opts;
  const { eos, bot, eot, lat } = tok.special;
  const question = tok.encode(r.question + "\n");
  const steps = stepTexts(r, opts.cot).map((s) => tok.encode(s + "\n"));
  const answer = tok.encode("### " + r.answer);
  answer.push(eos);

  const long: string[] = [];
  for (let s = 0; s < Math.min(K, steps.length); s++) {
    if (steps[s].length > c) long.push(`step ${s + 1}: ${steps[s].length} tokens, c = ${c}`);
  }
  const truncatedSteps = long.length;
  let validation = r.validation;
  let unsupervisedTokens = 0;
  const cut: string[] = [];
  for (let s = 0; s < Math.min(K, steps.length); s++) {
    const n = supervisedLength(s, steps[s].length, K, c, opts.longStep);
    unsupervisedTokens += steps[s].length - n;
    if (opts.longStep === "spill" && n < steps[s].length) {
      cut.push(`step ${s + 1}: ${steps[s].length - n} of ${steps[s].length} tokens past slot K*c`);
    }
  }
  if (truncatedSteps > 0) {
    if (opts.longStep === "drop") {
      return { validation: withReason(validation, "step_too_long", "drop", long), packed: null };
    }
    if (opts.longStep === "spill") {
      validation = withReason(validation, "step_spilled", "flag", long);
      if (cut.length) validation = withReason(validation, "step_spill_cut", "flag", cut);
    } else validation = withReason(validation, "step_truncated", "flag", long);
  }

  const stepTargets = blockTargets(steps, K, c, opts.longStep);

  const lotusIds: number[] = [...question, bot];
  for (let i = 0; i < K * c; i++) lotusIds.push(lat);
  lotusIds.push(eot);
  const lotusIgnored = lotusIds.length;
  for (let s = K; s < steps.length; s++) lotusIds.push(...steps[s]);
  lotusIds.push(...answer);

  const cotIds: number[] = [...question];
  for (const st of steps) cotIds.push(...st);
  cotIds.push(...answer);
  const nocotIds = [...question, ...answer];

  return {
    validation,
    packed: {
      question,
      steps,
      answer,
      lotusIds,
      lotusLabels: ignoreThen(lotusIgnored, lotusIds),
      lotusBot: question.length,
      stepTargets,
      cotIds,
      cotLabels: ignoreThen(question.length, cotIds),
      nocotIds,
      nocotLabels: ignoreThen(question.length, nocotIds),
      truncatedSteps,
      unsupervisedTokens,
    },
  };
}

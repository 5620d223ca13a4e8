/**
 * Validation: check a segmented record's arithmetic with mathjs and decide, per CoT form,
 * whether to keep it.
 *
 * Every math step's expression is evaluated safely ({@linkcode evaluateExpression}: numbers,
 * `+ - * / ^`, parentheses, unary signs, percent and modulo only) and compared with its
 * stated value by the rounding rule of pipeline/arith.ts: whole numbers must be equal, other
 * values equal within 1e-9 relative and within the digits shown; a stated value with d
 * decimals that is less than one unit of its last digit (10^-d) from the computed one is a
 * rounding (`10/3=3.33`; one full unit off, `2+3=5.1`, is not), kept and flagged
 * `rounded_value`; anything else is `wrong_value`. An expression with no finite value (a
 * division or modulo by zero) is `no_finite_value`. A number beyond 2^53 − 1 (an operand, a partial
 * result, the result or the stated value) cannot be checked exactly in floating point and
 * gives `number_too_large`; the stated value is still compared with the floating-point value,
 * and one that is far off is also `wrong_value` (`<<2*3=10000000000000001>>`).
 *
 * The chain's last stated value must equal the final answer (`final_mismatch` otherwise), and
 * unless the NL form was derived from the math, the NL steps must carry every number the math
 * steps produce: each stated value must appear, as a magnitude, among the numbers written in
 * the NL steps (`nl_missing_number` otherwise; see {@linkcode numbersInText}). Where segmentation
 * knows which NL step was written on each math step's line (`nlOfMath`: one step per line), that
 * NL step must state the value mathjs computes for the math step, or its stated value when that
 * is a rounding of it (`nl_step_mismatch` otherwise, naming the step, the value and the text).
 *
 * Each reason drops or flags depending on the CoT form ({@linkcode REASONS}). NL steps derived
 * from the math (`nlDerived`: iCoT and Coconut chains) are the math steps restated, so for
 * them the math form's column decides under `nl` too ({@linkcode decidingForm}). Status is
 * `dropped` if any reason drops under the chosen form, else `flagged` if there is any reason,
 * else `ok`. Every check runs under both forms, so records.jsonl shows the same reasons
 * whichever form is built; only the decision differs.
 *
 * @module
 */
import {
  compareStated,
  evaluateExpression,
  ExpressionError,
  MAX_EXACT,
  NoFiniteValueError,
  NumberTooLargeError,
} from "./arith.ts";
import { numbersInText, readNumber, sameNumber } from "./numbers.ts";
import type { SegmentedRecord, ValidatedRecord, ValidationStatus } from "./types.ts";
import { type OptionNames, refuseUnknownOptions, refuseUnlisted } from "../base/options.ts";

/** The CoT form a dataset is built for. */
export type CotForm = "math" | "nl";

/** Options of {@linkcode validate}. */
export interface ValidateOptions {
  /** The CoT form that decides drop or flag; default `"math"`. */
  cot?: CotForm;
}

/** Every option of {@linkcode ValidateOptions}. */
const VALIDATE_OPTIONS: OptionNames<ValidateOptions> = { cot: true };

/**
 * What a reason means, and what it does under each CoT form. Under `--cot nl`, a record whose
 * NL steps were derived from its math steps follows `math` ({@linkcode decidingForm}).
 */
export interface ReasonInfo {
  /** What the reason means. */
  description: string;
  /** Under `--cot math`. */
  math: "drop" | "flag";
  /** Under `--cot nl`, for NL steps written as prose. */
  nl: "drop" | "flag";
}

/** Every reason code, with its meaning and whether it drops or flags under each CoT form. */
export const REASONS: Record<string, ReasonInfo> = {
  empty_cot: {
    description: "the record has no chain of thought at all: nothing to supervise",
    math: "drop",
    nl: "drop",
  },
  no_annotation: {
    description: "the rationale has no <<expr=value>> annotation: no math chain, prose only",
    math: "drop",
    nl: "flag",
  },
  unbalanced_annotation: {
    description:
      "a << without >> or a >> without <<: a math step may be lost or garbled, and the NL " +
      "step keeps the annotation's text or loses it",
    math: "drop",
    nl: "drop",
  },
  bad_expression: {
    description: "a step's expression is not allowed or does not parse",
    math: "drop",
    nl: "flag",
  },
  no_finite_value: {
    description: "a step's expression has no finite value (a division by zero): no value is right",
    math: "drop",
    nl: "drop",
  },
  bad_value: {
    description: "a step's stated value is not a number (e.g. ~11.67, 3:15, or missing)",
    math: "drop",
    nl: "flag",
  },
  number_too_large: {
    description: "a number in a step is beyond 2^53, where floating point cannot check it exactly",
    math: "drop",
    nl: "flag",
  },
  wrong_value: {
    description: "a step's expression does not evaluate to its stated value, even rounded",
    math: "drop",
    nl: "drop",
  },
  rounded_value: {
    description: "a step states its value rounded or truncated to the decimals it shows",
    math: "flag",
    nl: "flag",
  },
  final_mismatch: {
    description: "the chain's last stated value differs from the final answer",
    math: "flag",
    nl: "flag",
  },
  answer_not_number: {
    description: "the final answer is not a number; numeric checks against it are skipped",
    math: "flag",
    nl: "flag",
  },
  nl_missing_number: {
    description: "a value a math step produces does not appear in the NL steps",
    math: "flag",
    nl: "flag",
  },
  nl_step_mismatch: {
    description:
      "the NL step written on a math step's line does not state the value mathjs computes " +
      "for that step",
    math: "flag",
    nl: "flag",
  },
};

/**
 * The column of {@linkcode REASONS} that decides for a record built in `cot`: NL steps derived
 * from the math steps (`nlDerived`) restate them, so a bad math step is a bad NL step and the
 * math column decides; otherwise `cot`'s own.
 */
export function decidingForm(cot: CotForm, nlDerived = false): CotForm {
  return cot === "nl" && nlDerived ? "math" : cot;
}

/**
 * The status that a list of reasons gives under a CoT form, for a record whose NL steps were
 * derived from its math steps or not.
 */
export function statusOf(
  reasons: readonly string[],
  cot: CotForm,
  nlDerived = false,
): ValidationStatus {
  const form = decidingForm(cot, nlDerived);
  if (reasons.some((r) => REASONS[r]?.[form] === "drop")) return "dropped";
  return reasons.length > 0 ? "flagged" : "ok";
}

function fmt(x: number): string {
  return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(12)));
}

/**
 * Validates one segmented record (checks and decisions in the module doc).
 *
 * @throws {RangeError} for an option {@linkcode ValidateOptions} does not have, or a `cot`
 * that is neither `"math"` nor `"nl"`.
 *
 * @example
 * ```ts
 * import { segment } from "./segment.ts";
 * import { validate } from "./validate.ts";
 * const p = {
 *   id: "x:1",
 *   source: { file: "x", line: 1 },
 *   question: "A third of 10?",
 *   rationale: "10/3 = <<10/3=3.33>>3.33",
 *   mathSteps: null,
 *   answer: "3.33",
 * };
 * const v = validate(segment(p), { cot: "math" });
 * console.assert(v.validation.status === "flagged");
 * console.assert(v.validation.reasons[0] === "rounded_value");
 * ```
 */
export function validate(r: SegmentedRecord, opts: ValidateOptions = {}): ValidatedRecord {
  refuseUnknownOptions("validate", opts, VALIDATE_OPTIONS);
  const cot = opts.cot ?? "math";
  refuseUnlisted("validate", "cot", cot, ["math", "nl"]);
  const reasons: string[] = [];
  const details: string[] = [];
  const add = (reason: string, detail?: string) => {
    if (!reasons.includes(reason)) reasons.push(reason);
    if (detail !== undefined) details.push(detail);
  };

  const empty = r.math.length === 0 && r.nl.length === 0;
  if (empty) add("empty_cot");
  if (r.answerValue === null) add("answer_not_number", `answer ${JSON.stringify(r.answer)}`);
  if ((r.unbalancedAnnotations ?? 0) > 0) {
    add("unbalanced_annotation", `${r.unbalancedAnnotations} unpaired << or >>`);
  }
  if (r.math.length === 0 && !empty) add("no_annotation");

  const stated: (number | null)[] = [];
  const computed: (number | null)[] = [];
  r.math.forEach((step, i) => {
    const at = `step ${i + 1} ${step.text}`;
    const v = readNumber(step.value);
    stated.push(v?.value ?? null);
    let x: number | null = null;
    // The floating-point value of an expression too large to check exactly.
    let approx: number | null = null;
    try {
      x = evaluateExpression(step.expr);
    } catch (e) {
      if (e instanceof NumberTooLargeError) {
        add("number_too_large", `${at}: ${e.message}`);
        approx = e.approx;
      } else if (e instanceof NoFiniteValueError) add("no_finite_value", `${at}: ${e.message}`);
      else if (e instanceof ExpressionError) add("bad_expression", `${at}: ${e.message}`);
      else throw e;
    }
    computed.push(x);
    if (v === null) {
      add("bad_value", `${at}: stated value ${JSON.stringify(step.value)} is not a number`);
      return;
    }
    if (approx !== null) {
      // Not exact, but a stated value this far off is wrong whatever the rounding.
      const want = v.percent ? [v.value, v.value / 100] : [v.value];
      if (!want.some((w) => Math.abs(approx - w) <= 1e-9 * Math.max(1, Math.abs(approx)))) {
        add("wrong_value", `${at}: evaluates to about ${fmt(approx)}`);
      }
      return;
    }
    if (Math.abs(v.value) > MAX_EXACT) {
      add(
        "number_too_large",
        `${at}: stated value ${step.value} is beyond 2^53 (9,007,199,254,740,991), where ` +
          "floating point cannot check it exactly",
      );
      // The expression's value is within 2^53, the stated one beyond: only a percent could
      // still agree, and compareStated says whether one does.
      if (x !== null && compareStated(x, v) === "wrong") {
        add("wrong_value", `${at}: evaluates to ${fmt(x)}`);
      }
      return;
    }
    if (x === null) return;
    const agreement = compareStated(x, v);
    if (agreement === "wrong") add("wrong_value", `${at}: evaluates to ${fmt(x)}`);
    else if (agreement === "rounded") add("rounded_value", `${at}: evaluates to ${fmt(x)}`);
  });

  const last = stated.length > 0 ? stated[stated.length - 1] : null;
  if (last !== null && r.answerValue !== null && !sameNumber(last, r.answerValue)) {
    add("final_mismatch", `last step gives ${fmt(last)}, answer is ${JSON.stringify(r.answer)}`);
  }

  if (!r.nlDerived && r.math.length > 0 && r.nl.length > 0) {
    const seen = numbersInText(r.nl.join(" "));
    const missing = r.math.filter((s) => {
      const v = readNumber(s.value);
      if (v === null) return false;
      const want = v.percent ? [v.value, v.value / 100] : [v.value];
      return !want.some((w) => seen.some((n) => sameNumber(n, Math.abs(w))));
    });
    if (missing.length > 0) {
      add("nl_missing_number", `NL steps lack ${missing.map((s) => s.value).join(", ")}`);
    }
  }

  if (!r.nlDerived && r.nlOfMath) {
    r.math.forEach((step, i) => {
      const at = r.nlOfMath![i], x = computed[i];
      if (at === null || at === undefined || x === null || x === undefined) return;
      const text = r.nl[at];
      if (text === undefined) return;
      const v = readNumber(step.value);
      const want = [x, ...(v ? [v.value] : []), ...(v?.percent ? [v.value / 100] : [])];
      const seen = numbersInText(text);
      if (!want.some((w) => seen.some((n) => sameNumber(n, Math.abs(w))))) {
        add(
          "nl_step_mismatch",
          `NL step ${at + 1} ${JSON.stringify(text)} does not state ${fmt(x)}, the value of ` +
            `math step ${i + 1} ${step.text}`,
        );
      }
    });
  }

  return {
    ...r,
    validation: { status: statusOf(reasons, cot, r.nlDerived ?? false), reasons, details },
  };
}

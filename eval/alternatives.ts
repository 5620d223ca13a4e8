/**
 * "Alternative valid intermediates": a latent block whose readout is not its gold step but is
 * still a correct calculation on numbers the model had, such as `<<3*60=180>>` where the gold
 * step is `<<3*3=9>>`.
 *
 * A read-out step (math form) is classified as
 * - `gold`: the text is the block's gold step S_k;
 * - `gold-elsewhere`: the text is another gold step of the same example (a step read out in
 *   the wrong block is not an alternative);
 * - `alternative`: it parses as `<<expr=value>>`, mathjs (pipeline/arith.ts) agrees with the
 *   stated value under the pipeline's rounding rule, and every operand is *grounded*: a number
 *   written in the question, a result of an earlier step (gold steps before k, or valid
 *   read-out steps of earlier blocks), or a constant the gold chain itself uses (60 minutes,
 *   12 months, 100 for percent: the gold CoT is what licenses world knowledge);
 * - `invalid`: anything else, with the reason.
 *
 * @module
 */
import { evaluateExpression, ExpressionError, normalizeExpression } from "../pipeline/arith.ts";
import { compareStated } from "../pipeline/arith.ts";
import { numbersInText, readNumber, sameNumber } from "../pipeline/numbers.ts";

/** What a read-out step is (see the module doc). */
export type StepKind = "gold" | "gold-elsewhere" | "alternative" | "invalid";

/** The verdict on one read-out step. */
export interface StepVerdict {
  /** What the reading is. */
  kind: StepKind;
  /** Why an `invalid` step is invalid. */
  reason?: string;
}

/** What a block's readout is judged against. */
export interface StepContext {
  /** The question text (its numbers ground operands). */
  question: string;
  /** The example's gold math steps, `<<expr=value>>`. */
  gold: string[];
  /** Block index k. */
  block: number;
  /** Values of valid read-out steps of blocks before k (they are earlier results too). */
  earlierResults?: number[];
}

/** A math step split into expression and stated value, or null if it is not `<<e=v>>`. */
export function parseStep(text: string): { expr: string; value: string } | null {
  const m = /^<<([^<>]*)>>$/.exec(text.trim());
  if (!m) return null;
  const eq = m[1].lastIndexOf("=");
  if (eq <= 0) return null;
  const expr = m[1].slice(0, eq).trim(), value = m[1].slice(eq + 1).trim();
  return expr === "" || value === "" ? null : { expr, value };
}

/** The operand magnitudes written in an expression (signs belong to the operators). */
export function operandsOf(expr: string): number[] {
  return [...normalizeExpression(expr).matchAll(/\d*\.\d+|\d+/g)].map((m) => Number(m[0]));
}

/** The stated value of a valid step (expression agrees with it), else null. */
export function validStepValue(text: string): number | null {
  const s = parseStep(text);
  if (!s) return null;
  const stated = readNumber(s.value);
  if (!stated) return null;
  let x: number;
  try {
    x = evaluateExpression(s.expr);
  } catch (e) {
    if (e instanceof ExpressionError) return null;
    throw e;
  }
  return compareStated(x, stated) === "wrong" ? null : stated.value;
}

/**
 * Classify a read-out step (rules in the module doc).
 *
 * @example
 * ```ts
 * import { classifyStep } from "./alternatives.ts";
 * const ctx = { question: "3 boxes of 3 eggs; an hour has 60 minutes", gold: ["<<3*3=9>>"], block: 0 };
 * console.assert(classifyStep("<<3*3=9>>", ctx).kind === "gold");
 * console.assert(classifyStep("<<3*60=180>>", ctx).kind === "alternative");
 * console.assert(classifyStep("<<3*60=170>>", ctx).kind === "invalid");
 * console.assert(classifyStep("<<7*60=420>>", ctx).kind === "invalid"); // 7 is not grounded
 * ```
 */
export function classifyStep(text: string, ctx: StepContext): StepVerdict {
  const t = text.trim();
  if (t === ctx.gold[ctx.block]?.trim()) return { kind: "gold" };
  if (ctx.gold.some((g, i) => i !== ctx.block && g.trim() === t)) return { kind: "gold-elsewhere" };
  const s = parseStep(t);
  if (!s) return { kind: "invalid", reason: "not of the form <<expr=value>>" };
  const value = validStepValue(t);
  if (value === null) return { kind: "invalid", reason: "the arithmetic does not hold" };
  const pool = [...numbersInText(ctx.question), ...(ctx.earlierResults ?? [])];
  const steps = ctx.gold.map(parseStep);
  const results = steps.map((g) => (g ? readNumber(g.value)?.value : undefined));
  for (let i = 0; i < steps.length; i++) {
    const g = steps[i];
    if (!g) continue;
    if (i < ctx.block && results[i] !== undefined) pool.push(results[i]!);
    // A constant of the gold chain is an operand that is no step's result: a later result
    // must not ground an earlier block.
    for (const x of operandsOf(g.expr)) {
      if (!results.some((r) => r !== undefined && sameNumber(Math.abs(r), x))) pool.push(x);
    }
  }
  for (const x of operandsOf(s.expr)) {
    if (!pool.some((p) => sameNumber(Math.abs(p), x))) {
      return {
        kind: "invalid",
        reason: `operand ${x} is not in the question or an earlier result`,
      };
    }
  }
  return { kind: "alternative" };
}

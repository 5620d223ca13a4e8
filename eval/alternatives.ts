/**
 * "Alternative valid intermediates": a latent block whose readout is not its gold step but is
 * still a correct calculation on numbers the model had, such as `<<3*60=180>>` where the gold
 * step is `<<3*3=9>>`.
 *
 * A read-out step (math form) is classified as
 * - `gold`: the step is the block's gold step S_k: the same numbers and operators in the same
 *   order, and the same value, numbers compared by value (`<<12/3=4.0>>` is `<<12/3=4>>`);
 * - `gold-elsewhere`: it is, in the same sense, another gold step of the same example (a step
 *   read out in the wrong block is not an alternative);
 * - `alternative`: it parses as `<<expr=value>>`, mathjs (pipeline/arith.ts) agrees with the
 *   stated value under the pipeline's rounding rule, it computes something (below), and every
 *   operand is *grounded*: a number written in the question, a result of an earlier step
 *   (gold steps before k, or earlier blocks' readings that are `gold`, `gold-elsewhere` or
 *   `alternative`), or a constant the gold chain itself uses (60 minutes, 12 months, 100 for
 *   percent: the gold CoT is what licenses world knowledge);
 * - `invalid`: anything else, with the reason.
 *
 * A step computes something when it applies at least one arithmetic operator, it is no
 * identity (`<<12=12>>`, `<<12*1=12>>`, `<<12+0=12>>` restate a number: the value is an operand
 * and the others are 0 or 1; `<<4/2=2>>` and `<<6-3=3>>` compute), and it is not a number
 * cancelled against itself (`<<3-3=0>>`, `<<3/3=1>>`: every operand the same number, value 0
 * or 1).
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

/**
 * Whether a reading of this kind grounds later blocks: its value is one of the "earlier
 * results" ({@linkcode StepContext}) only when the reading is `gold`, `gold-elsewhere` or
 * `alternative`. An `invalid` reading's value is no number the model had, even where its
 * arithmetic holds on ungrounded operands.
 */
export function groundsLaterSteps(kind: StepKind | null | undefined): boolean {
  return kind === "gold" || kind === "gold-elsewhere" || kind === "alternative";
}

/**
 * Whether two math steps are the same step: the same numbers and operators in the same order
 * (numbers by value, spacing, `$` and thousands commas ignored) and the same value by value,
 * so `<<12/3=4.0>>` is `<<12/3=4>>` but `<<3*12=36>>` is not `<<12*3=36>>`. Texts that are
 * not `<<expr=value>>` are the same when they are equal.
 */
export function sameStep(a: string, b: string): boolean {
  const x = parseStep(a), y = parseStep(b);
  if (!x || !y) return a.trim() === b.trim();
  const p = exprTokens(x.expr), q = exprTokens(y.expr);
  return p.length === q.length &&
    p.every((t, i) =>
      typeof t === "number" && typeof q[i] === "number" ? sameNumber(t, q[i]) : t === q[i]
    ) && sameValue(x.value, y.value);
}

/** An expression's numbers (as values) and other characters, spacing dropped. */
function exprTokens(expr: string): (number | string)[] {
  const s = normalizeExpression(expr).replace(/\s+/g, "");
  return [...s.matchAll(/\d*\.\d+|\d+|./g)].map((m) => (/\d/.test(m[0]) ? Number(m[0]) : m[0]));
}

/**
 * Why a valid step computes nothing (module doc), or null when it computes something: no
 * arithmetic operator, a value that restates one of its operands, or a number cancelled
 * against itself.
 */
export function trivialStep(expr: string, value: number): string | null {
  const e = normalizeExpression(expr);
  // A binary operator follows a number, a closing parenthesis or a percent sign; `%` between
  // numbers is a remainder (pipeline/arith.ts).
  if (!/[\d.)%]\s*[-+*/^]|[\d.)]\s*%\s*[\d.(]/.test(e)) {
    return "no arithmetic operator: it computes nothing";
  }
  // An identity: the value is one operand, every other one a 0 or a 1 (12*1, 12+0, 12/1).
  // A value that only happens to equal an operand (4/2=2, 6-3=3) is a computation.
  const ops = operandsOf(e);
  const i = ops.findIndex((x) => sameNumber(x, value));
  if (i >= 0 && ops.every((x, j) => j === i || x === 0 || x === 1)) {
    return `its value restates its operand ${ops[i]}`;
  }
  if ((value === 0 || value === 1) && ops.every((x) => sameNumber(x, ops[0]))) {
    return `it cancels ${ops[0]} against itself`;
  }
  return null;
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
  const own = ctx.gold[ctx.block];
  if (own !== undefined && sameStep(t, own)) return { kind: "gold" };
  if (ctx.gold.some((g, i) => i !== ctx.block && sameStep(t, g))) {
    return { kind: "gold-elsewhere" };
  }
  const s = parseStep(t);
  if (!s) return { kind: "invalid", reason: "not of the form <<expr=value>>" };
  const value = validStepValue(t);
  if (value === null) return { kind: "invalid", reason: "the arithmetic does not hold" };
  const trivial = trivialStep(s.expr, value);
  if (trivial) return { kind: "invalid", reason: trivial };
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

/**
 * The last calculation an NL step writes, `expr = value` (`He pays 3 * $12 = $36.` gives
 * `{ expr: "3 * 12", value: "36" }`), or null when it writes none. The expression is the run of
 * numbers, operators (`+ - * / x × ÷ ^`), parentheses and currency signs before the `=`;
 * `$` and thousands commas are removed, `x` and `×` read as `*`.
 */
export function nlCalculation(text: string): { expr: string; value: string } | null {
  const NUM = String.raw`[$€£]?\d[\d,]*(?:\.\d+)?%?`;
  const OP = String.raw`\s*(?:[-+*/^×÷x]|\*\*)\s*`;
  const re = new RegExp(
    String.raw`((?:\(\s*)*${NUM}(?:\s*\))*(?:${OP}(?:\(\s*)*${NUM}(?:\s*\))*)+)\s*=\s*` +
      String.raw`(-?[$€£]?\d[\d,]*(?:\.\d+)?%?)`,
    "g",
  );
  let last: RegExpExecArray | null = null;
  for (const m of text.matchAll(re)) last = m;
  if (!last) return null;
  const expr = normalizeExpression(last[1].replace(/(?<=[\d)\s])x(?=[\s\d($])/g, "*"));
  const value = normalizeExpression(last[2]).replace(/(\d),(?=\d)/g, "$1");
  return { expr, value };
}

/** What an NL block's readout is judged against. */
export interface NlStepContext {
  /** The question text (its numbers ground operands). */
  question: string;
  /** The example's gold NL steps. */
  goldNl: string[];
  /** Its gold math steps, `<<expr=value>>`, when the item has them (grounding constants). */
  goldMath: string[] | null;
  /** Block index k. */
  block: number;
  /** Values of valid read-out calculations of blocks before k. */
  earlierResults?: number[];
}

/**
 * Classify an NL read-out step. The text is first compared with the gold NL steps: the
 * block's own is `gold`, another block's `gold-elsewhere`. Otherwise, where the reading writes
 * a calculation (`expr = value`, {@linkcode nlCalculation}), that calculation is judged as
 * {@linkcode classifyStep} judges a math step, against the gold math steps: the block's own
 * calculation in other words is `gold`, another block's `gold-elsewhere`, a correct grounded
 * one `alternative`, anything else `invalid`. A reading that writes numbers but no calculation
 * is `gold` when its last number is the value the block's gold step computes, `gold-elsewhere`
 * when it is another block's, else `invalid`. A reading with no number at all is not judged:
 * null.
 *
 * @example
 * ```ts
 * import { classifyNlStep } from "./alternatives.ts";
 * const ctx = {
 *   question: "Ann has 3 boxes of 3 eggs. An hour has 60 minutes.",
 *   goldNl: ["She has 3*3 = 9 eggs."], goldMath: ["<<3*3=9>>"], block: 0,
 * };
 * console.assert(classifyNlStep("She has 3*3 = 9 eggs.", ctx)?.kind === "gold");
 * console.assert(classifyNlStep("Ann owns 3 x 3 = 9 eggs.", ctx)?.kind === "gold");
 * console.assert(classifyNlStep("That is 3*60 = 180 minutes.", ctx)?.kind === "alternative");
 * console.assert(classifyNlStep("That is 3*60 = 170 minutes.", ctx)?.kind === "invalid");
 * console.assert(classifyNlStep("She has some eggs.", ctx) === null);
 * ```
 */
export function classifyNlStep(text: string, ctx: NlStepContext): StepVerdict | null {
  const t = text.trim();
  if (t === ctx.goldNl[ctx.block]?.trim()) return { kind: "gold" };
  if (ctx.goldNl.some((g, i) => i !== ctx.block && g.trim() === t)) {
    return { kind: "gold-elsewhere" };
  }
  const gold = ctx.goldMath ?? [];
  const calc = nlCalculation(t);
  if (calc) {
    const mine = `<<${calc.expr}=${calc.value}>>`;
    const same = (g: string) =>
      parseStep(g) !== null && parseStep(mine) !== null && sameStep(g, mine);
    if (gold[ctx.block] !== undefined && same(gold[ctx.block])) return { kind: "gold" };
    if (gold.some((g, i) => i !== ctx.block && same(g))) return { kind: "gold-elsewhere" };
    const v = classifyStep(`<<${calc.expr}=${calc.value}>>`, {
      question: ctx.question,
      gold,
      block: ctx.block,
      earlierResults: ctx.earlierResults,
    });
    // A math-form "gold" here would be a textual match the checks above already made.
    return v.kind === "gold" || v.kind === "gold-elsewhere" ? { kind: "alternative" } : v;
  }
  const nums = numbersInText(t);
  if (nums.length === 0) return null;
  const last = nums[nums.length - 1];
  const values = gold.map((g) => {
    const p = parseStep(g);
    return p ? readNumber(p.value)?.value : undefined;
  });
  const hit = (v: number | undefined) => v !== undefined && sameNumber(Math.abs(v), last);
  if (hit(values[ctx.block])) return { kind: "gold" };
  if (values.some((v, i) => i !== ctx.block && hit(v))) return { kind: "gold-elsewhere" };
  return {
    kind: "invalid",
    reason: gold.length
      ? `states ${last} with no calculation, and no gold step gives it`
      : `states ${last} with no calculation`,
  };
}

/** The value of an NL reading's calculation when it holds, else null (earlier results). */
export function validNlValue(text: string): number | null {
  const calc = nlCalculation(text);
  return calc ? validStepValue(`<<${calc.expr}=${calc.value}>>`) : null;
}

function sameValue(a: string, b: string): boolean {
  const x = readNumber(a), y = readNumber(b);
  return x !== null && y !== null && sameNumber(x.value, y.value);
}

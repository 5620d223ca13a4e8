/**
 * Safe evaluation of calculator-annotation expressions, and the rule that decides whether a
 * stated result matches.
 *
 * Data is untrusted, so mathjs never sees an arbitrary string. An expression is first
 * normalized: `×` `÷` `−` become `*` `/` `-`; `$`, `€`, `£` and thousands commas (`80,000`)
 * are removed; Python's `//` (twice in GSM8K, both exact) is read as `/` and `**` as `^`.
 * Percent: `N%` is N/100 (`(expr)%` likewise), and `a % b` with an operand after the sign is
 * modulo. Then only the characters `0-9 . + - * / ^ ( ) %` and spaces may remain, and the
 * mathjs parse tree may hold only numeric constants, parentheses, `+ - * / ^ mod`, unary minus
 * and plus (implicit multiplication such as `2(3+4)` is a multiplication and is allowed).
 * Anything else is an {@linkcode ExpressionError}; so is an expression with no finite real
 * value (`1/0`, `0/0`, `5 % 0`, `(-8)^(1/3)`), as the subclass {@linkcode NoFiniteValueError}:
 * mathjs's x mod 0 = x is refused like a division by zero. A number beyond 2^53 − 1 in
 * magnitude (an operand, a partial result or the result), where floating point no longer
 * holds every integer, is a {@linkcode NumberTooLargeError}: such an expression cannot be
 * checked exactly, and the error carries its floating-point value, which still tells a stated
 * value that is far off.
 *
 * **Rounding rule.** Let x be the expression's value and v the stated value with d digits
 * after its decimal point (read by `readNumber` of pipeline/numbers.ts); the resolution r of
 * v is 10^−d, or 10^−6 for a stated fraction (`3/4`). x is *within one unit* of v when:
 * for a decimal v, |x·10^d − n| < 1 − ε, where n is the whole number v's digits write (51 for
 * `5.1`) and ε the larger of 1e-9 and 16 ulps of x·10^d; for a fraction, |x − v| < r.
 * Counting in units of v's last digit keeps the test exact for decimals: n carries no binary
 * rounding error, and an x that is a decimal of at most d digits lands on its own whole number
 * to within its floating-point error, which ε absorbs (0.1 + 0.2 is 0.30000000000000004). So a
 * v one full unit off is never within one unit: `2+3=5.1`, `2+3=4.9` and `7*7=49.1` are all
 * wrong, though in floating point 5.1 − 5 falls just under 0.1 and 49.1 − 49 just over it.
 * - `equal`: when x and v are both whole numbers, x = v exactly. Otherwise, with
 *   M = max(1, |x|, |v|): |x − v| ≤ 1e-9·M, which absorbs binary floating-point error, and
 *   x within one unit of v or |x − v| < 1e-14·M, so that the tolerance never exceeds the
 *   digits v shows (a value written to more digits than floating point holds, such as
 *   Python's `933.3333333333333`, still matches to within its precision).
 * - `rounded`: otherwise, x within one unit of a decimal v, i.e. v is x rounded (half up or
 *   to nearest), truncated or rounded up to d decimals (`10/3=3.33`, `10/3=3.34`, `1/8=0.13`,
 *   `100/30=4` buses). Accepted, and flagged.
 * - `wrong`: anything else. A stated fraction only matches when equal. A stated `N%` matches
 *   x = N or x = N/100 (which has d + 2 decimals: resolution r/100).
 *
 * @module
 */
import { type MathNode, mod, parse, pow } from "mathjs";
import { sameNumber, type WrittenNumber } from "./numbers.ts";

/** The largest magnitude at which floating point holds every integer: 2^53 − 1. */
export const MAX_EXACT: number = Number.MAX_SAFE_INTEGER;

/** An expression that is not allowed, does not parse, or has no finite value. */
export class ExpressionError extends Error {
  /** The expression as given. */
  readonly expr: string;
  /** `why` says what is wrong with `expr`. */
  constructor(expr: string, why: string) {
    super(`expression ${JSON.stringify(expr)}: ${why}`);
    this.name = "ExpressionError";
    this.expr = expr;
  }
}

/**
 * An expression whose operands, partial results or result go beyond {@linkcode MAX_EXACT}:
 * floating point cannot check it exactly, so it is refused rather than compared.
 */
export class NumberTooLargeError extends ExpressionError {
  /** The number that is too large, e.g. `99999999999*99999999999 = 9.9999999998e+21`. */
  readonly what: string;
  /**
   * The expression's value computed in floating point regardless of the limit (close, not
   * exact), or null when that is not finite either.
   */
  readonly approx: number | null;
  /** `what` names the number; `approx` is the expression's floating-point value. */
  constructor(expr: string, what: string, approx: number | null = null) {
    super(
      expr,
      `${what} is beyond 2^53 (9,007,199,254,740,991), where floating point cannot check it ` +
        "exactly",
    );
    this.name = "NumberTooLargeError";
    this.what = what;
    this.approx = approx;
  }
}

/**
 * An expression with no finite real value: a division by zero (`5/0`, `0/0`), a modulo by zero
 * (`5 % 0`, which mathjs would give as 5) or a power with no real result (`(-8)^(1/3)`). No
 * stated value can be right.
 */
export class NoFiniteValueError extends ExpressionError {
  /** `why` says what happened, e.g. `5/0 divides by zero`. */
  constructor(expr: string, why: string) {
    super(expr, `has no finite value (${why})`);
    this.name = "NoFiniteValueError";
  }
}

const ALLOWED_CHARS = /^[0-9.+\-*/^()%\s]*$/;
const ALLOWED_OPS = new Set([
  "add",
  "subtract",
  "multiply",
  "divide",
  "pow",
  "mod",
  "unaryMinus",
  "unaryPlus",
]);
const MAX_LENGTH = 500;

/** The expression rewritten into the allowed alphabet (rules in the module doc). */
export function normalizeExpression(expr: string): string {
  return expr
    .replace(/×/g, "*")
    .replace(/÷/g, "/")
    .replace(/[\u2212\u2013]/g, "-")
    .replace(/[$€£]/g, "")
    .replace(/(\d),(?=\d{3}(?!\d))/g, "$1")
    .replace(/\/\//g, "/")
    .replace(/\*\*/g, "^")
    .trim();
}

function rewritePercent(s: string): string {
  return s
    .replace(/%(?=\s*[\d.(])/g, " mod ")
    .replace(/(\d*\.?\d+)\s*%/g, "($1/100)")
    .replace(/\)\s*%/g, ")/100");
}

function check(node: MathNode, expr: string): void {
  switch (node.type) {
    case "ConstantNode":
      if (typeof (node as unknown as { value: unknown }).value !== "number") {
        throw new ExpressionError(expr, "only numbers are allowed");
      }
      return;
    case "ParenthesisNode":
      check((node as unknown as { content: MathNode }).content, expr);
      return;
    case "OperatorNode": {
      const op = node as unknown as { fn: string; args: MathNode[] };
      if (!ALLOWED_OPS.has(op.fn)) {
        throw new ExpressionError(expr, `operator ${op.fn} is not allowed`);
      }
      for (const a of op.args) check(a, expr);
      return;
    }
    default:
      throw new ExpressionError(expr, `${node.type} is not allowed`);
  }
}

const cache = new Map<string, number | ExpressionError>();
const CACHE_LIMIT = 100_000;

function evaluateUncached(expr: string): number {
  if (expr.length > MAX_LENGTH) {
    throw new ExpressionError(expr, `longer than ${MAX_LENGTH} characters`);
  }
  const norm = normalizeExpression(expr);
  if (norm === "") throw new ExpressionError(expr, "empty");
  if (!ALLOWED_CHARS.test(norm)) {
    const bad = [...norm].find((c) => !ALLOWED_CHARS.test(c));
    throw new ExpressionError(expr, `character ${JSON.stringify(bad)} is not allowed`);
  }
  const src = rewritePercent(norm);
  let node: MathNode;
  try {
    node = parse(src);
  } catch (e) {
    throw new ExpressionError(expr, `does not parse (${(e as Error).message})`);
  }
  check(node, expr);
  try {
    return evaluateNode(node, expr, true);
  } catch (e) {
    if (!(e instanceof NumberTooLargeError)) throw e;
    // The value in floating point, past the limit: close enough to tell a far-off statement.
    let approx: number | null = null;
    try {
      approx = evaluateNode(node, expr, false);
    } catch { /* not finite either */ }
    throw new NumberTooLargeError(expr, e.what, approx);
  }
}

/**
 * Evaluates a checked tree; with `exact`, refusing any number beyond {@linkcode MAX_EXACT}.
 * A division or modulo by zero or a value that is not a real number is a
 * {@linkcode NoFiniteValueError}; a result that overflows to infinity is too large.
 */
function evaluateNode(node: MathNode, expr: string, exact: boolean): number {
  switch (node.type) {
    case "ConstantNode": {
      const v = (node as unknown as { value: number }).value;
      if (exact && Math.abs(v) > MAX_EXACT) {
        throw new NumberTooLargeError(expr, `the number ${v}`);
      }
      return v;
    }
    case "ParenthesisNode":
      return evaluateNode((node as unknown as { content: MathNode }).content, expr, exact);
    default: {
      const op = node as unknown as { fn: string; args: MathNode[] };
      const a = op.args.map((n) => evaluateNode(n, expr, exact));
      if ((op.fn === "divide" || op.fn === "mod") && a[1] === 0) {
        // mathjs defines x mod 0 = x; a remainder of a division by zero has no value either.
        throw new NoFiniteValueError(expr, `${node.toString()} divides by zero`);
      }
      let r: unknown;
      try {
        r = operate(op.fn, a);
      } catch (e) {
        throw new ExpressionError(expr, `does not evaluate (${(e as Error).message})`);
      }
      if (typeof r !== "number" || Number.isNaN(r)) {
        throw new NoFiniteValueError(expr, `${node.toString()} is ${String(r)}`);
      }
      if (!Number.isFinite(r) || (exact && Math.abs(r) > MAX_EXACT)) {
        if (!exact) throw new NoFiniteValueError(expr, `${node.toString()} overflows`);
        throw new NumberTooLargeError(expr, `${node.toString()} = ${r}`);
      }
      return r;
    }
  }
}

/** One operator of the allowed set, applied as mathjs applies it. */
function operate(fn: string, a: number[]): unknown {
  switch (fn) {
    case "add":
      return a[0] + a[1];
    case "subtract":
      return a[0] - a[1];
    case "multiply":
      return a[0] * a[1];
    case "divide":
      return a[0] / a[1];
    case "pow":
      return pow(a[0], a[1]);
    case "mod":
      return mod(a[0], a[1]);
    case "unaryMinus":
      return -a[0];
    default: // unaryPlus
      return a[0];
  }
}

/**
 * Evaluates an annotation's expression with mathjs, after the checks in the module doc.
 * Results are cached by expression text.
 *
 * @example
 * ```ts
 * import { evaluateExpression } from "./arith.ts";
 * console.assert(evaluateExpression("54/3") === 18);
 * console.assert(evaluateExpression("80,000*5%") === 4000);
 * ```
 * @throws {ExpressionError} when the expression is not allowed; {@linkcode NoFiniteValueError}
 * when it has no finite value; {@linkcode NumberTooLargeError} when a number in it is beyond
 * {@linkcode MAX_EXACT}.
 */
export function evaluateExpression(expr: string): number {
  let r = cache.get(expr);
  if (r === undefined) {
    try {
      r = evaluateUncached(expr);
    } catch (e) {
      if (!(e instanceof ExpressionError)) throw e;
      r = e;
    }
    if (cache.size >= CACHE_LIMIT) cache.clear();
    cache.set(expr, r);
  }
  if (r instanceof ExpressionError) throw r;
  return r;
}

/** How a computed value relates to a stated one: see the rounding rule in the module doc. */
export type Agreement = "equal" | "rounded" | "wrong";

/**
 * Compares a computed value with a stated value by the rounding rule. The comparison is exact
 * only within {@linkcode MAX_EXACT}; beyond it, validation reports `number_too_large` and
 * trusts only a `wrong`.
 *
 * @example
 * ```ts
 * import { compareStated } from "./arith.ts";
 * import { readNumber } from "./numbers.ts";
 * console.assert(compareStated(10 / 3, readNumber("3.33")!) === "rounded");
 * console.assert(compareStated(0.1 + 0.2, readNumber("0.3")!) === "equal");
 * console.assert(compareStated(10 / 3, readNumber("3.5")!) === "wrong");
 * ```
 */
export function compareStated(x: number, stated: WrittenNumber): Agreement {
  const targets = targetsOf(stated);
  if (targets.some((t) => isEqual(x, t))) return "equal";
  if (stated.decimals === null) return "wrong";
  return targets.some((t) => withinOneUnit(x, t)) ? "rounded" : "wrong";
}

/** The values a stated number may mean: itself, and for `N%` also N/100. */
function targetsOf(stated: WrittenNumber): Target[] {
  const { value: v, decimals: d } = stated;
  const r = d === null ? FRACTION_RESOLUTION : 10 ** -d;
  const targets: Target[] = [{ v, d, r }];
  if (stated.percent) targets.push({ v: v / 100, d: d === null ? null : d + 2, r: r / 100 });
  return targets;
}

/** `equal` of the rounding rule (module doc). */
function isEqual(x: number, t: Target): boolean {
  if (Number.isInteger(x) && Number.isInteger(t.v)) return x === t.v;
  const m = Math.max(1, Math.abs(x), Math.abs(t.v));
  return sameNumber(x, t.v) && (withinOneUnit(x, t) || Math.abs(x - t.v) < 1e-14 * m);
}

/** A value x may match: v, with d digits after its decimal point (null for a fraction). */
interface Target {
  v: number;
  d: number | null;
  /** The resolution: 10^−d, or the fraction's. */
  r: number;
}

/**
 * True when x is less than one unit of v's last digit from v (the module doc). A decimal is
 * compared in those units, against the whole number its digits write, less a margin: as
 * |x − v| < 10^−d in binary floating point the answer would follow the noise (5.1 − 5 is
 * 0.0999999999999996, under 0.1; 49.1 − 49 is 0.10000000000000142, over it).
 */
function withinOneUnit(x: number, t: Target): boolean {
  if (t.d === null) return Math.abs(x - t.v) < t.r;
  const scale = 10 ** t.d, xs = x * scale;
  // The margin is the size of x's float error (a few ulps of the scaled value, at least
  // ROUNDING_MARGIN), so a real round-up just under a unit away (2.001 stated as 3) counts.
  const margin = Math.max(ROUNDING_MARGIN, 16 * Number.EPSILON * Math.abs(xs));
  return Math.abs(xs - Math.round(t.v * scale)) < 1 - margin;
}

/** The least part of a unit kept as margin for floating-point error. */
const ROUNDING_MARGIN = 1e-9;

/** The resolution of a stated fraction, which has no decimals to go by. */
const FRACTION_RESOLUTION = 1e-6;

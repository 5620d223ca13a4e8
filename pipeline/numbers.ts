/**
 * Reading numbers as GSM8K writes them: final answers (`1,080`, `$5`, `-3`, `3/4`, `25%`),
 * the stated results of calculator steps, and the numbers inside prose.
 *
 * @module
 */

const MINUS = /[\u2212\u2013]/g; // U+2212 minus sign and the en dash some sources use
/** White space that may separate thousands groups: space, no-break space, thin spaces. */
const GROUP_SPACE = "[ \\u00a0\\u2009\\u202f]";
const PLAIN = /^(?:\d+\.?\d*|\.\d+)$/;
const GROUPED = /^\d{1,3}(?:,\d{3})+(?:\.\d*)?$/;
const SPACED = new RegExp(`^\\d{1,3}(?:${GROUP_SPACE}\\d{3})+(?:\\.\\d*)?$`);
const FRACTION = /^(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/;
const MIXED = new RegExp(`^(\\d+)${GROUP_SPACE}+(\\d+)\\/(\\d+)$`);
/** A sign and a currency symbol, in either order, before the digits. */
const HEAD = /^([-+]?)\s*[$€£]?\s*([-+]?)\s*/;

/**
 * A number as {@linkcode readNumber} reads it, as a regular-expression source (no anchors):
 * for finding one at the start of a text, as answer extraction does (pipeline/answer.ts).
 */
export const NUMBER_SOURCE: string = [
  "(?:[-+\\u2212\\u2013]\\s*)?(?:[$€£]\\s*)?(?:[-+\\u2212\\u2013]\\s*)?",
  "(?:",
  `\\d+${GROUP_SPACE}+\\d+\\/\\d+(?![\\d/])`, // mixed number
  `|\\d{1,3}(?:${GROUP_SPACE}\\d{3})+(?:\\.\\d+)?(?![\\d/])`, // groups spaced
  "|\\d{1,3}(?:,\\d{3})+(?:\\.\\d+)?(?![\\d/])", // groups with commas
  "|\\d+(?:\\.\\d+)?\\/\\d+(?:\\.\\d+)?", // fraction
  "|\\d+(?:\\.\\d+)?|\\.\\d+", // plain
  ")",
  "(?:\\s*[$€£])?(?:\\s*%)?",
].join("");

/** A number as written: its value, and how many digits it has after the decimal point. */
export interface WrittenNumber {
  /** The value. */
  value: number;
  /** Digits after the decimal point (0 for integers); `null` for a fraction like `3/4`. */
  decimals: number | null;
  /** True when the text ended in `%` (the value is the number before the sign). */
  percent: boolean;
}

/**
 * Reads a number as written, or returns null. Accepted: one sign (`-`, `+`, U+2212), a
 * currency symbol (`$`, `€`, `£`) before the digits (either side of the sign) or after them,
 * thousands groups of three separated by commas (`1,080`) or by a space, no-break space or
 * thin space (`1 234`), decimals (`3.5`, `.5`, `15.`), simple fractions (`3/4`), mixed numbers
 * (`1 1/2` is 1.5) and a trailing `%`, which is kept as a flag and not applied: `25%` reads as
 * 25. Anything else gives null: commas that are not thousands groups (`1,5`), two numbers
 * (`5 6`), words or units.
 *
 * @example
 * ```ts
 * import { readNumber } from "./numbers.ts";
 * console.assert(readNumber("$1,080.50")?.value === 1080.5);
 * console.assert(readNumber("3/4")?.value === 0.75);
 * console.assert(readNumber("1 1/2")?.value === 1.5);
 * console.assert(readNumber("1 234")?.value === 1234);
 * console.assert(readNumber("5 6") === null);
 * console.assert(readNumber("5 apples") === null);
 * ```
 */
export function readNumber(text: string): WrittenNumber | null {
  let s = text.trim().replace(MINUS, "-");
  const percent = s.endsWith("%");
  if (percent) s = s.slice(0, -1).trimEnd();
  const head = HEAD.exec(s)!;
  if (head[1] !== "" && head[2] !== "") return null;
  const negative = (head[1] || head[2]) === "-";
  let body = s.slice(head[0].length).replace(/\s*[$€£]$/, "");
  const signed = (v: number) => (negative ? -v : v);
  const mixed = MIXED.exec(body);
  if (mixed) {
    const [, whole, num, den] = mixed;
    if (Number(den) === 0) return null;
    return { value: signed(Number(whole) + Number(num) / Number(den)), decimals: null, percent };
  }
  if (SPACED.test(body)) body = body.replace(new RegExp(GROUP_SPACE, "g"), "");
  else if (body.includes(",")) {
    if (!GROUPED.test(body)) return null;
    body = body.replaceAll(",", "");
  }
  if (PLAIN.test(body)) {
    const dot = body.indexOf(".");
    return {
      value: signed(Number(body)),
      decimals: dot === -1 ? 0 : body.length - dot - 1,
      percent,
    };
  }
  const frac = FRACTION.exec(body);
  if (frac) {
    const [, num, den] = frac;
    if (Number(den) === 0) return null;
    return { value: signed(Number(num) / Number(den)), decimals: null, percent };
  }
  return null;
}

/**
 * The final answer as a number, or null if it is not one (see {@linkcode readNumber};
 * `25%` gives 25, because GSM8K answers percentages as the bare number).
 *
 * @example
 * ```ts
 * import { answerNumber } from "./numbers.ts";
 * console.assert(answerNumber("1,080") === 1080);
 * console.assert(answerNumber("-$3.5") === -3.5);
 * console.assert(answerNumber("five") === null);
 * ```
 */
export function answerNumber(text: string): number | null {
  return readNumber(text)?.value ?? null;
}

const NUMBER_IN_TEXT = /(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.\d+|\d+)(\s*%)?(?:\/(\d+(?:\.\d+)?))?/g;

/**
 * The magnitudes of the numbers written in prose, for checking that a sentence carries a
 * result. Signs are ignored (prose says "a loss of 3"). A number followed by `%` also counts
 * as its hundredth, and `a/b` also counts as its quotient.
 *
 * @example
 * ```ts
 * import { numbersInText } from "./numbers.ts";
 * console.assert(numbersInText("She pays $1,200 and 20% tax").includes(0.2));
 * ```
 */
export function numbersInText(text: string): number[] {
  const out: number[] = [];
  for (const m of text.replace(MINUS, "-").matchAll(NUMBER_IN_TEXT)) {
    const n = Number(m[1].replaceAll(",", ""));
    out.push(n);
    if (m[2]) out.push(n / 100);
    if (m[3] !== undefined) {
      const den = Number(m[3]);
      out.push(den);
      if (den !== 0) out.push(n / den);
    }
  }
  return out;
}

/**
 * True when a and b are the same number: equal when both are whole numbers (a relative
 * tolerance would let 1000000000000 pass for 1000000000500), else agreeing to 1e-9 relative
 * (1e-9 absolute near zero), which absorbs binary floating-point error.
 *
 * @example
 * ```ts
 * import { sameNumber } from "./numbers.ts";
 * console.assert(sameNumber(0.1 + 0.2, 0.3));
 * console.assert(!sameNumber(1000000000001, 1000000000500));
 * ```
 */
export function sameNumber(a: number, b: number): boolean {
  if (Number.isInteger(a) && Number.isInteger(b)) return a === b;
  return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
}

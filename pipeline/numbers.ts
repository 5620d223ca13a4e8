/**
 * Reading numbers as GSM8K writes them: final answers (`1,080`, `$5`, `-3`, `3/4`, `25%`),
 * the stated results of calculator steps, and the numbers inside prose.
 *
 * @module
 */

const MINUS = /[\u2212\u2013]/g; // U+2212 minus sign and the en dash some sources use
const CURRENCY = /[$€£]/g;
const PLAIN = /^[-+]?(?:\d+\.?\d*|\.\d+)$/;
const GROUPED = /^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$/;
const FRACTION = /^([-+]?)(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/;
const MIXED = /^([-+]?)(\d+)\s+(\d+)\/(\d+)$/;

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
 * Reads a number as written, or returns null. Accepted: optional sign, `$`/`€`/`£`, thousands
 * commas in groups of three (`1,080`), decimals (`3.5`, `.5`, `15.`), simple fractions
 * (`3/4`), mixed numbers (`1 1/2`) and a trailing `%`, which is kept as a flag and not applied:
 * `25%` reads as 25. Spaces are ignored. Commas that are not thousands groups (`1,5`) give
 * null, as does anything with words or units.
 *
 * @example
 * ```ts
 * import { readNumber } from "./numbers.ts";
 * console.assert(readNumber("$1,080.50")?.value === 1080.5);
 * console.assert(readNumber("3/4")?.value === 0.75);
 * console.assert(readNumber("5 apples") === null);
 * ```
 */
export function readNumber(text: string): WrittenNumber | null {
  let s = text.trim().replace(MINUS, "-").replace(CURRENCY, "");
  const percent = s.endsWith("%");
  if (percent) s = s.slice(0, -1);
  s = s.trim();
  const mixed = MIXED.exec(s);
  if (mixed) {
    const [, sign, whole, num, den] = mixed;
    if (Number(den) === 0) return null;
    const v = Number(whole) + Number(num) / Number(den);
    return { value: sign === "-" ? -v : v, decimals: null, percent };
  }
  s = s.replace(/\s+/g, "");
  if (s.includes(",")) {
    if (!GROUPED.test(s)) return null;
    s = s.replaceAll(",", "");
  }
  if (PLAIN.test(s)) {
    const dot = s.indexOf(".");
    return { value: Number(s), decimals: dot === -1 ? 0 : s.length - dot - 1, percent };
  }
  const frac = FRACTION.exec(s);
  if (frac) {
    const [, sign, num, den] = frac;
    if (Number(den) === 0) return null;
    const v = Number(num) / Number(den);
    return { value: sign === "-" ? -v : v, decimals: null, percent };
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

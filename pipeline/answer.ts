/**
 * Answer extraction and scoring, as the reference evaluation does it: the text after the
 * last `###` (falling back to the last number of the text), compared as numbers when both sides are
 * numbers, else as strings. Numbers are read exactly as the pipeline reads gold answers
 * ({@linkcode readNumber} of pipeline/numbers.ts): `1,234`, `1 234`, `$5`, `+5`, `−2`
 * (U+2212), `3/4`, the mixed number `1 1/2` (1.5) and `25%` (25, as GSM8K writes a
 * percentage's answer), and compared as validation compares them ({@linkcode sameNumber}:
 * whole numbers exactly, others to 1e-9 relative). The fallback reads numbers the same way.
 *
 * @module
 */
import { NUMBER_SOURCE, readNumber, sameNumber, type WrittenNumber } from "./numbers.ts";

/** Not followed by more digits: the end of a number as {@linkcode readNumber} reads it. */
const NUMBER_END = "(?![\\d.]\\d|\\d)";
/** A number at the start of a text. */
const LEADING_NUMBER = new RegExp(`^(?:${NUMBER_SOURCE})${NUMBER_END}`);
/**
 * Numbers anywhere, for the fallback when there is no `###`: the same numbers, each starting
 * where no number goes on (not right after a digit, nor after a digit and a point). A sign
 * right after a number, a `%` or a `)` (spaces aside, on the same line) is an operator, not
 * the next number's: `10 - 4` ends in 4, while `12\n-3` ends in -3.
 */
const NUMBER_IN_TEXT = new RegExp(
  `(?<!\\d\\.?)(?:(?<![\\d%)][ \\t\u00a0]*)|(?![-+\u2212\u2013]))(?:${NUMBER_SOURCE})${NUMBER_END}`,
  "g",
);

/**
 * The answer in a generated text: the number that starts the text after the last `###`,
 * with its thousands separators (commas, spaces) removed and a closing full stop dropped, or
 * the first word there when it is not a number; with no `###`, the last number of the text,
 * read and cleaned the same way (a sign right after another number is an operator), or, when
 * the text holds no number, the whole text, trimmed and without commas.
 *
 * @example
 * ```ts
 * import { extractAnswer } from "./answer.ts";
 * console.assert(extractAnswer("<<2*3=6>>\n### 1,206") === "1206");
 * console.assert(extractAnswer("### 1 1/2 cups") === "1 1/2");
 * console.assert(extractAnswer("### 25%.") === "25%");
 * console.assert(extractAnswer("She needs 1 1/2 cups") === "1 1/2");
 * console.assert(extractAnswer("The change is 4 - 10 = −6") === "−6");
 * console.assert(extractAnswer("She has 10 - 4") === "4");
 * console.assert(extractAnswer(" none, sorry ") === "none sorry");
 * ```
 */
export function extractAnswer(text: string): string {
  const i = text.lastIndexOf("###");
  if (i >= 0) {
    const tail = text.slice(i + 3).trim();
    const m = LEADING_NUMBER.exec(tail);
    if (m) return cleanNumber(m[0]);
    if (tail !== "") return tail.split(/\s+/)[0].replaceAll(",", "").replace(/\.$/, "");
    return "";
  }
  const nums = text.match(NUMBER_IN_TEXT);
  return nums ? cleanNumber(nums[nums.length - 1]) : text.replaceAll(",", "").trim();
}

/** A number as found, trimmed, less its thousands separators (a mixed number keeps its space). */
function cleanNumber(found: string): string {
  const n = found.trim();
  return readNumber(n)?.decimals === null && /\d\s+\d+\//.test(n)
    ? n
    : n.replace(/,|(?<=\d)[ \u00a0\u2009\u202f](?=\d{3})/g, "");
}

/**
 * A number as the pipeline reads a gold answer ({@linkcode readNumber}), or NaN.
 *
 * @example
 * ```ts
 * import { parseNumber } from "./answer.ts";
 * console.assert(parseNumber("1 1/2") === 1.5 && parseNumber("−2") === -2);
 * console.assert(Number.isNaN(parseNumber("5 6")));
 * ```
 */
export function parseNumber(s: string): number {
  return readNumber(s)?.value ?? NaN;
}

/**
 * Exact match: the same number when both sides are numbers ({@linkcode sameNumber}), else the
 * same text (trimmed).
 *
 * @example
 * ```ts
 * import { answersMatch } from "./answer.ts";
 * console.assert(answersMatch("25", "25%") && answersMatch("-2", "−2") && answersMatch("5", "+5"));
 * console.assert(answersMatch("1.5", "1 1/2") && !answersMatch("56", "5 6"));
 * console.assert(!answersMatch("9007199254740992", "9007199254740993"));
 * ```
 */
export function answersMatch(predicted: string, gold: string): boolean {
  const a = readNumber(predicted), b = readNumber(gold);
  if (a === null || b === null) return predicted.trim() === gold.trim();
  // Past 2^53 - 1 floating point no longer holds every whole number (9007199254740993 reads
  // as 9007199254740992), so two whole numbers there are compared by their digits.
  if (Math.max(Math.abs(a.value), Math.abs(b.value)) > Number.MAX_SAFE_INTEGER) {
    const x = wholeDigits(predicted, a), y = wholeDigits(gold, b);
    if (x !== null && y !== null) return x === y;
  }
  return sameNumber(a.value, b.value);
}

/**
 * A whole number read by {@linkcode readNumber} as an exact integer (`$1,234.00` gives 1234n),
 * or null for a fraction, a mixed number or a decimal with a fractional part.
 */
function wholeDigits(text: string, n: WrittenNumber): bigint | null {
  if (n.decimals === null) return null;
  const [whole, frac = ""] = text.replace(/[^\d.]/g, "").split(".");
  if (/[1-9]/.test(frac)) return null;
  const v = BigInt(whole === "" ? "0" : whole);
  return n.value < 0 ? -v : v;
}

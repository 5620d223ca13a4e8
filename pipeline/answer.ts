/**
 * Answer extraction and scoring, as the reference evaluation does it: the text after the
 * last `###` (falling back to the last number), commas removed, compared as numbers when
 * both sides parse, else as strings.
 *
 * @module
 */

const NUMBER = /-?\d+(?:\.\d+)?(?:\/\d+)?/g;

/**
 * The answer in a generated text.
 *
 * @example
 * ```ts
 * import { extractAnswer } from "./answer.ts";
 * console.assert(extractAnswer("<<2*3=6>>\n### 1,206") === "1206");
 * ```
 */
export function extractAnswer(text: string): string {
  const i = text.lastIndexOf("###");
  let tail = i >= 0 ? text.slice(i + 3) : text;
  tail = tail.replaceAll(",", "").trim();
  if (i >= 0 && tail !== "") return tail.split(/\s+/)[0].replace(/\.$/, "");
  const nums = tail.match(NUMBER);
  return nums ? nums[nums.length - 1] : tail;
}

/** Parse a number, including a simple fraction `a/b`; NaN otherwise. */
export function parseNumber(s: string): number {
  const t = s.replaceAll(",", "").replace(/^\$/, "").trim();
  const f = /^(-?\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(t);
  if (f) return Number(f[1]) / Number(f[2]);
  return /^-?(\d+\.?\d*|\.\d+)$/.test(t) ? Number(t) : NaN;
}

/** Exact match: numeric equality (to 1e-9 relative) when both parse, string equality else. */
export function answersMatch(predicted: string, gold: string): boolean {
  const a = parseNumber(predicted), b = parseNumber(gold);
  if (!Number.isNaN(a) && !Number.isNaN(b)) {
    return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
  }
  return predicted.trim() === gold.trim();
}

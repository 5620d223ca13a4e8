/**
 * Finding the numbers of a question or of rationale prose, with their spans and how they are
 * written, so that augmentation can rewrite each one in place and in the same style.
 *
 * Supported forms: integers (`48`), thousands commas (`1,200`), decimals (`2.5`, `.75`), a
 * dollar sign (`$1,200`, `$ 5`), percentages (`25%`, `25 percent`), simple fractions (`1/2`,
 * `3/4`), unit suffixes (`200g`, `10ml`). Number words are found separately
 * ({@linkcode numberWords}). Some numbers are never changed ("fixed"): fractions, ordinals
 * (`4th`, `1/3rd`), clock times (`9:30`, `10am`), years (1900-2099 without `$`), numbers glued
 * to a letter before them (`mp3`, `COVID-19`), denominations (`$20 bills`), unit conversions
 * stated as facts (`128 ounces in a gallon`, `12 inches to a foot`), and 0 and 1.
 *
 * @module
 */

/** How a number is written, to write a new value the same way. */
export interface NumberStyle {
  /** Thousands commas (`1,200`). */
  commas: boolean;
  /** Digits after the point as written (`2.50` → 2). */
  decimals: number;
  /** Written without the zero before the point (`.5`). */
  bare: boolean;
}

/** One number found in a text. */
export interface FoundNumber {
  /** Start of the digits (after any `$`), in UTF-16 units. */
  start: number;
  /** End of the digits (before any `%` or fraction part). */
  end: number;
  /** The digits as written (`1,200`, `2.50`). */
  text: string;
  /** Its value (for a fraction, the numerator; see `den`). */
  value: number;
  /** How it is written. */
  style: NumberStyle;
  /** Followed by `%` or ` percent`. */
  percent: boolean;
  /** Preceded by `$`. */
  dollar: boolean;
  /** The denominator when written as a fraction `a/b`. */
  den: number | null;
  /** Where the denominator's digits start, when there is one. */
  denStart: number;
  /** Never changed by augmentation (see the module doc for which). */
  fixed: boolean;
}

const NUMBER =
  /(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:\s?\/\s?(\d+))?(\s?%|\s+percent\b)?/g;

/** The style of digits as written. */
export function styleOf(digits: string): NumberStyle {
  const dot = digits.indexOf(".");
  return {
    commas: digits.includes(","),
    decimals: dot === -1 ? 0 : digits.length - dot - 1,
    bare: dot === 0,
  };
}

/**
 * Every number written in `text`, in order, with its span and style. `years: false` reads
 * 1900-2099 as numbers, not years (in a rationale, `$<<...=1955>>1955` is an amount).
 *
 * @example
 * ```ts
 * import { findNumbers } from "./_numbers.ts";
 * const [a, b] = findNumbers("It costs $1,200 and 25% off");
 * console.assert(a.value === 1200 && a.dollar && a.style.commas && b.percent);
 * ```
 */
export function findNumbers(text: string, opts: { years?: boolean } = {}): FoundNumber[] {
  const years = opts.years ?? true;
  const out: FoundNumber[] = [];
  for (const m of text.matchAll(NUMBER)) {
    const start = m.index!;
    const digits = m[1];
    const end = start + digits.length;
    const after = m.index! + m[0].length;
    const before = text.slice(Math.max(0, start - 2), start);
    const next = text.slice(after, after + 3);
    const value = Number(digits.replaceAll(",", ""));
    const den = m[2] === undefined ? null : Number(m[2]);
    const denStart = den === null ? -1 : start + m[0].indexOf(m[2], digits.length);
    const dollar = /\$\s?$/.test(before);
    let fixed = den !== null || value === 0 || value === 1;
    // Glued to a letter before it (mp3, A4, COVID-19) or part of a longer token (v1.2).
    if (/[A-Za-z][-]?$/.test(before) && !dollar) fixed = true;
    if (/^[.,]\d/.test(text.slice(start - 2, start))) fixed = true;
    // Ordinals, times of day, clock times.
    if (/^(st|nd|rd|th|am|pm|a\.m|p\.m)\b/i.test(next) || /^\s?(am|pm|a\.m\.|p\.m\.)/i.test(next)) {
      fixed = true;
    }
    if (/^:\d/.test(text.slice(end, end + 2)) || /\d:$/.test(text.slice(start - 2, start))) {
      fixed = true;
    }
    if (years && !dollar && /^\d{4}$/.test(digits) && value >= 1900 && value <= 2099) fixed = true;
    // Unit conversions stated as facts ("128 ounces in a gallon") are not the problem's to vary.
    if (
      /^\s+[a-z-]+\s+(in|to|make|makes)\s+(a|an|one|1)\s/i.test(
        text.slice(after, after + 40),
      )
    ) {
      fixed = true;
    }
    // Bank notes and coins come in set denominations: a "$15 bill" does not exist.
    if (dollar && /^\s*(bills?|notes?|coins?)\b/i.test(text.slice(after, after + 8))) fixed = true;
    out.push({
      start,
      end,
      text: digits,
      value,
      style: styleOf(digits),
      percent: m[3] !== undefined,
      dollar,
      den,
      denStart,
      fixed,
    });
  }
  return out;
}

const WORDS: Record<string, number[]> = {
  one: [1],
  two: [2],
  three: [3],
  four: [4],
  five: [5],
  six: [6],
  seven: [7],
  eight: [8],
  nine: [9],
  ten: [10],
  eleven: [11],
  twelve: [12],
  thirteen: [13],
  fourteen: [14],
  fifteen: [15],
  sixteen: [16],
  seventeen: [17],
  eighteen: [18],
  nineteen: [19],
  twenty: [20],
  thirty: [30],
  forty: [40],
  fifty: [50],
  sixty: [60],
  hundred: [100],
  thousand: [1000],
  million: [1_000_000],
  dozen: [12],
  twice: [2],
  double: [2],
  doubles: [2],
  doubled: [2],
  doubling: [2],
  pair: [2],
  pairs: [2],
  couple: [2],
  couples: [2],
  both: [2],
  twins: [2],
  halfway: [2, 0.5],
  triple: [3],
  triples: [3],
  tripled: [3],
  thrice: [3],
  quadruple: [4],
  half: [2, 0.5],
  halves: [2, 0.5],
  third: [3, 1 / 3],
  thirds: [3],
  quarter: [4, 0.25],
  quarters: [4, 0.25],
  fourth: [4, 0.25],
  fifth: [5, 0.2],
  tenth: [10, 0.1],
};

const WORD = new RegExp(`\\b(${Object.keys(WORDS).join("|")})\\b`, "gi");

/**
 * The values of the number words in `text` (`twice` is 2, `half` is 2 and 0.5, `a dozen` is
 * 12). Augmentation never changes them: they are constants of the problem.
 *
 * @example
 * ```ts
 * import { numberWords } from "./_numbers.ts";
 * console.assert(numberWords("twice as many, half left").includes(0.5));
 * ```
 */
export function numberWords(text: string): number[] {
  const out: number[] = [];
  for (const m of text.matchAll(WORD)) out.push(...WORDS[m[1].toLowerCase()]);
  return out;
}

/**
 * Constants a rationale may use without the question writing them, each allowed only when the
 * problem's text mentions what it converts (minutes in an hour needs "minute", "hour" or
 * "second"). 1 is always allowed; 2 comes from number words (`twice`, `half`, `both`...) or
 * from round trips.
 */
const CONTEXT: [number, RegExp][] = [
  [1, /./],
  [2, /\b(round trips?|each way|there and back|back and forth|every other|biweekly|twins?)\b/],
  [3, /\b(feet|foot|yards?|third|triple)/],
  [4, /\b(weeks?|months?|quarters?|fourth)\b/],
  [5, /\bnickels?\b/],
  [7, /\b(weeks?|days?)\b/],
  [8, /\b(gallons?|pints?|cups?|ounces?|hours?|bits?)\b/],
  [10, /\b(decades?|dimes?|tens?)\b/],
  [12, /\b(dozens?|months?|years?|inch|inches|foot|feet|annual|monthly)/],
  [16, /\b(ounces?|pounds?|cups?|gallons?)\b/],
  [24, /\b(hours?|days?|daily)\b/],
  [25, /\bquarters?\b/],
  [28, /\b(months?|february|weeks?)\b/],
  [30, /\b(months?|days?)\b/],
  [31, /\b(months?|days?)\b/],
  [52, /\b(weeks?|years?|annual|weekly)/],
  [60, /\b(minutes?|hours?|seconds?|mph|hourly)/],
  [100, /(%|percent|cents?\b|dollars?|\$|century|meters?|hundred)/],
  [365, /\b(years?|days?|annual)/],
  [1000, /(thousand|kilo|km\b|kg\b|grams?\b|lit(er|re)s?|meters?|\bml\b|milli)/],
  [3600, /\b(hours?|seconds?)\b/],
  [0.5, /\bhalf\b/],
  [0.25, /\bquarters?\b/],
  [0.1, /\bdimes?\b/],
  [0.05, /\bnickels?\b/],
  [0.01, /(\bpenn(y|ies)|\bcents?\b|%|percent)/],
];

/** The context constants {@linkcode CONTEXT} allows for a problem's text. */
export function contextConstants(text: string): number[] {
  const t = text.toLowerCase();
  return CONTEXT.filter(([, re]) => re.test(t)).map(([v]) => v);
}

/**
 * Sentence splitting for chains of thought written as one paragraph (GSM8K-Aug-NL, iCoT's
 * natural-language CoT). Rules, from what that data holds:
 *
 * - A sentence ends at `.`, `!` or `?` (and any closing quotes or brackets) followed by space
 *   and then a capital letter, a digit, a currency sign, an opening bracket or a quote.
 *   `3.5` and `$1.50` never split: no space follows their point.
 * - Not after the abbreviations of titles and the like that appear in the data (`Mr.`, `Mrs.`,
 *   `Ms.`, `Dr.`, `St.`, `Jr.`, `Sr.`, `Prof.`, `vs.`, `e.g.`, `i.e.`, `approx.`), nor after
 *   `No.` before a digit. Unit abbreviations (`ft.`, `lbs.`, `a.m.`) do split when a capital
 *   follows: in the data they end sentences. Letters right after a digit are an ordinal's
 *   suffix, not an abbreviation: `1st.` ends a sentence as `2nd.` does.
 * - A sentence also ends, without punctuation, before a capitalized word that GSM8K lines
 *   often start with and that hardly ever appears capitalized inside a line (`The`, `He`,
 *   `So`, `Then`, `Dividing`...; the list was taken from the first words of GSM8K's lines)
 *   when a letter, digit, `%` or `)` comes just before it. GSM8K-derived paragraphs joined
 *   the lines with spaces, and many lines have no full stop: `... = $9 The rest ...`.
 *   Names are not on the list, so `... 12 boxes Odile sold ...` stays one sentence.
 *
 * @module
 */

const ABBREVIATIONS = new Set([
  "mr",
  "mrs",
  "ms",
  "dr",
  "st",
  "jr",
  "sr",
  "prof",
  "vs",
  "e.g",
  "i.e",
  "approx",
]);

/** Words that start GSM8K lines often and almost never appear capitalized inside one. */
const STARTERS = [
  "The",
  "He",
  "She",
  "They",
  "It",
  "We",
  "You",
  "His",
  "Her",
  "Their",
  "Its",
  "Our",
  "So",
  "If",
  "Then",
  "In",
  "There",
  "Since",
  "First",
  "Second",
  "Third",
  "Next",
  "Last",
  "Lastly",
  "Finally",
  "On",
  "After",
  "Before",
  "During",
  "Each",
  "Every",
  "That",
  "This",
  "These",
  "Those",
  "For",
  "Let",
  "Now",
  "When",
  "While",
  "To",
  "At",
  "With",
  "Without",
  "All",
  "From",
  "Half",
  "Twice",
  "Therefore",
  "Thus",
  "Hence",
  "Together",
  "Altogether",
  "Total",
  "Both",
  "Dividing",
  "Combining",
  "Adding",
  "Subtracting",
  "Substituting",
  "Multiplying",
  "Multiply",
  "Add",
  "Subtract",
  "Divide",
  "Over",
  "Out",
  "Of",
  "By",
  "As",
  "Because",
  "But",
  "Including",
  "Between",
  "An",
  "And",
  "Also",
  "Combined",
  "Similarly",
  "Solving",
  "Counting",
  "Given",
  "One",
  "Two",
  "Three",
  "Four",
  "Five",
  "Six",
  "Seven",
  "Eight",
  "Nine",
  "Ten",
];

const PUNCT_END = /[.!?]+["'”’)\]]*(?=\s+[\p{Lu}\d$€£(“"'])/gu;
const STARTER_BEFORE = new RegExp(`(?<=[\\p{L}\\d%)])\\s+(?=(?:${STARTERS.join("|")})\\b)`, "gu");

/**
 * True when the full stop at `dot` ends an abbreviation (rules in the module doc). The word
 * before it must not follow a digit: `1st.` is an ordinal, not `St.`.
 */
function isAbbreviation(text: string, dot: number): boolean {
  const before = /(?<![\p{L}\d.])([\p{L}.]+)$/u.exec(text.slice(0, dot));
  if (before === null) return false;
  const word = before[1].toLowerCase().replace(/^\.+/, "");
  if (ABBREVIATIONS.has(word)) return true;
  return word === "no" && /^\.\s+\d/.test(text.slice(dot));
}

/**
 * Splits a paragraph into trimmed, non-empty sentences (rules in the module doc).
 *
 * @example
 * ```ts
 * import { splitSentences } from "./sentences.ts";
 * const s = splitSentences("Mr. Lee paid $1.50 each. He bought 3.5 kg for $6 The total is 8.");
 * console.assert(s.length === 3 && s[0] === "Mr. Lee paid $1.50 each.");
 * ```
 */
export function splitSentences(text: string): string[] {
  const cuts: number[] = [];
  for (const m of text.matchAll(PUNCT_END)) {
    if (m[0][0] === "." && isAbbreviation(text, m.index)) continue;
    cuts.push(m.index + m[0].length);
  }
  for (const m of text.matchAll(STARTER_BEFORE)) cuts.push(m.index);
  cuts.sort((a, b) => a - b);
  const out: string[] = [];
  let start = 0;
  for (const cut of [...cuts, text.length]) {
    const s = text.slice(start, cut).trim();
    if (s !== "") out.push(s);
    start = cut;
  }
  return out;
}

/**
 * Segmentation: cut a problem's gold chain of thought into per-latent steps, in both forms.
 *
 * **Math form.** One {@linkcode MathStep} per calculator annotation `<<expr=value>>`, taken
 * from `mathSteps` when the format gives them and otherwise from the rationale, in order. The
 * annotation splits at its last `=`; one without `=` gets an empty value (validation reports
 * `bad_value`). Unpaired `<<` or `>>` are counted in `unbalancedAnnotations` (validation
 * reports `unbalanced_annotation`); well-formed annotations around them are still taken.
 *
 * **Natural-language form.** One step per non-blank line of the rationale (GSM8K writes one
 * step per line). A rationale of a single line (GSM8K-Aug-NL, iCoT prose) is split into
 * sentences instead (see pipeline/sentences.ts). Annotations and stray `<<`/`>>` are removed,
 * runs of white space become one space, and empty steps are dropped. A socratic line
 * `Sub-question ** rest` keeps only `rest` (a line that is only `Sub-question **`, as six
 * socratic GSM8K lines are, then gives no step) under `socratic: "strip"` (the default) and the
 * whole line under `"keep"`. The prefix is the text before the first ` ** `, holding no
 * annotation and no `=`; it is a sub-question when it ends in `?`, or when every line of the
 * rationale has such a prefix and one of them is not a power's left operand (socratic GSM8K
 * writes `Define a variable ** ...` and `Subtract 15 ** 11x=286` too). So Python's power
 * `5 ** 2` in prose stays whole ({@linkcode stripSocratic}). When the source has no prose (iCoT or Coconut math chains), the
 * NL form is derived from the math steps, one `expr = value` per step (`<<54/3=18>>` gives
 * `54/3 = 18`), and `nlDerived` is true.
 *
 * **answerValue** is {@linkcode answerNumber} of the answer: thousands commas or spaces, `$`
 * and signs read, decimals, fractions and mixed numbers (`1 1/2`) too, `25%` read as 25, null
 * if not one number.
 *
 * @module
 */
import { scanAnnotations } from "./annotations.ts";
import { answerNumber } from "./numbers.ts";
import { splitSentences } from "./sentences.ts";
import type { MathStep, Problem, SegmentedRecord } from "./types.ts";
import { type OptionNames, refuseUnknownOptions, refuseUnlisted } from "../base/options.ts";

/** Options of {@linkcode segment}. */
export interface SegmentOptions {
  /** Socratic sub-question prefixes: drop them (`"strip"`, the default) or keep them. */
  socratic?: "strip" | "keep";
}

/** Every option of {@linkcode SegmentOptions}. */
const SEGMENT_OPTIONS: OptionNames<SegmentOptions> = { socratic: true };

/** Builds a MathStep from the text inside `<< >>`, split at the last `=`. */
export function mathStep(inner: string): MathStep {
  const eq = inner.lastIndexOf("=");
  const expr = (eq === -1 ? inner : inner.slice(0, eq)).trim();
  const value = eq === -1 ? "" : inner.slice(eq + 1).trim();
  return { expr, value, text: `<<${inner}>>` };
}

const SOCRATIC = " ** ";
/** A sub-question that asks: it ends in `?`, perhaps followed by closing quotes or brackets. */
const ASKS = /\?["'”’)\]]*$/;
/** The two sides of ` ** ` as Python writes a power: an operand before, a number or `(` after. */
const POWER_LEFT = /[0-9A-Za-z.)\]]$/;
const POWER_RIGHT = /^(?:[-+]?[0-9.(]|[A-Za-z](?![A-Za-z]))/;

/** A line cut at its first ` ** ` (or a trailing ` **`) before which a sub-question may stand. */
interface SocraticCut {
  prefix: string;
  rest: string;
  /** The prefix reads as a sub-question on its own: it asks, or ` ** ` is no power there. */
  sure: boolean;
}

function socraticCut(line: string): SocraticCut | null {
  // The padding finds a trailing " **": socratic GSM8K has a few sub-questions with no answer.
  const i = `${line} `.indexOf(SOCRATIC);
  if (i <= 0) return null;
  const prefix = line.slice(0, i).trimEnd();
  // No GSM8K sub-question holds an annotation or an "=": `x = 2 ** 3` is a power.
  if (prefix === "" || prefix.includes("<<") || prefix.includes("=")) return null;
  const rest = line.slice(i + SOCRATIC.length);
  const sure = ASKS.test(prefix) || !(POWER_LEFT.test(prefix) && POWER_RIGHT.test(rest));
  return { prefix, rest, sure };
}

/**
 * True when a rationale's lines are written as socratic GSM8K writes them: every line starts
 * with a `Sub-question ** ` prefix, and at least one of those reads as a sub-question on its
 * own (it ends in `?`, or the text around ` ** ` is not a power's operands: `Define a
 * variable ** Let x be...`). Then every line's prefix is one, even where it looks like a power
 * (`Subtract 15 ** 11x=286`).
 */
export function isSocratic(lines: readonly string[]): boolean {
  const cuts = lines.map((l) => l.trim()).filter((l) => l !== "").map(socraticCut);
  return cuts.length > 0 && cuts.every((c) => c !== null) && cuts.some((c) => c!.sure);
}

/**
 * The line without its socratic `Sub-question ** ` prefix, if it has one. The prefix is the
 * text before the first ` ** `, holding no `<<` and no `=`; it is stripped when it ends in `?`
 * (perhaps followed by closing quotes), or when `socratic` says the line belongs to a socratic
 * rationale ({@linkcode isSocratic}; by default, whether the line alone is one). So a power
 * written as Python writes it stays whole: `The area is 5 ** 2 = 25 square feet.`, and
 * `x = 2 ** 3`.
 */
export function stripSocratic(line: string, socratic: boolean = isSocratic([line])): string {
  const cut = socraticCut(line);
  if (cut === null || !(socratic || ASKS.test(cut.prefix))) return line;
  return cut.rest;
}

function nlFromRationale(
  rationale: string,
  socratic: "strip" | "keep",
): { nl: string[]; nlOfMath: (number | null)[] } {
  const lines = rationale.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const socraticLines = socratic === "strip" && isSocratic(lines);
  const out: string[] = [], nlOfMath: (number | null)[] = [];
  for (const line of lines) {
    // The line's annotations, in order, as segment() finds them in the whole rationale.
    const found = scanAnnotations(line).inner.length;
    const text = socratic === "strip" ? stripSocratic(line, socraticLines) : line;
    const clean = scanAnnotations(text).stripped.replace(/\s+/g, " ").trim();
    // One line split into several sentences: which sentence holds which step is unknown.
    const parts = clean === "" ? [] : lines.length === 1 ? splitSentences(clean) : [clean];
    const at = parts.length === 1 ? out.length : null;
    for (let i = 0; i < found; i++) nlOfMath.push(at);
    out.push(...parts);
  }
  return { nl: out, nlOfMath };
}

/**
 * Segments one problem into math steps and NL steps (rules in the module doc).
 *
 * @throws {RangeError} for an option {@linkcode SegmentOptions} does not have, or a
 * `socratic` that is neither `"strip"` nor `"keep"`.
 *
 * @example
 * ```ts
 * import { segment } from "./segment.ts";
 * const r = segment({
 *   id: "x:1",
 *   source: { file: "x", line: 1 },
 *   question: "A third of 54?",
 *   rationale: "A third is 54/3 = <<54/3=18>>18.",
 *   mathSteps: null,
 *   answer: "18",
 * });
 * console.assert(r.math[0].value === "18" && r.nl[0] === "A third is 54/3 = 18.");
 * ```
 */
export function segment(p: Problem, opts: SegmentOptions = {}): SegmentedRecord {
  refuseUnknownOptions("segment", opts, SEGMENT_OPTIONS);
  const socratic = opts.socratic ?? "strip";
  refuseUnlisted("segment", "socratic", socratic, ["strip", "keep"]);
  const math: MathStep[] = [];
  let unbalanced = 0;
  if (p.mathSteps !== null) {
    for (const s of p.mathSteps) {
      const scan = scanAnnotations(s);
      unbalanced += scan.unbalanced;
      for (const inner of scan.inner) math.push(mathStep(inner));
    }
  } else if (p.rationale !== null) {
    const scan = scanAnnotations(p.rationale);
    unbalanced += scan.unbalanced;
    for (const inner of scan.inner) math.push(mathStep(inner));
  }
  const fromProse = p.rationale === null ? null : nlFromRationale(p.rationale, socratic);
  let nl = fromProse?.nl ?? [];
  let nlDerived = false;
  // Which NL step holds each math step: known when the math came from the same lines.
  let nlOfMath: (number | null)[] | undefined = p.mathSteps === null && fromProse &&
      fromProse.nlOfMath.length === math.length
    ? fromProse.nlOfMath
    : undefined;
  if (nl.length === 0 && math.length > 0) {
    nl = math.map((s) => `${s.expr} = ${s.value}`);
    nlDerived = true;
    nlOfMath = undefined;
  }
  return {
    ...p,
    math,
    nl,
    answerValue: answerNumber(p.answer),
    nlDerived,
    unbalancedAnnotations: unbalanced,
    ...(nlOfMath ? { nlOfMath } : {}),
  };
}

/**
 * Number-perturbation augmentation: for a GSM8K-style problem, variants with new numbers whose
 * chain of thought is recomputed with mathjs and rewritten consistently in the question, every
 * calculator step, the prose and the answer.
 *
 * 1. **Analyse** (pipeline/augment/_plan.ts): the annotated expressions form a computation
 *    graph whose operands are question numbers, earlier results or constants; every place that
 *    writes one of them is found. Problems where this cannot be done safely get a reason code
 *    ({@linkcode AUGMENT_REASONS}).
 * 2. **Draw** new values for the question numbers the chain uses: integers stay integers on
 *    the same grid (a multiple of 5, 10, 25, 100... stays one), within half to twice the
 *    original; decimals keep their grid (0.5, 0.25, 0.1, 0.05, 0.01) and stay below 1 if they
 *    were; percentages stay multiples of 5 or 10 below 100. Some draws change only part of the
 *    numbers, which keeps exact divisions exact more often.
 * 3. **Recompute** the chain with the compiled mathjs expressions. A draw is kept only if each
 *    result is whole where the original's was (else has at most two decimals, or as many as the
 *    original), keeps its sign (and stays 0 if it was 0), stays within a factor of 10 of the
 *    original, and ties from ambiguous operands hold.
 * 4. **Rewrite** every slot in the style it was written (`$1,200`, `2.50`, `.5`, `25%`), then
 *    **verify**: the variant must validate ok in both CoT forms (pipeline/validate.ts) and every
 *    operand and prose number must again be a question number, an earlier result or a
 *    constant ({@linkcode verifyVariant}). Only variants that pass are yielded.
 *
 * Number words (`twice`, `half`, `a dozen`), fractions (`1/2`), ordinals, times, years, 0 and 1
 * are never changed; see docs/pipeline.md, "Augmentation".
 *
 * @module
 */
import { hashString, Rng } from "../base/rng.ts";
import { segment } from "./segment.ts";
import { validate } from "./validate.ts";
import type { Problem } from "./types.ts";
import {
  AUGMENT_REASONS,
  type AugmentReason,
  type Plan,
  planOf,
  type Slot,
  valueOf,
  type Var,
} from "./augment/_plan.ts";
import type { NumberStyle } from "./augment/_numbers.ts";
import { sameNumber } from "./numbers.ts";
import { NEAR_COPY_THRESHOLD, type NgramIndex } from "./overlap.ts";

export { AUGMENT_REASONS, type AugmentReason };

/** Options of {@linkcode augment}. */
export interface AugmentOptions {
  /** How many variants to make (fewer when fewer distinct valid draws exist). */
  variants: number;
  /** Seed; with the problem's id it fixes the variants. */
  seed: number;
  /** Draws tried per requested variant before giving up (default 40). */
  attempts?: number;
  /**
   * Evaluation questions to keep out of training data: a problem whose question is a near copy
   * of one (containment at or above `nearCopy`) gets no variants (`near_copy_of_excluded`).
   * Variants share their original's number-masked n-grams, so checking the original suffices.
   */
  exclude?: NgramIndex;
  /** The containment threshold for `exclude` (default {@linkcode NEAR_COPY_THRESHOLD}). */
  nearCopy?: number;
  /** Called with each recomputed variant that failed {@linkcode verifyVariant}, for diagnosis. */
  onReject?: (variant: Problem, issues: string[]) => void;
}

/** What augmentation did with one problem. */
export type AugmentOutcome =
  | {
    /** The problem's id. */
    id: string;
    /** Variants were made. */
    status: "augmented";
    /** How many (at most the number requested). */
    variants: number;
  }
  | {
    /** The problem's id. */
    id: string;
    /** No variant could be made. */
    status: "skipped";
    /** Why. */
    reason: AugmentReason;
    /** Which step or number, for people. */
    detail: string;
  };

/** Raised for bad options; the message names the option. */
export class AugmentOptionsError extends Error {
  /** `field` is the option; `why` says what to give. */
  constructor(field: string, why: string) {
    super(`augment option ${field}: ${why}`);
    this.name = "AugmentOptionsError";
  }
}

interface Grid {
  lo: number;
  hi: number;
  unit: number;
}

const INT_UNITS = [1000, 500, 250, 100, 50, 25, 10, 5, 2, 1];
const DEC_UNITS = [0.5, 0.25, 0.1, 0.05, 0.01];

function isMultiple(x: number, u: number): boolean {
  return Math.abs(x / u - Math.round(x / u)) < 1e-9;
}

/** The grid a variable's new value is drawn from (module doc, step 2). */
function gridOf(v: Var): Grid {
  const x = v.value;
  if (v.percent && x < 100) {
    const unit = isMultiple(x, 10) ? 10 : isMultiple(x, 5) ? 5 : 1;
    return { lo: Math.max(unit, x / 2), hi: Math.min(100 - unit, 2 * x), unit };
  }
  if (Number.isInteger(x)) {
    const unit = INT_UNITS.find((u) => x % u === 0 && x / u >= 2) ?? 1;
    // Never 0 or 1: "1 rolls" breaks the grammar, and 0 empties the story.
    return { lo: Math.max(unit, 2, x / 2), hi: 2 * x, unit };
  }
  const unit = DEC_UNITS.find((u) => isMultiple(x, u) && x / u >= 2) ?? 0.01;
  return { lo: Math.max(unit, x / 2), hi: x < 1 ? Math.min(2 * x, 1 - unit) : 2 * x, unit };
}

function drawOn(rng: Rng, g: Grid, not: number): number | null {
  const a = Math.ceil(g.lo / g.unit - 1e-9);
  const b = Math.floor(g.hi / g.unit + 1e-9);
  if (b < a || (a === b && sameNumber(a * g.unit, not))) return null;
  for (let t = 0; t < 8; t++) {
    const k = rng.int(a, b);
    const x = Number((k * g.unit).toFixed(6));
    if (!sameNumber(x, not)) return x;
  }
  return null;
}

/** Writes a value the way the original number at that place was written. */
export function formatLike(x: number, style: NumberStyle): string {
  let s = Number.isInteger(x) ? String(x) : String(Number(x.toFixed(10)));
  if (style.decimals === 2 && !Number.isInteger(x) && (s.split(".")[1]?.length ?? 0) <= 2) {
    s = x.toFixed(2);
  }
  if (style.commas) {
    const [int, frac] = s.split(".");
    s = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (frac === undefined ? "" : `.${frac}`);
  }
  if (style.bare && s.startsWith("0.")) s = s.slice(1);
  return s;
}

function roundTo(x: number, decimals: number): number | null {
  const k = 10 ** decimals;
  const r = Math.round(x * k);
  return Math.abs(x * k - r) <= 1e-6 * Math.max(1, Math.abs(x * k)) ? r / k : null;
}

/** Computes the chain for new variable values, or null when a check of step 3 fails. */
function recompute(plan: Plan, vals: number[]): number[] | null {
  const scope: Record<string, number> = {};
  vals.forEach((v, i) => scope[`v${i}`] = v);
  const results: number[] = [];
  for (const [j, s] of plan.steps.entries()) {
    let n: unknown;
    try {
      n = s.run.evaluate(scope);
    } catch {
      return null;
    }
    if (typeof n !== "number" || !Number.isFinite(n)) return null;
    const o = s.value;
    const r = roundTo(n, Number.isInteger(o) ? 0 : Math.max(s.decimals, 2));
    if (r === null) return null;
    if (o === 0 ? r !== 0 : Math.sign(r) !== Math.sign(o)) return null;
    if (Math.abs(o) >= 1 && (Math.abs(r) > 10 * Math.abs(o) || Math.abs(r) < Math.abs(o) / 10)) {
      return null;
    }
    results.push(r);
    scope[`r${j}`] = r;
  }
  for (const group of plan.ties) {
    const first = valueOf(group[0], vals, results);
    if (!group.every((e) => sameNumber(valueOf(e, vals, results), first))) return null;
  }
  return results;
}

function rewrite(text: string, slots: Slot[], vals: number[], results: number[]): string {
  const sorted = [...slots].sort((a, b) => b.start - a.start);
  let out = text;
  for (const s of sorted) {
    const v = valueOf(s.entity, vals, results) * (s.percentOf ? 100 : 1);
    out = out.slice(0, s.start) + formatLike(Number(v.toFixed(10)), s.style) + out.slice(s.end);
  }
  return out;
}

function build(p: Problem, plan: Plan, vals: number[], results: number[], k: number): Problem {
  const on = (h: Slot["host"]) => plan.slots.filter((s) => s.host === h);
  return {
    id: `${p.id}#aug${k}`,
    source: p.source,
    question: rewrite(p.question, on("question"), vals, results),
    rationale: p.rationale === null ? null : rewrite(p.rationale, on("rationale"), vals, results),
    mathSteps: p.mathSteps === null
      ? null
      : p.mathSteps.map((s, i) => rewrite(s, on(i), vals, results)),
    answer: rewrite(p.answer, on("answer"), vals, results),
  };
}

/** Validation reasons of a problem under both CoT forms, or [] when it is ok in both. */
function validationIssues(p: Problem): string[] {
  const s = segment(p);
  const out = new Set<string>();
  for (const cot of ["math", "nl"] as const) {
    const v = validate(s, { cot });
    if (v.validation.status !== "ok") { for (const r of v.validation.reasons) out.add(r); }
  }
  return [...out];
}

/**
 * What is wrong with a rewritten problem, or [] when nothing is: the validator's reasons in
 * either CoT form (a step not recomputed is `wrong_value`, prose left with an old result is
 * `nl_missing_number`), plus `unmapped_operand` or `unexplained_prose_number` when an operand
 * or a prose number is no longer a question number, an earlier result or a constant (a
 * question number left unchanged while the chain changed).
 *
 * @example
 * ```ts
 * import { verifyVariant } from "./augment.ts";
 * const p = {
 *   id: "x:1",
 *   source: { file: "x", line: 1 },
 *   question: "Ann has 7 boxes of 12 pens. How many pens?",
 *   rationale: "She has 7*12 = <<7*12=84>>84 pens.",
 *   mathSteps: null,
 *   answer: "84",
 * };
 * console.assert(verifyVariant(p).length === 0);
 * const stale = { ...p, question: "Ann has 6 boxes of 12 pens. How many pens?" };
 * console.assert(verifyVariant(stale)[0] === "unmapped_operand");
 * ```
 */
export function verifyVariant(p: Problem): string[] {
  const issues = validationIssues(p);
  const plan = planOf(p);
  if ("reason" in plan) {
    if (plan.reason === "unmapped_operand" || plan.reason === "unexplained_prose_number") {
      issues.push(plan.reason);
    }
  }
  return issues;
}

/**
 * Makes up to `opts.variants` variants of a problem, streamed; the generator's return value
 * is the problem's {@linkcode AugmentOutcome}. Variant ids are `<id>#aug<k>`, k from 1; the
 * source stays the original's. Deterministic for a given seed and problem id.
 *
 * @example
 * ```ts
 * import { augment } from "./augment.ts";
 * const p = {
 *   id: "x:1",
 *   source: { file: "x", line: 1 },
 *   question: "Ann has 7 boxes with 12 pens in each. She gives away 20 pens. How many are left?",
 *   rationale: "She has 7*12 = <<7*12=84>>84 pens.\nShe keeps 84-20 = <<84-20=64>>64 pens.",
 *   mathSteps: null,
 *   answer: "64",
 * };
 * const variants = [...augment(p, { variants: 3, seed: 1 })];
 * console.assert(variants.length === 3 && variants[0].id === "x:1#aug1");
 * ```
 */
export function* augment(p: Problem, opts: AugmentOptions): Generator<Problem, AugmentOutcome> {
  if (!Number.isInteger(opts.variants) || opts.variants < 0) {
    throw new AugmentOptionsError("variants", `give a whole number >= 0, not ${opts.variants}`);
  }
  if (!Number.isInteger(opts.seed) || opts.seed < 0) {
    throw new AugmentOptionsError("seed", `give a whole number >= 0, not ${opts.seed}`);
  }
  const attempts = opts.attempts ?? 40;
  if (opts.exclude !== undefined) {
    const hit = opts.exclude.nearest(p.question);
    if (hit !== null && hit.containment >= (opts.nearCopy ?? NEAR_COPY_THRESHOLD)) {
      return {
        id: p.id,
        status: "skipped",
        reason: "near_copy_of_excluded",
        detail: `${hit.id}, containment ${hit.containment.toFixed(2)}`,
      };
    }
  }
  if (segment(p).math.length === 0) {
    return { id: p.id, status: "skipped", reason: "no_annotation", detail: "no <<expr=value>>" };
  }
  const issues = validationIssues(p);
  if (issues.length > 0) {
    return { id: p.id, status: "skipped", reason: "original_not_ok", detail: issues.join(", ") };
  }
  const plan = planOf(p);
  if ("reason" in plan) return { id: p.id, status: "skipped", ...plan };

  const rng = new Rng(opts.seed, hashString(p.id));
  const grids = plan.vars.map((v) => v.used && !v.frozen ? gridOf(v) : null);
  const free = grids.flatMap((g, i) => g === null ? [] : [i]);
  const original = plan.vars.map((v) => v.value);
  const seen = new Set<string>([original.join(",")]);
  let made = 0;
  let valid = 0;
  const budget = attempts * Math.max(1, opts.variants);
  for (let t = 0; t < budget && made < opts.variants; t++) {
    // First draws change every number; later ones keep some, which finds exact divisions.
    const change = t < budget / 2 ? free : free.filter(() => rng.chance(0.5));
    if (change.length === 0) change.push(rng.pick(free));
    const vals = original.slice();
    let drawn = true;
    for (const i of change) {
      const x = drawOn(rng, grids[i]!, original[i]);
      if (x === null) drawn = false;
      else vals[i] = x;
    }
    if (!drawn && change.length === 1) continue;
    const sig = vals.join(",");
    if (seen.has(sig)) continue;
    seen.add(sig);
    const results = recompute(plan, vals);
    if (results === null) continue;
    valid++;
    const variant = build(p, plan, vals, results, made + 1);
    const issues = verifyVariant(variant);
    if (issues.length > 0) {
      opts.onReject?.(variant, issues);
      continue;
    }
    made++;
    yield variant;
  }
  if (made > 0) return { id: p.id, status: "augmented", variants: made };
  return valid === 0
    ? { id: p.id, status: "skipped", reason: "no_valid_draw", detail: `${budget} draws` }
    : {
      id: p.id,
      status: "skipped",
      reason: "rejected_by_validator",
      detail: `${valid} recomputed variants, none verified`,
    };
}

/**
 * The variants of a problem and its outcome, in one call.
 *
 * @example
 * ```ts
 * import { augmentProblem } from "./augment.ts";
 * const { variants, outcome } = augmentProblem({
 *   id: "x:1",
 *   source: { file: "x", line: 1 },
 *   question: "What is the weather like?",
 *   rationale: "It is sunny.",
 *   mathSteps: null,
 *   answer: "0",
 * }, { variants: 2, seed: 0 });
 * console.assert(variants.length === 0 && outcome.status === "skipped");
 * ```
 */
export function augmentProblem(
  p: Problem,
  opts: AugmentOptions,
): { variants: Problem[]; outcome: AugmentOutcome } {
  const variants: Problem[] = [];
  const it = augment(p, opts);
  for (;;) {
    const r = it.next();
    if (r.done) return { variants, outcome: r.value };
    variants.push(r.value);
  }
}

/** Counts of outcomes over many problems, as the build reports them. */
export interface AugmentSummary {
  /** Problems seen. */
  problems: number;
  /** Problems with at least one variant. */
  augmented: number;
  /** augmented / problems (0 when none). */
  share: number;
  /** Variants made in all. */
  variants: number;
  /** Skipped problems by reason code, most frequent first. */
  reasons: Partial<Record<AugmentReason, number>>;
}

/**
 * Tallies {@linkcode AugmentOutcome}s.
 *
 * @example
 * ```ts
 * import { AugmentReport } from "./augment.ts";
 * const r = new AugmentReport();
 * r.add({ id: "a", status: "augmented", variants: 2 });
 * r.add({ id: "b", status: "skipped", reason: "no_annotation", detail: "" });
 * console.assert(r.summary().share === 0.5 && r.summary().reasons.no_annotation === 1);
 * ```
 */
export class AugmentReport {
  #problems = 0;
  #augmented = 0;
  #variants = 0;
  #reasons = new Map<AugmentReason, number>();

  /** Counts one outcome. */
  add(o: AugmentOutcome): void {
    this.#problems++;
    if (o.status === "augmented") {
      this.#augmented++;
      this.#variants += o.variants;
    } else {
      this.#reasons.set(o.reason, (this.#reasons.get(o.reason) ?? 0) + 1);
    }
  }

  /** The counts so far. */
  summary(): AugmentSummary {
    const reasons = Object.fromEntries(
      [...this.#reasons].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])),
    ) as Partial<Record<AugmentReason, number>>;
    return {
      problems: this.#problems,
      augmented: this.#augmented,
      share: this.#problems === 0 ? 0 : this.#augmented / this.#problems,
      variants: this.#variants,
      reasons,
    };
  }
}

/**
 * A seeded generator of grade-school word problems with multi-step solutions, written as
 * GSM8K writes them, so that they flow through segmentation, validation and packing like any
 * other {@linkcode Problem}.
 *
 * Each record tells one story from a template family (shopping, travel, sharing, ages,
 * earnings, cooking, schedule). An opener computes a first quantity from numbers it draws;
 * each further template computes the next quantity from the current one (some also from an
 * earlier one), so the steps form a real chain and the answer is its last value. The
 * rationale has one line per step, each holding its calculator annotation inline:
 *
 * ```
 * Maya has 4 jars with 12 marbles in each jar. She gives a quarter of them to her cousin. How many marbles does Maya have left?
 * She has 4*12 = <<4*12=48>>48 marbles.
 * She gives away 48*1/4 = <<48*1/4=12>>12 marbles.
 * She has 48-12 = <<48-12=36>>36 marbles left.
 * ```
 *
 * Values are whole numbers, except money in the shopping and cooking families, which may
 * have cents (two decimals). Every value, operand and answer is at most `maxValue`; operands
 * the templates draw have at most `digits` digits. Record n depends only on (seed, n) and the
 * options, never on the records before it. See docs/pipeline.md, "Synthetic problems".
 *
 * @module
 */
import { z } from "zod";
import { Rng } from "../base/rng.ts";
import { type OptionNames, unknownOption } from "../base/options.ts";
import type { Problem } from "./types.ts";
import type { Ctx, Out } from "./synthetic/_kit.ts";
import { FAMILY_BUILDERS } from "./synthetic/_families.ts";
import { PEOPLE } from "./synthetic/_words.ts";

/** A template family's name. */
export type Family =
  | "shopping"
  | "travel"
  | "sharing"
  | "ages"
  | "earnings"
  | "cooking"
  | "schedule";

/** The template families, in a fixed order. */
export const FAMILIES: readonly Family[] = [
  "shopping",
  "travel",
  "sharing",
  "ages",
  "earnings",
  "cooking",
  "schedule",
];

/** Families whose money may carry cents. */
const CENT_FAMILIES: ReadonlySet<Family> = new Set(["shopping", "cooking"]);

/** Options of {@linkcode generate}. Everything but `n` has a default. */
export interface SyntheticOptions {
  /** How many records. */
  n: number;
  /** The 1-based index of the first record (default 1): `start: 1001` continues a run of 1000. */
  start?: number;
  /** Seed (default 0); with the other options it fixes every record. */
  seed?: number;
  /** Fewest calculator steps per record (default 1). */
  minSteps?: number;
  /** Most calculator steps per record (default 6); each record draws its count uniformly. */
  maxSteps?: number;
  /** Cap on every value and answer, in whole units (default 1000). */
  maxValue?: number;
  /** Most digits of an operand a template draws (default 2). */
  digits?: number;
  /** The families to draw from (default all); a held-out split lists the others. */
  families?: readonly Family[];
}

/** Raised for options out of range; the message names the option and the allowed range. */
export class SyntheticOptionsError extends Error {
  /** The option at fault. */
  readonly field: string;
  /** `field` is the option's name; `why` says what is wrong and what to give instead. */
  constructor(field: string, why: string) {
    super(`synthetic option ${field}: ${why}`);
    this.name = "SyntheticOptionsError";
    this.field = field;
  }
}

/** Every option of {@linkcode SyntheticOptions}. */
const SYNTHETIC_OPTIONS: OptionNames<SyntheticOptions> = {
  n: true,
  start: true,
  seed: true,
  minSteps: true,
  maxSteps: true,
  maxValue: true,
  digits: true,
  families: true,
};

/** The most steps a record may have: long enough for held-out step counts. */
export const MAX_STEPS = 20;

// The checks of SyntheticOptions, with defaults applied.
const SyntheticOptionsSchema = z.object({
  n: z.number().int().min(0, "give 0 or more records"),
  start: z.number().int().min(1, "records are numbered from 1").default(1),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  minSteps: z.number().int().min(1, "at least 1").max(MAX_STEPS, `at most ${MAX_STEPS}`).default(
    1,
  ),
  maxSteps: z.number().int().min(1, "at least 1").max(MAX_STEPS, `at most ${MAX_STEPS}`).default(
    6,
  ),
  maxValue: z.number().int().min(100, "at least 100, or most templates cannot apply").max(
    1e9,
    "at most 1e9",
  ).default(1000),
  digits: z.number().int().min(1, "at least 1").max(6, "at most 6").default(2),
  families: z.array(z.enum(FAMILIES)).min(1, `name at least one of ${FAMILIES.join(", ")}`)
    .default([...FAMILIES]),
});

/** Options after defaults: every field present. */
export interface ResolvedSyntheticOptions {
  /** How many records. */
  n: number;
  /** The 1-based index of the first record. */
  start: number;
  /** Seed. */
  seed: number;
  /** Fewest calculator steps per record. */
  minSteps: number;
  /** Most calculator steps per record. */
  maxSteps: number;
  /** Cap on every value and answer. */
  maxValue: number;
  /** Most digits of a drawn operand. */
  digits: number;
  /** The families to draw from. */
  families: Family[];
}

/**
 * Checks options and applies defaults.
 *
 * @throws {SyntheticOptionsError} naming the first bad option, or one that
 * {@linkcode SyntheticOptions} does not have.
 */
export function resolveSyntheticOptions(opts: SyntheticOptions): ResolvedSyntheticOptions {
  // A key SyntheticOptions lacks (a misspelling from JavaScript) would otherwise be ignored.
  const u = typeof opts === "object" && opts !== null
    ? unknownOption(opts, SYNTHETIC_OPTIONS)
    : undefined;
  if (u !== undefined) {
    throw new SyntheticOptionsError(
      u.key,
      `not an option${u.near === undefined ? "" : ` (did you mean "${u.near}"?)`}`,
    );
  }
  const res = SyntheticOptionsSchema.safeParse(opts);
  if (!res.success) {
    const issue = res.error.issues[0];
    throw new SyntheticOptionsError(issue.path.join(".") || "options", issue.message);
  }
  const o = res.data;
  if (o.minSteps > o.maxSteps) {
    throw new SyntheticOptionsError(
      "minSteps",
      `${o.minSteps} is more than maxSteps ${o.maxSteps}; give minSteps <= maxSteps`,
    );
  }
  return o;
}

/** A generated problem with what it was generated from. */
export interface SyntheticRecord {
  /** The problem, as a reader would yield it. */
  problem: Problem;
  /** Its template family. */
  family: Family;
  /** Its number of calculator steps. */
  steps: number;
}

/** Raised when no chain of the drawn length fits the limits; the message says what to loosen. */
export class SyntheticGenerationError extends Error {
  /** `message` says which record and what to change. */
  constructor(message: string) {
    super(message);
    this.name = "SyntheticGenerationError";
  }
}

const ATTEMPTS = 200;

function build(rng: Rng, family: Family, target: number, o: ResolvedSyntheticOptions) {
  const who = rng.pick(PEOPLE);
  const ctx: Ctx = {
    rng,
    who,
    others: rng.sample(PEOPLE.filter((p) => p !== who), MAX_STEPS),
    maxValue: o.maxValue,
    maxOperand: Math.min(10 ** o.digits - 1, o.maxValue),
    scale: 10 ** Math.max(0, o.digits - 2),
    cents: CENT_FAMILIES.has(family),
    used: new Set(),
    counters: new Map(),
  };
  const plan = FAMILY_BUILDERS[family](ctx);
  let out = rng.pick(plan.openers)();
  if (out === null || out.lines.length > target) return null;
  const clauses: string[] = [];
  const lines: string[] = [];
  const accept = (o: Out) => {
    if (o.clause !== "") clauses.push(o.clause);
    lines.push(...o.lines);
    if (o.tag !== undefined) ctx.used.add(o.tag);
    o.commit?.();
  };
  accept(out);
  let state = out.state;
  while (lines.length < target) {
    const remaining = target - lines.length;
    out = null;
    for (const move of rng.sample(plan.moves, plan.moves.length)) {
      const o = move(state);
      if (o === null || o.lines.length > remaining) continue;
      if (o.final && o.lines.length !== remaining) continue;
      out = o;
      break;
    }
    if (out === null) return null;
    accept(out);
    state = out.state;
    if (out.final) break;
  }
  if (lines.length !== target) return null;
  return {
    question: [...clauses, state.ask].join(" "),
    rationale: lines.join("\n"),
    // The answer as evaluation compares it: the bare number, `6.5` rather than `$6.50`.
    answer: String(state.money ? state.v / 100 : state.v),
  };
}

/**
 * Generates record `index` (1-based) for resolved options: its family and step count are
 * drawn first, then chains are drawn until one fits the limits.
 *
 * @throws {SyntheticGenerationError} when no chain fits after many tries (limits too tight).
 */
export function synthesize(index: number, o: ResolvedSyntheticOptions): SyntheticRecord {
  const rng = new Rng(o.seed, index);
  const family = rng.pick(o.families);
  const steps = rng.int(o.minSteps, o.maxSteps);
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const r = build(rng, family, steps, o);
    if (r === null) continue;
    const problem: Problem = {
      id: `synthetic:${o.seed}:${index}`,
      source: { file: "synthetic", line: index },
      question: r.question,
      rationale: r.rationale,
      mathSteps: null,
      answer: r.answer,
    };
    return { problem, family, steps };
  }
  throw new SyntheticGenerationError(
    `synthetic record ${index} (family ${family}, ${steps} steps): no chain fits maxValue ` +
      `${o.maxValue} and digits ${o.digits} after ${ATTEMPTS} tries; raise maxValue or digits, ` +
      `or lower maxSteps`,
  );
}

/**
 * Streams generated records with their family and step count.
 *
 * @example
 * ```ts
 * import { generateRecords } from "./synthetic.ts";
 * for (const r of generateRecords({ n: 3, seed: 1, families: ["ages"], minSteps: 2, maxSteps: 2 })) {
 *   console.assert(r.family === "ages" && r.steps === 2);
 * }
 * ```
 */
export function* generateRecords(opts: SyntheticOptions): Generator<SyntheticRecord> {
  const o = resolveSyntheticOptions(opts);
  for (let i = o.start; i < o.start + o.n; i++) yield synthesize(i, o);
}

/**
 * Streams `n` generated problems, ids `synthetic:<seed>:<index>`, source
 * `{file: "synthetic", line: index}`. The same options always give the same problems.
 *
 * @example
 * ```ts
 * import { generate } from "./synthetic.ts";
 * import { segment } from "./segment.ts";
 * import { validate } from "./validate.ts";
 * for (const p of generate({ n: 5, seed: 42, maxSteps: 4 })) {
 *   console.assert(validate(segment(p)).validation.status === "ok", p.id);
 * }
 * ```
 */
export function* generate(opts: SyntheticOptions): Generator<Problem> {
  for (const r of generateRecords(opts)) yield r.problem;
}

/**
 * The families not in `families`: the held-out families for an out-of-distribution split.
 *
 * @example
 * ```ts
 * import { otherFamilies } from "./synthetic.ts";
 * console.assert(!otherFamilies(["ages", "travel"]).includes("ages"));
 * ```
 */
export function otherFamilies(families: readonly Family[]): Family[] {
  return FAMILIES.filter((f) => !families.includes(f));
}

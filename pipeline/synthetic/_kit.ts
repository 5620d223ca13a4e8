/**
 * The pieces every template family of the synthetic generator is built from: the context a
 * record is generated in, the running quantity, the output of one template, and the helpers
 * that write a calculator step the way GSM8K does (`48/2 = <<48/2=24>>24`).
 *
 * Money is kept in cents, as integers, so that percentages and sharing stay exact and the
 * printed decimals never show binary floating-point noise.
 *
 * @module
 */
import type { Rng } from "../../base/rng.ts";

/** A character of a problem, with the pronouns the templates need. */
export interface Person {
  /** First name. */
  name: string;
  /** Subject pronoun, lower case: `she`, `he`. */
  he: string;
  /** Possessive: `her`, `his`. */
  his: string;
  /** Object pronoun: `her`, `him`. */
  him: string;
}

/** Everything a template may use while one record is generated. */
export interface Ctx {
  /** The record's own random stream. */
  rng: Rng;
  /** The main character. */
  who: Person;
  /** Other names, distinct from `who` and from each other, in draw order. */
  others: Person[];
  /** Cap on every value, in whole units (dollars for money). */
  maxValue: number;
  /** Cap on the operands a template draws (10^digits − 1, at most maxValue). */
  maxOperand: number;
  /** How much wider than the templates' ranges amounts are drawn: 10^(digits − 2), at least 1. */
  scale: number;
  /** Whether money may have cents in this record (only families that call for it). */
  cents: boolean;
  /** Tags of the single-use templates already used in this record. */
  used: Set<string>;
  /** Per-list counters of {@linkcode fresh}. */
  counters: Map<string, number>;
}

/** The quantity the chain has reached, and how the question asks for it. */
export interface State {
  /** The value: a whole number, or cents when `money`. */
  v: number;
  /** What it measures, a family-specific tag (`spent`, `dist`, `hours`...). */
  kind: string;
  /** True when `v` is money in cents. */
  money: boolean;
  /** The question sentence that asks for `v`. */
  ask: string;
}

/** What one template adds: question text, one rationale line per step, the new state. */
export interface Out {
  /** Sentences added to the question (may be empty when only the ask changes). */
  clause: string;
  /** Rationale lines, each holding exactly one calculator annotation. */
  lines: string[];
  /** The quantity after these steps. */
  state: State;
  /** Only allowed as the chain's last template (its ask closes the story). */
  final?: boolean;
  /** Marks a single-use template: it is not applied twice in one record. */
  tag?: string;
  /**
   * Updates the family's scene (who is speaking, the period...) once the generator accepts
   * this output; a template may be tried and then not used, so it must not change it itself.
   */
  commit?: () => void;
}

/** A template that starts a chain from numbers it draws. */
export type Opener = () => Out | null;
/** A template that continues a chain from its current state; null when it does not apply. */
export type Move = (s: State) => Out | null;

/** A family's templates for one record (closures over the record's scene). */
export interface Plan {
  /** Templates that start the chain. */
  openers: Opener[];
  /** Templates that continue it. */
  moves: Move[];
}

/** Builds a family's plan for one record. */
export type FamilyBuilder = (c: Ctx) => Plan;

/** Upper-cases the first letter. */
export function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** `a` or `an` before a word. */
export function art(word: string): string {
  return /^[aeiou]/i.test(word) ? `an ${word}` : `a ${word}`;
}

/** Money in cents as GSM8K writes it: `12` for whole dollars, else two decimals (`12.50`). */
export function money(cents: number): string {
  return cents % 100 === 0 ? String(cents / 100) : (cents / 100).toFixed(2);
}

/**
 * One rationale step, GSM8K style: `<before><expr> = <<expr=value>>value<after>`, with `$`
 * before the annotation for money. The prose repeats the expression and the result, so the
 * NL form carries every number the math form produces.
 */
export function step(before: string, expr: string, value: string, after: string, dollar = false) {
  return `${before}${expr} = ${dollar ? "$" : ""}<<${expr}=${value}>>${value}${after}`;
}

/** A draw in [lo, hi], with hi capped at the operand limit (never below lo). */
export function draw(c: Ctx, lo: number, hi: number): number {
  return c.rng.int(lo, Math.max(lo, Math.min(hi, c.maxOperand)));
}

/**
 * A draw of an amount (a price, a count of things, a distance) in [lo, hi·scale]: `digits`
 * above 2 widens the template's range, so harder settings get bigger numbers; the operand cap
 * still applies. Counts that have a natural range (days in a week) use {@linkcode draw}.
 */
export function wide(c: Ctx, lo: number, hi: number): number {
  return draw(c, lo, hi * c.scale);
}

/** Whether a whole-unit value is within the record's cap. */
export function fits(c: Ctx, v: number): boolean {
  return v >= 0 && v <= c.maxValue;
}

/** Whether an amount in cents is within the cap and has cents only where allowed. */
export function fitsMoney(c: Ctx, cents: number): boolean {
  return Number.isInteger(cents) && cents >= 0 && cents <= c.maxValue * 100 &&
    (c.cents || cents % 100 === 0);
}

/**
 * The next item of a list that this record has not used yet (cycling from a random start),
 * so that a story does not buy the same thing or name the same day twice.
 */
export function fresh<T>(c: Ctx, key: string, items: readonly T[]): T {
  const k = c.counters.get(key) ?? c.rng.int(0, items.length - 1);
  c.counters.set(key, k + 1);
  return items[k % items.length];
}

/** A numerator in [1, den) with no factor in common with den, so the fraction is reduced. */
export function numerator(c: Ctx, den: number): number {
  const gcd = (a: number, b: number): number => b === 0 ? a : gcd(b, a % b);
  const nums: number[] = [];
  for (let k = 1; k < den; k++) if (gcd(k, den) === 1) nums.push(k);
  return c.rng.pick(nums);
}

/** The expression for num/den of v: `v/den` for a unit fraction, else `v*num/den`. */
export function fractionOf(v: number, num: number, den: number): string {
  return num === 1 ? `${v}/${den}` : `${v}*${num}/${den}`;
}

/** The divisors of n in [lo, hi]. */
export function divisors(n: number, lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let d = Math.max(1, lo); d <= Math.min(hi, n); d++) if (n % d === 0) out.push(d);
  return out;
}

/** How a fraction reads in prose: `half`, `a third`, `2/5`. */
export function fractionWords(num: number, den: number): string {
  if (num === 1 && den === 2) return "half";
  if (num === 1 && den === 3) return "a third";
  if (num === 1 && den === 4) return "a quarter";
  return `${num}/${den}`;
}

/**
 * Word n-gram overlap between texts, to find near copies of evaluation questions in training
 * data (decontamination).
 *
 * Texts are lower-cased and cut into words (letters, digits, apostrophes); by default every
 * number becomes `#`, so a question whose numbers were changed (as augmentation does) still
 * matches its source. Two scores compare an indexed text A (an evaluation question) with a
 * candidate B (a training question), over their sets of word 8-grams:
 *
 * - containment = |A ∩ B| / |A|: how much of A appears in B;
 * - Jaccard = |A ∩ B| / |A ∪ B|.
 *
 * A text shorter than n words is one gram (all its words). {@linkcode NEAR_COPY_THRESHOLD}
 * (0.3) is the containment at or above which B counts as a near copy of A. Measured on GSM8K
 * (docs/pipeline.md): the train questions closest to a test question that are distinct
 * problems score up to 0.27; the train questions written from the same template as a test
 * question (same sentences, other names and numbers) score 0.32 to 0.89.
 *
 * @module
 */

/** Options of {@linkcode ngrams} and {@linkcode NgramIndex}. */
export interface NgramOptions {
  /** Words per gram (default 8). */
  n?: number;
  /** Replace every number by `#` (default true). */
  maskNumbers?: boolean;
}

/** Containment at or above which a candidate is a near copy of an indexed text. */
export const NEAR_COPY_THRESHOLD = 0.3;

const WORD = /[a-z0-9']+(?:[.,][0-9]+)*/g;

/**
 * The words of a text, lower-cased, numbers masked unless `maskNumbers` is false.
 *
 * @example
 * ```ts
 * import { words } from "./overlap.ts";
 * console.assert(words("Ann buys 1,200 pens.").join(" ") === "ann buys # pens");
 * ```
 */
export function words(text: string, opts: NgramOptions = {}): string[] {
  const mask = opts.maskNumbers ?? true;
  const out: string[] = [];
  for (const m of text.toLowerCase().matchAll(WORD)) {
    out.push(mask && /^[0-9]/.test(m[0]) ? "#" : m[0]);
  }
  return out;
}

/**
 * The set of word n-grams of a text (one gram of all its words when it has fewer than n).
 *
 * @example
 * ```ts
 * import { ngrams } from "./overlap.ts";
 * console.assert(ngrams("a b c d", { n: 2 }).size === 3);
 * ```
 */
export function ngrams(text: string, opts: NgramOptions = {}): Set<string> {
  const n = opts.n ?? 8;
  const w = words(text, opts);
  const out = new Set<string>();
  if (w.length === 0) return out;
  if (w.length < n) {
    out.add(w.join(" "));
    return out;
  }
  for (let i = 0; i + n <= w.length; i++) out.add(w.slice(i, i + n).join(" "));
  return out;
}

/** The indexed text closest to a candidate. */
export interface Nearest {
  /** The indexed text's id. */
  id: string;
  /** Share of the indexed text's grams found in the candidate. */
  containment: number;
  /** Shared grams over all grams of both. */
  jaccard: number;
}

/**
 * An inverted index of texts' n-grams, queried with candidates.
 *
 * @example
 * ```ts
 * import { NgramIndex } from "./overlap.ts";
 * const index = new NgramIndex();
 * index.add("test:1", "A farmer has 12 cows and buys 5 more cows at the market. How many cows?");
 * const hit = index.nearest("A farmer has 30 cows and buys 7 more cows at the market. How many cows?");
 * console.assert(hit !== null && hit.containment === 1);
 * ```
 */
export class NgramIndex {
  #opts: NgramOptions;
  #ids: string[] = [];
  #sizes: number[] = [];
  #postings = new Map<string, number[]>();

  /** An empty index; options apply to indexed texts and candidates alike. */
  constructor(opts: NgramOptions = {}) {
    this.#opts = opts;
  }

  /** How many texts are indexed. */
  get size(): number {
    return this.#ids.length;
  }

  /** Indexes a text under an id. */
  add(id: string, text: string): void {
    const k = this.#ids.length;
    const grams = ngrams(text, this.#opts);
    this.#ids.push(id);
    this.#sizes.push(grams.size);
    for (const g of grams) {
      const list = this.#postings.get(g);
      if (list === undefined) this.#postings.set(g, [k]);
      else list.push(k);
    }
  }

  /** The indexed text with the highest containment in `text`, or null if none shares a gram. */
  nearest(text: string): Nearest | null {
    const grams = ngrams(text, this.#opts);
    const shared = new Map<number, number>();
    for (const g of grams) {
      for (const k of this.#postings.get(g) ?? []) shared.set(k, (shared.get(k) ?? 0) + 1);
    }
    let best: Nearest | null = null;
    for (const [k, s] of shared) {
      const containment = s / this.#sizes[k];
      const jaccard = s / (this.#sizes[k] + grams.size - s);
      if (best === null || containment > best.containment) {
        best = { id: this.#ids[k], containment, jaccard };
      }
    }
    return best;
  }
}

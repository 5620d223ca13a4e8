/**
 * A streaming byte-level BPE fitter for the compact tokenizer.
 *
 * Texts are pre-tokenised the way the compact tokenizer.json will pre-tokenise them (each
 * ASCII digit alone, then GPT-2's byte-level regex), and only the pre-token frequencies are
 * kept, so a corpus of any length fits in the memory of its distinct words. Merges never
 * cross a pre-token, so digits are never merged with anything.
 *
 * Determinism: the most frequent pair wins; ties go to the pair with the smaller left id,
 * then the smaller right id. Ids depend only on earlier merges, so the result depends only on
 * the multiset of texts, not on their order or on hash iteration order.
 *
 * @module
 */

import { BYTE_TO_CHAR } from "./_byte_level.ts";

const DIGIT = /[0-9]/g;
/** GPT-2's pre-tokenizer pattern, as the ByteLevel component of tokenizer.json uses it. */
export const GPT2_PATTERN =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * Split text the way the compact tokenizer's pre-tokenizer does, returning the pieces as
 * text (not yet byte-level spelled).
 */
export function compactPreTokens(text: string): string[] {
  const out: string[] = [];
  let prev = 0;
  const pushPiece = (piece: string) => {
    for (const m of piece.matchAll(GPT2_PATTERN)) out.push(m[0]);
  };
  for (const m of text.matchAll(DIGIT)) {
    if (m.index > prev) pushPiece(text.slice(prev, m.index));
    out.push(m[0]);
    prev = m.index + 1;
  }
  if (prev < text.length) pushPiece(text.slice(prev));
  return out;
}

/** Options of {@linkcode BpeFitter.fit}. */
export interface BpeFitOptions {
  /** Most tokens in the base vocabulary (the 256 bytes plus merged tokens). */
  maxTokens: number;
  /** A pair must occur at least this often to be merged (default 2). */
  minFrequency?: number;
}

/** The fitted model: tokens by id (ids 0..255 are the bytes) and the merges in order. */
export interface BpeModel {
  /** Token strings in byte-level spelling; `tokens[b]` for b < 256 is byte b. */
  tokens: string[];
  /** Merges in priority order, as pairs of token strings. */
  merges: [string, string][];
}

const encoder = new TextEncoder();

// Pair keys pack two ids; ids stay below 2^16 because the vocabulary is small.
const SHIFT = 65536;

/** A max-heap of [count, key] entries, stale entries skipped on pop. */
class PairHeap {
  #counts: number[] = [];
  #keys: number[] = [];

  get size(): number {
    return this.#counts.length;
  }

  #before(i: number, j: number): boolean {
    const ci = this.#counts[i], cj = this.#counts[j];
    return ci > cj || (ci === cj && this.#keys[i] < this.#keys[j]);
  }

  #swap(i: number, j: number): void {
    [this.#counts[i], this.#counts[j]] = [this.#counts[j], this.#counts[i]];
    [this.#keys[i], this.#keys[j]] = [this.#keys[j], this.#keys[i]];
  }

  push(count: number, key: number): void {
    this.#counts.push(count);
    this.#keys.push(key);
    let i = this.#counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#before(i, p)) break;
      this.#swap(i, p);
      i = p;
    }
  }

  pop(): [number, number] {
    const top: [number, number] = [this.#counts[0], this.#keys[0]];
    const lastC = this.#counts.pop()!, lastK = this.#keys.pop()!;
    if (this.#counts.length > 0) {
      this.#counts[0] = lastC;
      this.#keys[0] = lastK;
      let i = 0;
      const n = this.#counts.length;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < n && this.#before(l, m)) m = l;
        if (r < n && this.#before(r, m)) m = r;
        if (m === i) break;
        this.#swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

/**
 * Collects pre-token frequencies from texts, then fits BPE merges.
 *
 * @example
 * ```ts
 * import { BpeFitter } from "./bpe_fit.ts";
 * const f = new BpeFitter();
 * f.add("the cat and the hat\n");
 * const { tokens, merges } = f.fit({ maxTokens: 300 });
 * console.assert(tokens.length <= 300 && merges.length > 0);
 * ```
 */
export class BpeFitter {
  #freq = new Map<string, number>();

  /** Number of distinct pre-tokens seen. */
  get distinct(): number {
    return this.#freq.size;
  }

  /** Count the pre-tokens of `text`. */
  add(text: string): void {
    for (const p of compactPreTokens(text)) {
      // Single characters never take part in a merge; skip the map traffic.
      if (p.length === 1 && p.charCodeAt(0) < 0x80) continue;
      this.#freq.set(p, (this.#freq.get(p) ?? 0) + 1);
    }
  }

  /** Fit merges until `maxTokens` tokens exist or no pair occurs `minFrequency` times. */
  fit(opts: BpeFitOptions): BpeModel {
    const minFreq = opts.minFrequency ?? 2;
    const tokens: string[] = [...BYTE_TO_CHAR];
    const tokenId = new Map<string, number>(tokens.map((t, i) => [t, i]));
    const merges: [string, string][] = [];
    const merged = new Set<number>();
    if (opts.maxTokens >= SHIFT) throw new RangeError(`maxTokens ${opts.maxTokens} is too large`);

    // Words in a canonical order so that nothing depends on insertion order.
    const entries = [...this.#freq].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const words: number[][] = entries.map(([w]) => Array.from(encoder.encode(w)));
    const counts = entries.map(([, c]) => c);

    const pairCount = new Map<number, number>();
    const where = new Map<number, Set<number>>();
    const addPairs = (wi: number, sign: number, changed: Set<number>) => {
      const w = words[wi];
      const c = counts[wi] * sign;
      for (let i = 0; i + 1 < w.length; i++) {
        const key = w[i] * SHIFT + w[i + 1];
        pairCount.set(key, (pairCount.get(key) ?? 0) + c);
        changed.add(key);
        if (sign > 0) {
          let s = where.get(key);
          if (!s) where.set(key, s = new Set());
          s.add(wi);
        }
      }
    };
    const heap = new PairHeap();
    const init = new Set<number>();
    for (let wi = 0; wi < words.length; wi++) addPairs(wi, 1, init);
    for (const key of init) heap.push(pairCount.get(key)!, key);

    while (tokens.length < opts.maxTokens && heap.size > 0) {
      const [count, key] = heap.pop();
      if (pairCount.get(key) !== count) continue; // stale entry
      if (count < minFreq) break;
      const a = Math.floor(key / SHIFT), b = key % SHIFT;
      const text = tokens[a] + tokens[b];
      // Two merge paths can spell the same string ("ab"+"c", "a"+"bc"); they share one id.
      let id = tokenId.get(text);
      if (id === undefined) {
        id = tokens.length;
        tokens.push(text);
        tokenId.set(text, id);
      }
      // A pair can reappear only through a shared id; its first merge already covers it.
      if (!merged.has(key)) merges.push([tokens[a], tokens[b]]);
      merged.add(key);
      const changed = new Set<number>();
      const affected = [...(where.get(key) ?? [])].sort((x, y) => x - y);
      where.delete(key);
      for (const wi of affected) {
        const w = words[wi];
        let has = false;
        for (let i = 0; i + 1 < w.length; i++) if (w[i] === a && w[i + 1] === b) has = true;
        if (!has) continue;
        addPairs(wi, -1, changed);
        const next: number[] = [];
        for (let i = 0; i < w.length; i++) {
          if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
            next.push(id);
            i++;
          } else next.push(w[i]);
        }
        words[wi] = next;
        addPairs(wi, 1, changed);
      }
      for (const k of changed) {
        const c = pairCount.get(k) ?? 0;
        if (c > 0) heap.push(c, k);
        else pairCount.delete(k);
      }
    }
    return { tokens, merges };
  }
}

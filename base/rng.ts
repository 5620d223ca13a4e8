/**
 * The project's one seeded pseudo-random generator: data generation and augmentation, weight
 * initialisation, the training data order, and the engine checks' random inputs.
 *
 * `Math.random` cannot be seeded, and generated data and training runs must be reproducible
 * from their seed alone. Each record gets its own stream, derived from `(seed, key)` by hashing, so record n
 * is the same whether it is generated first, last or alone, and a build can be cut into
 * pieces without changing any record. The generator is sfc32 (small fast counter, 128 bits of
 * state), which passes the usual statistical batteries and is plenty for choosing templates
 * and numbers; it is not for cryptography.
 *
 * @module
 */

/** FNV-1a, 32 bits, of a string's UTF-16 code units: turns an id into a stream key. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

// A 32-bit finalizer (murmur3's fmix32): spreads every input bit over the output.
function mix(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * A seeded random stream.
 *
 * @example
 * ```ts
 * import { Rng } from "./rng.ts";
 * const a = new Rng(7, 1);
 * const b = new Rng(7, 1);
 * console.assert(a.int(1, 6) === b.int(1, 6)); // same seed and key, same draws
 * ```
 */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** A stream for `seed` (any integer) and `key` (e.g. a record index or `hashString(id)`). */
  constructor(seed: number, key = 0) {
    const s = Math.trunc(seed) >>> 0;
    const hi = Math.trunc(seed / 2 ** 32) >>> 0;
    this.#a = mix(s ^ 0x9e3779b9);
    this.#b = mix(key ^ 0x7f4a7c15);
    this.#c = mix((s + Math.imul(key, 0x6c8e9cf5)) ^ hi);
    this.#d = 1;
    // The first outputs of a freshly seeded sfc32 are poorly mixed: discard them.
    for (let i = 0; i < 12; i++) this.next();
  }

  /** The next 32-bit unsigned integer. */
  next(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.next() / 4294967296;
  }

  /** An integer in [lo, hi], both included; `lo` when `hi < lo`. */
  int(lo: number, hi: number): number {
    if (hi <= lo) return lo;
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.float() * items.length)];
  }

  /** `count` distinct elements of `items` (all of them, shuffled, if there are fewer). */
  sample<T>(items: readonly T[], count: number): T[] {
    const copy = items.slice();
    const n = Math.min(count, copy.length);
    for (let i = 0; i < n; i++) {
      const j = i + Math.floor(this.float() * (copy.length - i));
      [copy[i], copy[j]] = [copy[j], copy[i]];
    }
    return copy.slice(0, n);
  }

  /** A standard normal draw (Box-Muller on two uniforms). */
  normal(): number {
    const u = 1 - this.float(), v = this.float();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** `n` standard normal draws times `scale`, as float32. */
  normals(n: number, scale = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = scale * this.normal();
    return out;
  }

  /** Fisher-Yates shuffle, in place. */
  shuffle<T>(a: T[] | Int32Array): void {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.float() * (i + 1));
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
  }
}

/**
 * A 64-bit seed derived from `seed` and `tag` by splitmix64's finaliser: distinct tags give
 * unrelated seeds (for the engine's counter-based dropout, whose streams from seeds that
 * differ by a multiple of its step would overlap).
 */
export function mixSeed(seed: bigint, tag: number): bigint {
  const M = (1n << 64n) - 1n;
  let z = (seed ^ (BigInt(tag) * 0xD1B54A32D192ED03n)) & M;
  z = (z + 0x9E3779B97F4A7C15n) & M;
  z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & M;
  z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & M;
  return z ^ (z >> 31n);
}

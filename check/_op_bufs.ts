/**
 * Helpers of the op cases (check/parity.ts, check/parity_shapes.ts): engine buffers freed
 * together, and random inputs.
 *
 * @module
 */
import type { Engine, Ptr } from "../engine/ffi.ts";
import type { Rng } from "../base/rng.ts";

/** Engine buffers of one case, freed together. */
export class Bufs {
  #eng: Engine;
  #ptrs: Ptr[] = [];
  constructor(eng: Engine) {
    this.#eng = eng;
  }
  /** fp32 buffer holding `data`, or n zeros. */
  f32(data: Float32Array | number): Ptr {
    const n = typeof data === "number" ? data : data.length;
    const p = this.#eng.alloc(Math.max(1, n) * 4);
    this.#ptrs.push(p);
    if (typeof data !== "number") this.#eng.upload(p, data);
    return p;
  }
  i32(data: Int32Array): Ptr {
    const p = this.#eng.alloc(Math.max(1, data.length) * 4);
    this.#ptrs.push(p);
    this.#eng.upload(p, data);
    return p;
  }
  u8(data: Uint8Array): Ptr {
    const p = this.#eng.alloc(Math.max(1, data.length));
    this.#ptrs.push(p);
    this.#eng.upload(p, data);
    return p;
  }
  /** Frees `p` (engine memory allocated elsewhere) with the others. */
  adopt(p: Ptr): void {
    this.#ptrs.push(p);
  }
  get(p: Ptr, n: number): Float32Array {
    const out = new Float32Array(n);
    this.#eng.download(out, p);
    return out;
  }
  geti(p: Ptr, n: number): Int32Array {
    const out = new Int32Array(n);
    this.#eng.download(out, p);
    return out;
  }
  at(p: Ptr, floats: number): Ptr {
    return this.#eng.offset(p, floats * 4);
  }
  free(): void {
    for (const p of this.#ptrs) this.#eng.free(p);
    this.#ptrs = [];
  }
}

/** Runs fn with a fresh set of buffers, freed afterwards. */
export function withBufs<T>(eng: Engine, fn: (b: Bufs) => T): T {
  const b = new Bufs(eng);
  try {
    return fn(b);
  } finally {
    b.free();
  }
}

/** n normal draws, scaled and shifted. */
export function randn(rng: Rng, n: number, scale = 1, shift = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = shift + scale * rng.normal();
  return out;
}

/** n integers in [0, hi). */
export function randi(rng: Rng, n: number, hi: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.below(hi);
  return out;
}

const bigCache = new Map<string, Float32Array>();

/**
 * n values uniform in [-scale, scale) from a 32-bit xorshift seeded by `seed`: fast enough for
 * the tens of millions of values of a GPT-2-sized table, and the same array for the same
 * (seed, n, scale), kept for reuse (each case runs once per engine).
 */
export function bigUniform(seed: number, n: number, scale: number): Float32Array {
  const key = `${seed}/${n}/${scale}`;
  const hit = bigCache.get(key);
  if (hit) return hit;
  const out = new Float32Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = ((x / 4294967296) * 2 - 1) * scale;
  }
  if (bigCache.size > 8) bigCache.clear();
  bigCache.set(key, out);
  return out;
}

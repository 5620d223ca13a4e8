/**
 * Test helpers for the engine: a seeded RNG, a pool of engine buffers, float64 reference
 * implementations of every op, central finite differences, and tolerance-aware comparisons.
 *
 * @module
 */
import type { Engine, Ptr } from "../engine/ffi.ts";
import { Rng } from "../base/rng.ts";

/** fp32 unit roundoff (half an ulp of 1). */
export const U32 = 2 ** -24;

/** gamma_n = n u / (1 - n u): the classic bound on the relative error of an n-term sum. */
export function gamma(n: number): number {
  return (n * U32) / (1 - n * U32);
}

export { Rng };

/** `n` uniform fp32 values in [lo, hi). */
export function uniforms(rng: Rng, n: number, lo: number, hi: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rng.float();
  return out;
}

/**
 * The engine's dropout decision for element i (lotus_engine.h): kept when the top 24 bits of
 * splitmix64's finaliser of seed + (i + 1) * golden, over 2^24, are at least p (as a float).
 */
export function dropKeep(seed: bigint, i: number, p: number): boolean {
  const M = (1n << 64n) - 1n;
  let z = (seed + BigInt(i + 1) * 0x9E3779B97F4A7C15n) & M;
  z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & M;
  z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & M;
  z ^= z >> 31n;
  return Number(z >> 40n) / 16777216 >= Math.fround(p);
}

/** Engine buffers that a test frees in one call. */
export class Pool {
  readonly eng: Engine;
  #ptrs: Ptr[] = [];
  constructor(eng: Engine) {
    this.eng = eng;
  }
  /** Zeroed buffer of `bytes` bytes. */
  raw(bytes: number): Ptr {
    const p = this.eng.alloc(bytes);
    this.#ptrs.push(p);
    return p;
  }
  /** fp32 buffer: n zeros, or a copy of the given values. */
  f32(x: number | ArrayLike<number>): Ptr {
    const host = typeof x === "number" ? new Float32Array(x) : Float32Array.from(x);
    const p = this.raw(host.byteLength);
    this.eng.upload(p, host);
    return p;
  }
  /** int32 buffer holding the given values. */
  i32(x: ArrayLike<number>): Ptr {
    const host = Int32Array.from(x);
    const p = this.raw(host.byteLength);
    this.eng.upload(p, host);
    return p;
  }
  /** uint8 buffer holding the given values. */
  u8(x: ArrayLike<number>): Ptr {
    const host = Uint8Array.from(x);
    const p = this.raw(host.byteLength);
    this.eng.upload(p, host);
    return p;
  }
  /** n bytes read back from p. */
  readU8(p: Ptr, n: number): Uint8Array {
    const out = new Uint8Array(n);
    this.eng.download(out, p);
    return out;
  }
  /** n floats read back from p. */
  read(p: Ptr, n: number): Float32Array {
    const out = new Float32Array(n);
    this.eng.download(out, p);
    return out;
  }
  /** n int32 values read back from p. */
  readI32(p: Ptr, n: number): Int32Array {
    const out = new Int32Array(n);
    this.eng.download(out, p);
    return out;
  }
  /** Frees everything this pool allocated. */
  free(): void {
    for (const p of this.#ptrs) this.eng.free(p);
    this.#ptrs = [];
  }
}

/** sum_i a[i] * r[i] in float64. */
export function dotLoss(a: ArrayLike<number>, r: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * r[i];
  return s;
}

/**
 * sqrt(sum_i (a[i] r[i])^2): the scale of the rounding noise in dotLoss, whose terms carry
 * independent rounding errors (see assertGrad).
 */
export function noiseScale(a: ArrayLike<number>, r: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] * r[i]) ** 2;
  return Math.sqrt(s);
}

/**
 * Asserts |actual - expected| <= atol(i) + rtol |expected| elementwise; the message names
 * the worst element.
 */
export function assertClose(
  name: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  atol: number | ArrayLike<number>,
  rtol = 0,
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${name}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1, worstRatio = 0;
  for (let i = 0; i < actual.length; i++) {
    const tol = (typeof atol === "number" ? atol : atol[i]) + rtol * Math.abs(expected[i]);
    const err = Math.abs(actual[i] - expected[i]);
    const ratio = err / tol;
    if (!(ratio <= 1) && !(err === 0)) {
      if (worst < 0 || !(ratio <= worstRatio)) {
        worst = i;
        worstRatio = ratio;
      }
    }
  }
  if (worst >= 0) {
    const tol = (typeof atol === "number" ? atol : atol[worst]) +
      rtol * Math.abs(expected[worst]);
    throw new Error(
      `${name}: element ${worst}: got ${actual[worst]}, expected ${expected[worst]} ` +
        `(error ${Math.abs(actual[worst] - expected[worst])}, tolerance ${tol})`,
    );
  }
}

/**
 * Finite differences of `loss` with respect to the fp32 host array `x`, which is uploaded to
 * `p` after each perturbation: central differences at steps h and h/2 combined by Richardson
 * extrapolation, (4 D(h/2) - D(h)) / 3, which cancels the h^2 truncation term. Each step
 * actually taken is the fp32-rounded difference (x+h) - (x-h). Only `indices` (default: all)
 * are probed; x is restored. `step` is the smaller step, which sets the rounding noise.
 */
export function finiteDiff(
  eng: Engine,
  x: Float32Array,
  p: Ptr,
  loss: () => number,
  h: number,
  indices?: number[],
): { fd: Float64Array; step: Float64Array } {
  const fd = new Float64Array(x.length);
  const step = new Float64Array(x.length);
  const central = (i: number, hh: number): [number, number] => {
    const x0 = x[i];
    const xp = Math.fround(x0 + hh), xm = Math.fround(x0 - hh);
    x[i] = xp;
    eng.upload(p, x);
    const lp = loss();
    x[i] = xm;
    eng.upload(p, x);
    const lm = loss();
    x[i] = x0;
    eng.upload(p, x);
    return [(lp - lm) / (xp - xm), xp - xm];
  };
  for (const i of indices ?? x.keys()) {
    const [d1] = central(i, h);
    const [d2, s2] = central(i, h / 2);
    fd[i] = (4 * d2 - d1) / 3;
    step[i] = s2;
  }
  return { fd, step };
}

/**
 * Checks an analytic gradient against {@linkcode finiteDiff}.
 *
 * Why this tolerance holds for fp32. Outputs that a perturbation does not reach are
 * bit-identical in both evaluations (the engine is deterministic), so they cancel exactly in
 * float64. Each output it reaches is computed through about `depth` roundings and is off by
 * about sqrt(depth) u of its magnitude: the probabilistic bound of Higham and Mary, which
 * models rounding errors as independent and holds with overwhelming probability (the worst
 * case, depth u, is about 100 times looser than what we measure and would hide real bugs).
 * The same model makes the loss's noise, a sum of such errors weighted by r, about
 * sqrt(depth) u S with S = sqrt(sum (out r)^2) over the reached outputs; 8 times that,
 * divided by the step, bounds the extrapolated quotient's noise. The truncation error is
 * O(h^4): with h = 0.1 and O(1) inputs it is near 1e-6 relative, under rtol = 1e-4.
 * With these bounds a gradient that is 1% off fails, and most 0.1% errors do too.
 */
export function assertGrad(
  name: string,
  analytic: ArrayLike<number>,
  fd: { fd: Float64Array; step: Float64Array },
  S: number | ArrayLike<number>,
  depth: number,
  rtol = 1e-4,
  indices?: number[],
): void {
  const idx = indices ?? [...Array(analytic.length).keys()];
  const a = idx.map((i) => analytic[i]);
  const f = idx.map((i) => fd.fd[i]);
  const atol = idx.map((i) =>
    (8 * Math.sqrt(depth) * U32 * (typeof S === "number" ? S : S[i])) / fd.step[i] + 1e-9
  );
  assertClose(`${name} (analytic vs finite differences)`, a, f, atol, rtol);
}

// ---------------------------------------------------------------------------------------------
// float64 references
// ---------------------------------------------------------------------------------------------

/** out[N,Cout] = inp W^T + bias, and the magnitudes sum |inp w| + |bias| (error scale). */
export function matmulRef(
  inp: ArrayLike<number>,
  w: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  N: number,
  Cin: number,
  Cout: number,
): { out: Float64Array; mag: Float64Array } {
  const out = new Float64Array(N * Cout), mag = new Float64Array(N * Cout);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < Cout; o++) {
      let s = bias ? bias[o] : 0, m = bias ? Math.abs(bias[o]) : 0;
      for (let k = 0; k < Cin; k++) {
        const t = inp[n * Cin + k] * w[o * Cin + k];
        s += t;
        m += Math.abs(t);
      }
      out[n * Cout + o] = s;
      mag[n * Cout + o] = m;
    }
  }
  return { out, mag };
}

/** dinp = dout W, dw = dout^T inp, dbias = column sums of dout (float64, not accumulated). */
export function matmulBwdRef(
  dout: ArrayLike<number>,
  inp: ArrayLike<number>,
  w: ArrayLike<number>,
  N: number,
  Cin: number,
  Cout: number,
): {
  dinp: Float64Array;
  dw: Float64Array;
  dbias: Float64Array;
  magInp: Float64Array;
  magW: Float64Array;
} {
  const dinp = new Float64Array(N * Cin), magInp = new Float64Array(N * Cin);
  const dw = new Float64Array(Cout * Cin), magW = new Float64Array(Cout * Cin);
  const dbias = new Float64Array(Cout);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < Cout; o++) {
      const d = dout[n * Cout + o];
      dbias[o] += d;
      for (let k = 0; k < Cin; k++) {
        dinp[n * Cin + k] += d * w[o * Cin + k];
        magInp[n * Cin + k] += Math.abs(d * w[o * Cin + k]);
        dw[o * Cin + k] += d * inp[n * Cin + k];
        magW[o * Cin + k] += Math.abs(d * inp[n * Cin + k]);
      }
    }
  }
  return { dinp, dw, dbias, magInp, magW };
}

/** LayerNorm over rows of C with eps 1e-5. */
export function layernormRef(
  inp: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number>,
  N: number,
  C: number,
): { out: Float64Array; mean: Float64Array; rstd: Float64Array } {
  const out = new Float64Array(N * C), mean = new Float64Array(N), rstd = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += inp[n * C + c];
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (inp[n * C + c] - m) ** 2;
    v /= C;
    const rs = 1 / Math.sqrt(v + 1e-5);
    for (let c = 0; c < C; c++) out[n * C + c] = (inp[n * C + c] - m) * rs * w[c] + b[c];
    mean[n] = m;
    rstd[n] = rs;
  }
  return { out, mean, rstd };
}

/** GPT-2's tanh-approximated GELU. */
export function geluRef(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

/** Where an attention test keeps its past keys/values on the host. */
export interface PastLayout {
  /** Host mirror of the buffer that holds the past. */
  buf: Float32Array;
  /** Element offset of the first key row in buf. */
  off: number;
  /** Batch stride (elements). */
  bs: number;
  /** Row stride (elements). */
  rs: number;
}

/** Causal attention of Tq queries against [Tp past ‖ own] keys, as lotus_engine.h states. */
export function attentionRef(
  qkv: ArrayLike<number>,
  past: PastLayout | null,
  valid: ArrayLike<number> | null,
  B: number,
  Tq: number,
  Tp: number,
  C: number,
  NH: number,
): { out: Float64Array; att: Float64Array; mag: Float64Array } {
  const HS = C / NH, Tk = Tp + Tq, scale = 1 / Math.sqrt(HS);
  const out = new Float64Array(B * Tq * C), mag = new Float64Array(B * Tq * C);
  const att = new Float64Array(B * NH * Tq * Tk);
  const kAt = (b: number, j: number, h: number, d: number, isV: boolean) =>
    j < Tp
      ? past!.buf[past!.off + b * past!.bs + j * past!.rs + (isV ? C : 0) + h * HS + d]
      : qkv[(b * Tq + j - Tp) * 3 * C + (isV ? 2 * C : C) + h * HS + d];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let i = 0; i < Tq; i++) {
        const s = new Float64Array(Tp + i + 1).fill(-Infinity);
        let m = -Infinity;
        for (let j = 0; j <= Tp + i; j++) {
          if (valid && !valid[b * Tk + j]) continue;
          let dot = 0;
          for (let d = 0; d < HS; d++) {
            dot += qkv[(b * Tq + i) * 3 * C + h * HS + d] * kAt(b, j, h, d, false);
          }
          s[j] = dot * scale;
          m = Math.max(m, s[j]);
        }
        if (m === -Infinity) continue; // no visible valid key: zeros
        let z = 0;
        for (let j = 0; j <= Tp + i; j++) z += s[j] === -Infinity ? 0 : Math.exp(s[j] - m);
        for (let j = 0; j <= Tp + i; j++) {
          const p = s[j] === -Infinity ? 0 : Math.exp(s[j] - m) / z;
          att[((b * NH + h) * Tq + i) * Tk + j] = p;
          for (let d = 0; d < HS; d++) {
            const v = kAt(b, j, h, d, true);
            out[(b * Tq + i) * C + h * HS + d] += p * v;
            mag[(b * Tq + i) * C + h * HS + d] += p * Math.abs(v);
          }
        }
      }
    }
  }
  return { out, att, mag };
}

/** Cross-entropy losses (0 for targets < 0) and softmax probabilities. */
export function xentRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  N: number,
  V: number,
): { losses: Float64Array; probs: Float64Array } {
  const losses = new Float64Array(N), probs = new Float64Array(N * V);
  for (let n = 0; n < N; n++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, logits[n * V + v]);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[n * V + v] - m);
    for (let v = 0; v < V; v++) probs[n * V + v] = Math.exp(logits[n * V + v] - m) / z;
    const t = targets[n];
    losses[n] = t < 0 ? 0 : m + Math.log(z) - logits[n * V + t];
  }
  return { losses, probs };
}

/** State of one parameter tensor under PyTorch's AdamW, in float64. */
export interface AdamState {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

/** One torch.optim.AdamW step (optionally after clip_grad_norm_ with the given norm^2). */
export function adamwRef(
  s: AdamState,
  g: ArrayLike<number>,
  lr: number,
  beta1: number,
  beta2: number,
  eps: number,
  wd: number,
  t: number,
  gnormSq: number | null,
  maxNorm: number,
): void {
  const clip = gnormSq !== null && maxNorm > 0
    ? Math.min(1, maxNorm / (Math.sqrt(gnormSq) + 1e-6))
    : 1;
  const bc1 = 1 - beta1 ** t, bc2 = 1 - beta2 ** t;
  for (let i = 0; i < s.p.length; i++) {
    const gi = g[i] * clip;
    s.p[i] *= 1 - lr * wd;
    s.m[i] = beta1 * s.m[i] + (1 - beta1) * gi;
    s.v[i] = beta2 * s.v[i] + (1 - beta2) * gi * gi;
    s.p[i] -= (lr / bc1) * s.m[i] / (Math.sqrt(s.v[i]) / Math.sqrt(bc2) + eps);
  }
}

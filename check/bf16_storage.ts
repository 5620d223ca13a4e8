/**
 * bf16 storage (le_alloc_bf16 in engine/lotus_engine.h) against fp32 buffers on one engine,
 * op by op: a matmul writing bf16 storage holds its fp32 result rounded to bf16; the
 * statistics attention reading qkv and its past from bf16 storage gives the bits it gives from
 * fp32 buffers holding the same values (forward, statistics and both gradients); bf16 rows
 * copy as stored; GELU reading its input from bf16 storage gives the bits of an fp32 input of
 * the same values, in every form the runner calls it. The attention cases cover every
 * head-size instance of the tensor-core kernels (16, 32, 64 and 128, a ragged 15 among them)
 * and grouped-query heads, and run at any precision: in bf16 on the tensor cores, else through
 * the fp32 kernels, which read the values widened.
 *
 * @module
 */
import { type Engine, type Precision, PRECISION_MODES, type Ptr } from "../engine/ffi.ts";
import { Rng } from "../base/rng.ts";
import { type Bufs, randn, withBufs } from "./_op_bufs.ts";
import { type CheckRow, checkRow, differingBits } from "./parity.ts";

/** fp32 values rounded to the nearest bf16, ties to even (NaN stays NaN): their bits. */
export function bf16Bits(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = u[i];
    out[i] = (v & 0x7fffffff) > 0x7f800000
      ? (v >>> 16) | 0x40
      : ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

/** bf16 bits widened exactly to fp32. */
export function bf16Widen(h: Uint16Array): Float32Array {
  const u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
  return new Float32Array(u.buffer);
}

/** Largest distance, in bf16 steps, between two arrays of bf16 bits (same sign assumed). */
function ulpDistance(a: Uint16Array, b: Uint16Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] & 0x8000) === (b[i] & 0x8000) ? Math.abs(a[i] - b[i]) : Infinity;
    worst = Math.max(worst, d);
  }
  return worst;
}

/** A bf16 block holding `bits`, freed with the case's buffers. */
function bf16Buf(eng: Engine, bufs: Bufs, bits: Uint16Array): Ptr {
  const p = eng.allocBf16(bits.length);
  bufs.adopt(p);
  eng.upload(p, bits);
  return p;
}

function download16(eng: Engine, p: Ptr, n: number): Uint16Array {
  const out = new Uint16Array(n);
  eng.download(out, p);
  return out;
}

/** An attention case: heads, and key/value heads for grouped-query attention. */
interface AttnCase {
  C: number;
  NH: number;
  NKV?: number;
}

/** Head sizes 16, 15 (ragged, C not a multiple of 4), 32, 64 and 128, and grouped-query. */
export const BF16_ATTENTION_CASES: AttnCase[] = [
  { C: 64, NH: 4 },
  { C: 30, NH: 2 },
  { C: 64, NH: 2 },
  { C: 128, NH: 2 },
  { C: 128, NH: 1 },
  { C: 64, NH: 4, NKV: 2 },
];

/**
 * The statistics attention of one case from bf16 storage and from fp32 buffers of the same
 * values: B = 2 rows of Tq = 21 queries after a past of Tp = 19 positions held in another
 * chunk's qkv buffer (its keys at column C), some keys masked. Returns the bits that differ
 * (out, stats, dqkv, dpast) and the values compared.
 */
function attentionCase(eng: Engine, c: AttnCase, seed: number): { differ: number; n: number } {
  const B = 2, Tq = 21, Tp = 19, { C, NH } = c, NKV = c.NKV ?? NH;
  const HS = C / NH, W = C + 2 * HS * NKV, Tk = Tp + Tq;
  const rng = new Rng(seed, C * 131 + NH * 7 + NKV);
  const qkvBits = bf16Bits(randn(rng, B * Tq * W, 0.8));
  const pastBits = bf16Bits(randn(rng, B * Tp * W, 0.8));
  const valid = new Uint8Array(B * Tk).map((_, i) => (i % 7 === 3 ? 0 : 1));
  const dout = randn(rng, B * Tq * C);
  return withBufs(eng, (bufs) => {
    const kv = bufs.u8(valid), dO = bufs.f32(dout);
    const run = (qkv: Ptr, past: Ptr, elem: number) => {
      const out = bufs.f32(B * Tq * C), stats = bufs.f32(B * NH * Tq * 2);
      const dqkv = bufs.f32(B * Tq * W), dpast = bufs.f32(B * Tp * W);
      const kvPast = eng.offset(past, C * elem), dkv = bufs.at(dpast, C);
      const dims = [B, Tq, Tp, C, NH] as const, strides = [Tp * W, W] as const;
      if (c.NKV === undefined) {
        eng.attentionStatsFwd(out, stats, qkv, kvPast, kv, ...dims, ...strides);
        eng.attentionStatsBwd(dqkv, dkv, dO, out, stats, kv, qkv, kvPast, ...dims, ...strides);
      } else {
        eng.attentionGqaStatsFwd(out, stats, qkv, kvPast, kv, ...dims, NKV, ...strides);
        eng.attentionGqaStatsBwd(
          dqkv,
          dkv,
          dO,
          out,
          stats,
          kv,
          qkv,
          kvPast,
          ...dims,
          NKV,
          ...strides,
        );
      }
      return [
        bufs.get(out, B * Tq * C),
        bufs.get(stats, B * NH * Tq * 2),
        bufs.get(dqkv, B * Tq * W),
        bufs.get(dpast, B * Tp * W),
      ];
    };
    const want = run(bufs.f32(bf16Widen(qkvBits)), bufs.f32(bf16Widen(pastBits)), 4);
    const got = run(bf16Buf(eng, bufs, qkvBits), bf16Buf(eng, bufs, pastBits), 2);
    let differ = 0, n = 0;
    for (let i = 0; i < want.length; i++) {
      differ += differingBits(got[i], want[i]);
      n += want[i].length;
    }
    return { differ, n };
  });
}

/**
 * GELU reading its input from bf16 storage and from an fp32 buffer of the same values, at an
 * offset of `shift` elements into each (0 or 4: the vector kernels; 1: the element-wise ones):
 * the forward, the backward added and overwriting, the backward left to the matmul backward
 * after it (le_operand_only, the fc layer's pattern) and a forward hinted before a few-row
 * matmul.
 * Returns the bits that differ and the values compared.
 */
function geluCase(eng: Engine, rng: Rng, shift: number): { differ: number; n: number } {
  const [N, F, C] = [6, 40, 24], n = N * F;
  const hBits = bf16Bits(randn(rng, n + shift, 1.5));
  const [dy, acc0] = [randn(rng, n), randn(rng, n)];
  const [w, x] = [randn(rng, C * F, 0.2), randn(rng, N * C)];
  const w2 = randn(rng, C * F, 0.2);
  return withBufs(eng, (bufs) => {
    const [dyp, wp, xp, w2p] = [bufs.f32(dy), bufs.f32(w), bufs.f32(x), bufs.f32(w2)];
    const run = (h: Ptr) => {
      const out = bufs.f32(n + shift), dAcc = bufs.f32(acc0), dSet = bufs.f32(n);
      const [dh, dx, dW, dB] = [bufs.f32(n), bufs.f32(N * C), bufs.f32(C * F), bufs.f32(F)];
      const [act, y] = [bufs.f32(n), bufs.f32(N * C)];
      eng.geluFwd(bufs.at(out, shift), h, n);
      eng.geluBwd(dAcc, h, dyp, n, true);
      eng.geluBwd(dSet, h, dyp, n, false);
      eng.operandOnly(dh);
      eng.geluBwd(dh, h, dyp, n, false);
      eng.matmulBwd(dx, dW, dB, dh, xp, wp, N, C, F, false);
      eng.operandOnly(act);
      eng.geluFwd(act, h, n);
      eng.matmulFwd(y, act, w2p, null, N, F, C);
      return [
        bufs.get(out, n + shift).subarray(shift),
        bufs.get(dAcc, n),
        bufs.get(dSet, n),
        bufs.get(dx, N * C),
        bufs.get(dW, C * F),
        bufs.get(dB, F),
        bufs.get(y, N * C),
      ];
    };
    const wide = bufs.f32(bf16Widen(hBits));
    const want = run(bufs.at(wide, shift));
    const got = run(eng.offset(bf16Buf(eng, bufs, hBits), 2 * shift));
    let differ = 0, count = 0;
    for (let i = 0; i < want.length; i++) {
      differ += differingBits(got[i], want[i]);
      count += want[i].length;
    }
    return { differ, n: count };
  });
}

/**
 * bf16 storage on `eng` at `precision` (restored to fp32 afterwards): the matmul's rounding
 * (err: the largest distance in bf16 steps from the fp32 output rounded, tol 1, since a GPU's
 * GEMM for a bf16 output may sum in another order; 0 on the CPU engine and in the emulation),
 * the attention cases (err: bits that differ, tol 0) and a strided copy of bf16 rows (the
 * same).
 */
export function compareBf16Storage(eng: Engine, precision: Precision, seed = 7): CheckRow[] {
  const rows: CheckRow[] = [];
  eng.setPrecision(PRECISION_MODES[precision]);
  try {
    const rng = new Rng(seed, 17);
    const [N, Cin, Cout] = [37, 48, 72];
    const x = randn(rng, N * Cin), w = randn(rng, Cout * Cin, 0.2), b = randn(rng, Cout, 0.5);
    const mm = withBufs(eng, (bufs) => {
      const [xp, wp, bp] = [bufs.f32(x), bufs.f32(w), bufs.f32(b)];
      const o32 = bufs.f32(N * Cout), o16 = eng.allocBf16(N * Cout);
      bufs.adopt(o16);
      eng.matmulFwd(o32, xp, wp, bp, N, Cin, Cout);
      eng.matmulFwd(o16, xp, wp, bp, N, Cin, Cout);
      return ulpDistance(download16(eng, o16, N * Cout), bf16Bits(bufs.get(o32, N * Cout)));
    });
    // Which way the CUDA engine wrote bf16 outputs so far (le_device_info; none on the CPU).
    const d = eng.deviceInfo();
    const ways = d.bf16OutLt === undefined
      ? ""
      : `; bf16 outputs so far: ${d.bf16OutLt} by cuBLASLt, ${d.bf16OutRounded} by a pass`;
    rows.push(checkRow(
      "bf16 storage",
      `matmul fwd [${N}, ${Cin}] x [${Cout}, ${Cin}]^T + bias into bf16: its fp32 output rounded`,
      precision,
      mm,
      1,
      `bf16 steps from the fp32 output rounded to nearest${ways}`,
    ));
    for (const c of BF16_ATTENTION_CASES) {
      const { differ, n } = attentionCase(eng, c, seed);
      const heads = c.NKV ? `${c.NH} heads on ${c.NKV}` : `${c.NH} heads`;
      rows.push(checkRow(
        "bf16 storage",
        `attention (stats${c.NKV ? ", grouped" : ""}) C ${c.C}, ${heads} of ${
          c.C / c.NH
        }: qkv and past in bf16 storage, the bits of fp32 buffers of the same values`,
        precision,
        differ,
        0,
        `${differ} of ${n} values differ (out, stats, dqkv, dpast)`,
      ));
    }
    // Offsets into the blocks: 0, aligned for every vector load; 1, the element-wise kernels;
    // 4, bf16 at 8 bytes (its vector loads' alignment, not 16).
    const where = ["aligned", "one element off alignment", "four elements in"];
    for (const [k, shift] of [0, 1, 4].entries()) {
      const { differ, n } = geluCase(eng, rng, shift);
      rows.push(checkRow(
        "bf16 storage",
        `GELU ${where[k]}: inp in bf16 storage (forward, backward added and overwriting, left ` +
          "to the matmul backward, hinted before a matmul), the bits of an fp32 buffer of the " +
          "same values",
        precision,
        differ,
        0,
        `${differ} of ${n} values differ`,
      ));
    }
    // Rows 5 apart (overlapping) copied into rows 17 apart, two batches: bits as stored.
    const [nb, r, cols] = [2, 9, 13];
    const src = bf16Bits(randn(rng, nb * r * 5 + cols));
    const copied = withBufs(eng, (bufs) => {
      const s = bf16Buf(eng, bufs, src);
      const d = bf16Buf(eng, bufs, new Uint16Array(nb * r * 17 + cols));
      eng.copyRows(eng.offset(d, 2 * 3), s, nb, r, cols, r * 17, 17, r * 5, 5, false);
      return download16(eng, d, nb * r * 17 + cols);
    });
    const want = new Uint16Array(nb * r * 17 + cols);
    for (let bb = 0; bb < nb; bb++) {
      for (let i = 0; i < r; i++) {
        for (let j = 0; j < cols; j++) {
          want[3 + bb * r * 17 + i * 17 + j] = src[bb * r * 5 + i * 5 + j];
        }
      }
    }
    let bad = 0;
    for (let i = 0; i < want.length; i++) bad += copied[i] !== want[i] ? 1 : 0;
    rows.push(checkRow(
      "bf16 storage",
      "copy_rows between bf16 blocks: rows as stored",
      precision,
      bad,
      0,
      `${bad} of ${want.length} values differ`,
    ));
  } finally {
    eng.setPrecision(0);
  }
  return rows;
}

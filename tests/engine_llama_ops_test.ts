// The Llama-family ops of the CPU engine (RMSNorm, rotary embeddings, SwiGLU, grouped-query
// attention) against float64 references (forward) and central finite differences through the
// engine's own forward (backward), as tests/engine_ops_test.ts does for the GPT-2 ops.
// Each gradient check also records its worst error relative to the gradient's scale; the last
// test prints that table.
import { type Engine, openEngine, type Ptr } from "../engine/ffi.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  assertClose,
  assertGrad,
  dotLoss,
  finiteDiff,
  noiseScale,
  Pool,
  Rng,
  U32,
} from "./_engine_ref.ts";

const eng: Engine = openEngine({ quiet: true });
const H = 0.1;
const table: { name: string; n: number; maxAbs: number; rel: number }[] = [];

function withPool(fn: (pool: Pool) => void): () => void {
  return () => {
    const pool = new Pool(eng);
    try {
      fn(pool);
    } finally {
      pool.free();
    }
  };
}

/** assertGrad, and a row of the table: max |analytic - fd| and that over max |fd|. */
function checkGrad(
  name: string,
  analytic: ArrayLike<number>,
  fd: { fd: Float64Array; step: Float64Array },
  S: number,
  depth: number,
): void {
  assertGrad(name, analytic, fd, S, depth);
  let maxAbs = 0, scale = 0;
  for (let i = 0; i < analytic.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(analytic[i] - fd.fd[i]));
    scale = Math.max(scale, Math.abs(fd.fd[i]));
  }
  table.push({ name, n: analytic.length, maxAbs, rel: scale > 0 ? maxAbs / scale : 0 });
}

// ---- RMSNorm -------------------------------------------------------------------------------

function rmsnormRef(x: ArrayLike<number>, w: ArrayLike<number>, N: number, C: number, eps: number) {
  const out = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[n * C + c] ** 2;
    const rs = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) out[n * C + c] = x[n * C + c] * rs * w[c];
  }
  return out;
}

Deno.test(
  "rmsnorm: forward matches float64, backward matches finite differences and accumulates",
  withPool((pool) => {
    const rng = new Rng(21);
    for (const [N, C, eps] of [[1, 3, 1e-5], [3, 7, 1e-6], [2, 70, 1e-5]]) {
      const x = rng.normals(N * C), w = rng.normals(C), r = rng.normals(N * C);
      const px = pool.f32(x), pw = pool.f32(w), pr = pool.f32(r);
      const out = pool.f32(N * C), rstd = pool.f32(N);
      eng.rmsnormFwd(out, rstd, px, pw, N, C, eps);
      const ref = rmsnormRef(x, w, N, C, eps);
      assertClose(`rmsnorm fwd ${N}x${C}`, pool.read(out, N * C), ref, 1e-6, 1e-5);
      const loss = () => {
        eng.rmsnormFwd(out, rstd, px, pw, N, C, eps);
        return dotLoss(pool.read(out, N * C), r);
      };
      loss();
      const S = noiseScale(pool.read(out, N * C), r);
      const dx = pool.f32(N * C), dw = pool.f32(C);
      eng.rmsnormBwd(dx, dw, pr, px, pw, rstd, N, C);
      const gx = pool.read(dx, N * C), gw = pool.read(dw, C);
      const depth = 2 * C + 8;
      checkGrad(`rmsnorm dinp ${N}x${C}`, gx, finiteDiff(eng, x, px, loss, H), S, depth);
      checkGrad(`rmsnorm dw ${N}x${C}`, gw, finiteDiff(eng, w, pw, loss, H), S, depth);
      loss();
      eng.rmsnormBwd(dx, dw, pr, px, pw, rstd, N, C);
      assertClose("rmsnorm dinp twice", pool.read(dx, N * C), gx.map((v) => 2 * v), 0, 4 * U32);
      assertClose("rmsnorm dw twice", pool.read(dw, C), gw.map((v) => 2 * v), 0, 4 * U32);
      // nullable outputs
      eng.rmsnormFwd(out, null, px, pw, N, C, eps);
      eng.rmsnormBwd(null, dw, pr, px, pw, rstd, N, C);
    }
    const p = pool.f32(4);
    assertThrows(() => eng.rmsnormFwd(p, null, p, p, 1, 4, 0), Error, "eps");
  }),
);

Deno.test(
  "residual rmsnorm: the bits of add then rmsnorm, with resid apart or in place of either input",
  withPool((pool) => {
    const rng = new Rng(22);
    for (const [N, C, eps] of [[1, 3, 1e-5], [3, 7, 1e-6], [5, 70, 1e-5]]) {
      const a = rng.normals(N * C), b = rng.normals(N * C), w = rng.normals(C);
      const pa = pool.f32(a), pb = pool.f32(b), pw = pool.f32(w);
      const sum = pool.f32(N * C), want = pool.f32(N * C), wantRstd = pool.f32(N);
      eng.add(sum, pa, pb, N * C);
      eng.rmsnormFwd(want, wantRstd, sum, pw, N, C, eps);
      const resid = pool.f32(N * C), out = pool.f32(N * C), rstd = pool.f32(N);
      eng.residualRmsnormFwd(resid, out, rstd, pa, pb, pw, N, C, eps);
      const what = `${N}x${C}`;
      assertEquals(pool.read(resid, N * C), pool.read(sum, N * C), `resid ${what}`);
      assertEquals(pool.read(out, N * C), pool.read(want, N * C), `out ${what}`);
      assertEquals(pool.read(rstd, N), pool.read(wantRstd, N), `rstd ${what}`);
      for (const inPlace of ["a", "b"]) {
        const x = pool.f32(inPlace === "a" ? a : b), y = inPlace === "a" ? pb : pa;
        eng.residualRmsnormFwd(
          x,
          out,
          null,
          inPlace === "a" ? x : y,
          inPlace === "a" ? y : x,
          pw,
          N,
          C,
          eps,
        );
        assertEquals(pool.read(x, N * C), pool.read(sum, N * C), `resid in place of ${inPlace}`);
        assertEquals(pool.read(out, N * C), pool.read(want, N * C), `out, in place of ${inPlace}`);
      }
    }
    const p = pool.f32(4);
    assertThrows(() => eng.residualRmsnormFwd(p, p, null, p, p, p, 1, 4, 0), Error, "eps");
    assertThrows(
      () => eng.residualRmsnormFwd(p, p, null, p, null, p, 1, 4, 1e-5),
      Error,
      "le_residual_rmsnorm_fwd",
    );
  }),
);

// ---- rotary embeddings ---------------------------------------------------------------------

function ropeRef(
  x: ArrayLike<number>,
  pos: ArrayLike<number>,
  invFreq: Float32Array,
  N: number,
  nh: number,
  HS: number,
  rs: number,
) {
  const out = Float64Array.from(x);
  const half = HS / 2;
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(pos[n] * invFreq[i]);
      const c = Math.cos(a), s = Math.sin(a);
      for (let h = 0; h < nh; h++) {
        const o = n * rs + h * HS;
        const x1 = x[o + i], x2 = x[o + i + half];
        out[o + i] = x1 * c - x2 * s;
        out[o + i + half] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}

Deno.test(
  "rope: forward matches float64, inverse undoes it, and inverse is the backward",
  withPool((pool) => {
    const rng = new Rng(22);
    for (const [N, nh, HS, extra] of [[1, 1, 2, 0], [5, 3, 8, 5], [4, 2, 6, 0]]) {
      const rs = nh * HS + extra;
      const x = rng.normals(N * rs);
      const pos = Array.from({ length: N }, (_, n) => (n * 37) % 61);
      const invFreq = Float32Array.from(
        { length: HS / 2 },
        (_, i) => 1 / Math.pow(500000, (2 * i) / HS),
      );
      const px = pool.f32(x), pp = pool.i32(pos), pf = pool.f32(invFreq);
      eng.rope(px, pp, pf, N, nh, HS, rs, false);
      const y = pool.read(px, N * rs);
      assertClose(`rope fwd ${N}x${nh}x${HS}`, y, ropeRef(x, pos, invFreq, N, nh, HS, rs), 1e-5);
      // columns beyond nh*HS are untouched
      for (let n = 0; n < N; n++) {
        for (let c = nh * HS; c < rs; c++) assertEquals(y[n * rs + c], x[n * rs + c]);
      }
      eng.rope(px, pp, pf, N, nh, HS, rs, true);
      assertClose("rope inverse", pool.read(px, N * rs), x, 1e-5);
      // Backward: loss = r . rope(x); d loss / dx = rope^-1(r), by finite differences.
      const r = rng.normals(N * rs);
      const work = pool.f32(N * rs);
      const loss = () => {
        eng.copy(work, px, N * rs * 4);
        eng.rope(work, pp, pf, N, nh, HS, rs, false);
        return dotLoss(pool.read(work, N * rs), r);
      };
      eng.upload(px, x);
      const S = noiseScale(ropeRef(x, pos, invFreq, N, nh, HS, rs), r);
      const g = pool.f32(r);
      eng.rope(g, pp, pf, N, nh, HS, rs, true);
      checkGrad(
        `rope dx ${N}x${nh}x${HS}`,
        pool.read(g, N * rs),
        finiteDiff(eng, x, px, loss, H),
        S,
        8,
      );
    }
    const p = pool.f32(8), bad = pool.i32([-1]), f = pool.f32(2);
    assertThrows(() => eng.rope(p, bad, f, 1, 1, 4, 4, false), Error, "negative");
    assertThrows(() => eng.rope(p, bad, f, 1, 1, 3, 4, false), Error, "even");
  }),
);

// ---- SwiGLU --------------------------------------------------------------------------------

Deno.test(
  "swiglu: forward matches float64, backward matches finite differences and accumulates",
  withPool((pool) => {
    const rng = new Rng(23);
    for (const [N, I] of [[1, 1], [3, 5], [4, 33]]) {
      const x = rng.normals(N * 2 * I).map((v) => 2 * v), r = rng.normals(N * I);
      const px = pool.f32(x), out = pool.f32(N * I);
      eng.swigluFwd(out, px, N, I);
      const ref = new Float64Array(N * I);
      for (let n = 0; n < N; n++) {
        for (let i = 0; i < I; i++) {
          const g = x[n * 2 * I + i], u = x[n * 2 * I + I + i];
          ref[n * I + i] = (g / (1 + Math.exp(-g))) * u;
        }
      }
      assertClose(`swiglu fwd ${N}x${I}`, pool.read(out, N * I), ref, 1e-6, 1e-5);
      const loss = () => {
        eng.swigluFwd(out, px, N, I);
        return dotLoss(pool.read(out, N * I), r);
      };
      const S = noiseScale(ref, r);
      const dx = pool.f32(N * 2 * I);
      eng.swigluBwd(dx, px, pool.f32(r), N, I);
      const gx = pool.read(dx, N * 2 * I);
      checkGrad(`swiglu dinp ${N}x${I}`, gx, finiteDiff(eng, x, px, loss, H), S, 16);
      eng.swigluBwd(dx, px, pool.f32(r), N, I);
      assertClose("swiglu twice", pool.read(dx, N * 2 * I), gx.map((v) => 2 * v), 0, 4 * U32);
    }
  }),
);

// ---- grouped-query attention ---------------------------------------------------------------

interface GqaCase {
  B: number;
  Tq: number;
  Tp: number;
  C: number;
  NH: number;
  NKV: number;
  layout: "qkv" | "cache";
  valid?: number[];
}

/** float64 reference, as lotus_engine.h states le_attention_gqa_fwd. */
function gqaRef(
  qkv: ArrayLike<number>,
  past: { buf: ArrayLike<number>; off: number; bs: number; rs: number } | null,
  valid: number[] | undefined,
  c: GqaCase,
) {
  const { B, Tq, Tp, C, NH, NKV } = c;
  const HS = C / NH, Ckv = NKV * HS, W = C + 2 * Ckv, Tk = Tp + Tq, G = NH / NKV;
  const out = new Float64Array(B * Tq * C);
  const kv = (b: number, j: number, kh: number, d: number, isV: boolean) =>
    j < Tp
      ? past!.buf[past!.off + b * past!.bs + j * past!.rs + (isV ? Ckv : 0) + kh * HS + d]
      : qkv[(b * Tq + j - Tp) * W + C + (isV ? Ckv : 0) + kh * HS + d];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const kh = Math.floor(h / G);
      for (let i = 0; i < Tq; i++) {
        const s: number[] = [];
        for (let j = 0; j <= Tp + i; j++) {
          if (valid && !valid[b * Tk + j]) {
            s.push(-Infinity);
            continue;
          }
          let dot = 0;
          for (let d = 0; d < HS; d++) {
            dot += qkv[(b * Tq + i) * W + h * HS + d] * kv(b, j, kh, d, false);
          }
          s.push(dot / Math.sqrt(HS));
        }
        const m = Math.max(...s);
        if (m === -Infinity) continue;
        const z = s.reduce((a, v) => a + Math.exp(v - m), 0);
        for (let j = 0; j < s.length; j++) {
          const p = Math.exp(s[j] - m) / z;
          for (let d = 0; d < HS; d++) {
            out[(b * Tq + i) * C + h * HS + d] += p * kv(b, j, kh, d, true);
          }
        }
      }
    }
  }
  return out;
}

function setupGqa(pool: Pool, rng: Rng, c: GqaCase) {
  const { B, Tq, Tp, C, NH, NKV } = c;
  const HS = C / NH, Ckv = NKV * HS, W = C + 2 * Ckv;
  const qkv = rng.normals(B * Tq * W);
  let past: { buf: Float32Array; off: number; bs: number; rs: number } | null = null;
  let pastBuf: Ptr = null, kvPast: Ptr = null;
  if (Tp > 0) {
    past = c.layout === "qkv"
      ? { buf: rng.normals(B * Tp * W), off: C, bs: Tp * W, rs: W }
      : { buf: rng.normals(B * (Tp + 2) * 2 * Ckv), off: 0, bs: (Tp + 2) * 2 * Ckv, rs: 2 * Ckv };
    pastBuf = pool.f32(past.buf);
    kvPast = eng.offset(pastBuf, 4 * past.off);
  }
  const Tk = Tp + Tq;
  const out = pool.f32(B * Tq * C), att = pool.f32(B * NH * Tq * Tk);
  const pqkv = pool.f32(qkv);
  const valid = c.valid ? pool.u8(c.valid) : null;
  const fwd = () =>
    eng.attentionGqaFwd(
      out,
      att,
      pqkv,
      kvPast,
      valid,
      B,
      Tq,
      Tp,
      C,
      NH,
      NKV,
      past?.bs ?? 0,
      past?.rs ?? 0,
    );
  return { qkv, past, pastBuf, kvPast, out, att, pqkv, valid, fwd, Tk, W };
}

const GQA_CASES: GqaCase[] = [
  { B: 1, Tq: 3, Tp: 0, C: 8, NH: 4, NKV: 2, layout: "qkv" },
  {
    B: 2,
    Tq: 3,
    Tp: 4,
    C: 8,
    NH: 4,
    NKV: 1,
    layout: "qkv",
    valid: [1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1],
  },
  { B: 2, Tq: 2, Tp: 3, C: 12, NH: 6, NKV: 2, layout: "cache" },
  // Tq >= 8: the transposed-tile path
  { B: 1, Tq: 9, Tp: 2, C: 8, NH: 4, NKV: 2, layout: "qkv" },
  { B: 2, Tq: 3, Tp: 2, C: 6, NH: 2, NKV: 2, layout: "qkv" },
];

Deno.test(
  "attention_gqa_fwd matches float64; with NKV = NH it is le_attention_fwd exactly",
  withPool((pool) => {
    const rng = new Rng(24);
    for (const c of GQA_CASES) {
      const s = setupGqa(pool, rng, c);
      s.fwd();
      const got = pool.read(s.out, c.B * c.Tq * c.C);
      assertClose(
        `gqa fwd ${JSON.stringify(c)}`,
        got,
        gqaRef(s.qkv, s.past, c.valid, c),
        2e-6,
        1e-5,
      );
      if (c.NKV === c.NH) {
        const out2 = pool.f32(c.B * c.Tq * c.C), att2 = pool.f32(c.B * c.NH * c.Tq * s.Tk);
        eng.attentionFwd(
          out2,
          att2,
          s.pqkv,
          s.kvPast,
          s.valid,
          c.B,
          c.Tq,
          c.Tp,
          c.C,
          c.NH,
          s.past?.bs ?? 0,
          s.past?.rs ?? 0,
        );
        assertEquals(pool.read(out2, c.B * c.Tq * c.C), got);
      }
    }
    const p = pool.f32(64);
    assertThrows(
      () => eng.attentionGqaFwd(p, p, p, null, null, 1, 1, 0, 6, 3, 2, 0, 0),
      Error,
      "NKV",
    );
  }),
);

Deno.test(
  "attention_gqa_bwd: finite differences for qkv and the past (both layouts), with masks",
  withPool((pool) => {
    const rng = new Rng(25);
    for (const c of GQA_CASES) {
      const name = `gqa bwd ${JSON.stringify({ ...c, valid: c.valid ? "masked" : undefined })}`;
      const s = setupGqa(pool, rng, c);
      const nOut = c.B * c.Tq * c.C;
      const r = rng.normals(nOut);
      const loss = () => {
        s.fwd();
        return dotLoss(pool.read(s.out, nOut), r);
      };
      loss();
      const S = noiseScale(pool.read(s.out, nOut), r);
      const dqkv = pool.f32(s.qkv.length);
      const dpast = s.past ? pool.f32(s.past.buf.length) : null;
      const dkv = dpast ? eng.offset(dpast, 4 * s.past!.off) : null;
      eng.attentionGqaBwd(
        dqkv,
        dkv,
        pool.f32(r),
        s.att,
        s.pqkv,
        s.kvPast,
        c.B,
        c.Tq,
        c.Tp,
        c.C,
        c.NH,
        c.NKV,
        s.past?.bs ?? 0,
        s.past?.rs ?? 0,
      );
      const depth = 4 * (c.C / c.NH + s.Tk) * (c.NH / c.NKV) + 16;
      const gq = pool.read(dqkv, s.qkv.length);
      checkGrad(`${name} dqkv`, gq, finiteDiff(eng, s.qkv, s.pqkv, loss, H), S, depth);
      if (s.past) {
        const gp = pool.read(dpast!, s.past.buf.length);
        checkGrad(`${name} dpast`, gp, finiteDiff(eng, s.past.buf, s.pastBuf, loss, H), S, depth);
      }
      if (c.NKV === c.NH) {
        loss();
        const d2 = pool.f32(s.qkv.length);
        const dp2 = s.past ? pool.f32(s.past.buf.length) : null;
        eng.attentionBwd(
          d2,
          dp2 ? eng.offset(dp2, 4 * s.past!.off) : null,
          pool.f32(r),
          s.att,
          s.pqkv,
          s.kvPast,
          c.B,
          c.Tq,
          c.Tp,
          c.C,
          c.NH,
          s.past?.bs ?? 0,
          s.past?.rs ?? 0,
        );
        assertEquals(pool.read(d2, s.qkv.length), gq);
      }
    }
  }),
);

Deno.test(
  "attention_gqa_stats_*: the same bits as attention_gqa_* (out, dqkv, dpast); with NKV = NH, " +
    "le_attention_stats_*'s",
  withPool((pool) => {
    const rng = new Rng(26);
    // The cases above, a dead query row (entry 0's only key masked) and a past shared by the batch.
    const cases: GqaCase[] = [
      ...GQA_CASES,
      { B: 2, Tq: 2, Tp: 0, C: 8, NH: 4, NKV: 2, layout: "qkv", valid: [0, 1, 1, 1] },
      { B: 2, Tq: 9, Tp: 3, C: 12, NH: 6, NKV: 3, layout: "qkv", valid: undefined },
    ];
    for (const c of cases) {
      const name = JSON.stringify({ ...c, valid: c.valid ? "masked" : undefined });
      const s = setupGqa(pool, rng, c);
      const nOut = c.B * c.Tq * c.C, bs = s.past?.bs ?? 0, rs = s.past?.rs ?? 0;
      s.fwd();
      const dout = pool.f32(rng.normals(nOut));
      const grads = (stats: boolean, mha: boolean) => {
        const out = pool.f32(nOut), st = pool.f32(c.B * c.NH * c.Tq * 2);
        const dqkv = pool.f32(s.qkv.length);
        const dpast = s.past ? pool.f32(s.past.buf.length) : null;
        const dkv = dpast ? eng.offset(dpast, 4 * s.past!.off) : null;
        const { B, Tq, Tp, C, NH, NKV } = c;
        if (!stats) {
          s.fwd();
          eng.attentionGqaBwd(
            dqkv,
            dkv,
            dout,
            s.att,
            s.pqkv,
            s.kvPast,
            B,
            Tq,
            Tp,
            C,
            NH,
            NKV,
            bs,
            rs,
          );
          return { out: pool.read(s.out, nOut), dqkv: pool.read(dqkv, s.qkv.length), dpast };
        }
        if (mha) {
          eng.attentionStatsFwd(out, st, s.pqkv, s.kvPast, s.valid, B, Tq, Tp, C, NH, bs, rs);
          eng.attentionStatsBwd(
            dqkv,
            dkv,
            dout,
            out,
            st,
            s.valid,
            s.pqkv,
            s.kvPast,
            B,
            Tq,
            Tp,
            C,
            NH,
            bs,
            rs,
          );
        } else {
          eng.attentionGqaStatsFwd(
            out,
            st,
            s.pqkv,
            s.kvPast,
            s.valid,
            B,
            Tq,
            Tp,
            C,
            NH,
            NKV,
            bs,
            rs,
          );
          eng.attentionGqaStatsBwd(
            dqkv,
            dkv,
            dout,
            out,
            st,
            s.valid,
            s.pqkv,
            s.kvPast,
            B,
            Tq,
            Tp,
            C,
            NH,
            NKV,
            bs,
            rs,
          );
        }
        return { out: pool.read(out, nOut), dqkv: pool.read(dqkv, s.qkv.length), dpast };
      };
      const att = grads(false, false), gst = grads(true, false);
      assert(att.dqkv.some((v) => v !== 0), `${name}: gradients are all zero`);
      assertEquals(gst.out, att.out, `${name} out`);
      assertEquals(gst.dqkv, att.dqkv, `${name} dqkv`);
      if (att.dpast) {
        assertEquals(
          pool.read(gst.dpast!, s.past!.buf.length),
          pool.read(att.dpast, s.past!.buf.length),
          `${name} dpast`,
        );
      }
      if (c.NKV === c.NH) {
        const mha = grads(true, true);
        assertEquals(mha.out, gst.out, `${name} out (stats)`);
        assertEquals(mha.dqkv, gst.dqkv, `${name} dqkv (stats)`);
      }
    }
  }),
);

Deno.test("finite-difference table of the Llama ops", () => {
  assert(table.length > 0, "the gradient tests ran first");
  const rows = table.map((t) =>
    `${t.name.padEnd(64)} n=${String(t.n).padStart(4)}  max|a-fd|=${
      t.maxAbs.toExponential(2)
    }  rel=${t.rel.toExponential(2)}`
  );
  console.log(rows.join("\n"));
});

// Every op of the CPU engine against float64 references (forward) and central finite
// differences through the engine's own forward (backward), plus accumulate semantics,
// determinism and error handling. Tolerances are derived in tests/_engine_ref.ts.
import { type Engine, EngineError, openEngine, type Ptr } from "../engine/ffi.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  type AdamState,
  adamwRef,
  assertClose,
  assertGrad,
  attentionRef,
  dotLoss,
  dropKeep,
  finiteDiff,
  gamma,
  geluRef,
  layernormRef,
  matmulBwdRef,
  matmulRef,
  noiseScale,
  type PastLayout,
  Pool,
  Rng,
  U32,
  uniforms,
  xentRef,
} from "./_engine_ref.ts";

const eng: Engine = openEngine({ quiet: true });
// Not part of the ABI: switches the CPU engine's matmuls to the naive triple loops (the
// oracle). dlopen of the same file returns the same library, so this flips the engine's flag.
const hook = Deno.dlopen(eng.libPath, {
  le_cpu_set_reference: { parameters: ["i32"], result: "i32" },
});

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

const H = 0.1; // finite-difference step (inputs are O(1); see finiteDiff)

// ---------------------------------------------------------------------------------------------
// memory and elementwise
// ---------------------------------------------------------------------------------------------

Deno.test("memory: zero-filled alloc, views with byteOffset, copy, zero, offset, bytesInUse", () => {
  const before = eng.bytesInUse();
  const small = eng.alloc(40), big = eng.alloc(3 << 20); // big takes the mmap path
  assertEquals(eng.bytesInUse() - before, 40 + (3 << 20));
  const zb = new Uint8Array(3 << 20).fill(7);
  eng.download(zb, big);
  assert(zb.every((v) => v === 0), "big alloc is zero-filled");
  const zs = new Float32Array(10).fill(1);
  eng.download(zs, small);
  assert(zs.every((v) => v === 0), "small alloc is zero-filled");

  const host = Float32Array.from({ length: 16 }, (_, i) => i);
  eng.upload(small, host.subarray(3, 13)); // byteOffset 12
  const back = new Float32Array(16).fill(-1);
  eng.download(back.subarray(2, 12), small); // byteOffset 8
  assertEquals([...back], [-1, -1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, -1, -1, -1, -1]);
  const dv = new DataView(new ArrayBuffer(12), 4, 8);
  eng.download(dv, eng.offset(small, 4));
  assertEquals([dv.getFloat32(0, true), dv.getFloat32(4, true)], [4, 5]);

  eng.copy(eng.offset(big, 100), small, 40);
  eng.zero(eng.offset(big, 104), 8);
  const c = new Float32Array(10);
  eng.download(c, eng.offset(big, 100));
  assertEquals([...c], [3, 0, 0, 6, 7, 8, 9, 10, 11, 12]);

  assertEquals(eng.offset(small, 12)! - small!, 12n);
  assertEquals(eng.offset(eng.offset(small, 12), -12), small);
  assertEquals(eng.offset(null, 0), null);
  assertEquals(eng.offset(null, 4096), 4096n);
  const high = 2n ** 47n + 5n; // a device-like address
  assertEquals(eng.offset(high, 3), 2n ** 47n + 8n);

  eng.free(small);
  eng.free(big);
  eng.free(null);
  assertEquals(eng.bytesInUse(), before);
});

Deno.test(
  "add and scale are exact fp32, in place, on tiny and parallel sizes",
  withPool((pool) => {
    const rng = new Rng(1);
    for (const n of [1, 37, 100_003]) {
      const a = rng.normals(n), b = rng.normals(n);
      const pa = pool.f32(a), pb = pool.f32(b), out = pool.f32(n);
      eng.add(out, pa, pb, n);
      const got = pool.read(out, n);
      for (let i = 0; i < n; i++) assert(got[i] === Math.fround(a[i] + b[i]), `add[${i}]`);
      eng.add(pa, pa, pb, n); // out aliases a
      assertEquals(pool.read(pa, n), got);
      eng.scale(pb, -1.5, n);
      const sc = pool.read(pb, n);
      for (let i = 0; i < n; i++) assert(sc[i] === Math.fround(b[i] * -1.5), `scale[${i}]`);
    }
  }),
);

Deno.test(
  "copy_rows: strided copy, accumulate, zero strides",
  withPool((pool) => {
    const rng = new Rng(2);
    const nb = 2, rows = 3, cols = 5, dBs = 40, dRs = 11, sBs = 20, sRs = 6;
    const src = rng.normals(60), dst0 = rng.normals(90);
    const ps = pool.f32(src), pd = pool.f32(dst0);
    const expectCopy = Float32Array.from(dst0);
    for (let b = 0; b < nb; b++) {
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          expectCopy[b * dBs + r * dRs + c] = src[b * sBs + r * sRs + c];
        }
      }
    }
    eng.copyRows(pd, ps, nb, rows, cols, dBs, dRs, sBs, sRs, false);
    assertEquals(pool.read(pd, 90), expectCopy);
    eng.copyRows(pd, ps, nb, rows, cols, dBs, dRs, sBs, sRs, true);
    const acc = pool.read(pd, 90);
    for (let i = 0; i < 90; i++) {
      const inRegion = expectCopy[i] !== dst0[i] || acc[i] !== expectCopy[i];
      assert(acc[i] === (inRegion ? Math.fround(2 * expectCopy[i]) : dst0[i]), `acc[${i}]`);
    }
    // Zero batch stride on both sides: every b adds the same src rows into the same dst rows.
    const pz = pool.f32(dst0);
    eng.copyRows(pz, ps, 3, rows, cols, 0, dRs, 0, sRs, true);
    const z = pool.read(pz, 90);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        let e = dst0[r * dRs + c];
        for (let b = 0; b < 3; b++) e = Math.fround(e + src[r * sRs + c]);
        assert(z[r * dRs + c] === e, `zero-stride accumulate (${r},${c})`);
      }
    }
  }),
);

// ---------------------------------------------------------------------------------------------
// embedding
// ---------------------------------------------------------------------------------------------

Deno.test(
  "embed_fwd: token + position rows, ids < 0 and wpe = NULL",
  withPool((pool) => {
    const rng = new Rng(3);
    for (const [N, C, V, P] of [[1, 3, 2, 1], [7, 5, 11, 9], [300, 37, 50, 310]]) {
      const wte = rng.normals(V * C), wpe = rng.normals(P * C);
      const ids = Array.from({ length: N }, (_, n) => (n % 4 === 3 ? -1 : rng.below(V)));
      const pos = Array.from({ length: N }, () => rng.below(P));
      const out = pool.f32(N * C), out2 = pool.f32(N * C);
      const pi = pool.i32(ids), pp = pool.i32(pos), pte = pool.f32(wte), ppe = pool.f32(wpe);
      eng.embedFwd(out, pi, pp, pte, ppe, N, C);
      eng.embedFwd(out2, pi, null, pte, null, N, C);
      const got = pool.read(out, N * C), got2 = pool.read(out2, N * C);
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < C; c++) {
          const te = ids[n] >= 0 ? wte[ids[n] * C + c] : 0;
          assert(got[n * C + c] === Math.fround(te + wpe[pos[n] * C + c]), `out[${n},${c}]`);
          assert(got2[n * C + c] === te, `no-wpe out[${n},${c}]`);
        }
      }
    }
  }),
);

Deno.test(
  "embed_bwd: finite differences for wte and wpe, repeated ids, nullable gradients",
  withPool((pool) => {
    const rng = new Rng(4);
    const N = 7, C = 5, V = 6, P = 8;
    const wte = rng.normals(V * C), wpe = rng.normals(P * C), r = rng.normals(N * C);
    const ids = [2, 5, 2, -1, 0, 2, 5], pos = [0, 1, 2, 3, 4, 1, 7];
    const pi = pool.i32(ids), pp = pool.i32(pos), pte = pool.f32(wte), ppe = pool.f32(wpe);
    const out = pool.f32(N * C), pr = pool.f32(r);
    const loss = () => {
      eng.embedFwd(out, pi, pp, pte, ppe, N, C);
      return dotLoss(pool.read(out, N * C), r);
    };
    loss();
    const S = noiseScale(pool.read(out, N * C), r);
    const dwte = pool.f32(V * C), dwpe = pool.f32(P * C);
    eng.embedBwd(dwte, dwpe, pr, pi, pp, N, C);
    assertGrad("dwte", pool.read(dwte, V * C), finiteDiff(eng, wte, pte, loss, H), S, 4);
    assertGrad("dwpe", pool.read(dwpe, P * C), finiteDiff(eng, wpe, ppe, loss, H), S, 4);
    // Accumulate: a second call doubles; NULL skips that gradient.
    const g1 = pool.read(dwte, V * C), p1 = pool.read(dwpe, P * C);
    eng.embedBwd(dwte, null, pr, pi, pp, N, C);
    assertClose("dwte twice", pool.read(dwte, V * C), g1.map((x) => 2 * x), 0, 4 * U32);
    assertEquals(pool.read(dwpe, P * C), p1);
  }),
);

// ---------------------------------------------------------------------------------------------
// LayerNorm
// ---------------------------------------------------------------------------------------------

Deno.test(
  "layernorm_fwd and residual_layernorm_fwd match float64",
  withPool((pool) => {
    const rng = new Rng(5);
    for (const [N, C] of [[1, 3], [5, 37], [67, 300]]) {
      const x = rng.normals(N * C, 2).map((v) => v + 3), w = rng.normals(C), b = rng.normals(C);
      const px = pool.f32(x), pw = pool.f32(w), pb = pool.f32(b);
      const out = pool.f32(N * C), mean = pool.f32(N), rstd = pool.f32(N);
      eng.layernormFwd(out, mean, rstd, px, pw, pb, N, C);
      const ref = layernormRef(x, w, b, N, C);
      const mag = new Float64Array(N * C);
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < C; c++) {
          mag[n * C + c] = (Math.abs(x[n * C + c]) + Math.abs(ref.mean[n])) * ref.rstd[n] *
              Math.abs(w[c]) + Math.abs(b[c]);
        }
      }
      // fp32 ops after double statistics: (x - m) * rs * w + b, each rounded once, plus the
      // rounding of m and rs themselves.
      assertClose(`ln out ${N}x${C}`, pool.read(out, N * C), ref.out, mag.map((m) => 8 * U32 * m));
      assertClose(`ln mean ${N}x${C}`, pool.read(mean, N), ref.mean, 1e-30, 2 * U32);
      assertClose(`ln rstd ${N}x${C}`, pool.read(rstd, N), ref.rstd, 0, 2 * U32);

      // resid = a + b exactly, then the same LayerNorm bit for bit; resid may alias a.
      const a = rng.normals(N * C), a2 = rng.normals(N * C);
      const pa = pool.f32(a), pa2 = pool.f32(a2), resid = pool.f32(N * C);
      const out2 = pool.f32(N * C), mean2 = pool.f32(N), rstd2 = pool.f32(N);
      eng.residualLayernormFwd(resid, out2, mean2, rstd2, pa, pa2, pw, pb, N, C);
      const rs = pool.read(resid, N * C);
      for (let i = 0; i < N * C; i++) assert(rs[i] === Math.fround(a[i] + a2[i]), `resid[${i}]`);
      eng.layernormFwd(out, mean, rstd, resid, pw, pb, N, C);
      assertEquals(pool.read(out2, N * C), pool.read(out, N * C));
      assertEquals(pool.read(rstd2, N), pool.read(rstd, N));
      eng.residualLayernormFwd(pa, out2, null, null, pa, pa2, pw, pb, N, C);
      assertEquals(pool.read(pa, N * C), rs);
    }
  }),
);

Deno.test(
  "layernorm_bwd: finite differences for inp, w, b; accumulates",
  withPool((pool) => {
    const rng = new Rng(6);
    for (const [N, C] of [[1, 3], [3, 7], [2, 33]]) {
      const x = rng.normals(N * C), w = rng.normals(C), b = rng.normals(C), r = rng.normals(N * C);
      const px = pool.f32(x), pw = pool.f32(w), pb = pool.f32(b), pr = pool.f32(r);
      const out = pool.f32(N * C), mean = pool.f32(N), rstd = pool.f32(N);
      const loss = () => {
        eng.layernormFwd(out, mean, rstd, px, pw, pb, N, C);
        return dotLoss(pool.read(out, N * C), r);
      };
      loss();
      const S = noiseScale(pool.read(out, N * C), r);
      const dx = pool.f32(N * C), dw = pool.f32(C), db = pool.f32(C);
      eng.layernormBwd(dx, dw, db, pr, px, pw, mean, rstd, N, C);
      const depth = 2 * C + 8;
      const gx = pool.read(dx, N * C), gw = pool.read(dw, C), gb = pool.read(db, C);
      assertGrad(`ln dinp ${N}x${C}`, gx, finiteDiff(eng, x, px, loss, H), S, depth);
      assertGrad(`ln dw ${N}x${C}`, gw, finiteDiff(eng, w, pw, loss, H), S, depth);
      assertGrad(`ln db ${N}x${C}`, gb, finiteDiff(eng, b, pb, loss, H), S, depth);
      loss(); // restore mean/rstd of the unperturbed input
      eng.layernormBwd(dx, dw, db, pr, px, pw, mean, rstd, N, C);
      assertClose("ln dinp twice", pool.read(dx, N * C), gx.map((v) => 2 * v), 0, 4 * U32);
      assertClose("ln dw twice", pool.read(dw, C), gw.map((v) => 2 * v), 0, 4 * U32);
      assertClose("ln db twice", pool.read(db, C), gb.map((v) => 2 * v), 0, 4 * U32);
    }
  }),
);

// ---------------------------------------------------------------------------------------------
// matmul
// ---------------------------------------------------------------------------------------------

// Shapes: tiny, odd, and one past every block of the GEMM (MC = 120 rows, KC = 256, NC = 2048).
const MATMUL_SHAPES = [[1, 3, 5], [5, 7, 9], [37, 19, 23], [131, 300, 2100]];

Deno.test(
  "matmul_fwd matches float64 within the fp32 summation bound, with and without bias",
  withPool((pool) => {
    const rng = new Rng(7);
    for (const [N, Cin, Cout] of MATMUL_SHAPES) {
      const x = rng.normals(N * Cin), w = rng.normals(Cout * Cin), bias = rng.normals(Cout);
      const px = pool.f32(x), pw = pool.f32(w), pb = pool.f32(bias), out = pool.f32(N * Cout);
      for (const withBias of [true, false]) {
        eng.matmulFwd(out, px, pw, withBias ? pb : null, N, Cin, Cout);
        const ref = matmulRef(x, w, withBias ? bias : null, N, Cin, Cout);
        // Any summation order of K products and a bias: |error| <= gamma_{K+1} sum |terms|.
        assertClose(
          `matmul ${N}x${Cin}x${Cout} bias=${withBias}`,
          pool.read(out, N * Cout),
          ref.out,
          ref.mag.map((m) => gamma(Cin + 2) * m),
        );
      }
    }
  }),
);

Deno.test(
  "matmul_bwd: finite differences (small), float64 reference across blocks (large), nullable",
  withPool((pool) => {
    const rng = new Rng(8);
    for (const [N, Cin, Cout] of [[1, 3, 5], [5, 7, 9]]) {
      const x = rng.normals(N * Cin), w = rng.normals(Cout * Cin), bias = rng.normals(Cout);
      const r = rng.normals(N * Cout);
      const px = pool.f32(x), pw = pool.f32(w), pb = pool.f32(bias), pr = pool.f32(r);
      const out = pool.f32(N * Cout);
      const loss = () => {
        eng.matmulFwd(out, px, pw, pb, N, Cin, Cout);
        return dotLoss(pool.read(out, N * Cout), r);
      };
      loss();
      const S = noiseScale(pool.read(out, N * Cout), r);
      const dx = pool.f32(N * Cin), dw = pool.f32(Cout * Cin), db = pool.f32(Cout);
      eng.matmulBwd(dx, dw, db, pr, px, pw, N, Cin, Cout);
      const gx = pool.read(dx, N * Cin), gw = pool.read(dw, Cout * Cin), gb = pool.read(db, Cout);
      const depth = Cin + 2;
      assertGrad("matmul dinp", gx, finiteDiff(eng, x, px, loss, H), S, depth);
      assertGrad("matmul dw", gw, finiteDiff(eng, w, pw, loss, H), S, depth);
      assertGrad("matmul dbias", gb, finiteDiff(eng, bias, pb, loss, H), S, depth);
      eng.matmulBwd(dx, dw, db, pr, px, pw, N, Cin, Cout);
      assertClose("dinp twice", pool.read(dx, N * Cin), gx.map((v) => 2 * v), 0, 4 * U32);
      assertClose("dw twice", pool.read(dw, Cout * Cin), gw.map((v) => 2 * v), 0, 4 * U32);
      assertClose("dbias twice", pool.read(db, Cout), gb.map((v) => 2 * v), 0, 4 * U32);
    }
    // Large: dinp reduces over Cout = 2070 > KC, dw over N = 290 > KC; Cin and Cout cross
    // NR and NC edges.
    const N = 290, Cin = 150, Cout = 2070;
    const x = rng.normals(N * Cin), w = rng.normals(Cout * Cin), d = rng.normals(N * Cout);
    const px = pool.f32(x), pw = pool.f32(w), pd = pool.f32(d);
    const dx0 = rng.normals(N * Cin), dw0 = rng.normals(Cout * Cin), db0 = rng.normals(Cout);
    const dx = pool.f32(dx0), dw = pool.f32(dw0), db = pool.f32(db0);
    eng.matmulBwd(dx, dw, db, pd, px, pw, N, Cin, Cout);
    const ref = matmulBwdRef(d, x, w, N, Cin, Cout);
    // += into random initial values: one more term in each sum.
    assertClose(
      "large dinp",
      pool.read(dx, N * Cin),
      ref.dinp.map((v, i) => v + dx0[i]),
      ref.magInp.map((m, i) => gamma(Cout + 2) * (m + Math.abs(dx0[i]))),
    );
    assertClose(
      "large dw",
      pool.read(dw, Cout * Cin),
      ref.dw.map((v, i) => v + dw0[i]),
      ref.magW.map((m, i) => gamma(N + 2) * (m + Math.abs(dw0[i]))),
    );
    assertClose(
      "large dbias",
      pool.read(db, Cout),
      ref.dbias.map((v, i) => v + db0[i]),
      1e-4,
      4 * U32,
    );
    // Each gradient is nullable, and the others are then left alone.
    const before = pool.read(dx, N * Cin);
    eng.matmulBwd(null, dw, null, pd, px, null, N, Cin, Cout);
    assertEquals(pool.read(dx, N * Cin), before);
  }),
);

Deno.test(
  "matmul: the blocked GEMM agrees with the naive oracle (le_cpu_set_reference)",
  withPool((pool) => {
    const rng = new Rng(9);
    for (const [N, Cin, Cout] of [[37, 19, 23], [290, 300, 2070]]) {
      const x = rng.normals(N * Cin), w = rng.normals(Cout * Cin), bias = rng.normals(Cout);
      const d = rng.normals(N * Cout);
      const px = pool.f32(x), pw = pool.f32(w), pb = pool.f32(bias), pd = pool.f32(d);
      const run = (reference: boolean) => {
        const prev = hook.symbols.le_cpu_set_reference(reference ? 1 : 0);
        try {
          const out = pool.f32(N * Cout), dx = pool.f32(N * Cin), dw = pool.f32(Cout * Cin);
          eng.matmulFwd(out, px, pw, pb, N, Cin, Cout);
          eng.matmulBwd(dx, dw, null, pd, px, pw, N, Cin, Cout);
          return {
            out: pool.read(out, N * Cout),
            dx: pool.read(dx, N * Cin),
            dw: pool.read(dw, Cout * Cin),
          };
        } finally {
          hook.symbols.le_cpu_set_reference(prev);
        }
      };
      const fast = run(false), slow = run(true);
      const ref = matmulRef(x, w, bias, N, Cin, Cout);
      const bwd = matmulBwdRef(d, x, w, N, Cin, Cout);
      // Both are within gamma * mag of the exact value, so within twice that of each other.
      assertClose("fwd vs oracle", fast.out, slow.out, ref.mag.map((m) => 2 * gamma(Cin + 2) * m));
      assertClose("dinp vs oracle", fast.dx, slow.dx, bwd.magInp.map((m) => 2 * gamma(Cout) * m));
      assertClose("dw vs oracle", fast.dw, slow.dw, bwd.magW.map((m) => 2 * gamma(N) * m));
    }
  }),
);

Deno.test(
  "backward ops with accumulate false overwrite dinp: the bits of a zero-fill and an add, the old values never read",
  withPool((pool) => {
    const rng = new Rng(12);
    // Each op runs twice: into zeros, adding; into NaNs, overwriting.
    const both = (n: number, op: (dinp: Ptr, accumulate: boolean) => void) => {
      const zeros = pool.f32(new Float32Array(n)), nans = pool.f32(new Float32Array(n).fill(NaN));
      op(zeros, true);
      op(nans, false);
      return [pool.read(zeros, n), pool.read(nans, n)];
    };
    for (const [N, Cin, Cout] of [[37, 19, 23], [290, 150, 2070]]) {
      const px = pool.f32(rng.normals(N * Cin)), pw = pool.f32(rng.normals(Cout * Cin));
      const pd = pool.f32(rng.normals(N * Cout));
      for (const reference of [false, true]) {
        const prev = hook.symbols.le_cpu_set_reference(reference ? 1 : 0);
        try {
          const dw = pool.f32(Cout * Cin);
          let first: Float32Array = new Float32Array();
          const [added, put] = both(N * Cin, (dx, acc) => {
            eng.matmulBwd(dx, dw, null, pd, px, pw, N, Cin, Cout, acc);
            if (acc) first = pool.read(dw, Cout * Cin);
          });
          assertEquals(put, added, `matmul ${N}x${Cin}x${Cout}, reference ${reference}`);
          assert(put.every(Number.isFinite));
          // The weight gradient accumulates either way: twice its first value after both.
          assertClose(
            "dw twice",
            pool.read(dw, Cout * Cin),
            first.map((v) => 2 * v),
            1e-5,
            4 * U32,
          );
        } finally {
          hook.symbols.le_cpu_set_reference(prev);
        }
      }
    }
    for (const n of [1, 37, 1001]) {
      const px = pool.f32(uniforms(rng, n, -6, 6)), pd = pool.f32(rng.normals(n));
      const [added, put] = both(n, (dx, acc) => eng.geluBwd(dx, px, pd, n, acc));
      assertEquals(put, added, `gelu ${n}`);
      assert(put.every(Number.isFinite));
    }
    const N = 7, I = 13;
    const px = pool.f32(uniforms(rng, N * 2 * I, -6, 6)), pd = pool.f32(rng.normals(N * I));
    const [added, put] = both(N * 2 * I, (dx, acc) => eng.swigluBwd(dx, px, pd, N, I, acc));
    assertEquals(put, added, "swiglu");
    assert(put.every(Number.isFinite));
  }),
);

// ---------------------------------------------------------------------------------------------
// GELU
// ---------------------------------------------------------------------------------------------

Deno.test(
  "gelu_fwd matches float64; gelu_bwd matches finite differences and accumulates",
  withPool((pool) => {
    const rng = new Rng(10);
    for (const n of [1, 37, 1001]) {
      const x = uniforms(rng, n, -8, 8);
      if (n > 10) x.set([0, -100, -20, 20, 100, -1e-4, 1e-4]);
      const px = pool.f32(x), out = pool.f32(n);
      eng.geluFwd(out, px, n);
      // A few roundings plus the vectorised exp (< 3 ulp) in x sigmoid(2u).
      assertClose(
        `gelu ${n}`,
        pool.read(out, n),
        Array.from(x, geluRef),
        x.map((v) => 16 * U32 * Math.abs(v)),
      );
    }
    const n = 37;
    const x = uniforms(rng, n, -4, 4), r = rng.normals(n);
    const px = pool.f32(x), pr = pool.f32(r), out = pool.f32(n), dx = pool.f32(n);
    const loss = () => {
      eng.geluFwd(out, px, n);
      return dotLoss(pool.read(out, n), r);
    };
    loss();
    // Elementwise: perturbing x[i] reaches out[i] only.
    const S = pool.read(out, n).map((o, i) => Math.abs(o * r[i]));
    eng.geluBwd(dx, px, pr, n);
    const g = pool.read(dx, n);
    assertGrad("gelu dinp", g, finiteDiff(eng, x, px, loss, H), S, 16);
    eng.geluBwd(dx, px, pr, n);
    assertClose("gelu dinp twice", pool.read(dx, n), g.map((v) => 2 * v), 0, 4 * U32);
  }),
);

Deno.test(
  "operandOnly is a no-op on the CPU engine: the next op writes its fp32 output, and any op " +
    "may follow",
  withPool((pool) => {
    const x = uniforms(new Rng(11), 64, -4, 4), px = pool.f32(x);
    const plain = pool.f32(64), hinted = pool.f32(64);
    eng.geluFwd(plain, px, 64);
    eng.operandOnly(hinted);
    eng.geluFwd(hinted, px, 64);
    eng.add(hinted, hinted, plain, 64); // not a matmul: allowed here
    assertEquals(pool.read(hinted, 64), pool.read(plain, 64).map((v) => Math.fround(2 * v)));
  }),
);

// ---------------------------------------------------------------------------------------------
// dropout
// ---------------------------------------------------------------------------------------------

Deno.test(
  "dropout: the documented decisions, scaled by 1/(1-p); backward masks the same elements",
  withPool((pool) => {
    const rng = new Rng(14), n = 5003, seed = 0xDEADBEEFn;
    for (const p of [0, 0.1, 0.5]) {
      const x = rng.normals(n), px = pool.f32(x), mask = pool.u8(new Uint8Array(n));
      eng.dropoutFwd(px, mask, n, p, seed);
      const out = pool.read(px, n), m = pool.readU8(mask, n);
      const scale = Math.fround(1 / Math.fround(1 - Math.fround(p)));
      let kept = 0;
      for (let i = 0; i < n; i++) {
        const keep = dropKeep(seed, i, p);
        assertEquals(m[i], keep ? 1 : 0, `mask[${i}] at p = ${p}`);
        assertEquals(out[i], keep ? Math.fround(x[i] * scale) : 0, `out[${i}] at p = ${p}`);
        kept += m[i];
      }
      // About 1 - p kept: within 5 standard deviations of the binomial.
      const sd = Math.sqrt(n * p * (1 - p));
      assert(Math.abs(kept - n * (1 - p)) <= 5 * sd + 1e-9, `kept ${kept} of ${n} at p = ${p}`);
      const dout = rng.normals(n), pd = pool.f32(dout), dinp = pool.f32(n);
      eng.dropoutBwd(dinp, pd, mask, n, p);
      const g = pool.read(dinp, n);
      for (let i = 0; i < n; i++) {
        assertEquals(g[i], m[i] ? Math.fround(dout[i] * scale) : 0, `dinp[${i}] at p = ${p}`);
      }
    }
    // Another seed drops other elements; the same seed the same ones.
    const a = pool.u8(new Uint8Array(n)), b = pool.u8(new Uint8Array(n));
    const x = pool.f32(n);
    eng.dropoutFwd(x, a, n, 0.5, 1n);
    eng.dropoutFwd(x, b, n, 0.5, 2n);
    const ma = pool.readU8(a, n), mb = pool.readU8(b, n);
    assert(ma.some((v, i) => v !== mb[i]), "seeds 1 and 2 give different masks");
    assertThrows(() => eng.dropoutFwd(x, a, n, 1, 1n), EngineError, "p = 1 must be in [0, 1)");
    const big = pool.f32(n + 1);
    assertThrows(() => eng.dropoutFwd(big, a, n + 1, 0.1, 1n), EngineError, "mask needs");
  }),
);

// ---------------------------------------------------------------------------------------------
// attention
// ---------------------------------------------------------------------------------------------

/** An attention problem on the engine, with its past in one of the two documented layouts. */
interface AttnCase {
  B: number;
  Tq: number;
  Tp: number;
  C: number;
  NH: number;
  layout: "qkv" | "cache";
  /** Tmax for the cache layout. */
  Tmax?: number;
  valid?: number[];
}

function setupAttention(pool: Pool, rng: Rng, c: AttnCase) {
  const { B, Tq, Tp, C, NH } = c;
  const qkv = rng.normals(B * Tq * 3 * C);
  let past: PastLayout | null = null;
  let pastBuf: Ptr = null, kvPast: Ptr = null;
  if (Tp > 0) {
    if (c.layout === "qkv") {
      // The prefix pass's own [B,P,3C] qkv buffer: keys at column C, row stride 3C.
      past = { buf: rng.normals(B * Tp * 3 * C), off: C, bs: Tp * 3 * C, rs: 3 * C };
    } else {
      // A [B,Tmax,2C] K/V cache, filled up to Tp.
      const Tmax = c.Tmax ?? Tp + 3;
      past = { buf: rng.normals(B * Tmax * 2 * C), off: 0, bs: Tmax * 2 * C, rs: 2 * C };
    }
    pastBuf = pool.f32(past.buf);
    kvPast = eng.offset(pastBuf, 4 * past.off);
  }
  const Tk = Tp + Tq;
  const out = pool.f32(B * Tq * C), att = pool.f32(B * NH * Tq * Tk);
  const pqkv = pool.f32(qkv);
  const valid = c.valid ? pool.u8(c.valid) : null;
  const fwd = () =>
    eng.attentionFwd(out, att, pqkv, kvPast, valid, B, Tq, Tp, C, NH, past?.bs ?? 0, past?.rs ?? 0);
  return { qkv, past, pastBuf, kvPast, out, att, pqkv, valid, fwd, Tk };
}

/**
 * For each element of qkv and of the past buffer, the noise scale of assertGrad over the
 * outputs it reaches: the head's columns of its own query row for q, of every later query
 * for k and v, of every query for the past. Elements that no output reads get 0.
 */
function attentionReach(c: AttnCase, past: PastLayout | null, out: Float32Array, r: Float32Array) {
  const { B, Tq, C, NH } = c, HS = C / NH;
  const head = (b: number, h: number, i: number) => {
    let acc = 0;
    for (let d = 0; d < HS; d++) {
      const e = (b * Tq + i) * C + h * HS + d;
      acc += (out[e] * r[e]) ** 2;
    }
    return acc;
  };
  // per (b, h): squared sums of each query row, and their suffix sums over i
  const rows = Array.from({ length: B * NH }, (_, bh) => {
    const b = Math.floor(bh / NH), h = bh % NH;
    const own = Array.from({ length: Tq }, (_, i) => head(b, h, i));
    const suffix = new Float64Array(Tq + 1);
    for (let i = Tq - 1; i >= 0; i--) suffix[i] = suffix[i + 1] + own[i];
    return { own, suffix };
  });
  const sq = new Float64Array(B * Tq * 3 * C);
  for (let e = 0; e < sq.length; e++) {
    const b = Math.floor(e / (Tq * 3 * C)), t = Math.floor(e / (3 * C)) % Tq, col = e % (3 * C);
    const h = Math.floor((col % C) / HS), row = rows[b * NH + h];
    sq[e] = Math.sqrt(col < C ? row.own[t] : row.suffix[t]);
  }
  const sp = new Float64Array(past ? past.buf.length : 0);
  for (let e = 0; past && e < sp.length; e++) {
    const b = Math.floor(e / past.bs), t = Math.floor((e % past.bs) / past.rs);
    const k = (e % past.bs) % past.rs - past.off;
    if (t < c.Tp && k >= 0 && k < 2 * C) {
      sp[e] = Math.sqrt(rows[b * NH + Math.floor((k % C) / HS)].suffix[0]);
    }
  }
  return { sq, sp };
}

const ATTN_FWD_CASES: AttnCase[] = [
  { B: 1, Tq: 1, Tp: 0, C: 3, NH: 1, layout: "qkv" }, // tiny
  { B: 2, Tq: 5, Tp: 0, C: 6, NH: 2, layout: "qkv" },
  { B: 2, Tq: 3, Tp: 4, C: 6, NH: 2, layout: "qkv" },
  { B: 2, Tq: 3, Tp: 4, C: 6, NH: 3, layout: "cache", Tmax: 9 },
  { B: 2, Tq: 37, Tp: 20, C: 48, NH: 3, layout: "qkv" }, // HS = 16: whole vectors
  { B: 3, Tq: 19, Tp: 7, C: 60, NH: 3, layout: "cache" }, // HS = 20: vector + tail
  { B: 2, Tq: 1, Tp: 300, C: 32, NH: 2, layout: "cache", Tmax: 320 }, // decoding, long past
  { B: 2, Tq: 12, Tp: 5, C: 128, NH: 2, layout: "cache" }, // HS = 64: whole register blocks
  { B: 1, Tq: 10, Tp: 3, C: 144, NH: 2, layout: "qkv" }, // HS = 72: a block and a partial one
];

Deno.test(
  "attention_fwd matches float64 in both past layouts, tiny to long-past decoding",
  withPool((pool) => {
    const rng = new Rng(11);
    for (const c of ATTN_FWD_CASES) {
      const s = setupAttention(pool, rng, c);
      s.fwd();
      const ref = attentionRef(s.qkv, s.past, null, c.B, c.Tq, c.Tp, c.C, c.NH);
      const name = `attention ${JSON.stringify(c)}`;
      // Scores carry gamma_HS relative error (a few 1e-6 absolute here); probabilities inherit
      // it, and out = sum p v adds gamma_Tk: 1e-5 relative to sum p |v| covers both.
      assertClose(
        `${name} out`,
        pool.read(s.out, c.B * c.Tq * c.C),
        ref.out,
        ref.mag.map((m) => 1e-5 * m + 1e-7),
      );
      assertClose(`${name} att`, pool.read(s.att, c.B * c.NH * c.Tq * s.Tk), ref.att, 1e-6, 1e-5);
    }
  }),
);

Deno.test(
  "attention: key masks with left padding; fully masked query rows give exactly 0",
  withPool((pool) => {
    const rng = new Rng(12);
    // Batch 1 is left-padded by two keys. With Tp = 0 its first two queries see no valid key.
    const cases: AttnCase[] = [
      { B: 2, Tq: 5, Tp: 0, C: 6, NH: 2, layout: "qkv", valid: [1, 1, 1, 1, 1, 0, 0, 1, 1, 1] },
      {
        B: 2,
        Tq: 3,
        Tp: 3,
        C: 6,
        NH: 2,
        layout: "cache",
        valid: [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1], // batch 1: all past and own key 0 masked
      },
    ];
    for (const c of cases) {
      const s = setupAttention(pool, rng, c);
      s.fwd();
      const ref = attentionRef(s.qkv, s.past, c.valid!, c.B, c.Tq, c.Tp, c.C, c.NH);
      const out = pool.read(s.out, c.B * c.Tq * c.C);
      const att = pool.read(s.att, c.B * c.NH * c.Tq * s.Tk);
      assertClose("masked out", out, ref.out, ref.mag.map((m) => 1e-5 * m + 1e-7));
      assertClose("masked att", att, ref.att, 1e-6, 1e-5);
      // Batch 1, queries 0 and 1 (Tp = 0) or query 0 (Tp = 3): no visible valid key.
      const dead = c.Tp === 0 ? [0, 1] : [0];
      for (const i of dead) {
        const row = out.subarray((c.Tq + i) * c.C, (c.Tq + i + 1) * c.C);
        assert(row.every((v) => v === 0), `fully masked query ${i} has output 0`);
        for (let h = 0; h < c.NH; h++) {
          const a = att.subarray(
            ((c.NH + h) * c.Tq + i) * s.Tk,
            ((c.NH + h) * c.Tq + i + 1) * s.Tk,
          );
          assert(a.every((v) => v === 0), "its probabilities are 0");
        }
      }
      // Masked keys get probability 0 everywhere.
      for (let h = 0; h < c.NH; h++) {
        for (let i = 0; i < c.Tq; i++) {
          for (let j = 0; j < s.Tk; j++) {
            if (!c.valid![s.Tk + j]) assert(att[((c.NH + h) * c.Tq + i) * s.Tk + j] === 0);
          }
        }
      }
      // Backward through the dead rows stays finite and gives them no gradient.
      const dout = pool.f32(rng.normals(c.B * c.Tq * c.C));
      const dqkv = pool.f32(c.B * c.Tq * 3 * c.C);
      const dpast = s.past ? pool.f32(s.past.buf.length) : null;
      eng.attentionBwd(
        dqkv,
        dpast ? eng.offset(dpast, 4 * s.past!.off) : null,
        dout,
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
      const g = pool.read(dqkv, c.B * c.Tq * 3 * c.C);
      assert(g.every(Number.isFinite), "dqkv is finite");
      for (const i of dead) {
        const q = g.subarray((c.Tq + i) * 3 * c.C, (c.Tq + i) * 3 * c.C + c.C);
        assert(q.every((v) => v === 0), `dead query ${i} gets dq = 0`);
      }
    }
  }),
);

Deno.test(
  "attention_bwd: finite differences for qkv and both past layouts (dkv_past), with masks",
  withPool((pool) => {
    const rng = new Rng(13);
    const cases: AttnCase[] = [
      { B: 1, Tq: 1, Tp: 0, C: 3, NH: 1, layout: "qkv" },
      { B: 2, Tq: 4, Tp: 0, C: 6, NH: 2, layout: "qkv", valid: [1, 1, 1, 1, 0, 1, 1, 1] },
      {
        B: 2,
        Tq: 3,
        Tp: 4,
        C: 6,
        NH: 2,
        layout: "qkv",
        valid: [1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1],
      },
      { B: 2, Tq: 3, Tp: 4, C: 6, NH: 2, layout: "cache", Tmax: 6 },
      // Tq >= 8: the transposed-tile path (fewer queries read keys in place)
      {
        B: 2,
        Tq: 9,
        Tp: 3,
        C: 8,
        NH: 2,
        layout: "qkv",
        valid: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
      },
      {
        B: 2,
        Tq: 2,
        Tp: 3,
        C: 10,
        NH: 2,
        layout: "cache",
        Tmax: 5,
        valid: [1, 1, 1, 1, 1, 0, 1, 1, 1, 1],
      },
    ];
    for (const c of cases) {
      const name = `attention bwd ${JSON.stringify(c)}`;
      const s = setupAttention(pool, rng, c);
      const nOut = c.B * c.Tq * c.C;
      const r = rng.normals(nOut);
      const loss = () => {
        s.fwd();
        return dotLoss(pool.read(s.out, nOut), r);
      };
      loss();
      const reach = attentionReach(c, s.past, pool.read(s.out, nOut), r);
      const dqkv = pool.f32(s.qkv.length);
      const dpast = s.past ? pool.f32(s.past.buf.length) : null;
      const dkv = dpast ? eng.offset(dpast, 4 * s.past!.off) : null;
      const bwd = () =>
        eng.attentionBwd(
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
          s.past?.bs ?? 0,
          s.past?.rs ?? 0,
        );
      bwd();
      const HS = c.C / c.NH;
      const depth = 4 * (HS + s.Tk) + 16;
      const gq = pool.read(dqkv, s.qkv.length);
      assertGrad(`${name} dqkv`, gq, finiteDiff(eng, s.qkv, s.pqkv, loss, H), reach.sq, depth);
      let gp: Float32Array | null = null;
      if (s.past) {
        gp = pool.read(dpast!, s.past.buf.length);
        assertGrad(
          `${name} dkv_past`,
          gp,
          finiteDiff(eng, s.past.buf, s.pastBuf, loss, H),
          reach.sp,
          depth,
        );
        // Only key and value columns of rows < Tp are written: the q columns of a qkv-layout
        // past and the cache rows past Tp keep their zeros.
        for (let b = 0; b < c.B; b++) {
          for (let t = 0; t * s.past.rs < s.past.bs; t++) {
            for (let k = 0; k < s.past.rs; k++) {
              const e = b * s.past.bs + t * s.past.rs + k;
              const used = t < c.Tp && k >= s.past.off && k < s.past.off + 2 * c.C;
              if (!used) assert(gp[e] === 0, `${name}: dkv_past[${e}] outside the past is 0`);
            }
          }
        }
      }
      loss(); // att of the unperturbed inputs
      bwd();
      assertClose(
        `${name} dqkv twice`,
        pool.read(dqkv, s.qkv.length),
        gq.map((v) => 2 * v),
        1e-6,
        1e-5,
      );
      if (gp) {
        assertClose(
          `${name} dkv_past twice`,
          pool.read(dpast!, gp.length),
          gp.map((v) => 2 * v),
          1e-6,
          1e-5,
        );
      }
    }
  }),
);

Deno.test(
  "attention_bwd with head sizes 64 and 72: finite differences on sampled coordinates",
  withPool((pool) => {
    const rng = new Rng(21);
    const cases: AttnCase[] = [
      { B: 1, Tq: 9, Tp: 2, C: 128, NH: 2, layout: "cache" },
      { B: 1, Tq: 3, Tp: 4, C: 144, NH: 2, layout: "qkv" },
      { B: 1, Tq: 10, Tp: 3, C: 144, NH: 2, layout: "qkv" },
    ];
    for (const c of cases) {
      const name = `attention bwd ${JSON.stringify(c)}`;
      const s = setupAttention(pool, rng, c);
      const nOut = c.B * c.Tq * c.C;
      const r = rng.normals(nOut);
      const loss = () => {
        s.fwd();
        return dotLoss(pool.read(s.out, nOut), r);
      };
      loss();
      const reach = attentionReach(c, s.past, pool.read(s.out, nOut), r);
      const dqkv = pool.f32(s.qkv.length);
      const dpast = pool.f32(s.past!.buf.length);
      eng.attentionBwd(
        dqkv,
        eng.offset(dpast, 4 * s.past!.off),
        pool.f32(r),
        s.att,
        s.pqkv,
        s.kvPast,
        c.B,
        c.Tq,
        c.Tp,
        c.C,
        c.NH,
        s.past!.bs,
        s.past!.rs,
      );
      const depth = 4 * (c.C / c.NH + s.Tk) + 16;
      const pick = (n: number, k: number) => Array.from({ length: k }, () => rng.below(n));
      const iq = pick(s.qkv.length, 120), ip = pick(s.past!.buf.length, 80);
      const fq = finiteDiff(eng, s.qkv, s.pqkv, loss, H, iq);
      assertGrad(`${name} dqkv`, pool.read(dqkv, s.qkv.length), fq, reach.sq, depth, 1e-4, iq);
      const fp = finiteDiff(eng, s.past!.buf, s.pastBuf, loss, H, ip);
      assertGrad(
        `${name} dkv_past`,
        pool.read(dpast, s.past!.buf.length),
        fp,
        reach.sp,
        depth,
        1e-4,
        ip,
      );
    }
  }),
);

/** Zeroed gradient buffers of an attention case, and a backward into them in either form. */
function attentionGrads(pool: Pool, s: ReturnType<typeof setupAttention>, c: AttnCase) {
  const dqkv = pool.f32(s.qkv.length);
  const dpast = s.past ? pool.f32(s.past.buf.length) : null;
  const dkv = dpast ? eng.offset(dpast, 4 * s.past!.off) : null;
  const bs = s.past?.bs ?? 0, rs = s.past?.rs ?? 0;
  const { B, Tq, Tp, C, NH } = c;
  return {
    dqkv,
    dpast,
    att: (dout: Ptr) =>
      eng.attentionBwd(dqkv, dkv, dout, s.att, s.pqkv, s.kvPast, B, Tq, Tp, C, NH, bs, rs),
    stats: (dout: Ptr, out: Ptr, stats: Ptr) =>
      eng.attentionStatsBwd(
        dqkv,
        dkv,
        dout,
        out,
        stats,
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
      ),
  };
}

Deno.test(
  "attention_stats_fwd/bwd give the same bits as attention_fwd/bwd, masks and a shared past",
  withPool((pool) => {
    const rng = new Rng(23);
    const cases: AttnCase[] = [
      ...ATTN_FWD_CASES,
      { B: 2, Tq: 5, Tp: 0, C: 6, NH: 2, layout: "qkv", valid: [1, 1, 1, 1, 1, 0, 0, 1, 1, 1] },
      {
        B: 2,
        Tq: 9,
        Tp: 3,
        C: 8,
        NH: 2,
        layout: "qkv",
        valid: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
      },
      {
        B: 2,
        Tq: 3,
        Tp: 3,
        C: 6,
        NH: 2,
        layout: "cache",
        valid: [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1],
      },
    ];
    for (const c of cases) {
      const name = `attention stats ${JSON.stringify(c)}`;
      const s = setupAttention(pool, rng, c);
      const { B, Tq, Tp, C, NH } = c;
      const nOut = B * Tq * C, nRows = B * NH * Tq;
      s.fwd();
      const out = pool.read(s.out, nOut), att = pool.read(s.att, nRows * s.Tk);
      const stats = pool.f32(2 * nRows), out2 = pool.f32(nOut), out3 = pool.f32(nOut);
      const bs = s.past?.bs ?? 0, rs = s.past?.rs ?? 0;
      eng.attentionStatsFwd(out2, stats, s.pqkv, s.kvPast, s.valid, B, Tq, Tp, C, NH, bs, rs);
      eng.attentionStatsFwd(out3, null, s.pqkv, s.kvPast, s.valid, B, Tq, Tp, C, NH, bs, rs);
      assertEquals(pool.read(out2, nOut), out, `${name}: out`);
      assertEquals(pool.read(out3, nOut), out, `${name}: out without stats`);
      // The statistics describe the saved rows: 1/sum > 0 exactly when some key is visible,
      // and the largest probability of a row is exp(0) * (1/sum).
      const st = pool.read(stats, 2 * nRows);
      for (let row = 0; row < nRows; row++) {
        const a = att.subarray(row * s.Tk, (row + 1) * s.Tk);
        const top = a.reduce((x, y) => Math.max(x, y), 0);
        if (top === 0) {
          assertEquals([st[2 * row], st[2 * row + 1]], [-Infinity, 0], `${name}: dead row ${row}`);
        } else {
          assert(Number.isFinite(st[2 * row]), `${name}: max of row ${row}`);
          assertEquals(top, st[2 * row + 1], `${name}: 1/sum of row ${row}`);
        }
      }
      const dout = pool.f32(rng.normals(nOut));
      const ga = attentionGrads(pool, s, c), gs = attentionGrads(pool, s, c);
      ga.att(dout);
      gs.stats(dout, out2, stats);
      assertEquals(pool.read(gs.dqkv, s.qkv.length), pool.read(ga.dqkv, s.qkv.length), name);
      if (s.past) {
        const n = s.past.buf.length;
        assertEquals(pool.read(gs.dpast!, n), pool.read(ga.dpast!, n), `${name}: dkv_past`);
      }
    }
    // One past shared by the whole batch (past_bs = 0): the backward walks b in order.
    const B = 3, Tq = 9, Tp = 4, C = 16, NH = 2, Tk = Tp + Tq;
    const qkv = pool.f32(rng.normals(B * Tq * 3 * C)), past = pool.f32(rng.normals(Tp * 2 * C));
    const out = pool.f32(B * Tq * C), att = pool.f32(B * NH * Tq * Tk);
    const stats = pool.f32(B * NH * Tq * 2), dout = pool.f32(rng.normals(B * Tq * C));
    const grads = [0, 1].map(() => [pool.f32(B * Tq * 3 * C), pool.f32(Tp * 2 * C)]);
    eng.attentionFwd(out, att, qkv, past, null, B, Tq, Tp, C, NH, 0, 2 * C);
    eng.attentionStatsFwd(out, stats, qkv, past, null, B, Tq, Tp, C, NH, 0, 2 * C);
    eng.attentionBwd(grads[0][0], grads[0][1], dout, att, qkv, past, B, Tq, Tp, C, NH, 0, 2 * C);
    eng.attentionStatsBwd(
      grads[1][0],
      grads[1][1],
      dout,
      out,
      stats,
      null,
      qkv,
      past,
      B,
      Tq,
      Tp,
      C,
      NH,
      0,
      2 * C,
    );
    assertEquals(pool.read(grads[1][0], B * Tq * 3 * C), pool.read(grads[0][0], B * Tq * 3 * C));
    assertEquals(pool.read(grads[1][1], Tp * 2 * C), pool.read(grads[0][1], Tp * 2 * C));
    // Errors name the new functions and the stats and out buffers.
    assertThrows(
      () =>
        eng.attentionStatsBwd(out, null, dout, out, null, null, qkv, null, 1, 1, 0, C, NH, 0, 0),
      EngineError,
      "le_attention_stats_bwd: stats is NULL",
    );
    assertThrows(
      () =>
        eng.attentionStatsBwd(out, null, dout, null, stats, null, qkv, null, 1, 1, 0, C, NH, 0, 0),
      EngineError,
      "le_attention_stats_bwd: out is NULL",
    );
    const small = pool.f32(3);
    assertThrows(
      () => eng.attentionStatsFwd(out, small, qkv, null, null, 1, 2, 0, C, NH, 0, 0),
      EngineError,
      "le_attention_stats_fwd: stats",
    );
  }),
);

Deno.test(
  "attention backward: a dkv_past overlapping dqkv is refused in every form, before anything " +
    "is written",
  withPool((pool) => {
    const rng = new Rng(31);
    const B = 2, Tq = 3, Tp = 2, C = 8, NH = 2, NKV = 1, Tk = Tq + Tp;
    const W = C + 2 * (C / NH) * NKV;
    const dout = pool.f32(rng.normals(B * Tq * C)), out = pool.f32(B * Tq * C);
    const att = pool.f32(B * NH * Tq * Tk), stats = pool.f32(B * NH * Tq * 2);
    const qkv = pool.f32(rng.normals(B * Tq * 3 * C)), past = pool.f32(rng.normals(B * Tp * 2 * C));
    // The past's gradient rows start at dqkv's last element.
    const n = B * Tq * 3 * C + B * Tp * 2 * C;
    const dqkv = pool.f32(rng.normals(n)), before = pool.read(dqkv, n);
    const dpast = eng.offset(dqkv, 4 * (B * Tq * 3 * C - 1));
    const dpastG = eng.offset(dqkv, 4 * (B * Tq * W - 1));
    const [bs, rs, bsG, rsG] = [Tp * 2 * C, 2 * C, Tp * (W - C), W - C];
    const calls: [string, () => void][] = [
      [
        "le_attention_bwd",
        () => eng.attentionBwd(dqkv, dpast, dout, att, qkv, past, B, Tq, Tp, C, NH, bs, rs),
      ],
      ["le_attention_stats_bwd", () =>
        eng.attentionStatsBwd(
          dqkv,
          dpast,
          dout,
          out,
          stats,
          null,
          qkv,
          past,
          B,
          Tq,
          Tp,
          C,
          NH,
          bs,
          rs,
        )],
      [
        "le_attention_gqa_bwd",
        () =>
          eng.attentionGqaBwd(dqkv, dpastG, dout, att, qkv, past, B, Tq, Tp, C, NH, NKV, bsG, rsG),
      ],
      ["le_attention_gqa_stats_bwd", () =>
        eng.attentionGqaStatsBwd(
          dqkv,
          dpastG,
          dout,
          out,
          stats,
          null,
          qkv,
          past,
          B,
          Tq,
          Tp,
          C,
          NH,
          NKV,
          bsG,
          rsG,
        )],
    ];
    for (const [fn, call] of calls) {
      assertThrows(call, EngineError, `${fn}: dkv_past overlaps dqkv`);
    }
    assertEquals(pool.read(dqkv, n), before);
    // Right after dqkv's last byte, the past's rows are apart: accepted.
    const apart = eng.offset(dqkv, 4 * B * Tq * 3 * C);
    eng.attentionBwd(dqkv, apart, dout, att, qkv, past, B, Tq, Tp, C, NH, bs, rs);
  }),
);

Deno.test(
  "attention_stats_bwd: finite differences for qkv and both past layouts, with masks",
  withPool((pool) => {
    const rng = new Rng(24);
    const cases: AttnCase[] = [
      { B: 1, Tq: 1, Tp: 0, C: 3, NH: 1, layout: "qkv" },
      { B: 2, Tq: 4, Tp: 0, C: 6, NH: 2, layout: "qkv", valid: [1, 1, 1, 1, 0, 1, 1, 1] },
      { B: 2, Tq: 3, Tp: 4, C: 6, NH: 2, layout: "cache", Tmax: 6 },
      {
        B: 2,
        Tq: 9,
        Tp: 3,
        C: 8,
        NH: 2,
        layout: "qkv",
        valid: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
      },
    ];
    for (const c of cases) {
      const name = `attention stats bwd ${JSON.stringify(c)}`;
      const s = setupAttention(pool, rng, c);
      const { B, Tq, Tp, C, NH } = c;
      const nOut = B * Tq * C, bs = s.past?.bs ?? 0, rs = s.past?.rs ?? 0;
      const stats = pool.f32(2 * B * NH * Tq);
      const r = rng.normals(nOut);
      const loss = () => {
        eng.attentionStatsFwd(s.out, stats, s.pqkv, s.kvPast, s.valid, B, Tq, Tp, C, NH, bs, rs);
        return dotLoss(pool.read(s.out, nOut), r);
      };
      loss();
      const reach = attentionReach(c, s.past, pool.read(s.out, nOut), r);
      const g = attentionGrads(pool, s, c);
      g.stats(pool.f32(r), s.out, stats);
      const depth = 4 * (C / NH + s.Tk) + 16;
      const gq = pool.read(g.dqkv, s.qkv.length);
      assertGrad(`${name} dqkv`, gq, finiteDiff(eng, s.qkv, s.pqkv, loss, H), reach.sq, depth);
      if (s.past) {
        assertGrad(
          `${name} dkv_past`,
          pool.read(g.dpast!, s.past.buf.length),
          finiteDiff(eng, s.past.buf, s.pastBuf, loss, H),
          reach.sp,
          depth,
        );
      }
    }
  }),
);

// ---------------------------------------------------------------------------------------------
// cross-entropy, argmax
// ---------------------------------------------------------------------------------------------

Deno.test(
  "xent_fwd_bwd: targets overlapping logits or losses are rejected before anything is written",
  withPool((pool) => {
    const buf = pool.f32(Float32Array.from({ length: 40 }, (_, i) => i % 3));
    const before = pool.read(buf, 40);
    const losses = pool.f32(6);
    const at = (i: number) => eng.offset(buf, 4 * i);
    assertThrows(
      () => eng.xentFwdBwd(buf, losses, at(4), 6, 4, 1),
      EngineError,
      "targets overlaps logits or losses",
    );
    assertThrows(() => eng.xentFwdBwd(buf, at(30), at(32), 6, 4, 1), EngineError, "overlaps");
    assertEquals(pool.read(buf, 40), before);
  }),
);

Deno.test(
  "xent_fwd_bwd: losses, ignored rows, dscale, finite differences",
  withPool((pool) => {
    const rng = new Rng(14);
    for (const [N, V] of [[1, 3], [7, 37], [5, 1000]]) {
      const logits = rng.normals(N * V, 3);
      const targets = Array.from({ length: N }, (_, n) => (n % 3 === 1 ? -1 : rng.below(V)));
      const pl = pool.f32(logits), pt = pool.i32(targets), losses = pool.f32(N);
      const ref = xentRef(logits, targets, N, V);
      // dscale = 0: losses only, logits untouched.
      eng.xentFwdBwd(pl, losses, pt, N, V, 0);
      assertEquals(pool.read(pl, N * V), logits);
      const lossTol = Array.from({ length: N }, (_, n) => {
        let m = 0;
        for (let v = 0; v < V; v++) m = Math.max(m, Math.abs(logits[n * V + v]));
        return 16 * U32 * (2 * m + 1); // max, log and exp each within a few ulp of |logit|
      });
      assertClose(`losses ${N}x${V}`, pool.read(losses, N), ref.losses, lossTol);
      const got = pool.read(losses, N);
      for (let n = 0; n < N; n++) if (targets[n] < 0) assert(got[n] === 0, "ignored row loss 0");
      // dscale != 0: logits become dscale * (softmax - onehot); ignored rows become 0.
      const dscale = 0.37;
      eng.xentFwdBwd(pl, losses, pt, N, V, dscale);
      const grad = pool.read(pl, N * V);
      const expect = new Float64Array(N * V);
      for (let n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        for (let v = 0; v < V; v++) {
          expect[n * V + v] = dscale * (ref.probs[n * V + v] - (v === targets[n] ? 1 : 0));
        }
      }
      assertClose(`xent grad ${N}x${V}`, grad, expect, 1e-7, 1e-5);
      for (let n = 0; n < N; n++) {
        if (targets[n] < 0) assert(grad.subarray(n * V, (n + 1) * V).every((v) => v === 0));
      }
      // The gradient is that of dscale * sum(losses).
      if (N * V <= 300) {
        eng.upload(pl, logits);
        const loss = () => {
          eng.xentFwdBwd(pl, losses, pt, N, V, 0);
          return dscale * pool.read(losses, N).reduce((a, b) => a + b, 0);
        };
        const fd = finiteDiff(eng, logits, pl, loss, H);
        assertGrad(
          `xent ${N}x${V}`,
          grad,
          fd,
          dscale * ref.losses.reduce((a, b) => a + b, 0) + dscale * N,
          4 * V,
        );
      }
    }
  }),
);

Deno.test(
  "argmax: lowest index wins ties",
  withPool((pool) => {
    const rows = [
      [1, 3, 3, 2], // tie between 1 and 2
      [5, 5, 5, 5], // all equal
      [-1, -2, -0.5, -0.5],
      [0, 0, 0, 7],
      [NaN, 1, NaN, 1], // NaN never wins, even first
    ];
    const p = pool.f32(rows.flat()), out = pool.i32([9, 9, 9, 9, 9]);
    eng.argmax(out, p, 5, 4);
    assertEquals([...pool.readI32(out, 5)], [1, 0, 2, 3, 1]);
    const rng = new Rng(15);
    const N = 33, V = 517, x = rng.normals(N * V);
    const px = pool.f32(x), o2 = pool.i32(new Array(N).fill(-1));
    eng.argmax(o2, px, N, V);
    const got = pool.readI32(o2, N);
    for (let n = 0; n < N; n++) {
      let best = 0;
      for (let v = 1; v < V; v++) if (x[n * V + v] > x[n * V + best]) best = v;
      assertEquals(got[n], best);
    }
  }),
);

// ---------------------------------------------------------------------------------------------
// optimiser
// ---------------------------------------------------------------------------------------------

Deno.test(
  "sumsq accumulates in double",
  withPool((pool) => {
    const rng = new Rng(16);
    const out = pool.f32(1);
    for (const n of [0, 1, 37, 1_000_003]) {
      const g = rng.normals(n);
      const pg = n > 0 ? pool.f32(g) : pool.raw(0);
      eng.sumsq(out, pg, n);
      let s = 0;
      for (let i = 0; i < n; i++) s += g[i] * g[i];
      // double accumulation: only the final rounding to fp32 remains
      assertClose(`sumsq ${n}`, pool.read(out, 1), [s], 1e-30, 2 * U32);
    }
  }),
);

Deno.test(
  "adamw matches PyTorch's AdamW in float64, with and without the global-norm clip",
  withPool((pool) => {
    const rng = new Rng(17);
    const n = 1001;
    const hp = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, wd: 0.1 };
    for (const clip of [false, true]) {
      const p0 = rng.normals(n);
      const state: AdamState = {
        p: Float64Array.from(p0),
        m: new Float64Array(n),
        v: new Float64Array(n),
      };
      const pp = pool.f32(p0), pm = pool.f32(n), pv = pool.f32(n), pg = pool.f32(n);
      const gn = pool.f32(1);
      const magM = new Float64Array(n), tolM = new Float64Array(n), tolP = new Float64Array(n);
      for (let t = 1; t <= 3; t++) {
        const g = rng.normals(n, 2);
        eng.upload(pg, g);
        let gnormSq = 0;
        for (let i = 0; i < n; i++) gnormSq += g[i] * g[i];
        const maxNorm = clip ? 1.0 : 0; // the norm is about 63: the clip is active
        eng.sumsq(gn, pg, n);
        eng.adamw(
          pp,
          pg,
          pm,
          pv,
          n,
          hp.lr,
          hp.beta1,
          hp.beta2,
          hp.eps,
          hp.wd,
          t,
          clip ? gn : null,
          maxNorm,
        );
        adamwRef(
          state,
          g,
          hp.lr,
          hp.beta1,
          hp.beta2,
          hp.eps,
          hp.wd,
          t,
          clip ? gnormSq : null,
          maxNorm,
        );
        // Error bounds that follow the fp32 arithmetic step by step. m = b1 m + (1 - b1) g
        // can cancel, so its error scales with the magnitude of its terms (magM), growing by
        // a few u of it per step. v only adds positive terms: a relative bound. p inherits
        // m's error through the step lr/bc1 * m/denom, plus a few u of its own per step.
        const clipCoef = clip ? Math.min(1, maxNorm / (Math.sqrt(gnormSq) + 1e-6)) : 1;
        const bc1 = 1 - hp.beta1 ** t, bc2 = 1 - hp.beta2 ** t;
        for (let i = 0; i < n; i++) {
          magM[i] = hp.beta1 * magM[i] + (1 - hp.beta1) * Math.abs(g[i] * clipCoef);
          tolM[i] = 8 * t * U32 * magM[i];
          const denom = Math.sqrt(state.v[i]) / Math.sqrt(bc2) + hp.eps;
          tolP[i] += 8 * U32 * Math.abs(state.p[i]) +
            (hp.lr / bc1) * (tolM[i] + 16 * U32 * magM[i]) / denom;
        }
        assertClose(`adamw p t=${t} clip=${clip}`, pool.read(pp, n), state.p, tolP);
        assertClose(`adamw m t=${t} clip=${clip}`, pool.read(pm, n), state.m, tolM);
        // Under the clip, v also inherits the fp32 clip coefficient's error squared (the norm
        // is passed in fp32, and 1 / norm rounds again): up to 4u more.
        const tolV = (8 * t + (clip ? 4 : 0)) * U32;
        assertClose(`adamw v t=${t} clip=${clip}`, pool.read(pv, n), state.v, 1e-30, tolV);
      }
      assertEquals(pool.read(pg, 3).length, 3); // g is read only
    }
  }),
);

// ---------------------------------------------------------------------------------------------
// determinism
// ---------------------------------------------------------------------------------------------

Deno.test(
  "determinism: repeated runs and 1 vs 2 threads give bit-identical outputs",
  withPool((pool) => {
    const rng = new Rng(18);
    const N = 290, Cin = 300, Cout = 520, C = 64, NH = 4, B = 4, Tq = 40, Tp = 24, V = 700;
    const x = pool.f32(rng.normals(N * Cin)), w = pool.f32(rng.normals(Cout * Cin));
    const d = pool.f32(rng.normals(N * Cout)), bias = pool.f32(rng.normals(Cout));
    const qkv = pool.f32(rng.normals(B * Tq * 3 * C)), past = pool.f32(rng.normals(B * Tp * 2 * C));
    const dout = pool.f32(rng.normals(B * Tq * C));
    const lnx = pool.f32(rng.normals(N * Cin)), lnw = pool.f32(rng.normals(Cin));
    const lnb = pool.f32(rng.normals(Cin));
    const logits0 = rng.normals(N * V),
      targets = pool.i32(Array.from({ length: N }, () => rng.below(V)));
    const big = pool.f32(rng.normals(2_000_003));
    const run = () => {
      const out = pool.f32(N * Cout), dx = pool.f32(N * Cin), dw = pool.f32(Cout * Cin);
      const db = pool.f32(Cout);
      eng.matmulFwd(out, x, w, bias, N, Cin, Cout);
      eng.matmulBwd(dx, dw, db, d, x, w, N, Cin, Cout);
      const ao = pool.f32(B * Tq * C), att = pool.f32(B * NH * Tq * (Tp + Tq));
      const dq = pool.f32(B * Tq * 3 * C), dp = pool.f32(B * Tp * 2 * C);
      eng.attentionFwd(ao, att, qkv, past, null, B, Tq, Tp, C, NH, Tp * 2 * C, 2 * C);
      eng.attentionBwd(dq, dp, dout, att, qkv, past, B, Tq, Tp, C, NH, Tp * 2 * C, 2 * C);
      const lo = pool.f32(N * Cin), mean = pool.f32(N), rstd = pool.f32(N);
      const ldx = pool.f32(N * Cin), ldw = pool.f32(Cin), ldb = pool.f32(Cin);
      eng.layernormFwd(lo, mean, rstd, lnx, lnw, lnb, N, Cin);
      eng.layernormBwd(ldx, ldw, ldb, x, lnx, lnw, mean, rstd, N, Cin);
      const lg = pool.f32(logits0), losses = pool.f32(N);
      eng.xentFwdBwd(lg, losses, targets, N, V, 0.01);
      const ss = pool.f32(1);
      eng.sumsq(ss, big, 2_000_003);
      return [
        pool.read(out, N * Cout),
        pool.read(dx, N * Cin),
        pool.read(dw, Cout * Cin),
        pool.read(db, Cout),
        pool.read(ao, B * Tq * C),
        pool.read(dq, B * Tq * 3 * C),
        pool.read(dp, B * Tp * 2 * C),
        pool.read(lo, N * Cin),
        pool.read(ldx, N * Cin),
        pool.read(ldw, Cin),
        pool.read(lg, N * V),
        pool.read(losses, N),
        pool.read(ss, 1),
      ].map((a) => new Uint32Array(a.buffer)); // compare bits, not values
    };
    eng.setNumThreads(2);
    const a = run(), b = run();
    eng.setNumThreads(1);
    const c = run();
    eng.setNumThreads(0);
    for (let i = 0; i < a.length; i++) {
      assertEquals(b[i], a[i], `output ${i}: run 2 differs from run 1`);
      assertEquals(c[i], a[i], `output ${i}: 1 thread differs from 2 threads`);
    }
  }),
);

// ---------------------------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------------------------

Deno.test(
  "errors: bad arguments give an EngineError naming the op and the argument",
  withPool((pool) => {
    const x = pool.f32(64), y = pool.f32(64), ids = pool.i32([0, 1, 99]);
    assertThrows(
      () => eng.matmulFwd(y, x, x, null, -3, 2, 2),
      EngineError,
      "le_matmul_fwd: N must be > 0 (got -3)",
    );
    assertThrows(
      () => eng.matmulFwd(y, null, x, null, 2, 2, 2),
      EngineError,
      "le_matmul_fwd: inp is NULL",
    );
    assertThrows(
      () => eng.matmulFwd(y, x, x, null, 9, 8, 8),
      EngineError,
      "out needs 288 bytes but only 256 remain",
    );
    const hostArray = new Float32Array(16);
    const host = Deno.UnsafePointer.value(Deno.UnsafePointer.of(hostArray)) as bigint;
    assertThrows(() => eng.scale(host, 2, 4), EngineError, "le_scale: x (");
    assertThrows(() => eng.scale(host, 2, 4), EngineError, "is not engine memory");
    assertThrows(
      () => eng.embedFwd(y, ids, null, x, null, 3, 4),
      EngineError,
      "ids[2] = 99 is outside the token table (16 rows",
    );
    const t = pool.i32([0, 5, 2]);
    const logits = rng19(3 * 4), pl = pool.f32(logits), losses = pool.f32(3);
    assertThrows(
      () => eng.xentFwdBwd(pl, losses, t, 3, 4, 1),
      EngineError,
      "targets[1] = 5 is >= V = 4",
    );
    assertEquals(pool.read(pl, 12), logits, "a failing call writes nothing");
    assertThrows(
      () => eng.attentionFwd(y, y, x, null, null, 1, 1, 0, 6, 4, 0, 0),
      EngineError,
      "C = 6 is not divisible by NH = 4",
    );
    assertThrows(
      () => eng.attentionFwd(y, y, x, x, null, 1, 1, 2, 4, 1, 12, 4),
      EngineError,
      "past_rs = 4 is smaller than 2C = 8",
    );
    assertThrows(
      () => eng.attentionFwd(y, y, x, null, null, 1, 1, 2, 4, 1, 12, 8),
      EngineError,
      "kv_past is NULL",
    );
    assertThrows(
      () => eng.adamw(x, x, x, x, 4, 1e-3, 0.9, 0.999, 1e-8, 0, 0, null, 0),
      EngineError,
      "step t must be >= 1",
    );
    assertThrows(
      () => eng.copyRows(y, x, 1, 1, 4, 0, -1, 0, 0, false),
      EngineError,
      "dst_rs must be >= 0 (got -1)",
    );
    assertThrows(() => eng.setPrecision(2), EngineError, "the CPU engine computes in fp32 only");
    assertThrows(
      () => eng.setPrecision(3 as 0),
      EngineError,
      "mode must be 0 (fp32), 1 (TF32) or 2 (bf16)",
    );
    eng.setPrecision(0);
    assertThrows(() => eng.free(eng.offset(x, 4)), EngineError, "was not returned by le_alloc");
  }),
);

function rng19(n: number): Float32Array {
  return new Rng(19).normals(n);
}

Deno.test("errors: an allocation that is too large fails cleanly and the engine goes on", () => {
  const before = eng.bytesInUse();
  assertThrows(
    () => eng.alloc(2 ** 46),
    EngineError,
    "le_alloc: cannot allocate 70368744177664 bytes",
  );
  assertThrows(() => eng.alloc(2 ** 50), EngineError, "le_alloc: cannot allocate");
  assertEquals(eng.bytesInUse(), before);
  const p = eng.alloc(16);
  eng.scale(p, 2, 4);
  eng.free(p);
});

Deno.test("le_keep_bf16: the CPU engine checks the span and changes nothing", () => {
  const n = 24, p = eng.alloc(n * 4), x = eng.alloc(8 * 4), y = eng.alloc(2 * 3 * 4);
  try {
    eng.upload(p, rng19(n));
    eng.upload(x, rng19(8));
    const before = new Float32Array(6), after = new Float32Array(6);
    eng.matmulFwd(y, x, p, null, 2, 4, 3);
    eng.download(before, y);
    eng.keepBf16(p, n);
    eng.matmulFwd(y, x, p, null, 2, 4, 3);
    eng.download(after, y);
    assertEquals(after, before, "fp32 matmuls are unchanged");
    assertThrows(() => eng.keepBf16(p, n + 1), EngineError, "le_keep_bf16: p");
    assertThrows(() => eng.keepBf16(p, -1), EngineError, "le_keep_bf16: n");
    eng.keepBf16(p, 0);
  } finally {
    for (const b of [p, x, y]) eng.free(b);
  }
});

Deno.test("openEngine: a missing library and a closed engine give EngineError", () => {
  assertThrows(
    () => openEngine({ libPath: "/nonexistent/liblotus.so" }),
    EngineError,
    "cannot load /nonexistent/liblotus.so",
  );
  const e2 = openEngine({ libPath: eng.libPath, threads: 1 });
  assertEquals(e2.backend, "cpu");
  e2.close();
  e2.close(); // idempotent
  assertThrows(() => e2.alloc(4), EngineError, "the engine is closed");
  assertThrows(
    () => openEngine({ libPath: eng.libPath, backend: "cuda" }),
    EngineError,
    "is the cpu engine, not cuda",
  );
  eng.setNumThreads(0); // the shared library's thread setting is process-wide
});

/**
 * Op cases and a LOTUS step at the shapes the engine really runs: GPT-2 small's width
 * (C = 768, 12 heads of 64, MLP 3072), its vocabulary (50,260 with the LOTUS tokens) for the
 * classifier, cross-entropy and embedding, and attention over more keys than the 128 threads
 * of an attention block (a LOTUS sequence at the reference shape holds a 60-token question,
 * K*c = 78 latents and an 8-token answer: about 150 positions). check/parity.ts's cases use
 * small odd shapes to reach the edge cases; these reach the real sizes, with batches kept
 * small so that the host emulation (check/cuda_emu) runs them in CI in under a minute.
 *
 * @module
 */
import { Rng } from "../base/rng.ts";
import { ModelConfigSchema } from "../model/config.ts";
import type { Example } from "../train/batch.ts";
import { bigUniform, randi, randn, withBufs } from "./_op_bufs.ts";
import {
  attentionCase,
  layernormCase,
  type OpCase,
  residualLayernormCase,
  specialsFor,
  type StepSpec,
} from "./parity.ts";

/** GPT-2 small's width, heads, MLP width, vocabulary (with the four LOTUS tokens) and
 * positions. */
export const GPT2 = { C: 768, NH: 12, F: 3072, V: 50260, P: 1024 } as const;

const { C, NH, F, V, P } = GPT2;

/** Every op at GPT-2 small's shapes (see the module's description). */
export const GPT2_OP_CASES: OpCase[] = [
  {
    name: "gpt2: embed fwd, bwd (V 50260, C 768)",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 48;
        const ids = randi(rng, N, V);
        ids[0] = V - 1, ids[1] = 0, ids[2] = -1, ids[3] = ids[4]; // both ends, a skip, a repeat
        // Rows 0, 1 and 2 share a range of the backward's threads: it switches between rows
        // (0, 1, 0, 1) and sums a run of one row (2) in a register.
        ids[5] = 1, ids[6] = 0, ids[7] = 1;
        for (let n = 8; n < 16; n++) ids[n] = n === 11 ? -1 : 2;
        const pos = randi(rng, N, P);
        const wte = b.f32(bigUniform(seed, V * C, 0.1)), wpe = b.f32(randn(rng, P * C, 0.02));
        const pid = b.i32(ids), ppos = b.i32(pos);
        const out = b.f32(N * C);
        eng.embedFwd(out, pid, ppos, wte, wpe, N, C);
        const dwte = b.f32(V * C), dwpe = b.f32(P * C);
        const dout = b.f32(randn(rng, N * C));
        eng.embedBwd(dwte, dwpe, dout, pid, ppos, N, C);
        // the rows the ids name (the rest of dwte is zero on both engines: checked by sum)
        const g = b.get(dwte, V * C);
        const rows = new Float32Array(8 * C);
        for (let k = 0; k < 8; k++) {
          rows.set(g.subarray(ids[k] >= 0 ? ids[k] * C : 0).slice(0, C), k * C);
        }
        let total = 0;
        for (let i = 0; i < g.length; i++) total += g[i];
        return {
          out: b.get(out, N * C),
          "dwte (rows of ids 0..7)": rows,
          "dwte (sum)": Float32Array.of(total),
          dwpe: b.get(dwpe, P * C),
        };
      });
    },
  },
  layernormCase(24, C, "gpt2: "),
  residualLayernormCase(24, C, "gpt2: "),
  {
    name: "gpt2: matmul qkv 768->2304, proj 3072->768 fwd, bwd",
    matmul: true,
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const res: Record<string, Float32Array> = {};
        const N = 16;
        for (const [Cin, Cout] of [[C, 3 * C], [F, C]]) {
          const tag = `${Cin}->${Cout}`;
          const x = b.f32(randn(rng, N * Cin)), w = b.f32(randn(rng, Cout * Cin, 0.02));
          const bias = b.f32(randn(rng, Cout, 0.1)), out = b.f32(N * Cout);
          eng.matmulFwd(out, x, w, bias, N, Cin, Cout);
          const dout = b.f32(randn(rng, N * Cout));
          const dinp = b.f32(N * Cin), dw = b.f32(Cout * Cin), db = b.f32(Cout);
          eng.matmulBwd(dinp, dw, db, dout, x, w, N, Cin, Cout);
          res[`${tag} out`] = b.get(out, N * Cout);
          res[`${tag} dinp`] = b.get(dinp, N * Cin);
          res[`${tag} dw`] = b.get(dw, Cout * Cin);
          res[`${tag} dbias`] = b.get(db, Cout);
        }
        return res;
      });
    },
  },
  {
    name: "gpt2: gelu, add, scale, dropout, copy_rows (C 768, 3072)",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const n = 16 * F;
        const x = b.f32(randn(rng, n, 3)), out = b.f32(n);
        eng.geluFwd(out, x, n);
        const dinp = b.f32(n), dout = b.f32(randn(rng, n));
        eng.geluBwd(dinp, x, dout, n);
        const y = b.f32(randn(rng, n));
        eng.add(y, y, x, n);
        eng.scale(y, 0.5, n);
        const mask = b.u8(new Uint8Array(n));
        eng.dropoutFwd(y, mask, n, 0.1, BigInt(seed) + 17n);
        // LOTUS copies latent rows of width C between [B, T, C] buffers with strides.
        const rows = 78, nb = 2, src = b.f32(randn(rng, nb * 150 * C));
        const dst = b.f32(randn(rng, nb * 160 * C));
        eng.copyRows(dst, b.at(src, 60 * C), nb, rows, C, 160 * C, C, 150 * C, C, true);
        return {
          "gelu out": b.get(out, n),
          "gelu dinp": b.get(dinp, n),
          "add, scale, dropout": b.get(y, n),
          "copy_rows (accumulate)": b.get(dst, nb * 160 * C),
        };
      });
    },
  },
  // More keys than the block's 128 threads: each thread handles several keys.
  attentionCase("gpt2: attention, 150 keys, no past (12 heads of 64)", {
    B: 1,
    Tq: 150,
    Tp: 0,
    C,
    NH,
    past: "none",
    pad: [3],
  }),
  // The LOTUS pattern: a 60-token question is the past of 90 latent and answer positions.
  attentionCase("gpt2: attention, 60 past + 90 queries (qkv past)", {
    B: 1,
    Tq: 90,
    Tp: 60,
    C,
    NH,
    past: "qkv",
    pad: [5],
  }),
  attentionCase("gpt2: attention, K/V cache of 200, 1 query", {
    B: 2,
    Tq: 1,
    Tp: 200,
    C,
    NH,
    past: "cache",
    pad: [0, 9],
  }),
  {
    // argmax is checked on fp32 logits below: here the logits carry the precision's rounding,
    // and two near-equal logits may swap.
    name: "gpt2: classifier 768->50260 (tied wte), xent",
    matmul: true,
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 4;
        const x = b.f32(randn(rng, N * C)), wte = b.f32(bigUniform(seed + 1, V * C, 0.1));
        const logits = b.f32(N * V);
        eng.matmulFwd(logits, x, wte, null, N, C, V);
        const lg = b.get(logits, N * V);
        const t = randi(rng, N, V);
        t[1] = -100, t[2] = V - 1;
        const losses = b.f32(N);
        eng.xentFwdBwd(logits, losses, b.i32(t), N, V, 0.25);
        const dinp = b.f32(N * C), dw = b.f32(V * C);
        eng.matmulBwd(dinp, dw, null, logits, x, wte, N, C, V);
        return {
          logits: lg,
          losses: b.get(losses, N),
          dlogits: b.get(logits, N * V),
          dinp: b.get(dinp, N * C),
          dwte: b.get(dw, V * C),
        };
      });
    },
  },
  {
    name: "gpt2: xent, argmax at V 50260 (fp32 logits)",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 6;
        const l = bigUniform(seed + 2, N * V, 8);
        l[3 * V + 50000] = 40; // a clear winner past 50k
        const logits = b.f32(l), am = b.i32(new Int32Array(N));
        eng.argmax(am, logits, N, V);
        const t = randi(rng, N, V);
        t[0] = -1, t[3] = 50000;
        const losses = b.f32(N);
        eng.xentFwdBwd(logits, losses, b.i32(t), N, V, 1 / N);
        return { argmax: b.geti(am, N), losses: b.get(losses, N), dlogits: b.get(logits, N * V) };
      });
    },
  },
  {
    name: "gpt2: sumsq, adamw over a 768x3072 tensor",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const n = C * F;
        const g = b.f32(bigUniform(seed + 3, n, 0.01)), sq = b.f32(1);
        eng.sumsq(sq, g, n);
        const p = b.f32(bigUniform(seed + 4, n, 1)), m = b.f32(n), v = b.f32(n);
        eng.adamw(p, g, m, v, n, 6e-4, 0.9, 0.95, 1e-8, 0.1, 1, sq, 1e-3); // clip active
        eng.adamw(p, g, m, v, n, 6e-4, 0.9, 0.95, 1e-8, 0.1, 2, sq, 1e-3);
        void rng;
        return {
          sumsq: b.get(sq, 1),
          p: b.get(p, n),
          m: b.get(m, n),
          v: b.get(v, n),
        };
      });
    },
  },
];

/**
 * The attention of {@linkcode GPT2_OP_CASES} through the statistics form
 * (le_attention_stats_fwd / _bwd), the one training uses: fp32 kernels at fp32 and TF32,
 * tensor cores in bf16 (the CUDA engine's attention_tc.cuh).
 */
export const GPT2_ATTN_STATS_CASES: OpCase[] = [
  attentionCase("gpt2: attention (stats), 150 keys, no past", {
    B: 1,
    Tq: 150,
    Tp: 0,
    C,
    NH,
    past: "none",
    pad: [3],
  }, "stats"),
  attentionCase("gpt2: attention (stats), 60 past + 90 queries (qkv past)", {
    B: 1,
    Tq: 90,
    Tp: 60,
    C,
    NH,
    past: "qkv",
    pad: [5],
  }, "stats"),
  attentionCase("gpt2: attention (stats), K/V cache of 200, 1 query", {
    B: 2,
    Tq: 1,
    Tp: 200,
    C,
    NH,
    past: "cache",
    pad: [0, 9],
  }, "stats"),
];

/** Examples shaped like the reference LOTUS sequences: a `q`-token question, K steps of up
 * to c tokens, an 8-token answer ending in EOS. */
export function longExamples(q: number, K: number, c: number) {
  return (n: number, v: number, seed: number): Example[] => {
    const rng = new Rng(seed), eos = specialsFor(v).eos;
    const seq = (len: number) => Int32Array.from({ length: len }, () => rng.below(v - 4));
    return Array.from({ length: n }, (_, i) => ({
      q: seq(q - (i % 3)),
      steps: Array.from({ length: K - (i % 2) }, () => seq(1 + rng.below(c))),
      ans: Int32Array.from([...seq(7), eos]),
      index: i,
    }));
  };
}

/**
 * A whole LOTUS step at a reduced but real shape: heads of 64 (two of them), a 60-token
 * question, K = 6 blocks of c = 13 latents (78, as at the reference shape) and an 8-token
 * answer, so attention sees about 150 keys; one layer, a small vocabulary, batch 2.
 */
export const REAL_STEP_SPEC: StepSpec = {
  name: "lotus at 150 keys, head size 64",
  model: ModelConfigSchema.parse({
    vocabSize: 96,
    maxPositions: 192,
    dModel: 128,
    nHead: 2,
    nLayer: 1,
  }),
  K: 6,
  R: 2,
  c: 13,
  B: 2,
  opts: { lambda: 0.5, auxWeight: 0, stepLoss: "after", injection: "add" },
  examples: longExamples(60, 6, 13),
};

/**
 * Engine parity: run the same ops, the same LOTUS training step and the same short training
 * run on two engines (the CUDA engine under test, the CPU engine as the reference) and
 * measure how far apart they are. This is the logic of the GPU check (check/gpu_check.ts,
 * docs/gpu-check.md); it needs nothing but two {@linkcode Engine}s, so it is tested with the
 * CPU engine standing in for both.
 *
 * The measure is the relative error ‖out − ref‖ / ‖ref‖ over a whole output, in double. A NaN
 * or an infinity anywhere gives an infinite error: NaN never passes.
 *
 * @example
 * ```ts
 * import { openEngine } from "../engine/ffi.ts";
 * import { compareOps, formatTable, summarizeOps } from "./parity.ts";
 * const cpu = openEngine({ quiet: true });
 * const rows = compareOps(cpu, cpu, "fp32");
 * console.log(formatTable(summarizeOps(rows)));
 * cpu.close();
 * ```
 *
 * @module
 */

import { type Engine, type Precision, PRECISION_MODES, type Ptr } from "../engine/ffi.ts";
import {
  type ModelConfig,
  ModelConfigSchema,
  presetConfig,
  type TrainConfig,
  TrainConfigSchema,
} from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { mixSeed, Rng } from "../base/rng.ts";
import { randi, randn, withBufs } from "./_op_bufs.ts";
import { type Example, lotusBatch, plainBatch } from "../train/batch.ts";
import {
  type LotusCapacity,
  type LotusOptions,
  LotusRunner,
  PlainRunner,
  type StepLosses,
} from "../train/step.ts";
import { adamwOf, Model } from "../model/model.ts";
import { type GenerateOptions, Generator } from "../model/generate.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";

/** The tolerances of each check, by precision. */
export interface Tolerances {
  /** One op's output (relative error). */
  op: number;
  /** A LOTUS step's loss (relative difference). */
  stepLoss: number;
  /** A LOTUS step's gradient slab (relative error). */
  stepGrad: number;
  /** A training run's loss curve: the largest relative difference at any step. */
  curve: number;
}

/**
 * The tolerances used by the GPU check. Ops: about 1e-5 in fp32, 1e-3 in TF32 and 1e-2 in
 * bf16 (rounding a matmul operand to TF32 or bf16 costs about 2^-11 or 2^-8 relative per
 * element; random errors of that size leave a few times 1e-4 or 1e-3 norm-wise). A LOTUS
 * step's gradient passes through dozens of matmuls, and 50 AdamW steps let small
 * differences grow, so those get wider bounds.
 */
export const TOLERANCES: Record<Precision, Tolerances> = {
  fp32: { op: 1e-5, stepLoss: 1e-5, stepGrad: 1e-4, curve: 1e-3 },
  tf32: { op: 1e-3, stepLoss: 1e-3, stepGrad: 1e-2, curve: 2e-2 },
  bf16: { op: 1e-2, stepLoss: 1e-2, stepGrad: 5e-2, curve: 5e-2 },
};

/**
 * ‖out − ref‖ / ‖ref‖ in double. Infinity when the lengths differ or any value of either is
 * NaN or infinite; ‖out‖ (the absolute error) when ref is all zero.
 *
 * @example
 * ```ts
 * import { relErr } from "./parity.ts";
 * console.assert(relErr([1, 2], [1, 2]) === 0);
 * console.assert(relErr([NaN], [1]) === Infinity);
 * ```
 */
export function relErr(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < out.length; i++) {
    const a = out[i], b = ref[i];
    if (!Number.isFinite(a) || !Number.isFinite(b)) return Infinity;
    num += (a - b) * (a - b);
    den += b * b;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Elements of two integer arrays that differ (Infinity when the lengths differ). */
export function mismatches(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) return Infinity;
  let n = 0;
  for (let i = 0; i < out.length; i++) if (out[i] !== ref[i]) n++;
  return n;
}

/** One line of a parity report. */
export interface CheckRow {
  /** "ops", "lotus step", "training", "memory", "torch", ... */
  section: string;
  /** What was compared, e.g. "matmul bwd: dw". */
  name: string;
  /** The test engine's precision, or "-" where it does not apply. */
  precision: Precision | "-";
  /** The error measured (relative unless the name says otherwise); NaN when skipped. */
  err: number;
  /** The bound it must stay under. */
  tol: number;
  /** err <= tol and finite; false when skipped. */
  pass: boolean;
  /** True when the check did not run (then `note` says why). */
  skipped?: boolean;
  /** Anything worth a word in the table. */
  note?: string;
  /** Op rows: the largest |out - ref| of any element. */
  maxAbs?: number;
  /** Op rows: the largest |ref| of any element (maxAbs / refMax is the worst element's error
   * relative to the output's scale). */
  refMax?: number;
}

/** A row from a measured error: passes when the error is finite and at most `tol`. */
export function checkRow(
  section: string,
  name: string,
  precision: Precision | "-",
  err: number,
  tol: number,
  note?: string,
): CheckRow {
  return { section, name, precision, err, tol, pass: Number.isFinite(err) && err <= tol, note };
}

/** A failed row for a check that threw `e`: the note is the first line of its message. */
export function errorRow(section: string, name: string, e: unknown): CheckRow {
  const msg = e instanceof Error ? e.message : String(e);
  return { ...checkRow(section, name, "-", Infinity, 0), note: msg.split("\n")[0].slice(0, 160) };
}

/** A row for a check that did not run. */
export function skippedRow(section: string, name: string, why: string): CheckRow {
  return {
    section,
    name,
    precision: "-",
    err: NaN,
    tol: NaN,
    pass: false,
    skipped: true,
    note: why,
  };
}

// ============================================================================================
// Op cases
// ============================================================================================

/** An op (or a few ops) run on one engine from inputs drawn from `seed`. */
export interface OpCase {
  /** For reports, e.g. "matmul bwd". */
  name: string;
  /** True when the outputs go through a matmul, whose arithmetic changes with the
   * precision: they get the precision's bound. Every other op is fp32 at all three
   * precisions and gets the fp32 bound ({@linkcode opTolerance}), except where
   * `tensorCores` says otherwise. */
  matmul?: boolean;
  /** The precision at which the CUDA engine runs this op's products on tensor cores (the
   * statistics form of attention: bf16); the outputs get that precision's bound there. */
  tensorCores?: Precision;
  /** Run on `eng` and download every output. The same seed gives the same inputs. */
  run(eng: Engine, seed: number): Record<string, Float32Array | Int32Array>;
}

/** The shape of an attention case ({@linkcode attentionCase}). */
export interface AttnSpec {
  B: number;
  Tq: number;
  Tp: number;
  C: number;
  NH: number;
  /** Key/value heads: grouped-query attention (le_attention_gqa_*); absent: NKV = NH. */
  NKV?: number;
  /** "none", "qkv" (the prefix's own qkv buffer), "cache" ([B, Tmax, 2C]), "shared" (bs 0). */
  past: "none" | "qkv" | "cache" | "shared";
  /** Leading masked keys per batch entry. */
  pad: number[];
}

/**
 * An attention case: forward and backward, with the past kind and left padding of `s`. With
 * `form` "stats", through le_attention_stats_fwd / _bwd (per-row statistics, the
 * probabilities recomputed in the backward), whose outputs are the same but for `att`; with
 * `s.NKV`, through the grouped-query forms (le_attention_gqa_fwd / _bwd, or
 * le_attention_gqa_stats_fwd / _bwd).
 */
export function attentionCase(name: string, s: AttnSpec, form: "att" | "stats" = "att"): OpCase {
  return {
    name,
    ...(form === "stats" ? { tensorCores: "bf16" as const } : {}),
    run(eng, seed) {
      const rng = new Rng(seed);
      const { B, Tq, Tp, C, NH } = s, Tk = Tp + Tq;
      // Grouped-query attention when NKV is given: rows [q (C) | k (Ckv) | v (Ckv)].
      const gqa = s.NKV !== undefined, Ckv = gqa ? (C / NH) * s.NKV! : C, W = C + 2 * Ckv;
      return withBufs(eng, (b) => {
        const qkv = b.f32(randn(rng, B * Tq * W));
        const dqkv = b.f32(randn(rng, B * Tq * W, 0.1));
        let past: Ptr = null, dpast: Ptr = null, bs = 0, rs = 0, pastFloats = 0;
        if (s.past === "qkv") {
          pastFloats = B * Tp * W, rs = W, bs = Tp * rs;
        } else if (s.past === "cache") {
          const Tmax = Tp + 5;
          pastFloats = B * Tmax * 2 * Ckv, rs = 2 * Ckv, bs = Tmax * rs;
        } else if (s.past === "shared") {
          pastFloats = Tp * 2 * Ckv, rs = 2 * Ckv, bs = 0;
        }
        let pastBuf: Ptr = null, dpastBuf: Ptr = null;
        if (s.past !== "none") {
          pastBuf = b.f32(randn(rng, pastFloats));
          dpastBuf = b.f32(randn(rng, pastFloats, 0.1));
          // A qkv buffer's keys start at column C.
          past = s.past === "qkv" ? b.at(pastBuf, C) : pastBuf;
          dpast = s.past === "qkv" ? b.at(dpastBuf, C) : dpastBuf;
        }
        const valid = new Uint8Array(B * Tk).fill(1);
        for (let bb = 0; bb < B; bb++) {
          for (let j = 0; j < (s.pad[bb] ?? 0); j++) valid[bb * Tk + j] = 0;
        }
        const kv = b.u8(valid);
        const out = b.f32(B * Tq * C);
        const res: Record<string, Float32Array> = {};
        const NKV = s.NKV ?? NH;
        if (form === "stats") {
          const stats = b.f32(B * NH * Tq * 2);
          const dout = b.f32(randn(rng, B * Tq * C));
          if (gqa) {
            eng.attentionGqaStatsFwd(out, stats, qkv, past, kv, B, Tq, Tp, C, NH, NKV, bs, rs);
            eng.attentionGqaStatsBwd(
              dqkv,
              dpast,
              dout,
              out,
              stats,
              kv,
              qkv,
              past,
              B,
              Tq,
              Tp,
              C,
              NH,
              NKV,
              bs,
              rs,
            );
          } else {
            eng.attentionStatsFwd(out, stats, qkv, past, kv, B, Tq, Tp, C, NH, bs, rs);
            eng.attentionStatsBwd(
              dqkv,
              dpast,
              dout,
              out,
              stats,
              kv,
              qkv,
              past,
              B,
              Tq,
              Tp,
              C,
              NH,
              bs,
              rs,
            );
          }
        } else {
          const att = b.f32(B * NH * Tq * Tk);
          const dout = b.f32(randn(rng, B * Tq * C));
          if (gqa) {
            eng.attentionGqaFwd(out, att, qkv, past, kv, B, Tq, Tp, C, NH, NKV, bs, rs);
            eng.attentionGqaBwd(dqkv, dpast, dout, att, qkv, past, B, Tq, Tp, C, NH, NKV, bs, rs);
          } else {
            eng.attentionFwd(out, att, qkv, past, kv, B, Tq, Tp, C, NH, bs, rs);
            eng.attentionBwd(dqkv, dpast, dout, att, qkv, past, B, Tq, Tp, C, NH, bs, rs);
          }
          res.att = b.get(att, B * NH * Tq * Tk);
        }
        res.out = b.get(out, B * Tq * C);
        res.dqkv = b.get(dqkv, B * Tq * W);
        if (dpastBuf) res.dkv_past = b.get(dpastBuf, pastFloats);
        return res;
      });
    },
  };
}

/** LayerNorm forward and backward on N rows of C; `prefix` starts the case's name. */
export function layernormCase(N: number, C: number, prefix = ""): OpCase {
  return {
    name: `${prefix}layernorm fwd, bwd (C=${C})`,
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const x = b.f32(randn(rng, N * C, 2, 3)); // an offset mean tests the two-pass variance
        const w = b.f32(randn(rng, C, 0.2, 1)), bias = b.f32(randn(rng, C, 0.1));
        const out = b.f32(N * C), mean = b.f32(N), rstd = b.f32(N);
        eng.layernormFwd(out, mean, rstd, x, w, bias, N, C);
        const dout = b.f32(randn(rng, N * C));
        const dinp = b.f32(randn(rng, N * C, 0.1));
        const dw = b.f32(randn(rng, C, 0.1)), db = b.f32(randn(rng, C, 0.1));
        eng.layernormBwd(dinp, dw, db, dout, x, w, mean, rstd, N, C);
        return {
          out: b.get(out, N * C),
          mean: b.get(mean, N),
          rstd: b.get(rstd, N),
          dinp: b.get(dinp, N * C),
          dw: b.get(dw, C),
          db: b.get(db, C),
        };
      });
    },
  };
}

/** The residual add fused with LayerNorm, in place on the residual stream, on N rows of C. */
export function residualLayernormCase(N: number, C: number, prefix = ""): OpCase {
  return {
    name: `${prefix}residual layernorm fwd (C=${C})`,
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const a = b.f32(randn(rng, N * C)), y = b.f32(randn(rng, N * C));
        const w = b.f32(randn(rng, C, 0.2, 1)), bias = b.f32(randn(rng, C, 0.1));
        const out = b.f32(N * C), mean = b.f32(N), rstd = b.f32(N);
        // resid aliases a: the in-place residual stream
        eng.residualLayernormFwd(a, out, mean, rstd, a, y, w, bias, N, C);
        return {
          resid: b.get(a, N * C),
          out: b.get(out, N * C),
          mean: b.get(mean, N),
          rstd: b.get(rstd, N),
        };
      });
    },
  };
}

/** Every op of lotus_engine.h, forward and backward, on shapes that exercise the edge cases. */
export const OP_CASES: OpCase[] = [
  {
    name: "copy_rows",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const nb = 3, rows = 5, cols = 37;
        const src = b.f32(randn(rng, nb * rows * cols));
        const dstN = nb * (rows * 40 + 3);
        const d1 = b.f32(randn(rng, dstN)), d2 = b.f32(randn(rng, dstN));
        const d3 = b.f32(randn(rng, rows * cols));
        eng.copyRows(d1, src, nb, rows, cols, rows * 40 + 3, 40, rows * cols, cols, false);
        eng.copyRows(d2, src, nb, rows, cols, rows * 40 + 3, 40, rows * cols, cols, true);
        // dst_bs = 0: every batch entry lands on the same rows, accumulated in order.
        eng.copyRows(d3, src, nb, rows, cols, 0, cols, rows * cols, cols, true);
        // dst_rs = 7 < cols: rows overlap with a shift, accumulated in order.
        const shiftN = (rows - 1) * 7 + cols, d4 = b.f32(randn(rng, shiftN));
        eng.copyRows(d4, src, 1, rows, cols, 0, 7, 0, cols, true);
        return {
          copy: b.get(d1, dstN),
          accumulate: b.get(d2, dstN),
          overlap: b.get(d3, rows * cols),
          "overlap, shifted": b.get(d4, shiftN),
        };
      });
    },
  },
  {
    name: "dropout fwd, bwd",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const n = 10007, p = 0.1;
        const x = b.f32(randn(rng, n)), mask = b.u8(new Uint8Array(n));
        eng.dropoutFwd(x, mask, n, p, BigInt(seed) * 7919n + 3n);
        const dout = b.f32(randn(rng, n)), dinp = b.f32(n);
        eng.dropoutBwd(dinp, dout, mask, n, p);
        return { out: b.get(x, n), dinp: b.get(dinp, n) };
      });
    },
  },
  {
    name: "add, scale",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const n = 10007;
        const x = b.f32(randn(rng, n)), y = b.f32(randn(rng, n));
        eng.add(x, x, y, n);
        eng.scale(x, 0.37, n);
        return { out: b.get(x, n) };
      });
    },
  },
  {
    name: "embed fwd, bwd",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const V = 50, P = 40, C = 48, N = 4200; // more ids than the CUDA backward stages at once
        const ids = randi(rng, N, V);
        for (let i = 20; i < 40; i++) ids[i] = 3; // a run of one row, as latent positions hold
        for (let i = 0; i < N; i += 7) ids[i] = -1; // "replace" injection rows
        const pos = randi(rng, N, P);
        const wte = b.f32(randn(rng, V * C)), wpe = b.f32(randn(rng, P * C));
        const pid = b.i32(ids), ppos = b.i32(pos);
        const out = b.f32(N * C), out2 = b.f32(N * C);
        eng.embedFwd(out, pid, ppos, wte, wpe, N, C);
        eng.embedFwd(out2, pid, null, wte, null, N, C);
        const dwte = b.f32(randn(rng, V * C, 0.1)), dwpe = b.f32(randn(rng, P * C, 0.1));
        const dout = b.f32(randn(rng, N * C));
        eng.embedBwd(dwte, dwpe, dout, pid, ppos, N, C);
        return {
          out: b.get(out, N * C),
          "out (no wpe)": b.get(out2, N * C),
          dwte: b.get(dwte, V * C),
          dwpe: b.get(dwpe, P * C),
        };
      });
    },
  },
  // C not a multiple of 4: the scalar kernels; a multiple of 4: the vector kernels (float4 rows
  // held in registers), with a partly filled last float4 a lane (200, 132). GPT-2's 768 is in
  // parity_shapes.ts.
  ...[[70, 201], [70, 200]].map(([N, C]) => layernormCase(N, C)),
  ...[[33, 130], [33, 132]].map(([N, C]) => residualLayernormCase(N, C)),
  {
    name: "matmul fwd",
    matmul: true,
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const res: Record<string, Float32Array> = {};
        for (const [N, Cin, Cout, withBias] of [[67, 96, 160, 1], [300, 256, 768, 0]]) {
          const x = b.f32(randn(rng, N * Cin)), w = b.f32(randn(rng, Cout * Cin, 0.1));
          const bias = withBias ? b.f32(randn(rng, Cout)) : null;
          const out = b.f32(N * Cout);
          eng.matmulFwd(out, x, w, bias, N, Cin, Cout);
          res[`${N}x${Cin}->${Cout}${withBias ? " +bias" : ""}`] = b.get(out, N * Cout);
        }
        return res;
      });
    },
  },
  {
    name: "matmul bwd",
    matmul: true,
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 67, Cin = 96, Cout = 160;
        const x = b.f32(randn(rng, N * Cin)), w = b.f32(randn(rng, Cout * Cin, 0.1));
        const dout = b.f32(randn(rng, N * Cout));
        const dinp = b.f32(randn(rng, N * Cin, 0.1)), dw = b.f32(randn(rng, Cout * Cin, 0.1));
        const dbias = b.f32(randn(rng, Cout, 0.1));
        eng.matmulBwd(dinp, dw, dbias, dout, x, w, N, Cin, Cout);
        // nullable outputs: only dw, with no w
        const dw2 = b.f32(Cout * Cin);
        eng.matmulBwd(null, dw2, null, dout, x, null, N, Cin, Cout);
        // dinp overwritten (accumulate false): its old values must not show.
        const dinp3 = b.f32(randn(rng, N * Cin, 100));
        eng.matmulBwd(dinp3, null, null, dout, x, w, N, Cin, Cout, false);
        return {
          dinp: b.get(dinp, N * Cin),
          dw: b.get(dw, Cout * Cin),
          dbias: b.get(dbias, Cout),
          "dw only": b.get(dw2, Cout * Cin),
          "dinp overwritten": b.get(dinp3, N * Cin),
        };
      });
    },
  },
  {
    // Widths that are no multiple of 8: the reduced copies' rows are padded (matmul.cuh).
    name: "matmul fwd, bwd, odd widths",
    matmul: true,
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 33, Cin = 45, Cout = 37;
        const x = b.f32(randn(rng, N * Cin)), w = b.f32(randn(rng, Cout * Cin, 0.1));
        const out = b.f32(N * Cout);
        eng.matmulFwd(out, x, w, null, N, Cin, Cout);
        const dout = b.f32(randn(rng, N * Cout));
        const dinp = b.f32(randn(rng, N * Cin, 0.1)), dw = b.f32(randn(rng, Cout * Cin, 0.1));
        eng.matmulBwd(dinp, dw, null, dout, x, w, N, Cin, Cout);
        return {
          out: b.get(out, N * Cout),
          dinp: b.get(dinp, N * Cin),
          dw: b.get(dw, Cout * Cin),
        };
      });
    },
  },
  {
    name: "gelu fwd, bwd",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const n = 5003;
        const x = b.f32(randn(rng, n, 3)), out = b.f32(n);
        eng.geluFwd(out, x, n);
        const dinp = b.f32(randn(rng, n, 0.1)), dout = b.f32(randn(rng, n));
        eng.geluBwd(dinp, x, dout, n);
        // One element in: pointers off 16-byte alignment (the CUDA kernels' scalar path).
        const at = (p: typeof x) => eng.offset(p, 4);
        const out1 = b.f32(n), dinp1 = b.f32(randn(rng, n, 0.1));
        eng.geluFwd(at(out1), at(x), n - 1);
        eng.geluBwd(at(dinp1), at(x), at(dout), n - 1);
        // Overwritten (accumulate false), aligned and not: the old values must not show.
        const dinp2 = b.f32(randn(rng, n, 100)), dinp3 = b.f32(randn(rng, n, 100));
        eng.geluBwd(dinp2, x, dout, n, false);
        eng.geluBwd(at(dinp3), at(x), at(dout), n - 1, false);
        return {
          out: b.get(out, n),
          dinp: b.get(dinp, n),
          "out (unaligned)": b.get(out1, n),
          "dinp (unaligned)": b.get(dinp1, n),
          "dinp overwritten": b.get(dinp2, n),
          "dinp overwritten (unaligned)": b.get(dinp3, n),
        };
      });
    },
  },
  // Left padding; in batch entry 1 the first 5 queries see no valid key (fully masked rows).
  {
    name: "rmsnorm fwd, bwd",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 37, C = 200;
        const x = b.f32(randn(rng, N * C)), w = b.f32(randn(rng, C));
        const out = b.f32(N * C), rstd = b.f32(N);
        eng.rmsnormFwd(out, rstd, x, w, N, C, 1e-5);
        const dx = b.f32(randn(rng, N * C, 0.1)), dw = b.f32(randn(rng, C, 0.1));
        eng.rmsnormBwd(dx, dw, b.f32(randn(rng, N * C)), x, w, rstd, N, C);
        return {
          out: b.get(out, N * C),
          rstd: b.get(rstd, N),
          dinp: b.get(dx, N * C),
          dw: b.get(dw, C),
        };
      });
    },
  },
  // resid aliasing a, as the stack never does but the ABI allows.
  {
    name: "residual rmsnorm fwd",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 37, C = 200;
        const a = b.f32(randn(rng, N * C)), r = b.f32(randn(rng, N * C));
        const w = b.f32(randn(rng, C));
        const resid = b.f32(N * C), out = b.f32(N * C), rstd = b.f32(N);
        eng.residualRmsnormFwd(resid, out, rstd, a, r, w, N, C, 1e-5);
        const out2 = b.f32(N * C);
        eng.residualRmsnormFwd(a, out2, null, a, r, w, N, C, 1e-6);
        return {
          resid: b.get(resid, N * C),
          out: b.get(out, N * C),
          rstd: b.get(rstd, N),
          "in place": b.get(a, N * C),
          "in place out": b.get(out2, N * C),
        };
      });
    },
  },
  {
    name: "rope, forward and inverse",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 29, nh = 6, HS = 16, rs = nh * HS + 32;
        const x = b.f32(randn(rng, N * rs));
        const pos = b.i32(Int32Array.from({ length: N }, (_, n) => (n * 53) % 300));
        const f = b.f32(
          Float32Array.from({ length: HS / 2 }, (_, i) => 1 / 500000 ** ((2 * i) / HS)),
        );
        eng.rope(x, pos, f, N, nh, HS, rs, false);
        const y = b.get(x, N * rs);
        eng.rope(x, pos, f, N, nh - 2, HS, rs, true);
        return { fwd: y, inv: b.get(x, N * rs) };
      });
    },
  },
  {
    name: "swiglu fwd, bwd",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 41, I = 123;
        const x = b.f32(randn(rng, N * 2 * I, 3)), out = b.f32(N * I);
        eng.swigluFwd(out, x, N, I);
        const dx = b.f32(randn(rng, N * 2 * I, 0.1)), dout = b.f32(randn(rng, N * I));
        eng.swigluBwd(dx, x, dout, N, I);
        const dx2 = b.f32(randn(rng, N * 2 * I, 100));
        eng.swigluBwd(dx2, x, dout, N, I, false);
        return {
          out: b.get(out, N * I),
          dinp: b.get(dx, N * 2 * I),
          "dinp overwritten": b.get(dx2, N * 2 * I),
        };
      });
    },
  },
  attentionCase("attention gqa, past in a qkv buffer", {
    B: 2,
    Tq: 17,
    Tp: 11,
    C: 96,
    NH: 6,
    NKV: 2,
    past: "qkv",
    pad: [3, 0],
  }),
  attentionCase("attention gqa, K/V cache, 1 query", {
    B: 3,
    Tq: 1,
    Tp: 30,
    C: 64,
    NH: 4,
    NKV: 1,
    past: "cache",
    pad: [0, 0, 7],
  }),
  attentionCase("attention gqa, past shared by the batch", {
    B: 3,
    Tq: 6,
    Tp: 9,
    C: 32,
    NH: 4,
    NKV: 2,
    past: "shared",
    pad: [0, 0, 0],
  }),
  attentionCase("attention, no past", {
    B: 3,
    Tq: 23,
    Tp: 0,
    C: 64,
    NH: 4,
    past: "none",
    pad: [0, 5, 1],
  }),
  attentionCase("attention, past in a qkv buffer", {
    B: 2,
    Tq: 17,
    Tp: 11,
    C: 96,
    NH: 3,
    past: "qkv",
    pad: [3, 0],
  }),
  attentionCase("attention, K/V cache, 4 queries", {
    B: 2,
    Tq: 4,
    Tp: 13,
    C: 64,
    NH: 2,
    past: "cache",
    pad: [0, 2],
  }),
  attentionCase("attention, K/V cache, 1 query", {
    B: 3,
    Tq: 1,
    Tp: 30,
    C: 64,
    NH: 4,
    past: "cache",
    pad: [0, 0, 7],
  }),
  attentionCase("attention, past shared by the batch", {
    B: 3,
    Tq: 6,
    Tp: 9,
    C: 32,
    NH: 2,
    past: "shared",
    pad: [0, 0, 0],
  }),
  // The statistics form: dead query rows (entry 1's first 3), a qkv past, and the dq tile
  // recomputing probabilities of keys in several key tiles.
  attentionCase("attention (stats), past in a qkv buffer", {
    B: 2,
    Tq: 37,
    Tp: 11,
    C: 64,
    NH: 2,
    past: "qkv",
    pad: [2, 14],
  }, "stats"),
  attentionCase("attention (stats), past shared by the batch", {
    B: 3,
    Tq: 6,
    Tp: 9,
    C: 32,
    NH: 2,
    past: "shared",
    pad: [0, 4, 0],
  }, "stats"),
  // Key 32, the first of a 16-key tile, is seen by query 32 alone, the last.
  attentionCase("attention (stats), no past, a key seen by the last query only", {
    B: 2,
    Tq: 33,
    Tp: 0,
    C: 64,
    NH: 2,
    past: "none",
    pad: [0, 3],
  }, "stats"),
  // A head size of 15: the tensor-core kernels stage rows with scalar loads (not a multiple of
  // 4 channels, and rows of 90 floats alternate in 16-byte alignment) and pad to 16 channels.
  attentionCase("attention (stats), head size 15, rows not 16-byte aligned", {
    B: 2,
    Tq: 20,
    Tp: 5,
    C: 30,
    NH: 2,
    past: "qkv",
    pad: [1, 0],
  }, "stats"),
  // Head sizes over 64: the tensor-core kernels' 128-channel instance, which streams 32 rows
  // at a time (Llama 3B's head size 128, grouped; 80 padded to 128 with zero channels).
  attentionCase("attention gqa (stats), head size 128, 32-row streamed tiles", {
    B: 1,
    Tq: 70,
    Tp: 40,
    C: 256,
    NH: 2,
    NKV: 1,
    past: "qkv",
    pad: [3],
  }, "stats"),
  attentionCase("attention (stats), head size 80, padded to 128 channels", {
    B: 2,
    Tq: 33,
    Tp: 0,
    C: 160,
    NH: 2,
    past: "none",
    pad: [0, 5],
  }, "stats"),
  // Grouped-query attention in the statistics form: a group's heads summed into one key/value
  // head's gradients over several key and query tiles, a qkv past and a shared one.
  attentionCase("attention gqa (stats), past in a qkv buffer", {
    B: 2,
    Tq: 37,
    Tp: 11,
    C: 96,
    NH: 6,
    NKV: 2,
    past: "qkv",
    pad: [2, 14],
  }, "stats"),
  attentionCase("attention gqa (stats), past shared by the batch", {
    B: 3,
    Tq: 6,
    Tp: 9,
    C: 32,
    NH: 4,
    NKV: 1,
    past: "shared",
    pad: [0, 4, 0],
  }, "stats"),
  {
    name: "xent fwd+bwd",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 40, V = 1000;
        const t = randi(rng, N, V);
        for (let i = 0; i < N; i += 6) t[i] = -100; // ignored rows
        const targets = b.i32(t);
        const l1 = randn(rng, N * V, 3);
        const logits = b.f32(l1), losses = b.f32(N);
        eng.xentFwdBwd(logits, losses, targets, N, V, 0.37);
        const logits2 = b.f32(l1), losses2 = b.f32(N);
        eng.xentFwdBwd(logits2, losses2, targets, N, V, 0);
        return {
          losses: b.get(losses, N),
          "dlogits (dscale 0.37)": b.get(logits, N * V),
          "losses (dscale 0)": b.get(losses2, N),
          "logits (dscale 0, unchanged)": b.get(logits2, N * V),
        };
      });
    },
  },
  {
    name: "argmax",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const N = 30, V = 257;
        const x = randn(rng, N * V);
        for (let v = 0; v < V; v++) x[0 * V + v] = NaN; // all NaN: V-1
        x[1 * V] = NaN; // NaN first, then numbers
        x[2 * V + 10] = x[2 * V + 200] = 50; // a tie: the lowest index
        for (let v = 0; v < V; v++) x[3 * V + v] = 1; // all equal: 0
        x[4 * V + V - 1] = 60; // the last
        const logits = b.f32(x), out = b.i32(new Int32Array(N));
        eng.argmax(out, logits, N, V);
        return { argmax: b.geti(out, N) };
      });
    },
  },
  {
    name: "sumsq, adamw",
    run(eng, seed) {
      const rng = new Rng(seed);
      return withBufs(eng, (b) => {
        const n = 100003;
        const g = b.f32(randn(rng, n, 0.01));
        const sq = b.f32(1);
        eng.sumsq(sq, g, n);
        const p = b.f32(randn(rng, n)), m = b.f32(randn(rng, n, 0.01));
        const v = b.f32(Float32Array.from(randn(rng, n, 1e-4), Math.abs));
        eng.adamw(p, g, m, v, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, 3, sq, 1.0); // clip active
        const p2 = b.f32(randn(rng, n)), m2 = b.f32(n), v2 = b.f32(n);
        eng.adamw(p2, g, m2, v2, n, 3e-4, 0.9, 0.95, 1e-8, 0.1, 1, null, 0); // first step, no clip
        return {
          sumsq: b.get(sq, 1),
          "p (clipped)": b.get(p, n),
          "m (clipped)": b.get(m, n),
          "v (clipped)": b.get(v, n),
          "p (step 1)": b.get(p2, n),
        };
      });
    },
  },
];

/**
 * The bound of one op case at one precision: the precision's op bound for matmul cases and
 * for cases that run on tensor cores at that precision, the fp32 bound for every other op
 * (their kernels do not change with the precision).
 */
export function opTolerance(c: OpCase, precision: Precision): number {
  return c.matmul || c.tensorCores === precision ? TOLERANCES[precision].op : TOLERANCES.fp32.op;
}

/** The largest |out - ref| and the largest |ref| (Infinity when anything is not finite). */
export function absStats(
  out: ArrayLike<number>,
  ref: ArrayLike<number>,
): { maxAbs: number; refMax: number } {
  if (out.length !== ref.length) return { maxAbs: Infinity, refMax: 0 };
  let maxAbs = 0, refMax = 0;
  for (let i = 0; i < out.length; i++) {
    const d = Math.abs(out[i] - ref[i]);
    if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : d;
    const r = Math.abs(ref[i]);
    if (r > refMax) refMax = r;
  }
  return { maxAbs, refMax };
}

/**
 * Runs every op case on `test` (at `precision`) and on `ref` (fp32) and compares each output:
 * relative error for floats, the number of differing elements for integers (which must be 0).
 * The test engine is left at fp32.
 */
export function compareOps(
  test: Engine,
  ref: Engine,
  precision: Precision,
  opts: { seed?: number; cases?: OpCase[] } = {},
): CheckRow[] {
  const seed = opts.seed ?? 1234;
  const rows: CheckRow[] = [];
  test.setPrecision(PRECISION_MODES[precision]);
  try {
    for (const c of opts.cases ?? OP_CASES) {
      const tol = opTolerance(c, precision);
      const a = c.run(test, seed), r = c.run(ref, seed);
      for (const [k, refOut] of Object.entries(r)) {
        const out = a[k];
        if (refOut instanceof Int32Array) {
          rows.push(
            checkRow("ops", `${c.name}: ${k}`, precision, mismatches(out, refOut), 0, "mismatches"),
          );
        } else {
          rows.push({
            ...checkRow(
              "ops",
              `${c.name}: ${k}`,
              precision,
              out ? relErr(out, refOut) : Infinity,
              tol,
            ),
            ...(out ? absStats(out, refOut) : { maxAbs: Infinity, refMax: 0 }),
          });
        }
      }
    }
  } finally {
    test.setPrecision(0);
  }
  return rows;
}

/** One row per precision: the worst op error, and how many outputs passed. */
export function summarizeOps(rows: CheckRow[]): CheckRow[] {
  const out: CheckRow[] = [];
  const byPrec = new Map<string, CheckRow[]>();
  for (const r of rows.filter((r) => r.section === "ops")) {
    byPrec.set(r.precision, [...(byPrec.get(r.precision) ?? []), r]);
  }
  for (const [prec, rs] of byPrec) {
    const failed = rs.filter((r) => !r.pass);
    const floats = rs.filter((r) => r.note !== "mismatches");
    const worst = floats.reduce(
      (w, r) => (!Number.isFinite(r.err) || r.err > w.err ? r : w),
      floats[0] ?? rs[0],
    );
    out.push({
      section: "ops",
      name: `${rs.length} outputs of ${new Set(rs.map((r) => r.name.split(":")[0])).size} cases`,
      precision: prec as Precision,
      err: worst.err,
      tol: worst.tol,
      pass: failed.length === 0,
      note: failed.length
        ? `${failed.length} failed: ${failed.slice(0, 3).map((r) => r.name).join("; ")}`
        : `worst: ${worst.name}`,
    });
  }
  return out;
}

// ============================================================================================
// Models: the LOTUS step, a training run, memory cycles
// ============================================================================================

/** Special ids for a vocabulary of `v`: the last four ids. */
export function specialsFor(v: number): SpecialIds {
  return { eos: v - 4, pad: v - 4, bot: v - 3, eot: v - 2, lat: v - 1 };
}

/** `n` random examples over the ids [0, v-4): questions, 1-3 steps, an answer ending in EOS. */
export function randomExamples(n: number, v: number, seed: number): Example[] {
  const rng = new Rng(seed), eos = specialsFor(v).eos;
  const seq = (len: number) => Int32Array.from({ length: len }, () => rng.below(v - 4));
  return Array.from({ length: n }, (_, i) => ({
    q: seq(3 + rng.below(6)),
    steps: Array.from({ length: 1 + rng.below(3) }, () => seq(1 + rng.below(4))),
    ans: Int32Array.from([...seq(1 + rng.below(3)), eos]),
    index: i,
  }));
}

/** GPT-2 initialisation with LayerNorm gains and biases perturbed, so every path carries a
 * gradient, and weights scaled by `scale`. */
export function perturbedParams(cfg: ModelConfig, seed: number, scale = 3): Float32Array {
  const layout = paramLayout(cfg);
  const p = initParams(layout, cfg, seed);
  const rng = new Rng(seed + 1);
  for (const t of layout.tensors) {
    const v = p.subarray(t.offset, t.offset + t.size);
    for (let i = 0; i < v.length; i++) {
      v[i] = t.init === "ones"
        ? 1 + 0.2 * rng.normal()
        : t.init === "zeros"
        ? 0.05 * rng.normal()
        : v[i] * scale;
    }
  }
  return p;
}

/** A LOTUS step configuration compared by {@linkcode compareLotusStep}. */
export interface StepSpec {
  /** For reports. */
  name: string;
  /** The model (its parameters are drawn by {@linkcode perturbedParams}). */
  model: ModelConfig;
  /** Latent blocks. */
  K: number;
  /** Loop iterations. */
  R: number;
  /** Latent slots per block. */
  c: number;
  /** Batch size (random examples). */
  B: number;
  /** The LOTUS options of the step. */
  opts: LotusOptions;
  /** The examples (default {@linkcode randomExamples}: short questions and steps). */
  examples?: (n: number, v: number, seed: number) => Example[];
}

/** The two step configurations of the GPU check: the default LOTUS step, and LOTUS-aux with
 * "replace" injection and in-loop step loss (every code path of train/step.ts). */
export const STEP_SPECS: StepSpec[] = [
  {
    name: "lotus (add, step loss after)",
    model: ModelConfigSchema.parse({
      vocabSize: 96,
      maxPositions: 128,
      dModel: 64,
      nHead: 4,
      nLayer: 2,
    }),
    K: 2,
    R: 2,
    c: 3,
    B: 4,
    opts: { lambda: 0.5, auxWeight: 0, stepLoss: "after", injection: "add" },
  },
  {
    name: "lotus-aux (replace, in-loop)",
    model: ModelConfigSchema.parse({
      vocabSize: 80,
      maxPositions: 128,
      dModel: 48,
      nHead: 3,
      nLayer: 2,
      auxLayers: 1,
      auxHeads: 2,
    }),
    K: 3,
    R: 2,
    c: 2,
    B: 3,
    opts: { lambda: 0.3, auxWeight: 0.7, stepLoss: "in-loop", injection: "replace" },
  },
];

/**
 * A Llama step for the same checks: grouped-query attention (4 heads, 2 KV heads), SwiGLU,
 * rotary positions with Llama 3's scaling set so that the batch's positions meet all three of
 * its bands, an untied LM head.
 */
export const LLAMA_STEP_SPEC: StepSpec = {
  name: "llama lotus (add, step loss after; GQA, untied head)",
  model: ModelConfigSchema.parse({
    vocabSize: 88,
    maxPositions: 128,
    dModel: 64,
    nHead: 4,
    nLayer: 2,
    arch: "llama",
    nKvHead: 2,
    dFf: 96,
    ropeTheta: 10000,
    ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 32 },
    normEps: 1e-5,
    tieEmbeddings: false,
  }),
  K: 2,
  R: 2,
  c: 3,
  B: 3,
  opts: { lambda: 0.5, auxWeight: 0, stepLoss: "after", injection: "add" },
};

/**
 * A training runner's capacity for `exs`, recomputing on the CUDA engine as training there
 * does by default (so the CUDA side of a comparison runs the rebuilt activations against the
 * CPU engine's kept ones).
 */
function capacityFor(
  exs: Example[],
  spec: { K: number; R: number; c: number; B: number },
  sp: SpecialIds,
  eng: Engine,
): LotusCapacity {
  const b = lotusBatch(exs, sp, { K: spec.K, R: spec.R, c: spec.c });
  let longest = 0;
  for (const e of exs) for (const s of e.steps) longest = Math.max(longest, s.length);
  const { B, K, R, c } = spec;
  return { B, P: b.P, K, c, R, S: b.S, auxT: c + longest, recompute: eng.backend === "cuda" };
}

/** One training step's loss and gradient slab on an engine; `over` changes the capacity. */
export function lotusLossAndGrad(
  eng: Engine,
  spec: StepSpec,
  params: Float32Array,
  exs: Example[],
  over: Partial<LotusCapacity> = {},
): { loss: number; grad: Float32Array } {
  const sp = specialsFor(spec.model.vocabSize);
  const model = new Model(eng, spec.model, params, true);
  let runner: LotusRunner | null = null;
  try {
    runner = new LotusRunner(model, { ...capacityFor(exs, spec, sp, eng), ...over }, true);
    model.zeroGrad();
    const l = runner.step(lotusBatch(exs, sp, spec), spec.opts, exs);
    return { loss: l.loss, grad: model.downloadGrads() };
  } finally {
    runner?.free();
    model.free();
  }
}

/** A full LOTUS step (forward and backward through every pass) on both engines: the loss
 * and the whole gradient slab. */
export function compareLotusStep(
  test: Engine,
  ref: Engine,
  precision: Precision,
  spec: StepSpec,
  seed = 7,
): CheckRow[] {
  const exs = (spec.examples ?? randomExamples)(spec.B, spec.model.vocabSize, seed);
  const params = perturbedParams(spec.model, seed);
  test.setPrecision(PRECISION_MODES[precision]);
  let a;
  try {
    a = lotusLossAndGrad(test, spec, params, exs);
  } finally {
    test.setPrecision(0);
  }
  const r = lotusLossAndGrad(ref, spec, params, exs);
  const tol = TOLERANCES[precision];
  return [
    checkRow(
      "lotus step",
      `${spec.name}: loss`,
      precision,
      relErr([a.loss], [r.loss]),
      tol.stepLoss,
      `ref loss ${r.loss.toFixed(4)}`,
    ),
    checkRow(
      "lotus step",
      `${spec.name}: gradients`,
      precision,
      relErr(a.grad, r.grad),
      tol.stepGrad,
      `${r.grad.length} parameters`,
    ),
  ];
}

/** What {@linkcode trainCurve} returns. */
export interface Curve {
  /** The loss of every step. */
  losses: number[];
  /** The parameters after the last step. */
  params: Float32Array;
}

/**
 * `steps` AdamW steps of the `tiny` preset (LOTUS, K = 2, c = 3, R = 2, batch 8) on a fixed
 * pool of random examples, with the trainer's default optimiser settings.
 */
export function trainCurve(eng: Engine, steps: number, seed = 11): Curve {
  const V = 128, B = 8, spec = { K: 2, R: 2, c: 3, B };
  const cfg = presetConfig("tiny", V);
  const sp = specialsFor(V);
  const pool = randomExamples(32, V, seed);
  const train = TrainConfigSchema.parse({ k: 2, c: 3, r: 2 });
  const order = Int32Array.from({ length: pool.length }, (_, i) => i);
  const rng = new Rng(seed);
  const opts: LotusOptions = {
    lambda: train.lambda,
    auxWeight: 0,
    stepLoss: "after",
    injection: "add",
  };
  const run = trainSteps(eng, cfg, initParams(paramLayout(cfg), cfg, seed), train, (model) => {
    const runner = new LotusRunner(model, capacityFor(pool, spec, sp, eng), true);
    return {
      step: (s) => {
        const at = (s * B) % pool.length;
        if (at === 0) rng.shuffle(order);
        const exs = Array.from(order.subarray(at, at + B), (i) => pool[i]);
        return runner.step(lotusBatch(exs, sp, spec), opts, exs);
      },
      recorded: () => runner.recordedSteps,
      free: () => runner.free(),
    };
  }, steps);
  return { losses: run.losses, params: run.params };
}

/** A training run on both engines: the largest relative loss difference over the curve, and
 * the final parameters' relative error (reported, not bounded). */
export function compareTraining(
  test: Engine,
  ref: Engine,
  precision: Precision,
  steps = 50,
  refCurve?: Curve,
): { rows: CheckRow[]; test: Curve; ref: Curve } {
  test.setPrecision(PRECISION_MODES[precision]);
  let a: Curve;
  try {
    a = trainCurve(test, steps);
  } finally {
    test.setPrecision(0);
  }
  const r = refCurve ?? trainCurve(ref, steps);
  let worst = 0, at = 0;
  for (let i = 0; i < steps; i++) {
    let d = Math.abs(a.losses[i] - r.losses[i]) / Math.abs(r.losses[i]);
    if (!Number.isFinite(d)) d = Infinity; // NaN never passes
    if (d > worst) worst = d, at = i + 1;
  }
  const pe = relErr(a.params, r.params);
  return {
    rows: [
      checkRow(
        "training",
        `tiny, ${steps} steps: loss curve`,
        precision,
        worst,
        TOLERANCES[precision].curve,
        `loss ${r.losses[0].toFixed(3)} -> ${
          r.losses[steps - 1].toFixed(3)
        } (ref); worst at step ${at}; final params rel. err ${pe.toExponential(1)}`,
      ),
    ],
    test: a,
    ref: r,
  };
}

/**
 * `cycles` times: open an engine, allocate a training model and its activations, run one
 * step, free everything and close. The engine's bytes in use must come back to where they
 * started after every cycle, and the driver's free device memory (when `memInfo` gives it)
 * must not shrink between the end of cycle `warm` and the last cycle by more than `slack`.
 */
export function memoryCycles(
  open: () => Engine,
  opts: {
    cycles?: number;
    warm?: number;
    slack?: number;
    memInfo?: () => { free: number; total: number } | null;
  } = {},
): CheckRow[] {
  const cycles = opts.cycles ?? 100, warm = opts.warm ?? 5, slack = opts.slack ?? 8 << 20;
  const spec = STEP_SPECS[0];
  const exs = randomExamples(spec.B, spec.model.vocabSize, 3);
  const params = perturbedParams(spec.model, 3);
  let leaked = 0, base = -1, freeAfterWarm: number | null = null, freeEnd: number | null = null;
  for (let i = 0; i < cycles; i++) {
    const eng = open();
    try {
      if (base < 0) base = eng.bytesInUse();
      lotusLossAndGrad(eng, spec, params, exs);
      leaked = Math.max(leaked, eng.bytesInUse() - base);
      if (i + 1 === warm) freeAfterWarm = opts.memInfo?.()?.free ?? null;
      if (i + 1 === cycles) freeEnd = opts.memInfo?.()?.free ?? null;
    } finally {
      eng.close();
    }
  }
  const rows = [
    checkRow(
      "memory",
      `${cycles} open/train/free/close cycles: le_bytes_in_use growth (bytes)`,
      "-",
      leaked,
      0,
    ),
  ];
  if (freeAfterWarm !== null && freeEnd !== null) {
    const growth = freeAfterWarm - freeEnd;
    rows.push(
      checkRow(
        "memory",
        `driver's used device memory, cycle ${warm} -> ${cycles} (bytes)`,
        "-",
        Math.max(0, growth),
        slack,
        `${(growth / 1048576).toFixed(2)} MiB`,
      ),
    );
  } else {
    rows.push(skippedRow("memory", "driver's view of device memory", "no CUDA driver"));
  }
  return rows;
}

// ============================================================================================
// Report
// ============================================================================================

function fmtNum(x: number): string {
  if (Number.isNaN(x)) return "-";
  if (!Number.isFinite(x)) return "inf";
  if (x === 0) return "0";
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  return x.toExponential(1);
}

/**
 * A plain-text table of rows: section, check, precision, error, tolerance, result and note.
 *
 * @example
 * ```ts
 * import { checkRow, formatTable } from "./parity.ts";
 * console.log(formatTable([checkRow("ops", "gelu", "fp32", 2e-7, 1e-5)]));
 * ```
 */
export function formatTable(rows: CheckRow[]): string {
  const head = ["section", "check", "precision", "error", "tolerance", "result", "note"];
  const body = rows.map((r) => [
    r.section,
    r.name,
    r.precision,
    fmtNum(r.err),
    fmtNum(r.tol),
    r.skipped ? "SKIPPED" : r.pass ? "ok" : "FAIL",
    r.note ?? "",
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(width[i]))).join(" | ").trimEnd();
  return [line(head), width.map((w) => "-".repeat(w)).join("-|-"), ...body.map(line)].join("\n");
}

/** Counts of passed, failed and skipped rows. */
export function tally(rows: CheckRow[]): { passed: number; failed: number; skipped: number } {
  let passed = 0, failed = 0, skipped = 0;
  for (const r of rows) {
    if (r.skipped) skipped++;
    else if (r.pass) passed++;
    else failed++;
  }
  return { passed, failed, skipped };
}

/**
 * `fn` on the engine opened by `open` with the environment settings `env` (which le_init
 * reads); afterwards the settings are put back as they were (set or unset) and the engine
 * opened again, so that le_init restores them. Closing an engine leaves its library, and its
 * state, loaded.
 */
export function withEngineSettings<T>(
  open: () => Engine,
  env: Record<string, string>,
  fn: (eng: Engine) => T,
): T {
  const before = Object.keys(env).map((k) => [k, Deno.env.get(k)] as const);
  for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);
  try {
    const eng = open();
    try {
      return fn(eng);
    } finally {
      eng.close();
    }
  } finally {
    for (const [k, v] of before) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    open().close();
  }
}

/** {@linkcode withEngineSettings} with the engine in bf16 (mode 2) for `fn`, fp32 again after. */
export function withBf16Settings<T>(
  open: () => Engine,
  env: Record<string, string>,
  fn: (eng: Engine) => T,
): T {
  return withEngineSettings(open, env, (eng) => {
    eng.setPrecision(2);
    try {
      return fn(eng);
    } finally {
      eng.setPrecision(0);
    }
  });
}

/** How many elements of `a` and `b` (the same length) differ in their bits. */
export function differingBits(a: Float32Array | Int32Array, b: Float32Array | Int32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let n = Math.abs(x.length - y.length);
  for (let j = 0; j < Math.min(x.length, y.length); j++) n += x[j] !== y[j] ? 1 : 0;
  return n;
}

/** The values of each of `runs` that differ in their bits from `apart`'s, and how many in all. */
function differingRuns(
  apart: Float32Array[],
  runs: Float32Array[][],
): { differ: number; total: number } {
  let differ = 0, total = 0;
  for (const run of runs) {
    run.forEach((v, i) => {
      differ += differingBits(v, apart[i]);
      total += v.length;
    });
  }
  return { differ, total };
}

/**
 * Settings of the CUDA engine against its defaults in a whole LOTUS step (`spec`, in bf16,
 * launched op by op), the loss and every gradient, each held to the defaults' bits unless said
 * otherwise: kernels launched without programmatic dependent launch (`LOTUS_PDL=0`; a kernel
 * that touched memory before its wait could race with the kernel before it only with it on),
 * GELU's backward run as its own kernel rather than by the fc matmul's backward
 * (`LOTUS_DEFER_GELU_BWD=0`), each layer's qkv kept in fp32 rather than in bf16 storage
 * (`LOTUS_BF16_QKV=0`; the tensor-core attention rounds fp32 qkv as it stages it, and the
 * matmul rounds the same sums into bf16 storage) and each layer's MLP first projection kept in
 * fp32 rather than in bf16 storage (`LOTUS_BF16_FCH=0`). The emulation's cuBLASLt writes bf16 D
 * as the GPU's epilogue is documented to; on a GPU its kernels for a bf16 D may sum in another
 * order than for an fp32 D, so with `exactQkv` false (a GPU's check) the qkv row's err is the
 * gradient's relative difference, bounded as a bf16 step's (TOLERANCES), rather than a count of
 * differing bits. The last row changes values (GELU reads the sums unrounded), so it is always
 * held to a bf16 step's bounds, and must differ in some bits (else the setting did nothing).
 * `open` opens the engine again, whose le_init reads the settings; the defaults are restored
 * before returning. `err` counts the values whose bits differ.
 */
export function compareStepSettings(
  open: () => Engine,
  spec: StepSpec,
  seed = 7,
  exactQkv = true,
): CheckRow[] {
  const exs = (spec.examples ?? randomExamples)(spec.B, spec.model.vocabSize, seed);
  const params = perturbedParams(spec.model, seed);
  const run = (env: Record<string, string>) =>
    withBf16Settings(open, env, (eng) => {
      const r = lotusLossAndGrad(eng, spec, params, exs);
      return { info: eng.deviceInfo(), loss: Float32Array.of(r.loss), grad: r.grad };
    });
  const base = run({});
  // How each setting's step is held to the defaults': "bits" to the same bits; "values" to a
  // bf16 step's bounds, some bits differing (the setting changes values); "order" to the bits
  // in the emulation and to a bf16 step's bounds on a GPU (`exactQkv` false), whose kernels may
  // sum in another order.
  const settings: { what: string; key: string; info: string; held: "bits" | "values" | "order" }[] =
    [
      {
        what: "kernels launched without programmatic dependent launch",
        key: "LOTUS_PDL",
        info: "pdl",
        held: "bits",
      },
      {
        what: "GELU's backward as its own kernel",
        key: "LOTUS_DEFER_GELU_BWD",
        info: "deferGeluBwd",
        held: "bits",
      },
      {
        what: "qkv kept in fp32 rather than bf16 storage",
        key: "LOTUS_BF16_QKV",
        info: "bf16Qkv",
        held: "order",
      },
      {
        what: "the MLP's first projection kept in fp32 rather than bf16",
        key: "LOTUS_BF16_FCH",
        info: "bf16Fch",
        held: "values",
      },
    ];
  return settings.map(({ what, key, info, held }) => {
    const got = run({ [key]: "0" });
    const differ = differingBits(got.loss, base.loss) + differingBits(got.grad, base.grad);
    const took = base.info[info] === true && got.info[info] === false;
    const note = `${differ} of ${1 + got.grad.length} values differ; le_device_info's ${info}: ${
      base.info[info]
    } by default, ${got.info[info]} with ${key}=0`;
    if (held === "values" || (held === "order" && !exactQkv)) {
      const rel = relErr(got.grad, base.grad), lossRel = relErr(got.loss, base.loss);
      const changed = held !== "values" || differ > 0;
      return checkRow(
        "lotus step",
        `${spec.name}, ${what} (${key}=0): the defaults' gradient, to bf16's rounding`,
        "bf16",
        took && lossRel <= TOLERANCES.bf16.stepLoss && changed ? rel : Infinity,
        TOLERANCES.bf16.stepGrad,
        `${note}; the losses ${lossRel.toExponential(2)} apart (relative)`,
      );
    }
    return checkRow(
      "lotus step",
      `${spec.name}, ${what} (${key}=0): the defaults' bits`,
      "bf16",
      took ? differ : Math.max(differ, 1),
      0,
      note,
    );
  });
}

/**
 * The settings of the CUDA engine's tensor-core attention that must not change a bit: the
 * backward staging the fp32 rows rather than bf16 copies of them (`LOTUS_TC_BF16_ROWS=0`),
 * blocks of at most 4 warps, 64 rows, whatever the sequence (`LOTUS_TC_WARPS=4`), and each
 * tile waited for before the products that its staging would overlap (`LOTUS_TC_AHEAD=0`), each
 * against the defaults on `cases` (the statistics form, in bf16). `open` opens the engine
 * again, whose le_init reads the settings; the defaults are restored before returning. `err`
 * counts the elements whose bits differ.
 */
export function compareAttentionSettings(
  open: () => Engine,
  cases: OpCase[],
  seed = 7,
): CheckRow[] {
  const run = (env: Record<string, string>) =>
    withBf16Settings(open, env, (eng) => cases.map((c) => c.run(eng, seed)));
  const base = run({});
  const settings: [string, Record<string, string>][] = [
    ["backward from fp32 rows (LOTUS_TC_BF16_ROWS=0)", { LOTUS_TC_BF16_ROWS: "0" }],
    ["64-row blocks (LOTUS_TC_WARPS=4)", { LOTUS_TC_WARPS: "4" }],
    ["tiles waited for before the products (LOTUS_TC_AHEAD=0)", { LOTUS_TC_AHEAD: "0" }],
  ];
  return settings.map(([what, env]) => {
    const got = run(env);
    let differ = 0, total = 0;
    for (let i = 0; i < cases.length; i++) {
      for (const [k, want] of Object.entries(base[i])) {
        differ += differingBits(got[i][k], want);
        total += want.length;
      }
    }
    return checkRow(
      "ops",
      `tensor-core attention, ${what}: the defaults' bits`,
      "bf16",
      differ,
      0,
      `${differ} of ${total} values differ over ${cases.length} cases`,
    );
  });
}

/** `v` rounded to the nearest bf16 (ties to even), as the engines' bf16 rounding does. */
function bf16Round(v: number): number {
  const u = new Uint32Array(Float32Array.of(v).buffer)[0];
  if ((u & 0x7fffffff) > 0x7f800000) return v; // NaN
  const r = (u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000;
  return new Float32Array(Uint32Array.of(r >>> 0).buffer)[0];
}

/**
 * The bf16 matmul's forward, exactly: out[n, c] = bias[c] + sum_k bf16(x[n, k]) bf16(w[c, k]),
 * summed in double (x [N, Cin], w [Cout, Cin], bias [Cout] or null).
 */
export function bf16Forward(
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | null,
  N: number,
  Cin: number,
  Cout: number,
): Float64Array {
  const out = new Float64Array(N * Cout);
  // The operands rounded once (the products' loop is then a plain dot product).
  const xr = Float64Array.from(x.subarray(0, N * Cin), bf16Round);
  const wr = Float64Array.from(w.subarray(0, Cout * Cin), bf16Round);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < Cout; c++) {
      let acc = bias ? bias[c] : 0;
      for (let k = 0, i = n * Cin, j = c * Cin; k < Cin; k++) acc += xr[i + k] * wr[j + k];
      out[n * Cout + c] = acc;
    }
  }
  return out;
}

/** A forward's shape in the own-kernel comparisons: rows, Cin, Cout, with a bias or not. */
export type ForwardShape = readonly [number, number, number, boolean];

/**
 * bf16 forwards over weights with a kept bf16 copy, run with `kernelEnv` (the CUDA engine's
 * own kernel serving them) and with `gemmEnv` (cuBLAS's GEMM), against the bf16 products
 * summed in double: the same operands, summed in fp32 in other orders, so both agree with the
 * double sums, and with each other, to fp32's rounding. `err` is the kernel's largest relative
 * error against the double sums (tolerance 1e-5); the note gives cuBLAS's and the largest
 * difference between the two.
 */
function compareOwnForwards(
  open: () => Engine,
  seed: number,
  shapes: readonly ForwardShape[],
  env: { kernel: Record<string, string>; gemm: Record<string, string>; gemmName: string },
  name: string,
  where: string,
): CheckRow {
  const rng = new Rng(seed);
  const data = shapes.map(([N, Cin, Cout]) => ({
    x: randn(rng, N * Cin),
    w: randn(rng, Cout * Cin, 0.05),
    b: randn(rng, Cout, 0.1),
  }));
  const run = (settings: Record<string, string>) =>
    withBf16Settings(
      open,
      settings,
      (eng) =>
        withBufs(eng, (bufs) =>
          shapes.map(([N, Cin, Cout, bias], i) => {
            const { x, w, b } = data[i];
            const wp = bufs.f32(w), out = bufs.f32(N * Cout);
            eng.keepBf16(wp, w.length);
            eng.matmulFwd(out, bufs.f32(x), wp, bias ? bufs.f32(b) : null, N, Cin, Cout);
            return bufs.get(out, N * Cout);
          })),
    );
  const kernel = run(env.kernel), gemm = run(env.gemm);
  let err = 0, gemmErr = 0, between = 0;
  shapes.forEach(([N, Cin, Cout, bias], i) => {
    const { x, w, b } = data[i];
    const want = bf16Forward(x, w, bias ? b : null, N, Cin, Cout);
    err = Math.max(err, relErr(kernel[i], want));
    gemmErr = Math.max(gemmErr, relErr(gemm[i], want));
    between = Math.max(between, relErr(kernel[i], gemm[i]));
  });
  return checkRow(
    "ops",
    name,
    "bf16",
    err,
    1e-5,
    `${shapes.length} shapes ${where}; cuBLAS's GEMM (${env.gemmName}) ${
      gemmErr.toExponential(1)
    }; kernel against GEMM ${between.toExponential(1)}`,
  );
}

/**
 * The CUDA engine's bf16 forwards of 1 to 8 rows over a weight with a kept bf16 copy
 * (gemv_bf16_kernel, matmul.cuh) at GPT-2 small's widths, against the bf16 products summed in
 * double and against the same calls through cuBLAS's GEMM (`LOTUS_GEMV=0`), as
 * compareOwnForwards says. `open` opens the engine again, whose le_init reads the setting; the
 * default is restored before returning.
 */
export function compareFewRowForwards(open: () => Engine, seed = 11): CheckRow {
  return compareOwnForwards(
    open,
    seed,
    [[1, 768, 2304, true], [4, 3072, 768, true], [8, 768, 3072, false]],
    { kernel: {}, gemm: { LOTUS_GEMV: "0" }, gemmName: "LOTUS_GEMV=0" },
    "bf16 forwards of 1 to 8 rows (gemv kernel) against the bf16 products summed in double",
    "at GPT-2's widths",
  );
}

/** GPT-2 small's four forwards of a batch-1 loop pass (79 rows) and of 9, 60 and 128 rows. */
export const SKINNY_SHAPES: readonly ForwardShape[] = [
  [79, 768, 2304, true],
  [79, 768, 768, true],
  [79, 768, 3072, true],
  [79, 3072, 768, true],
  [9, 768, 2304, true],
  [60, 3072, 768, false],
  [128, 768, 768, true],
];

/**
 * The CUDA engine's bf16 forwards of 9 to 128 rows by its split-K kernel
 * (skinny_gemm_kernel, `LOTUS_SKINNY=2`: wherever it applies, untimed) against the bf16
 * products summed in double and against cuBLAS's GEMM (`LOTUS_SKINNY=0`), as
 * compareOwnForwards says; `shapes` defaults to GPT-2's widths (SKINNY_SHAPES). With `timed`,
 * `LOTUS_SKINNY=1` in place of 2: each shape's first call times the kernel against cuBLAS and
 * keeps the faster, so either may serve the row's calls.
 */
export function compareSkinnyForwards(
  open: () => Engine,
  shapes: readonly ForwardShape[] = SKINNY_SHAPES,
  seed = 12,
  timed = false,
): CheckRow {
  return compareOwnForwards(
    open,
    seed,
    shapes,
    {
      kernel: { LOTUS_SKINNY: timed ? "1" : "2" },
      gemm: { LOTUS_SKINNY: "0" },
      gemmName: "LOTUS_SKINNY=0",
    },
    `bf16 forwards of 9 to 128 rows (${
      timed ? "split-K kernel or cuBLAS, as timed" : "split-K kernel"
    }) against the bf16 products summed in double`,
    shapes === SKINNY_SHAPES ? "at GPT-2's widths, 79 rows a loop pass" : "at reduced widths",
  );
}

/**
 * GPT-2's MLP backward at its widths (C 768, 4C 3,072; `N` rows) as the stack runs it with
 * recomputation, in bf16: ln2 rebuilt for its matmul only, GELU's backward, then the fc
 * matmul's backward. With the CUDA engine's default, GELU's backward is left to that matmul,
 * whose column-sum pass forms its values (`Engine.defersGeluBwd`); with
 * `LOTUS_DEFER_GELU_BWD=0` it runs as its own kernel. The three gradients must be the same bits
 * either way (`err` counts the values that differ), and the deferred GELU's fp32 output is
 * never written (the note says so). `open` opens the engine again, whose le_init reads the
 * setting; the default is restored before returning.
 */
export function compareDeferredGeluBwd(open: () => Engine, N = 320, seed = 13): CheckRow {
  const C = 768, F = 3072, rng = new Rng(seed);
  const data = {
    h: randn(rng, N * F),
    da: randn(rng, N * F, 0.1),
    x: randn(rng, N * C),
    lw: randn(rng, C, 0.2, 1),
    lb: randn(rng, C, 0.1),
    w: randn(rng, F * C, 0.05),
  };
  const sentinel = 7;
  const run = (env: Record<string, string>) =>
    withBf16Settings(open, env, (eng) =>
      withBufs(eng, (bufs) => {
        const [h, da, x, lw, lb, w] = [data.h, data.da, data.x, data.lw, data.lb, data.w].map(
          (a) => bufs.f32(a),
        );
        const dfch = bufs.f32(new Float32Array(N * F).fill(sentinel)), ln = bufs.f32(N * C);
        const dx = bufs.f32(N * C), dW = bufs.f32(F * C), dB = bufs.f32(F);
        eng.keepBf16(w, F * C);
        const late = eng.defersGeluBwd; // the order of Stack.backward
        const gelu = () => {
          if (late) eng.operandOnly(dfch);
          eng.geluBwd(dfch, h, da, N * F, false);
        };
        if (!late) gelu();
        eng.operandOnly(ln);
        eng.layernormFwd(ln, null, null, x, lw, lb, N, C);
        if (late) gelu();
        eng.matmulBwd(dx, dW, dB, dfch, ln, w, N, C, F, false);
        const left = bufs.get(dfch, N * F).every((v) => v === sentinel);
        return { late, left, grads: [bufs.get(dx, N * C), bufs.get(dW, F * C), bufs.get(dB, F)] };
      }));
  const deferred = run({}), apart = run({ LOTUS_DEFER_GELU_BWD: "0" });
  let differ = 0, total = 0;
  deferred.grads.forEach((g, i) => {
    differ += differingBits(g, apart.grads[i]);
    total += g.length;
  });
  const wrong = !deferred.late || apart.late || !deferred.left || apart.left;
  return checkRow(
    "ops",
    "GELU's backward left to the fc matmul's backward: the bits of running it apart",
    "bf16",
    wrong ? Math.max(differ, 1) : differ,
    0,
    `${differ} of ${total} values differ (${N} rows at GPT-2's widths); deferred ${
      deferred.late ? "by default" : "NOT by default"
    }, GELU's output ${deferred.left ? "unwritten" : "WRITTEN"}; LOTUS_DEFER_GELU_BWD=0 ${
      apart.late ? "still defers" : "runs it apart"
    }`,
  );
}

/**
 * GPT-2's MLP forward at its widths (C 768, 4C 3,072) as an inference chunk runs it in bf16:
 * the fc matmul, GELU told that only the next matmul reads its output
 * ({@linkcode Engine.operandOnly}), the projection. With the CUDA engine's default, GELU's
 * forward is left to that matmul: a few-row kernel forms its output as it stages its operand
 * (1 row: the gemv kernel; 79 rows: the split-K kernel, forced by `LOTUS_SKINNY=2`), and at
 * `big` rows cuBLAS reads GELU's kernel's copy, run by the matmul; `LOTUS_DEFER_GELU_FWD=2`
 * makes the kernels form it untimed, and the default times that against reading the copy.
 * With `LOTUS_DEFER_GELU_FWD=0` GELU runs as its own kernel: the outputs of both must be the
 * same bits.
 */
export function compareDeferredGeluFwd(open: () => Engine, big = 200, seed = 14): CheckRow {
  const C = 768, F = 3072, rows = [1, 79, big], rng = new Rng(seed);
  const data = {
    x: randn(rng, big * C),
    w1: randn(rng, F * C, 0.05),
    b1: randn(rng, F, 0.1),
    w2: randn(rng, C * F, 0.05),
    b2: randn(rng, C, 0.1),
  };
  const run = (env: Record<string, string>) =>
    withBf16Settings(open, { LOTUS_SKINNY: "2", ...env }, (eng) =>
      withBufs(eng, (bufs) => {
        const [x, w1, b1, w2, b2] = [data.x, data.w1, data.b1, data.w2, data.b2].map((a) =>
          bufs.f32(a)
        );
        eng.keepBf16(w1, F * C);
        eng.keepBf16(w2, C * F);
        const h = bufs.f32(big * F), a = bufs.f32(big * F), y = bufs.f32(big * C);
        return rows.map((N) => {
          eng.matmulFwd(h, x, w1, b1, N, C, F);
          eng.operandOnly(a);
          eng.geluFwd(a, h, N * F);
          eng.matmulFwd(y, a, w2, b2, N, F, C);
          return bufs.get(y, N * C);
        });
      }));
  // Formed wherever a few-row kernel serves (2), and as timing chooses (the default).
  const { differ, total } = differingRuns(run({ LOTUS_DEFER_GELU_FWD: "0" }), [
    run({ LOTUS_DEFER_GELU_FWD: "2" }),
    run({}),
  ]);
  return checkRow(
    "ops",
    "GELU's forward left to the projection's matmul: the bits of running it apart",
    "bf16",
    differ,
    0,
    `${differ} of ${total} values differ (${rows.join(", ")} rows at GPT-2's widths; ` +
      "the gemv kernel, the split-K kernel and cuBLAS; forming GELU always, and as timed)",
  );
}

/** The shape of {@linkcode compareDeferredNormFwd}'s runs. */
export interface NormFwdShape {
  /** The normalised width (the matmul's Cin). */
  C: number;
  /** The matmul's output width. */
  Cout: number;
  /** The row counts run, in turn. */
  rows: number[];
}

/**
 * A LayerNorm forward and an RMSNorm forward, each plain and in its residual form (resid =
 * a + r, out = norm(resid)), told that only the next matmul reads its output
 * ({@linkcode Engine.operandOnly}), then that matmul over a weight with a kept bf16 copy, in
 * bf16, as an inference chunk runs them (by default at GPT-2's widths, C 768 into the qkv's
 * 2,304 columns). With the CUDA engine's default the norm of 1 to 8 rows is left to that
 * matmul: the gemv kernel computes each row's statistics and forms the output as it stages its
 * operand (`LOTUS_DEFER_NORM_FWD=2` always, `1`, a GPU's default, as timed against reading the
 * norm kernel's copy); without `keep` (no bf16 copy of the weight: cuBLAS) the matmul first
 * runs the norm's kernel. At more rows, and for LayerNorm past the vector kernel's widths
 * (C > 1,024), the norm runs as before. With `LOTUS_DEFER_NORM_FWD=0` each norm runs as its
 * own kernel: the matmul's output, resid, mean and rstd of every form must be the same bits.
 */
export function compareDeferredNormFwd(
  open: () => Engine,
  shape: NormFwdShape = { C: 768, Cout: 2304, rows: [1, 4, 8, 12] },
  seed = 15,
  keep = true,
): CheckRow {
  const { C, Cout, rows } = shape, big = Math.max(...rows), rng = new Rng(seed);
  const eps = 1e-5;
  const data = {
    x: randn(rng, big * C),
    r: randn(rng, big * C),
    lw: randn(rng, C, 0.2, 1),
    lb: randn(rng, C, 0.1),
    w: randn(rng, Cout * C, 0.05),
    b: randn(rng, Cout, 0.1),
  };
  const run = (env: Record<string, string>) =>
    withBf16Settings(open, env, (eng) =>
      withBufs(eng, (bufs) => {
        const [x, r, lw, lb, w, b] = [data.x, data.r, data.lw, data.lb, data.w, data.b].map((
          a,
        ) => bufs.f32(a));
        if (keep) eng.keepBf16(w, Cout * C);
        const out = bufs.f32(big * C), resid = bufs.f32(big * C), y = bufs.f32(big * Cout);
        const mean = bufs.f32(big), rstd = bufs.f32(big);
        return rows.flatMap((N) => {
          const got: Float32Array[] = [];
          // Each norm, then the matmul reading all of its output; what the norm wrote besides.
          const chain = (norm: () => void, written: Ptr[]) => {
            eng.operandOnly(out);
            norm();
            eng.matmulFwd(y, out, w, b, N, C, Cout);
            got.push(bufs.get(y, N * Cout));
            for (const p of written) got.push(bufs.get(p, p === resid ? N * C : N));
          };
          chain(() => eng.layernormFwd(out, mean, rstd, x, lw, lb, N, C), [mean, rstd]);
          chain(
            () => eng.residualLayernormFwd(resid, out, mean, rstd, x, r, lw, lb, N, C),
            [resid, mean, rstd],
          );
          chain(() => eng.rmsnormFwd(out, rstd, x, lw, N, C, eps), [rstd]);
          chain(
            () => eng.residualRmsnormFwd(resid, out, rstd, x, r, lw, N, C, eps),
            [resid, rstd],
          );
          return got;
        });
      }));
  // Formed wherever the gemv kernel serves (2), and as timing chooses (1, a GPU's default).
  const { differ, total } = differingRuns(run({ LOTUS_DEFER_NORM_FWD: "0" }), [
    run({ LOTUS_DEFER_NORM_FWD: "2" }),
    run({ LOTUS_DEFER_NORM_FWD: "1" }),
  ]);
  return checkRow(
    "ops",
    "LayerNorm's and RMSNorm's forwards left to the matmul after them: the bits of running " +
      "them apart",
    "bf16",
    differ,
    0,
    `${differ} of ${total} values differ (outputs, resid, mean, rstd; ${rows.join(", ")} rows, ` +
      `C ${C} into ${Cout}; plain and residual; ${keep ? "the gemv kernel" : "cuBLAS"}; ` +
      "forming them always, and as timed)",
  );
}

/**
 * Batch-1 and batch-2 generation on `eng` (a CUDA engine) with the prefill, loop passes and
 * decoding steps replayed from CUDA graphs against the same generation launched op by op:
 * tokens and post-loop latent logits must be the same bits, in the generations that record the
 * graphs and in one that replays them, for LOTUS with add and replace injection and for CoT.
 * `err` counts the differing tokens plus the largest |Δ| of the latent logits.
 */
export function compareGraphReplay(eng: Engine, precision: Precision): CheckRow[] {
  const V = 40, K = 3, c = 2, R = 4;
  const cfg = ModelConfigSchema.parse({
    vocabSize: V,
    maxPositions: 64,
    dModel: 64,
    nHead: 2,
    nLayer: 2,
  });
  const sp = { ...specialsFor(V), eos: -1 };
  const rng = new Rng(5);
  eng.setPrecision(PRECISION_MODES[precision]);
  const model = new Model(eng, cfg, perturbedParams(cfg, 3), false);
  const gen = new Generator(model, { B: 2, P: 8, K, c, maxNewTokens: 3 });
  // Differing tokens, plus the largest |Δ| of the latent logits, of three generations with
  // graphs (the first records passes 1..R, the second the prefill, pass 0 and the decoding
  // steps, the third replays) against one without.
  const replayErr = (qs: Int32Array[], opts: GenerateOptions) => {
    const plain = gen.generate(qs, sp, { ...opts, graphs: false });
    let err = 0;
    for (let run = 0; run < 3; run++) {
      const g = gen.generate(qs, sp, opts);
      g.tokens.forEach((t, b) =>
        t.forEach((id, i) => {
          if (id !== plain.tokens[b][i]) err++;
        })
      );
      if (g.latentLogits) err += absStats(g.latentLogits, plain.latentLogits!).maxAbs;
    }
    return err;
  };
  const rows: CheckRow[] = [];
  const row = (name: string, err: number) =>
    rows.push(checkRow("generation", name, precision, err, 0));
  try {
    for (const B of [1, 2]) {
      const qs = Array.from(
        { length: B },
        (_, i) => Int32Array.from({ length: 8 - 2 * i }, () => rng.below(V - 4)),
      );
      for (const injection of ["add", "replace"] as const) {
        const opts: GenerateOptions = {
          mode: "lotus",
          K,
          c,
          R,
          maxNewTokens: 3,
          latentLogits: true,
          injection,
        };
        row(
          `CUDA graphs replay the prefill, loop passes and decoding steps bit for bit (B=${B}, ${injection})`,
          replayErr(qs, opts),
        );
      }
      // Explicit CoT decodes through the same graphs (the CoT baseline's speed-ups).
      row(
        `CUDA graphs replay explicit CoT's prefill and decoding steps (B=${B})`,
        replayErr(qs, { mode: "cot", maxNewTokens: 3 }),
      );
    }
  } finally {
    gen.free();
    model.free();
    eng.setPrecision(0);
  }
  return rows;
}

/**
 * Training steps recorded as CUDA graphs against the same steps run op by op, from the same
 * weights: seven AdamW steps over two batch shapes, each shape's batches differing in content
 * (the examples in another order), in the losses' denominators and in dropout seeds, so that
 * the recorded steps (each shape's from its second step on) must read every input, target,
 * loss scale and seed from what was uploaded for them. Rows: the number of steps whose loss differs plus the largest
 * |Δ| of the final weights (0 passes), for both step configurations of
 * {@linkcode STEP_SPECS} (the first with dropout 0.1) and the explicit-CoT step. On an engine
 * without graphs (the CPU engine) both sides run op by op; on the CUDA engine a run that
 * recorded no step fails.
 */
export function compareStepGraphs(eng: Engine, precision: Precision): CheckRow[] {
  const rows: CheckRow[] = [];
  const order = [0, 1, 2, 3, 0, 2, 1]; // batches X, Y, X reversed, Y reversed
  const cuda = eng.backend === "cuda";
  const train = TrainConfigSchema.parse({});
  eng.setPrecision(PRECISION_MODES[precision]);
  try {
    for (const [i, spec] of STEP_SPECS.entries()) {
      const sp = specialsFor(spec.model.vocabSize);
      const pool = randomExamples(2 * spec.B, spec.model.vocabSize, 21 + i);
      const x = pool.slice(0, spec.B), y = pool.slice(spec.B);
      const batches = [x, y, x.toReversed(), y.toReversed()];
      const p = i === 0 ? 0.1 : 0;
      const cap = { ...capacityFor(pool, spec, sp, eng), dropout: p > 0 };
      const run = (maxGraphs: number) =>
        trainSteps(eng, spec.model, perturbedParams(spec.model, 3 + i), train, (model) => {
          const runner = new LotusRunner(model, { ...cap, maxGraphs }, true);
          return {
            step: (s) => {
              const exs = batches[order[s]];
              const dropout = p > 0 ? { p, seed: mixSeed(9n, s) } : undefined;
              const b = lotusBatch(exs, sp, spec), opts = { ...spec.opts, dropout };
              // Denominators that differ at every step (as a data-parallel global batch's do),
              // so that a replay must read each loss's gradient scale anew.
              const d = runner.denominators(b, opts, exs);
              const denominators = { nAns: d.nAns + s, nStep: d.nStep + s, nAux: d.nAux + s };
              return runner.step(b, { ...opts, denominators }, exs);
            },
            recorded: () => runner.recordedSteps,
            free: () => runner.free(),
          };
        }, order.length);
      rows.push(graphRow(`${spec.name}${p ? ", dropout 0.1" : ""}`, run(0), run(16)));
    }
    const cfg = STEP_SPECS[0].model, sp = specialsFor(cfg.vocabSize);
    const pool = randomExamples(6, cfg.vocabSize, 31);
    const batches = [pool.slice(0, 3), pool.slice(3)];
    batches.push(batches[0].toReversed(), batches[1].toReversed());
    const T = Math.max(...batches.map((b) => plainBatch(b, sp, true).T));
    const run = (maxGraphs: number) =>
      trainSteps(eng, cfg, perturbedParams(cfg, 5), train, (model) => {
        const runner = new PlainRunner(model, 3, T, true, true, cuda, maxGraphs);
        return {
          step: (s) => {
            const b = plainBatch(batches[order[s]], sp, true);
            return runner.step(b, { p: 0.1, seed: BigInt(s) }, b.nTargets + s);
          },
          recorded: () => runner.recordedSteps,
          free: () => runner.free(),
        };
      }, order.length);
    rows.push(graphRow("explicit CoT, dropout 0.1", run(0), run(16)));
  } finally {
    eng.setPrecision(0);
  }
  return rows;

  function graphRow(name: string, plain: StepsRun, graphs: StepsRun): CheckRow {
    let err = 0;
    plain.losses.forEach((l, s) => {
      if (!Object.is(l, graphs.losses[s])) err++;
    });
    err += absStats(graphs.params, plain.params).maxAbs;
    if (cuda && graphs.recorded === 0) err = Infinity; // nothing was replayed: no check
    return checkRow(
      "training graphs",
      `recorded steps replay bit for bit: ${name}`,
      precision,
      err,
      0,
      `${graphs.recorded} steps recorded`,
    );
  }
}

/**
 * A batch's gradient from its micro-batches (the trainer's `microBatch`): the whole batch's
 * step against the same batch in two parts, each divided by the whole batch's target counts,
 * their gradients added in the slab, both parts queued before either's losses are read (as
 * the trainer runs them). The parts run three times from zeroed gradients, so that on the
 * CUDA engine the last replays recorded graphs. Rows: the gradient's relative error (the
 * loss's in the note, and in `err` when larger), bounded as a step's at the precision, for
 * both step configurations of {@linkcode STEP_SPECS} and the explicit-CoT step. With `waits`
 * (the engine's host waits so far, where something counts them), a row also fails when the
 * parts wait on the host more often than the whole batch's step.
 */
export function compareMicroBatches(
  eng: Engine,
  precision: Precision,
  waits?: () => number,
): CheckRow[] {
  const rows: CheckRow[] = [];
  const tol = TOLERANCES[precision];
  eng.setPrecision(PRECISION_MODES[precision]);
  const count = (f: () => number) => {
    const w0 = waits?.() ?? 0;
    const v = f();
    return { v, waits: (waits?.() ?? 0) - w0 };
  };
  // The whole batch's loss and gradient, then the parts': the worst error over the repeats.
  const compare = (
    name: string,
    model: Model,
    runner: { recordedSteps: number },
    whole: () => number,
    parts: (() => () => number)[],
  ) => {
    // Host waits are counted at the second run of each (the first grows buffers).
    model.zeroGrad();
    whole();
    model.zeroGrad();
    const w = count(whole), gw = model.downloadGrads();
    let gradErr = 0, lossErr = 0, partWaits = 0;
    for (let rep = 0; rep < 3; rep++) {
      model.zeroGrad();
      const p = count(() => parts.map((queue) => queue()).reduce((a, read) => a + read(), 0));
      if (rep > 0) partWaits = Math.max(partWaits, p.waits);
      gradErr = Math.max(gradErr, relErr(model.downloadGrads(), gw));
      lossErr = Math.max(lossErr, Math.abs(p.v - w.v) / Math.abs(w.v));
    }
    const err = Math.max(gradErr, lossErr / tol.stepLoss * tol.stepGrad);
    rows.push(
      checkRow(
        "micro-batches",
        `a batch's gradient from two micro-batches: ${name}`,
        precision,
        partWaits > w.waits ? Infinity : err,
        tol.stepGrad,
        `gradient ${gradErr.toExponential(1)}, loss ${lossErr.toExponential(1)}; ` +
          (waits ? `host waits ${w.waits} for the batch, ${partWaits} for its parts; ` : "") +
          `${runner.recordedSteps} steps recorded`,
      ),
    );
  };
  try {
    for (const [i, spec] of STEP_SPECS.entries()) {
      const sp = specialsFor(spec.model.vocabSize);
      const exs = randomExamples(spec.B, spec.model.vocabSize, 41 + i);
      const model = new Model(eng, spec.model, perturbedParams(spec.model, 7 + i), true);
      const runner = new LotusRunner(model, { ...capacityFor(exs, spec, sp, eng) }, true);
      try {
        const whole = lotusBatch(exs, sp, spec);
        const denominators = runner.denominators(whole, spec.opts, exs);
        const h = Math.ceil(exs.length / 2);
        compare(
          spec.name,
          model,
          runner,
          () => runner.step(whole, spec.opts, exs).loss,
          [exs.slice(0, h), exs.slice(h)].map((p) => () => {
            const read = runner.queue(lotusBatch(p, sp, spec), { ...spec.opts, denominators }, p);
            return () => read().loss;
          }),
        );
      } finally {
        runner.free();
        model.free();
      }
    }
    const cfg = STEP_SPECS[0].model, sp = specialsFor(cfg.vocabSize);
    const exs = randomExamples(5, cfg.vocabSize, 43);
    const whole = plainBatch(exs, sp, true);
    const model = new Model(eng, cfg, perturbedParams(cfg, 9), true);
    const runner = new PlainRunner(model, 5, whole.T, true, false, eng.backend === "cuda");
    try {
      compare(
        "explicit CoT",
        model,
        runner,
        () => runner.step(whole).loss,
        [exs.slice(0, 3), exs.slice(3)].map((p) => () => {
          const read = runner.queue(plainBatch(p, sp, true), undefined, whole.nTargets);
          return () => read().loss;
        }),
      );
    } finally {
      runner.free();
      model.free();
    }
  } finally {
    eng.setPrecision(0);
  }
  return rows;
}

/** What {@linkcode trainSteps} returns. */
interface StepsRun {
  losses: number[];
  params: Float32Array;
  /** Steps kept as graphs at the end. */
  recorded: number;
}

/**
 * `steps` AdamW steps (`train`'s settings) of a model of `cfg` from `params`, through a
 * runner that `make` builds on it.
 */
function trainSteps(
  eng: Engine,
  cfg: ModelConfig,
  params: Float32Array,
  train: TrainConfig,
  make: (m: Model) => { step(s: number): StepLosses; recorded(): number; free(): void },
  steps: number,
): StepsRun {
  const model = new Model(eng, cfg, params, true);
  let r: ReturnType<typeof make> | null = null;
  try {
    r = make(model);
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) {
      model.zeroGrad();
      losses.push(r.step(s).loss);
      model.optimizerStep(adamwOf(train, train.lr));
    }
    return { losses, params: model.downloadParams(), recorded: r.recorded() };
  } finally {
    r?.free();
    model.free();
  }
}

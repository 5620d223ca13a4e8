/**
 * Batch assembly on the host: from tokenised examples (question, steps, answer) to the
 * padded arrays that one LOTUS or baseline step uploads. Pure TypeScript, engine-free.
 *
 * LOTUS batches are split into the three regions of the method (docs/method.md):
 *   prefix  Q, left-padded to the batch's longest question so that BOT sits in one column;
 *           pads have position 0 and are masked as keys;
 *   loop    BOT + K*c LAT, positions continuing from each example's question length;
 *   suffix  EOT, the steps not replaced by latents (S_K ...), then A = "### answer" EOS,
 *           right-padded.
 *
 * @module
 */

import { IGNORE } from "../pipeline/pack.ts";
import { type LongStep, slotTargets } from "../pipeline/step_targets.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";
import { leftPadQuestions } from "../model/generate.ts";
import type { TrainConfig } from "../model/config.ts";
import { stageShape } from "./schedule.ts";

/** One tokenised example. */
export interface Example {
  /** encode(question + "\n"). */
  q: Int32Array;
  /** encode(step + "\n") for each gold step. */
  steps: Int32Array[];
  /** encode("### " + answer) + EOS. */
  ans: Int32Array;
  /** Row of the example in its split (for reports). */
  index: number;
}

/** A LOTUS batch (all arrays row-major, B examples). */
export interface LotusBatch {
  /** Examples in the batch. */
  B: number;
  /** Prefix length (longest question). */
  P: number;
  /** Loop region length: 1 + K*c. */
  L: number;
  /** Suffix length (longest EOT + remaining steps + answer). */
  S: number;
  /** Latent blocks: the first K steps of each example are replaced by latents. */
  K: number;
  /** Loop iterations after pass 0. */
  R: number;
  /** Latent slots per block. */
  c: number;
  /** [B] each example's question length in tokens. */
  qLen: Int32Array;
  /** [B, P] question ids, left-padded with PAD. */
  prefixIds: Int32Array;
  /** [B, P] positions: 0 at each question's first token, and 0 on the pads. */
  prefixPos: Int32Array;
  /** [B, P] key validity of the prefix. */
  prefixValid: Uint8Array;
  /** [B, L] loop ids: BOT, then K*c LAT. */
  loopIds: Int32Array;
  /** Loop ids for "replace" injection: BOT, then -1 (no token embedding) at latents. */
  loopIdsReplace: Int32Array;
  /** [B, L] positions continuing from each question: qLen, qLen + 1, ... */
  loopPos: Int32Array;
  /** [B, P + L] key validity seen by the loop passes. */
  loopValid: Uint8Array;
  /** [B, S] EOT, the steps not replaced (S_K onwards), the answer; right-padded with PAD. */
  suffixIds: Int32Array;
  /** [B, S] positions continuing after the loop region: qLen + L, qLen + L + 1, ... */
  suffixPos: Int32Array;
  /** [B, P + L + S] key validity seen by the suffix. */
  suffixValid: Uint8Array;
  /** [B, S] next-token targets of the suffix (the answer loss). */
  suffixTargets: Int32Array;
  /**
   * [B, L] step targets per loop row: row k*c + j targets S_k[j] (BOT predicts S_0[0]; the
   * last latent of block k-1 predicts S_k[0]), for blocks k < min(steps, K), j < c.
   */
  stepTargets: Int32Array;
  /** [B, L] the block whose target sits at that row (-1: none), for in-loop supervision. */
  stepBlock: Int32Array;
  /**
   * Under `--long-step spill`: the further target layers, each [B, L]; layer m - 1 of this
   * list holds S_k[j] for m*c <= j < (m+1)*c at row k*c + j (pipeline/step_targets.ts).
   * Empty otherwise. Each layer is one more cross-entropy over the same logits.
   */
  spillTargets: Int32Array[];
  /** The block of each spilled target, as `stepBlock` is for `stepTargets`. */
  spillBlock: Int32Array[];
  /** Answer targets that are not IGNORE: the answer loss's denominator. */
  nAns: number;
  /** Step targets that are not IGNORE, in every layer: the step loss's denominator. */
  nStep: number;
}

/** A baseline (explicit CoT or no-CoT) batch: one causal sequence per example. */
export interface PlainBatch {
  /** Sequences (examples) in the batch. */
  B: number;
  /** Length of the longest sequence; the others are padded to it. */
  T: number;
  /** [B, T] Q [S_0 ... S_{n-1}] A, right-padded with PAD. */
  ids: Int32Array;
  /** [B, T] positions 0 .. T-1. */
  pos: Int32Array;
  /** [B, T] key validity: 1 on each sequence's tokens, 0 on its pads. */
  valid: Uint8Array;
  /** [B, T] next-token targets: everything after the question; IGNORE elsewhere. */
  targets: Int32Array;
  /** Targets that are not IGNORE: the loss's denominator. */
  nTargets: number;
}

/** The auxiliary decoder's batch: one sequence per (example, block). */
export interface AuxBatch {
  /** Sequences: B * K. Sequence b*K + k reads block k of example b. */
  n: number;
  /** c + longest step in the batch. */
  T: number;
  /** [n, T]: -1 on the c latent rows (filled from the loop's states), step tokens after. */
  ids: Int32Array;
  /** [n, T]: row c-1+j predicts S_k[j] (teacher forcing); IGNORE elsewhere. */
  targets: Int32Array;
  /** Targets that are not IGNORE: the aux loss's denominator. */
  nTargets: number;
}

/** The suffix tokens of an example at K replaced steps: EOT, S_K, ..., S_{n-1}, A. */
export function suffixOf(ex: Example, K: number, eot: number): Int32Array {
  let len = 1 + ex.ans.length;
  for (let i = K; i < ex.steps.length; i++) len += ex.steps[i].length;
  const out = new Int32Array(len);
  out[0] = eot;
  let o = 1;
  for (let i = K; i < ex.steps.length; i++) out.set(ex.steps[i], o), o += ex.steps[i].length;
  out.set(ex.ans, o);
  return out;
}

/** Total positions an example occupies in the LOTUS layout at K blocks of c. */
export function lotusLength(ex: Example, K: number, c: number): number {
  let n = ex.q.length + 1 + K * c + 1 + ex.ans.length;
  for (let i = K; i < ex.steps.length; i++) n += ex.steps[i].length;
  return n;
}

/** Total positions of the explicit-CoT (withSteps) or no-CoT layout. */
export function plainLength(ex: Example, withSteps: boolean): number {
  let n = ex.q.length + ex.ans.length;
  if (withSteps) { for (const s of ex.steps) n += s.length; }
  return n;
}

/**
 * Assemble a LOTUS batch at K blocks of c latents and R loop iterations. `longStep`
 * (default `truncate`) is the dataset's policy for steps longer than c: under `spill` their
 * targets run on into the following rows ({@linkcode LotusBatch.spillTargets}).
 *
 * @example
 * ```ts
 * import { lotusBatch } from "./batch.ts";
 * const sp = { eos: 0, pad: 0, bot: 1, eot: 2, lat: 3 };
 * const ex = { q: Int32Array.of(5, 6), steps: [Int32Array.of(7, 8)], ans: Int32Array.of(9, 0), index: 0 };
 * const b = lotusBatch([ex], sp, { K: 1, R: 1, c: 2 });
 * console.assert(b.stepTargets[0] === 7 && b.stepTargets[1] === 8);
 * ```
 */
export function lotusBatch(
  exs: Example[],
  sp: SpecialIds,
  shape: { K: number; R: number; c: number; longStep?: LongStep },
): LotusBatch {
  const { K, R, c } = shape;
  const longStep = shape.longStep ?? "truncate";
  const B = exs.length, L = 1 + K * c;
  const pre = leftPadQuestions(exs.map((e) => e.q), sp.pad);
  const P = pre.P;
  const sufs = exs.map((e) => suffixOf(e, K, sp.eot));
  const S = Math.max(...sufs.map((s) => s.length));

  const loopIds = new Int32Array(B * L).fill(sp.lat);
  const loopIdsReplace = new Int32Array(B * L).fill(-1);
  const loopPos = new Int32Array(B * L);
  const loopValid = new Uint8Array(B * (P + L));
  const suffixIds = new Int32Array(B * S).fill(sp.pad);
  const suffixPos = new Int32Array(B * S);
  const suffixValid = new Uint8Array(B * (P + L + S));
  const suffixTargets = new Int32Array(B * S).fill(IGNORE);
  const stepTargets = new Int32Array(B * L).fill(IGNORE);
  const stepBlock = new Int32Array(B * L).fill(-1);
  const spillTargets: Int32Array[] = [], spillBlock: Int32Array[] = [];
  let nAns = 0, nStep = 0;

  for (let b = 0; b < B; b++) {
    const q = pre.qLen[b];
    loopIds[b * L] = sp.bot;
    loopIdsReplace[b * L] = sp.bot;
    for (let i = 0; i < L; i++) loopPos[b * L + i] = q + i;
    loopValid.set(pre.valid.subarray(b * P, (b + 1) * P), b * (P + L));
    loopValid.fill(1, b * (P + L) + P, (b + 1) * (P + L));

    const s = sufs[b];
    suffixIds.set(s, b * S);
    for (let t = 0; t < S; t++) suffixPos[b * S + t] = q + L + t;
    for (let t = 0; t + 1 < s.length; t++) suffixTargets[b * S + t] = s[t + 1];
    nAns += s.length - 1;
    const kv = b * (P + L + S);
    suffixValid.set(pre.valid.subarray(b * P, (b + 1) * P), kv);
    suffixValid.fill(1, kv + P, kv + P + L + s.length);

    const st = slotTargets(exs[b].steps, K, c, longStep);
    stepTargets.set(st.layers[0], b * L);
    stepBlock.set(st.blocks[0], b * L);
    for (let m = 1; m < st.layers.length; m++) {
      while (spillTargets.length < m) {
        spillTargets.push(new Int32Array(B * L).fill(IGNORE));
        spillBlock.push(new Int32Array(B * L).fill(-1));
      }
      spillTargets[m - 1].set(st.layers[m], b * L);
      spillBlock[m - 1].set(st.blocks[m], b * L);
    }
    nStep += st.count;
  }
  return {
    B,
    P,
    L,
    S,
    K,
    R,
    c,
    qLen: pre.qLen,
    prefixIds: pre.ids,
    prefixPos: pre.pos,
    prefixValid: pre.valid,
    loopIds,
    loopIdsReplace,
    loopPos,
    loopValid,
    suffixIds,
    suffixPos,
    suffixValid,
    suffixTargets,
    stepTargets,
    stepBlock,
    spillTargets,
    spillBlock,
    nAns,
    nStep,
  };
}

/**
 * Assemble an explicit-CoT (`withSteps`) or no-CoT batch: Q [S_0 ... S_{n-1}] A, right-padded,
 * with targets on everything after the question.
 */
export function plainBatch(exs: Example[], sp: SpecialIds, withSteps: boolean): PlainBatch {
  const seqs = exs.map((e) => {
    const parts = withSteps ? [e.q, ...e.steps, e.ans] : [e.q, e.ans];
    const out = new Int32Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) out.set(p, o), o += p.length;
    return out;
  });
  const B = exs.length, T = Math.max(...seqs.map((s) => s.length));
  const ids = new Int32Array(B * T).fill(sp.pad);
  const pos = new Int32Array(B * T);
  const valid = new Uint8Array(B * T);
  const targets = new Int32Array(B * T).fill(IGNORE);
  let nTargets = 0;
  for (let b = 0; b < B; b++) {
    const s = seqs[b], q = exs[b].q.length;
    ids.set(s, b * T);
    for (let t = 0; t < T; t++) pos[b * T + t] = t;
    valid.fill(1, b * T, b * T + s.length);
    for (let t = q - 1; t + 1 < s.length; t++) targets[b * T + t] = s[t + 1], nTargets++;
  }
  return { B, T, ids, pos, valid, targets, nTargets };
}

/**
 * The auxiliary decoder's batch (LOTUS-aux): for every example b and block k < K, the
 * sequence [c latents of block k ‖ S_k], where latent row c-1+j predicts S_k[j]. Blocks
 * beyond an example's step count have no targets, nor have blocks k >= `supervised` (the
 * in-loop variant with R < K, where no pass reads them).
 */
export function auxBatch(exs: Example[], K: number, c: number, supervised = K): AuxBatch {
  const B = exs.length, n = B * K;
  let longest = 0;
  for (const e of exs) {
    for (let k = 0; k < Math.min(K, e.steps.length); k++) {
      longest = Math.max(longest, e.steps[k].length);
    }
  }
  const T = c + longest;
  const ids = new Int32Array(n * T).fill(-1);
  const targets = new Int32Array(n * T).fill(IGNORE);
  let nTargets = 0;
  for (let b = 0; b < B; b++) {
    for (let k = 0; k < K; k++) {
      const st = exs[b].steps[k];
      if (!st || k >= supervised) continue;
      const row = (b * K + k) * T;
      for (let j = 0; j < st.length; j++) {
        // Inputs after the latents are the step's own tokens (teacher forcing); the last
        // input token predicts nothing.
        if (j + 1 < st.length) ids[row + c + j] = st[j];
        targets[row + c - 1 + j] = st[j];
        nTargets++;
      }
    }
  }
  // Rows c+j with j >= len-1 keep id -1: a zero input that no target depends on.
  return { n, T, ids, targets, nTargets };
}

/** Tokens a step forwards (positions over all passes), for throughput. */
export function positionsOf(
  mode: TrainConfig["mode"],
  exs: Example[],
  K: number,
  R: number,
  c: number,
): number {
  let n = 0;
  for (const e of exs) {
    if (mode === "cot" || mode === "nocot") n += plainLength(e, mode === "cot");
    else n += e.q.length + (R + 1) * (1 + K * c) + suffixOf(e, K, 0).length;
  }
  return n;
}

/** Keep the examples that fit the context at every stage; returns how many were cut. */
export function fitting(
  exs: Example[],
  cfg: TrainConfig,
  maxPos: number,
): { kept: Example[]; cut: number } {
  const kept = exs.filter((e) => {
    if (cfg.mode === "cot" || cfg.mode === "nocot") {
      return plainLength(e, cfg.mode === "cot") <= maxPos;
    }
    for (let s = 0; s <= cfg.k; s++) {
      if (lotusLength(e, stageShape(cfg, s).k, cfg.c) > maxPos) return false;
    }
    return true;
  });
  return { kept, cut: exs.length - kept.length };
}

/** Batch capacity over every stage of a run. */
export function capacityOf(exs: Example[], cfg: TrainConfig, B: number) {
  let P = 1, S = 1, step = 0, T = 1, R = 0;
  for (let s = 0; s <= cfg.k; s++) R = Math.max(R, stageShape(cfg, s).r);
  for (const e of exs) {
    P = Math.max(P, e.q.length);
    S = Math.max(S, suffixOf(e, 0, 0).length);
    T = Math.max(T, plainLength(e, cfg.mode === "cot"));
    for (let k = 0; k < Math.min(cfg.k, e.steps.length); k++) {
      step = Math.max(step, e.steps[k].length);
    }
  }
  return { B, P, K: cfg.k, c: cfg.c, R, S, auxT: cfg.c + step, T };
}

/**
 * Batched greedy generation with a key/value cache, for LOTUS checkpoints and for the
 * explicit-CoT / no-CoT baselines.
 *
 * LOTUS (as the reference's `generate`): the question prefix once; pass 0 and R loop passes
 * over BOT + K*c latents; then EOT is fed attending to prefix ‖ pass R's K/V, and tokens are
 * decoded greedily until EOS or the budget. The post-loop logits of the loop region (the
 * "latent readout") can be returned. Baselines decode straight after the question.
 *
 * Questions are left-padded so every example's next token sits in the same column; pads are
 * masked as keys and positions restart at 0 after them.
 *
 * @module
 */

import type { Ptr } from "../engine/ffi.ts";
import { GraphCache } from "./graphs.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";
import type { Model } from "./model.ts";
import { Arena, Chunk, F32, type Past, pastOfChunk, Scratch } from "./stack.ts";

/**
 * Left-pad questions into [B, P] ids, positions and key validity. Shared by LOTUS batches
 * and generation.
 */
export function leftPadQuestions(
  qs: Int32Array[],
  pad: number,
): { P: number; ids: Int32Array; pos: Int32Array; valid: Uint8Array; qLen: Int32Array } {
  const B = qs.length;
  const P = Math.max(...qs.map((q) => q.length));
  const ids = new Int32Array(B * P).fill(pad);
  const pos = new Int32Array(B * P);
  const valid = new Uint8Array(B * P);
  const qLen = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    const q = qs[b], off = b * P + (P - q.length);
    qLen[b] = q.length;
    ids.set(q, off);
    for (let i = 0; i < q.length; i++) pos[off + i] = i, valid[off + i] = 1;
  }
  return { P, ids, pos, valid, qLen };
}

/**
 * The most graphs a {@linkcode Generator} keeps by default: for a batch shape, the prefill,
 * three loop-pass graphs and one a decoding step (a 90-token CoT answer and a LOTUS one of the
 * same question hold about 100). The engine has 512 slots, shared by every user of it.
 */
export const MAX_GRAPHS = 384;

/** What to generate. */
export interface GenerateOptions {
  /**
   * "lotus": the thought phase over BOT and the latents, then EOT and the answer; "cot" and
   * "nocot": decode straight after the question (the baselines write their steps, or not).
   */
  mode: "lotus" | "cot" | "nocot";
  /** LOTUS: latent blocks (default 0: BOT alone goes through the loop). Ignored otherwise. */
  K?: number;
  /** LOTUS: latent slots per block (default 1). */
  c?: number;
  /** LOTUS: loop iterations after pass 0 (default K, as training ties them). */
  R?: number;
  /**
   * LOTUS: how a pass feeds the previous pass's states to the latents: added to the LAT
   * embedding ("add", the default) or alone ("replace"). Must match training.
   */
  injection?: "add" | "replace";
  /** Most tokens generated per example (EOS included). */
  maxNewTokens: number;
  /** LOTUS: also return the post-loop logits of the loop region, [B, 1 + K*c, V]. */
  latentLogits?: boolean;
  /**
   * On the CUDA engine: replay LOTUS loop passes 1..R from graphs recorded at their first run
   * (one per shape and pass parity), and the prefill, pass 0 and each decoding step from the
   * second generation of a batch shape on: one host call each instead of one an op. Default
   * true there; the CPU engine has no graphs. Results are the same bits either way.
   */
  graphs?: boolean;
}

/** Phase timings in milliseconds (wall clock, engine synchronised). */
export interface Timings {
  /** The question prefix. */
  prefillMs: number;
  /** LOTUS thought phase: pass 0 plus R loop passes (the readout projection excluded). 0 for baselines. */
  thoughtMs: number;
  /** Decoding (EOT onwards for LOTUS), all tokens. */
  decodeMs: number;
  /** Decode steps run (the longest example's count). */
  decodeSteps: number;
  /**
   * Milliseconds of each decode step (engine synchronised by the argmax download), so that
   * evaluation can time a CoT baseline's written thought: the steps before its first `#`.
   */
  stepMs: number[];
}

/** The result of {@linkcode Generator.generate}. */
export interface Generation {
  /** Generated ids per example, without the final EOS. */
  tokens: number[][];
  /** [B, 1 + K*c, V] when requested. */
  latentLogits?: Float32Array;
  /** How long each phase took. */
  timings: Timings;
}

/** The largest request a generator serves. */
export interface GeneratorCapacity {
  /** Most questions per call. */
  B: number;
  /** Longest question, in tokens. */
  P: number;
  /** Most latent blocks (LOTUS); 0 for baselines. */
  K: number;
  /** Latent slots per block (LOTUS); any value for baselines, which have no loop region. */
  c: number;
  /** Largest generation budget per call. */
  maxNewTokens: number;
  /**
   * Most CUDA graphs kept ({@linkcode MAX_GRAPHS} by default): the least recently used are
   * freed first.
   */
  maxGraphs?: number;
}

/**
 * Greedy generation on a model, with buffers allocated once for a capacity. The buffers live
 * in engine memory: call {@linkcode Generator.free} when done.
 */
export class Generator {
  /** The model generated from (its backbone only; an aux decoder is not used). */
  readonly model: Model;
  /** The largest request {@linkcode Generator.generate} accepts. */
  readonly cap: GeneratorCapacity;
  #arena: Arena;
  #sc: Scratch;
  #pre: Chunk;
  #pass: [Chunk, Chunk];
  #dec: Chunk;
  #cache: Ptr[];
  /** Elements from one layer's cache to the next's. */
  #cacheStride: number;
  #tcap: number;
  #ids: Ptr;
  #pos: Ptr;
  #valid: Ptr;
  #logits: Ptr;
  #argmax: Ptr;
  /**
   * The recorded prefills, loop passes and decoding steps, by batch shape and part: at most
   * {@linkcode GeneratorCapacity.maxGraphs}, so that generations of ever new shapes (questions
   * of new lengths) drop the oldest graphs rather than run out of the engine's slots.
   */
  #graphs: GraphCache;

  /** Allocate for `cap`. */
  constructor(model: Model, cap: GeneratorCapacity) {
    this.model = model;
    this.cap = cap;
    this.#graphs = new GraphCache(model.eng, Math.max(0, cap.maxGraphs ?? MAX_GRAPHS));
    const C = model.cfg.dModel, V = model.cfg.vocabSize, shape = model.main.shape;
    const KW = model.main.widths.kv;
    const a = this.#arena = new Arena(model.eng);
    // An allocation that fails (engine memory) frees those made before it.
    try {
      // A LOTUS model at K = 0 (curriculum stage 0) still runs BOT through the loop region, so
      // the loop buffers always hold at least one position.
      const L = 1 + cap.K * cap.c;
      this.#tcap = cap.P + L + cap.maxNewTokens + 1;
      const rows = cap.B * Math.max(cap.P, L, 1);
      this.#sc = new Scratch(a, rows, C, false, shape);
      this.#pre = new Chunk(a, shape, cap.B, cap.P, 0, false);
      this.#pass = [
        new Chunk(a, shape, cap.B, L, cap.P, false),
        new Chunk(a, shape, cap.B, L, cap.P, false),
      ];
      this.#dec = new Chunk(a, shape, cap.B, 1, this.#tcap, false);
      // Every layer's cache in one allocation: one copy call fills a row of all of them.
      this.#cacheStride = cap.B * this.#tcap * KW;
      this.#cache = a.strided(model.cfg.nLayer, this.#cacheStride);
      this.#ids = a.i32(rows);
      this.#pos = a.i32(rows);
      this.#valid = a.bytes(cap.B * this.#tcap);
      this.#logits = a.f32(rows * V);
      this.#argmax = a.i32(rows);
    } catch (e) {
      this.free();
      throw e;
    }
  }

  /** Free the buffers (and the recorded loop passes). */
  free(): void {
    this.#graphs.clear();
    this.#arena.free();
  }

  /**
   * Greedy-decode answers for tokenised questions (each `encode(question + "\n")`), until
   * EOS or `opts.maxNewTokens` tokens for every question.
   *
   * @throws {RangeError} when the batch, a question, the loop region or the budget exceeds
   * {@linkcode Generator.cap}.
   */
  generate(questions: Int32Array[], sp: SpecialIds, opts: GenerateOptions): Generation {
    const m = this.model, e = m.eng, C = m.cfg.dModel, V = m.cfg.vocabSize;
    const main = m.main, sc = this.#sc, cap = this.cap;
    const KW = main.widths.kv;
    const B = questions.length;
    const lotus = opts.mode === "lotus";
    const K = lotus ? opts.K ?? 0 : 0, c = opts.c ?? 1, R = lotus ? opts.R ?? K : 0;
    const L = lotus ? 1 + K * c : 0;
    const pre = leftPadQuestions(questions, sp.pad);
    const P = pre.P;
    if (B > cap.B || P > cap.P || (lotus && L > 1 + cap.K * cap.c)) {
      throw new RangeError(`request (B=${B}, P=${P}, L=${L}) exceeds the generator's capacity`);
    }
    if (opts.maxNewTokens > cap.maxNewTokens) {
      throw new RangeError(`maxNewTokens ${opts.maxNewTokens} exceeds ${cap.maxNewTokens}`);
    }
    const T0 = performance.now();

    // Graphs (CUDA): the loop passes from a shape's first generation on; the prefill, pass 0
    // and each decoding step (one graph a step: the cache length differs) from its second,
    // after a first generation has grown the scratch and made the weights' bf16 copy.
    const g = this.#graphs;
    const graphs = (opts.graphs ?? true) && e.backend === "cuda" && g.maxGraphs > 0;
    const shape = `${B},${P},${L},${e.precision}`;
    const again = graphs && g.seen(shape);
    const run = (key: string, ops: () => void) => again ? g.run(`${shape},${key}`, ops) : ops();

    // Prefix.
    e.upload(this.#ids, pre.ids), e.upload(this.#pos, pre.pos), e.upload(this.#valid, pre.valid);
    const tcap = this.#tcap;
    run("prefill", () => {
      e.embedFwd(this.#pre.x[0], this.#ids, this.#pos, m.wte, m.wpe, B * P, C);
      main.forward(this.#pre, sc, B, P, null, this.#valid, null, this.#pos);
      this.#toCache(this.#pre, B, P, 0);
    });
    e.sync();
    const T1 = performance.now();

    let T2 = T1;
    // Thought phase (LOTUS).
    let latentLogits: Float32Array | undefined;
    let len = P; // filled cache rows
    const keyValid = new Uint8Array(B * tcap);
    if (lotus) {
      const ids = new Int32Array(B * L).fill(sp.lat), repl = new Int32Array(B * L).fill(-1);
      const pos = new Int32Array(B * L), valid = new Uint8Array(B * (P + L));
      for (let b = 0; b < B; b++) {
        ids[b * L] = sp.bot, repl[b * L] = sp.bot;
        for (let i = 0; i < L; i++) pos[b * L + i] = pre.qLen[b] + i;
        valid.set(pre.valid.subarray(b * P, (b + 1) * P), b * (P + L));
        valid.fill(1, b * (P + L) + P, (b + 1) * (P + L));
      }
      const prePast = pastOfChunk(this.#pre, C, e, main.shape);
      e.upload(this.#pos, pos), e.upload(this.#valid, valid);
      const replace = opts.injection === "replace";
      let prev: Chunk | null = null;
      for (let r = 0; r <= R; r++) {
        const ch = this.#pass[r % 2], from = prev;
        // The ids change at pass 1 with replace injection, and never after.
        if (r === 0 || (r === 1 && replace)) e.upload(this.#ids, r > 0 && replace ? repl : ids);
        const pass = () => {
          e.embedFwd(ch.x[0], this.#ids, this.#pos, m.wte, m.wpe, B * L, C);
          if (from) {
            e.copyRows(
              e.offset(ch.x[0], C * F32),
              e.offset(from.h, C * F32),
              B,
              L - 1,
              C,
              L * C,
              C,
              L * C,
              C,
              true,
            );
          }
          main.forward(ch, sc, B, L, prePast, this.#valid, null, this.#pos);
        };
        // Passes 1..R of one parity run the same ops on the same buffers: record the first,
        // replay it (pass 0 ran the same shapes, so nothing grows while recording).
        if (graphs && r > 0) g.run(`${shape},${r % 2}`, pass);
        else run("first", pass);
        prev = ch;
      }
      this.#toCache(prev!, B, L, P);
      len = P + L;
      e.sync();
      T2 = performance.now();
      // The readout is a measurement, not part of answering: it is timed in no phase.
      if (opts.latentLogits) {
        e.matmulFwd(this.#logits, prev!.h, m.head, null, B * L, C, V);
        latentLogits = new Float32Array(B * L * V);
        e.download(latentLogits, this.#logits);
      }
    }
    e.sync();
    if (!lotus) T2 = performance.now();
    const T2d = performance.now();

    // Decode.
    for (let b = 0; b < B; b++) {
      keyValid.set(pre.valid.subarray(b * P, (b + 1) * P), b * tcap);
      keyValid.fill(1, b * tcap + P, (b + 1) * tcap);
    }
    const out: number[][] = Array.from({ length: B }, () => []);
    const done = new Uint8Array(B);
    const next = new Int32Array(B), pos = new Int32Array(B);
    const argmax = new Int32Array(B);
    let steps = 0;
    const stepMs: number[] = [];
    let tStep = performance.now();
    if (!lotus) {
      // The prefix's last column already predicts the first answer token.
      e.copyRows(sc.tmp, e.offset(this.#pre.h, (P - 1) * C * F32), B, 1, C, C, C, P * C, C, false);
      e.matmulFwd(this.#logits, sc.tmp, m.head, null, B, C, V);
      e.argmax(this.#argmax, this.#logits, B, V);
      e.download(argmax, this.#argmax);
      steps = 1;
      this.#accept(argmax, out, done, sp.eos);
      const now = performance.now();
      stepMs.push(now - tStep), tStep = now;
    } else {
      next.fill(sp.eot);
    }
    const dec = this.#dec;
    const cachePast: Past = {
      length: 0,
      kv: (l) => this.#cache[l],
      dkv: () => null,
      bs: tcap * KW,
      rs: KW,
    };
    const validRow = new Uint8Array(B * tcap);
    while (steps < opts.maxNewTokens && !done.every((d) => d === 1)) {
      if (!lotus || steps > 0) next.set(argmax);
      for (let b = 0; b < B; b++) pos[b] = pre.qLen[b] + (len - P);
      e.upload(this.#ids, next), e.upload(this.#pos, pos);
      // key validity [B, len + 1] for this step
      const kv = validRow.subarray(0, B * (len + 1));
      for (let b = 0; b < B; b++) {
        kv.set(keyValid.subarray(b * tcap, b * tcap + len + 1), b * (len + 1));
      }
      e.upload(this.#valid, kv);
      // One graph a step, for the first steps only: a generation must not need more graphs than
      // the generator keeps, or each would drop the one it needs next.
      const decode = steps < g.maxGraphs - 8 ? run : (_: string, ops: () => void) => ops();
      decode(`decode ${len}`, () => {
        e.embedFwd(dec.x[0], this.#ids, this.#pos, m.wte, m.wpe, B, C);
        cachePast.length = len;
        main.forward(dec, sc, B, 1, cachePast, this.#valid, null, this.#pos);
        this.#toCache(dec, B, 1, len);
        e.matmulFwd(this.#logits, dec.h, m.head, null, B, C, V);
        e.argmax(this.#argmax, this.#logits, B, V);
      });
      len++;
      e.download(argmax, this.#argmax);
      steps++;
      this.#accept(argmax, out, done, sp.eos);
      const now = performance.now();
      stepMs.push(now - tStep), tStep = now;
    }
    e.sync();
    const T3 = performance.now();
    return {
      tokens: out,
      latentLogits,
      timings: {
        prefillMs: T1 - T0,
        thoughtMs: T2 - T1,
        decodeMs: T3 - T2d,
        decodeSteps: steps,
        stepMs,
      },
    };
  }

  /**
   * Copies the keys and values of chunk `ch` (B sequences of T rows) into the cache from
   * position `at`: one engine call for every layer where B or T is 1 (a batch-1 generation, a
   * decoding step), the layers reached by their buffers' strides; else one a layer.
   */
  #toCache(ch: Chunk, B: number, T: number, at: number): void {
    const e = this.model.eng, C = this.model.cfg.dModel, nL = this.model.cfg.nLayer;
    const { kv: KW, qkv: W } = this.model.main.widths, tcap = this.#tcap;
    const dst = (l: number) => e.offset(this.#cache[l], at * KW * F32);
    const src = (l: number) => e.offset(ch.qkv[l], C * F32);
    if (B === 1 || T === 1) {
      // A layer's B * T rows (one of the two is 1), KW or a sequence apart in the cache.
      const dstRow = T === 1 ? tcap * KW : KW;
      e.copyRows(dst(0), src(0), nL, B * T, KW, this.#cacheStride, dstRow, ch.qkvStride, W, false);
      return;
    }
    for (let l = 0; l < nL; l++) {
      e.copyRows(dst(l), src(l), B, T, KW, tcap * KW, KW, T * W, W, false);
    }
  }

  #accept(ids: Int32Array, out: number[][], done: Uint8Array, eos: number): void {
    for (let b = 0; b < ids.length; b++) {
      if (done[b]) continue;
      if (ids[b] === eos) done[b] = 1;
      else out[b].push(ids[b]);
    }
  }
}

/**
 * The LOTUS training step (docs/method.md), and the explicit-CoT / no-CoT baseline step, on
 * the engine ops. Forward:
 *
 *   1. prefix: the question, once;
 *   2. pass 0 over the loop region (BOT + K*c latents) attending to the prefix's K/V;
 *   3. passes r = 1..R: latent inputs e_LAT + h^(r-1) ("add") or h^(r-1) ("replace") at the
 *      same position; BOT keeps its embedding; each pass attends to the same prefix K/V;
 *   4. suffix (EOT, remaining steps, answer) attending to prefix ‖ pass R's K/V;
 *   5. losses: answer CE on the suffix; step CE on pass R's logits at the BOT-offset slots
 *      (or per pass, block r-1 at pass r, "in-loop"), one CE per target layer when steps
 *      spill past their block; the aux decoder's CE for LOTUS-aux.
 *      Each is a token mean with its own denominator; loss = ans + lambda*step + w*aux.
 *
 * Backward runs the chunks in reverse, through every pass: no detach anywhere. Each loss's
 * logits gradient is applied as soon as the loss is computed (the fused cross-entropy writes
 * it in place), so only one logits buffer exists. In training that buffer holds a fixed number
 * of rows ({@linkcode HEAD_CHUNK_ROWS}): the LM head, the cross-entropy and the head's backward
 * run over the rows a chunk at a time, so the full rows x V logits are never held at once.
 *
 * @module
 */

import type { Engine, Ptr } from "../engine/ffi.ts";
import { GraphCache } from "../model/graphs.ts";
import { type Head, HeadPlan } from "./heads.ts";
import {
  type AuxBatch,
  auxBatch,
  type Example,
  type LotusBatch,
  type PlainBatch,
} from "./batch.ts";
import type { Model } from "../model/model.ts";
import {
  Arena,
  Chunk,
  type Dropout,
  F32,
  type Past,
  pastOfChunk,
  Scratch,
  sharedDqkv,
  type Stack,
} from "../model/stack.ts";
import { mixSeed } from "../base/rng.ts";

/** The LOTUS options of a step. */
export interface LotusOptions {
  /** Step-loss weight. */
  lambda: number;
  /** Aux-decoder loss weight (LOTUS-aux only; 0 skips the decoder). */
  auxWeight: number;
  /**
   * Where the step loss is taken: on the last pass's states ("after"), or per pass, block r-1
   * at pass r ("in-loop").
   */
  stepLoss: "after" | "in-loop";
  /**
   * What the latents of pass r > 0 receive: the LAT embedding plus the previous pass's state
   * ("add"), or that state alone ("replace").
   */
  injection: "add" | "replace";
  /**
   * Which states the LOTUS-aux decoder reads: every block from the last pass ("after", the
   * default), or block k from pass k + 1 ("in-loop", the reference's default: pass r's decoder
   * reads block r-1; blocks no pass reaches when R < K are not decoded).
   */
  auxReads?: "after" | "in-loop";
  /**
   * Dropout of this step (training only, with a runner allocated for it): every chunk (the
   * prefix, each loop pass, the suffix) draws its own masks from a seed derived from this one.
   */
  dropout?: Dropout;
  /**
   * The token-mean denominators to divide by instead of this batch's own: in data-parallel
   * training, those of the whole global batch, so that the losses (and gradients) of the
   * ranks' parts add up to the global batch's ({@linkcode LotusRunner.denominators}).
   */
  denominators?: LossDenominators;
  /** Told when parts of the gradient are final during the backward (data-parallel overlap). */
  ready?: GradReady;
}

/**
 * Told during a training step's backward when parts of the model's gradient are final (no
 * later op of the step adds to them), so that data-parallel training can start summing them
 * over the ranks while the backward goes on (`DataParallel.overlap`, train/data_parallel.ts).
 *
 * When each part is final: a backbone block is used by every chunk of the step (LOTUS: the
 * question prefix, each of the R + 1 loop passes and the suffix), so its gradient is final
 * only once the last chunk's backward, the prefix's, has passed it: block l right after the
 * prefix's backward of block l, the last block together with the final LayerNorm. The tied
 * embedding and the position embedding receive gradient until the very end (the prefix's
 * embedding backward). The LOTUS-aux decoder is done before the backbone's backward starts.
 */
export interface GradReady {
  /** Backbone block `layer` (the last one: with the final LayerNorm) has its final gradient. */
  block(layer: number): void;
  /** The aux decoder's gradient (its blocks, final LayerNorm and head) is final. */
  aux(): void;
  /** Called between pieces of the backward: started reductions may advance. */
  progress(): void;
}

/** The token counts that divide each loss of a step. */
export interface LossDenominators {
  /** Answer targets. */
  nAns: number;
  /** Step targets that the step loss covers. */
  nStep: number;
  /** Aux-decoder targets (0 when the decoder does not run). */
  nAux: number;
}

/** The losses of one step (token means) and their denominators. */
export interface StepLosses {
  /** The optimised total: ans + lambda*step + auxWeight*aux. */
  loss: number;
  /**
   * Mean cross-entropy (nats per token) of the answer targets. With denominators given
   * ({@linkcode LotusOptions.denominators}), this batch's share of the global batch's mean.
   */
  ans: number;
  /** Mean cross-entropy of the step targets (0 when there are none). */
  step: number;
  /** Mean cross-entropy of the aux decoder's targets (0 when the decoder does not run). */
  aux: number;
  /** Answer targets: the denominator of `ans`. */
  nAns: number;
  /** Step targets: the denominator of `step`. */
  nStep: number;
  /** Aux-decoder targets: the denominator of `aux`. */
  nAux: number;
}

/** The largest batch a runner must handle. */
export interface LotusCapacity {
  /** Most examples per batch. */
  B: number;
  /** Longest prefix (question). */
  P: number;
  /** Most latent blocks. */
  K: number;
  /** Latent slots per block. */
  c: number;
  /** Most loop iterations. */
  R: number;
  /** Longest suffix. */
  S: number;
  /** Longest aux-decoder sequence (c + longest step); 0 without the aux decoder. */
  auxT: number;
  /** Allocate the masks that dropout needs (training with dropout only). */
  dropout?: boolean;
  /**
   * Training only: keep fewer activations and recompute the rest in the backward (the
   * normalisation outputs, the attention output and the MLP activation, no matmul;
   * ChunkSharing in model/stack.ts). The gradients are bit-identical either way.
   */
  recompute?: boolean;
  /**
   * Keep each layer's qkv, and the suffix's past, in bf16 storage (Engine.allocBf16): half
   * the memory, and in bf16 mode the tensor-core attention's operands as they are, so the
   * results are the same bits. Default: where the engine offers it for the stack's head size
   * (Engine.keepsQkvBf16: the CUDA engine in bf16 mode with its tensor-core attention, unless
   * LOTUS_BF16_QKV=0), for GPT-2 stacks (Llama rotates its qkv in fp32).
   */
  qkvBf16?: boolean;
  /**
   * Keep each layer's MLP first projection (GELU's input) in bf16 storage: half the memory
   * and bytes moved, with GELU reading the sums rounded to bf16 as bf16 autocast's linear layer
   * writes them (within bf16's rounding of the fp32 step, not its bits). Default: where the
   * engine offers it (Engine.keepsFchBf16: the CUDA engine in bf16 mode, unless
   * LOTUS_BF16_FCH=0), for GPT-2 stacks (Llama's SwiGLU reads fp32).
   */
  fchBf16?: boolean;
  /**
   * Rows of logits held at once in training (default {@linkcode HEAD_CHUNK_ROWS}). A runner
   * without `training` holds all the rows of its largest head, whose logits
   * {@linkcode LotusRunner.logits} then exposes.
   */
  headRows?: number;
  /**
   * Training on the CUDA engine: the most recorded steps kept (graphs, one a batch shape and
   * set of options; {@linkcode MAX_STEP_GRAPHS} by default; 0 runs every step op by op). A
   * shape's step is recorded at its second occurrence and replayed from then on. Results are
   * the same bits either way.
   */
  maxGraphs?: number;
}

/**
 * Rows of logits a training runner holds at once (the default of
 * {@linkcode LotusCapacity.headRows}): 1,024 x 50,260 floats is 0.19 GiB at GPT-2's
 * vocabulary, against 0.95 GiB for the 5,056 rows of a loop pass at batch 64.
 */
export const HEAD_CHUNK_ROWS = 1024;

/**
 * Cross-entropy of `rows` rows of `h` through a head [V, C] (tied or not) against `targets`, `chunk`
 * rows at a time through one logits buffer of `chunk` x V; per-row losses go to `losses`.
 * With `dscale` (engine memory holding the gradient's scale, read when the ops run), the
 * logits' gradient is written and the head's backward applied chunk by chunk: dh += dlogits W and
 * dhead += dlogits^T h. Each row's loss and dh are those of one whole-rows pass; dhead is
 * summed over the chunks in order, so it differs from one pass only by fp32 rounding.
 */
function chunkedHeadLoss(
  e: Engine,
  logits: Ptr,
  chunk: number,
  losses: Ptr,
  h: Ptr,
  dh: Ptr,
  rows: number,
  C: number,
  V: number,
  targets: Ptr,
  dscale: Ptr,
  head: Ptr,
  dhead: Ptr,
): void {
  const grad = dscale !== null;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    const hc = e.offset(h, r0 * C * F32);
    e.matmulFwd(logits, hc, head, null, n, C, V);
    const lc = e.offset(losses, r0 * F32), tc = e.offset(targets, r0 * 4);
    e.xentFwdBwd(logits, lc, tc, n, V, grad ? 1 : 0, dscale);
    if (grad) {
      e.matmulBwd(e.offset(dh, r0 * C * F32), dhead, null, logits, hc, head, n, C, V);
    }
  }
}

/** The totals a LOTUS step's heads add to. */
const STEP = 0, ANS = 1, AUX = 2;
/** Where a LOTUS step's heads run, beside loop passes 1..R (in-loop step loss). */
const AFTER_LOOP = -1, SUFFIX = -2, AUX_HEAD = -3;

/**
 * The most recorded steps a training runner keeps by default (CUDA engine): one a batch shape
 * (and curriculum stage), the least recently used dropped first.
 */
export const MAX_STEP_GRAPHS = 16;

/** Buffers for uploading one region's ids, positions and key validity. */
interface Region {
  ids: Ptr;
  pos: Ptr;
  valid: Ptr;
}

function region(a: Arena, rows: number, keys: number): Region {
  return { ids: a.i32(rows), pos: a.i32(rows), valid: a.bytes(keys) };
}

/**
 * Dropout seeds in engine memory, for the chunks of one step: chunk i's sites (the block
 * input and each layer's two residual branches, as model/stack.ts numbers them) at
 * `i * sites`. Uploaded before the step's ops, so that a recorded step draws new masks.
 */
class SeedTable {
  readonly sites: number;
  readonly buf: Ptr;
  constructor(a: Arena, nLayer: number, readonly chunks: number) {
    this.sites = 1 + 2 * nLayer;
    this.buf = a.bytes(chunks * this.sites * 8);
  }

  /** Uploads the seeds of `drops` (chunk i: `drops[i]`) and returns each chunk's dropout. */
  upload(eng: Engine, drops: Dropout[]): Dropout[] {
    const t = new BigUint64Array(drops.length * this.sites);
    for (let i = 0; i < drops.length; i++) {
      for (let s = 0; s < this.sites; s++) t[i * this.sites + s] = mixSeed(drops[i].seed, s);
    }
    eng.upload(this.buf, t);
    return drops.map((d, i) => ({ ...d, seeds: eng.offset(this.buf, i * this.sites * 8) }));
  }
}

/** Step targets of the blocks that some pass supervises in the loop (blocks 0..R-1). */
function inLoopSteps(b: LotusBatch): number {
  let n = 0;
  for (const block of [b.stepBlock, ...b.spillBlock]) {
    for (let i = 0; i < b.B * b.L; i++) if (block[i] >= 0 && block[i] < b.R) n++;
  }
  return n;
}

/** Runs `ops` from `graphs` under `key` when the key was seen before, else op by op. */
function runRecorded(graphs: GraphCache | null, key: string, ops: () => void): void {
  if (graphs && graphs.maxGraphs > 0 && graphs.seen(key)) graphs.run(key, ops);
  else ops();
}

/**
 * Runs LOTUS steps on a model. Allocates every activation once for a capacity, in engine
 * memory: call {@linkcode LotusRunner.free} when done.
 *
 * On the CUDA engine, a training step whose batch shape and options were seen before is
 * recorded as one graph (forward, losses and backward) and replayed from then on: one host
 * call instead of thousands. Everything that differs between batches of one shape (ids,
 * positions, key validity, targets, the losses' gradient scales, dropout seeds) is uploaded
 * before the step's ops, which read it from engine memory, so a replay computes exactly what
 * running the ops would. Steps that tell data-parallel training of ready gradients run op by
 * op.
 */
export class LotusRunner {
  /** The model whose backbone (and aux decoder) the steps run. */
  readonly model: Model;
  /** The largest batch the runner takes. */
  readonly cap: LotusCapacity;
  #arena: Arena;
  #sc: Scratch;
  #pre: Chunk;
  #loop: Chunk[];
  #suf: Chunk;
  #aux: Chunk | null;
  #kvcat: Ptr;
  #dkvcat: Ptr;
  #logits: Ptr;
  #logitRows: number;
  #heads: HeadPlan;
  #preR: Region;
  #loopR: Region;
  #loopRepl: Ptr;
  #sufR: Region;
  #auxR: Region | null;
  #seeds: SeedTable | null;
  #graphs: GraphCache | null;
  #training: boolean;

  /** Allocate for `cap`; `training` keeps what the backward needs. */
  constructor(model: Model, cap: LotusCapacity, training: boolean) {
    this.model = model;
    this.cap = cap;
    this.#training = training;
    const cfg = model.cfg, C = cfg.dModel, V = cfg.vocabSize;
    const a = this.#arena = new Arena(model.eng);
    // An allocation that fails (engine memory) frees those made before it.
    try {
      const shape = model.main.shape;
      const Lmax = 1 + cap.K * cap.c;
      const auxRows = model.aux ? cap.B * cap.K * cap.auxT : 0;
      const rows = Math.max(cap.B * cap.P, cap.B * Lmax, cap.B * cap.S, auxRows);
      this.#sc = new Scratch(a, rows, C, training, shape, cap.recompute === true);
      const masks = training && cap.dropout === true;
      const store = bf16Storage(model.main, cap), q16 = store.qkvBf16;
      const rc = { ...(this.#sc.recompute ? { recompute: this.#sc } : {}), ...store };
      this.#pre = new Chunk(a, shape, cap.B, cap.P, 0, training, masks, rc);
      // A loop pass's qkv is a past only to the suffix (pass R's), whose gradient is routed to it
      // just before that pass's backward: the passes share one set of qkv gradient buffers.
      const loopDqkv = training ? { dqkv: sharedDqkv(a, shape, cap.B * Lmax) } : {};
      this.#loop = Array.from(
        { length: cap.R + 1 },
        () => new Chunk(a, shape, cap.B, Lmax, cap.P, training, masks, { ...rc, ...loopDqkv }),
      );
      this.#suf = new Chunk(a, shape, cap.B, cap.S, cap.P + Lmax, training, masks, rc);
      this.#aux = model.aux && cap.K > 0
        ? new Chunk(
          a,
          model.aux.shape,
          cap.B * cap.K,
          cap.auxT,
          0,
          training,
          false,
          bf16Storage(model.aux, cap),
        )
        : null;
      const KW = model.main.widths.kv;
      // The suffix's past, one layer at a time (#suffixPast), in the element type of qkv.
      const kvRows = cap.B * (cap.P + Lmax) * KW;
      this.#kvcat = q16 ? a.bf16(kvRows) : a.f32(kvRows);
      this.#dkvcat = training ? a.f32(cap.B * (cap.P + Lmax) * KW) : null;
      const logitRows = Math.max(cap.B * Lmax, cap.B * cap.S, auxRows);
      this.#logitRows = training
        ? Math.max(1, Math.min(logitRows, cap.headRows ?? HEAD_CHUNK_ROWS))
        : logitRows;
      this.#logits = a.f32(this.#logitRows * V);
      const graphs = training && model.eng.backend === "cuda"
        ? new GraphCache(model.eng, Math.max(0, cap.maxGraphs ?? MAX_STEP_GRAPHS))
        : null;
      this.#graphs = graphs;
      // Room for every head of a step: in-loop supervision has one a pass (more buffer is
      // allocated when a step needs it: more step-target layers under --long-step spill).
      this.#heads = new HeadPlan(
        model.eng,
        logitRows * (cap.R + 3),
        cap.R + 3,
        () => graphs?.clear(),
      );
      this.#preR = region(a, cap.B * cap.P, cap.B * cap.P);
      this.#loopR = region(a, cap.B * Lmax, cap.B * (cap.P + Lmax));
      this.#loopRepl = a.i32(cap.B * Lmax);
      this.#sufR = region(a, cap.B * cap.S, cap.B * (cap.P + Lmax + cap.S));
      this.#auxR = this.#aux ? region(a, auxRows, 0) : null;
      // Chunks: the prefix, passes 0..R, the suffix.
      this.#seeds = masks ? new SeedTable(a, cfg.nLayer, cap.R + 3) : null;
    } catch (e) {
      this.#freeAfterFailure();
      throw e;
    }
  }

  /** {@linkcode LotusRunner.free} for a constructor that failed part way. */
  #freeAfterFailure(): void {
    (this.#graphs as GraphCache | null | undefined)?.clear();
    (this.#heads as HeadPlan | undefined)?.free();
    this.#arena.free();
  }

  /** Bytes of engine memory held by the runner's activations. */
  get bytes(): number {
    return this.#arena.allocated + this.#heads.bytes;
  }

  /**
   * The logits buffer that every head shares. After a step of a runner built without
   * `training` and without the aux decoder, it holds the suffix's logits [B*S, V] of that
   * step (the last head computed, unchanged since cross-entropy gets no gradient then).
   * Used to compare engines and reference implementations.
   */
  get logits(): Ptr {
    return this.#logits;
  }

  /** Steps recorded as graphs and kept now (CUDA engine, training). */
  get recordedSteps(): number {
    return this.#graphs?.size ?? 0;
  }

  /** Free the activations (and the recorded steps). */
  free(): void {
    this.#graphs?.clear();
    this.#heads.free();
    this.#arena.free();
  }

  /**
   * Cross-entropy of `h` rows through a head against the head's targets, with the head's
   * backward applied at once into `dh` (and the head's gradient) when the head has one.
   */
  #headLoss(hd: Head, h: Ptr, dh: Ptr, head: Ptr, dhead: Ptr): void {
    const e = this.model.eng, C = this.model.cfg.dModel, V = this.model.cfg.vocabSize;
    const heads = this.#heads;
    chunkedHeadLoss(
      e,
      this.#logits,
      this.#logitRows,
      heads.losses(hd),
      h,
      dh,
      hd.rows,
      C,
      V,
      heads.targets(hd),
      heads.scale(hd),
      head,
      dhead,
    );
  }

  /**
   * The denominators a step of `b` divides its losses by (with the same options): the
   * answer targets, the step targets the step loss covers (with `stepLoss: "in-loop"`, only
   * those of blocks some pass supervises) and the aux decoder's targets when it runs.
   */
  denominators(b: LotusBatch, opts: LotusOptions, exs?: Example[]): LossDenominators {
    const nStep = opts.stepLoss === "in-loop" ? inLoopSteps(b) : b.nStep;
    let nAux = 0;
    if (this.#aux && this.model.aux && b.K > 0 && opts.auxWeight > 0) {
      if (!exs) throw new Error("LOTUS-aux needs the batch's examples");
      nAux = auxBatch(exs, b.K, b.c, opts.auxReads === "in-loop" ? b.R : b.K).nTargets;
    }
    return { nAns: b.nAns, nStep, nAux };
  }

  /**
   * One forward (and, when training, backward) of a LOTUS batch. Gradients accumulate into
   * the model's gradient slab; the caller zeroes it and steps the optimiser. `exs` are the
   * batch's examples, needed for the aux decoder.
   *
   * @throws {RangeError} when the batch exceeds {@linkcode LotusRunner.cap}.
   * @throws {Error} when the aux decoder runs and `exs` is missing.
   */
  step(b: LotusBatch, opts: LotusOptions, exs?: Example[]): StepLosses {
    return this.queue(b, opts, exs)();
  }

  /**
   * {@linkcode LotusRunner.step} without the wait for its losses: the step's ops are queued
   * in the engine, and the returned function waits for and gives its losses. Steps queued
   * before any is read (a batch's micro-batches) cost one host wait in all, at the first
   * read.
   *
   * @throws {RangeError} when the batch exceeds {@linkcode LotusRunner.cap}.
   * @throws {Error} when the aux decoder runs and `exs` is missing.
   */
  queue(b: LotusBatch, opts: LotusOptions, exs?: Example[]): () => StepLosses {
    const m = this.model, e = m.eng, cap = this.cap;
    const { B, P, L, S, K, R } = b;
    if (B > cap.B || P > cap.P || L > 1 + cap.K * cap.c || S > cap.S || R > cap.R) {
      throw new RangeError(
        `batch (B=${B}, P=${P}, L=${L}, S=${S}, R=${R}) exceeds the runner's capacity`,
      );
    }
    const train = this.#training, heads = this.#heads;

    // Plan the heads, in the order the ops run them, with their denominators: the answer
    // targets; the step targets, every one after the loop, or in the loop only those of the
    // blocks some pass supervises (block r-1 at pass r: blocks 0..R-1), under --long-step
    // spill over several target layers (one cross-entropy each); the aux decoder's targets.
    // Data-parallel training divides by the global batch's counts instead.
    heads.reset();
    const layers = [
      { targets: b.stepTargets, block: b.stepBlock },
      ...b.spillTargets.map((t, m) => ({ targets: t, block: b.spillBlock[m] })),
    ];
    const inLoop = opts.stepLoss === "in-loop";
    const den = opts.denominators;
    const nStep = den ? den.nStep : inLoop ? inLoopSteps(b) : b.nStep;
    const nAns = den ? den.nAns : b.nAns;
    const stepW = opts.lambda;
    const grad = (w: number, n: number) => train && n > 0 && w > 0;
    if (inLoop) {
      for (let r = 1; r <= R; r++) {
        for (const ly of layers) {
          const t = new Int32Array(B * L).fill(-100);
          let any = false;
          for (let i = 0; i < B * L; i++) {
            if (ly.block[i] === r - 1) t[i] = ly.targets[i], any = true;
          }
          if (any || ly === layers[0]) heads.add(t, STEP, r, grad(stepW, nStep), stepW, nStep);
        }
      }
    } else if (K > 0) {
      for (const ly of layers) {
        heads.add(ly.targets, STEP, AFTER_LOOP, grad(stepW, nStep), stepW, nStep);
      }
    }
    heads.add(b.suffixTargets, ANS, SUFFIX, grad(1, nAns), 1, nAns);
    let ab: AuxBatch | null = null, nAux = 0;
    if (this.#aux && m.aux && K > 0 && opts.auxWeight > 0) {
      if (!exs) throw new Error("LOTUS-aux needs the batch's examples");
      ab = auxBatch(exs, K, b.c, opts.auxReads === "in-loop" ? R : K);
      if (ab.T > cap.auxT) {
        throw new RangeError(`aux sequence of ${ab.T} exceeds the runner's capacity ${cap.auxT}`);
      }
      nAux = den ? den.nAux : ab.nTargets;
      heads.add(ab.targets, AUX, AUX_HEAD, grad(opts.auxWeight, nAux), opts.auxWeight, nAux);
    }

    // Everything the ops read that differs between batches goes up before them.
    const pr = this.#preR, lr = this.#loopR, sr = this.#sufR;
    e.upload(pr.ids, b.prefixIds), e.upload(pr.pos, b.prefixPos), e.upload(pr.valid, b.prefixValid);
    e.upload(lr.ids, b.loopIds), e.upload(lr.pos, b.loopPos), e.upload(lr.valid, b.loopValid);
    if (opts.injection === "replace") e.upload(this.#loopRepl, b.loopIdsReplace);
    e.upload(sr.ids, b.suffixIds), e.upload(sr.pos, b.suffixPos), e.upload(sr.valid, b.suffixValid);
    if (ab) e.upload(this.#auxR!.ids, ab.ids);
    const queued = heads.upload();
    const drop = train && opts.dropout && opts.dropout.p > 0 ? opts.dropout : null;
    // Chunk i's dropout: 0 the prefix, 1 + r loop pass r, R + 2 the suffix (seed tags 0,
    // 1 + r and -1).
    let drops: (Dropout | null)[] = Array.from({ length: R + 3 }, () => null);
    if (drop) {
      const tags = drops.map((_, i) => (i === R + 2 ? -1 : i));
      const own = tags.map((t) => ({ p: drop.p, seed: mixSeed(drop.seed, t) }));
      drops = this.#seeds ? this.#seeds.upload(e, own) : own;
    }

    const ops = () => this.#ops(b, opts, ab, drops);
    if (opts.ready) ops(); // data-parallel callbacks run between the ops
    else {
      const key = [
        B,
        P,
        L,
        S,
        K,
        R,
        b.c,
        opts.injection,
        drop ? drop.p : 0,
        ab ? `${ab.n}x${ab.T},${opts.auxReads}` : "-",
        e.precision,
        heads.heads.map((h) => `${h.at}:${h.rows}${h.grad ? "g" : ""}`).join(" "),
      ].join(",");
      runRecorded(this.#graphs, key, ops);
    }

    // The one host wait of the step's losses, after the backward has been queued.
    return () => {
      const [stepSum, ansSum, auxSum] = heads.read(queued, 3);
      const ans = nAns ? ansSum / nAns : 0;
      const step = nStep ? stepSum / nStep : 0;
      const aux = nAux ? auxSum / nAux : 0;
      return {
        loss: ans + opts.lambda * step + opts.auxWeight * aux,
        ans,
        step,
        aux,
        nAns,
        nStep,
        nAux,
      };
    };
  }

  /** The engine ops of a step whose inputs, targets, scales and seeds are uploaded. */
  #ops(b: LotusBatch, opts: LotusOptions, ab: AuxBatch | null, drops: (Dropout | null)[]): void {
    const m = this.model, e = m.eng, C = m.cfg.dModel;
    const { B, P, L, S, R } = b;
    const train = this.#training, sc = this.#sc, main = m.main;
    const pre = this.#pre, loop = this.#loop, suf = this.#suf;
    const heads = this.#heads.heads;
    const headsAt = (at: number, ch: Chunk) => {
      for (const hd of heads) if (hd.at === at) this.#headLoss(hd, ch.h, ch.dh, m.head, m.ghead);
    };
    if (train) {
      main.zeroGrads(pre, B, P);
      for (let r = 0; r <= R; r++) main.zeroGrads(loop[r], B, L);
      main.zeroGrads(suf, B, S);
    }

    // 1. prefix
    const pr = this.#preR;
    e.embedFwd(pre.x[0], pr.ids, pr.pos, m.wte, m.wpe, B * P, C);
    main.forward(pre, sc, B, P, null, pr.valid, drops[0], pr.pos);
    const prePast = pastOfChunk(pre, C, e, main.shape);

    // 2-3. loop passes, each with its in-loop heads (pass r supervises block r-1)
    const lr = this.#loopR;
    const idsOfPass = (r: number) =>
      r > 0 && opts.injection === "replace" ? this.#loopRepl : lr.ids;
    for (let r = 0; r <= R; r++) {
      const ch = loop[r];
      e.embedFwd(ch.x[0], idsOfPass(r), lr.pos, m.wte, m.wpe, B * L, C);
      if (r > 0) {
        // x[b, i] += h^(r-1)[b, i] for the latents i = 1..L-1 (same position, no shift).
        e.copyRows(
          e.offset(ch.x[0], C * F32),
          e.offset(loop[r - 1].h, C * F32),
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
      main.forward(ch, sc, B, L, prePast, lr.valid, drops[1 + r], lr.pos);
      if (r > 0) headsAt(r, ch);
    }
    headsAt(AFTER_LOOP, loop[R]);

    // 4. suffix on prefix ‖ pass R
    const kvPast = this.#suffixPast(b, loop[R]);
    const sr = this.#sufR;
    e.embedFwd(suf.x[0], sr.ids, sr.pos, m.wte, m.wpe, B * S, C);
    main.forward(suf, sc, B, S, kvPast, sr.valid, drops[R + 2], sr.pos);
    headsAt(SUFFIX, suf);

    // 5. LOTUS-aux: the aux decoder reads each block's latents, from pass R or (in-loop)
    // block k from pass k + 1.
    if (ab) {
      const hd = heads.find((h) => h.at === AUX_HEAD)!;
      const inLoop = opts.auxReads === "in-loop";
      this.#auxStep(ab, hd, b, (k) => (inLoop ? loop[k + 1] : loop[R]));
      if (train) opts.ready?.aux();
    }

    if (train) {
      // Backward, in reverse order of the forward. Every chunk runs every block, so a block's
      // gradient is final only after the prefix's backward has passed it (GradReady).
      const ready = opts.ready;
      const progress = ready ? () => ready.progress() : undefined;
      // The passes' shared qkv gradients: zeroed before each pass's backward, pass R's before
      // the suffix's, whose key/value gradient is routed to it layer by layer.
      main.zeroDqkv(loop[R], B, L);
      main.backward(suf, sc, kvPast, progress);
      kvPast.flush();
      e.embedBwd(m.gwte, m.gwpe, sc.dres, sr.ids, sr.pos, B * S, C);
      for (let r = R; r >= 0; r--) {
        const ch = loop[r];
        if (r < R) main.zeroDqkv(ch, B, L);
        const dx = main.backward(ch, sc, prePast, progress);
        e.embedBwd(m.gwte, m.gwpe, dx, idsOfPass(r), lr.pos, B * L, C);
        if (r > 0) {
          e.copyRows(
            e.offset(loop[r - 1].dh, C * F32),
            e.offset(dx, C * F32),
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
      }
      const dx = main.backward(pre, sc, null, ready ? (l) => ready.block(l) : undefined);
      e.embedBwd(m.gwte, m.gwpe, dx, pr.ids, pr.pos, B * P, C);
    }
  }

  /**
   * The suffix's past: prefix K/V ‖ pass R's K/V, copied into one [B, P+L, KW] buffer (KW = 2C,
   * or 2Ckv with grouped-query attention). One buffer serves every layer: a layer's keys and
   * values are copied in when the suffix's attention asks for them (in the forward, and again
   * in the backward, which meets the layers in the other order). Their gradient gathers in one
   * buffer too; it is routed to the prefix's and pass R's qkv gradients before the next
   * layer's claims it, and the last layer's by `flush()`, before the passes' backward reads
   * them. Per-layer buffers would hold the same values in 2 x nLayer times the memory.
   */
  #suffixPast(b: LotusBatch, last: Chunk): Past & { flush(): void } {
    const e = this.model.eng, C = this.model.cfg.dModel, { B, P, L } = b;
    const { qkv: W, kv: KW } = this.model.main.widths;
    const T = P + L, kv = this.#kvcat, dkv = this.#dkvcat;
    let held = -1, pending = -1;
    // Layer l's two pieces of the past (or of its gradient, always fp32): the chunk's K/V
    // columns, where they start in the concatenation, and their rows (the prefix's P, then
    // pass R's L).
    const q = this.#pre.qkvBytes; // bytes of a qkv (and kv) element: 2 in bf16 storage
    const pieces = (l: number, grad: boolean) =>
      [
        [e.offset((grad ? this.#pre.dqkv : this.#pre.qkv)[l], C * (grad ? F32 : q)), 0, P],
        [e.offset((grad ? last.dqkv : last.qkv)[l], C * (grad ? F32 : q)), P, L],
      ] as const;
    // Route the gradient of layer l's past back to the two qkv gradients it came from.
    const route = (l: number) => {
      for (const [dst, at, n] of pieces(l, true)) {
        e.copyRows(dst, e.offset(dkv, at * KW * F32), B, n, KW, n * W, W, T * KW, KW, true);
      }
    };
    return {
      length: T,
      kv: (l) => {
        if (held !== l) {
          for (const [src, at, n] of pieces(l, false)) {
            e.copyRows(e.offset(kv, at * KW * q), src, B, n, KW, T * KW, KW, n * W, W, false);
          }
          held = l;
        }
        return kv;
      },
      dkv: (l) => {
        if (dkv === null) return null;
        if (pending !== l) {
          if (pending >= 0) route(pending);
          e.zero(dkv, B * T * KW * F32);
          pending = l;
        }
        return dkv;
      },
      flush: () => {
        if (pending >= 0) route(pending);
        pending = -1;
      },
      bs: T * KW,
      rs: KW,
    };
  }

  /**
   * The aux decoder's forward, loss and (when training) backward, which adds its gradient
   * into the dh of the pass each block is read from (`passOf`) before the main backward
   * starts, through its planned head `hd`.
   */
  #auxStep(
    ab: AuxBatch,
    hd: Head,
    b: LotusBatch,
    passOf: (block: number) => Chunk | undefined,
  ): void {
    const m = this.model, e = m.eng, C = m.cfg.dModel, aux = m.aux!, ch = this.#aux!;
    const ar = this.#auxR!, sc = this.#sc;
    const { n, T } = ab, K = b.K, c = b.c, B = b.B, L = b.L;
    if (this.#training) aux.zeroGrads(ch, n, T);
    // Token rows get their embedding (no position: the reference's decoder has none);
    // latent rows (id -1) start at zero and receive block k's states.
    e.embedFwd(ch.x[0], ar.ids, ar.pos, m.wte, null, n * T, C);
    for (let k = 0; k < K; k++) {
      const src = passOf(k);
      if (!src) continue; // no pass reaches the block: zero latents, no targets
      e.copyRows(
        e.offset(ch.x[0], k * T * C * F32),
        e.offset(src.h, (1 + k * c) * C * F32),
        B,
        c,
        C,
        K * T * C,
        C,
        L * C,
        C,
        true,
      );
    }
    aux.forward(ch, sc, n, T, null, null);
    this.#headLoss(hd, ch.h, ch.dh, m.auxHead, m.gAuxHead);
    if (this.#training) {
      const dx = aux.backward(ch, sc, null);
      e.embedBwd(m.gwte, null, dx, ar.ids, ar.pos, n * T, C);
      for (let k = 0; k < K; k++) {
        const src = passOf(k);
        if (!src) continue;
        e.copyRows(
          e.offset(src.dh, (1 + k * c) * C * F32),
          e.offset(dx, k * T * C * F32),
          B,
          c,
          C,
          L * C,
          C,
          K * T * C,
          C,
          true,
        );
      }
    }
  }
}

/**
 * The bf16 storage a stack's chunks keep (model/stack.ts ChunkSharing): what `over` says, else
 * what the stack's engine offers for it (Engine.keepsQkvBf16 for its head size,
 * Engine.keepsFchBf16), for GPT-2 stacks only (Llama rotates qkv and its SwiGLU reads the MLP's
 * projection in fp32).
 */
function bf16Storage(
  stack: Stack,
  over: Pick<LotusCapacity, "qkvBf16" | "fchBf16">,
): { qkvBf16: boolean; fchBf16: boolean } {
  const gpt2 = !stack.widths.llama, { dModel, nHead } = stack.shape, eng = stack.eng;
  return {
    qkvBf16: over.qkvBf16 ?? (gpt2 && eng.keepsQkvBf16(dModel / nHead)),
    fchBf16: over.fchBf16 ?? (gpt2 && eng.keepsFchBf16()),
  };
}

/**
 * Runs explicit-CoT and no-CoT steps: one causal chunk per example. Allocates its
 * activations once, in engine memory: call {@linkcode PlainRunner.free} when done.
 */
export class PlainRunner {
  /** The model whose backbone the steps run. */
  readonly model: Model;
  #arena: Arena;
  #sc: Scratch;
  #ch: Chunk;
  #r: Region;
  #logits: Ptr;
  #logitRows: number;
  #heads: HeadPlan;
  #seeds: SeedTable | null;
  #graphs: GraphCache | null;
  #training: boolean;
  /** Most sequences per batch. */
  readonly maxB: number;
  /** Longest sequence, in tokens. */
  readonly maxT: number;

  /**
   * Allocate for up to `maxB` sequences of `maxT` tokens (with `dropout`, the masks a training
   * step with dropout needs; with `recompute`, fewer activations kept, as
   * {@linkcode LotusCapacity.recompute}; `maxGraphs`: as {@linkcode LotusCapacity.maxGraphs}).
   * qkv and the MLP's first projection are kept in the bf16 storage the engine offers, as a
   * LOTUS runner's are by default ({@linkcode LotusCapacity.qkvBf16},
   * {@linkcode LotusCapacity.fchBf16}), so both step the same numerics.
   */
  constructor(
    model: Model,
    maxB: number,
    maxT: number,
    training: boolean,
    dropout = false,
    recompute = false,
    maxGraphs = MAX_STEP_GRAPHS,
  ) {
    this.model = model;
    this.maxB = maxB;
    this.maxT = maxT;
    this.#training = training;
    const a = this.#arena = new Arena(model.eng);
    // An allocation that fails (engine memory) frees those made before it.
    try {
      const rows = maxB * maxT;
      const sc = this.#sc = new Scratch(
        a,
        rows,
        model.cfg.dModel,
        training,
        model.main.shape,
        recompute,
      );
      this.#ch = new Chunk(
        a,
        model.main.shape,
        maxB,
        maxT,
        0,
        training,
        training && dropout,
        { ...(sc.recompute ? { recompute: sc } : {}), ...bf16Storage(model.main, {}) },
      );
      this.#r = region(a, rows, rows);
      this.#logitRows = Math.min(rows, HEAD_CHUNK_ROWS);
      this.#logits = a.f32(this.#logitRows * model.cfg.vocabSize);
      const graphs = training && model.eng.backend === "cuda"
        ? new GraphCache(model.eng, Math.max(0, maxGraphs))
        : null;
      this.#graphs = graphs;
      this.#heads = new HeadPlan(model.eng, rows, 1, () => graphs?.clear());
      this.#seeds = training && dropout ? new SeedTable(a, model.cfg.nLayer, 1) : null;
    } catch (e) {
      this.#freeAfterFailure();
      throw e;
    }
  }

  /** {@linkcode PlainRunner.free} for a constructor that failed part way. */
  #freeAfterFailure(): void {
    (this.#graphs as GraphCache | null | undefined)?.clear();
    (this.#heads as HeadPlan | undefined)?.free();
    this.#arena.free();
  }

  /** Steps recorded as graphs and kept now (CUDA engine, training). */
  get recordedSteps(): number {
    return this.#graphs?.size ?? 0;
  }

  /** Free the activations (and the recorded steps). */
  free(): void {
    this.#graphs?.clear();
    this.#heads.free();
    this.#arena.free();
  }

  /**
   * One forward (and backward when training) of a baseline batch. Gradients accumulate into
   * the model's gradient slab. Returns the mean token loss as `loss` and `ans`. `nTargets`:
   * the denominator instead of the batch's own target count (data-parallel training: the
   * global batch's, so that the ranks' losses and gradients add up to it). `ready`: told
   * when each block's gradient is final during the backward (data-parallel overlap).
   *
   * @throws {RangeError} when the batch exceeds maxB or maxT.
   */
  step(
    b: PlainBatch,
    dropout: Dropout | null = null,
    nTargets?: number,
    ready?: GradReady,
  ): StepLosses {
    return this.queue(b, dropout, nTargets, ready)();
  }

  /**
   * {@linkcode PlainRunner.step} without the wait for its loss: the returned function waits
   * for and gives it. Steps queued before any is read cost one host wait in all.
   *
   * @throws {RangeError} when the batch exceeds maxB or maxT.
   */
  queue(
    b: PlainBatch,
    dropout: Dropout | null = null,
    nTargets?: number,
    ready?: GradReady,
  ): () => StepLosses {
    const m = this.model, e = m.eng, C = m.cfg.dModel, V = m.cfg.vocabSize;
    const { B, T } = b, N = B * T, ch = this.#ch, r = this.#r;
    if (B > this.maxB || T > this.maxT) {
      throw new RangeError(`batch (B=${B}, T=${T}) exceeds the runner's capacity`);
    }
    const den = nTargets ?? b.nTargets;
    const grad = this.#training && den > 0;
    const heads = this.#heads;
    heads.reset();
    const hd = heads.add(b.targets, 0, 0, grad, 1, den);
    e.upload(r.ids, b.ids), e.upload(r.pos, b.pos), e.upload(r.valid, b.valid);
    const queued = heads.upload();
    let drop = this.#training && dropout && dropout.p > 0 ? dropout : null;
    if (drop && this.#seeds) drop = this.#seeds.upload(e, [drop])[0];
    const ops = () => {
      if (this.#training) m.main.zeroGrads(ch, B, T);
      e.embedFwd(ch.x[0], r.ids, r.pos, m.wte, m.wpe, N, C);
      m.main.forward(ch, this.#sc, B, T, null, r.valid, drop, r.pos);
      chunkedHeadLoss(
        e,
        this.#logits,
        this.#logitRows,
        heads.losses(hd),
        ch.h,
        ch.dh,
        N,
        C,
        V,
        heads.targets(hd),
        heads.scale(hd),
        m.head,
        m.ghead,
      );
      if (grad) {
        // One chunk: each block's gradient is final as soon as its backward is issued.
        const dx = m.main.backward(ch, this.#sc, null, ready ? (l) => ready.block(l) : undefined);
        e.embedBwd(m.gwte, m.gwpe, dx, r.ids, r.pos, N, C);
      }
    };
    if (ready) ops();
    else runRecorded(this.#graphs, `${B},${T},${drop ? drop.p : 0},${e.precision},${grad}`, ops);
    // The step's one host wait for its loss, after the backward has been queued.
    return () => {
      const [s] = heads.read(queued, 1);
      const ans = den ? s / den : 0;
      return { loss: ans, ans, step: 0, aux: 0, nAns: den, nStep: 0, nAux: 0 };
    };
  }
}

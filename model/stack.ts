/**
 * A stack of GPT-2 blocks run over one "chunk" of positions: the question prefix, one loop
 * pass over BOT and the latents, the answer suffix, a decode step, or the auxiliary decoder's
 * input. A chunk may attend to a "past" of keys and values held elsewhere (the prefix's qkv
 * buffer, a K/V cache), which is how LOTUS computes the question once and reuses it in every
 * pass.
 *
 * Each chunk keeps its own activations for backward. Its per-layer qkv gradient (`dqkv`)
 * persists across the backward of later chunks: a later chunk that attended to this one
 * writes its key/value gradient straight into this chunk's `dqkv` (the engine's backward ops
 * accumulate), so by the time this chunk's own backward runs, its `dqkv` already holds
 * everything. Chunks therefore run backward in the reverse order of their forward.
 *
 * Block (pre-LayerNorm, as GPT-2):
 *   ln1 = LN(x); qkv = ln1 Wqkv^T; y = attn(qkv, past); r2 = x + y Wproj^T
 *   ln2 = LN(r2); f = gelu(ln2 Wfc^T); x' = r2 + f Wfcproj^T
 * and after the last block h = LN_f(x').
 *
 * Llama block (pre-RMSNorm), when the shape's arch is "llama":
 *   n1 = RMS(x); qkv = n1 [Wq; Wk; Wv]^T, queries and keys rotated by their positions;
 *   y = gqa_attn(qkv, past); r2 = x + y Wo^T; n2 = RMS(r2); gu = n2 [Wgate; Wup]^T;
 *   x' = r2 + swiglu(gu) Wdown^T
 * and after the last block h = RMS_f(x'). The past holds rotated keys, so a later chunk reads
 * them as they are; a chunk's backward rotates its qkv gradient back (the inverse rotation)
 * once every later chunk has added to it, just before the projection's backward.
 *
 * @module
 */

import type { Engine, Ptr } from "../engine/ffi.ts";
import type { BlockLayout } from "./params.ts";
import { mixSeed } from "../base/rng.ts";

/** Bytes per fp32 element. */
export const F32 = 4;

/** Engine pointers of one block's tensors (parameters or their gradients). */
export interface BlockPtrs {
  ln1w: Ptr;
  ln1b: Ptr;
  qkvw: Ptr;
  qkvb: Ptr;
  projw: Ptr;
  projb: Ptr;
  ln2w: Ptr;
  ln2b: Ptr;
  fcw: Ptr;
  fcb: Ptr;
  fcprojw: Ptr;
  fcprojb: Ptr;
}

/** Pointers of a whole stack: its blocks and the final LayerNorm (or RMSNorm). */
export interface StackPtrs {
  blocks: BlockPtrs[];
  lnfw: Ptr;
  lnfb: Ptr;
}

/** Resolve a stack's tensors inside a slab (parameters, gradients, ...). */
export function stackPtrs(
  eng: Engine,
  slab: Ptr,
  blocks: BlockLayout[],
  lnfw: number,
  lnfb: number,
): StackPtrs {
  const at = (off: number) => off < 0 ? null : eng.offset(slab, off * F32);
  return {
    blocks: blocks.map((b) => ({
      ln1w: at(b.ln1w),
      ln1b: at(b.ln1b),
      qkvw: at(b.qkvw),
      qkvb: at(b.qkvb),
      projw: at(b.projw),
      projb: at(b.projb),
      ln2w: at(b.ln2w),
      ln2b: at(b.ln2b),
      fcw: at(b.fcw),
      fcb: at(b.fcb),
      fcprojw: at(b.fcprojw),
      fcprojb: at(b.fcprojb),
    })),
    lnfw: at(lnfw),
    lnfb: at(lnfb),
  };
}

/** A past of keys/values for layer l: row (b, t) of keys at kv + b*bs + t*rs, values C later. */
export interface Past {
  /** Number of past positions. */
  length: number;
  /** Key pointer of row (0, 0) for layer l. */
  kv(l: number): Ptr;
  /** Gradient pointer with the same strides, or null when no gradient is wanted. */
  dkv(l: number): Ptr;
  /** Batch stride in floats. */
  bs: number;
  /** Row stride in floats. */
  rs: number;
}

/** Tracks engine allocations so they are freed together. */
export class Arena {
  #eng: Engine;
  #ptrs: Ptr[] = [];
  #bytes = 0;
  /** Create an arena over an engine. */
  constructor(eng: Engine) {
    this.#eng = eng;
  }
  /** Allocate `n` fp32 elements (zeroed). */
  f32(n: number): Ptr {
    return this.bytes(Math.max(1, n) * F32);
  }
  /** Allocate `n` bf16 elements (zeroed): storage only some ops accept (Engine.allocBf16). */
  bf16(n: number): Ptr {
    const p = this.#eng.allocBf16(Math.max(1, n));
    this.#ptrs.push(p);
    this.#bytes += 2 * Math.max(1, n);
    return p;
  }
  /**
   * `count` buffers of `n` fp32 (or bf16) elements each, consecutive in one allocation, so that
   * one engine call can reach all of them by a stride of `n` elements (zeroed).
   */
  strided(count: number, n: number, bf16 = false): Ptr[] {
    const m = Math.max(1, n), p = bf16 ? this.bf16(count * m) : this.f32(count * m);
    return Array.from({ length: count }, (_, i) => this.#eng.offset(p, i * m * (bf16 ? 2 : F32)));
  }
  /** Allocate `n` int32 elements (zeroed). */
  i32(n: number): Ptr {
    return this.bytes(Math.max(1, n) * 4);
  }
  /** Allocate `n` bytes (zeroed). */
  bytes(n: number): Ptr {
    const p = this.#eng.alloc(Math.max(1, n));
    this.#ptrs.push(p);
    this.#bytes += n;
    return p;
  }
  /** Total bytes allocated through this arena. */
  get allocated(): number {
    return this.#bytes;
  }
  /** Free everything. */
  free(): void {
    for (const p of this.#ptrs) this.#eng.free(p);
    this.#ptrs = [];
    this.#bytes = 0;
  }
}

/**
 * Dropout during one chunk's forward (training only): drop probability `p` and the chunk's
 * seed, from which every site of every layer derives its own (a fresh draw per chunk, so per
 * loop pass and per step).
 */
export interface Dropout {
  /** Drop probability in [0, 1). */
  p: number;
  /** The chunk's seed. */
  seed: bigint;
  /**
   * Engine memory holding each site's seed, `mixSeed(seed, site)` for site s at byte 8 s,
   * read when the ops run (so that a recorded step replays with the seeds uploaded there).
   * Without it the seeds are passed with each op.
   */
  seeds?: Ptr;
}

/** The seed of dropout site `site` of a chunk, and where the engine reads it when it does. */
function dropSeed(e: Engine, d: Dropout, site: number): [bigint, Ptr] {
  return [mixSeed(d.seed, site), d.seeds ? e.offset(d.seeds, site * 8) : null];
}

/** The static shape of a stack. The fields after nHead are the Llama architecture's. */
export interface StackShape {
  nLayer: number;
  dModel: number;
  nHead: number;
  /** "llama": RMSNorm, rotary positions, grouped-query attention, SwiGLU. Absent: GPT-2. */
  arch?: "gpt2" | "llama";
  /** Key/value heads (absent: nHead). */
  nKvHead?: number;
  /** SwiGLU intermediate width (Llama). */
  dFf?: number;
  /** RMSNorm epsilon (Llama; absent: 1e-5). */
  normEps?: number;
}

/** The buffer widths a stack shape implies. */
export interface StackWidths {
  /** Whether the blocks are Llama blocks. */
  llama: boolean;
  /** Key/value heads. */
  nKv: number;
  /** Head size. */
  hs: number;
  /** Row width of a qkv buffer: 3C, or C + 2Ckv. */
  qkv: number;
  /** Row width of a K/V cache: 2C, or 2Ckv. */
  kv: number;
  /** Width of the MLP's first matmul output: 4C, or 2I (gate and up). */
  ffIn: number;
  /** Width of the MLP's activation output: 4C, or I. */
  ffOut: number;
}

/** The widths of a stack's buffers. */
export function stackWidths(s: StackShape): StackWidths {
  const llama = s.arch === "llama";
  const C = s.dModel, hs = C / s.nHead, nKv = llama ? s.nKvHead ?? s.nHead : s.nHead;
  const I = llama ? s.dFf ?? 4 * C : 4 * C;
  return {
    llama,
    nKv,
    hs,
    qkv: C + 2 * hs * nKv,
    kv: 2 * hs * nKv,
    ffIn: llama ? 2 * I : 4 * C,
    ffOut: llama ? I : 4 * C,
  };
}

/**
 * Scratch buffers shared by every chunk of a stack (never saved for backward), sized for the
 * largest chunk: rows = B*T.
 */
export class Scratch {
  /** [rows, C] */
  readonly tmp: Ptr;
  /** [rows, C] running residual gradient. */
  readonly dres: Ptr;
  /** [rows, C] */
  readonly dtmp: Ptr;
  /** [rows, 4C] (Llama: [rows, I]) */
  readonly dfchg: Ptr;
  /** [rows, 4C] (Llama: [rows, max(2I, C)]) */
  readonly dfch: Ptr;
  /**
   * [rows, C]: with recomputation, the one buffer of every recomputing chunk's normalisation
   * outputs (ln1, ln2) at every layer; null without.
   */
  readonly norm: Ptr;
  /** [rows, C]: with recomputation, the attention outputs' one buffer; null without. */
  readonly atty: Ptr;
  /** [rows, 4C] (Llama: [rows, I]): with recomputation, the MLP activation's; null without. */
  readonly act: Ptr;
  /** Maximum rows. */
  readonly rows: number;
  /** Whether chunks may recompute into this scratch ({@linkcode ChunkSharing}). */
  readonly recompute: boolean;
  /**
   * Allocate for `rows` rows of width C; a Llama stack passes its shape for the MLP's widths.
   * `recompute` adds the buffers of recomputed activations (training only).
   */
  constructor(
    arena: Arena,
    rows: number,
    C: number,
    withGrad: boolean,
    shape?: StackShape,
    recompute = false,
  ) {
    this.rows = rows;
    this.recompute = recompute && withGrad;
    const w = shape ? stackWidths(shape) : null;
    const ffIn = Math.max(w ? w.ffIn : 4 * C, C), ffOut = w ? w.ffOut : 4 * C;
    this.tmp = arena.f32(rows * C);
    this.dres = withGrad ? arena.f32(rows * C) : null;
    this.dtmp = withGrad ? arena.f32(rows * C) : null;
    this.dfchg = withGrad ? arena.f32(rows * ffOut) : null;
    this.dfch = withGrad ? arena.f32(rows * ffIn) : null;
    this.norm = this.recompute ? arena.f32(rows * C) : null;
    this.atty = this.recompute ? arena.f32(rows * C) : null;
    this.act = this.recompute ? arena.f32(rows * ffOut) : null;
  }
}

/**
 * What a training chunk may hold in buffers shared with other chunks instead of its own.
 *
 * - `recompute`: a scratch allocated with `recompute`. The chunk keeps, per layer, only what
 *   the backward cannot rebuild without a matmul (the residual stream x and resid2, the
 *   normalisation statistics, qkv, the softmax statistics and the MLP's first projection);
 *   the normalisation outputs, the attention output and the MLP activation's output live in
 *   the scratch, and {@linkcode Stack.backward} recomputes each from what was kept just before
 *   reading it. Those ops are deterministic, so the gradients are bit-identical to a chunk
 *   that keeps everything; the cost is one normalisation pair, one attention forward and one
 *   activation per layer, no matmul. At GPT-2's shape that is 7 of the 16 floats per row and
 *   layer that a training chunk keeps.
 * - `dqkv`: per-layer qkv gradient buffers [rows, qkv width] shared by chunks whose qkv is no
 *   later chunk's past while their own backward has not run. The chunk does not zero them in
 *   {@linkcode Stack.zeroGrads}: whoever runs the backward zeroes them first (and may then add
 *   the gradient that later chunks route to it).
 */
export interface ChunkSharing {
  recompute?: Scratch;
  dqkv?: Ptr[];
  /**
   * Not a sharing but a storage choice: keep the per-layer qkv in bf16 (Engine.allocBf16),
   * which the matmul writes rounded and attention reads as stored; its gradient stays fp32.
   * Not with rotary positions (Llama rotates qkv in place, in fp32).
   */
  qkvBf16?: boolean;
  /**
   * Likewise for each layer's MLP first projection (GELU's input, `fch`), which the matmul
   * writes rounded and GELU's forward and backward read as stored: the values bf16 autocast
   * keeps, within bf16's rounding of an fp32 `fch`. GPT-2 only (SwiGLU reads fp32).
   */
  fchBf16?: boolean;
}

/** Per-layer qkv gradient buffers for {@linkcode ChunkSharing.dqkv}, sized for `rows` rows. */
export function sharedDqkv(arena: Arena, shape: StackShape, rows: number): Ptr[] {
  const W = stackWidths(shape).qkv;
  return Array.from({ length: shape.nLayer }, () => arena.f32(rows * W));
}

/**
 * The saved activations of one chunk, allocated once for a maximum shape and reused with any
 * smaller one.
 *
 * Attention saves two floats per query row and head (its softmax statistics), not the
 * B x NH x T x (past + T) probabilities: the backward recomputes those from q, k and the key
 * mask.
 *
 * A chunk without gradients (inference, validation) keeps only what later chunks read: the
 * per-layer qkv (their past) and the final hidden states `h`. Its other per-layer activations
 * share one buffer across layers, since {@linkcode Stack.forward} reads layer l's only while
 * computing layer l, and the residual stream `x` is one buffer that each layer updates. At the
 * GPT-2 shape that cuts the generator's buffers at batch 64 from 11.3 to 4.0 GiB
 * (bench/memory_plan.ts).
 */
export class Chunk {
  /** Residual stream: x[0] is the chunk's input embedding, x[l+1] the output of block l. */
  readonly x: Ptr[];
  readonly ln1: Ptr[];
  readonly ln1Mean: Ptr[];
  readonly ln1Rstd: Ptr[];
  /** [B, T, 3C] per layer (Llama: [B, T, C + 2Ckv]): also the "past" for later chunks. */
  readonly qkv: Ptr[];
  /** Bytes of a qkv element: 4, or 2 in bf16 storage ({@linkcode ChunkSharing.qkvBf16}). */
  readonly qkvBytes: 2 | 4;
  /** Elements from one layer's qkv to the next's: the layers' qkv are one allocation. */
  readonly qkvStride: number;
  /**
   * [B, NH, T, 2] per layer: each query row's softmax max and 1/sum, from which the backward
   * recomputes the attention probabilities (le_attention_stats_fwd; Llama:
   * le_attention_gqa_stats_fwd, per query head). Empty without gradients,
   * where nothing is saved.
   */
  readonly stats: Ptr[];
  readonly atty: Ptr[];
  readonly resid2: Ptr[];
  readonly ln2: Ptr[];
  readonly ln2Mean: Ptr[];
  readonly ln2Rstd: Ptr[];
  readonly fch: Ptr[];
  readonly fchg: Ptr[];
  readonly lnfMean: Ptr;
  readonly lnfRstd: Ptr;
  /** [B, T, C] post-final-LayerNorm hidden states (what the LM head reads). */
  readonly h: Ptr;
  /** Per-layer qkv gradients (persist until this chunk's backward). Null without grad. */
  readonly dqkv: Ptr[];
  /** [B, T, C] gradient of h (accumulated by every consumer of h). */
  readonly dh: Ptr;
  /**
   * Dropout masks (uint8 [B, T, C]): of the block input, then per layer of the attention and
   * MLP projections' outputs. Empty unless allocated with dropout.
   */
  readonly dropIn: Ptr;
  readonly dropAttn: Ptr[];
  readonly dropMlp: Ptr[];
  /** The dropout of the last forward (null: none), which the backward undoes. */
  drop: Dropout | null = null;
  /**
   * The key mask of the last forward, which the backward reads again to recompute the
   * probabilities: its buffer must keep its contents until this chunk's backward.
   */
  keyValid: Ptr = null;
  /** The positions of the last forward (Llama: the rotary angles), which the backward reuses. */
  pos: Ptr = null;
  /** Whether the backward recomputes ln1, ln2, atty and fchg ({@linkcode ChunkSharing}). */
  readonly recompute: boolean;
  /** Whether `dqkv` is this chunk's own (false: shared, {@linkcode ChunkSharing}). */
  readonly ownsDqkv: boolean;
  /** Capacity. */
  readonly maxRows: number;
  /** Capacity in attention scores, B * NH * T * (past + T): bounds the past's length. */
  readonly maxAtt: number;
  /** Current shape, set by {@linkcode Stack.forward}. */
  B = 0;
  T = 0;
  Tp = 0;

  /**
   * Allocate for up to `maxB * maxT` rows attending to up to `maxTp` past positions; with
   * `withDropout` (training only), the masks dropout needs; with `share` (training only), the
   * buffers it names are shared instead of allocated.
   */
  constructor(
    arena: Arena,
    shape: StackShape,
    maxB: number,
    maxT: number,
    maxTp: number,
    withGrad: boolean,
    withDropout = false,
    share: ChunkSharing = {},
  ) {
    const { nLayer: L, dModel: C, nHead: NH } = shape;
    const wd = stackWidths(shape);
    const rows = maxB * maxT;
    this.maxRows = rows;
    const rc = withGrad && share.recompute ? share.recompute : null;
    if (rc && (!rc.recompute || rc.rows < rows)) {
      throw new Error(`a recomputing chunk of ${rows} rows needs a recompute scratch that large`);
    }
    this.recompute = rc !== null;
    this.ownsDqkv = !(withGrad && share.dqkv);
    this.maxAtt = maxB * NH * maxT * (maxTp + maxT);
    const alloc = (n: number, bf16: boolean) => bf16 ? arena.bf16(n) : arena.f32(n);
    const own = (n: number, bf16 = false) => Array.from({ length: L }, () => alloc(n, bf16));
    // Without gradients nothing reads a layer's activations after the next layer starts.
    const per = withGrad ? own : (n: number, bf16 = false) => Array<Ptr>(L).fill(alloc(n, bf16));
    this.x = withGrad
      ? Array.from({ length: L + 1 }, () => arena.f32(rows * C))
      : Array<Ptr>(L + 1).fill(arena.f32(rows * C));
    const inScratch = (p: Ptr) => Array<Ptr>(L).fill(p);
    this.ln1 = rc ? inScratch(rc.norm) : per(rows * C);
    this.ln1Mean = per(rows);
    this.ln1Rstd = per(rows);
    // The past of later chunks: always one per layer.
    if (share.qkvBf16 && wd.llama) {
      throw new Error("bf16 qkv storage is for GPT-2 stacks: Llama rotates its qkv in fp32");
    }
    this.qkvBytes = share.qkvBf16 ? 2 : 4;
    this.qkvStride = Math.max(1, rows * wd.qkv);
    this.qkv = arena.strided(L, rows * wd.qkv, share.qkvBf16 === true);
    this.stats = withGrad ? own(maxB * NH * maxT * 2) : [];
    this.atty = rc ? inScratch(rc.atty) : per(rows * C);
    this.resid2 = per(rows * C);
    this.ln2 = rc ? inScratch(rc.norm) : per(rows * C);
    this.ln2Mean = per(rows);
    this.ln2Rstd = per(rows);
    if (share.fchBf16 && wd.llama) {
      throw new Error(
        "bf16 storage of the MLP's first projection is for GPT-2 stacks: " +
          "Llama's SwiGLU reads it in fp32",
      );
    }
    this.fch = per(rows * wd.ffIn, share.fchBf16 === true);
    this.fchg = rc ? inScratch(rc.act) : per(rows * wd.ffOut);
    this.lnfMean = arena.f32(rows);
    this.lnfRstd = arena.f32(rows);
    this.h = arena.f32(rows * C);
    if (share.dqkv && withGrad && share.dqkv.length !== L) {
      throw new Error(`shared dqkv buffers: ${share.dqkv.length} layers, the stack has ${L}`);
    }
    this.dqkv = withGrad ? share.dqkv ?? per(rows * wd.qkv) : [];
    this.dh = withGrad ? arena.f32(rows * C) : null;
    const masks = withGrad && withDropout;
    this.dropIn = masks ? arena.bytes(rows * C) : null;
    this.dropAttn = masks ? Array.from({ length: L }, () => arena.bytes(rows * C)) : [];
    this.dropMlp = masks ? Array.from({ length: L }, () => arena.bytes(rows * C)) : [];
  }
}

/**
 * Whether a chunk's normalisation and activation outputs (ln1, ln2, the MLP activation; not
 * the final normalisation's h) are read only by the matmul right after the op that writes
 * them: a chunk without a backward, or one whose backward rebuilds them just before reading
 * them ({@linkcode ChunkSharing}). Their producers then get {@linkcode Engine.operandOnly}, and
 * in bf16 the CUDA engine writes only the bf16 copy that matmul reads.
 */
function operandsOnly(ch: Chunk): boolean {
  return ch.recompute || ch.dh === null;
}

/** A stack of blocks with its weights (and gradient slab pointers when training). */
export class Stack {
  readonly eng: Engine;
  readonly shape: StackShape;
  readonly w: StackPtrs;
  readonly g: StackPtrs | null;
  /** Llama: the rotary frequency table [HS/2] in engine memory; null: no rotary positions. */
  readonly invFreq: Ptr;
  readonly #wd: StackWidths;

  /**
   * Bind a stack to its parameter (and optionally gradient) pointers; a Llama stack with
   * rotary positions also takes its frequency table.
   */
  constructor(
    eng: Engine,
    shape: StackShape,
    w: StackPtrs,
    g: StackPtrs | null,
    invFreq: Ptr = null,
  ) {
    this.eng = eng;
    this.shape = shape;
    this.w = w;
    this.g = g;
    this.invFreq = invFreq;
    this.#wd = stackWidths(shape);
  }

  /** The widths of this stack's buffers. */
  get widths(): StackWidths {
    return this.#wd;
  }

  /**
   * Zero the gradient buffers that persist across chunks (dqkv, dh) for the current shape.
   * Call at the start of every training step for every chunk that will run backward. Shared
   * dqkv buffers are left to {@linkcode Stack.zeroDqkv}, called just before the backward.
   */
  zeroGrads(ch: Chunk, B: number, T: number): void {
    const C = this.shape.dModel;
    if (ch.ownsDqkv) this.zeroDqkv(ch, B, T);
    this.eng.zero(ch.dh, B * T * C * F32);
  }

  /** Zero a chunk's qkv gradients for `B * T` rows. */
  zeroDqkv(ch: Chunk, B: number, T: number): void {
    for (const p of ch.dqkv) this.eng.zero(p, B * T * this.#wd.qkv * F32);
  }

  /**
   * Forward over a chunk whose input embeddings are already in `ch.x[0]` ([B, T, C]).
   * `keyValid` is uint8 [B, Tp + T] (or null: all valid); a chunk that will run backward
   * reads it again then, so its contents must not change until then. With `drop` (a chunk allocated
   * with dropout), dropout applies to the block input (GPT-2's embedding dropout; in LOTUS
   * the embeddings plus the injected states) and to each attention and MLP projection's output
   * before its residual add, as GPT-2's resid_pdrop does. Attention probabilities are not
   * dropped. `pos` (int32 [B*T], engine memory) are the rows' positions, which a Llama stack
   * with rotary positions needs (GPT-2 reads positions from its embedding instead).
   */
  forward(
    ch: Chunk,
    sc: Scratch,
    B: number,
    T: number,
    past: Past | null,
    keyValid: Ptr,
    drop: Dropout | null = null,
    pos: Ptr = null,
  ): void {
    const e = this.eng, { nLayer: L, dModel: C, nHead: NH } = this.shape, wd = this.#wd;
    const N = B * T, Tp = past ? past.length : 0;
    if (N > ch.maxRows || N > sc.rows || B * NH * T * (Tp + T) > ch.maxAtt) {
      throw new RangeError(
        `chunk of B=${B}, T=${T}, past=${Tp} exceeds its allocation (rows ${ch.maxRows})`,
      );
    }
    const dropping = drop !== null && drop.p > 0;
    if (dropping && ch.dropIn === null) {
      throw new Error("dropout needs a chunk allocated with its masks (withDropout)");
    }
    const rotate = this.invFreq !== null;
    if (rotate && pos === null) throw new Error("a rotary stack needs the rows' positions");
    ch.B = B, ch.T = T, ch.Tp = Tp, ch.drop = dropping ? drop : null, ch.keyValid = keyValid;
    ch.pos = pos;
    const w = this.w;
    if (dropping) e.dropoutFwd(ch.x[0], ch.dropIn, N * C, drop.p, ...dropSeed(e, drop, 0));
    const b0 = w.blocks[0], only = operandsOnly(ch);
    this.#norm(ch.ln1[0], ch.ln1Mean[0], ch.ln1Rstd[0], ch.x[0], b0.ln1w, b0.ln1b, N, only);
    for (let l = 0; l < L; l++) {
      const b = w.blocks[l];
      e.matmulFwd(ch.qkv[l], ch.ln1[l], b.qkvw, b.qkvb, N, C, wd.qkv);
      if (rotate) e.rope(ch.qkv[l], pos, this.invFreq, N, NH + wd.nKv, wd.hs, wd.qkv, false);
      this.#attention(ch, l, ch.stats.length ? ch.stats[l] : null, past);
      e.matmulFwd(sc.tmp, ch.atty[l], b.projw, b.projb, N, C, C);
      if (dropping) {
        e.dropoutFwd(sc.tmp, ch.dropAttn[l], N * C, drop.p, ...dropSeed(e, drop, 1 + 2 * l));
      }
      this.#residualNorm(
        ch.resid2[l],
        ch.ln2[l],
        ch.ln2Mean[l],
        ch.ln2Rstd[l],
        ch.x[l],
        sc.tmp,
        b.ln2w,
        b.ln2b,
        N,
        only,
      );
      e.matmulFwd(ch.fch[l], ch.ln2[l], b.fcw, b.fcb, N, C, wd.ffIn);
      this.#activation(ch.fchg[l], ch.fch[l], N, only);
      e.matmulFwd(sc.tmp, ch.fchg[l], b.fcprojw, b.fcprojb, N, wd.ffOut, C);
      if (dropping) {
        e.dropoutFwd(sc.tmp, ch.dropMlp[l], N * C, drop.p, ...dropSeed(e, drop, 2 + 2 * l));
      }
      // The residual stream goes on into the next block's first normalisation, or the final one.
      const last = l + 1 === L, nb = last ? null : w.blocks[l + 1];
      this.#residualNorm(
        ch.x[l + 1],
        last ? ch.h : ch.ln1[l + 1],
        last ? ch.lnfMean : ch.ln1Mean[l + 1],
        last ? ch.lnfRstd : ch.ln1Rstd[l + 1],
        ch.resid2[l],
        sc.tmp,
        nb ? nb.ln1w : w.lnfw,
        nb ? nb.ln1b : w.lnfb,
        N,
        only && !last, // h is read by the LM head and later chunks
      );
    }
  }

  /**
   * Backward over a chunk, from the gradient already accumulated in `ch.dh` (and in
   * `ch.dqkv` by later chunks). Parameter gradients accumulate into the gradient slab,
   * key/value gradients of the past into `past.dkv(l)`. Returns `sc.dres`, which then holds
   * the gradient of the chunk's input embeddings [B, T, C] until the next backward.
   * `onLayer(l)` is called once the backward of block l (for the last block, also of the
   * final LayerNorm) is issued, l = L-1 down to 0: data-parallel training starts reducing
   * the gradients that are then final, and lets started reductions advance.
   */
  backward(ch: Chunk, sc: Scratch, past: Past | null, onLayer?: (l: number) => void): Ptr {
    const e = this.eng, { nLayer: L, dModel: C, nHead: NH } = this.shape, wd = this.#wd;
    const g = this.g;
    if (!g) throw new Error("Stack.backward needs gradient pointers");
    const N = ch.B * ch.T, w = this.w, drop = ch.drop, rc = ch.recompute;
    const rotate = this.invFreq !== null;
    e.zero(sc.dres, N * C * F32);
    this.#normBwd(sc.dres, g.lnfw, g.lnfb, ch.dh, ch.x[L], w.lnfw, ch.lnfMean, ch.lnfRstd, N);
    for (let l = L - 1; l >= 0; l--) {
      const b = w.blocks[l], gb = g.blocks[l];
      // sc.dres holds d x[l+1] = d(resid2 + fcproj); through dropout, the projection's
      // output gradient is the masked copy of it (in sc.dtmp, free until its next write).
      let dfcproj = sc.dres;
      if (drop) {
        e.dropoutBwd(sc.dtmp, sc.dres, ch.dropMlp[l], N * C, drop.p);
        dfcproj = sc.dtmp;
      }
      // With recomputation, each activation below is rebuilt just before it is read.
      // The scratch gradients below have one writer each: the backward ops overwrite them
      // (accumulate false) rather than adding into a zero-filled buffer.
      if (rc) this.#activation(ch.fchg[l], ch.fch[l], N, true);
      const [dW, dB, ffOut] = [gb.fcprojw, gb.fcprojb, wd.ffOut];
      e.matmulBwd(sc.dfchg, dW, dB, dfcproj, ch.fchg[l], b.fcprojw, N, ffOut, C, false);
      // Where the engine leaves GELU's backward to the matmul that reads its output
      // (Engine.defersGeluBwd), it goes right before that matmul, after ln2's rebuild, whose
      // copy still reaches the matmul; else before the rebuild.
      const late = !wd.llama && e.defersGeluBwd;
      if (!late) this.#activationBwd(sc.dfch, ch.fch[l], sc.dfchg, N, false);
      if (rc) this.#norm(ch.ln2[l], null, null, ch.resid2[l], b.ln2w, b.ln2b, N, true);
      if (late) this.#activationBwd(sc.dfch, ch.fch[l], sc.dfchg, N, true);
      e.matmulBwd(sc.dtmp, gb.fcw, gb.fcb, sc.dfch, ch.ln2[l], b.fcw, N, C, wd.ffIn, false);
      this.#normBwd(
        sc.dres,
        gb.ln2w,
        gb.ln2b,
        sc.dtmp,
        ch.resid2[l],
        b.ln2w,
        ch.ln2Mean[l],
        ch.ln2Rstd[l],
        N,
      );
      // sc.dres holds d resid2 = d(x[l] + attn proj); through dropout, the masked copy (in
      // sc.dfch, which the MLP's backward above is done with).
      let dproj = sc.dres;
      if (drop) {
        e.dropoutBwd(sc.dfch, sc.dres, ch.dropAttn[l], N * C, drop.p);
        dproj = sc.dfch;
      }
      if (rc) this.#attention(ch, l, null, past);
      e.matmulBwd(sc.dtmp, gb.projw, gb.projb, dproj, ch.atty[l], b.projw, N, C, C, false);
      this.#attentionBwd(ch, l, sc.dtmp, past);
      // Every later chunk has added its key gradient by now: rotate the whole gradient back.
      if (rotate) e.rope(ch.dqkv[l], ch.pos, this.invFreq, N, NH + wd.nKv, wd.hs, wd.qkv, true);
      if (rc) this.#norm(ch.ln1[l], null, null, ch.x[l], b.ln1w, b.ln1b, N, true);
      e.matmulBwd(sc.dtmp, gb.qkvw, gb.qkvb, ch.dqkv[l], ch.ln1[l], b.qkvw, N, C, wd.qkv, false);
      this.#normBwd(
        sc.dres,
        gb.ln1w,
        gb.ln1b,
        sc.dtmp,
        ch.x[l],
        b.ln1w,
        ch.ln1Mean[l],
        ch.ln1Rstd[l],
        N,
      );
      onLayer?.(l);
    }
    if (drop) e.dropoutBwd(sc.dres, sc.dres, ch.dropIn, N * C, drop.p);
    return sc.dres;
  }

  // The ops in which the two architectures differ. GPT-2: LayerNorm (fused with the residual
  // add), multi-head attention, GELU. Llama: RMSNorm (likewise fused), grouped-query
  // attention, SwiGLU; its matmuls have no biases (null pointers) and its rotary positions
  // are applied by the callers.

  /**
   * out = norm(inp) with its statistics (mean and rstd, either may be null). `only`: out is
   * read just by the matmul right after, as its input ({@linkcode operandsOnly}).
   */
  #norm(out: Ptr, mean: Ptr, rstd: Ptr, inp: Ptr, w: Ptr, b: Ptr, N: number, only = false) {
    const C = this.shape.dModel;
    if (only) this.eng.operandOnly(out);
    if (this.#wd.llama) this.eng.rmsnormFwd(out, rstd, inp, w, N, C, this.#eps);
    else this.eng.layernormFwd(out, mean, rstd, inp, w, b, N, C);
  }

  /** resid = a + r; out = norm(resid). `only` as for {@linkcode Stack.#norm}. */
  #residualNorm(
    resid: Ptr,
    out: Ptr,
    mean: Ptr,
    rstd: Ptr,
    a: Ptr,
    r: Ptr,
    w: Ptr,
    b: Ptr,
    N: number,
    only: boolean,
  ): void {
    const e = this.eng, C = this.shape.dModel;
    if (this.#wd.llama) {
      if (only) e.operandOnly(out);
      e.residualRmsnormFwd(resid, out, rstd, a, r, w, N, C, this.#eps);
    } else {
      if (only) e.operandOnly(out);
      e.residualLayernormFwd(resid, out, mean, rstd, a, r, w, b, N, C);
    }
  }

  /** The norm's backward: dinp += ..., dw (and, for LayerNorm, db) accumulated. */
  #normBwd(
    dinp: Ptr,
    dw: Ptr,
    db: Ptr,
    dout: Ptr,
    inp: Ptr,
    w: Ptr,
    mean: Ptr,
    rstd: Ptr,
    N: number,
  ): void {
    const C = this.shape.dModel;
    if (this.#wd.llama) this.eng.rmsnormBwd(dinp, dw, dout, inp, w, rstd, N, C);
    else this.eng.layernormBwd(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
  }

  /** Layer l's attention over the chunk's qkv (and the past) into `ch.atty[l]`. */
  #attention(ch: Chunk, l: number, stats: Ptr, past: Past | null): void {
    const { dModel: C, nHead: NH } = this.shape, { B, T, Tp } = ch;
    const kv = past ? past.kv(l) : null, bs = past ? past.bs : 0, rs = past ? past.rs : 0;
    const [out, qkv, valid] = [ch.atty[l], ch.qkv[l], ch.keyValid];
    if (this.#wd.llama) {
      const nKv = this.#wd.nKv;
      this.eng.attentionGqaStatsFwd(out, stats, qkv, kv, valid, B, T, Tp, C, NH, nKv, bs, rs);
    } else this.eng.attentionStatsFwd(out, stats, qkv, kv, valid, B, T, Tp, C, NH, bs, rs);
  }

  /** Layer l's attention backward from `dout`: into `ch.dqkv[l]` and the past's gradient. */
  #attentionBwd(ch: Chunk, l: number, dout: Ptr, past: Past | null): void {
    const e = this.eng, { dModel: C, nHead: NH } = this.shape, { B, T, Tp } = ch;
    const kv = past ? past.kv(l) : null, dkv = past ? past.dkv(l) : null;
    const bs = past ? past.bs : 0, rs = past ? past.rs : 0;
    const [dqkv, st, valid, qkv] = [ch.dqkv[l], ch.stats[l], ch.keyValid, ch.qkv[l]];
    const o = ch.atty[l]; // the forward's output: kept, or recomputed just before
    if (this.#wd.llama) {
      const nKv = this.#wd.nKv;
      e.attentionGqaStatsBwd(dqkv, dkv, dout, o, st, valid, qkv, kv, B, T, Tp, C, NH, nKv, bs, rs);
    } else e.attentionStatsBwd(dqkv, dkv, dout, o, st, valid, qkv, kv, B, T, Tp, C, NH, bs, rs);
  }

  /**
   * The MLP's activation: GELU over [N, 4C], or SwiGLU from [N, 2I] (gate ‖ up) to [N, I].
   * `only` as for {@linkcode Stack.#norm}.
   */
  #activation(out: Ptr, inp: Ptr, N: number, only: boolean): void {
    if (only) this.eng.operandOnly(out);
    if (this.#wd.llama) this.eng.swigluFwd(out, inp, N, this.#wd.ffOut);
    else this.eng.geluFwd(out, inp, N * this.#wd.ffOut);
  }

  /**
   * The activation's backward: dinp = ... from dout (overwritten, not added to). `only`: dinp
   * is read just by the matmul backward right after, as its dout ({@linkcode Engine.operandOnly}).
   */
  #activationBwd(dinp: Ptr, inp: Ptr, dout: Ptr, N: number, only: boolean): void {
    if (only) this.eng.operandOnly(dinp);
    if (this.#wd.llama) this.eng.swigluBwd(dinp, inp, dout, N, this.#wd.ffOut, false);
    else this.eng.geluBwd(dinp, inp, dout, N * this.#wd.ffOut, false);
  }

  get #eps(): number {
    return this.shape.normEps ?? 1e-5;
  }
}

/**
 * A past that is another chunk's qkv buffer (keys at column C, values after the keys, row
 * stride 3C, or C + 2Ckv with grouped-query attention), with gradients into that chunk's dqkv.
 * `shape` (the stack's) gives the row width; without it the row is GPT-2's 3C.
 */
export function pastOfChunk(ch: Chunk, C: number, eng: Engine, shape?: StackShape): Past {
  const W = shape ? stackWidths(shape).qkv : 3 * C;
  return {
    length: ch.T,
    kv: (l) => eng.offset(ch.qkv[l], C * ch.qkvBytes),
    dkv: (l) => ch.dqkv.length ? eng.offset(ch.dqkv[l], C * F32) : null,
    bs: ch.T * W,
    rs: W,
  };
}

/**
 * The cross-entropy heads of one training or evaluation step, planned on the host before any
 * op runs: each head's targets, its gradient scale and where its per-row losses go. All the
 * targets go up in one upload and all the scales in another, before the step's ops; the ops
 * read them from engine memory, so that a recorded step (a CUDA graph) replays with the
 * current batch's; and the losses come back in one download after the ops. Several steps may
 * run before any is read (a batch in micro-batches): each step's losses are copied aside, in
 * the engine's order and without a wait, when the next step is planned, and one download
 * then reads them all.
 *
 * @module
 */

import type { Engine, Ptr } from "../engine/ffi.ts";
import { Arena } from "../model/stack.ts";

const F32 = 4;

/** One planned head. */
export interface Head {
  /** Rows of logits (and targets, and losses). */
  rows: number;
  /** The step total its summed loss is added to. */
  into: number;
  /** Where the head runs in the step (the caller's tag: a loop pass, the suffix...). */
  at: number;
  /** Whether the head's gradient is written (training, with targets and a weight). */
  grad: boolean;
  /** First row of the head in the step's packed targets and losses. */
  off: number;
  /** The head's place in the plan (and its gradient scale's in the packed scales). */
  index: number;
}

/**
 * A step's heads once its ops are queued ({@linkcode HeadPlan.upload}): its losses are read
 * with {@linkcode HeadPlan.read}.
 */
export interface QueuedHeads {
  /** The step's heads. */
  readonly heads: readonly Head[];
  /** Its rows of losses. */
  readonly rows: number;
  /** First row in the kept losses, or -1 while they are in the losses buffer. */
  kept: number;
  /** The summed totals, once read. */
  sums?: number[];
}

/**
 * The heads of a step, and the engine buffers their targets, gradient scales and losses go
 * through. Plan with {@linkcode HeadPlan.add}, upload with {@linkcode HeadPlan.upload}, run
 * the ops (which take {@linkcode HeadPlan.targets}, {@linkcode HeadPlan.losses} and
 * {@linkcode HeadPlan.scale}), then {@linkcode HeadPlan.read}. Free with
 * {@linkcode HeadPlan.free}.
 */
export class HeadPlan {
  /** The heads planned since the last {@linkcode HeadPlan.reset}, in the order they run. */
  heads: Head[] = [];
  #targets: Int32Array[] = [];
  #scales: number[] = [];
  #rows = 0;
  #capRows = 0;
  #capHeads = 0;
  /** The targets, losses and scales buffers, in one arena. */
  #bufs: Arena | null = null;
  #tgt: Ptr = null;
  #loss: Ptr = null;
  #scale: Ptr = null;
  /** The last uploaded step while its losses are unread in the losses buffer. */
  #live: QueuedHeads | null = null;
  /** Steps whose unread losses were copied aside, and the buffer they went to. */
  #kept: QueuedHeads[] = [];
  #keptRows = 0;
  #keptCap = 0;
  #keep: Ptr = null;

  /**
   * Buffers for `rows` rows and `heads` heads, grown when a step needs more; `onGrow` is
   * called before the old buffers are freed (whatever recorded them must forget them).
   */
  constructor(
    readonly eng: Engine,
    rows: number,
    heads: number,
    readonly onGrow: () => void = () => {},
  ) {
    this.#alloc(rows, heads);
  }

  #alloc(rows: number, heads: number): void {
    const capRows = Math.max(1, rows), capHeads = Math.max(1, heads);
    // All three or none: an allocation that fails (engine memory) frees those before it.
    const a = new Arena(this.eng);
    try {
      [this.#tgt, this.#loss, this.#scale] = [a.i32(capRows), a.f32(capRows), a.f32(capHeads)];
    } catch (err) {
      a.free();
      throw err;
    }
    this.#bufs = a, this.#capRows = capRows, this.#capHeads = capHeads;
  }

  #release(): void {
    this.#bufs?.free();
    this.#bufs = null, this.#tgt = this.#loss = this.#scale = null;
  }

  /** Bytes of engine memory held. */
  get bytes(): number {
    return this.#capRows * 8 + this.#capHeads * F32 + this.#keptCap * F32;
  }

  /**
   * Forget the planned heads (a new step). The last step's losses, when not yet read, are
   * copied aside first (an engine copy, queued after its ops: nothing waits).
   */
  reset(): void {
    if (this.#live) this.#keepLive();
    this.heads = [];
    this.#targets = [];
    this.#scales = [];
    this.#rows = 0;
  }

  /**
   * Plans a head over `targets` (one per row; < 0: ignored) whose summed loss adds to total
   * `into`, with gradient scale `weight / count` when `grad` (a token mean with its weight).
   */
  add(targets: Int32Array, into: number, at: number, grad: boolean, weight = 0, count = 0): Head {
    const h: Head = {
      rows: targets.length,
      into,
      at,
      grad,
      off: this.#rows,
      index: this.heads.length,
    };
    this.heads.push(h);
    this.#targets.push(targets);
    this.#scales.push(grad ? weight / count : 0);
    this.#rows += targets.length;
    return h;
  }

  /**
   * Uploads the planned heads' targets and gradient scales (growing the buffers first when
   * they do not fit). Returns the step's heads, whose losses {@linkcode HeadPlan.read} gives
   * once its ops are queued.
   */
  upload(): QueuedHeads {
    const rows = this.#rows, n = this.heads.length;
    if (rows > this.#capRows || n > this.#capHeads) {
      this.onGrow();
      this.#release();
      this.#alloc(Math.max(rows, this.#capRows), Math.max(n, this.#capHeads));
    }
    const t = new Int32Array(Math.max(1, rows));
    for (let i = 0; i < n; i++) t.set(this.#targets[i], this.heads[i].off);
    this.eng.upload(this.#tgt, t.subarray(0, rows));
    if (n > 0) this.eng.upload(this.#scale, new Float32Array(this.#scales));
    this.#live = { heads: this.heads, rows, kept: -1 };
    return this.#live;
  }

  /** Engine memory of head `h`'s targets. */
  targets(h: Head): Ptr {
    return this.eng.offset(this.#tgt, h.off * 4);
  }

  /** Engine memory of head `h`'s per-row losses. */
  losses(h: Head): Ptr {
    return this.eng.offset(this.#loss, h.off * F32);
  }

  /** Engine memory of head `h`'s gradient scale (weight / count), or null without gradient. */
  scale(h: Head): Ptr {
    return h.grad ? this.eng.offset(this.#scale, h.index * F32) : null;
  }

  /**
   * Step `q`'s totals 0..n-1 (0 where no head adds): each head's rows summed in double in
   * row order and added to its total in plan order. The first read after steps were kept
   * aside downloads all of theirs, and the last step's, at once: one host wait for them all.
   */
  read(q: QueuedHeads, n: number): number[] {
    if (!q.sums) {
      if (q !== this.#live && q.kept < 0) throw new Error("these heads' losses were not kept");
      if (this.#kept.length > 0) {
        if (this.#live) this.#keepLive();
        const l = new Float32Array(this.#keptRows);
        if (l.length > 0) this.eng.download(l, this.#keep);
        for (const k of this.#kept) k.sums = sums(k, l, k.kept);
        this.#kept = [], this.#keptRows = 0;
      } else {
        const l = new Float32Array(q.rows);
        if (l.length > 0) this.eng.download(l, this.#loss);
        q.sums = sums(q, l, 0);
        this.#live = null;
      }
    }
    return Array.from({ length: n }, (_, i) => q.sums![i] ?? 0);
  }

  /** Copies the live step's losses after those kept (growing the buffer, in order). */
  #keepLive(): void {
    const q = this.#live!, e = this.eng;
    const need = this.#keptRows + q.rows;
    if (need > this.#keptCap) {
      const cap = Math.max(need, 2 * this.#keptCap);
      const p = e.alloc(cap * F32);
      if (this.#keptRows > 0) e.copy(p, this.#keep, this.#keptRows * F32);
      e.free(this.#keep);
      this.#keep = p, this.#keptCap = cap;
    }
    if (q.rows > 0) e.copy(e.offset(this.#keep, this.#keptRows * F32), this.#loss, q.rows * F32);
    q.kept = this.#keptRows;
    this.#keptRows = need;
    this.#kept.push(q);
    this.#live = null;
  }

  /** Frees the buffers. */
  free(): void {
    this.#release();
    this.eng.free(this.#keep);
    this.#keep = null, this.#keptCap = this.#keptRows = 0;
    this.#kept = [], this.#live = null;
  }
}

/** The totals of step `q` from its losses, which start at row `at` of `l`. */
function sums(q: QueuedHeads, l: Float32Array, at: number): number[] {
  const out: number[] = [];
  for (const h of q.heads) {
    let s = 0;
    for (let i = at + h.off; i < at + h.off + h.rows; i++) s += l[i];
    out[h.into] = (out[h.into] ?? 0) + s;
  }
  return out;
}

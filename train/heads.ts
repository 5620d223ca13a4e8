/**
 * The cross-entropy heads of one training or evaluation step, planned on the host before any
 * op runs: each head's targets, its gradient scale and where its per-row losses go. All the
 * targets go up in one upload and all the scales in another, before the step's ops; the ops
 * read them from engine memory, so that a recorded step (a CUDA graph) replays with the
 * current batch's; and the losses come back in one download after the ops.
 *
 * @module
 */

import type { Engine, Ptr } from "../engine/ffi.ts";

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
  #tgt: Ptr = null;
  #loss: Ptr = null;
  #scale: Ptr = null;

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
    const e = this.eng;
    this.#capRows = Math.max(1, rows);
    this.#capHeads = Math.max(1, heads);
    this.#tgt = e.alloc(this.#capRows * 4);
    this.#loss = e.alloc(this.#capRows * F32);
    this.#scale = e.alloc(this.#capHeads * F32);
  }

  #release(): void {
    for (const p of [this.#tgt, this.#loss, this.#scale]) this.eng.free(p);
    this.#tgt = this.#loss = this.#scale = null;
  }

  /** Bytes of engine memory held. */
  get bytes(): number {
    return this.#capRows * 8 + this.#capHeads * F32;
  }

  /** Forget the planned heads (a new step). */
  reset(): void {
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
   * they do not fit).
   */
  upload(): void {
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
   * One download of every head's losses: returns totals 0..n-1 (0 where no head adds), each
   * head's rows summed in double in row order and added to its total in plan order.
   */
  read(n: number): number[] {
    const out = new Array<number>(n).fill(0);
    if (this.#rows === 0) return out;
    const l = new Float32Array(this.#rows);
    this.eng.download(l, this.#loss);
    for (const h of this.heads) {
      let s = 0;
      for (let i = h.off; i < h.off + h.rows; i++) s += l[i];
      out[h.into] += s;
    }
    return out;
  }

  /** Frees the buffers. */
  free(): void {
    this.#release();
  }
}

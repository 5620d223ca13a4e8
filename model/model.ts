/**
 * The model in engine memory: the parameter slab, its gradient and AdamW moments, and the
 * stacks (the GPT-2 backbone and, for LOTUS-aux, the auxiliary decoder) bound to them.
 *
 * @module
 */

import type { Engine, Ptr } from "../engine/ffi.ts";
import type { ModelConfig, TrainConfig } from "./config.ts";
import { type ParamLayout, paramLayout } from "./params.ts";
import { F32, Stack, stackPtrs } from "./stack.ts";

/** The optimiser's hyper-parameters for one step. */
export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global-norm clip; 0 = off. */
  clip: number;
}

/** A model resident in an engine. */
export class Model {
  readonly eng: Engine;
  readonly cfg: ModelConfig;
  readonly layout: ParamLayout;
  /** Slabs of `layout.total` floats. */
  readonly params: Ptr;
  readonly grads: Ptr;
  readonly m: Ptr;
  readonly v: Ptr;
  /** The backbone. */
  readonly main: Stack;
  /** The LOTUS-aux decoder, when configured. */
  readonly aux: Stack | null;
  /** Token and position embeddings, and their gradients. */
  readonly wte: Ptr;
  readonly wpe: Ptr;
  readonly gwte: Ptr;
  readonly gwpe: Ptr;
  /** The aux decoder's untied head and its gradient. */
  readonly auxHead: Ptr;
  readonly gAuxHead: Ptr;
  /** Device scalar for the squared gradient norm. */
  readonly normSq: Ptr;
  /** AdamW step counter (t in the bias correction). */
  step = 0;
  #freed = false;

  /**
   * Allocate a model with the given initial parameters (fp32, `layout.total` long).
   * `training` also allocates gradients and AdamW moments.
   */
  constructor(eng: Engine, cfg: ModelConfig, init: Float32Array, training: boolean) {
    this.eng = eng;
    this.cfg = cfg;
    this.layout = paramLayout(cfg);
    const n = this.layout.total;
    if (init.length !== n) {
      throw new Error(`initial parameters have ${init.length} floats; the model needs ${n}`);
    }
    this.params = eng.alloc(n * F32);
    eng.upload(this.params, init);
    this.grads = training ? eng.alloc(n * F32) : null;
    this.m = training ? eng.alloc(n * F32) : null;
    this.v = training ? eng.alloc(n * F32) : null;
    this.normSq = eng.alloc(F32);
    const L = this.layout;
    const at = (slab: Ptr, off: number) => slab === null ? null : eng.offset(slab, off * F32);
    this.wte = at(this.params, L.wte);
    this.wpe = at(this.params, L.wpe);
    this.gwte = at(this.grads, L.wte);
    this.gwpe = at(this.grads, L.wpe);
    const shape = { nLayer: cfg.nLayer, dModel: cfg.dModel, nHead: cfg.nHead };
    this.main = new Stack(
      eng,
      shape,
      stackPtrs(eng, this.params, L.blocks, L.lnfw, L.lnfb),
      training ? stackPtrs(eng, this.grads, L.blocks, L.lnfw, L.lnfb) : null,
    );
    if (L.aux) {
      const ashape = { nLayer: cfg.auxLayers, dModel: cfg.dModel, nHead: cfg.auxHeads };
      this.aux = new Stack(
        eng,
        ashape,
        stackPtrs(eng, this.params, L.aux.blocks, L.aux.lnfw, L.aux.lnfb),
        training ? stackPtrs(eng, this.grads, L.aux.blocks, L.aux.lnfw, L.aux.lnfb) : null,
      );
      this.auxHead = at(this.params, L.aux.head);
      this.gAuxHead = at(this.grads, L.aux.head);
    } else {
      this.aux = null;
      this.auxHead = null;
      this.gAuxHead = null;
    }
  }

  /** Number of parameters of the backbone (what inference uses). */
  get mainParams(): number {
    return this.layout.mainTotal;
  }

  /** Zero the gradient slab. */
  zeroGrad(): void {
    this.eng.zero(this.grads, this.layout.total * F32);
  }

  /** Copy the parameters to the host. */
  downloadParams(): Float32Array {
    const out = new Float32Array(this.layout.total);
    this.eng.download(out, this.params);
    return out;
  }

  /** Copy the gradients to the host. */
  downloadGrads(): Float32Array {
    const out = new Float32Array(this.layout.total);
    this.eng.download(out, this.grads);
    return out;
  }

  /** Replace the parameters from the host. */
  uploadParams(p: Float32Array): void {
    this.eng.upload(this.params, p);
  }

  /** The AdamW moments, for checkpoints. */
  downloadMoments(): { m: Float32Array; v: Float32Array } {
    const m = new Float32Array(this.layout.total), v = new Float32Array(this.layout.total);
    this.eng.download(m, this.m);
    this.eng.download(v, this.v);
    return { m, v };
  }

  /** Restore the AdamW moments and step. */
  uploadMoments(m: Float32Array, v: Float32Array, step: number): void {
    this.eng.upload(this.m, m);
    this.eng.upload(this.v, v);
    this.step = step;
  }

  /**
   * Global gradient norm (before clipping). Syncs: the value comes back to the host.
   */
  gradNorm(): number {
    this.eng.sumsq(this.normSq, this.grads, this.layout.total);
    const out = new Float32Array(1);
    this.eng.download(out, this.normSq);
    return Math.sqrt(out[0]);
  }

  /**
   * One AdamW step on every parameter, with the global-norm clip applied on the engine.
   * Returns the gradient norm before clipping.
   */
  optimizerStep(h: AdamWStep): number {
    const e = this.eng, n = this.layout.total;
    e.sumsq(this.normSq, this.grads, n);
    this.step++;
    e.adamw(
      this.params,
      this.grads,
      this.m,
      this.v,
      n,
      h.lr,
      h.beta1,
      h.beta2,
      h.eps,
      h.weightDecay,
      this.step,
      h.clip > 0 ? this.normSq : null,
      h.clip,
    );
    const out = new Float32Array(1);
    e.download(out, this.normSq);
    return Math.sqrt(out[0]);
  }

  /** Free engine memory. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    for (const p of [this.params, this.grads, this.m, this.v, this.normSq]) {
      if (p !== null) this.eng.free(p);
    }
  }
}

/** The optimiser settings of a training config. */
export function adamwOf(cfg: TrainConfig, lr: number): AdamWStep {
  return {
    lr,
    beta1: cfg.beta1,
    beta2: cfg.beta2,
    eps: cfg.eps,
    weightDecay: cfg.weightDecay,
    clip: cfg.clip,
  };
}

/**
 * The model in engine memory: the parameter slab, its gradient and AdamW moments, and the
 * stacks (the GPT-2 backbone and, for LOTUS-aux, the auxiliary decoder) bound to them.
 *
 * @module
 */

import type { Engine, Ptr } from "../engine/ffi.ts";
import { archOf, llamaShape, type ModelConfig, type TrainConfig } from "./config.ts";
import { type ParamLayout, paramLayout } from "./params.ts";
import { Arena, F32, Stack, stackPtrs, type StackShape } from "./stack.ts";
import { ropeInvFreq } from "./rope.ts";

/** The optimiser's hyper-parameters for one step. */
export interface AdamWStep {
  /** Learning rate of this step (the schedule's value, not the peak). */
  lr: number;
  /** Decay rate of the first-moment (mean) estimate. */
  beta1: number;
  /** Decay rate of the second-moment (uncentred variance) estimate. */
  beta2: number;
  /** Added to the square root of the bias-corrected second moment, against division by zero. */
  eps: number;
  /**
   * Decoupled weight decay: each step first multiplies every parameter (biases and LayerNorm
   * gains included) by `1 - lr * weightDecay`.
   */
  weightDecay: number;
  /** Global-norm clip: gradients are scaled so that their norm is at most this; 0 = off. */
  clip: number;
}

/**
 * A model resident in an engine: the parameter slab and, when training, its gradient and
 * AdamW moments, with pointers to the tensors that the training step and generation read.
 * Engine memory is not garbage-collected: call {@linkcode Model.free} when done.
 */
export class Model {
  /** The engine that holds the model's memory and runs its operations. */
  readonly eng: Engine;
  /** The model's shape. */
  readonly cfg: ModelConfig;
  /** Where each tensor lies in the slabs ({@linkcode paramLayout} of `cfg`). */
  readonly layout: ParamLayout;
  /** The parameter slab: `layout.total` fp32 values in engine memory. */
  readonly params: Ptr;
  /** The gradient slab, laid out as `params`; null unless the model was built for training. */
  readonly grads: Ptr;
  /** AdamW first moments, laid out as `params`; null unless built for training. */
  readonly m: Ptr;
  /** AdamW second moments, laid out as `params`; null unless built for training. */
  readonly v: Ptr;
  /**
   * The backbone's blocks bound to the slabs. Internal to the model layer: the training step
   * and generation drive it.
   *
   * @ignore
   */
  readonly main: Stack;
  /**
   * The LOTUS-aux decoder's blocks, or null when the config has none. Internal to the model
   * layer, as `main`.
   *
   * @ignore
   */
  readonly aux: Stack | null;
  /** The token embedding [vocabSize, dModel] inside `params`; also the tied LM head. */
  readonly wte: Ptr;
  /** The position embedding [maxPositions, dModel] inside `params`; null in Llama models. */
  readonly wpe: Ptr;
  /** The LM head [vocabSize, dModel]: `wte` when tied, else `lm_head.weight`. */
  readonly head: Ptr;
  /** The gradient of `head` (`gwte` when tied); null unless built for training. */
  readonly ghead: Ptr;
  /** Llama: the rotary frequency table [HS/2] in engine memory; null for GPT-2. */
  readonly invFreq: Ptr;
  /** The gradient of `wte` inside `grads`; null unless built for training. */
  readonly gwte: Ptr;
  /** The gradient of `wpe` inside `grads`; null unless built for training. */
  readonly gwpe: Ptr;
  /** The aux decoder's untied output head [vocabSize, dModel]; null without the decoder. */
  readonly auxHead: Ptr;
  /** The gradient of `auxHead`; null without the decoder or when not training. */
  readonly gAuxHead: Ptr;
  /** Device scalar for the squared gradient norm. */
  readonly normSq: Ptr;
  /** AdamW step counter (t in the bias correction). */
  step = 0;
  #freed = false;
  /** Every buffer the model allocated: the parameters, gradients, moments and the rest. */
  #arena: Arena;

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
    // An allocation or upload that fails (engine memory) frees the allocations before it.
    const a = this.#arena = new Arena(eng);
    try {
      this.params = a.f32(n);
      eng.upload(this.params, init);
      // Every matmul weight lies in this slab: in bf16 mode the CUDA engine keeps them rounded.
      eng.keepBf16(this.params, n);
      this.grads = training ? a.f32(n) : null;
      this.m = training ? a.f32(n) : null;
      this.v = training ? a.f32(n) : null;
      this.normSq = a.f32(1);
      const L = this.layout;
      const at = (slab: Ptr, off: number) =>
        slab === null || off < 0 ? null : eng.offset(slab, off * F32);
      this.wte = at(this.params, L.wte);
      this.wpe = at(this.params, L.wpe);
      this.gwte = at(this.grads, L.wte);
      this.gwpe = at(this.grads, L.wpe);
      this.head = L.lmHead < 0 ? this.wte : at(this.params, L.lmHead);
      this.ghead = L.lmHead < 0 ? this.gwte : at(this.grads, L.lmHead);
      const llama = archOf(cfg) === "llama", ls = llamaShape(cfg);
      if (llama) {
        const f = ropeInvFreq(cfg.dModel / cfg.nHead, ls.ropeTheta, ls.ropeScaling);
        this.invFreq = a.bytes(f.byteLength);
        eng.upload(this.invFreq, f);
      } else {
        this.invFreq = null;
      }
      const shape = stackShapeOf(cfg, false);
      this.main = new Stack(
        eng,
        shape,
        stackPtrs(eng, this.params, L.blocks, L.lnfw, L.lnfb),
        training ? stackPtrs(eng, this.grads, L.blocks, L.lnfw, L.lnfb) : null,
        this.invFreq,
      );
      if (L.aux) {
        // The aux decoder reads no positions (as the GPT-2 one): no rotary embedding.
        const ashape = stackShapeOf(cfg, true);
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
    } catch (e) {
      a.free();
      throw e;
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
   * Global gradient norm (before clipping): computes it on the engine into the buffer that
   * the clip of {@linkcode Model.applyUpdate} reads, and returns it. Syncs: the value comes
   * back to the host.
   */
  gradNorm(): number {
    this.eng.sumsq(this.normSq, this.grads, this.layout.total);
    const out = new Float32Array(1);
    this.eng.download(out, this.normSq);
    return Math.sqrt(out[0]);
  }

  /**
   * One AdamW step on every parameter, with the global-norm clip applied on the engine from
   * the norm that the last {@linkcode Model.gradNorm} computed. Call gradNorm first.
   */
  applyUpdate(h: AdamWStep): void {
    this.step++;
    this.eng.adamw(
      this.params,
      this.grads,
      this.m,
      this.v,
      this.layout.total,
      h.lr,
      h.beta1,
      h.beta2,
      h.eps,
      h.weightDecay,
      this.step,
      h.clip > 0 ? this.normSq : null,
      h.clip,
    );
  }

  /**
   * The gradient norm, then the AdamW step unless the norm is not finite (an infinite or NaN
   * gradient would make every weight NaN): then the weights, moments and step count stay as
   * they are. Returns the norm before clipping; check it with Number.isFinite to know whether
   * the step was applied.
   */
  optimizerStep(h: AdamWStep): number {
    const norm = this.gradNorm();
    if (Number.isFinite(norm)) this.applyUpdate(h);
    return norm;
  }

  /** Free engine memory. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#arena.free();
  }
}

/**
 * The shape of a config's backbone stack, or (`aux`) of its LOTUS-aux decoder: a Llama
 * model's aux decoder has Llama blocks with auxHeads heads, all of them key/value heads.
 */
export function stackShapeOf(cfg: ModelConfig, aux: boolean): StackShape {
  const base = {
    nLayer: aux ? cfg.auxLayers : cfg.nLayer,
    dModel: cfg.dModel,
    nHead: aux ? cfg.auxHeads : cfg.nHead,
  };
  if (archOf(cfg) !== "llama") return base;
  const ls = llamaShape(cfg);
  return {
    ...base,
    arch: "llama",
    nKvHead: aux ? cfg.auxHeads : ls.nKvHead,
    dFf: ls.dFf,
    normEps: ls.normEps,
  };
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

/**
 * The parameter layout: every weight of the model (and of the LOTUS-aux decoder) lives in one
 * contiguous fp32 slab, so the optimiser, the gradient norm and checkpoints each work on one
 * buffer. Tensors carry their Hugging Face GPT-2 names.
 *
 * Linear weights are stored [out, in] (y = x W^T + b). Hugging Face GPT-2 stores its Conv1D
 * weights [in, out]; `hfTransposed` marks those, and checkpoint I/O transposes them.
 *
 * @module
 */

import { Rng } from "../base/rng.ts";
import { archOf, llamaShape, type ModelConfig } from "./config.ts";

/** One tensor in the slab. */
export interface ParamTensor {
  /** Hugging Face name (main model) or `aux.*` (auxiliary decoder). */
  name: string;
  /** Shape in our layout ([out, in] for linear weights). */
  shape: number[];
  /** Offset in floats from the start of the slab. */
  offset: number;
  /** Number of floats. */
  size: number;
  /** True for weights that Hugging Face stores transposed ([in, out], Conv1D). */
  hfTransposed: boolean;
  /** How the tensor is initialised. */
  init: "normal" | "proj" | "zeros" | "ones";
}

/**
 * Offsets (in floats from the start of the slab) of one Transformer block's tensors. C is
 * dModel; shapes are in the slab's layout ([out, in] for linear weights). The names are
 * GPT-2's; a Llama block maps onto them (its tensor names in brackets): ln1w
 * [input_layernorm], qkvw [q_proj, k_proj, v_proj, contiguous: [C + 2Ckv, C]], projw
 * [o_proj], ln2w [post_attention_layernorm], fcw [gate_proj, up_proj, contiguous: [2I, C]],
 * fcprojw [down_proj, [C, I]]. It has no biases: those offsets are -1.
 */
export interface BlockLayout {
  /** Gain of the LayerNorm before attention (`ln_1.weight`), [C]. */
  ln1w: number;
  /** Bias of the LayerNorm before attention (`ln_1.bias`), [C]. */
  ln1b: number;
  /** Query, key and value projection weight (`attn.c_attn.weight`), [3C, C]. */
  qkvw: number;
  /** Query, key and value projection bias (`attn.c_attn.bias`), [3C]. */
  qkvb: number;
  /** Attention output projection weight (`attn.c_proj.weight`), [C, C]. */
  projw: number;
  /** Attention output projection bias (`attn.c_proj.bias`), [C]. */
  projb: number;
  /** Gain of the LayerNorm before the MLP (`ln_2.weight`), [C]. */
  ln2w: number;
  /** Bias of the LayerNorm before the MLP (`ln_2.bias`), [C]. */
  ln2b: number;
  /** MLP input weight (`mlp.c_fc.weight`), [4C, C]. */
  fcw: number;
  /** MLP input bias (`mlp.c_fc.bias`), [4C]. */
  fcb: number;
  /** MLP output weight (`mlp.c_proj.weight`), [C, 4C]. */
  fcprojw: number;
  /** MLP output bias (`mlp.c_proj.bias`), [C]. */
  fcprojb: number;
}

/** The whole layout. */
export interface ParamLayout {
  /** Every tensor, in slab order. */
  tensors: ParamTensor[];
  /** Total floats. */
  total: number;
  /** Floats of the main model (a prefix of the slab); the aux decoder follows. */
  mainTotal: number;
  /** Offset of the token embedding (`transformer.wte.weight`), [vocabSize, dModel]. */
  wte: number;
  /**
   * Offset of the position embedding (`transformer.wpe.weight`), [maxPositions, dModel]; -1
   * in the Llama architecture (rotary positions, no table).
   */
  wpe: number;
  /** Offset of an untied LM head (`lm_head.weight`, [vocabSize, dModel]), or -1 when tied. */
  lmHead: number;
  /** The backbone's blocks, `transformer.h.0` first. */
  blocks: BlockLayout[];
  /** Offset of the final LayerNorm's gain (`transformer.ln_f.weight`), [dModel]. */
  lnfw: number;
  /** Offset of the final LayerNorm's bias (`transformer.ln_f.bias`), [dModel]; -1 in Llama. */
  lnfb: number;
  /**
   * Offsets of the aux decoder: its blocks (`aux.h.*`), final LayerNorm and untied head
   * [vocabSize, dModel]; null when auxLayers = 0.
   */
  aux: { blocks: BlockLayout[]; lnfw: number; lnfb: number; head: number } | null;
}

/**
 * Compute the layout of a model.
 *
 * @example
 * ```ts
 * import { paramLayout } from "./params.ts";
 * const l = paramLayout({ vocabSize: 10, maxPositions: 8, dModel: 4, nHead: 2, nLayer: 1, auxLayers: 0, auxHeads: 2 });
 * console.assert(l.tensors[0].name === "transformer.wte.weight");
 * ```
 */
export function paramLayout(cfg: ModelConfig): ParamLayout {
  if (archOf(cfg) === "llama") return llamaLayout(cfg);
  const C = cfg.dModel, V = cfg.vocabSize;
  const tensors: ParamTensor[] = [];
  let off = 0;
  const add = (
    name: string,
    shape: number[],
    init: ParamTensor["init"],
    hfTransposed = false,
  ): number => {
    const size = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, shape, offset: off, size, hfTransposed, init });
    off += size;
    return off - size;
  };
  const block = (prefix: string): BlockLayout => ({
    ln1w: add(`${prefix}.ln_1.weight`, [C], "ones"),
    ln1b: add(`${prefix}.ln_1.bias`, [C], "zeros"),
    qkvw: add(`${prefix}.attn.c_attn.weight`, [3 * C, C], "normal", true),
    qkvb: add(`${prefix}.attn.c_attn.bias`, [3 * C], "zeros"),
    projw: add(`${prefix}.attn.c_proj.weight`, [C, C], "proj", true),
    projb: add(`${prefix}.attn.c_proj.bias`, [C], "zeros"),
    ln2w: add(`${prefix}.ln_2.weight`, [C], "ones"),
    ln2b: add(`${prefix}.ln_2.bias`, [C], "zeros"),
    fcw: add(`${prefix}.mlp.c_fc.weight`, [4 * C, C], "normal", true),
    fcb: add(`${prefix}.mlp.c_fc.bias`, [4 * C], "zeros"),
    fcprojw: add(`${prefix}.mlp.c_proj.weight`, [C, 4 * C], "proj", true),
    fcprojb: add(`${prefix}.mlp.c_proj.bias`, [C], "zeros"),
  });
  const wte = add("transformer.wte.weight", [V, C], "normal");
  const wpe = add("transformer.wpe.weight", [cfg.maxPositions, C], "normal");
  const blocks: BlockLayout[] = [];
  for (let l = 0; l < cfg.nLayer; l++) blocks.push(block(`transformer.h.${l}`));
  const lnfw = add("transformer.ln_f.weight", [C], "ones");
  const lnfb = add("transformer.ln_f.bias", [C], "zeros");
  const mainTotal = off;
  let aux: ParamLayout["aux"] = null;
  if (cfg.auxLayers > 0) {
    const ab: BlockLayout[] = [];
    for (let l = 0; l < cfg.auxLayers; l++) ab.push(block(`aux.h.${l}`));
    aux = {
      blocks: ab,
      lnfw: add("aux.ln_f.weight", [C], "ones"),
      lnfb: add("aux.ln_f.bias", [C], "zeros"),
      head: add("aux.head.weight", [V, C], "normal"),
    };
  }
  return { tensors, total: off, mainTotal, wte, wpe, lmHead: -1, blocks, lnfw, lnfb, aux };
}

/** The layout of a Llama-architecture model, with the Hugging Face Llama tensor names. */
function llamaLayout(cfg: ModelConfig): ParamLayout {
  const C = cfg.dModel, V = cfg.vocabSize, ls = llamaShape(cfg);
  const ckv = (C / cfg.nHead) * ls.nKvHead, I = ls.dFf;
  const tensors: ParamTensor[] = [];
  let off = 0;
  const add = (name: string, shape: number[], init: ParamTensor["init"]): number => {
    const size = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, shape, offset: off, size, hfTransposed: false, init });
    off += size;
    return off - size;
  };
  const block = (prefix: string): BlockLayout => {
    const ln1w = add(`${prefix}.input_layernorm.weight`, [C], "ones");
    const qkvw = add(`${prefix}.self_attn.q_proj.weight`, [C, C], "normal");
    add(`${prefix}.self_attn.k_proj.weight`, [ckv, C], "normal");
    add(`${prefix}.self_attn.v_proj.weight`, [ckv, C], "normal");
    const projw = add(`${prefix}.self_attn.o_proj.weight`, [C, C], "normal");
    const ln2w = add(`${prefix}.post_attention_layernorm.weight`, [C], "ones");
    const fcw = add(`${prefix}.mlp.gate_proj.weight`, [I, C], "normal");
    add(`${prefix}.mlp.up_proj.weight`, [I, C], "normal");
    const fcprojw = add(`${prefix}.mlp.down_proj.weight`, [C, I], "normal");
    return {
      ln1w,
      ln1b: -1,
      qkvw,
      qkvb: -1,
      projw,
      projb: -1,
      ln2w,
      ln2b: -1,
      fcw,
      fcb: -1,
      fcprojw,
      fcprojb: -1,
    };
  };
  const wte = add("model.embed_tokens.weight", [V, C], "normal");
  const blocks: BlockLayout[] = [];
  for (let l = 0; l < cfg.nLayer; l++) blocks.push(block(`model.layers.${l}`));
  const lnfw = add("model.norm.weight", [C], "ones");
  const lmHead = ls.tieEmbeddings ? -1 : add("lm_head.weight", [V, C], "normal");
  const mainTotal = off;
  let aux: ParamLayout["aux"] = null;
  if (cfg.auxLayers > 0) {
    const ab: BlockLayout[] = [];
    for (let l = 0; l < cfg.auxLayers; l++) ab.push(block(`aux.layers.${l}`));
    aux = {
      blocks: ab,
      lnfw: add("aux.norm.weight", [C], "ones"),
      lnfb: -1,
      head: add("aux.head.weight", [V, C], "normal"),
    };
  }
  return { tensors, total: off, mainTotal, wte, wpe: -1, lmHead, blocks, lnfw, lnfb: -1, aux };
}

/**
 * GPT-2 initialisation (as Hugging Face's `_init_weights` does it): normal(0, 0.02) for
 * weights and embeddings, residual projections scaled by 1/sqrt(2 * nLayer), zero biases,
 * unit LayerNorm gains. A Llama layout has no "proj" tensors: normal(0, 0.02) throughout, unit
 * RMSNorm gains, as the Hugging Face Llama initialises.
 */
export function initParams(layout: ParamLayout, cfg: ModelConfig, seed: number): Float32Array {
  const p = new Float32Array(layout.total);
  const rng = new Rng(seed);
  const projStd = 0.02 / Math.sqrt(2 * cfg.nLayer);
  for (const t of layout.tensors) {
    const v = p.subarray(t.offset, t.offset + t.size);
    if (t.init === "ones") v.fill(1);
    else if (t.init === "normal" || t.init === "proj") {
      const std = t.init === "proj" ? projStd : 0.02;
      for (let i = 0; i < v.length; i++) v[i] = rng.normal() * std;
    }
  }
  return p;
}

/**
 * Initialise the rows of the new LOTUS tokens as the reference does: copy the embedding row of
 * the token that begins `<<` into BOT, EOT and LAT (a tied LM head follows; an untied one gets
 * the same copy of its own rows).
 */
export function initSpecialRows(
  params: Float32Array,
  layout: ParamLayout,
  dModel: number,
  sourceId: number,
  targetIds: number[],
): void {
  const src = params.slice(layout.wte + sourceId * dModel, layout.wte + (sourceId + 1) * dModel);
  for (const id of targetIds) params.set(src, layout.wte + id * dModel);
  if (layout.lmHead >= 0) {
    // An untied head (some Llama models): its rows of the new tokens follow the same token.
    const o = layout.lmHead;
    const hs = params.slice(o + sourceId * dModel, o + (sourceId + 1) * dModel);
    for (const id of targetIds) params.set(hs, o + id * dModel);
  }
}

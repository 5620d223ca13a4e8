/**
 * The Llama backbone as ONNX graphs of standard operators (opset 17, fp32), with the inputs
 * and outputs of the GPT-2 graphs (export/onnx_decoder.ts): `input_ids` or `inputs_embeds`,
 * `attention_mask`, `position_ids`, `past_key_values.N.key`/`value`, `num_logits_to_keep`;
 * `logits`, `last_hidden_state` (after the final RMSNorm) and `present.N.key`/`value`. The
 * cache holds the key/value heads only, [batch, nKvHead, past, head size], as the Hugging Face
 * Llama's does, and its keys are rotated.
 *
 * The model is the engine's Llama block (model/stack.ts), written out in plain operators:
 *
 * - **RMSNorm**: x · 1/sqrt(mean(x²) + eps) · w (Mul, ReduceMean, Add, Sqrt, Reciprocal), with
 *   the config's `normEps`.
 * - **Rotary positions**: the angles are `position_ids` × inv_freq, where inv_freq is the
 *   engine's table (model/rope.ts: rope_theta and Llama 3's frequency scaling) stored in the
 *   graph. Cos and Sin are taken in the graph. Each head's pairs (i, i + HS/2) rotate, the
 *   "rotate half" pairing of the Hugging Face Llama and of the engine's `le_rope`: x₁' = x₁ cos
 *   − x₂ sin, x₂' = x₂ cos + x₁ sin. Queries and keys rotate; values do not.
 * - **Grouped-query attention**: query head h reads key/value head ⌊h / G⌋, G = nHead /
 *   nKvHead. The G query heads of a key/value head are stacked as G·T rows, [B, nKvHead, G·T,
 *   HS], so that each product is one plain MatMul against the cache; the keys and values are
 *   never repeated.
 * - **SwiGLU MLP**: silu(gate) · up, with silu(g) = g · Sigmoid(g), then down_proj.
 *
 * There are no biases. The LM head is the token embedding (tied) or `lm_head.weight`.
 *
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { archOf, llamaShape } from "../model/config.ts";
import { type ParamLayout, paramLayout } from "../model/params.ts";
import { ropeInvFreq } from "../model/rope.ts";
import { GraphBuilder, WeightFile } from "./onnx_builder.ts";
import { DataType, type OnnxModel } from "./onnx_proto.ts";
import {
  appendCache,
  attend,
  attentionBias,
  decoderHead,
  decoderInputs,
  decoderOutputs,
  type GraphInput,
  ONNX_OPSET,
  WEIGHTS_FILE,
} from "./onnx_decoder.ts";

/** The fused query/key/value weight of layer `l` in the ONNX weight file: [C + 2 Ckv, C]. */
export const llamaQkvName = (l: number): string => `model.layers.${l}.self_attn.qkv_proj.weight`;
/** The fused gate/up weight of layer `l` in the ONNX weight file: [2 I, C]. */
export const llamaGateUpName = (l: number): string => `model.layers.${l}.mlp.gate_up_proj.weight`;

/**
 * The Hugging Face name of each tensor of a layout, by its offset: the one place the names are
 * written is model/params.ts, which the weight file and the graph both read here.
 */
function namesOf(layout: ParamLayout): (offset: number) => string {
  const byOffset = new Map(layout.tensors.map((t) => [t.offset, t.name]));
  return (offset) => byOffset.get(offset)!;
}

function requireLlama(cfg: ModelConfig): void {
  if (archOf(cfg) !== "llama") {
    throw new RangeError(
      `model config field "arch" is "${archOf(cfg)}", not "llama": use the GPT-2 graphs`,
    );
  }
}

/**
 * A Llama model's backbone weights in one external data file, [out, in] as Hugging Face
 * stores them (every linear layer is a Gemm with transB). The names are the Hugging Face
 * Llama names, except that each layer's q/k/v projections are one tensor,
 * `self_attn.qkv_proj.weight` (q_proj, k_proj and v_proj rows in that order), and its gate and
 * up projections are one, `mlp.gate_up_proj.weight` (gate_proj rows, then up_proj): the
 * engine's fused layout (model/params.ts), so each is one product. The tensors are views of
 * `params`, which must outlive the file's writing.
 */
export function llamaWeights(cfg: ModelConfig, params: Float32Array): WeightFile {
  requireLlama(cfg);
  const layout = paramLayout(cfg), ls = llamaShape(cfg);
  const C = cfg.dModel, V = cfg.vocabSize, I = ls.dFf;
  const qkvRows = C + 2 * (C / cfg.nHead) * ls.nKvHead;
  if (params.length < layout.mainTotal) {
    throw new RangeError(
      `Llama parameters: ${params.length} floats, the model's backbone needs ${layout.mainTotal}`,
    );
  }
  const file = new WeightFile(WEIGHTS_FILE);
  const add = (name: string, offset: number, dims: number[]) => {
    const n = dims.reduce((a, b) => a * b, 1);
    file.add(name, dims, params.subarray(offset, offset + n));
  };
  const name = namesOf(layout);
  add(name(layout.wte), layout.wte, [V, C]);
  layout.blocks.forEach((b, l) => {
    add(name(b.ln1w), b.ln1w, [C]);
    add(llamaQkvName(l), b.qkvw, [qkvRows, C]);
    add(name(b.projw), b.projw, [C, C]);
    add(name(b.ln2w), b.ln2w, [C]);
    add(llamaGateUpName(l), b.fcw, [2 * I, C]);
    add(name(b.fcprojw), b.fcprojw, [C, I]);
  });
  add(name(layout.lnfw), layout.lnfw, [C]);
  if (layout.lmHead >= 0) add(name(layout.lmHead), layout.lmHead, [V, C]);
  return file;
}

/**
 * Build one Llama backbone graph over weights from {@linkcode llamaWeights}: token ids in
 * (`model.onnx`) or input embeddings in (`model_embeds.onnx`, the LOTUS loop passes).
 *
 * @example
 * ```ts
 * import { llamaGraph, llamaWeights } from "./onnx_llama.ts";
 * import { initParams, paramLayout } from "../model/params.ts";
 * const cfg = {
 *   vocabSize: 16, maxPositions: 8, dModel: 8, nHead: 2, nLayer: 1, auxLayers: 0, auxHeads: 2,
 *   arch: "llama" as const, nKvHead: 1, dFf: 12,
 * };
 * const w = llamaWeights(cfg, initParams(paramLayout(cfg), cfg, 0));
 * const m = llamaGraph(cfg, w, "embeds");
 * console.assert(m.graph.input[0].name === "inputs_embeds");
 * ```
 */
export function llamaGraph(cfg: ModelConfig, w: WeightFile, input: GraphInput): OnnxModel {
  requireLlama(cfg);
  const ls = llamaShape(cfg);
  const C = cfg.dModel, NH = cfg.nHead, HS = C / NH, KV = ls.nKvHead, G = NH / KV;
  const CKV = KV * HS, I = ls.dFf;
  const g = new GraphBuilder(input === "ids" ? "llama" : "llama_inputs_embeds");
  const W = (weight: string) => g.weight(w, weight);
  const layout = paramLayout(cfg), name = namesOf(layout);
  const inp = decoderInputs(g, input, cfg);

  // Embeddings (no position table: positions enter through the rotation).
  g.scope("embed");
  const tok = input === "ids"
    ? g.op("Gather", [W(name(layout.wte)), inp.src], { axis: { int: 0 } })
    : inp.src;
  // The residual stream is kept as [B*T, C] rows, so that every linear layer is one Gemm;
  // only attention needs the [B, T, ...] shape back.
  let x = g.op("Reshape", [tok, g.constI64([-1, C])]);
  const bt = g.op("Shape", [inp.src], { start: { int: 0 }, end: { int: 2 } });

  g.scope("mask");
  // [B, 1, T, S], tiled to [B, 1, G*T, S] for the stacked query heads (row g*T + t is t's).
  const bias0 = attentionBias(g, inp);
  const bias = G === 1 ? bias0 : g.op("Tile", [bias0, g.constI64([1, 1, G, 1])]);

  // Rotary angles [B, T, 1, HS/2]: position × inv_freq in fp32, as the engine rounds it.
  g.scope("rope");
  const invFreq = ropeInvFreq(HS, ls.ropeTheta, ls.ropeScaling);
  const angles = g.op("Mul", [
    g.op("Unsqueeze", [
      g.op("Cast", [inp.posIds], { to: { int: DataType.FLOAT } }),
      g.constI64([2, 3]),
    ]),
    g.constF32(Array.from(invFreq), [HS / 2]),
  ]);
  const cos = g.op("Cos", [angles]), sin = g.op("Sin", [angles]);
  const halves = g.constI64([HS / 2, HS / 2]);
  /** Rotate [B, T, heads, HS] by the positions: pairs (i, i + HS/2). */
  const rotate = (v: string) => {
    const [x1, x2] = g.opN("Split", [v, halves], 2, { axis: { int: 3 } });
    return g.op("Concat", [
      g.op("Sub", [g.op("Mul", [x1, cos]), g.op("Mul", [x2, sin])]),
      g.op("Add", [g.op("Mul", [x2, cos]), g.op("Mul", [x1, sin])]),
    ], { axis: { int: 3 } });
  };

  const eps = g.constF32([ls.normEps]);
  const rmsNorm = (v: string, weight: string) => {
    const meanSq = g.op("ReduceMean", [g.op("Mul", [v, v])], {
      axes: { ints: [-1] },
      keepdims: { int: 1 },
    });
    const rstd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [meanSq, eps])])]);
    return g.op("Mul", [g.op("Mul", [v, rstd]), W(weight)]);
  };
  const linear = (v: string, weight: string) =>
    g.op("Gemm", [v, W(weight)], { transB: { int: 1 } });
  const qkShape = g.op("Concat", [bt, g.constI64([NH + KV, HS])], { axis: { int: 0 } });
  const vShape = g.op("Concat", [bt, g.constI64([KV, HS])], { axis: { int: 0 } });
  const qkvSplit = g.constI64([C + CKV, CKV]), qkSplit = g.constI64([NH, KV]);
  const gqShape = g.constI64([0, 0, KV, G, HS]), stackShape = g.constI64([0, 0, -1, HS]);
  const unstackShape = g.constI64([0, 0, G, -1, HS]), rowShape = g.constI64([-1, C]);
  const ffSplit = g.constI64([I, I]);
  const toHeads = { perm: { ints: [0, 2, 1, 3] } };

  for (let l = 0; l < cfg.nLayer; l++) {
    g.scope(`layers.${l}`);
    const b = layout.blocks[l];
    const qkv = linear(rmsNorm(x, name(b.ln1w)), llamaQkvName(l));
    const [qk, v] = g.opN("Split", [qkv, qkvSplit], 2, { axis: { int: 1 } });
    // Queries and keys rotate together ([B, T, NH + KV, HS]), as the engine rotates them.
    const [q, k] = g.opN("Split", [rotate(g.op("Reshape", [qk, qkShape])), qkSplit], 2, {
      axis: { int: 2 },
    });
    const [keys, vals] = appendCache(
      g,
      inp,
      l,
      g.op("Transpose", [k], toHeads),
      g.op("Transpose", [g.op("Reshape", [v, vShape])], toHeads),
    );
    // Queries [B, T, NH, HS] -> [B, KV, G, T, HS] -> [B, KV, G*T, HS].
    const qs = g.op("Reshape", [
      g.op("Transpose", [g.op("Reshape", [q, gqShape])], { perm: { ints: [0, 2, 3, 1, 4] } }),
      stackShape,
    ]);
    const att = attend(g, qs, keys, vals, bias, 1 / Math.sqrt(HS));
    // [B, KV, G*T, HS] -> [B, KV, G, T, HS] -> [B, T, KV, G, HS] -> rows [B*T, C].
    const y = g.op("Reshape", [
      g.op("Transpose", [g.op("Reshape", [att, unstackShape])], {
        perm: { ints: [0, 3, 1, 2, 4] },
      }),
      rowShape,
    ]);
    x = g.op("Add", [x, linear(y, name(b.projw))]);
    const gu = linear(rmsNorm(x, name(b.ln2w)), llamaGateUpName(l));
    const [gate, up] = g.opN("Split", [gu, ffSplit], 2, { axis: { int: 1 } });
    const act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up]);
    x = g.op("Add", [x, linear(act, name(b.fcprojw))]);
  }

  g.scope("head");
  const head = name(layout.lmHead >= 0 ? layout.lmHead : layout.wte);
  decoderHead(g, inp, cfg, rmsNorm(x, name(layout.lnfw)), bt, W(head));
  decoderOutputs(g, cfg);
  return g.model({
    opset: ONNX_OPSET,
    docString: input === "ids"
      ? "Llama decoder with a key/value cache (LOTUS backbone), token ids in"
      : "Llama decoder with a key/value cache (LOTUS backbone), input embeddings in",
  });
}

/**
 * The GPT-2 backbone as ONNX graphs of standard operators (opset 17, fp32), with the input
 * and output names that `@huggingface/transformers` uses for decoder-only text generation:
 *
 * | input                           | shape                                  |
 * | ------------------------------- | -------------------------------------- |
 * | `input_ids` (int64)             | [batch, seq]  (or `inputs_embeds`)     |
 * | `inputs_embeds` (float)         | [batch, seq, C], without positions     |
 * | `attention_mask` (int64)        | [batch, past + seq]; 0 masks a key     |
 * | `position_ids` (int64)          | [batch, seq]                           |
 * | `past_key_values.N.key`/`value` | [batch, heads, past, head size]        |
 * | `num_logits_to_keep` (int64)    | scalar: logits of the last n rows, 0 = all |
 *
 * Outputs: `logits` [batch, n, V] (tied LM head), `last_hidden_state` [batch, seq, C] (after
 * the final LayerNorm: what LOTUS injects) and `present.N.key`/`value` (past ‖ new).
 *
 * One graph reads token ids (the Hugging Face `model.onnx`); the other reads input
 * embeddings, for the LOTUS loop passes, whose inputs are embeddings plus injected states.
 * Both name the same weights in one external data file, so they share it on disk.
 *
 * The model is the engine's (model/stack.ts): pre-LayerNorm blocks, LayerNorm eps 1e-5,
 * GELU with the tanh approximation, learned positions. Masked keys get a large negative
 * score rather than -inf, so that a row with no visible key (a left pad) yields finite
 * values instead of NaN; such rows are never read.
 *
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { paramLayout } from "../model/params.ts";
import { toHfTensors } from "../model/checkpoint.ts";
import { type Dim, GraphBuilder, WeightFile } from "./onnx_builder.ts";
import { DataType, type OnnxModel } from "./onnx_proto.ts";

/** The ONNX operator set the graphs use (onnxruntime 1.30 runs 7 to 23). */
export const ONNX_OPSET = 17;

/** Name of the external weight file, next to the graphs. */
export const WEIGHTS_FILE = "model.onnx_data";

/** The key input of layer `l`. */
export const pastKey = (l: number): string => `past_key_values.${l}.key`;
/** The value input of layer `l`. */
export const pastValue = (l: number): string => `past_key_values.${l}.value`;
/** The key output of layer `l`. */
export const presentKey = (l: number): string => `present.${l}.key`;
/** The value output of layer `l`. */
export const presentValue = (l: number): string => `present.${l}.value`;

/** Which input a graph reads: token ids or input embeddings. */
export type GraphInput = "ids" | "embeds";

// Far below any real score, and finite: exp() of it is exactly 0 in fp32.
const MASKED = -1e30;

/**
 * The backbone's weights in Hugging Face layout (Conv1D weights [in, out], ready for MatMul)
 * in one external data file.
 */
export function gpt2Weights(cfg: ModelConfig, params: Float32Array): WeightFile {
  const file = new WeightFile(WEIGHTS_FILE);
  const hf = toHfTensors(params, paramLayout(cfg), "transformer.");
  for (const [name, t] of Object.entries(hf)) file.add(name, t.shape, t.data as Float32Array);
  return file;
}

/**
 * Build one backbone graph over weights from {@linkcode gpt2Weights}.
 *
 * @example
 * ```ts
 * import { gpt2Graph, gpt2Weights } from "./onnx_gpt2.ts";
 * import { initParams, paramLayout } from "../model/params.ts";
 * const cfg = { vocabSize: 16, maxPositions: 8, dModel: 8, nHead: 2, nLayer: 1, auxLayers: 0, auxHeads: 2 };
 * const w = gpt2Weights(cfg, initParams(paramLayout(cfg), cfg, 0));
 * const m = gpt2Graph(cfg, w, "ids");
 * console.assert(m.graph.output[0].name === "logits");
 * ```
 */
export function gpt2Graph(cfg: ModelConfig, w: WeightFile, input: GraphInput): OnnxModel {
  const C = cfg.dModel, NH = cfg.nHead, HS = C / NH, V = cfg.vocabSize;
  const g = new GraphBuilder(input === "ids" ? "gpt2" : "gpt2_inputs_embeds");
  const F = DataType.FLOAT, I64 = DataType.INT64;
  const B: Dim = "batch_size", T: Dim = "sequence_length";
  const P: Dim = "past_sequence_length", S: Dim = "total_sequence_length";
  const W = (name: string) => g.weight(w, `transformer.${name}`);

  const src = input === "ids"
    ? g.input("input_ids", I64, [B, T])
    : g.input("inputs_embeds", F, [B, T, C]);
  const mask = g.input("attention_mask", I64, [B, S]);
  const posIds = g.input("position_ids", I64, [B, T]);
  const past: [string, string][] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    past.push([g.input(pastKey(l), F, [B, NH, P, HS]), g.input(pastValue(l), F, [B, NH, P, HS])]);
  }
  const keep = g.input("num_logits_to_keep", I64, []);

  // Embeddings.
  g.scope("embed");
  const tok = input === "ids" ? g.op("Gather", [W("wte.weight"), src], { axis: { int: 0 } }) : src;
  const x3 = g.op("Add", [tok, g.op("Gather", [W("wpe.weight"), posIds], { axis: { int: 0 } })]);
  // The residual stream is kept as [B*T, C] rows, so that every linear layer is one Gemm
  // with its bias fused; only attention needs the [B, T, ...] shape back.
  let x = g.op("Reshape", [x3, g.constI64([-1, C])]);
  const bt = g.op("Shape", [src], { start: { int: 0 }, end: { int: 2 } });

  // Additive mask [B, 1, T, S]: key j is visible to query i when j <= past + i and the
  // attention mask keeps it.
  g.scope("mask");
  const tLen = g.op("Shape", [src], { start: { int: 1 }, end: { int: 2 } });
  const sLen = g.op("Shape", [mask], { start: { int: 1 }, end: { int: 2 } });
  const zero = g.constI64([0], []), one = g.constI64([1], []);
  const scalar = (v: string) => g.op("Squeeze", [v, g.constI64([0])]);
  const pLen = g.op("Sub", [sLen, tLen]);
  const qIdx = g.op("Range", [scalar(pLen), scalar(sLen), one]);
  const kIdx = g.op("Range", [zero, scalar(sLen), one]);
  const causal = g.op("LessOrEqual", [kIdx, g.op("Unsqueeze", [qIdx, g.constI64([1])])]);
  const keyOk = g.op("Unsqueeze", [
    g.op("Cast", [mask], { to: { int: DataType.BOOL } }),
    g.constI64([1, 2]),
  ]);
  const bias = g.op("Where", [g.op("And", [causal, keyOk]), g.constF32([0]), g.constF32([MASKED])]);

  const headShape = g.op("Concat", [bt, g.constI64([NH, HS])], { axis: { int: 0 } });
  const rowShape = g.constI64([-1, C]);
  const split = g.constI64([C, C, C]);
  const scale = g.constF32([1 / Math.sqrt(HS)]);
  const heads = (v: string) =>
    g.op("Transpose", [g.op("Reshape", [v, headShape])], { perm: { ints: [0, 2, 1, 3] } });
  const linear = (v: string, wName: string, bName: string) => g.op("Gemm", [v, W(wName), W(bName)]);
  const layerNorm = (v: string, prefix: string) =>
    g.op("LayerNormalization", [v, W(`${prefix}.weight`), W(`${prefix}.bias`)], {
      axis: { int: -1 },
      epsilon: { float: 1e-5 },
    });
  const c1 = g.constF32([Math.sqrt(2 / Math.PI)]), c2 = g.constF32([0.044715]);
  const half = g.constF32([0.5]), oneF = g.constF32([1]);

  for (let l = 0; l < cfg.nLayer; l++) {
    g.scope(`h.${l}`);
    const p = `h.${l}`;
    const qkv = linear(
      layerNorm(x, `${p}.ln_1`),
      `${p}.attn.c_attn.weight`,
      `${p}.attn.c_attn.bias`,
    );
    const [q, k, v] = g.opN("Split", [qkv, split], 3, { axis: { int: 1 } });
    const keys = g.op("Concat", [past[l][0], heads(k)], { axis: { int: 2 } }, presentKey(l));
    const vals = g.op("Concat", [past[l][1], heads(v)], { axis: { int: 2 } }, presentValue(l));
    const scores = g.op("Add", [
      g.op("Mul", [
        g.op("MatMul", [heads(q), g.op("Transpose", [keys], { perm: { ints: [0, 1, 3, 2] } })]),
        scale,
      ]),
      bias,
    ]);
    const probs = g.op("Softmax", [scores], { axis: { int: -1 } });
    const y = g.op("Reshape", [
      g.op("Transpose", [g.op("MatMul", [probs, vals])], { perm: { ints: [0, 2, 1, 3] } }),
      rowShape,
    ]);
    x = g.op("Add", [x, linear(y, `${p}.attn.c_proj.weight`, `${p}.attn.c_proj.bias`)]);
    const f = linear(layerNorm(x, `${p}.ln_2`), `${p}.mlp.c_fc.weight`, `${p}.mlp.c_fc.bias`);
    // gelu(f) = 0.5 f (1 + tanh(sqrt(2/pi) (f + 0.044715 f^3))), as the engine computes it
    const cube = g.op("Mul", [g.op("Mul", [f, f]), f]);
    const u = g.op("Mul", [g.op("Add", [f, g.op("Mul", [cube, c2])]), c1]);
    const gelu = g.op("Mul", [g.op("Mul", [f, half]), g.op("Add", [g.op("Tanh", [u]), oneF])]);
    x = g.op("Add", [x, linear(gelu, `${p}.mlp.c_proj.weight`, `${p}.mlp.c_proj.bias`)]);
  }

  g.scope("head");
  const hidden = g.op(
    "Reshape",
    [
      layerNorm(x, "ln_f"),
      g.op("Concat", [bt, g.constI64([C])], { axis: { int: 0 } }),
    ],
    {},
    "last_hidden_state",
  );
  const last = hidden;
  // The last `keep` rows (Slice from -keep; keep = 0 starts at 0, i.e. every row).
  const start = g.op("Neg", [g.op("Unsqueeze", [keep, g.constI64([0])])]);
  const rows = g.op("Slice", [hidden, start, g.constI64([2 ** 62]), g.constI64([1])]);
  const flat = g.op("Reshape", [rows, g.constI64([-1, C])]);
  const scores = g.op("Gemm", [flat, W("wte.weight")], { transB: { int: 1 } });
  const outShape = g.op("Concat", [
    g.op("Shape", [rows], { start: { int: 0 }, end: { int: 2 } }),
    g.constI64([V]),
  ], { axis: { int: 0 } });
  g.op("Reshape", [scores, outShape], {}, "logits");

  g.output("logits", F, [B, "logits_length", V]);
  g.output(last, F, [B, T, C]);
  for (let l = 0; l < cfg.nLayer; l++) {
    g.output(presentKey(l), F, [B, NH, S, HS]);
    g.output(presentValue(l), F, [B, NH, S, HS]);
  }
  return g.model({
    opset: ONNX_OPSET,
    docString: input === "ids"
      ? "GPT-2 decoder with a key/value cache (LOTUS backbone), token ids in"
      : "GPT-2 decoder with a key/value cache (LOTUS backbone), input embeddings in",
  });
}

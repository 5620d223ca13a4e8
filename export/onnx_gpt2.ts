/**
 * The GPT-2 backbone as ONNX graphs of standard operators (opset 17, fp32), with the input
 * and output names that `@huggingface/transformers` uses for decoder-only text generation
 * (export/onnx_decoder.ts lists them). Outputs: `logits` [batch, n, V] (tied LM head),
 * `last_hidden_state` [batch, seq, C] (after the final LayerNorm: what LOTUS injects) and
 * `present.N.key`/`value` (past ‖ new).
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
import { GraphBuilder, WeightFile } from "./onnx_builder.ts";
import type { OnnxModel } from "./onnx_proto.ts";
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
  const C = cfg.dModel, NH = cfg.nHead, HS = C / NH;
  const g = new GraphBuilder(input === "ids" ? "gpt2" : "gpt2_inputs_embeds");
  const W = (name: string) => g.weight(w, `transformer.${name}`);
  const inp = decoderInputs(g, input, cfg);

  // Embeddings.
  g.scope("embed");
  const tok = input === "ids"
    ? g.op("Gather", [W("wte.weight"), inp.src], { axis: { int: 0 } })
    : inp.src;
  const x3 = g.op("Add", [
    tok,
    g.op("Gather", [W("wpe.weight"), inp.posIds], { axis: { int: 0 } }),
  ]);
  // The residual stream is kept as [B*T, C] rows, so that every linear layer is one Gemm
  // with its bias fused; only attention needs the [B, T, ...] shape back.
  let x = g.op("Reshape", [x3, g.constI64([-1, C])]);
  const bt = g.op("Shape", [inp.src], { start: { int: 0 }, end: { int: 2 } });

  g.scope("mask");
  const bias = attentionBias(g, inp);

  const headShape = g.op("Concat", [bt, g.constI64([NH, HS])], { axis: { int: 0 } });
  const rowShape = g.constI64([-1, C]);
  const split = g.constI64([C, C, C]);
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
    const [keys, vals] = appendCache(g, inp, l, heads(k), heads(v));
    const y = g.op("Reshape", [
      g.op("Transpose", [attend(g, heads(q), keys, vals, bias, 1 / Math.sqrt(HS))], {
        perm: { ints: [0, 2, 1, 3] },
      }),
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
  decoderHead(g, inp, cfg, layerNorm(x, "ln_f"), bt, W("wte.weight"));
  decoderOutputs(g, cfg);
  return g.model({
    opset: ONNX_OPSET,
    docString: input === "ids"
      ? "GPT-2 decoder with a key/value cache (LOTUS backbone), token ids in"
      : "GPT-2 decoder with a key/value cache (LOTUS backbone), input embeddings in",
  });
}

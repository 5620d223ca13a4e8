/**
 * What the GPT-2 and Llama backbone graphs share: the input and output names of the decoder
 * convention of `@huggingface/transformers`, and the pieces of graph that are the same in both
 * architectures (the additive attention mask, the key/value cache, scaled dot-product
 * attention over it, and the head that returns `last_hidden_state` and the logits of the last
 * rows).
 *
 * | input                           | shape                                      |
 * | ------------------------------- | ------------------------------------------ |
 * | `input_ids` (int64)             | [batch, seq]  (or `inputs_embeds`)         |
 * | `inputs_embeds` (float)         | [batch, seq, C], without positions         |
 * | `attention_mask` (int64)        | [batch, past + seq]; 0 masks a key         |
 * | `position_ids` (int64)          | [batch, seq]                               |
 * | `past_key_values.N.key`/`value` | [batch, kv heads, past, head size]         |
 * | `num_logits_to_keep` (int64)    | scalar: logits of the last n rows, 0 = all |
 *
 * Outputs: `logits` [batch, n, V], `last_hidden_state` [batch, seq, C] (after the final
 * norm: what LOTUS injects) and `present.N.key`/`value` (past ‖ new).
 *
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { archOf, llamaShape } from "../model/config.ts";
import type { Dim, GraphBuilder } from "./onnx_builder.ts";
import { DataType } from "./onnx_proto.ts";

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
 * The name the token embedding has in the ONNX weight file (and in the graphs): GPT-2's
 * `transformer.wte.weight` or Llama's `model.embed_tokens.weight`. The ONNX inference backend
 * reads the LOTUS tokens' rows from the file under this name.
 */
export function tokenEmbeddingName(cfg: ModelConfig): string {
  return archOf(cfg) === "llama" ? "model.embed_tokens.weight" : "transformer.wte.weight";
}

/** Key/value heads of a model: `nKvHead` (Llama, grouped-query attention) or `nHead`. */
export function kvHeads(cfg: ModelConfig): number {
  return archOf(cfg) === "llama" ? llamaShape(cfg).nKvHead : cfg.nHead;
}

/** The symbolic dimensions of the graphs. */
const B: Dim = "batch_size", T: Dim = "sequence_length";
const P: Dim = "past_sequence_length", S: Dim = "total_sequence_length";

/** The graph inputs, by name. */
export interface DecoderInputs {
  /** `input_ids` [B, T] or `inputs_embeds` [B, T, C]. */
  src: string;
  /** `attention_mask` [B, S]. */
  mask: string;
  /** `position_ids` [B, T]. */
  posIds: string;
  /** Per layer: `past_key_values.N.key` and `.value`, [B, kvHeads, P, HS]. */
  past: [string, string][];
  /** `num_logits_to_keep`, an int64 scalar. */
  keep: string;
}

/** Declare the inputs of a decoder graph, in the order `@huggingface/transformers` lists them. */
export function decoderInputs(
  g: GraphBuilder,
  input: GraphInput,
  cfg: ModelConfig,
): DecoderInputs {
  const C = cfg.dModel, KV = kvHeads(cfg), HS = C / cfg.nHead;
  const F = DataType.FLOAT, I64 = DataType.INT64;
  const src = input === "ids"
    ? g.input("input_ids", I64, [B, T])
    : g.input("inputs_embeds", F, [B, T, C]);
  const mask = g.input("attention_mask", I64, [B, S]);
  const posIds = g.input("position_ids", I64, [B, T]);
  const past: [string, string][] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    past.push([g.input(pastKey(l), F, [B, KV, P, HS]), g.input(pastValue(l), F, [B, KV, P, HS])]);
  }
  const keep = g.input("num_logits_to_keep", I64, []);
  return { src, mask, posIds, past, keep };
}

/** Declare the outputs: `logits`, `last_hidden_state`, then each layer's `present` pair. */
export function decoderOutputs(g: GraphBuilder, cfg: ModelConfig): void {
  const C = cfg.dModel, KV = kvHeads(cfg), HS = C / cfg.nHead, F = DataType.FLOAT;
  g.output("logits", F, [B, "logits_length", cfg.vocabSize]);
  g.output("last_hidden_state", F, [B, T, C]);
  for (let l = 0; l < cfg.nLayer; l++) {
    g.output(presentKey(l), F, [B, KV, S, HS]);
    g.output(presentValue(l), F, [B, KV, S, HS]);
  }
}

/**
 * The additive attention mask [B, 1, T, S]: 0 where key j is visible to query i (j <= past +
 * i, and the attention mask keeps key j), a large negative score elsewhere. The mask is not
 * -inf, so that a row with no visible key (a left pad) yields finite values rather than NaN;
 * no other row reads them.
 */
export function attentionBias(g: GraphBuilder, inp: DecoderInputs): string {
  const tLen = g.op("Shape", [inp.src], { start: { int: 1 }, end: { int: 2 } });
  const sLen = g.op("Shape", [inp.mask], { start: { int: 1 }, end: { int: 2 } });
  const zero = g.constI64([0], []), one = g.constI64([1], []);
  const scalar = (v: string) => g.op("Squeeze", [v, g.constI64([0])]);
  const pLen = g.op("Sub", [sLen, tLen]);
  const qIdx = g.op("Range", [scalar(pLen), scalar(sLen), one]);
  const kIdx = g.op("Range", [zero, scalar(sLen), one]);
  const causal = g.op("LessOrEqual", [kIdx, g.op("Unsqueeze", [qIdx, g.constI64([1])])]);
  const keyOk = g.op("Unsqueeze", [
    g.op("Cast", [inp.mask], { to: { int: DataType.BOOL } }),
    g.constI64([1, 2]),
  ]);
  return g.op("Where", [g.op("And", [causal, keyOk]), g.constF32([0]), g.constF32([MASKED])]);
}

/**
 * Layer `l`'s cache: the past keys and values followed by this run's ([B, kv heads, T, HS]
 * each), concatenated along the sequence and named as the `present.l` outputs.
 */
export function appendCache(
  g: GraphBuilder,
  inp: DecoderInputs,
  l: number,
  k: string,
  v: string,
): [string, string] {
  return [
    g.op("Concat", [inp.past[l][0], k], { axis: { int: 2 } }, presentKey(l)),
    g.op("Concat", [inp.past[l][1], v], { axis: { int: 2 } }, presentValue(l)),
  ];
}

/**
 * softmax(q kᵀ · scale + bias) v, for queries [B, H, R, HS] against keys and values
 * [B, H, S, HS]; bias broadcasts to [B, H, R, S].
 */
export function attend(
  g: GraphBuilder,
  q: string,
  keys: string,
  vals: string,
  bias: string,
  scale: number,
): string {
  const scores = g.op("Add", [
    g.op("Mul", [
      g.op("MatMul", [q, g.op("Transpose", [keys], { perm: { ints: [0, 1, 3, 2] } })]),
      g.constF32([scale]),
    ]),
    bias,
  ]);
  return g.op("MatMul", [g.op("Softmax", [scores], { axis: { int: -1 } }), vals]);
}

/**
 * The head: the final-norm rows `normed` [B*T, C] become `last_hidden_state` [B, T, C], and
 * the last `num_logits_to_keep` rows of each sequence (all when it is 0) go through the LM
 * head `headWeight` [V, C] to `logits` [B, n, V]. `bt` is the 1-D shape [B, T].
 */
export function decoderHead(
  g: GraphBuilder,
  inp: DecoderInputs,
  cfg: ModelConfig,
  normed: string,
  bt: string,
  headWeight: string,
): void {
  const C = cfg.dModel, V = cfg.vocabSize;
  const hidden = g.op(
    "Reshape",
    [normed, g.op("Concat", [bt, g.constI64([C])], { axis: { int: 0 } })],
    {},
    "last_hidden_state",
  );
  // The last `keep` rows (Slice from -keep; keep = 0 starts at 0, i.e. every row).
  const start = g.op("Neg", [g.op("Unsqueeze", [inp.keep, g.constI64([0])])]);
  const rows = g.op("Slice", [hidden, start, g.constI64([2 ** 62]), g.constI64([1])]);
  const flat = g.op("Reshape", [rows, g.constI64([-1, C])]);
  const scores = g.op("Gemm", [flat, headWeight], { transB: { int: 1 } });
  const outShape = g.op("Concat", [
    g.op("Shape", [rows], { start: { int: 0 }, end: { int: 2 } }),
    g.constI64([V]),
  ], { axis: { int: 0 } });
  g.op("Reshape", [scores, outShape], {}, "logits");
}

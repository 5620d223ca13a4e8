/**
 * The Hugging Face GPT-2 `config.json` fields of a model, shared by checkpoints (which add a
 * "lotus" section) and exports.
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";

/**
 * config.json for GPT2LMHeadModel. `onnx` adds the `transformers.js_config` section that
 * tells `@huggingface/transformers` to use the fp32 graph and its external weight file.
 */
export function gpt2ConfigJson(
  cfg: ModelConfig,
  sp: { eos: number; pad: number },
  onnx: boolean,
): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    vocab_size: cfg.vocabSize,
    n_positions: cfg.maxPositions,
    n_ctx: cfg.maxPositions,
    n_embd: cfg.dModel,
    n_layer: cfg.nLayer,
    n_head: cfg.nHead,
    n_inner: null,
    activation_function: "gelu_new",
    layer_norm_epsilon: 1e-5,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    initializer_range: 0.02,
    scale_attn_weights: true,
    scale_attn_by_inverse_layer_idx: false,
    reorder_and_upcast_attn: false,
    use_cache: true,
    bos_token_id: sp.eos,
    eos_token_id: sp.eos,
    pad_token_id: sp.pad,
    tie_word_embeddings: true,
    torch_dtype: "float32",
  };
  if (onnx) out["transformers.js_config"] = transformersJsConfig();
  return out;
}

/**
 * The `transformers.js_config` section of an export with ONNX graphs: `@huggingface/transformers`
 * loads the fp32 `onnx/model.onnx` and its one external weight file, `model.onnx_data`.
 */
export function transformersJsConfig(): Record<string, unknown> {
  return { dtype: "fp32", use_external_data_format: { "model.onnx": 1 } };
}

/**
 * Hugging Face Llama checkpoints: the `config.json` of `LlamaForCausalLM` written from and
 * read into a {@linkcode ModelConfig}, and a local model directory's weights
 * (`model.safetensors`, or shards listed in `model.safetensors.index.json`; F32, BF16 or F16)
 * read tensor by tensor into the fp32 parameter slab, so a file is never held whole in memory.
 *
 * @module
 */

import { z } from "zod";
import { readSafetensorsHeader, type SafetensorsHeader } from "../base/safetensors.ts";
import { fieldIssue, jsonErrorText } from "../base/json.ts";
import { exists } from "../base/exists.ts";
import { readFull } from "../base/read_full.ts";
import { llamaShape, type ModelConfig, ModelConfigSchema } from "./config.ts";
import type { ParamLayout } from "./params.ts";
import { transformersJsConfig } from "./hf_config.ts";

/** Raised for a Llama model directory that cannot be read or does not fit; says what to do. */
export class HfLlamaError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "HfLlamaError";
  }
}

/**
 * config.json for LlamaForCausalLM (the fields transformers reads), from a Llama config.
 * `onnx` adds the `transformers.js_config` section that tells `@huggingface/transformers` to
 * use the fp32 graph and its external weight file.
 *
 * @example
 * ```ts
 * import { llamaConfigJson } from "./hf_llama.ts";
 * import { presetConfig } from "./config.ts";
 * const j = llamaConfigJson(presetConfig("llama-tiny", 100), { eos: 96, pad: 96 });
 * console.assert(j.model_type === "llama" && j.num_key_value_heads === 2);
 * ```
 */
export function llamaConfigJson(
  cfg: ModelConfig,
  sp: { eos: number; pad: number },
  onnx = false,
): Record<string, unknown> {
  const ls = llamaShape(cfg);
  const out: Record<string, unknown> = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.dModel,
    intermediate_size: ls.dFf,
    num_hidden_layers: cfg.nLayer,
    num_attention_heads: cfg.nHead,
    num_key_value_heads: ls.nKvHead,
    head_dim: cfg.dModel / cfg.nHead,
    hidden_act: "silu",
    max_position_embeddings: cfg.maxPositions,
    rms_norm_eps: ls.normEps,
    rope_theta: ls.ropeTheta,
    rope_scaling: ls.ropeScaling
      ? {
        rope_type: "llama3",
        factor: ls.ropeScaling.factor,
        low_freq_factor: ls.ropeScaling.lowFreqFactor,
        high_freq_factor: ls.ropeScaling.highFreqFactor,
        original_max_position_embeddings: ls.ropeScaling.originalMaxPositions,
      }
      : null,
    tie_word_embeddings: ls.tieEmbeddings,
    attention_bias: false,
    attention_dropout: 0,
    mlp_bias: false,
    pretraining_tp: 1,
    initializer_range: 0.02,
    use_cache: true,
    bos_token_id: sp.eos,
    eos_token_id: sp.eos,
    pad_token_id: sp.pad,
    torch_dtype: "float32",
  };
  if (onnx) out["transformers.js_config"] = transformersJsConfig();
  return out;
}

const RopeScalingJson = z.looseObject({
  rope_type: z.string().optional(),
  type: z.string().optional(),
  factor: z.number().positive().optional(),
  low_freq_factor: z.number().positive().optional(),
  high_freq_factor: z.number().positive().optional(),
  original_max_position_embeddings: z.number().int().positive().optional(),
});

/** The model config's fields, named as config.json names them (for errors). */
const HF_FIELD: Readonly<Record<string, string>> = {
  vocabSize: "vocab_size",
  maxPositions: "max_position_embeddings",
  dModel: "hidden_size",
  nHead: "num_attention_heads",
  auxHeads: "num_attention_heads",
  nLayer: "num_hidden_layers",
  nKvHead: "num_key_value_heads",
  dFf: "intermediate_size",
  ropeTheta: "rope_theta",
  normEps: "rms_norm_eps",
  ropeScaling: "rope_scaling",
};

/**
 * transformers 5 keeps the rotary settings in `rope_parameters` (rope_theta and the scaling
 * fields together); earlier versions in `rope_theta` and `rope_scaling`. The latter, filled
 * from the former where missing or null; a file whose two disagree is refused, naming both.
 */
function ropeFieldsOf(json: unknown, what: string): unknown {
  if (typeof json !== "object" || json === null) return json;
  const j = json as Record<string, unknown>;
  const p = j.rope_parameters;
  if (typeof p !== "object" || p === null) return j;
  const { rope_theta, ...scaling } = p as Record<string, unknown>;
  const type = scaling.rope_type ?? scaling.type;
  const fromParams = type === undefined || type === "default" ? null : scaling;
  const out = { ...j };
  if (rope_theta !== undefined) {
    if (j.rope_theta != null && j.rope_theta !== rope_theta) {
      throw new HfLlamaError(
        `${what}: field "rope_theta" is ${j.rope_theta} but "rope_parameters.rope_theta" is ` +
          `${rope_theta}; keep one of them`,
      );
    }
    out.rope_theta = rope_theta;
  }
  if (j.rope_scaling == null) out.rope_scaling = fromParams;
  else if (JSON.stringify(j.rope_scaling) !== JSON.stringify(fromParams) && fromParams !== null) {
    throw new HfLlamaError(
      `${what}: fields "rope_scaling" and "rope_parameters" give different rotary scalings; ` +
        `keep one of them`,
    );
  }
  return out;
}

const LlamaJson = z.looseObject({
  model_type: z.literal("llama"),
  vocab_size: z.number().int().positive(),
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive().optional(),
  head_dim: z.number().int().positive().optional(),
  max_position_embeddings: z.number().int().positive(),
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(10000),
  rope_scaling: RopeScalingJson.nullable().optional(),
  tie_word_embeddings: z.boolean().default(false),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
  hidden_act: z.string().default("silu"),
});

/** Whether a parsed config.json is a Hugging Face Llama config. */
export function isLlamaConfigJson(json: unknown): boolean {
  return typeof json === "object" && json !== null &&
    (json as Record<string, unknown>).model_type === "llama";
}

/**
 * The model config of a Hugging Face Llama `config.json`, for a vocabulary of `vocabSize`
 * (the dataset's: at least the file's, since the LOTUS tokens are appended) and `auxLayers`
 * LOTUS-aux blocks. Features the engine lacks (biases, another activation, a head size other
 * than hidden_size / heads, another rope type) are refused with the field named.
 */
export function modelConfigFromLlamaJson(
  json: unknown,
  vocabSize: number,
  auxLayers: number,
  what: string,
): ModelConfig {
  const r = LlamaJson.safeParse(ropeFieldsOf(json, what));
  if (!r.success) {
    throw new HfLlamaError(
      `${what}: ${fieldIssue(r.error)}; expected a Hugging Face Llama config.json ` +
        `(model_type "llama")`,
    );
  }
  const j = r.data;
  const refuse = (field: string, why: string) =>
    new HfLlamaError(`${what}: field "${field}" ${why}; the engine's Llama cannot run it`);
  if (j.attention_bias) throw refuse("attention_bias", "is true (no attention biases)");
  if (j.mlp_bias) throw refuse("mlp_bias", "is true (no MLP biases)");
  if (j.hidden_act !== "silu") throw refuse("hidden_act", `is "${j.hidden_act}", not "silu"`);
  if (j.head_dim !== undefined && j.head_dim * j.num_attention_heads !== j.hidden_size) {
    throw refuse("head_dim", `is ${j.head_dim}, not hidden_size / num_attention_heads`);
  }
  const given = j.rope_scaling ?? null;
  const ropeType = given ? given.rope_type ?? given.type : null;
  // {"rope_type": "default"} is transformers' way of saying "no scaling".
  const rs = ropeType === "default" ? null : given;
  if (rs && ropeType !== "llama3") {
    throw refuse("rope_scaling.rope_type", `is "${ropeType}", not "llama3" or "default"`);
  }
  if (rs) {
    for (const f of ["factor", "low_freq_factor", "high_freq_factor"] as const) {
      if (rs[f] === undefined) throw refuse(`rope_scaling.${f}`, "is missing (llama3 needs it)");
    }
    if (rs.original_max_position_embeddings === undefined) {
      throw refuse("rope_scaling.original_max_position_embeddings", "is missing (llama3 needs it)");
    }
  }
  const cfg = ModelConfigSchema.safeParse({
    vocabSize,
    maxPositions: j.max_position_embeddings,
    dModel: j.hidden_size,
    nHead: j.num_attention_heads,
    nLayer: j.num_hidden_layers,
    auxLayers,
    auxHeads: j.num_attention_heads,
    arch: "llama",
    nKvHead: j.num_key_value_heads ?? j.num_attention_heads,
    dFf: j.intermediate_size,
    ropeTheta: j.rope_theta,
    ropeScaling: rs
      ? {
        factor: rs.factor,
        lowFreqFactor: rs.low_freq_factor,
        highFreqFactor: rs.high_freq_factor,
        originalMaxPositions: rs.original_max_position_embeddings,
      }
      : null,
    normEps: j.rms_norm_eps,
    tieEmbeddings: j.tie_word_embeddings,
  });
  if (!cfg.success) {
    const i = cfg.error.issues[0];
    const ours = String(i.path[0] ?? "");
    const field = HF_FIELD[ours] ?? ours;
    const value = (j as Record<string, unknown>)[field];
    throw new HfLlamaError(
      `${what}: field "${field}"${value !== undefined ? ` (${value})` : ""}: ` +
        `${i.message.replace(/\b(dModel|nHead|nKvHead|auxHeads)\b/g, (m) => HF_FIELD[m])}; ` +
        `not a shape the engine's Llama runs`,
    );
  }
  return cfg.data;
}

/** The safetensors files of a model directory and which holds each tensor. */
async function weightFiles(
  dir: string,
): Promise<{ headers: Map<string, SafetensorsHeader>; where: Map<string, string> }> {
  const single = `${dir}/model.safetensors`, index = `${dir}/model.safetensors.index.json`;
  const files: string[] = [];
  if (await exists(index)) {
    let map: unknown;
    try {
      map = JSON.parse(await Deno.readTextFile(index)).weight_map;
    } catch (e) {
      throw new HfLlamaError(`${index}: cannot read (${(e as Error).message})`);
    }
    if (typeof map !== "object" || map === null) {
      throw new HfLlamaError(`${index}: field "weight_map" is missing; not a sharded index`);
    }
    for (const f of new Set(Object.values(map as Record<string, unknown>))) {
      if (typeof f !== "string" || f.includes("/")) {
        throw new HfLlamaError(`${index}: field "weight_map" names ${JSON.stringify(f)}`);
      }
      files.push(`${dir}/${f}`);
    }
  } else if (await exists(single)) {
    files.push(single);
  } else {
    throw new HfLlamaError(
      `${dir}: neither model.safetensors nor model.safetensors.index.json is there; point ` +
        `--init at a downloaded Hugging Face model directory`,
    );
  }
  const headers = new Map<string, SafetensorsHeader>(), where = new Map<string, string>();
  for (const f of files) {
    const h = await readSafetensorsHeader(f);
    headers.set(f, h);
    for (const name of Object.keys(h.tensors)) where.set(name, f);
  }
  return { headers, where };
}

/** bf16 bits to fp32: the top half of the fp32 bits. */
function bf16ToF32(src: Uint16Array, dst: Float32Array): void {
  const u = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
}

/** IEEE half bits to fp32. */
function f16ToF32(src: Uint16Array, dst: Float32Array): void {
  for (let i = 0; i < src.length; i++) {
    const h = src[i], s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    dst[i] = e === 0
      ? s * m * 2 ** -24
      : e === 31
      ? (m ? NaN : s * Infinity)
      : s * (1 + m / 1024) * 2 ** (e - 15);
  }
}

/**
 * Read a Hugging Face Llama model directory's weights into `params` (a slab of `layout`, whose
 * other tensors, the aux decoder's, are left as they are). The token embedding (and an untied
 * `lm_head`) may have fewer rows than the model: the LOTUS tokens appended to the vocabulary;
 * or more: a vocabulary padded past its tokenizer's ids, whose rows beyond the model's are not
 * read. The rows read are returned as `vocabRows`. A tied model's file may also carry
 * `lm_head.weight` (ignored). Tensors are read one at a time from their file.
 */
export async function loadLlamaWeights(
  dir: string,
  layout: ParamLayout,
  params: Float32Array,
): Promise<{ vocabRows: number }> {
  const { headers, where } = await weightFiles(dir);
  let vocabRows = -1;
  const used = new Set<string>();
  for (const t of layout.tensors) {
    if (t.name.startsWith("aux.")) continue;
    const file = where.get(t.name);
    if (!file) {
      throw new HfLlamaError(
        `${dir}: tensor "${t.name}" is in none of the model's safetensors files; the ` +
          `directory does not hold the model its config.json describes`,
      );
    }
    used.add(t.name);
    const h = headers.get(file)!, e = h.tensors[t.name];
    // The vocabulary's rows: as many as the file has, up to the model's.
    const growable = t.name === "model.embed_tokens.weight" || t.name === "lm_head.weight";
    const rows = growable ? Math.min(e.shape[0], t.shape[0]) : e.shape[0];
    const fits = e.shape.length === t.shape.length &&
      e.shape.every((d, i) => d === t.shape[i] || (growable && i === 0));
    if (!fits) {
      throw new HfLlamaError(
        `${file}: tensor "${t.name}" has shape [${e.shape}], the model needs [${t.shape}]`,
      );
    }
    if (e.dtype !== "F32" && e.dtype !== "BF16" && e.dtype !== "F16") {
      throw new HfLlamaError(
        `${file}: tensor "${t.name}" is ${e.dtype}; F32, BF16 or F16 are read`,
      );
    }
    const n = rows * e.shape.slice(1).reduce((a, b) => a * b, 1);
    const width = e.dtype === "F32" ? 4 : 2;
    if (e.dataOffsets[1] - e.dataOffsets[0] < n * width) {
      throw new HfLlamaError(`${file}: tensor "${t.name}" holds fewer bytes than its shape`);
    }
    const bytes = new Uint8Array(n * width);
    const fh = await Deno.open(file, { read: true });
    try {
      await fh.seek(h.dataStart + e.dataOffsets[0], Deno.SeekMode.Start);
      if ((await readFull(fh, bytes)) < bytes.length) {
        throw new HfLlamaError(`${file}: cut short inside tensor "${t.name}"`);
      }
    } finally {
      fh.close();
    }
    const dst = params.subarray(t.offset, t.offset + n);
    if (e.dtype === "F32") dst.set(new Float32Array(bytes.buffer, 0, n));
    else if (e.dtype === "BF16") bf16ToF32(new Uint16Array(bytes.buffer, 0, n), dst);
    else f16ToF32(new Uint16Array(bytes.buffer, 0, n), dst);
    if (t.name === "model.embed_tokens.weight") vocabRows = rows;
  }
  for (const name of where.keys()) {
    if (!used.has(name) && name !== "lm_head.weight") {
      throw new HfLlamaError(
        `${where.get(name)}: tensor "${name}" is not a tensor of the model config.json ` +
          `describes (layers, sizes or biases differ)`,
      );
    }
  }
  return { vocabRows };
}

/**
 * The parsed config.json of `dir` when it is a Hugging Face Llama model directory (a
 * model_type "llama" config without this project's "lotus" section), else null.
 */
export async function llamaInitConfig(dir: string): Promise<unknown | null> {
  const path = `${dir}/config.json`;
  if (!(await exists(path))) return null;
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new HfLlamaError(`${path}: not valid JSON (${jsonErrorText(e)})`);
  }
  if (!isLlamaConfigJson(json) || "lotus" in (json as Record<string, unknown>)) return null;
  return json;
}

/**
 * A structural check of an export directory against what its readers expect, without
 * running them:
 *
 * - `GPT2Config` fields in config.json, consistent with each other (`n_embd` divisible by
 *   `n_head`, `n_ctx` equal to `n_positions`, GELU "gelu_new", LayerNorm eps 1e-5, tied
 *   embeddings) and with lotus.json (the model's shape, the special ids, which lie in the
 *   vocabulary and are distinct where they must be);
 * - `GPT2LMHeadModel.from_pretrained` on model.safetensors: `__metadata__.format` "pt" (the
 *   loader refuses other files), F32 tensors with the Hugging Face names and Conv1D shapes
 *   ([in, out]), nothing unexpected, every value finite; `lm_head.weight` may be absent
 *   (tied);
 * - the tokenizer files: tokenizer.json loads, has `vocab_size` tokens, the special tokens
 *   named in tokenizer_config.json and special_tokens_map.json exist with the ids of
 *   config.json, generation_config.json and lotus.json;
 * - the ONNX graphs: the input and output names of `@huggingface/transformers`' decoder
 *   convention, and external weights that lie inside their file and are finite.
 *
 * @module
 */

import { LotusJsonSchema, lotusSummaryIssue, tokenText } from "./hf_files.ts";
import { decodeModel } from "./onnx_proto.ts";
import { pastKey, pastValue, presentKey, presentValue } from "./onnx_decoder.ts";
import { readSafetensors } from "../base/safetensors.ts";
import { fieldIssue } from "../base/json.ts";
import { DISTINCT_SPECIALS, nonFinite } from "../model/checkpoint.ts";
import { tokenizerFromJson } from "../pipeline/tokenizer.ts";
import { exists, isDirectory } from "../base/exists.ts";
import { modelConfigFromLlamaJson } from "../model/hf_llama.ts";
import { paramLayout } from "../model/params.ts";

/** The Hugging Face GPT-2 tensors of a model and their shapes (Conv1D weights [in, out]). */
export function gpt2TensorShapes(
  cfg: { vocabSize: number; maxPositions: number; dModel: number; nLayer: number },
): Map<string, number[]> {
  const C = cfg.dModel, m = new Map<string, number[]>();
  m.set("transformer.wte.weight", [cfg.vocabSize, C]);
  m.set("transformer.wpe.weight", [cfg.maxPositions, C]);
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `transformer.h.${l}`;
    m.set(`${p}.ln_1.weight`, [C]);
    m.set(`${p}.ln_1.bias`, [C]);
    m.set(`${p}.attn.c_attn.weight`, [C, 3 * C]);
    m.set(`${p}.attn.c_attn.bias`, [3 * C]);
    m.set(`${p}.attn.c_proj.weight`, [C, C]);
    m.set(`${p}.attn.c_proj.bias`, [C]);
    m.set(`${p}.ln_2.weight`, [C]);
    m.set(`${p}.ln_2.bias`, [C]);
    m.set(`${p}.mlp.c_fc.weight`, [C, 4 * C]);
    m.set(`${p}.mlp.c_fc.bias`, [4 * C]);
    m.set(`${p}.mlp.c_proj.weight`, [4 * C, C]);
    m.set(`${p}.mlp.c_proj.bias`, [C]);
  }
  m.set("transformer.ln_f.weight", [C]);
  m.set("transformer.ln_f.bias", [C]);
  return m;
}

type Json = Record<string, unknown>;

async function readJson(dir: string, name: string, problems: string[]): Promise<Json | null> {
  try {
    const v = JSON.parse(await Deno.readTextFile(`${dir}/${name}`));
    if (v && typeof v === "object" && !Array.isArray(v)) return v as Json;
    problems.push(`${name}: not a JSON object`);
  } catch (e) {
    problems.push(`${name}: cannot read (${(e as Error).message})`);
  }
  return null;
}

/** "[i] = value; k of n values" for the first non-finite value of `data`, or null. */
function nonFiniteText(data: Float32Array): string | null {
  const bad = nonFinite(data);
  return bad && `[${bad.at}] = ${bad.value}; ${bad.count} of its ${data.length} values`;
}

/** `n` little-endian floats at byte `offset` of `bytes` (a view when aligned). */
function floatsAt(bytes: Uint8Array, offset: number, n: number): Float32Array {
  const at = bytes.byteOffset + offset;
  if (at % 4 === 0) return new Float32Array(bytes.buffer, at, n);
  return new Float32Array(bytes.slice(offset, offset + 4 * n).buffer);
}

const sameShape = (a: number[], b: number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Check an export directory; returns the problems found, each as `file: field: what`
 * (empty when the directory is sound).
 *
 * @example
 * ```ts ignore
 * import { checkExport } from "./export_check.ts";
 * const problems = await checkExport("out/export/default");
 * if (problems.length) console.error(problems.join("\n"));
 * ```
 */
export async function checkExport(dir: string): Promise<string[]> {
  // One line for a directory that is not there, rather than one for each file it lacks.
  if (!(await isDirectory(dir))) {
    return [`${dir}: ${(await exists(dir)) ? "is not a directory" : "no such directory"}`];
  }
  const problems: string[] = [];
  const bad = (s: string) => problems.push(s);
  const cfg = await readJson(dir, "config.json", problems);
  const lotusRaw = await readJson(dir, "lotus.json", problems);
  if (!cfg) return problems;

  // config.json (GPT2Config, or LlamaConfig)
  const int = (k: string, min = 1) => {
    const v = cfg[k];
    if (!Number.isInteger(v) || (v as number) < min) {
      bad(`config.json: field "${k}" must be an integer >= ${min}, is ${JSON.stringify(v)}`);
      return NaN;
    }
    return v as number;
  };
  const llama = cfg.model_type === "llama";
  // The HF field of each shape field, per architecture.
  const F = llama
    ? {
      positions: "max_position_embeddings",
      width: "hidden_size",
      layers: "num_hidden_layers",
      heads: "num_attention_heads",
    }
    : { positions: "n_positions", width: "n_embd", layers: "n_layer", heads: "n_head" };
  const arch = llama ? "LlamaForCausalLM" : "GPT2LMHeadModel";
  if (!llama && cfg.model_type !== "gpt2") {
    bad(`config.json: field "model_type" must be "gpt2" (or "llama")`);
  }
  if (!Array.isArray(cfg.architectures) || !cfg.architectures.includes(arch)) {
    bad(`config.json: field "architectures" must include "${arch}"`);
  }
  const V = int("vocab_size"), NP = int(F.positions), C = int(F.width);
  const NL = int(F.layers), NH = int(F.heads);
  // A Llama export's tensors: those of the model its config.json describes.
  let llamaShapes: Map<string, number[]> | null = null;
  if (llama) {
    try {
      const m = modelConfigFromLlamaJson(cfg, V, 0, "config.json");
      llamaShapes = new Map(
        paramLayout(m).tensors.map((t) => [t.name, t.shape] as [string, number[]]),
      );
    } catch (e) {
      bad((e as Error).message);
    }
  }
  if (!llama) gpt2ConfigChecks(cfg, C, NH, bad);
  const eos = int("eos_token_id", 0), bos = int("bos_token_id", 0);
  if (eos >= V || bos >= V) bad(`config.json: "eos_token_id"/"bos_token_id" must be < vocab_size`);
  if (!llama && cfg.n_ctx !== undefined && cfg.n_ctx !== NP) {
    bad(`config.json: field "n_ctx" is ${JSON.stringify(cfg.n_ctx)}, "n_positions" is ${NP}`);
  }

  // lotus.json
  const lres = lotusRaw ? LotusJsonSchema.safeParse(lotusRaw) : null;
  if (lres && !lres.success) bad(`lotus.json: ${fieldIssue(lres.error)}`);
  const lotus = lres?.success ? lres.data : null;
  if (lotus) {
    const m = lotus.lotus.model;
    const shape = [
      ["vocabSize", "vocab_size", V],
      ["maxPositions", F.positions, NP],
      ["dModel", F.width, C],
      ["nLayer", F.layers, NL],
      ["nHead", F.heads, NH],
    ] as const;
    for (const [ours, hf, theirs] of shape) {
      if (m[ours] !== theirs) {
        bad(
          `lotus.json: field "lotus.model.${ours}" is ${m[ours]}, config.json field "${hf}" is ` +
            `${theirs}; field "lotus.model" disagrees with config.json`,
        );
      }
    }
    const sp = lotus.special;
    const summary = lotusSummaryIssue(lotus);
    if (summary !== null) bad(`lotus.json: ${summary}`);
    for (const k of ["eos", "pad", "bot", "eot", "lat"] as const) {
      if (Number.isInteger(V) && sp[k] >= V) {
        bad(`lotus.json: field "special.${k}" is ${sp[k]}, outside the vocabulary [0, ${V})`);
      }
    }
    for (const [a, b] of DISTINCT_SPECIALS) {
      if (sp[a] === sp[b]) {
        bad(
          `lotus.json: fields "special.${a}" and "special.${b}" are both ${sp[a]}; EOS, BOT, ` +
            `EOT and LAT must be distinct (PAD may share EOS's id only)`,
        );
      }
    }
    if (sp.eos !== eos) {
      bad(`lotus.json: field "special.eos" is ${sp.eos}, config.json says ${eos}`);
    }
    if (cfg.pad_token_id !== undefined && cfg.pad_token_id !== sp.pad) {
      bad(
        `config.json: field "pad_token_id" is ${JSON.stringify(cfg.pad_token_id)}, ` +
          `lotus.json's "special.pad" is ${sp.pad}`,
      );
    }
  }

  // model.safetensors (GPT2LMHeadModel.from_pretrained)
  if (await exists(`${dir}/model.safetensors`)) {
    try {
      const st = await readSafetensors(`${dir}/model.safetensors`);
      if (st.metadata.format !== "pt") {
        bad(
          `model.safetensors: field "__metadata__.format" must be "pt" (transformers refuses others)`,
        );
      }
      const want = llamaShapes ??
        gpt2TensorShapes({ vocabSize: V, maxPositions: NP, dModel: C, nLayer: NL });
      const family = llama ? "Llama" : "GPT-2";
      for (const [name, shape] of want) {
        const t = st.tensors[name];
        if (!t) bad(`model.safetensors: tensor "${name}" is missing`);
        else if (t.dtype !== "F32") {
          bad(`model.safetensors: tensor "${name}" is ${t.dtype}, not F32`);
        } else if (!sameShape(t.shape, shape)) {
          bad(
            `model.safetensors: tensor "${name}" has shape [${t.shape}], ${family} needs [${shape}]`,
          );
        }
      }
      for (const [name, t] of Object.entries(st.tensors)) {
        if (want.has(name)) continue;
        if (name === "lm_head.weight" && sameShape(t.shape, [V, C])) continue;
        bad(`model.safetensors: tensor "${name}" is not a ${family} tensor`);
      }
      for (const [name, t] of Object.entries(st.tensors)) {
        if (t.dtype !== "F32") continue;
        const nf = nonFiniteText(t.data as Float32Array);
        if (nf) bad(`model.safetensors: tensor "${name}" holds non-finite values (${nf})`);
      }
    } catch (e) {
      bad(`model.safetensors: ${(e as Error).message}`);
    }
  } else if (!lotus?.onnx) {
    bad(`model.safetensors: missing, and there are no ONNX graphs either`);
  }

  // tokenizer files
  let tokJson: unknown = null;
  try {
    const text = await Deno.readTextFile(`${dir}/tokenizer.json`);
    tokJson = JSON.parse(text);
    const tok = tokenizerFromJson(text, "file", `${dir}/tokenizer.json`);
    if (tok.vocabSize !== V) {
      bad(
        `tokenizer.json: ${tok.vocabSize} tokens, but config.json field "vocab_size" is ${V}; ` +
          `the tokenizer is not the model's`,
      );
    }
  } catch (e) {
    bad(`tokenizer.json: ${(e as Error).message}`);
  }
  const idOf = (text: unknown): number | undefined => {
    if (!tokJson || typeof text !== "string") return undefined;
    const t = tokJson as {
      added_tokens?: { id: number; content: string }[];
      model?: { vocab?: Record<string, number> };
    };
    return t.added_tokens?.find((a) => a.content === text)?.id ??
      (t.model?.vocab && !Array.isArray(t.model.vocab) ? t.model.vocab[text] : undefined);
  };
  const tcfg = await readJson(dir, "tokenizer_config.json", problems);
  const smap = await readJson(dir, "special_tokens_map.json", problems);
  for (
    const [file, obj] of [["tokenizer_config.json", tcfg], [
      "special_tokens_map.json",
      smap,
    ]] as const
  ) {
    if (!obj || !tokJson) continue;
    for (const k of ["eos_token", "bos_token", "pad_token", "unk_token"]) {
      if (idOf(obj[k]) === undefined) bad(`${file}: field "${k}" names no token of tokenizer.json`);
    }
    if (idOf(obj.eos_token) !== eos) {
      bad(`${file}: field "eos_token" is not the token with config.json's eos_token_id ${eos}`);
    }
    const extra = obj.additional_special_tokens;
    if (lotus) {
      const want = [lotus.tokens.bot, lotus.tokens.eot, lotus.tokens.lat];
      if (!Array.isArray(extra) || want.some((w) => !extra.includes(w))) {
        bad(
          `${file}: field "additional_special_tokens" must list the LOTUS tokens ${want.join(" ")}`,
        );
      }
    }
  }
  if (tcfg) {
    if (typeof tcfg.tokenizer_class !== "string") {
      bad(`tokenizer_config.json: field "tokenizer_class" must be a class name`);
    }
    if (typeof tcfg.model_max_length === "number" && tcfg.model_max_length > NP) {
      bad(`tokenizer_config.json: field "model_max_length" exceeds n_positions ${NP}`);
    }
    const dec = (tcfg.added_tokens_decoder ?? {}) as Record<string, { content?: string }>;
    for (const [id, t] of Object.entries(dec)) {
      if (idOf(t.content) !== Number(id)) {
        bad(
          `tokenizer_config.json: field "added_tokens_decoder.${id}" disagrees with tokenizer.json`,
        );
      }
    }
  }
  if (lotus && tokJson) {
    for (const k of ["bot", "eot", "lat"] as const) {
      const text = tokenText(tokJson, lotus.special[k]);
      if (text !== lotus.tokens[k]) {
        bad(
          `lotus.json: field "special.${k}" is id ${lotus.special[k]}, which tokenizer.json ` +
            `calls ${JSON.stringify(text)}, not ${JSON.stringify(lotus.tokens[k])}`,
        );
      }
    }
  }
  const gen = await readJson(dir, "generation_config.json", problems);
  if (gen && gen.eos_token_id !== eos) {
    bad(`generation_config.json: field "eos_token_id" must be config.json's ${eos}`);
  }

  // ONNX graphs
  if (lotus?.onnx) await onnxProblems(dir, lotus.onnx, NL, bad);
  return problems;
}

/** The ONNX files of an export, as lotus.json names them. */
type OnnxFiles = { ids: string; embeds: string; weights: string };

/**
 * The ONNX part of {@linkcode checkExport}: both graphs decode, have the decoder convention's
 * inputs and outputs for `nLayer` layers (not checked when null), and their external weights
 * lie inside the weight file and are finite.
 */
async function onnxProblems(
  dir: string,
  files: OnnxFiles,
  nLayer: number | null,
  bad: (s: string) => void,
): Promise<void> {
  let weightBytes: Uint8Array | null = null;
  try {
    weightBytes = await Deno.readFile(`${dir}/${files.weights}`);
  } catch {
    bad(`${files.weights}: missing`);
  }
  const dataSize = weightBytes ? weightBytes.length : -1;
  const scanned = new Set<string>();
  for (const [file, first] of [[files.ids, "input_ids"], [files.embeds, "inputs_embeds"]]) {
    let m;
    try {
      m = decodeModel(await Deno.readFile(`${dir}/${file}`));
    } catch (e) {
      bad(`${file}: cannot read (${(e as Error).message})`);
      continue;
    }
    const ins = m.graph.input.map((i) => i.name), outs = m.graph.output.map((o) => o.name);
    const wantIn = [first, "attention_mask", "position_ids"];
    const wantOut = ["logits", "last_hidden_state"];
    for (let l = 0; l < (nLayer ?? 0); l++) {
      wantIn.push(pastKey(l), pastValue(l));
      wantOut.push(presentKey(l), presentValue(l));
    }
    if (nLayer !== null) {
      for (const n of wantIn) if (!ins.includes(n)) bad(`${file}: input "${n}" is missing`);
      for (const n of wantOut) if (!outs.includes(n)) bad(`${file}: output "${n}" is missing`);
    }
    const dir0 = file.slice(0, file.lastIndexOf("/") + 1);
    for (const t of m.graph.initializer) {
      if (t.dataLocation !== 1) continue;
      const get = (k: string) => t.externalData?.find((e) => e.key === k)?.value;
      const off = Number(get("offset") ?? 0), len = Number(get("length"));
      const n = t.dims.reduce((a, b) => a * b, 1) * 4;
      if (`${dir0}${get("location")}` !== files.weights) {
        bad(`${file}: weight "${t.name}" is in ${get("location")}, not ${files.weights}`);
      } else if (len !== n || (dataSize >= 0 && off + len > dataSize)) {
        bad(`${file}: weight "${t.name}" [${t.dims}] does not fit ${files.weights}`);
      } else if (weightBytes && !scanned.has(t.name)) {
        // One pass per weight, however many graphs share it.
        scanned.add(t.name);
        const nf = nonFiniteText(floatsAt(weightBytes, off, len / 4));
        if (nf) bad(`${files.weights}: weight "${t.name}" holds non-finite values (${nf})`);
      }
    }
  }
}

/**
 * The weights of an export's ONNX graphs, checked as {@linkcode checkExport} checks them: both
 * graphs decode, and every external weight lies inside the weight file and is finite. One read
 * of the file and one pass over its values; the ONNX backend runs it on an export directory
 * it is given. Returns the problems, each as `file: weight: what` (empty when sound).
 *
 * @example
 * ```ts ignore
 * import { checkOnnxWeights } from "./export_check.ts";
 * import { ONNX_FILES } from "./hf_files.ts";
 * const problems = await checkOnnxWeights("out/export/default", ONNX_FILES);
 * if (problems.length) console.error(problems[0]);
 * ```
 */
export async function checkOnnxWeights(
  dir: string,
  files: { ids: string; embeds: string; weights: string },
): Promise<string[]> {
  const problems: string[] = [];
  await onnxProblems(dir, files, null, (s) => problems.push(s));
  return problems;
}

/** The GPT-2 fields of config.json that the engine's GPT-2 fixes. */
function gpt2ConfigChecks(
  cfg: Record<string, unknown>,
  C: number,
  NH: number,
  bad: (s: string) => void,
): void {
  if (C % NH !== 0) bad(`config.json: field "n_embd" (${C}) must be divisible by "n_head" (${NH})`);
  if (cfg.n_inner !== null && cfg.n_inner !== undefined && cfg.n_inner !== 4 * C) {
    bad(`config.json: field "n_inner" must be null or ${4 * C}`);
  }
  if (cfg.activation_function !== "gelu_new") {
    bad(`config.json: field "activation_function" must be "gelu_new" (GELU, tanh form)`);
  }
  if (cfg.layer_norm_epsilon !== 1e-5) bad(`config.json: field "layer_norm_epsilon" must be 1e-5`);
  if (cfg.tie_word_embeddings === false) {
    bad(`config.json: field "tie_word_embeddings" must be true (the LM head is wte)`);
  }
  if (cfg.scale_attn_weights === false || cfg.scale_attn_by_inverse_layer_idx === true) {
    bad(`config.json: attention must be scaled by 1/sqrt(head size) only`);
  }
}

/**
 * The small JSON files of an exported model directory: the Hugging Face GPT-2 files that
 * Python `transformers` and `@huggingface/transformers` read (config.json,
 * tokenizer_config.json, special_tokens_map.json, generation_config.json), and `lotus.json`,
 * which those libraries ignore and which holds what LOTUS inference needs (K, c, R, the
 * injection and the special-token ids). docs/export.md describes the directory.
 *
 * @module
 */

import { z } from "zod";
import { type LotusMeta, LotusMetaSchema, progressOf } from "../model/checkpoint.ts";
import { inferenceShape } from "../train/schedule.ts";
import type { SpecialIds } from "../pipeline/tokenizer.ts";

/** The ONNX files of an export, relative to its directory. */
export const ONNX_FILES = {
  /** Token ids in: the graph `@huggingface/transformers` loads for text generation. */
  ids: "onnx/model.onnx",
  /** Input embeddings in: the LOTUS loop passes. */
  embeds: "onnx/model_embeds.onnx",
  /** The weights both graphs name. */
  weights: "onnx/model.onnx_data",
} as const;

/** `lotus.json`: what LOTUS inference needs beyond a GPT-2 directory. */
export interface LotusJson {
  /** Always "lotus-export". */
  format: "lotus-export";
  /** Always 1. */
  version: 1;
  /** How the checkpoint answers: LOTUS latents, or a baseline that decodes straight away. */
  mode: "lotus" | "cot" | "nocot";
  /** Latent blocks of the shape the checkpoint reached (0 for baselines). */
  K: number;
  /** Latent slots per block. */
  c: number;
  /** Loop iterations (0 for baselines). */
  R: number;
  /** Latent injection. */
  injection: "add" | "replace";
  /** The special token ids. */
  special: SpecialIds;
  /** The texts of the LOTUS tokens. */
  tokens: { bot: string; eot: string; lat: string };
  /**
   * The checkpoint's epoch (its curriculum stage follows from it). Absent when the
   * checkpoint's train_state.json could not be read: K and R are then its final stage's.
   */
  epoch?: number;
  /** The checkpoint's optimiser steps (the stage follows from them with stepsPerStage). */
  step?: number;
  /** The checkpoint's model and training configuration. */
  lotus: LotusMeta;
  /** The ONNX graphs, when exported. */
  onnx: { ids: string; embeds: string; weights: string; opset: number } | null;
  /** Where the export came from: the checkpoint and a sha256 of its config and weights. */
  source: { checkpoint: string; sha256: string };
}

/** The zod schema of {@linkcode LotusJson}. */
export const LotusJsonSchema: z.ZodType<LotusJson> = z.object({
  format: z.literal("lotus-export"),
  version: z.literal(1),
  /** How the checkpoint answers: LOTUS latents, or a baseline that decodes straight away. */
  mode: z.enum(["lotus", "cot", "nocot"]),
  /** The LOTUS shape the checkpoint reached (K = R = 0 for baselines). */
  K: z.number().int().min(0),
  c: z.number().int().min(1),
  R: z.number().int().min(0),
  injection: z.enum(["add", "replace"]),
  special: z.object({
    eos: z.number().int().min(0),
    pad: z.number().int().min(0),
    bot: z.number().int().min(0),
    eot: z.number().int().min(0),
    lat: z.number().int().min(0),
  }),
  /** The texts of the LOTUS tokens. */
  tokens: z.object({ bot: z.string(), eot: z.string(), lat: z.string() }),
  /** The checkpoint's epoch (its curriculum stage follows from it); absent: unknown. */
  epoch: z.number().int().min(0).optional(),
  step: z.number().int().min(0).optional(),
  /** The checkpoint's model and training configuration. */
  lotus: LotusMetaSchema,
  /** The ONNX graphs, when exported. */
  onnx: z.object({
    ids: z.string(),
    embeds: z.string(),
    weights: z.string(),
    opset: z.number().int(),
  }).nullable(),
  /** Where the export came from: the checkpoint and a sha256 of its config and weights. */
  source: z.object({ checkpoint: z.string(), sha256: z.string() }),
});

/**
 * The first field of `lotus.json`'s summary (the mode, K, c, R, the injection, the special
 * ids) that disagrees with what its `lotus` section gives at its epoch and step, in words,
 * or null when none does. An export writes both from one checkpoint, and inference reads the
 * mode, the injection and the special ids from the summary but the shape from the section, so
 * a summary edited by hand would otherwise be half obeyed.
 *
 * @example
 * ```ts ignore
 * import { readLotusJson } from "./export.ts";
 * import { lotusSummaryIssue } from "./hf_files.ts";
 * console.log(lotusSummaryIssue(await readLotusJson("out/export/default"))); // null
 * ```
 */
export function lotusSummaryIssue(l: LotusJson): string | null {
  const meta = l.lotus, t = meta.train;
  const at = l.epoch === undefined ? null : { epoch: l.epoch, step: l.step ?? 0 };
  const shape = inferenceShape(meta, progressOf(meta, at));
  const where = at === null ? "at its final stage" : `at epoch ${at.epoch}, step ${at.step}`;
  const expected: [string, unknown, unknown][] = [
    ["mode", l.mode, t.mode === "cot" || t.mode === "nocot" ? t.mode : "lotus"],
    ["K", l.K, shape.K],
    ["c", l.c, shape.c],
    ["R", l.R, shape.R],
    ["injection", l.injection, t.injection],
  ];
  for (const [field, got, want] of expected) {
    if (got !== want) {
      return `field "${field}" is ${JSON.stringify(got)}, where its "lotus" section gives ` +
        `${JSON.stringify(want)} (${where})`;
    }
  }
  for (const k of ["eos", "pad", "bot", "eot", "lat"] as const) {
    if (l.special[k] !== meta.special[k]) {
      return `field "special" disagrees with "lotus.special" (${k})`;
    }
  }
  return null;
}

/** The text of token `id` in a parsed tokenizer.json (added tokens first, then the vocabulary). */
export function tokenText(tokenizer: unknown, id: number): string | undefined {
  const t = tokenizer as {
    added_tokens?: { id: number; content: string }[];
    model?: { vocab?: Record<string, number> | [string, number][] };
  };
  const added = t.added_tokens?.find((a) => a.id === id);
  if (added) return added.content;
  const v = t.model?.vocab;
  if (Array.isArray(v)) return v[id]?.[0];
  if (v) { for (const [k, i] of Object.entries(v)) if (i === id) return k; }
  return undefined;
}

export { gpt2ConfigJson } from "../model/hf_config.ts";

/**
 * The tokenizer.json an export carries: the checkpoint's, less any post-processing template
 * that adds special tokens (Llama 3's adds `<|begin_of_text|>` before every text). This
 * project encodes without it, as the model was trained, so a library that applies the
 * template would feed the model a token it never saw there. Returned unchanged (the same
 * text) when there is no such template.
 *
 * @example
 * ```ts
 * import { exportTokenizerJson } from "./hf_files.ts";
 * const withBos = JSON.stringify({ post_processor: { type: "TemplateProcessing" } });
 * console.assert(JSON.parse(exportTokenizerJson(withBos)).post_processor === null);
 * ```
 */
export function exportTokenizerJson(text: string): string {
  const json = JSON.parse(text) as Record<string, unknown>;
  const isTemplate = (p: unknown) =>
    typeof p === "object" && p !== null && (p as { type?: unknown }).type === "TemplateProcessing";
  const pp = json.post_processor as { type?: unknown; processors?: unknown[] } | null | undefined;
  if (isTemplate(pp)) return JSON.stringify({ ...json, post_processor: null });
  if (pp?.type === "Sequence" && Array.isArray(pp.processors) && pp.processors.some(isTemplate)) {
    const processors = pp.processors.filter((p) => !isTemplate(p));
    return JSON.stringify({ ...json, post_processor: { ...pp, processors } });
  }
  return text;
}

/** The special-token texts of an export. */
export interface SpecialTexts {
  /** End of sequence (also BOS and UNK, as in GPT-2). */
  eos: string;
  /** Padding (EOS's text). */
  pad: string;
  /** `<|start-latent|>`. */
  bot: string;
  /** `<|end-latent|>`. */
  eot: string;
  /** `<|latent|>`. */
  lat: string;
}

/**
 * tokenizer_config.json. `PreTrainedTokenizerFast` makes both libraries read tokenizer.json
 * as it is (a GPT-2 class would rebuild the pre-tokenizer, and the compact tokenizer splits
 * digits differently).
 */
export function tokenizerConfigJson(
  tokenizer: unknown,
  texts: SpecialTexts,
  maxPositions: number,
): Record<string, unknown> {
  const added = (tokenizer as { added_tokens?: Record<string, unknown>[] }).added_tokens ?? [];
  const decoder: Record<string, unknown> = {};
  for (const a of added) {
    decoder[String(a.id)] = {
      content: a.content,
      lstrip: a.lstrip ?? false,
      normalized: a.normalized ?? false,
      rstrip: a.rstrip ?? false,
      single_word: a.single_word ?? false,
      special: a.special ?? true,
    };
  }
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    added_tokens_decoder: decoder,
    bos_token: texts.eos,
    eos_token: texts.eos,
    unk_token: texts.eos,
    pad_token: texts.pad,
    additional_special_tokens: [texts.bot, texts.eot, texts.lat],
    add_bos_token: false,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    model_max_length: maxPositions,
  };
}

/** special_tokens_map.json. */
export function specialTokensMapJson(texts: SpecialTexts): Record<string, unknown> {
  return {
    bos_token: texts.eos,
    eos_token: texts.eos,
    unk_token: texts.eos,
    pad_token: texts.pad,
    additional_special_tokens: [texts.bot, texts.eot, texts.lat],
  };
}

/**
 * generation_config.json: greedy decoding up to EOS, with the budget the checkpoint was
 * evaluated with, so a text-generation pipeline reproduces `deno task infer` by default.
 */
export function generationConfigJson(
  sp: LotusJson["special"],
  maxNewTokens: number,
): Record<string, unknown> {
  return {
    bos_token_id: sp.eos,
    eos_token_id: sp.eos,
    pad_token_id: sp.pad,
    do_sample: false,
    num_beams: 1,
    max_new_tokens: maxNewTokens,
  };
}

/**
 * Tokenizers for the pipeline, all in Hugging Face `tokenizer.json` form and all run by
 * `@huggingface/tokenizers`, so that the file written next to the tensors is exactly the
 * tokenizer that produced them and Python `tokenizers`/`transformers` can load it too.
 *
 * Three sources:
 * - {@linkcode gpt2Tokenizer}: GPT-2's byte-level BPE, derived offline from the ranks that
 *   `js-tiktoken` ships (no download);
 * - {@linkcode tokenizerFromFile}: any local `tokenizer.json`;
 * - {@linkcode fitCompactTokenizer}: a small byte-level BPE fitted to the corpus, with every
 *   ASCII digit its own token (see pipeline/bpe_fit.ts).
 *
 * Each gets the LOTUS tokens `<|start-latent|>` (BOT), `<|end-latent|>` (EOT) and
 * `<|latent|>` (LAT) appended as added special tokens, in that order, after the base
 * vocabulary; PAD is EOS (GPT-2's convention, kept by the reference implementation).
 *
 * @module
 */

import { Sha256 } from "../base/sha256.ts";
import { parseJsonAs } from "../base/json.ts";
import { type OptionNames, refuseUnknownOptions } from "../base/options.ts";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import gpt2Ranks from "js-tiktoken/ranks/gpt2";
import { z } from "zod";
import { bytesToTokenString } from "./_byte_level.ts";
import { type BpeFitOptions, BpeFitter, compactPreTokens, GPT2_PATTERN } from "./bpe_fit.ts";

/** Ids of the tokens the packer inserts. */
export interface SpecialIds {
  /** End of sequence; ends every answer. */
  eos: number;
  /** Padding; always equal to `eos`. */
  pad: number;
  /** `<|start-latent|>`: opens the latent region. */
  bot: number;
  /** `<|end-latent|>`: closes the latent region. */
  eot: number;
  /** `<|latent|>`: one latent slot. */
  lat: number;
}

/** A tokenizer as the pipeline uses it. */
export interface Tokenizer {
  /** Where it came from. */
  readonly kind: "gpt2" | "compact" | "file";
  /** Number of ids, including the added LOTUS tokens (max id + 1). */
  readonly vocabSize: number;
  /** Ids of EOS/PAD and the LOTUS tokens. */
  readonly special: SpecialIds;
  /**
   * The text of every special token, with its id: the added tokens marked special and those
   * of {@linkcode Tokenizer.special}. {@linkcode Tokenizer.encode} reads such a text anywhere
   * in its input as the token itself, so text that holds one is refused or dropped where text
   * comes in ({@linkcode findSpecialTokenText}).
   */
  readonly specialTokens: ReadonlyMap<string, number>;
  /** Encode text; no special tokens are added. */
  encode(text: string): number[];
  /** Decode ids back to text (special tokens included, no clean-up of spaces). */
  decode(ids: ArrayLike<number>): string;
  /** The `tokenizer.json` text; the same tokenizer always gives the same text. */
  toJSON(): string;
  /** Hex sha256 of {@linkcode Tokenizer.toJSON}. */
  readonly sha256: string;
}

/** The LOTUS tokens, in the order they are appended. */
export const LOTUS_TOKENS = {
  bot: "<|start-latent|>",
  eot: "<|end-latent|>",
  lat: "<|latent|>",
} as const;

/** Token texts recognised as EOS in a tokenizer.json, in order of preference. */
export const EOS_NAMES: readonly string[] = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"];

/** Where a text holds the text of a special token ({@linkcode findSpecialTokenText}). */
export interface SpecialTokenText {
  /** The special token's text, e.g. `<|latent|>`. */
  token: string;
  /** Its id. */
  id: number;
  /** Where in the text it first occurs (a UTF-16 index). */
  index: number;
  /**
   * What is wrong, for messages that put the place before it and the remedy after:
   * `holds "<|latent|>", which the tokenizer reads as its special token 50259, not as text`.
   */
  problem: string;
}

/**
 * The first special token whose text `text` holds ({@linkcode Tokenizer.specialTokens}), or
 * null when it holds none. {@linkcode Tokenizer.encode} would turn that text into the special
 * id itself: a question holding `<|latent|>` would get a latent slot inside it, one holding
 * `<|endoftext|>` an end of sequence. The build drops such a record (`special_token_text`),
 * inference and evaluation refuse such a question; this is the one check they share.
 *
 * @example
 * ```ts
 * import { findSpecialTokenText } from "./tokenizer.ts";
 * const tok = { specialTokens: new Map([["<|endoftext|>", 50256], ["<|latent|>", 50259]]) };
 * console.assert(findSpecialTokenText("Ann has 3 pens.", tok) === null);
 * const hit = findSpecialTokenText("Ann has <|latent|> 3 pens.", tok)!;
 * console.assert(hit.token === "<|latent|>" && hit.id === 50259 && hit.index === 8);
 * ```
 */
export function findSpecialTokenText(
  text: string,
  tok: Pick<Tokenizer, "specialTokens">,
): SpecialTokenText | null {
  if (typeof tok.specialTokens?.keys !== "function") {
    throw new TypeError(
      "findSpecialTokenText: the tokenizer has no specialTokens map (Tokenizer.specialTokens: " +
        "each special token's text and its id); give it one, or load the tokenizer with " +
        "tokenizerFromFile",
    );
  }
  const found = specialTokenPattern(tok.specialTokens)?.exec(text);
  if (!found) return null;
  const token = found[0], id = tok.specialTokens.get(token)!;
  return {
    token,
    id,
    index: found.index,
    problem: `holds ${JSON.stringify(token)}, which the tokenizer reads as its special ` +
      `token ${id}, not as text`,
  };
}

/**
 * {@linkcode findSpecialTokenText} over labelled texts (`[label, text]`, such as a record's
 * question and steps): each text that holds a special token's text, with its label, in order.
 */
export function findSpecialTokenTexts(
  texts: Iterable<readonly [string, string]>,
  tok: Pick<Tokenizer, "specialTokens">,
): { label: string; hit: SpecialTokenText }[] {
  const found: { label: string; hit: SpecialTokenText }[] = [];
  for (const [label, text] of texts) {
    const hit = findSpecialTokenText(text, tok);
    if (hit !== null) found.push({ label, hit });
  }
  return found;
}

/**
 * Each special-token map's pattern ({@linkcode specialTokenPattern}) and the map's size when it
 * was made: made again if the map has grown or shrunk since.
 */
const SPECIAL_PATTERNS = new WeakMap<
  ReadonlyMap<string, number>,
  { size: number; re: RegExp | null }
>();

/**
 * One regular expression matching any of the map's texts: the earliest occurrence, and of two
 * at one place the longer (the alternatives longest first). One pass over a text instead of a
 * search a token: a Llama tokenizer has over 250 special tokens. Null for an empty map.
 */
function specialTokenPattern(tokens: ReadonlyMap<string, number>): RegExp | null {
  const made = SPECIAL_PATTERNS.get(tokens);
  if (made?.size === tokens.size) return made.re;
  const texts = [...tokens.keys()].filter((t) => t !== "").sort((a, b) => b.length - a.length);
  const re = texts.length === 0
    ? null
    : new RegExp(texts.map((t) => t.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")).join("|"), "u");
  SPECIAL_PATTERNS.set(tokens, { size: tokens.size, re });
  return re;
}

/** Raised when a tokenizer cannot be built or loaded; the message says what to do. */
export class TokenizerError extends Error {
  /** Create an error. */
  constructor(message: string) {
    super(message);
    this.name = "TokenizerError";
  }
}

const AddedTokenSchema = z.looseObject({
  id: z.number().int().nonnegative(),
  content: z.string(),
  special: z.boolean().optional(),
});

/** The parts of a tokenizer.json this module reads; the rest passes through untouched. */
const TokenizerJsonSchema = z.looseObject({
  added_tokens: z.array(AddedTokenSchema).default([]),
  model: z.looseObject({
    type: z.string().optional(),
    // Checked entry by entry in vocabMap: zod over a 50,000-entry record costs ~100 ms.
    vocab: z.unknown().optional(),
  }),
});
type TokenizerJson = z.infer<typeof TokenizerJsonSchema>;

function sha256Hex(text: string): string {
  return new Sha256().update(text).hex();
}

function addedToken(id: number, content: string): TokenizerJson["added_tokens"][number] {
  return {
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  };
}

/** Token text to id over the model vocabulary and the added tokens. */
function vocabMap(json: TokenizerJson, what: string): Map<string, number> {
  const m = new Map<string, number>();
  const v = json.model.vocab;
  const bad = (where: string) =>
    new TokenizerError(
      `${what}: field "model.vocab${where}" is not a token and an id; ` +
        `expected a Hugging Face tokenizer.json`,
    );
  if (Array.isArray(v)) {
    // Unigram: [[piece, score], ...], the id is the index.
    v.forEach((e, i) => {
      if (!Array.isArray(e) || typeof e[0] !== "string") throw bad(`.${i}`);
      m.set(e[0], i);
    });
  } else if (v !== null && typeof v === "object") {
    for (const [tok, id] of Object.entries(v)) {
      if (!Number.isInteger(id) || (id as number) < 0) throw bad(`.${tok}`);
      m.set(tok, id as number);
    }
  } else if (v !== undefined) throw bad("");
  for (const t of json.added_tokens) m.set(t.content, t.id);
  return m;
}

function maxId(m: Map<string, number>): number {
  let hi = -1;
  for (const id of m.values()) if (id > hi) hi = id;
  return hi;
}

// Bounds the memo's memory on corpora with very many distinct words (about 100 MB).
const MEMO_LIMIT = 1 << 20;

class HfBackedTokenizer implements Tokenizer {
  readonly kind: "gpt2" | "compact" | "file";
  readonly vocabSize: number;
  readonly special: SpecialIds;
  readonly specialTokens: ReadonlyMap<string, number>;
  readonly sha256: string;
  readonly #json: string;
  readonly #hf: HfTokenizer;
  readonly #idToToken: Map<number, string>;
  readonly #preTokenize: ((text: string) => string[]) | null;
  readonly #added: string[];
  #memo = new Map<string, number[]>();

  constructor(
    kind: "gpt2" | "compact" | "file",
    json: string,
    parsed: TokenizerJson,
    ids: Map<string, number>,
    special: SpecialIds,
    what: string,
  ) {
    this.kind = kind;
    this.#preTokenize = kind === "gpt2"
      ? (t) => t.match(GPT2_PATTERN) ?? []
      : kind === "compact"
      ? compactPreTokens
      : null;
    this.#added = parsed.added_tokens.map((t) => t.content);
    this.#json = json;
    this.sha256 = sha256Hex(json);
    this.special = special;
    this.vocabSize = maxId(ids) + 1;
    this.#idToToken = new Map([...ids].map(([t, i]) => [i, t]));
    const specials = new Map<string, number>();
    for (const t of parsed.added_tokens) {
      if (t.special === true && t.content !== "") specials.set(t.content, t.id);
    }
    for (const id of new Set([special.eos, special.bot, special.eot, special.lat])) {
      const t = this.#idToToken.get(id);
      if (t !== undefined && t !== "" && !specials.has(t)) specials.set(t, id);
    }
    this.specialTokens = specials;
    try {
      // clean_up_tokenization_spaces would turn " ." into "." on decode and break round trips.
      this.#hf = new HfTokenizer(parsed, { clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new TokenizerError(
        `${what}: @huggingface/tokenizers cannot load it (${(e as Error).message}); ` +
          `use --tokenizer gpt2 or compact, or a tokenizer.json with standard components`,
      );
    }
  }

  encode(text: string): number[] {
    if (text.length === 0) return [];
    // Memoised per pre-token: the corpus repeats a small set of words, and encoding a
    // pre-token alone gives the same ids as inside its text because pre-tokens never merge
    // across their boundaries. Tokenizers of unknown shape, and text holding an added
    // token's spelling, go through the library whole.
    if (this.#preTokenize === null || this.#added.some((a) => text.includes(a))) {
      return this.#hfEncode(text);
    }
    const out: number[] = [];
    for (const piece of this.#preTokenize(text)) {
      let ids = this.#memo.get(piece);
      if (ids === undefined) {
        ids = this.#hfEncode(piece);
        if (this.#memo.size >= MEMO_LIMIT) this.#memo.clear();
        this.#memo.set(piece, ids);
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    }
    return out;
  }

  #hfEncode(text: string): number[] {
    return this.#hf.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: ArrayLike<number>): string {
    const arr = Array.from(ids);
    if (arr.length === 0) return "";
    for (const id of arr) {
      if (!this.#idToToken.has(id)) {
        throw new RangeError(`token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
      }
    }
    return this.#hf.decode(arr, {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: false,
    });
  }

  toJSON(): string {
    return this.#json;
  }
}

/**
 * Append the LOTUS tokens that `parsed` lacks (mutating it) and find the special ids.
 * Returns whether anything was appended.
 */
function withLotusTokens(parsed: TokenizerJson, ids: Map<string, number>, what: string): {
  special: SpecialIds;
  changed: boolean;
} {
  const eosName = EOS_NAMES.find((n) => ids.has(n));
  if (eosName === undefined) {
    throw new TokenizerError(
      `${what}: no EOS token found (looked for ${EOS_NAMES.join(", ")}); ` +
        `add one of them to "added_tokens" of the tokenizer.json, or use --tokenizer gpt2|compact`,
    );
  }
  let next = maxId(ids) + 1;
  let changed = false;
  const found: Record<keyof typeof LOTUS_TOKENS, number> = { bot: -1, eot: -1, lat: -1 };
  for (const key of ["bot", "eot", "lat"] as const) {
    const content = LOTUS_TOKENS[key];
    const have = ids.get(content);
    if (have !== undefined) {
      found[key] = have;
      continue;
    }
    parsed.added_tokens.push(addedToken(next, content));
    ids.set(content, next);
    found[key] = next++;
    changed = true;
  }
  const eos = ids.get(eosName)!;
  return { special: { eos, pad: eos, ...found }, changed };
}

// ---------------------------------------------------------------------------------------
// GPT-2 from the js-tiktoken ranks

/** Decode the js-tiktoken rank table: lines of `name offset base64 base64 ...`. */
function tiktokenRanks(bpeRanks: string): Uint8Array[] {
  const byRank: Uint8Array[] = [];
  for (const line of bpeRanks.split("\n")) {
    if (!line) continue;
    const [, offsetStr, ...tokens] = line.split(" ");
    const offset = Number.parseInt(offsetStr, 10);
    tokens.forEach((b64, i) => {
      const bin = atob(b64);
      const bytes = new Uint8Array(bin.length);
      for (let j = 0; j < bin.length; j++) bytes[j] = bin.charCodeAt(j);
      byRank[offset + i] = bytes;
    });
  }
  return byRank;
}

/**
 * Recover the BPE merge that produced each multi-byte token: tokenising the token's bytes
 * with only the lower-ranked tokens available ends in exactly two parts, and those two are
 * the merge. Merge i produces token 256 + i, so merge order equals rank order.
 */
function recoverMerges(tokens: string[], rank: Map<string, number>): [string, string][] {
  const merges: [string, string][] = [];
  for (let r = 256; r < tokens.length; r++) {
    // Byte-level characters are single UTF-16 units, so split("") gives the bytes.
    const parts = tokens[r].split("");
    const rankBelow = (a: string, b: string) => {
      const x = rank.get(a + b);
      return x !== undefined && x < r ? x : Infinity;
    };
    // pair[i]: rank of merging parts[i] and parts[i+1]; only neighbours change on a merge.
    const pair = parts.slice(1).map((p, i) => rankBelow(parts[i], p));
    while (parts.length > 2) {
      let best = -1;
      for (let i = 0; i < pair.length; i++) {
        if (pair[i] < (best < 0 ? Infinity : pair[best])) best = i;
      }
      if (best < 0) break;
      parts[best] += parts[best + 1];
      parts.splice(best + 1, 1);
      pair.splice(best, 1);
      if (best > 0) pair[best - 1] = rankBelow(parts[best - 1], parts[best]);
      if (best < parts.length - 1) pair[best] = rankBelow(parts[best], parts[best + 1]);
    }
    if (parts.length !== 2) {
      throw new TokenizerError(
        `js-tiktoken GPT-2 ranks: token ${r} has no merge; reinstall js-tiktoken`,
      );
    }
    merges.push([parts[0], parts[1]]);
  }
  return merges;
}

/** A byte-level BPE tokenizer.json object with GPT-2's standard components. */
function byteLevelBpe(opts: {
  vocab: string[];
  merges: [string, string][];
  addedTokens: { id: number; content: string }[];
  preTokenizer?: Record<string, unknown>;
}): TokenizerJson {
  const vocab: Record<string, number> = {};
  opts.vocab.forEach((t, i) => (vocab[t] = i));
  const byteLevel = {
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  };
  const obj = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: opts.addedTokens.map((t) => addedToken(t.id, t.content)),
    normalizer: null,
    pre_tokenizer: opts.preTokenizer ?? byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      // "a b" strings: byte-level tokens never contain a space, and every tokenizers version
      // reads this form.
      merges: opts.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  return obj;
}

/** Finish a parsed tokenizer.json: LOTUS tokens, special ids, the library tokenizer. */
function fromParsed(
  kind: Tokenizer["kind"],
  json: string,
  parsed: TokenizerJson,
  what: string,
): Tokenizer {
  const ids = vocabMap(parsed, what);
  const { special, changed } = withLotusTokens(parsed, ids, what);
  const text = changed ? JSON.stringify(parsed) : json;
  return new HfBackedTokenizer(kind, text, parsed, ids, special, what);
}

function fromJsonText(kind: Tokenizer["kind"], json: string, what: string): Tokenizer {
  const res = parseJsonAs(TokenizerJsonSchema, json, what);
  if (!res.ok) {
    throw new TokenizerError(`${res.message}; expected a Hugging Face tokenizer.json`);
  }
  return fromParsed(kind, json, res.data, what);
}

/**
 * How tokenizer `derived` (a dataset's) differs from the tokenizer.json text `base` (a
 * model's own) that it should extend, the LOTUS tokens appended: the first token of `base`
 * that `derived` lacks or numbers otherwise, said in words naming `what` (where `base` comes
 * from); null when `derived` has every token of `base` at its id.
 *
 * @example
 * ```ts
 * import { fitCompactTokenizer, gpt2Tokenizer, tokenizerDifference } from "./tokenizer.ts";
 * const gpt2 = await gpt2Tokenizer();
 * console.assert(tokenizerDifference(gpt2.toJSON(), gpt2, "gpt2") === null);
 * const other = fitCompactTokenizer(["Ann has 3 pens.\n"]);
 * console.assert(tokenizerDifference(gpt2.toJSON(), other, "gpt2") !== null);
 * ```
 */
export function tokenizerDifference(
  base: string,
  derived: Tokenizer,
  what: string,
): string | null {
  const parse = (text: string, w: string) => {
    const res = parseJsonAs(TokenizerJsonSchema, text, w);
    if (!res.ok) throw new TokenizerError(res.message);
    return vocabMap(res.data, w);
  };
  const want = parse(base, what), have = parse(derived.toJSON(), "the dataset's tokenizer.json");
  for (const [token, id] of want) {
    const got = have.get(token);
    if (got === id) continue;
    const shown = JSON.stringify(token.length > 40 ? token.slice(0, 40) + "…" : token);
    return got === undefined
      ? `token ${shown} (id ${id} in ${what}) is not in the dataset's tokenizer`
      : `token ${shown} is id ${id} in ${what}, ${got} in the dataset's tokenizer`;
  }
  return null;
}

let gpt2Promise: Promise<Tokenizer> | undefined;

/**
 * GPT-2's tokenizer (50,257 tokens, `<|endoftext|>` = 50256 = EOS = PAD) plus the LOTUS
 * tokens 50257 (BOT), 50258 (EOT) and 50259 (LAT), built offline from js-tiktoken's ranks.
 * The result is cached: later calls return the same object.
 *
 * @example
 * ```ts
 * import { gpt2Tokenizer } from "./tokenizer.ts";
 * const tok = await gpt2Tokenizer();
 * console.assert(tok.special.lat === 50259 && tok.decode(tok.encode("<<48/2=24>>")) === "<<48/2=24>>");
 * ```
 */
export function gpt2Tokenizer(): Promise<Tokenizer> {
  gpt2Promise ??= Promise.resolve().then(() => {
    const byRank = tiktokenRanks((gpt2Ranks as { bpe_ranks: string }).bpe_ranks);
    const tokens = byRank.map((b) => bytesToTokenString(b));
    const rank = new Map(tokens.map((t, i) => [t, i]));
    const merges = recoverMerges(tokens, rank);
    const eosText = "<|endoftext|>";
    const eos = tokens.length; // 50256
    const obj = byteLevelBpe({
      vocab: [...tokens, eosText],
      merges,
      addedTokens: [
        { id: eos, content: eosText },
        { id: eos + 1, content: LOTUS_TOKENS.bot },
        { id: eos + 2, content: LOTUS_TOKENS.eot },
        { id: eos + 3, content: LOTUS_TOKENS.lat },
      ],
    });
    // Our own object: no need to parse and validate its text.
    return fromParsed("gpt2", JSON.stringify(obj), obj, "GPT-2 tokenizer");
  });
  return gpt2Promise;
}

/**
 * Load a local `tokenizer.json`. The LOTUS tokens are appended when missing (so
 * {@linkcode Tokenizer.toJSON} may differ from the file); EOS is found by its usual names
 * ({@linkcode EOS_NAMES}).
 *
 * @example
 * ```ts
 * import { fitCompactTokenizer, tokenizerFromFile } from "./tokenizer.ts";
 * const path = await Deno.makeTempFile({ suffix: ".json" });
 * await Deno.writeTextFile(path, fitCompactTokenizer(["Ann has 3 pens.\n"]).toJSON());
 * const tok = await tokenizerFromFile(path);
 * console.assert(tok.decode(tok.encode("Ann has 12 pens.")) === "Ann has 12 pens.");
 * await Deno.remove(path);
 * ```
 */
export async function tokenizerFromFile(path: string): Promise<Tokenizer> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    // "GPT2" or "Compact": a built-in tokenizer's name in other letters, not a path.
    const named = ["gpt2", "compact"].find((n) => n === path.toLowerCase().replace("-", ""));
    throw new TokenizerError(
      `${path}: cannot read the tokenizer (${(e as Error).message}); check the --tokenizer path` +
        (named ? ` (the built-in tokenizer is --tokenizer ${named}, in lower case)` : ""),
    );
  }
  return fromJsonText("file", text, path);
}

/** Load a tokenizer.json text that this module wrote, keeping its kind. */
export function tokenizerFromJson(
  json: string,
  kind: Tokenizer["kind"],
  what = "tokenizer.json",
): Tokenizer {
  return fromJsonText(kind, json, what);
}

/** The compact tokenizer's pre-tokenizer: each ASCII digit alone, then GPT-2's byte level. */
export const COMPACT_PRE_TOKENIZER: Record<string, unknown> = {
  type: "Sequence",
  pretokenizers: [
    // [0-9] rather than the Digits component: Digits means Unicode numerics in Rust but
    // ASCII digits in JavaScript, and the two runtimes must agree.
    { type: "Split", pattern: { Regex: "[0-9]" }, behavior: "Isolated", invert: false },
    { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  ],
};

/** Options of {@linkcode fitCompactTokenizer}. */
export interface CompactOptions {
  /** Most tokens, specials included (default and maximum 4096). */
  maxVocab?: number;
}

/** Every option of {@linkcode CompactOptions}. */
const COMPACT_OPTIONS: OptionNames<CompactOptions> = { maxVocab: true };

const tokenizerError = (message: string) => new TokenizerError(message);

/**
 * Build the compact tokenizer from a finished {@linkcode BpeFitter}.
 *
 * @throws {TokenizerError} for an option {@linkcode CompactOptions} does not have, or a
 * `maxVocab` out of range.
 */
export function compactTokenizerFromFitter(
  fitter: BpeFitter,
  opts: CompactOptions = {},
): Tokenizer {
  refuseUnknownOptions("compactTokenizerFromFitter", opts, COMPACT_OPTIONS, tokenizerError);
  const maxVocab = opts.maxVocab ?? 4096;
  if (!Number.isInteger(maxVocab) || maxVocab < 260 || maxVocab > 4096) {
    throw new TokenizerError(`maxVocab ${maxVocab}: must be an integer from 260 to 4096`);
  }
  // 4 specials follow the base vocabulary: EOS, BOT, EOT, LAT.
  const fitOpts: BpeFitOptions = { maxTokens: maxVocab - 4 };
  const { tokens: vocab, merges } = fitter.fit(fitOpts);
  const eos = vocab.length;
  const obj = byteLevelBpe({
    vocab: [...vocab, "<|endoftext|>"],
    merges,
    addedTokens: [
      { id: eos, content: "<|endoftext|>" },
      { id: eos + 1, content: LOTUS_TOKENS.bot },
      { id: eos + 2, content: LOTUS_TOKENS.eot },
      { id: eos + 3, content: LOTUS_TOKENS.lat },
    ],
    preTokenizer: COMPACT_PRE_TOKENIZER,
  });
  return fromParsed("compact", JSON.stringify(obj), obj, "compact tokenizer");
}

/**
 * Fit a compact byte-level BPE (at most 4,096 tokens with the specials; every ASCII digit a
 * token of its own) to `texts`. Deterministic: the same multiset of texts gives the same
 * tokenizer, whatever their order. For large corpora, stream into a {@linkcode BpeFitter}
 * and call {@linkcode compactTokenizerFromFitter}.
 *
 * @throws {TokenizerError} for an option {@linkcode CompactOptions} does not have, or a
 * `maxVocab` out of range.
 *
 * @example
 * ```ts
 * import { fitCompactTokenizer } from "./tokenizer.ts";
 * const tok = fitCompactTokenizer(["Tom has 12 apples.\n", "<<12*3=36>>\n"]);
 * console.assert(tok.encode("123").length === 3);
 * ```
 */
export function fitCompactTokenizer(texts: Iterable<string>, opts: CompactOptions = {}): Tokenizer {
  // Refused before the texts are read.
  refuseUnknownOptions("fitCompactTokenizer", opts, COMPACT_OPTIONS, tokenizerError);
  const fitter = new BpeFitter();
  for (const t of texts) fitter.add(t);
  return compactTokenizerFromFitter(fitter, opts);
}

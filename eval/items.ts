/**
 * Evaluation items: a question, its gold answer and (where the source has one) its gold
 * chain of thought in both step forms, read from any file `deno task eval --data` accepts.
 *
 * | format       | file                                                          | gold steps |
 * | ------------ | ------------------------------------------------------------- | ---------- |
 * | `gsm8k` ...  | every pipeline format (gsm8k, parquet, icot, coconut, nl, csv) | yes        |
 * | `gsm-hard`   | JSON lines `{input, code, target}` (GSM-Hard)                  | no         |
 * | `svamp`      | a JSON array `{Body, Question, Equation, Answer}`, or JSON lines `{input, target}` | no |
 * | `multiarith` | JSON lines `{input, target}` (MultiArith, SVAMP's JSONL copy)  | no         |
 * | `dataset`    | a dataset directory from build-dataset (its `<split>.records.jsonl`) | yes  |
 *
 * Ids are unique: a SVAMP array whose `ID` repeats (or a Coconut `idx`) is an input error at
 * the repeat, naming the element that has it first.
 *
 * Gold answers lose a trailing ".0", as the reference's out-of-distribution loader does, so
 * "51.0" and 51 both read "51". Pipeline formats go through the pipeline's own readers and
 * segmentation, so a GSM8K file yields the same steps here as in a built dataset.
 *
 * @module
 */
import { z } from "zod";
import { ON_ERROR, readProblems } from "../pipeline/read.ts";
import { segment } from "../pipeline/segment.ts";
import { type Format, FORMATS } from "../pipeline/read/detect.ts";
import { detectFormat, isTablePath, refuseNotText } from "../pipeline/read/detect.ts";
import { readLines, readLinesOrErrors } from "../pipeline/read/lines.ts";
import { readJsonArray } from "../pipeline/read/json_array.ts";
import {
  basename,
  checkRecord,
  IdRegister,
  makeProblem,
  type RecordAt,
} from "../pipeline/read/record.ts";
import { FormatError, InputError, PIPELINE_FORMATS_TEXT } from "../pipeline/read/input_error.ts";
import { openInput } from "../pipeline/read/open.ts";
import { svampQuestion } from "../pipeline/read/eval_questions.ts";
import { gsm8kProblem, NlRecord, readJsonl } from "../pipeline/read/jsonl.ts";
import { DEFAULT_MAX_FIELD_BYTES, fieldSizeError, lineLimit } from "../pipeline/limits.ts";
import { readManifest } from "../pipeline/manifest.ts";
import { DatasetError, readSplitShards, VERIFY_MODES, type VerifyMode } from "../pipeline/shard.ts";
import { rebuildCommand } from "../pipeline/rebuild_command.ts";
import type { Problem, SourceRef } from "../pipeline/types.ts";
import { isDirectory } from "../base/exists.ts";
import { checkWhole } from "../base/whole.ts";
import { nearestName } from "../base/suggest.ts";
import {
  type OptionNames,
  refuseMistyped,
  refuseUnknownOptions,
  refuseUnlisted,
} from "../base/options.ts";

/** One question to answer, with what scoring and the readout need. */
export interface EvalItem {
  /** Stable id: `<file basename>:<line>` unless the data carries one. */
  id: string;
  /** Where the item came from. */
  source: SourceRef;
  /** The question text. */
  question: string;
  /** The gold answer as text, trailing ".0" removed. */
  answer: string;
  /** Gold math steps (`<<expr=value>>`), or null when the source has no chain of thought. */
  math: string[] | null;
  /** Gold natural-language steps, or null when the source has no chain of thought. */
  nl: string[] | null;
}

/** Every format `deno task eval --format` takes. */
export type EvalFormat = Format | "gsm-hard" | "svamp" | "multiarith" | "dataset";

/** The names of {@linkcode EvalFormat}, for option parsing. */
export const EVAL_FORMATS: readonly EvalFormat[] = [
  ...FORMATS,
  "gsm-hard",
  "svamp",
  "multiarith",
  "dataset",
];

/** Options of {@linkcode readEvalItems}. */
export interface EvalReadOptions {
  /** The format; `"auto"` (the default) detects it with {@linkcode detectEvalFormat}. */
  format?: EvalFormat | "auto";
  /**
   * The split of a dataset directory (default `test`, else `valid`); refused for a file of
   * another format.
   */
  split?: string;
  /** Read at most this many items: a whole number, 0 or more (default: all). */
  limit?: number;
  /** Malformed records: throw (the default) or skip. */
  onError?: "throw" | "skip";
  /** Called with each skipped record's error. */
  onSkip?: (e: InputError) => void;
  /**
   * How much of a dataset directory to check against its manifest before reading it:
   * `basic` (the default) or `full` (also every file's sha256); docs/dataset-format.md.
   */
  verify?: VerifyMode;
}

/**
 * The gold answer as the reference compares it: trimmed, with a trailing ".0" removed.
 *
 * @example
 * ```ts
 * import { cleanGold } from "./items.ts";
 * console.assert(cleanGold(51.0) === "51" && cleanGold("-9867630.0") === "-9867630");
 * console.assert(cleanGold("2.05") === "2.05");
 * ```
 */
export function cleanGold(answer: string | number): string {
  return String(answer).trim().replace(/\.0$/, "");
}

const target = z.union([z.number(), z.string().refine((s) => s.trim() !== "", "an empty string")]);
const text = z.string().refine((s) => s.trim() !== "", { message: "an empty string" });

/** A GSM-Hard record; `code` (the PAL program) is read but not used. */
const GsmHardRecord = z.object({ input: text, code: z.string().optional(), target });
/** A MultiArith (or SVAMP JSONL) record. */
const InputTargetRecord = z.object({ input: text, target });
/** An element of SVAMP's JSON array. */
const SvampRecord = z.object({
  ID: z.union([z.string(), z.number()]).optional(),
  Body: z.string(),
  Question: text,
  Equation: z.string().optional(),
  Answer: target,
});

const INPUT_TARGET_EXPECT = {
  input: "a non-empty string (the question)",
  target: "a number or a non-empty string (the answer)",
};
const SVAMP_EXPECT = {
  ID: "a string or a number",
  Body: "a string",
  Question: "a non-empty string",
  Equation: "a string",
  Answer: "a number or a non-empty string",
};

function itemOf(at: RecordAt, question: string, answer: string | number, id?: string): EvalItem {
  const p = makeProblem(at, {
    id: id === undefined ? undefined : `${basename(at.file)}:${id}`,
    question,
    rationale: null,
    mathSteps: null,
    answer: "",
  });
  return {
    id: p.id,
    source: p.source,
    question: p.question,
    answer: cleanGold(answer),
    math: null,
    nl: null,
  };
}

function readInputTarget(path: string, withCode: boolean): AsyncGenerator<EvalItem | InputError> {
  const schema = withCode ? GsmHardRecord : InputTargetRecord;
  const expect = withCode
    ? { ...INPUT_TARGET_EXPECT, code: "a string (the PAL program)" }
    : INPUT_TARGET_EXPECT;
  return readJsonl(path, (raw, at) => {
    const r = checkRecord(schema, raw, expect, at);
    return r instanceof InputError ? r : itemOf(at, r.input, r.target);
  });
}

/** What an evaluation's ids are for, in the message about a repeated one. */
const EVAL_IDS_WHY = "predictions.csv and readout.csv name items by id";

async function* readSvampArray(path: string): AsyncGenerator<EvalItem | InputError> {
  const data = await readJsonArray(path, "a JSON array of {Body, Question, Equation, Answer}");
  const ids = new IdRegister();
  for (let i = 0; i < data.length; i++) {
    const at = { file: path, line: i + 1, element: true };
    const r = checkRecord(SvampRecord, data[i], SVAMP_EXPECT, at);
    if (r instanceof InputError) {
      yield r;
      continue;
    }
    // SVAMP's Body often ends without a full stop ("... on each pack"). Joining with ". "
    // where it lacks one gives exactly the questions of the PAL JSONL copy (checked on all
    // 1,000), so both files evaluate the same text.
    const q = svampQuestion(r.Body, r.Question);
    const item = itemOf(at, q, r.Answer, r.ID === undefined ? undefined : String(r.ID));
    yield ids.check(item.id, at, "ID", "element", EVAL_IDS_WHY) ?? item;
  }
}

async function* readSvamp(path: string): AsyncGenerator<EvalItem | InputError> {
  if ((await firstChar(path)) === "[") yield* readSvampArray(path);
  else yield* readInputTarget(path, false);
}

async function* readPipeline(path: string, format: Format): AsyncGenerator<EvalItem | InputError> {
  if (format === "gsm8k") {
    yield* readGsm8k(path);
    return;
  }
  // The pipeline readers throw bad records unless told to skip; pass them through instead so
  // that the caller's policy applies.
  const errors: InputError[] = [];
  for await (
    const p of readProblems(path, { format, onError: "skip", onSkip: (e) => errors.push(e) })
  ) {
    while (errors.length) yield errors.shift()!;
    yield problemItem(p);
  }
  while (errors.length) yield errors.shift()!;
}

/** The item of a problem read by a pipeline reader, with its gold steps in both forms. */
function problemItem(p: Problem): EvalItem {
  const s = segment(p);
  const hasCot = p.rationale !== null || p.mathSteps !== null;
  return {
    id: p.id,
    source: p.source,
    question: p.question,
    answer: cleanGold(p.answer),
    math: hasCot ? s.math.map((m) => m.text) : null,
    nl: hasCot ? s.nl : null,
  };
}

/**
 * A GSM8K JSON-lines record whose answer is the bare answer (`"5"` or `5`, no `####`): a
 * question to evaluate without gold steps, which a build cannot use but evaluation can.
 */
const BareAnswerRecord = z.object({
  question: text,
  answer: z.union([z.number(), z.string().refine((s) => s.trim() !== "" && !s.includes("####"))]),
});

/**
 * GSM8K JSON lines as the pipeline reads them (the same checks and limits), and records whose
 * answer is only the answer ({@linkcode BareAnswerRecord}), with no gold steps; not a record
 * with a `cot` as well, which is `nl`'s (the error says to pass `--format nl`).
 */
function readGsm8k(path: string): AsyncGenerator<EvalItem | InputError> {
  return readJsonl(path, (raw, at) => {
    let p = gsm8kProblem(raw, at);
    if (p instanceof InputError) {
      const bare = BareAnswerRecord.safeParse(raw);
      // A {question, cot, answer} record is --format nl's: read here, its chain of thought
      // would be dropped and the item scored without gold steps. The error says so.
      if (!bare.success || NlRecord.safeParse(raw).success) return p;
      p = makeProblem(at, {
        question: bare.data.question,
        rationale: null,
        mathSteps: null,
        answer: String(bare.data.answer),
      });
    }
    return fieldSizeError(p, DEFAULT_MAX_FIELD_BYTES) ?? problemItem(p);
  }, lineLimit(path, DEFAULT_MAX_FIELD_BYTES));
}

/** A record of `<split>.records.jsonl` as far as evaluation reads it. */
const DatasetRecord = z.object({
  id: z.string(),
  source: z.object({ file: z.string(), line: z.number() }),
  question: z.string(),
  answer: z.string(),
  math: z.array(z.object({ text: z.string() })),
  nl: z.array(z.string()),
  validation: z.object({ status: z.string() }),
});

/** The split of a dataset directory that evaluation reads: `split`, else test, else valid. */
export async function datasetSplit(dir: string, split?: string): Promise<string> {
  const m = await readManifest(dir);
  const names = Object.keys(m.splits);
  if (split !== undefined) {
    if (!m.splits[split]) {
      const near = nearestName(split, names);
      throw new InputError({
        file: dir,
        line: 0,
        problem: `has no split "${split}" (it has ${names.join(", ")})`,
        hint: near === undefined
          ? "pass one of those with --split"
          : `did you mean "${near}"? Pass one of those with --split`,
      });
    }
    return split;
  }
  for (const s of ["test", "valid"]) if (m.splits[s]) return s;
  throw new InputError({
    file: dir,
    line: 0,
    problem: `has neither a test nor a valid split (it has ${names.join(", ")})`,
    hint: "pass one of those with --split",
  });
}

async function* readDataset(
  dir: string,
  split: string | undefined,
  verify: VerifyMode | undefined,
): AsyncGenerator<EvalItem | InputError> {
  const name = await datasetSplit(dir, split);
  const m = await readManifest(dir);
  const info = m.splits[name];
  // The items come from the records file; the shards are what training saw, checked so that
  // a directory that does not match its manifest is refused here as it is by training.
  await readSplitShards(dir, m, name, { verify });
  const path = `${dir}/${info.records}`;
  // The command that builds the split again: run bare, build-dataset --out would build the
  // default data over train and valid.
  const again = `rebuild split ${name} with ${rebuildCommand(dir, name, info)}`;
  const rebuild = `; the records file does not match the manifest: ${again}`;
  let lines = 0, kept = 0;
  const items = readJsonl(path, (raw, at): EvalItem | InputError | null => {
    // Line n holds record n - 1.
    const index = (raw as { index?: unknown } | null)?.index;
    if (index !== at.line - 1) {
      throw new DatasetError(
        `${path}:${at.line}: index ${index}, expected ${at.line - 1}${rebuild}`,
      );
    }
    lines++;
    const r = checkRecord(DatasetRecord, raw, {
      id: "a string",
      source: "{file, line}",
      question: "a string",
      answer: "a string",
      math: "an array of {text}",
      nl: "an array of strings",
      validation: "{status}",
    }, at);
    if (r instanceof InputError) return r;
    // Dropped records are not in the split's tensors; evaluate what training saw.
    if (r.validation.status === "dropped") return null;
    kept++;
    return {
      id: r.id,
      source: r.source,
      question: r.question.trim(),
      answer: cleanGold(r.answer),
      math: r.math.map((s) => s.text),
      nl: r.nl,
    };
  });
  for await (const it of items) {
    // A build writes its records whole: one that does not read is damage, which skipping
    // cannot mend (the counts would no longer match the manifest's).
    if (it instanceof InputError) {
      throw new DatasetError(
        `${it.file}${it.line > 0 ? `:${it.line}` : ""}: ${it.problem}; the records file is ` +
          `damaged (a build writes it whole): ${again}`,
      );
    }
    yield it;
  }
  if (lines !== info.counts.read || kept !== info.counts.kept) {
    throw new DatasetError(
      `${path}: ${lines} records (${kept} kept), the manifest counts ${info.counts.read} ` +
        `(${info.counts.kept} kept)${rebuild}`,
    );
  }
}

async function firstChar(path: string): Promise<string> {
  for await (const l of readLines(path)) {
    const t = l.text.trim();
    if (t !== "") return t[0];
  }
  return "";
}

/**
 * Tells an evaluation file's format: a directory is a dataset; a JSON array whose first
 * element has `Body` is SVAMP; a JSON line with `input` and `target` is GSM-Hard (with `code`)
 * or MultiArith; anything else goes to the pipeline's {@linkcode detectFormat}.
 *
 * @example
 * ```ts ignore
 * import { detectEvalFormat } from "./items.ts";
 * console.log(await detectEvalFormat("data/gsm_hard/gsmhardv2.jsonl")); // "gsm-hard"
 * ```
 */
export async function detectEvalFormat(path: string): Promise<EvalFormat> {
  try {
    return await detectEvalFormatOrThrow(path);
  } catch (e) {
    // The pipeline's detector lists the pipeline's formats; evaluation reads more.
    if (e instanceof FormatError && e.unsupported) {
      throw new FormatError(e.file, e.why, { unsupported: true, supported: EVAL_FORMATS_TEXT });
    }
    if (e instanceof FormatError && !e.empty) {
      throw new FormatError(e.file, e.why, {
        formats: EVAL_FORMATS.filter((f) => f !== "dataset").join("|"),
      });
    }
    throw e;
  }
}

/** Evaluation's formats, described for a file in none of them. */
const EVAL_FORMATS_TEXT = `${PIPELINE_FORMATS_TEXT}, gsm-hard (JSON lines {input, code, ` +
  "target}), multiarith (JSON lines {input, target}), svamp (a JSON array of {Body, Question, " +
  "Equation, Answer}) and a dataset directory";

/** How many non-blank lines the JSON-lines sniff reads when the first ones do not parse. */
const SNIFF_LINES = 21;

/** The object a line holds, or null when it is not a JSON object. */
function jsonObject(text: string): Record<string, unknown> | null {
  try {
    const o = JSON.parse(text);
    return o !== null && typeof o === "object" && !Array.isArray(o) ? o : null;
  } catch {
    return null;
  }
}

async function detectEvalFormatOrThrow(path: string): Promise<EvalFormat> {
  if (await isDirectory(path)) return "dataset";
  if (/\.parquet$/i.test(path) || isTablePath(path)) return detectFormat(path);
  // The first record that parses decides, as in the pipeline's detector: a first line that is
  // not JSON (a trailing comma) or not UTF-8 is passed over, and the reader reports it as it
  // does any bad record, so --on-error skip can go on past it.
  let first: string | null = null, seen = 0;
  for await (const l of readLinesOrErrors(path)) {
    if (l instanceof InputError) continue;
    const t = l.text.trim();
    if (t === "") continue;
    first ??= t;
    if (!first.startsWith("{") || ++seen > SNIFF_LINES) break;
    const o = jsonObject(t);
    if (o === null) continue;
    if ("input" in o && "target" in o) return "code" in o ? "gsm-hard" : "multiarith";
    break;
  }
  if (first?.startsWith("[")) {
    // Only the head is needed: SVAMP writes its keys on the lines after the bracket.
    const head = (await readHead(path, 4096)).replace(/\s+/g, "");
    if (/^\[\{"(ID|Body|Question)"/.test(head) || head.includes('"Body":')) return "svamp";
  }
  return detectFormat(path);
}

async function readHead(path: string, n: number): Promise<string> {
  const f = await openInput(path);
  try {
    const buf = new Uint8Array(n);
    const got = await f.read(buf);
    return new TextDecoder().decode(buf.subarray(0, got ?? 0));
  } finally {
    f.close();
  }
}

/** Every option of {@linkcode EvalReadOptions}. */
const EVAL_READ_OPTIONS: OptionNames<EvalReadOptions> = {
  format: true,
  split: true,
  limit: true,
  onError: true,
  onSkip: true,
  verify: true,
};

/**
 * Streams the evaluation items of a file or dataset directory, in order.
 *
 * @throws {RangeError} for an option {@linkcode EvalReadOptions} does not have, a `limit`
 * that is not a whole number of at least 0, a `verify` that is not one of
 * {@linkcode VerifyMode}'s, or an `onError` that is neither `"throw"` nor `"skip"`.
 *
 * @example
 * ```ts ignore
 * import { readEvalItems } from "./items.ts";
 * for await (const it of readEvalItems("data/svamp/SVAMP.json", { limit: 3 })) {
 *   console.log(it.question, it.answer);
 * }
 * ```
 */
export function readEvalItems(
  path: string,
  opts: EvalReadOptions = {},
): AsyncGenerator<EvalItem> {
  return evalItems("readEvalItems", path, opts);
}

/** {@linkcode readEvalItems}, whose option errors start with `fn`, the function called. */
async function* evalItems(
  fn: string,
  path: string,
  opts: EvalReadOptions,
): AsyncGenerator<EvalItem> {
  refuseUnknownOptions(fn, opts, EVAL_READ_OPTIONS);
  refuseMistyped(fn, opts, { onSkip: "function", split: "string" });
  checkWhole(`${fn}: limit`, opts.limit, 0);
  refuseUnlisted(fn, "onError", opts.onError, ON_ERROR);
  refuseUnlisted(fn, "verify", opts.verify, VERIFY_MODES);
  const format = opts.format === undefined || opts.format === "auto"
    ? await detectEvalFormat(path)
    : opts.format;
  if (opts.split !== undefined && format !== "dataset") {
    throw new RangeError(
      `${fn}: split ${JSON.stringify(opts.split)}: ${path} is read as a ${format} ` +
        `file, and a split applies only to a dataset directory; leave out split, or give ` +
        `the dataset directory`,
    );
  }
  if (format === "gsm-hard" || format === "multiarith" || format === "svamp") {
    await refuseNotText(
      path,
      format,
      `${format} is read from JSON ${format === "svamp" ? "(an array, or lines)" : "lines"}: ` +
        `save the table as JSON lines (pandas: df.to_json(path, orient="records", ` +
        `lines=True)) and give that file`,
    );
  } else if (format === "gsm8k") {
    // Read here rather than by readProblems, which makes the same check for the others.
    await refuseNotText(path, format, "leave out --format, or pass --format parquet");
  }
  let source: AsyncGenerator<EvalItem | InputError>;
  switch (format) {
    case "dataset":
      source = readDataset(path, opts.split, opts.verify);
      break;
    case "gsm-hard":
      source = readInputTarget(path, true);
      break;
    case "multiarith":
      source = readInputTarget(path, false);
      break;
    case "svamp":
      source = readSvamp(path);
      break;
    default:
      if (!FORMATS.includes(format)) {
        throw new InputError({
          file: path,
          line: 0,
          field: "--format",
          problem: `unknown format "${format}"`,
          hint: `pass one of ${EVAL_FORMATS.join(", ")}`,
        });
      }
      source = readPipeline(path, format);
  }
  const limit = opts.limit ?? Infinity;
  let n = 0;
  for await (const item of source) {
    if (n >= limit) break;
    if (item instanceof InputError) {
      if (opts.onError !== "skip") throw item;
      opts.onSkip?.(item);
      continue;
    }
    n++;
    yield item;
  }
}

/**
 * All items of a file or dataset directory (see {@linkcode readEvalItems}).
 *
 * @throws {RangeError} as {@linkcode readEvalItems} does, its message starting
 * `loadEvalItems:`.
 *
 * @example
 * ```ts
 * import { loadEvalItems } from "./items.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * const rec = { question: "Ann has 2 pens and buys 3. How many?", answer: "2+3 = <<2+3=5>>5\n#### 5" };
 * await Deno.writeTextFile(path, JSON.stringify(rec) + "\n");
 * const [item] = await loadEvalItems(path); // GSM8K JSON lines, detected
 * console.assert(item.answer === "5" && item.math?.[0] === "<<2+3=5>>");
 * await Deno.remove(path);
 * ```
 */
export async function loadEvalItems(path: string, opts: EvalReadOptions = {}): Promise<EvalItem[]> {
  const out: EvalItem[] = [];
  for await (const it of evalItems("loadEvalItems", path, opts)) out.push(it);
  return out;
}

/**
 * Format detection: the extension first, then a sniff of the first record.
 *
 * @module
 */
import { readLinesOrErrors } from "./lines.ts";
import { FormatError, InputError } from "./input_error.ts";
import { openInput } from "./open.ts";
import { UTF8_FILE_HINT } from "./utf8.ts";

/** The input formats the readers know. */
export type Format = "gsm8k" | "parquet" | "icot" | "coconut" | "nl" | "csv";

/** Every format name, for option parsing. */
export const FORMATS: readonly Format[] = ["gsm8k", "parquet", "icot", "coconut", "nl", "csv"];

function extension(path: string): string {
  const base = path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
  const dot = base.lastIndexOf(".");
  return dot <= 0 ? "" : base.slice(dot + 1).toLowerCase();
}

async function startsWithParquetMagic(path: string): Promise<boolean> {
  const file = await openInput(path);
  try {
    const head = new Uint8Array(4);
    const n = await file.read(head);
    return n === 4 && new TextDecoder().decode(head) === "PAR1";
  } finally {
    file.close();
  }
}

/**
 * The first non-blank line of a text file, or null when it has none. Reads only as far as that
 * line. A line that is not UTF-8 is passed over (the reader reports it, as it does any bad
 * record), unless no line is readable: then that line's error is thrown, since nothing tells
 * the format and skipping would leave no record.
 */
async function firstLine(path: string): Promise<{ line: number; text: string } | null> {
  let unreadable: InputError | null = null;
  for await (const l of readLinesOrErrors(path)) {
    if (l instanceof InputError) unreadable ??= l;
    else if (l.text.trim() !== "") return l;
  }
  if (unreadable) {
    throw new InputError({
      file: path,
      line: unreadable.line,
      offset: unreadable.offset,
      reason: unreadable.reason,
      problem: `${unreadable.problem}, and no line of the file is readable`,
      hint: UTF8_FILE_HINT,
    });
  }
  return null;
}

function formatOfObject(path: string, text: string): Format {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    throw new FormatError(path, "the first line starts like JSON but does not parse as JSON");
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new FormatError(path, "the first line is JSON but not an object");
  }
  const keys = Object.keys(obj);
  if (keys.includes("question") && keys.includes("cot") && keys.includes("answer")) return "nl";
  if (keys.includes("question") && keys.includes("answer")) return "gsm8k";
  throw new FormatError(
    path,
    `the first record has keys ${keys.join(", ")}; expected question and answer (and cot)`,
  );
}

/**
 * Tells a file's format. `.parquet` and `.csv` go by extension; otherwise the first non-blank
 * line decides: `[` opens a Coconut JSON array, `{` a JSON-lines record whose keys say GSM8K
 * (`question`, `answer`) or NL (`question`, `cot`, `answer`), and a line with `||` is iCoT.
 * Parquet is also recognized by its `PAR1` magic. Anything else throws a
 * {@linkcode FormatError} asking for `--format`.
 *
 * @example
 * ```ts ignore
 * import { detectFormat } from "./detect.ts";
 * console.log(await detectFormat("data/gsm8k/train.jsonl")); // "gsm8k"
 * ```
 */
export async function detectFormat(path: string): Promise<Format> {
  const ext = extension(path);
  if (ext === "parquet") return "parquet";
  if (ext === "csv") return "csv";
  if (await startsWithParquetMagic(path)) return "parquet";
  const first = await firstLine(path);
  if (first === null) throw new FormatError(path, "the file is empty");
  const text = first.text.trimStart();
  if (text.startsWith("[")) {
    if (ext === "jsonl") throw new FormatError(path, "a .jsonl file that opens with '['");
    return "coconut";
  }
  if (text.startsWith("{")) return formatOfObject(path, text);
  if (text.includes("||")) return "icot";
  throw new FormatError(
    path,
    ext === ""
      ? "no extension, and the first line is not JSON or iCoT"
      : `a .${ext} file whose first line is not JSON or iCoT ("||")`,
  );
}

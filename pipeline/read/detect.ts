/**
 * Format detection: the extension first, then a sniff of the first record.
 *
 * @module
 */
import { bareCrNote, readLinesOrErrors } from "./lines.ts";
import { FormatError, InputError } from "./input_error.ts";
import { openInput } from "./open.ts";
import { UTF8_FILE_HINT } from "./utf8.ts";
import { readFull } from "../../base/read_full.ts";
import { jsonErrorText } from "../../base/json.ts";

/** The input formats the readers know. */
export type Format = "gsm8k" | "parquet" | "icot" | "coconut" | "nl" | "csv";

/** Every format name, for option parsing. */
export const FORMATS: readonly Format[] = ["gsm8k", "parquet", "icot", "coconut", "nl", "csv"];

function extension(path: string): string {
  const base = path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
  const dot = base.lastIndexOf(".");
  return dot <= 0 ? "" : base.slice(dot + 1).toLowerCase();
}

/**
 * The extensions read as the `csv` format: `.csv`, and `.tsv` and `.tab` for tab-separated
 * values (the CSV reader tells the delimiter, pipeline/read/csv.ts).
 */
export const TABLE_EXTENSIONS: readonly string[] = ["csv", "tsv", "tab"];

/** Whether `path`'s extension is one of {@linkcode TABLE_EXTENSIONS}, in any case. */
export function isTablePath(path: string): boolean {
  return TABLE_EXTENSIONS.includes(extension(path));
}

/** Up to `n` bytes from the start of the file. */
async function head(path: string, n: number): Promise<Uint8Array> {
  const file = await openInput(path);
  try {
    const buf = new Uint8Array(n);
    return buf.subarray(0, await readFull(file, buf));
  } finally {
    file.close();
  }
}

function isParquetMagic(b: Uint8Array): boolean {
  return b.length >= 4 && b[0] === 0x50 && b[1] === 0x41 && b[2] === 0x52 && b[3] === 0x31;
}

/** The error for a file that is UTF-16 (or UTF-32) text: the readers take only UTF-8. */
function notUtf8(path: string, line: number, offset: number | undefined, what: string): InputError {
  return new InputError({
    file: path,
    line,
    ...(offset === undefined ? {} : { offset }),
    reason: "invalid_utf8",
    problem: `invalid UTF-8: ${what}, so the file is UTF-16 (or UTF-32) text`,
    hint: "save the file as UTF-8 (iconv -f UTF-16 -t utf-8)",
  });
}

/**
 * The first non-blank line of a text file, or null when it has none. Reads only as far as that
 * line. A line that is not UTF-8 is passed over (the reader reports it, as it does any bad
 * record), unless no line is readable: then that line's error is thrown, since nothing tells
 * the format and skipping would leave no record.
 */
export async function firstLine(
  path: string,
): Promise<{ line: number; text: string } | null> {
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

/** How many more non-blank lines detection reads when the first `{` line is not JSON. */
const MORE_LINES = 20;

/** The keys of a JSON object, or the error that parsing `text` gave. */
function objectKeys(text: string): string[] | Error {
  try {
    const obj = JSON.parse(text);
    return obj !== null && typeof obj === "object" && !Array.isArray(obj)
      ? Object.keys(obj)
      : new Error("not an object");
  } catch (e) {
    return new Error(jsonErrorText(e));
  }
}

function jsonLinesFormat(path: string, keys: string[], which: string): Format {
  if (keys.includes("question") && keys.includes("cot") && keys.includes("answer")) return "nl";
  if (keys.includes("question") && keys.includes("answer")) return "gsm8k";
  throw new FormatError(
    path,
    `${which} has keys ${keys.join(", ") || "(none)"}; JSON lines need question and answer ` +
      "(and cot)",
    { unsupported: true },
  );
}

/**
 * The format of JSON lines from the first line that starts with `{`. When it does not parse
 * (a trailing comma, say), the next lines decide and the reader then reports the bad one as
 * it does any bad record; when none parses, the first one's JSON error is thrown at its line.
 */
async function formatOfObject(
  path: string,
  first: { line: number; text: string },
): Promise<Format> {
  const keys = objectKeys(first.text);
  if (Array.isArray(keys)) return jsonLinesFormat(path, keys, "the first record");
  let seen = 0;
  for await (const l of readLinesOrErrors(path)) {
    if (l instanceof InputError || l.line <= first.line || l.text.trim() === "") continue;
    if (++seen > MORE_LINES) break;
    const next = objectKeys(l.text.trim());
    if (Array.isArray(next)) return jsonLinesFormat(path, next, `the record at line ${l.line}`);
  }
  throw new InputError({
    file: path,
    line: first.line,
    problem: `invalid JSON (${keys.message})${bareCrNote(first.text)}, and no record after it ` +
      "parses either, so the format cannot be told",
    hint: "fix that line (the first record tells the format)",
  });
}

/**
 * The keys of the first element of the JSON array that `text` (the head of a file) opens, or
 * null when the head does not hold all of it; an Error when that element is not an object.
 */
function firstElementKeys(text: string): string[] | null | Error {
  const open = text.indexOf("[");
  let i = open + 1;
  while (i < text.length && /\s/.test(text[i])) i++;
  if (i >= text.length) return null;
  if (text[i] === "]") return [];
  if (text[i] !== "{") return new Error("its first element is not an object");
  let depth = 0, inString = false;
  for (let j = i; j < text.length; j++) {
    const c = text[j];
    if (inString) {
      if (c === "\\") j++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      if (--depth === 0) {
        const keys = objectKeys(text.slice(i, j + 1));
        return Array.isArray(keys) ? keys : null; // not JSON: the reader says where
      }
    }
  }
  return null;
}

/** The bytes of a file's head that detection reads to see a JSON array's first element. */
const ARRAY_HEAD = 1 << 16;

/**
 * Coconut, when the array's first element has Coconut's fields (or cannot be seen in the
 * file's head: the reader then says what is wrong); a FormatError for an array of other
 * records (SVAMP's `{ID, Body, Question, Equation, Answer}`), which no reader takes.
 */
async function formatOfArray(path: string): Promise<Format> {
  const text = new TextDecoder().decode(await head(path, ARRAY_HEAD));
  const keys = firstElementKeys(text);
  if (keys instanceof Error) {
    throw new FormatError(path, `a JSON array, but ${keys.message}`, { unsupported: true });
  }
  if (keys === null || keys.length === 0) return "coconut";
  if (["question", "steps", "answer"].every((k) => keys.includes(k))) return "coconut";
  throw new FormatError(
    path,
    `a JSON array whose first element has keys ${keys.join(", ")}; Coconut's elements have ` +
      "question, steps and answer",
    { unsupported: true },
  );
}

/** Compressed files and archives, by their first bytes: what each is, and what opens it. */
const PACKED: readonly { magic: readonly number[]; what: string; open: string }[] = [
  { magic: [0x1f, 0x8b], what: "a gzip-compressed file", open: "gunzip -k FILE" },
  { magic: [0x50, 0x4b, 0x03, 0x04], what: "a zip archive", open: "unzip FILE" },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], what: "a zstd-compressed file", open: "zstd -d FILE" },
  { magic: [0x42, 0x5a, 0x68], what: "a bzip2-compressed file", open: "bunzip2 -k FILE" },
  {
    magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
    what: "an xz-compressed file",
    open: "unxz -k FILE",
  },
];

/** The bytes that tell a compressed file or an archive, and Parquet's. */
const MAGIC_BYTES = 6;

const hex = (b: readonly number[]) =>
  b.map((x) => `0x${x.toString(16).toUpperCase().padStart(2, "0")}`).join(" ");

/**
 * The error for a compressed file or an archive (gzip, zip, zstd, bzip2, xz), which the
 * readers would otherwise report as a first line of invalid UTF-8 with advice to re-encode it;
 * null for any other file.
 */
function packedError(path: string, b: Uint8Array): InputError | null {
  const p = PACKED.find((k) => k.magic.every((x, i) => b[i] === x));
  if (p === undefined) return null;
  return new InputError({
    file: path,
    line: 0,
    problem: `${p.what} (it starts with ${hex(p.magic)}), not text`,
    hint: `unpack it first (${p.open}) and give the file it holds`,
  });
}

/**
 * Refuses a file that a reader of text would report as invalid UTF-8 with advice to re-encode
 * it: a compressed file or an archive (gzip, zip, zstd, bzip2, xz; the hint says how to unpack
 * it), and a Parquet file (its `PAR1` magic), given with a `--format` of text (`hint` says what
 * to do). An {@linkcode InputError} about the whole file that says what it is.
 *
 * @example
 * ```ts ignore
 * import { refuseNotText } from "./detect.ts";
 * await refuseNotText("train.parquet", "gsm8k", "leave out --format"); // throws
 * ```
 */
export async function refuseNotText(path: string, format: string, hint: string): Promise<void> {
  const b = await head(path, MAGIC_BYTES);
  const packed = packedError(path, b);
  if (packed !== null) throw packed;
  if (!isParquetMagic(b)) return;
  throw new InputError({
    file: path,
    line: 0,
    problem: `a Parquet file (it starts with "PAR1"), and --format ${format} reads text`,
    hint,
  });
}

/**
 * Tells a file's format. `.parquet` and `.csv` go by extension (`.tsv` and `.tab`, tab-separated,
 * are `csv` too); otherwise the first non-blank line decides: `[` opens a Coconut JSON array, `{` a
 * JSON-lines record whose keys say GSM8K (`question`, `answer`) or NL (`question`, `cot`,
 * `answer`), and a line with `||` is iCoT. Parquet is also recognized by its `PAR1` magic. A
 * compressed file or an archive (gzip, zip, zstd, bzip2, xz) is an {@linkcode InputError} that says
 * to unpack it. A first `{` line that is not JSON (a trailing comma) is passed over for the next
 * ones, and the reader reports it; if none parses, its JSON error is thrown at its line. A UTF-16
 * file (its byte order mark, or NUL bytes between the characters of its first line) is an
 * `invalid_utf8` {@linkcode InputError} saying to convert it. A JSON array or JSON lines whose
 * records have none of the formats' fields (SVAMP's `{Body, Question, Equation, Answer}`) is an
 * unsupported {@linkcode FormatError} that lists the formats; anything else throws a
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
  const magic = await head(path, MAGIC_BYTES);
  const packed = packedError(path, magic);
  if (packed !== null) throw packed;
  if (TABLE_EXTENSIONS.includes(ext)) return "csv";
  if (isParquetMagic(magic)) return "parquet";
  if ((magic[0] === 0xff && magic[1] === 0xfe) || (magic[0] === 0xfe && magic[1] === 0xff)) {
    const bom = `0x${magic[0].toString(16).toUpperCase()} 0x${magic[1].toString(16).toUpperCase()}`;
    throw notUtf8(path, 1, 0, `the file starts with the UTF-16 byte order mark ${bom}`);
  }
  const first = await firstLine(path);
  if (first === null) {
    throw new FormatError(path, "the file is empty, or has blank lines only", { empty: true });
  }
  const nul = first.text.indexOf("\u0000");
  if (nul !== -1) {
    throw notUtf8(
      path,
      first.line,
      undefined,
      `line ${first.line} has NUL bytes between its characters (character ${nul})`,
    );
  }
  const text = first.text.trim();
  if (text.startsWith("[")) {
    if (ext === "jsonl") throw new FormatError(path, "a .jsonl file that opens with '['");
    return formatOfArray(path);
  }
  if (text.startsWith("{")) return formatOfObject(path, { line: first.line, text });
  if (text.includes("||")) return "icot";
  throw new FormatError(
    path,
    ext === ""
      ? "no extension, and the first line is not JSON or iCoT"
      : `a .${ext} file whose first line is not JSON or iCoT ("||")`,
  );
}

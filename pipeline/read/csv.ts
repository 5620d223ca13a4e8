/**
 * CSV reader (csv-parse, streaming; it stands in for `@std/csv`, which lives on JSR). The
 * header must name `question` and `answer`; `cot` (a chain of thought, prose or annotations)
 * and `steps` (a JSON array of strings, or `<<a>> <<b>>`) are optional. An `answer` holding
 * `####` is read as a GSM8K answer: its text before `####` is the rationale unless `cot` or
 * `steps` gives one. A record's `line` is the line where it starts, counted from the newline
 * bytes before it.
 *
 * Fields are separated by commas, or by tabs (tab-separated values): in a `.tsv` or `.tab`
 * file, and in any other whose first non-blank line (the header) holds a tab but no comma.
 * The delimiter is decided before parsing; quoting is the same for both.
 *
 * @module
 */
import { parse } from "csv-parse/stream";
import type { Problem } from "../types.ts";
import {
  classifySteps,
  excerpt,
  makeProblem,
  type RecordAt,
  splitCot,
  splitGsm8kAnswer,
} from "./record.ts";
import { FILE_HINT, InputError } from "./input_error.ts";
import { openInput } from "./open.ts";
import { firstLine } from "./detect.ts";
import { type BadByte, invalidUtf8Error, UTF8_FILE_HINT, Utf8Checker } from "./utf8.ts";
import { jsonErrorText } from "../../base/json.ts";

/** Column positions found in the header. */
interface Columns {
  names: string[];
  question: number;
  answer: number;
  cot: number;
  steps: number;
}

function headerColumns(path: string, header: string[]): Columns {
  const names = header.map((h) => h.trim());
  for (const need of ["question", "answer"]) {
    if (!names.includes(need)) {
      throw new InputError({
        file: path,
        line: 1,
        field: need,
        problem: `expected a column "${need}" in the header, found ${
          names.map((n) => JSON.stringify(n)).join(", ")
        }`,
        hint: FILE_HINT,
      });
    }
  }
  // A column read twice would leave the record's value to whichever came last or first.
  for (const used of ["question", "answer", "cot", "steps"]) {
    const at = names.flatMap((n, i) => (n === used ? [i + 1] : []));
    if (at.length > 1) {
      throw new InputError({
        file: path,
        line: 1,
        field: used,
        problem: `the header names the column "${used}" ${at.length} times (columns ` +
          `${at.join(", ")}); keep one`,
        hint: FILE_HINT,
      });
    }
  }
  return {
    names,
    question: names.indexOf("question"),
    answer: names.indexOf("answer"),
    cot: names.indexOf("cot"),
    steps: names.indexOf("steps"),
  };
}

function stepsCot(text: string, at: RecordAt): ReturnType<typeof splitCot> | InputError {
  if (!text.trimStart().startsWith("[")) return splitCot(text, "math");
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return new InputError({
      ...at,
      field: "steps",
      problem: `expected a JSON array of strings, got invalid JSON (${jsonErrorText(e)})`,
    });
  }
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
    return new InputError({
      ...at,
      field: "steps",
      problem: `expected a JSON array of strings, got ${excerpt(text)}`,
    });
  }
  return classifySteps(v);
}

/** Turns one CSV row into a Problem, or says why it cannot. */
export function csvProblem(row: string[], cols: Columns, at: RecordAt): Problem | InputError {
  if (row.length !== cols.names.length) {
    return new InputError({
      ...at,
      problem: `expected ${cols.names.length} fields as in the header, got ${row.length}`,
    });
  }
  const question = row[cols.question];
  if (question.trim() === "") {
    return new InputError({
      ...at,
      field: "question",
      problem: "expected a non-empty string, got an empty string",
    });
  }
  let answer = row[cols.answer];
  let fromAnswer: string | null = null;
  if (answer.includes("####")) {
    const split = splitGsm8kAnswer(answer);
    answer = split.answer;
    fromAnswer = split.rationale;
  }
  if (answer.trim() === "") {
    return new InputError({
      ...at,
      field: "answer",
      problem:
        'expected a non-empty answer (or a GSM8K answer ending in "#### <number>"), got nothing',
    });
  }
  const cot = cols.cot >= 0 ? row[cols.cot] : "";
  const steps = cols.steps >= 0 ? row[cols.steps] : "";
  let parts: ReturnType<typeof splitCot> | InputError;
  if (cot.trim() !== "") parts = splitCot(cot, "prose");
  else if (steps.trim() !== "") parts = stepsCot(steps, at);
  else if (fromAnswer !== null) parts = { rationale: fromAnswer, mathSteps: null };
  else parts = { rationale: null, mathSteps: [] };
  if (parts instanceof InputError) return parts;
  return makeProblem(at, { question, ...parts, answer });
}

/** The first bad byte before stream offset `end`, dropping every one before it. */
function badBefore(checker: Utf8Checker, end: number): BadByte | null {
  const first = checker.bad.length > 0 && checker.bad[0].offset < end ? checker.bad[0] : null;
  while (checker.bad.length > 0 && checker.bad[0].offset < end) checker.bad.shift();
  return first;
}

function utf8Error(path: string, b: BadByte, hint?: string): InputError {
  return invalidUtf8Error(
    { file: path, line: b.line, offset: b.offset, ...(hint ? { hint } : {}) },
    b.byte,
    b.column,
  );
}

/**
 * Counts the newlines of the bytes flowing through {@linkcode NewlineIndex.stream}, so that a
 * byte offset can be turned into a line number. csv-parse's own `info.lines` counts a `\r\n`
 * inside a quoted field as two lines, so records after one would get a line too far on.
 * Offsets must be asked in increasing order; only the newlines not yet passed are kept.
 */
class NewlineIndex {
  #ahead: number[] = []; // offsets of newlines not yet counted
  #head = 0;
  #counted = 0; // newlines before the last offset asked
  #offset = 0; // stream offset of the next chunk

  /** A TransformStream that passes the bytes on, noting where each newline is. */
  stream(): TransformStream<Uint8Array, Uint8Array> {
    return new TransformStream({
      transform: (chunk, ctl) => {
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) {
          this.#ahead.push(this.#offset + i);
        }
        this.#offset += chunk.length;
        ctl.enqueue(chunk);
      },
    });
  }

  /** How many newlines come before stream offset `offset`. */
  before(offset: number): number {
    while (this.#head < this.#ahead.length && this.#ahead[this.#head] < offset) {
      this.#head++;
      this.#counted++;
    }
    if (this.#head > 4096 && this.#head * 2 > this.#ahead.length) {
      this.#ahead = this.#ahead.slice(this.#head);
      this.#head = 0;
    }
    return this.#counted;
  }
}

/**
 * The field delimiter of a CSV file: a tab for a `.tsv` or `.tab` file, or for one whose
 * first non-blank line holds a tab and no comma; a comma otherwise (a file with no readable
 * line too: the reader then says what is wrong with it).
 */
export async function csvDelimiter(path: string): Promise<"," | "\t"> {
  if (/\.(tsv|tab)$/i.test(path)) return "\t";
  let first: { text: string } | null;
  try {
    first = await firstLine(path);
  } catch (e) {
    if (e instanceof InputError) return ",";
    throw e;
  }
  return first !== null && first.text.includes("\t") && !first.text.includes(",") ? "\t" : ",";
}

/**
 * Streams a CSV file, comma- or tab-separated ({@linkcode csvDelimiter}). A missing column,
 * CSV that cannot be tokenized (an unclosed quote) or a header that is not UTF-8 is a
 * file-level error and is thrown; a row with the wrong number of fields, an empty required
 * field or bytes that are not UTF-8 comes out as an InputError in place (a bad byte is named
 * by its own line and offset).
 */
export async function* readCsv(path: string): AsyncGenerator<Problem | InputError> {
  const delimiter = await csvDelimiter(path);
  const file = await openInput(path);
  // csv-parse decodes the bytes itself, replacing what is not UTF-8; the checker sees every
  // byte first and records where the bad ones are, so that their records are refused.
  const checker = new Utf8Checker();
  const newlines = new NewlineIndex();
  // Where csv-parse itself is: just past the last record it parsed, and the blank lines it had
  // skipped by then. It parses ahead of the loop below (records wait in the stream's queue),
  // and an error it raises names no record start that is right after a \r\n inside quotes.
  let parsedEnd = 0;
  let parsedEmpty = 0;
  const rows = file.readable.pipeThrough(checker.stream()).pipeThrough(newlines.stream())
    .pipeThrough(
      parse({
        info: true,
        bom: true,
        delimiter,
        relax_column_count: true,
        skip_empty_lines: true,
        on_record: (rec, info) => {
          parsedEnd = info.bytes;
          parsedEmpty = info.empty_lines;
          return rec;
        },
      }),
    );
  let cols: Columns | null = null;
  let prevEnd = 0; // byte offset just past the previous record and its line break
  let prevEmpty = 0;
  // The line where the record after prevEnd starts: the newlines before it, plus the blank
  // lines csv-parse skipped since (`empty` counts them so far).
  const startLine = (empty: number) => newlines.before(prevEnd) + 1 + (empty - prevEmpty);
  try {
    for await (const { record, info } of rows) {
      const start = startLine(info.empty_lines);
      prevEnd = info.bytes;
      prevEmpty = info.empty_lines;
      // info.bytes is the offset just past the record: its bytes end there.
      const bad = badBefore(checker, info.bytes);
      if (cols === null) {
        if (bad) throw utf8Error(path, bad, UTF8_FILE_HINT);
        cols = headerColumns(path, record as string[]);
        continue;
      }
      if (bad) yield utf8Error(path, bad);
      else yield csvProblem(record as string[], cols, { file: path, line: start });
    }
  } catch (e) {
    if (e instanceof InputError) throw e;
    // csv-parse's own line count (in its message too) is off after a \r\n inside quotes:
    // name the line where the record it could not read starts, just after the last one it
    // parsed (not the last one this loop took: the stream had queued more), past the blank
    // lines it skipped since.
    const err = e as Error & { empty_lines?: number };
    const empty = err.empty_lines ?? parsedEmpty;
    throw new InputError({
      file: path,
      line: newlines.before(parsedEnd) + 1 + (empty - parsedEmpty),
      problem: `malformed CSV in the record starting on this line (${err.message})`,
      hint: FILE_HINT,
      cause: e,
    });
  }
  if (checker.bad.length > 0) throw utf8Error(path, checker.bad[0], UTF8_FILE_HINT);
  if (cols === null) {
    throw new InputError({
      file: path,
      line: 0,
      problem: 'expected a header with columns "question" and "answer", got an empty file',
      hint: FILE_HINT,
    });
  }
}

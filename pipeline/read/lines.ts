/**
 * Streaming line reader: a file is read in chunks and never held whole, so a 400,000-line
 * source costs one chunk of memory. Text must be UTF-8: a byte that is not is an error naming
 * the line and its byte offset, never a silent U+FFFD.
 *
 * @module
 */
import type { InputError } from "./input_error.ts";
import { completeUtf8Length, firstInvalidUtf8, invalidUtf8Error } from "./utf8.ts";
import { openInput } from "./open.ts";

/** One line of a text file. */
export interface Line {
  /** 1-based line number. */
  line: number;
  /** The line without its `\n` or `\r\n`, and without a leading UTF-8 byte order mark. */
  text: string;
}

const CHUNK = 1 << 16;

/** Options of {@linkcode readLinesOrErrors}. */
export interface LineOptions {
  /**
   * A line longer than this many bytes is not held in memory: its bytes are passed over and
   * `tooLong` makes its error. Lines up to about 64 KiB longer may still be read whole.
   */
  maxBytes?: number;
  /** The error of a line of `bytes` bytes that starts at byte `offset` of the file. */
  tooLong?: (line: number, offset: number, bytes: number) => InputError;
}

/**
 * Yields the lines of a UTF-8 file, and an {@linkcode InputError} in place of each line
 * holding bytes that are not UTF-8 (reason `invalid_utf8`) or longer than `opts.maxBytes`;
 * reading goes on after it, so a reader can skip that record. Only `\n` ends a line: some
 * GSM8K-Aug lines carry U+2028 inside a question, which must not split the record. A final
 * line without a newline is yielded; a trailing newline does not add an empty line.
 */
export async function* readLinesOrErrors(
  path: string,
  opts: LineOptions = {},
): AsyncGenerator<Line | InputError> {
  const maxBytes = opts.tooLong === undefined ? Infinity : opts.maxBytes ?? Infinity;
  const file = await openInput(path);
  const newDecoder = () => new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  let decoder = newDecoder();
  let lineNo = 0;
  let carry = ""; // the decoded start of the current line
  let lineStart = 0; // file offset of the current line's first byte
  let pos = 0; // file offset of data[0]
  let pending: Uint8Array = new Uint8Array(0); // a sequence the last read cut short
  // The current line is refused (not UTF-8, or too long): its bytes are dropped to its end,
  // the file offset where it ends gives its error.
  let bad: ((end: number) => InputError) | null = null;
  const buf = new Uint8Array(CHUNK);

  // The complete lines of carry + text; the unfinished rest stays in carry. Only the new
  // text is searched, so a very long line costs no more than its length. A byte order mark
  // is dropped when the text starts the file.
  function* split(text: string, atFileStart: boolean): Generator<Line> {
    if (atFileStart && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    let start = 0;
    let nl: number;
    while ((nl = text.indexOf("\n", start)) !== -1) {
      let line = text.slice(start, nl);
      if (start === 0 && carry !== "") {
        line = carry + line;
        carry = "";
      }
      yield { line: ++lineNo, text: line.endsWith("\r") ? line.slice(0, -1) : line };
      start = nl + 1;
    }
    carry = start === 0 ? carry + text : text.slice(start);
  }

  // The file offset where the line after the last newline of data[from, to) starts.
  const afterLastNewline = (data: Uint8Array, from: number, to: number) => {
    const nl = data.lastIndexOf(10, to - 1);
    if (nl >= from) lineStart = pos + nl + 1;
  };

  try {
    while (true) {
      const n = await file.read(buf);
      const eof = n === null;
      let data: Uint8Array = eof ? pending : buf.subarray(0, n);
      if (!eof && pending.length > 0) {
        data = new Uint8Array(pending.length + n);
        data.set(pending);
        data.set(buf.subarray(0, n), pending.length);
      }
      const cut = eof ? data.length : completeUtf8Length(data);
      let i = 0;
      while (i < cut) {
        if (bad !== null) {
          const nl = data.indexOf(10, i);
          if (nl === -1 || nl >= cut) {
            i = cut;
            break;
          }
          yield bad(pos + nl);
          bad = null;
          i = nl + 1;
          lineStart = pos + i;
          carry = "";
          decoder = newDecoder();
          continue;
        }
        let text: string;
        try {
          text = decoder.decode(data.subarray(i, cut), { stream: !eof });
        } catch (e) {
          if (!(e instanceof TypeError)) throw e;
          const at = firstInvalidUtf8(data, i, cut);
          if (at === -1) throw e;
          const nl = data.lastIndexOf(10, at);
          decoder = newDecoder();
          if (nl >= i) {
            yield* split(decoder.decode(data.subarray(i, nl + 1)), pos + i === 0);
            decoder = newDecoder();
            lineStart = pos + nl + 1;
          }
          const err = invalidUtf8Error(
            { file: path, line: ++lineNo, offset: pos + at },
            data[at],
            pos + at - lineStart,
          );
          bad = () => err;
          carry = "";
          i = at + 1;
          continue;
        }
        yield* split(text, pos + i === 0);
        afterLastNewline(data, i, cut);
        i = cut;
        if (carry !== "" && pos + cut - lineStart > maxBytes) {
          const [line, start] = [++lineNo, lineStart];
          bad = (end) => opts.tooLong!(line, start, end - start);
          carry = "";
          decoder = newDecoder();
        }
      }
      pos += cut;
      pending = data.slice(cut);
      if (eof) break;
    }
    if (bad !== null) yield bad(pos);
    else if (carry !== "") {
      yield { line: ++lineNo, text: carry.endsWith("\r") ? carry.slice(0, -1) : carry };
    }
  } finally {
    file.close();
  }
}

/**
 * A note for the error of a line that holds a carriage return not followed by a newline, or
 * "" when it holds none. Only `\n` ends a line, so a file whose lines end in CR alone (classic
 * Mac OS) reads as one line holding every record, which this says.
 *
 * @example
 * ```ts
 * import { bareCrNote } from "./lines.ts";
 * console.assert(bareCrNote("a\rb").startsWith(" (the line holds a carriage return"));
 * console.assert(bareCrNote("a b") === "");
 * ```
 */
export function bareCrNote(text: string): string {
  const at = text.indexOf("\r");
  return at === -1 ? "" : ` (the line holds a carriage return (CR) not followed by a newline, ` +
    `at character ${at + 1}: if the file's lines end in CR alone, they are read as one line; ` +
    `convert them to newlines, as tr '\\r' '\\n' does)`;
}

/**
 * Yields the lines of a UTF-8 file (see {@linkcode readLinesOrErrors}); a line that is not
 * UTF-8 throws its {@linkcode InputError}, naming the line and the byte offset.
 */
export async function* readLines(path: string, opts: LineOptions = {}): AsyncGenerator<Line> {
  for await (const l of readLinesOrErrors(path, opts)) {
    if ("text" in l) yield l;
    else throw l;
  }
}

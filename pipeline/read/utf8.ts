/**
 * Strict UTF-8: input text is decoded with a fatal decoder, so a byte that is not UTF-8 is an
 * error that names where it is, never a silent U+FFFD. The native decoder does the work; the
 * scan here only runs to locate a bad byte once the decoder has refused a piece.
 *
 * @module
 */
import { InputError, type InputErrorInit } from "./input_error.ts";

/** The hint of an invalid-UTF-8 record, which `--on-error skip` can leave out. */
export const UTF8_HINT =
  "save the file as UTF-8 (iconv -f <its encoding> -t utf-8) or pass --on-error skip";

/** The hint of invalid UTF-8 in a file read whole, which skipping records cannot cure. */
export const UTF8_FILE_HINT = "save the file as UTF-8 (iconv -f <its encoding> -t utf-8)";

/**
 * The index of the first byte of the first ill-formed sequence in `bytes[from, to)`, or -1.
 * A sequence cut short by `to` counts as ill-formed. The rules are the WHATWG decoder's (no
 * overlong forms, no surrogates, nothing above U+10FFFF).
 */
export function firstInvalidUtf8(bytes: Uint8Array, from = 0, to = bytes.length): number {
  let i = from;
  while (i < to) {
    const c = bytes[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      if (c === 0xe0) lo = 0xa0;
      if (c === 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      if (c === 0xf0) lo = 0x90;
      if (c === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= need; k++) {
      if (i + k >= to) return i;
      const d = bytes[i + k];
      if (d < (k === 1 ? lo : 0x80) || d > (k === 1 ? hi : 0xbf)) return i;
    }
    i += need + 1;
  }
  return -1;
}

/**
 * The length of `bytes` without a multi-byte sequence that its last bytes begin but do not
 * finish, so that a chunk of a stream can be decoded on its own and the rest carried over.
 */
export function completeUtf8Length(bytes: Uint8Array): number {
  const n = bytes.length;
  for (let k = 1; k <= Math.min(4, n); k++) {
    const c = bytes[n - k];
    if ((c & 0xc0) === 0x80) continue; // a continuation byte: look further back
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return need > k ? n - k : n;
  }
  return n;
}

/** `0xE9`: a byte as it reads in a message. */
export function hexByte(b: number): string {
  return `0x${b.toString(16).toUpperCase().padStart(2, "0")}`;
}

/**
 * The InputError of an invalid byte at `offset` of the file, `column` bytes into its line.
 * `init` gives the file, the line and, for a file read whole, the hint.
 */
export function invalidUtf8Error(
  init: Omit<InputErrorInit, "problem" | "reason"> & { offset: number },
  byte: number,
  column: number,
): InputError {
  return new InputError({
    hint: UTF8_HINT,
    ...init,
    reason: "invalid_utf8",
    problem: `invalid UTF-8: byte ${hexByte(byte)} at byte offset ${init.offset} of the file ` +
      `(byte ${column} of the line)`,
  });
}

/** 1-based line of byte `index` of `bytes`: one more than the newlines before it. */
export function lineAt(bytes: Uint8Array, index: number, from = 0): number {
  let line = 1;
  for (let i = bytes.indexOf(10, from); i !== -1 && i < index; i = bytes.indexOf(10, i + 1)) {
    line++;
  }
  return line;
}

/**
 * Decodes a whole file's bytes. Invalid UTF-8 throws an {@linkcode InputError} with the line
 * and byte offset of the first bad byte and {@linkcode UTF8_FILE_HINT}: a file read whole
 * (a JSON array) cannot leave one record out. A leading byte order mark is dropped.
 */
export function decodeUtf8File(path: string, bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    const bad = firstInvalidUtf8(bytes);
    const start = bytes.lastIndexOf(10, bad) + 1;
    throw invalidUtf8Error(
      { file: path, line: lineAt(bytes, bad), offset: bad, hint: UTF8_FILE_HINT },
      bytes[bad],
      bad - start,
    );
  }
}

/** A bad byte found by a {@linkcode Utf8Checker}. */
export interface BadByte {
  /** Its offset in the stream. */
  offset: number;
  /** 1-based line it is on. */
  line: number;
  /** Bytes before it on its line. */
  column: number;
  /** The byte. */
  byte: number;
}

/**
 * Checks a byte stream that something else decodes (csv-parse): bytes pass through
 * unchanged, and the offset, line and column of each ill-formed sequence are recorded in
 * {@linkcode Utf8Checker.bad}, in order, before the chunk that holds it goes on.
 */
export class Utf8Checker {
  /** Bad bytes found so far, in stream order; the consumer takes them off the front. */
  readonly bad: BadByte[] = [];
  #decoder = new TextDecoder("utf-8", { fatal: true });
  #pending: Uint8Array = new Uint8Array(0);
  #offset = 0; // stream offset of #pending[0]
  #line = 1; // line at #pending[0]
  #lineStart = 0; // stream offset where that line starts

  /** A TransformStream that checks the bytes flowing through it. */
  stream(): TransformStream<Uint8Array, Uint8Array> {
    return new TransformStream({
      transform: (chunk, ctl) => {
        this.#check(chunk, false);
        ctl.enqueue(chunk);
      },
      flush: () => this.#check(new Uint8Array(0), true),
    });
  }

  #check(chunk: Uint8Array, end: boolean): void {
    let data = chunk;
    if (this.#pending.length > 0) {
      data = new Uint8Array(this.#pending.length + chunk.length);
      data.set(this.#pending);
      data.set(chunk, this.#pending.length);
    }
    const cut = end ? data.length : completeUtf8Length(data);
    let from = 0;
    try {
      this.#decoder.decode(data.subarray(0, cut), { stream: !end });
    } catch (e) {
      if (!(e instanceof TypeError)) throw e;
      this.#decoder = new TextDecoder("utf-8", { fatal: true });
      let bad: number;
      while ((bad = firstInvalidUtf8(data, from, cut)) !== -1) {
        this.#advance(data, from, bad);
        this.bad.push({
          offset: this.#offset + bad,
          line: this.#line,
          column: this.#offset + bad - this.#lineStart,
          byte: data[bad],
        });
        from = bad + 1;
      }
    }
    this.#advance(data, from, cut);
    this.#pending = data.slice(cut);
    this.#offset += cut;
  }

  /** Counts the newlines of data[from, to), whose offsets are relative to #offset. */
  #advance(data: Uint8Array, from: number, to: number): void {
    for (let i = data.indexOf(10, from); i !== -1 && i < to; i = data.indexOf(10, i + 1)) {
      this.#line++;
      this.#lineStart = this.#offset + i + 1;
    }
  }
}

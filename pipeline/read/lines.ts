/**
 * Streaming line reader: a file is read in chunks and never held whole, so a 400,000-line
 * source costs one chunk of memory.
 *
 * @module
 */

/** One line of a text file. */
export interface Line {
  /** 1-based line number. */
  line: number;
  /** The line without its `\n` or `\r\n`, and without a leading UTF-8 byte order mark. */
  text: string;
}

/**
 * Yields the lines of a UTF-8 file. Only `\n` ends a line: some GSM8K-Aug lines carry
 * U+2028 inside a question, which must not split the record. A final line without a newline
 * is yielded; a trailing newline does not add an empty line.
 */
export async function* readLines(path: string): AsyncGenerator<Line> {
  const file = await Deno.open(path);
  let lineNo = 0;
  let carry = "";
  try {
    const decoder = new TextDecoder("utf-8", { ignoreBOM: false });
    const buf = new Uint8Array(1 << 16);
    while (true) {
      const n = await file.read(buf);
      const text = n === null ? decoder.decode() : decoder.decode(buf.subarray(0, n), {
        stream: true,
      });
      let chunk = carry + text;
      let start = 0;
      let nl: number;
      while ((nl = chunk.indexOf("\n", start)) !== -1) {
        const end = nl > start && chunk.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
        yield { line: ++lineNo, text: chunk.slice(start, end) };
        start = nl + 1;
      }
      chunk = chunk.slice(start);
      carry = chunk;
      if (n === null) break;
    }
    if (carry !== "") {
      yield { line: ++lineNo, text: carry.endsWith("\r") ? carry.slice(0, -1) : carry };
    }
  } finally {
    file.close();
  }
}

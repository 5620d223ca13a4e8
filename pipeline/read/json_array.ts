/**
 * Files that hold one JSON array of records (Coconut's format, SVAMP's original release):
 * read whole, with a parse error reported at its line.
 *
 * @module
 */
import { FILE_HINT, InputError } from "./input_error.ts";
import { readInput } from "./open.ts";
import { decodeUtf8File } from "./utf8.ts";
import { jsonErrorText } from "../../base/json.ts";

/** A whole number as JSON writes it: an optional minus and digits. */
const JSON_INTEGER = /^-?\d+$/;

/**
 * `JSON.parse(text)`, except that a whole number written beyond 2^53 - 1, which a double
 * cannot hold (12345678901234567890 would read 12345678901234567000), is kept as the digits
 * written, a string: the records' numeric fields (an answer, a target, an id) take a string
 * as well, and the answer keeps its value.
 *
 * @example
 * ```ts
 * import { parseJsonExact } from "./json_array.ts";
 * const o = parseJsonExact('{"target": 12345678901234567890, "n": 2.5}') as Record<string, unknown>;
 * console.assert(o.target === "12345678901234567890" && o.n === 2.5);
 * ```
 */
export function parseJsonExact(text: string): unknown {
  return JSON.parse(text, function (_key, value, context?: { source?: string }) {
    if (
      typeof value === "number" && Number.isInteger(value) && !Number.isSafeInteger(value) &&
      context?.source !== undefined && JSON_INTEGER.test(context.source)
    ) {
      return context.source;
    }
    return value;
  });
}

/** 1-based line of a character offset in `text`. */
function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/**
 * The elements of the JSON array in `path`. Bytes that are not UTF-8, invalid JSON (with the
 * line where parsing failed) or JSON that is not an array is an {@linkcode InputError};
 * `expected` says what the file should hold.
 */
export async function readJsonArray(path: string, expected: string): Promise<unknown[]> {
  const text = decodeUtf8File(path, await readInput(path));
  let data: unknown;
  try {
    data = parseJsonExact(text);
  } catch (e) {
    const m = /position (\d+)/.exec((e as Error).message);
    throw new InputError({
      file: path,
      line: m ? lineOf(text, Number(m[1])) : 0,
      problem: `invalid JSON (${jsonErrorText(e)})`,
      hint: FILE_HINT,
      cause: e,
    });
  }
  if (!Array.isArray(data)) {
    throw new InputError({ file: path, line: 0, problem: `expected ${expected}`, hint: FILE_HINT });
  }
  return data;
}

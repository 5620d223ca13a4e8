/**
 * Limits on the size of one record, checked before anything costly: a 50 MB question would
 * otherwise be segmented, tokenized and written whole (minutes, gigabytes of memory, a huge
 * shard). A record over a limit is an {@linkcode InputError} with reason `too_large`, which
 * stops the build or, with `--on-error skip`, is listed as skipped.
 *
 * The defaults are far above any real grade-school record: in GSM8K and GSM8K-Aug the longest
 * question is 991 bytes, the longest chain of thought 1,648 bytes, and no record has more than
 * 12 steps in either form.
 *
 * @module
 */
import type { Problem, SegmentedRecord } from "./types.ts";
import { InputError } from "./read/input_error.ts";
import type { LineOptions } from "./read/lines.ts";

/** Default `--max-field-bytes`: UTF-8 bytes in the question, the chain of thought, the answer. */
export const DEFAULT_MAX_FIELD_BYTES = 65_536;

/** Default `--max-cot-steps`: steps in either CoT form. */
export const DEFAULT_MAX_COT_STEPS = 256;

const FIELD_HINT = "shorten the record, raise --max-field-bytes or pass --on-error skip";
const STEPS_HINT = "split the record, raise --max-cot-steps or pass --on-error skip";

/** The UTF-8 length of `s`. */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 2; // a surrogate pair: 4 bytes for 2 code units
      i++;
    } else n += 2;
  }
  return n;
}

/** `s` is at most `max` UTF-8 bytes long; counts only when it has to. */
function fits(s: string, max: number): boolean {
  if (s.length > max) return false; // every code unit is at least one byte
  return s.length * 3 <= max || utf8Length(s) <= max;
}

const count = (n: number) => n.toLocaleString("en-US");

/**
 * A line of a text format longer than this many times `--max-field-bytes` (2 MiB by default)
 * is refused without being read whole: its fields could not all fit, even written with JSON
 * escapes. It bounds the memory that one line of a file can take.
 */
export const LINE_BYTES_PER_FIELD_BYTE = 32;

/** The line reader's options that refuse lines too long for records within `maxFieldBytes`. */
export function lineLimit(file: string, maxFieldBytes: number): LineOptions {
  const max = LINE_BYTES_PER_FIELD_BYTE * maxFieldBytes;
  return {
    maxBytes: max,
    tooLong: (line, offset, bytes) =>
      new InputError({
        file,
        line,
        offset,
        reason: "too_large",
        problem: `the line is ${count(bytes)} bytes, over the limit of ${count(max)} ` +
          `(${LINE_BYTES_PER_FIELD_BYTE} × --max-field-bytes)`,
        hint: FIELD_HINT,
      }),
  };
}

/**
 * An error for the first of the question, the chain of thought (the rationale, or all the
 * math steps together) and the answer that is longer than `maxBytes` UTF-8 bytes, or null.
 */
export function fieldSizeError(p: Problem, maxBytes: number): InputError | null {
  const at = { file: p.source.file, line: p.source.line, reason: "too_large" as const };
  const over = () => `over the limit of ${count(maxBytes)} (--max-field-bytes)`;
  for (const field of ["question", "answer"] as const) {
    if (fits(p[field], maxBytes)) continue;
    const n = utf8Length(p[field]);
    return new InputError({
      ...at,
      field,
      problem: `${count(n)} bytes, ${over()}`,
      hint: FIELD_HINT,
    });
  }
  const cot = p.rationale ?? p.mathSteps?.join(" ") ?? "";
  if (!fits(cot, maxBytes)) {
    return new InputError({
      ...at,
      problem: `the chain of thought is ${count(utf8Length(cot))} bytes, ${over()}`,
      hint: FIELD_HINT,
    });
  }
  return null;
}

/** An error when either CoT form of `r` has more than `maxSteps` steps, or null. */
export function stepCountError(r: SegmentedRecord, maxSteps: number): InputError | null {
  if (r.math.length <= maxSteps && r.nl.length <= maxSteps) return null;
  const [n, form] = r.math.length >= r.nl.length ? [r.math.length, "math"] : [r.nl.length, "NL"];
  return new InputError({
    file: r.source.file,
    line: r.source.line,
    reason: "too_large",
    problem: `${count(n)} ${form} steps, over the limit of ${count(maxSteps)} (--max-cot-steps)`,
    hint: STEPS_HINT,
  });
}

/**
 * The check of a whole-number option against its least value, with the one message form
 * the stages share: `label = value: must be a whole number, at least min`.
 *
 * @module
 */

import { describeValue } from "./json.ts";

/**
 * Throws a RangeError naming `label` unless `v` is undefined or a whole number ≥ `min`. The
 * message reads `${label} = ${v}: must be a whole number, at least ${min}`; with `unit`,
 * "a whole number of `unit`" (e.g. "bytes"). A value that is not a number has its type named,
 * a string quoted: `threads = "1": must be a whole number, at least 0 (given a string)`.
 *
 * @example
 * ```ts
 * import { checkWhole } from "./whole.ts";
 * checkWhole("threads", 4, 0);
 * checkWhole("threads", undefined, 0);
 * try {
 *   checkWhole("read: maxFieldBytes", 0, 1, "bytes");
 * } catch (e) {
 *   console.assert(
 *     (e as Error).message === "read: maxFieldBytes = 0: must be a whole number of bytes, at least 1",
 *   );
 * }
 * ```
 */
export function checkWhole(label: string, v: number | undefined, min: number, unit?: string): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= min)) {
    const what = unit === undefined ? "a whole number" : `a whole number of ${unit}`;
    // A value that is no number (from a caller that is not type-checked) shows as what it is:
    // `threads = "1"`, not `threads = 1`, which reads as a valid value.
    const x: unknown = v;
    const shown = typeof x === "string"
      ? JSON.stringify(x)
      : typeof x === "object" && x !== null
      ? (Array.isArray(x) ? "[…]" : "{…}")
      : String(x);
    const given = typeof x === "number" ? "" : ` (given ${describeValue(x)})`;
    throw new RangeError(`${label} = ${shown}: must be ${what}, at least ${min}${given}`);
  }
}

/**
 * The check of a whole-number option against its least value, with the one message form
 * the stages share: `label = value: must be a whole number, at least min`.
 *
 * @module
 */

/**
 * Throws a RangeError naming `label` unless `v` is undefined or a whole number ≥ `min`. The
 * message reads `${label} = ${v}: must be a whole number, at least ${min}`; with `unit`,
 * "a whole number of `unit`" (e.g. "bytes").
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
    throw new RangeError(`${label} = ${v}: must be ${what}, at least ${min}`);
  }
}

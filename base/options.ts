/**
 * The check of an options object for keys its function does not have. A caller that is not
 * type-checked (plain JavaScript, or a value cast or spread past TypeScript's excess-property
 * check) can pass a misspelt option, or one at the wrong level, which would otherwise be
 * ignored without a word.
 *
 * @module
 */

import { nearestName } from "./suggest.ts";
import { describeValue } from "./json.ts";

/**
 * The names of every option of `T`, each mapped to `true`: declared as a value of this type,
 * the list is checked at compile time both ways, so an option added to `T` and left out of
 * the list is a type error ("property is missing"), and so is a name `T` does not have.
 *
 * @example
 * ```ts
 * import type { OptionNames } from "./options.ts";
 * interface Opts {
 *   limit?: number;
 *   quiet?: boolean;
 * }
 * const OPTS: OptionNames<Opts> = { limit: true, quiet: true };
 * console.assert(Object.keys(OPTS).length === 2);
 * ```
 */
export type OptionNames<T> = { readonly [K in keyof T]-?: true };

/** A key that an options object has and its function does not, with the nearest known name. */
export interface UnknownOption {
  /** The key as given. */
  key: string;
  /** The known name nearest it, when one is near enough to be a typo. */
  near?: string;
}

/**
 * The first own key of `options` that `known` lacks, with the name nearest it among `known`'s
 * and `also` (names that belong elsewhere, which the caller explains); undefined when every
 * key is known.
 *
 * @example
 * ```ts
 * import { unknownOption } from "./options.ts";
 * const u = unknownOption({ limt: 3 }, { limit: true, quiet: true });
 * console.assert(u?.key === "limt" && u.near === "limit");
 * ```
 */
export function unknownOption(
  options: object,
  known: Readonly<Record<string, true>>,
  also: readonly string[] = [],
): UnknownOption | undefined {
  for (const key of Object.keys(options)) {
    if (Object.hasOwn(known, key)) continue;
    const near = nearestName(key, [...Object.keys(known), ...also]);
    return near === undefined ? { key } : { key, near };
  }
  return undefined;
}

/**
 * `"key" is not an option`, followed by `(did you mean "near"?)` when a name is near.
 *
 * @example
 * ```ts
 * import { notAnOption } from "./options.ts";
 * console.assert(notAnOption({ key: "limt", near: "limit" }) ===
 *   '"limt" is not an option (did you mean "limit"?)');
 * ```
 */
export function notAnOption(u: UnknownOption): string {
  return `"${u.key}" is not an option${u.near === undefined ? "" : ` (did you mean "${u.near}"?)`}`;
}

/**
 * Refuses an options object that is not an object, or that has a key `known` lacks, with the
 * error `error` makes of the message (a RangeError unless given), so that each function
 * keeps the error class it throws for a bad option value. The message starts with `fn`, the
 * function and where in its options: `fn: "limt" is not an option (did you mean "limit"?)`.
 * Undefined options pass (the function's defaults).
 *
 * @throws {RangeError} (or what `error` makes) naming the key and the nearest known name.
 *
 * @example
 * ```ts
 * import { refuseUnknownOptions } from "./options.ts";
 * const known = { limit: true, quiet: true } as const;
 * refuseUnknownOptions("readItems", { limit: 3 }, known);
 * try {
 *   refuseUnknownOptions("readItems", { limt: 3 }, known);
 * } catch (e) {
 *   console.assert((e as Error).message ===
 *     'readItems: "limt" is not an option (did you mean "limit"?)');
 * }
 * ```
 */
export function refuseUnknownOptions(
  fn: string,
  options: unknown,
  known: Readonly<Record<string, true>>,
  error: (message: string) => Error = (message) => new RangeError(message),
): void {
  if (options === undefined) return;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw error(`${fn}: the options must be an object, not ${describeValue(options)}`);
  }
  const u = unknownOption(options, known);
  if (u !== undefined) throw error(`${fn}: ${notAnOption(u)}`);
}

/**
 * Refuses option `name` of function `fn` when it is given (not undefined) and is none of
 * `allowed`, as a caller that is not type-checked can pass: `fn: name "x": use a or b`.
 *
 * @throws {RangeError} naming the function, the option, the value and the values allowed.
 *
 * @example
 * ```ts
 * import { refuseUnlisted } from "./options.ts";
 * refuseUnlisted("readItems", "onError", "skip", ["throw", "skip"]);
 * try {
 *   refuseUnlisted("readItems", "onError", "ignore", ["throw", "skip"]);
 * } catch (e) {
 *   console.assert((e as Error).message === 'readItems: onError "ignore": use throw or skip');
 * }
 * ```
 */
export function refuseUnlisted(
  fn: string,
  name: string,
  value: unknown,
  allowed: readonly string[],
): void {
  if (value === undefined || allowed.includes(value as string)) return;
  throw new RangeError(`${fn}: ${name} ${JSON.stringify(value)}: use ${allowed.join(" or ")}`);
}

/** The kinds of option value that {@linkcode refuseMistyped} checks. */
export type OptionKind = "boolean" | "function" | "string" | "object" | "AbortSignal";

/**
 * Refuses an option of `options` that `kinds` names, given (not undefined) and not of its
 * kind (its `typeof`, or for an `AbortSignal` an object with `aborted`), as a caller that is not type-checked can pass: a truthy `"off"` would switch a
 * boolean option on, a string `onLog` would fail part way. The message names the function,
 * the option, the value and the kind: `fn: quiet = "no": must be a boolean`.
 *
 * @throws {RangeError} (or what `error` makes of the message and the option's name) naming
 * the option.
 *
 * @example
 * ```ts
 * import { refuseMistyped } from "./options.ts";
 * refuseMistyped("open", { quiet: true }, { quiet: "boolean" });
 * try {
 *   refuseMistyped("open", { quiet: "no" }, { quiet: "boolean" });
 * } catch (e) {
 *   console.assert((e as Error).message === 'open: quiet = "no": must be a boolean');
 * }
 * ```
 */
export function refuseMistyped(
  fn: string,
  options: unknown,
  kinds: Readonly<Record<string, OptionKind>>,
  error: (message: string, name: string) => Error = (message) => new RangeError(message),
): void {
  if (typeof options !== "object" || options === null) return;
  for (const [name, kind] of Object.entries(kinds)) {
    const v = (options as Record<string, unknown>)[name];
    if (v === undefined) continue;
    const type: string = typeof v;
    // An AbortSignal is taken by its shape, as the stages read it (`aborted`, `reason`).
    const signal = typeof v === "object" && v !== null && "aborted" in v;
    // An object of settings: not null, which typeof calls an object, nor an array.
    const settings = typeof v === "object" && v !== null && !Array.isArray(v);
    const ok = kind === "AbortSignal" ? signal : kind === "object" ? settings : type === kind;
    if (ok) continue;
    let shown: string;
    try {
      shown = typeof v === "function" ? "a function" : JSON.stringify(v) ?? String(v);
    } catch {
      shown = String(v); // a bigint
    }
    throw error(
      `${fn}: ${name} = ${shown}: must be ${/^[AEIOUaeiou]/.test(kind) ? "an" : "a"} ${kind}`,
      name,
    );
  }
}

/**
 * JSON files checked against a zod schema, with the messages every reader of the project's
 * files gives: `FILE: not valid JSON (why)` and `FILE: field "a.b": what is wrong`. Each reader
 * adds what to do and throws its own error class.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { parseJsonAs } from "./json.ts";
 * const r = parseJsonAs(z.object({ n: z.number() }), '{"n": "3"}', "a.json");
 * console.assert(!r.ok && r.message.startsWith('a.json: field "n": '));
 * ```
 *
 * @module
 */
import type { z } from "zod";

/** A validation error as zod gives it: its issues, each with a path and a message. */
export interface IssueList {
  readonly issues: readonly { readonly path: readonly PropertyKey[]; readonly message: string }[];
}

/**
 * The first issue of a zod error as `field "a.b": message`. `prefix` goes before the path,
 * for a schema that checks one part of a file (`lotus.` for a config's `lotus` section).
 */
export function fieldIssue(error: IssueList, prefix = ""): string {
  const i = error.issues[0];
  return `field "${prefix}${i.path.map(String).join(".")}": ${i.message}`;
}

/**
 * The message of a `JSON.parse` error on one line: V8 quotes a short text it could not parse
 * as it is, newlines included (`Unexpected token 'o', "not json\n" is not valid JSON`), which
 * would break an error's one line and, where a command keeps only the first, lose the rest
 * of it. Line breaks and other control characters are written as escapes (`\n`).
 *
 * @example
 * ```ts
 * import { jsonErrorText } from "./json.ts";
 * let e: unknown;
 * try {
 *   JSON.parse("not json\n");
 * } catch (x) {
 *   e = x;
 * }
 * console.assert(!jsonErrorText(e).includes("\n") && jsonErrorText(e).includes("json\\n"));
 * ```
 */
export function jsonErrorText(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  // deno-lint-ignore no-control-regex
  return message.replace(/[\x00-\x1f\x7f\u2028\u2029]/g, (c) => {
    const named: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
    return named[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
  });
}

/**
 * What {@linkcode parseJsonAs} found: the checked value, or a message naming the file, and
 * whether the text was not JSON at all (`syntax`) or JSON that the schema refused (`field`).
 */
export type JsonChecked<T> =
  | { ok: true; data: T }
  | { ok: false; problem: "syntax" | "field"; message: string };

/**
 * `text` parsed as JSON and checked by `schema`. The message of a failure starts with `what`
 * (the file), then says `not valid JSON (…)` or gives the first field at fault.
 */
export function parseJsonAs<T>(
  schema: z.ZodType<T>,
  text: string,
  what: string,
): JsonChecked<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return {
      ok: false,
      problem: "syntax",
      message: `${what}: not valid JSON (${jsonErrorText(e)})`,
    };
  }
  const r = schema.safeParse(raw);
  return r.success
    ? { ok: true, data: r.data }
    : { ok: false, problem: "field", message: `${what}: ${fieldIssue(r.error)}` };
}

/**
 * A short description of a value for messages: `a number`, `an object`, `null`, `an empty
 * string`, `nothing (the field is missing)`...
 *
 * @example
 * ```ts
 * import { describeValue } from "./json.ts";
 * console.assert(describeValue({}) === "an object" && describeValue([]) === "an array");
 * ```
 */
export function describeValue(v: unknown): string {
  if (v === undefined) return "nothing (the field is missing)";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return v.trim() === "" ? "an empty string" : "a string";
  return `${/^[aeiou]/.test(typeof v) ? "an" : "a"} ${typeof v}`;
}

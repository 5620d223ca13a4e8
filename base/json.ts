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
      message: `${what}: not valid JSON (${(e as Error).message})`,
    };
  }
  const r = schema.safeParse(raw);
  return r.success
    ? { ok: true, data: r.data }
    : { ok: false, problem: "field", message: `${what}: ${fieldIssue(r.error)}` };
}

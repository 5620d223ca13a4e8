// base/json.ts: the messages every reader of the project's JSON files starts from.
import { z } from "zod";
import { assert, assertEquals } from "./_assert.ts";
import { fieldIssue, parseJsonAs } from "../base/json.ts";

const Schema = z.object({ a: z.object({ b: z.array(z.number()) }) });

Deno.test("json: a valid file gives its checked value", () => {
  const r = parseJsonAs(Schema, '{"a": {"b": [1, 2]}}', "x.json");
  assert(r.ok);
  assertEquals(r.data.a.b, [1, 2]);
});

Deno.test("json: text that is not JSON, and a field the schema refuses, are told apart", () => {
  const bad = parseJsonAs(Schema, '{"a": ', "x.json");
  assert(!bad.ok && bad.problem === "syntax", JSON.stringify(bad));
  assert(bad.message.startsWith("x.json: not valid JSON ("), bad.message);
  const field = parseJsonAs(Schema, '{"a": {"b": [1, "2"]}}', "x.json");
  assert(!field.ok && field.problem === "field", JSON.stringify(field));
  assert(field.message.startsWith('x.json: field "a.b.1": '), field.message);
});

Deno.test("json: fieldIssue names the first issue's path under a prefix", () => {
  const r = Schema.safeParse({ a: { b: "no" } });
  assert(!r.success);
  assert(fieldIssue(r.error, "lotus.").startsWith('field "lotus.a.b": '), fieldIssue(r.error));
  assertEquals(
    fieldIssue({ issues: [{ path: [], message: "expected an object" }] }),
    'field "": expected an object',
  );
});

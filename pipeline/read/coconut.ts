/**
 * Coconut's JSON format: one array of `{question, steps: string[], answer, idx?}`. The file
 * is parsed whole (Coconut files are single JSON documents); records are then checked one by
 * one, so a bad element does not spoil the rest.
 *
 * @module
 */
import { z } from "zod";
import type { Problem } from "../types.ts";
import { readJsonArray } from "./json_array.ts";
import {
  basename,
  checkRecord,
  classifySteps,
  IdRegister,
  makeProblem,
  type RecordAt,
} from "./record.ts";
import { InputError } from "./input_error.ts";

/** A Coconut record; `answer` and `idx` may be numbers. */
export const CoconutRecord = z.object({
  question: z.string().refine((s) => s.trim() !== "", { message: "an empty string" }),
  steps: z.array(z.string()),
  answer: z.union([z.string(), z.number()]).refine((a) => String(a).trim() !== "", {
    message: "an empty string",
  }),
  idx: z.union([z.number(), z.string()]).optional(),
});

const EXPECT = {
  question: "a non-empty string",
  steps: "an array of strings",
  answer: "a non-empty string or a number",
  idx: "a number or a string",
};

/**
 * Turns one Coconut element into a Problem. Steps that are all `<<...>>` annotations go to
 * `mathSteps`; otherwise (ProsQA-style sentences, or a mix) they become `rationale`, one line
 * per step (see {@linkcode classifySteps}).
 */
export function coconutProblem(raw: unknown, at: RecordAt): Problem | InputError {
  const r = checkRecord(CoconutRecord, raw, EXPECT, at);
  if (r instanceof InputError) return r;
  return makeProblem(at, {
    id: r.idx === undefined ? undefined : `${basename(at.file)}:${r.idx}`,
    question: r.question,
    ...classifySteps(r.steps),
    answer: String(r.answer),
  });
}

/**
 * Reads a Coconut JSON array. Invalid JSON, or JSON that is not an array, is a file-level
 * error and is thrown whatever the error policy. Each element's `line` is its 1-based index
 * (named "element N" in messages).
 * An element whose id another element already has (the same `idx`, or an `idx` equal to an
 * element number that gives another its id) is an InputError naming both.
 */
export async function* readCoconut(path: string): AsyncGenerator<Problem | InputError> {
  const data = await readJsonArray(path, "a JSON array of {question, steps, answer} objects");
  const ids = new IdRegister();
  for (let i = 0; i < data.length; i++) {
    const at = { file: path, line: i + 1, element: true };
    const p = coconutProblem(data[i], at);
    yield p instanceof InputError ? p : ids.check(p.id, at, "idx", "element") ?? p;
  }
}

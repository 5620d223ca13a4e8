/**
 * JSON-lines readers: GSM8K (`{question, answer}` with `#### N` at the end of the answer) and
 * GSM8K-Aug-NL (`{question, cot, answer}`).
 *
 * @module
 */
import { z } from "zod";
import type { Problem } from "../types.ts";
import { bareCrNote, type LineOptions, readLinesOrErrors } from "./lines.ts";
import {
  checkRecord,
  GSM8K_ANSWER,
  gsm8kAnswerProblem,
  hasGsm8kAnswer,
  makeProblem,
  type RecordAt,
  splitCot,
  splitGsm8kAnswer,
} from "./record.ts";
import { FILE_HINT, InputError } from "./input_error.ts";
import { jsonErrorText } from "../../base/json.ts";
import { parseJsonExact } from "./json_array.ts";

const question = z.string().refine((s) => s.trim() !== "", { message: "an empty string" });

/** A GSM8K record; extra keys are ignored. */
export const Gsm8kRecord = z.object({
  question,
  answer: z.string().refine(hasGsm8kAnswer, { error: (i) => gsm8kAnswerProblem(String(i.input)) }),
});

const GSM8K_EXPECT = { question: "a non-empty string", answer: GSM8K_ANSWER };

/** A GSM8K-Aug-NL record; `answer` may be a bare number. */
export const NlRecord = z.object({
  question,
  cot: z.string(),
  answer: z.union([z.string(), z.number()]).refine((a) => String(a).trim() !== "", {
    message: "an empty string",
  }),
});

const NL_EXPECT = {
  question: "a non-empty string",
  cot: "a string (the chain of thought)",
  answer: "a non-empty string or a number",
};

/**
 * The hint for a record that the other JSON-lines format reads: the --format given (or the
 * one the file's first record told) is the wrong one for it.
 */
function readByFormat(format: "gsm8k" | "nl"): string {
  return `the record is one --format ${format} reads (a file is read in one format, --format's ` +
    `or else its first record's): pass --format ${format} if the file is in it, fix the ` +
    `record, or pass --on-error skip`;
}

/** Parses one GSM8K object into a Problem, or says why it cannot. */
export function gsm8kProblem(raw: unknown, at: RecordAt): Problem | InputError {
  let r = checkRecord(Gsm8kRecord, raw, GSM8K_EXPECT, at);
  if (r instanceof InputError && NlRecord.safeParse(raw).success) {
    r = checkRecord(Gsm8kRecord, raw, GSM8K_EXPECT, at, readByFormat("nl"));
  }
  if (r instanceof InputError) return r;
  const { rationale, answer } = splitGsm8kAnswer(r.answer);
  return makeProblem(at, { question: r.question, rationale, mathSteps: null, answer });
}

/**
 * Parses one `{question, cot, answer}` object. A CoT made only of `<<...>>` annotations (as in
 * GSM8K-Aug's Hugging Face copies) becomes `mathSteps`; prose becomes `rationale`. An answer
 * that still carries `####` is cut there.
 */
export function nlProblem(raw: unknown, at: RecordAt): Problem | InputError {
  let r = checkRecord(NlRecord, raw, NL_EXPECT, at);
  if (r instanceof InputError && Gsm8kRecord.safeParse(raw).success) {
    r = checkRecord(NlRecord, raw, NL_EXPECT, at, readByFormat("gsm8k"));
  }
  if (r instanceof InputError) return r;
  let answer = String(r.answer);
  if (answer.includes("####")) answer = splitGsm8kAnswer(answer).answer;
  return makeProblem(at, { question: r.question, ...splitCot(r.cot, "prose"), answer });
}

/** Parses one line as JSON, or returns an InputError naming the line. */
export function parseJsonLine(text: string, at: RecordAt): unknown | InputError {
  try {
    return parseJsonExact(text);
  } catch (e) {
    return new InputError({
      ...at,
      problem: `invalid JSON (${jsonErrorText(e)})${bareCrNote(text)}`,
      cause: e,
    });
  }
}

/**
 * Streams the non-blank lines of a JSON-lines file through `convert`. A line that is not JSON
 * or not UTF-8 comes out as an InputError naming it, in place; a line that `convert` maps to
 * null is left out. A file whose first record opens a JSON array (`[`) is another format (a
 * `--format` that does not fit it), not a run of bad records: that is thrown, whatever the
 * caller does with bad records.
 */
export async function* readJsonl<T>(
  path: string,
  convert: (raw: unknown, at: RecordAt) => T | InputError | null,
  lines: LineOptions = {},
): AsyncGenerator<T | InputError> {
  let first = true;
  for await (const l of readLinesOrErrors(path, lines)) {
    if (l instanceof InputError) {
      yield l;
      continue;
    }
    const { line, text } = l;
    if (text.trim() === "") continue;
    if (first && text.trimStart().startsWith("[")) {
      throw new InputError({
        file: path,
        line,
        problem: "the file holds a JSON array, not JSON lines (one JSON object per line)",
        hint: FILE_HINT,
      });
    }
    first = false;
    const at = { file: path, line };
    const raw = parseJsonLine(text, at);
    const out = raw instanceof InputError ? raw : convert(raw, at);
    if (out !== null) yield out;
  }
}

/**
 * Streams a GSM8K JSON-lines file. Bad records come out as InputErrors, in place; `lines`
 * can refuse overlong lines unread.
 */
export function readGsm8kJsonl(
  path: string,
  lines: LineOptions = {},
): AsyncGenerator<Problem | InputError> {
  return readJsonl(path, gsm8kProblem, lines);
}

/** Streams a `{question, cot, answer}` JSON-lines file (GSM8K-Aug-NL), like the above. */
export function readNlJsonl(
  path: string,
  lines: LineOptions = {},
): AsyncGenerator<Problem | InputError> {
  return readJsonl(path, nlProblem, lines);
}

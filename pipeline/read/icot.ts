/**
 * The iCoT text format of GSM8K-Aug: one record per line, `question||<<a>> <<b>> #### answer`.
 *
 * Like the reference preprocessing, the CoT is the text between `||` and the first `##`, and
 * the answer is the text after the last `##`, trimmed. Unlike it, an empty CoT gives no steps
 * (the reference's `"".split(" ")` gives one empty step), and annotations are taken by pattern
 * rather than by splitting on single spaces, so a space inside `<< >>` does not cut a step.
 * A CoT that is not only annotations (gsm8k_aug/train_no_aug.txt-style prose) is `rationale`.
 *
 * @module
 */
import type { Problem } from "../types.ts";
import { bareCrNote, type LineOptions, readLinesOrErrors } from "./lines.ts";
import { excerpt, makeProblem, type RecordAt, splitCot } from "./record.ts";
import { InputError } from "./input_error.ts";

/** Parses one iCoT line, or says why it cannot. */
export function icotProblem(text: string, at: RecordAt): Problem | InputError {
  const bar = text.indexOf("||");
  if (bar === -1) {
    return new InputError({
      ...at,
      field: "cot",
      problem: `expected "question||cot #### answer", got ${excerpt(text)} (no "||")`,
    });
  }
  const second = text.indexOf("||", bar + 2);
  if (second !== -1) {
    // One "||" per record: a second one is a record run into this one, whose question, steps
    // and answer would be mixed with this one's.
    return new InputError({
      ...at,
      problem: `holds a second "||" at character ${second + 1}, so two records run together ` +
        `on one line${bareCrNote(text)}`,
      hint: "put each record on a line of its own, or pass --on-error skip",
    });
  }
  const question = text.slice(0, bar);
  if (question.trim() === "") {
    return new InputError({
      ...at,
      field: "question",
      problem: 'expected text before "||", got nothing',
    });
  }
  const rest = text.slice(bar + 2);
  const hash = rest.indexOf("##");
  if (hash === -1) {
    return new InputError({
      ...at,
      field: "answer",
      problem: `expected the line to end in "#### <answer>", got ${
        excerpt(rest.slice(-40))
      } (no "##")`,
    });
  }
  const answer = rest.slice(rest.lastIndexOf("##") + 2).trim();
  if (answer === "") {
    return new InputError({
      ...at,
      field: "answer",
      problem: 'expected an answer after "####", got nothing',
    });
  }
  return makeProblem(at, { question, ...splitCot(rest.slice(0, hash), "math"), answer });
}

/**
 * Streams an iCoT text file. Blank lines are skipped; bad lines (and lines that are not
 * UTF-8) come out as InputErrors; `lines` can refuse overlong lines unread.
 */
export async function* readIcot(
  path: string,
  lines: LineOptions = {},
): AsyncGenerator<Problem | InputError> {
  for await (const l of readLinesOrErrors(path, lines)) {
    if (l instanceof InputError) yield l;
    else if (l.text.trim() !== "") yield icotProblem(l.text, { file: path, line: l.line });
  }
}

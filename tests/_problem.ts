/**
 * A parsed problem for the pipeline's unit tests: defaults for every field, overridden by
 * `fields`.
 *
 * @module
 */
import type { Problem } from "../pipeline/types.ts";

/** A problem with `fields` set and neutral defaults for the rest. */
export function problem(fields: Partial<Problem>): Problem {
  return {
    id: "t:1",
    source: { file: "t", line: 1 },
    question: "q?",
    rationale: null,
    mathSteps: null,
    answer: "0",
    ...fields,
  };
}

/**
 * The questions of the evaluation sets that carry no chain of thought, and so no build format
 * reads: GSM-Hard and MultiArith (JSON lines `{input, target}`, GSM-Hard with `code`), and
 * SVAMP (a JSON array of `{Body, Question, ...}`, or its JSON-lines copy `{input, target}`).
 * `deno task eval` answers them, and `--exclude` keeps their near copies out of a build.
 *
 * @module
 */
import { InputError } from "./input_error.ts";
import { readJsonArray } from "./json_array.ts";
import { readJsonl } from "./jsonl.ts";
import { firstLine } from "./detect.ts";
import { basename, type RecordAt } from "./record.ts";

/**
 * SVAMP's question: `Body` and `Question` joined with ". " where the body lacks a full stop
 * ("... on each pack" gives "... on each pack. How much ..."). This gives exactly the
 * questions of SVAMP's JSON-lines copy.
 *
 * @example
 * ```ts
 * import { svampQuestion } from "./eval_questions.ts";
 * console.assert(svampQuestion("Tom has 3 kites", "How many?") === "Tom has 3 kites. How many?");
 * console.assert(svampQuestion("", "How many?") === "How many?");
 * ```
 */
export function svampQuestion(body: string, question: string): string {
  const b = body.trim();
  return b === "" ? question : `${b}${/[.?!]$/.test(b) ? "" : "."} ${question.trim()}`;
}

/** One question of an evaluation set, with where it is. */
export interface EvalSetQuestion {
  /** `<basename>:<line or element>`. */
  id: string;
  /** The question text. */
  question: string;
}

const isText = (v: unknown): v is string => typeof v === "string" && v.trim() !== "";

/**
 * Streams the questions of a GSM-Hard, MultiArith or SVAMP file: a JSON array's elements need
 * a non-empty `Question` (and `Body`, a string, if they have one); JSON lines need a non-empty
 * `input`. A record without them is an {@linkcode InputError} naming it, in place.
 *
 * @example
 * ```ts
 * import { readEvalSetQuestions } from "./eval_questions.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * await Deno.writeTextFile(path, '{"input": "Ann has 3 pens and buys 2. How many?", "target": 5}\n');
 * for await (const q of readEvalSetQuestions(path)) console.assert(!(q instanceof Error) && q.question.startsWith("Ann"));
 * await Deno.remove(path);
 * ```
 */
export async function* readEvalSetQuestions(
  path: string,
): AsyncGenerator<EvalSetQuestion | InputError> {
  const name = basename(path);
  if ((await firstLine(path))?.text.trimStart().startsWith("[")) {
    const data = await readJsonArray(path, "a JSON array of {Body, Question, ...} (SVAMP)");
    for (let i = 0; i < data.length; i++) {
      const at: RecordAt = { file: path, line: i + 1, element: true };
      const e = data[i] as { Body?: unknown; Question?: unknown } | null;
      if (e === null || typeof e !== "object" || Array.isArray(e) || !isText(e.Question)) {
        yield new InputError({
          ...at,
          field: "Question",
          problem: "expected an object with a non-empty string Question (SVAMP's elements)",
        });
      } else if (e.Body !== undefined && typeof e.Body !== "string") {
        yield new InputError({ ...at, field: "Body", problem: "expected a string" });
      } else {
        yield { id: `${name}:${i + 1}`, question: svampQuestion(e.Body ?? "", e.Question) };
      }
    }
    return;
  }
  yield* readJsonl(path, (raw, at) => {
    const input = (raw as { input?: unknown } | null)?.input;
    if (raw === null || typeof raw !== "object" || Array.isArray(raw) || !isText(input)) {
      return new InputError({
        ...at,
        field: "input",
        problem: "expected a JSON object with a non-empty string input (the question)",
      });
    }
    return { id: `${name}:${at.line}`, question: input.trim() };
  });
}

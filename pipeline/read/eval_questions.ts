/**
 * The questions of the evaluation sets that carry no chain of thought, and so no build format
 * reads: GSM-Hard and MultiArith (JSON lines `{input, target}`, GSM-Hard with `code`), and
 * SVAMP (a JSON array of `{Body, Question, ...}`, or its JSON-lines copy `{input, target}`).
 * `deno task eval` answers them, and `--exclude` keeps their near copies out of a build. Also
 * the questions of every split of a dataset directory that `deno task build-dataset` wrote, so
 * that a build can be kept clear of an earlier one.
 *
 * @module
 */
import { InputError } from "./input_error.ts";
import { MANIFEST_FILE, ManifestError, readManifest, type SplitInfo } from "../manifest.ts";
import { rebuildCommand } from "../rebuild_command.ts";
import { exists } from "../../base/exists.ts";
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

/** The advice for a dataset directory whose manifest cannot be read. */
const DATASET_HINT = "rebuild that dataset (deno task build-dataset), or give another --exclude";

/**
 * Streams the questions of every split of a dataset directory written by `deno task
 * build-dataset` (docs/dataset-format.md), split by split in the manifest's order: the
 * `question` of every record of the split's records file (`<split>-<id>.records.jsonl`, every
 * record read, the dropped ones too). Ids are `<split>/<record id>`.
 *
 * @throws {InputError} about the whole directory (line 0) when it holds no `manifest.json` or
 * its manifest cannot be read, and at the line of a record that is not JSON or has no
 * question: the records file is damaged, since a build writes it whole.
 *
 * @example
 * ```ts ignore
 * import { readDatasetQuestions } from "./eval_questions.ts";
 * for await (const q of readDatasetQuestions("out/data/gsm8k")) console.log(q.id, q.question);
 * ```
 */
export async function* readDatasetQuestions(dir: string): AsyncGenerator<EvalSetQuestion> {
  if (!(await exists(`${dir}/${MANIFEST_FILE}`))) {
    throw new InputError({
      file: dir,
      line: 0,
      problem: `is a directory but not a dataset (it has no ${MANIFEST_FILE})`,
      hint: "give a file of questions, or a dataset directory that deno task build-dataset wrote",
    });
  }
  let splits: [string, SplitInfo][];
  try {
    splits = Object.entries((await readManifest(dir)).splits);
  } catch (e) {
    if (!(e instanceof ManifestError)) throw e;
    throw new InputError({
      file: dir,
      line: 0,
      problem: `a dataset directory whose manifest cannot be read (${e.message})`,
      hint: DATASET_HINT,
      cause: e,
    });
  }
  for (const [split, info] of splits) {
    const items = readJsonl(`${dir}/${info.records}`, (raw, at) => {
      const r = raw as { id?: unknown; question?: unknown } | null;
      if (r === null || typeof r !== "object" || Array.isArray(r) || !isText(r.question)) {
        return new InputError({
          ...at,
          field: "question",
          problem: "expected a dataset record with a non-empty string question",
        });
      }
      const id = typeof r.id === "string" ? r.id : `${basename(at.file)}:${at.line}`;
      return { id: `${split}/${id}`, question: r.question.trim() };
    });
    for await (const q of items) {
      if (q instanceof InputError) {
        throw new InputError({
          file: q.file,
          line: q.line,
          offset: q.offset,
          reason: q.reason,
          field: q.field,
          problem: `${q.problem}; the records file is damaged (a build writes it whole)`,
          hint: `rebuild split ${split} with ${rebuildCommand(dir, split, info)}, or give ` +
            `another --exclude`,
        });
      }
      yield q;
    }
  }
}

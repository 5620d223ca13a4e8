/**
 * Helpers the readers share: zod checks that turn into {@linkcode InputError}s, the split of
 * a GSM8K answer at `####`, the math-or-prose decision for a CoT, and the Problem builder.
 *
 * @module
 */
import type { z } from "zod";
import type { Problem } from "../types.ts";
import { InputError } from "./input_error.ts";
import { describeValue } from "../../base/json.ts";

/** Where a record sits, for ids and messages. */
export interface RecordAt {
  /** The source file, as given. */
  file: string;
  /** 1-based line or element. */
  line: number;
  /** `line` is a JSON array's element number: messages say "element N", not `file:N`. */
  element?: boolean;
}

/**
 * Checks `raw` against `schema`. On failure returns an InputError for the first bad field,
 * whose message reads `expected <expectations[field]>, got <what was there>`, then `hint`
 * (default: fix the record or skip it).
 */
export function checkRecord<T>(
  schema: z.ZodType<T>,
  raw: unknown,
  expectations: Record<string, string>,
  at: RecordAt,
  hint?: string,
): T | InputError {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  if (issue.path.length === 0) {
    return new InputError({
      ...at,
      problem: `expected a JSON object with fields ${Object.keys(expectations).join(", ")}, got ${
        describeValue(raw)
      }`,
      hint,
    });
  }
  const field = issue.path.map(String).join(".");
  const top = String(issue.path[0]);
  const value = (raw as Record<string, unknown>)[top];
  const got = issue.code === "custom" ? issue.message : describeValue(value);
  return new InputError({
    ...at,
    field,
    problem: `expected ${expectations[top] ?? "a valid value"}, got ${got}`,
    hint,
  });
}

/** A short excerpt of a value for messages. */
export function excerpt(s: string, max = 40): string {
  const flat = s.replace(/\s+/g, " ").trim();
  return JSON.stringify(flat.length > max ? flat.slice(0, max - 3) + "..." : flat);
}

/** The GSM8K expectation for an `answer` field. */
export const GSM8K_ANSWER = 'a string ending in "#### <number>"';

/** True when a GSM8K answer string has `####` followed by a non-empty answer. */
export function hasGsm8kAnswer(s: string): boolean {
  const i = s.lastIndexOf("####");
  return i !== -1 && s.slice(i + 4).trim() !== "";
}

/** Why a GSM8K answer string is unusable, for the zod refinement's message. */
export function gsm8kAnswerProblem(s: string): string {
  return s.includes("####")
    ? `${excerpt(s.slice(-40))} (nothing after "####")`
    : `${excerpt(s.slice(-40))} (no "####")`;
}

/**
 * Splits a GSM8K answer at its last `####`: the rationale before it (trimmed), the final
 * answer after it (trimmed). The caller has checked {@linkcode hasGsm8kAnswer}.
 */
export function splitGsm8kAnswer(s: string): { rationale: string; answer: string } {
  const i = s.lastIndexOf("####");
  return { rationale: s.slice(0, i).trim(), answer: s.slice(i + 4).trim() };
}

const ONLY_ANNOTATIONS = /^(?:<<[^<>]*>>\s*)+$/;
const ANNOTATION = /<<[^<>]*>>/g;

/**
 * Decides whether a CoT is a chain of calculator annotations (`<<a>> <<b>>`, as in GSM8K-Aug)
 * or prose. Math chains become `mathSteps`; anything else (including prose that carries
 * annotations) stays `rationale`, from which segmentation extracts the annotations. An empty
 * CoT gives `emptyAs`, which depends on what the format normally holds.
 */
export function splitCot(
  cot: string,
  emptyAs: "math" | "prose",
): { rationale: string | null; mathSteps: string[] | null } {
  const t = cot.trim();
  if (t === "") {
    return emptyAs === "math"
      ? { rationale: null, mathSteps: [] }
      : { rationale: "", mathSteps: null };
  }
  if (ONLY_ANNOTATIONS.test(t)) return { rationale: null, mathSteps: t.match(ANNOTATION) ?? [] };
  return { rationale: t, mathSteps: null };
}

const ANNOTATION_STEP = /^<<[^<>]*>>$/;

/**
 * Decides what a list of steps is. Steps that are all `<<...>>` annotations go to
 * `mathSteps`; otherwise (sentences, or a mix) they are joined with newlines into `rationale`,
 * one line per step, so that segmentation keeps one step per element. Blank steps are dropped.
 */
export function classifySteps(
  steps: string[],
): { rationale: string | null; mathSteps: string[] | null } {
  const kept = steps.map((s) => s.trim()).filter((s) => s !== "");
  return kept.every((s) => ANNOTATION_STEP.test(s))
    ? { rationale: null, mathSteps: kept }
    : { rationale: kept.join("\n"), mathSteps: null };
}

/** The basename of a path, for ids. */
export function basename(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return path.slice(i + 1);
}

/**
 * The name each input file's ids start with, for files read in one build: the basename, or,
 * where two files share one (`d1/x.jsonl`, `d2/x.jsonl`), the shortest end of each path that
 * tells them apart (`d1/x.jsonl`), or else the whole path as given. Paths that are the same
 * text get the same name; the build refuses one file given twice before asking.
 *
 * @example
 * ```ts
 * import { idLabels } from "./record.ts";
 * const l = idLabels(["d1/x.jsonl", "d2/x.jsonl", "data/y.jsonl"]);
 * console.assert(l.get("d1/x.jsonl") === "d1/x.jsonl" && l.get("data/y.jsonl") === "y.jsonl");
 * ```
 */
export function idLabels(paths: readonly string[]): Map<string, string> {
  const parts = (p: string) => p.split(/[\\/]+/).filter((c) => c !== "" && c !== ".");
  const byBase = new Map<string, string[]>();
  for (const p of new Set(paths)) {
    const b = basename(p);
    byBase.set(b, [...(byBase.get(b) ?? []), p]);
  }
  const out = new Map<string, string>();
  for (const [base, group] of byBase) {
    for (const p of group) {
      const others = group.filter((q) => q !== p).map(parts);
      const mine = parts(p);
      let label = group.length === 1 ? base : p;
      for (let n = 2; n <= mine.length && group.length > 1; n++) {
        const end = mine.slice(-n).join("/");
        if (others.every((o) => o.slice(-n).join("/") !== end)) {
          label = end;
          break;
        }
      }
      out.set(p, label);
    }
  }
  return out;
}

/**
 * Notes each record's id while a file is read, to refuse one the file already used. Only
 * ids a file carries can repeat (Coconut's `idx`, SVAMP's `ID`); line-based ids cannot.
 */
export class IdRegister {
  #seen = new Map<string, number>();

  /**
   * Null when `id` is new, else an InputError at `at` naming the record that has it already.
   * `field` names where the id comes from, `what` says how records are numbered and `why`
   * what the ids are for (by default, a build's).
   */
  check(
    id: string,
    at: RecordAt,
    field: string,
    what: string,
    why = "records.jsonl and report.csv name records by id, and augmentation seeds each " +
      "record's variants from it",
  ): InputError | null {
    const first = this.#seen.get(id);
    if (first === undefined) {
      this.#seen.set(id, at.line);
      return null;
    }
    return new InputError({
      ...at,
      field,
      problem: `the id ${JSON.stringify(id)} is already that of ${what} ${first}; ids must be ` +
        `unique (${why})`,
      hint: `give each record its own "${field}" (or leave "${field}" out of every record, ` +
        `so ids number the ${what}s), or pass --on-error skip to drop the repeat`,
    });
  }
}

/** Builds a Problem; `id` defaults to `<basename>:<line>`. */
export function makeProblem(
  at: RecordAt,
  fields: Omit<Problem, "id" | "source"> & { id?: string },
): Problem {
  return {
    id: fields.id ?? `${basename(at.file)}:${at.line}`,
    source: { file: at.file, line: at.line },
    question: fields.question.trim(),
    rationale: fields.rationale,
    mathSteps: fields.mathSteps,
    answer: fields.answer.trim(),
  };
}

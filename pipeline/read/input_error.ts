/**
 * The errors that readers raise.
 *
 * @module
 */

/** The hint for a bad record: the user can repair it, or skip bad records on the command line. */
export const RECORD_HINT = "fix the record or pass --on-error skip";

/** The hint for a problem with the whole file, which skipping records cannot cure. */
export const FILE_HINT = "fix the file or pass the right --format";

/**
 * Why a record cannot be used: `malformed` (invalid JSON, a missing or wrongly typed field, no
 * `####`...), `invalid_utf8` (bytes that are not UTF-8 text), `too_large` (a field or a chain
 * of thought over the size limits) or `checksum_mismatch` (a damaged Parquet page).
 */
export type InputReason = "malformed" | "invalid_utf8" | "too_large" | "checksum_mismatch";

/** Fields of {@linkcode InputError}'s constructor. */
export interface InputErrorInit {
  /** The source file, as given. */
  file: string;
  /** 1-based line (or element) of the bad record; 0 when the whole file is at fault. */
  line: number;
  /** `line` is a JSON array's element number: the message says "element N", not `file:N`. */
  element?: boolean;
  /** The field at fault, if one is. */
  field?: string;
  /** What is wrong, e.g. `expected a string, got a number`. */
  problem: string;
  /** What to do about it; defaults to {@linkcode RECORD_HINT}. */
  hint?: string;
  /** Why the record cannot be used; defaults to `malformed`. */
  reason?: InputReason;
  /** The byte offset in the file of what is wrong, when it is known. */
  offset?: number;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * A structurally bad input record: invalid JSON, a missing or wrongly typed field, no `####`
 * where one is required, a missing CSV column. Content problems (wrong arithmetic and the like)
 * are not input errors; validation reports them as reasons.
 *
 * The message reads `file:line: field "name": problem; hint`, so a user can open the file at
 * the line (`file: element N: ...` for the Nth element of a JSON array read whole). `line` is
 * 0 (and left out of the message) when the whole file is at fault.
 *
 * @example
 * ```ts
 * import { InputError } from "./input_error.ts";
 * const e = new InputError({ file: "data/x.jsonl", line: 17, field: "answer", problem: "missing" });
 * console.assert(e.message === 'data/x.jsonl:17: field "answer": missing; fix the record or pass --on-error skip');
 * ```
 */
export class InputError extends Error {
  /** The source file, as given. */
  readonly file: string;
  /** 1-based line (or JSON array element) of the record; 0 for the whole file. */
  readonly line: number;
  /** The field at fault, when one is. */
  readonly field?: string;
  /** Why the record cannot be used. */
  readonly reason: InputReason;
  /** The byte offset in the file of what is wrong, when it is known. */
  readonly offset?: number;
  /** What is wrong, with the field but without the place and the hint: for reports. */
  readonly problem: string;

  /** Builds the error and its message from the parts. */
  constructor(init: InputErrorInit) {
    const where = init.line <= 0
      ? init.file
      : init.element
      ? `${init.file}: element ${init.line}`
      : `${init.file}:${init.line}`;
    const problem = init.field === undefined
      ? init.problem
      : `field "${init.field}": ${init.problem}`;
    super(`${where}: ${problem}; ${init.hint ?? RECORD_HINT}`, { cause: init.cause });
    this.name = "InputError";
    this.file = init.file;
    this.line = init.line;
    this.reason = init.reason ?? "malformed";
    this.problem = problem;
    if (init.field !== undefined) this.field = init.field;
    if (init.offset !== undefined) this.offset = init.offset;
  }
}

/** The input formats the pipeline reads, described for messages about a file it does not. */
export const PIPELINE_FORMATS_TEXT = "gsm8k (JSON lines {question, answer}), nl (JSON lines " +
  "{question, cot, answer}), coconut (a JSON array of {question, steps, answer}), icot (lines " +
  "question||<<a>> <<b>> #### N), csv and parquet (columns question and answer)";

/** Options of {@linkcode FormatError}. */
export interface FormatErrorOptions {
  /**
   * The file is none of the formats the readers know (SVAMP's JSON array, say), rather than
   * one whose format could not be told: no `--format` reads it.
   */
  unsupported?: boolean;
  /** The formats the command reads, described; default {@linkcode PIPELINE_FORMATS_TEXT}. */
  supported?: string;
  /**
   * The `--format` values the message offers for a file whose format could not be told;
   * default `gsm8k|parquet|icot|coconut|nl|csv`, the pipeline's.
   */
  formats?: string;
  /**
   * The file holds no line but blank ones: no `--format` would find a record in it, so the
   * message asks for the right file instead.
   */
  empty?: boolean;
}

/**
 * The format of a file could not be told, or is not one the readers know. The message names
 * the file and asks for `--format`, or, for a file in none of the formats (`unsupported`),
 * lists those the readers know and asks for a conversion.
 *
 * @example
 * ```ts
 * import { FormatError } from "./input_error.ts";
 * const e = new FormatError("x.dat", "unknown extension");
 * console.assert(e.message.includes("--format"));
 * const svamp = new FormatError("SVAMP.json", "keys Body, Question", { unsupported: true });
 * console.assert(svamp.message.includes("not in a format this command reads"));
 * ```
 */
export class FormatError extends Error {
  /** The file whose format is in doubt. */
  readonly file: string;
  /** What was seen, e.g. `the first record has keys input, target`. */
  readonly why: string;
  /** True when the file is in none of the formats the readers know. */
  readonly unsupported: boolean;
  /** True when the file holds no line but blank ones. */
  readonly empty: boolean;
  /** What to do: pass `--format`, convert the file, or give another. */
  readonly hint: string;

  /** `why` says what was seen, e.g. `the first record has keys input, target`. */
  constructor(file: string, why: string, opts: FormatErrorOptions = {}) {
    const unsupported = opts.unsupported ?? false;
    const empty = opts.empty ?? false;
    const hint = unsupported
      ? `this command reads ${opts.supported ?? PIPELINE_FORMATS_TEXT}; convert the file to ` +
        "one of them (docs/pipeline.md, section 1)"
      : empty
      ? "check the path, or give a file that holds problems"
      : `pass --format ${opts.formats ?? "gsm8k|parquet|icot|coconut|nl|csv"}`;
    super(
      unsupported
        ? `${file}: not in a format this command reads (${why}); ${hint}`
        : empty
        ? `${file}: holds no record (${why}); ${hint}`
        : `${file}: cannot tell the input format (${why}); ${hint}`,
    );
    this.name = "FormatError";
    this.file = file;
    this.why = why;
    this.unsupported = unsupported;
    this.empty = empty;
    this.hint = hint;
  }
}

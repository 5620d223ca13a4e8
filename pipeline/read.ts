/**
 * Readers: stream source files of any supported format as {@linkcode Problem} records.
 *
 * | format    | file                                                        | CoT goes to             |
 * | --------- | ----------------------------------------------------------- | ----------------------- |
 * | `gsm8k`   | JSON lines `{question, answer}`, answer ends in `#### N`    | `rationale`             |
 * | `parquet` | Parquet, columns `question`, `answer` (GSM8K) or + `cot`    | as `gsm8k` / as `nl`    |
 * | `icot`    | text lines `question\|\|<<a>> <<b>> #### N`                 | `mathSteps` (or prose)  |
 * | `coconut` | one JSON array of `{question, steps, answer, idx?}`         | `mathSteps` (or prose)  |
 * | `nl`      | JSON lines `{question, cot, answer}` (GSM8K-Aug-NL)         | `rationale` (or math)   |
 * | `csv`     | header with `question`, `answer`, optional `cot` or `steps` | either                  |
 *
 * `csv` reads tab-separated values too (`.tsv`, `.tab`, or a header with tabs and no comma).
 *
 * Text, JSON lines and CSV stream line by line, Parquet row group by row group; only a
 * Coconut array is parsed whole. Text must be UTF-8. A structurally bad record, one that is
 * not UTF-8 or one with a field over `maxFieldBytes` raises {@linkcode InputError} naming
 * `file:line` and the field, or is skipped with `onError: "skip"`. Problems with a whole file
 * (not JSON, a missing column, a Parquet page that fails its checksum) always throw. See
 * docs/pipeline.md.
 *
 * @module
 */
import { checkWhole } from "../base/whole.ts";
import {
  type OptionNames,
  refuseMistyped,
  refuseUnknownOptions,
  refuseUnlisted,
} from "../base/options.ts";
import type { Problem } from "./types.ts";
import { readCoconut } from "./read/coconut.ts";
import { readCsv } from "./read/csv.ts";
import { detectFormat, type Format, FORMATS, refuseNotText } from "./read/detect.ts";
import { FormatError, InputError } from "./read/input_error.ts";
import { readIcot } from "./read/icot.ts";
import { readGsm8kJsonl, readNlJsonl } from "./read/jsonl.ts";
import { readParquet } from "./read/parquet.ts";
import { DEFAULT_MAX_FIELD_BYTES, fieldSizeError, lineLimit } from "./limits.ts";
import type { LineOptions } from "./read/lines.ts";
import { basename, idLabels } from "./read/record.ts";

export { detectFormat, FormatError, FORMATS, idLabels, InputError };
export type { Format };
export type { InputReason } from "./read/input_error.ts";

/** Options of {@linkcode readProblems}. */
export interface ReadOptions {
  /** The input format; `"auto"` (the default) detects it with {@linkcode detectFormat}. */
  format?: Format | "auto";
  /** What to do with a malformed record: throw (the default) or skip it. */
  onError?: "throw" | "skip";
  /** Called with each malformed record's error when skipping. */
  onSkip?: (e: InputError) => void;
  /**
   * The most UTF-8 bytes the question, the chain of thought and the answer may each have
   * (default 65,536); a longer one is an InputError with reason `too_large`.
   */
  maxFieldBytes?: number;
  /**
   * What ids start with in place of the file's basename (`<label>:<line>`): the build passes
   * {@linkcode idLabels}'s name when two of its input files share a basename.
   */
  idLabel?: string;
}

/** Every option of {@linkcode ReadOptions}. */
const READ_OPTIONS: OptionNames<ReadOptions> = {
  format: true,
  onError: true,
  onSkip: true,
  maxFieldBytes: true,
  idLabel: true,
};

/** The readers; the line-based ones refuse a line too long to hold fields within limits. */
const READERS: Record<
  Format,
  (path: string, lines: LineOptions) => AsyncGenerator<Problem | InputError>
> = {
  gsm8k: readGsm8kJsonl,
  parquet: readParquet,
  icot: readIcot,
  coconut: readCoconut,
  nl: readNlJsonl,
  csv: readCsv,
};

/** The values of an `onError` option. */
export const ON_ERROR: readonly string[] = ["throw", "skip"];

/**
 * Streams the problems of one file, in file order.
 *
 * @throws {RangeError} for an option {@linkcode ReadOptions} does not have, a `maxFieldBytes`
 * that is not a whole number of at least 1, an `onError` that is neither `"throw"` nor
 * `"skip"`, or a `format` that is not `"auto"` or one of {@linkcode FORMATS}.
 *
 * @example
 * ```ts ignore
 * import { readProblems } from "./read.ts";
 * let skipped = 0;
 * for await (const p of readProblems("data/train.jsonl", { onError: "skip", onSkip: () => skipped++ })) {
 *   console.log(p.id, p.answer);
 * }
 * ```
 */
export async function* readProblems(path: string, opts: ReadOptions = {}): AsyncGenerator<Problem> {
  refuseUnknownOptions("readProblems", opts, READ_OPTIONS);
  refuseMistyped("readProblems", opts, { onSkip: "function", idLabel: "string" });
  const maxBytes = opts.maxFieldBytes ?? DEFAULT_MAX_FIELD_BYTES;
  checkWhole("readProblems: maxFieldBytes", maxBytes, 1, "bytes");
  refuseUnlisted("readProblems", "onError", opts.onError, ON_ERROR);
  refuseUnlisted("readProblems", "format", opts.format, ["auto", ...FORMATS]);
  const format = opts.format === undefined || opts.format === "auto"
    ? await detectFormat(path)
    : opts.format;
  const reader = READERS[format];
  if (reader === undefined) throw new FormatError(path, `unknown format "${format}"`);
  if (format !== "parquet") {
    await refuseNotText(path, format, "leave out --format, or pass --format parquet");
  }
  const skip = opts.onError === "skip";
  // Every reader's ids are `<basename>:...` (pipeline/read/record.ts, makeProblem).
  const base = `${basename(path)}:`;
  const label = opts.idLabel === undefined ? null : `${opts.idLabel}:`;
  for await (const item of reader(path, lineLimit(path, maxBytes))) {
    const bad = item instanceof InputError ? item : fieldSizeError(item, maxBytes);
    if (bad !== null) {
      if (!skip) throw bad;
      opts.onSkip?.(bad);
      continue;
    }
    const p = item as Problem;
    if (label !== null && label !== base && p.id.startsWith(base)) {
      p.id = label + p.id.slice(base.length);
    }
    yield p;
  }
}

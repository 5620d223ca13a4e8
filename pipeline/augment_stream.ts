/**
 * Augmentation and decontamination over a stream of problems, as the build uses them: each
 * problem is followed by its variants, near copies of excluded (evaluation) questions can be
 * dropped, and every outcome is counted in an {@linkcode AugmentReport}.
 *
 * @module
 */
import { augment, type AugmentReport } from "./augment.ts";
import { NEAR_COPY_THRESHOLD, NgramIndex } from "./overlap.ts";
import { FormatError, InputError, type ReadOptions, readProblems } from "./read.ts";
import type { Problem } from "./types.ts";
import { readDatasetQuestions, readEvalSetQuestions } from "./read/eval_questions.ts";
import { isDirectory } from "../base/exists.ts";

/** Options of {@linkcode withVariants}. */
export interface StreamAugmentOptions {
  /** Variants per problem (0: none, the stream only passes through and is decontaminated). */
  variants: number;
  /** Seed of the draws. */
  seed: number;
  /** Questions to keep out (see {@linkcode excludeIndex}). */
  exclude?: NgramIndex;
  /** Containment at or above which a question is a near copy (default 0.3). */
  nearCopy?: number;
  /** Also drop the originals that are near copies (default true); else only skip their variants. */
  dropExcluded?: boolean;
}

/**
 * Yields each problem followed by its variants (`<id>#aug<k>`), counting outcomes in `report`.
 * With `exclude`, a problem whose question is a near copy of an excluded one gets no variants
 * and, unless `dropExcluded` is false, is not yielded either. With `variants: 0` the stream
 * only passes through, and the report counts only the excluded problems.
 *
 * @example
 * ```ts
 * import { withVariants } from "./augment_stream.ts";
 * import { AugmentReport } from "./augment.ts";
 * async function* one() {
 *   yield {
 *     id: "x:1",
 *     source: { file: "x", line: 1 },
 *     question: "Ann has 7 boxes with 12 pens in each. How many pens?",
 *     rationale: "She has 7*12 = <<7*12=84>>84 pens.",
 *     mathSteps: null,
 *     answer: "84",
 *   };
 * }
 * const report = new AugmentReport();
 * const out = [];
 * for await (const p of withVariants(one(), { variants: 2, seed: 1 }, report)) out.push(p.id);
 * console.assert(out[0] === "x:1" && out.length === 3 && report.summary().augmented === 1);
 * ```
 */
export async function* withVariants(
  problems: AsyncIterable<Problem> | Iterable<Problem>,
  opts: StreamAugmentOptions,
  report: AugmentReport,
): AsyncGenerator<Problem> {
  const threshold = opts.nearCopy ?? NEAR_COPY_THRESHOLD;
  const drop = opts.dropExcluded ?? true;
  for await (const p of problems) {
    if (opts.exclude !== undefined) {
      const hit = opts.exclude.nearest(p.question);
      if (hit !== null && hit.containment >= threshold) {
        report.add({
          id: p.id,
          status: "skipped",
          reason: "near_copy_of_excluded",
          detail: `${hit.id}, containment ${hit.containment.toFixed(2)}`,
        });
        if (!drop) yield p;
        continue;
      }
    }
    yield p;
    if (opts.variants === 0) continue;
    const it = augment(p, { variants: opts.variants, seed: opts.seed });
    for (;;) {
      const r = it.next();
      if (r.done) {
        report.add(r.value);
        break;
      }
      yield r.value;
    }
  }
}

/**
 * An n-gram index of the questions of some files (any input format, or GSM-Hard, MultiArith
 * and SVAMP) and dataset directories (every split's questions), for `exclude`: the evaluation
 * sets whose near copies must not reach training data.
 *
 * @example
 * ```ts ignore
 * import { excludeIndex } from "./augment_stream.ts";
 * const index = await excludeIndex(["data/gsm8k/test.jsonl"]);
 * console.log(index.size);
 * ```
 */
export async function excludeIndex(paths: string[], opts: ReadOptions = {}): Promise<NgramIndex> {
  const index = new NgramIndex();
  for (const path of paths) {
    if (await isDirectory(path)) {
      // A dataset that deno task build-dataset wrote; its errors name the directory, or the
      // line of its records file, with their own advice.
      for await (const q of readDatasetQuestions(path)) index.add(q.id, q.question);
      continue;
    }
    try {
      try {
        for await (const p of readProblems(path, opts)) index.add(p.id, p.question);
      } catch (e) {
        // The evaluation sets without a chain of thought (GSM-Hard, MultiArith, SVAMP) are
        // what decontamination is for, though no input format reads them: their questions
        // are enough. Anything else keeps the detector's error.
        if (!(e instanceof FormatError && e.unsupported)) throw e;
        if (!(await addEvalSetQuestions(index, path))) throw e;
      }
    } catch (e) {
      // The build's --on-error and --format are the inputs', not the exclude files': say
      // which file it is, and what to do about it.
      if (e instanceof InputError) {
        throw new InputError({
          file: e.file,
          line: e.line,
          problem: `in an --exclude file: ${e.problem}`,
          reason: e.reason,
          offset: e.offset,
          // A fault of one record, or of the whole file (a directory, say).
          hint: e.line > 0 ? EXCLUDE_HINT : "give the path of a file of questions",
        });
      }
      if (e instanceof FormatError) {
        throw new InputError({
          file: path,
          line: 0,
          problem: e.unsupported
            ? `an --exclude file in a format the build does not read (${e.why})`
            : `an --exclude file whose format cannot be told (${e.why})`,
          hint: e.unsupported
            ? `${e.hint}; --exclude reads the formats --input does, and GSM-Hard and ` +
              `MultiArith (JSON lines {input, target}) and SVAMP (a JSON array of {Body, ` +
              `Question})`
            : "give it in a format the build reads by its records (docs/pipeline.md)",
        });
      }
      throw e;
    }
  }
  return index;
}

/**
 * Adds the questions of a GSM-Hard, MultiArith or SVAMP file to `index`; false, adding
 * nothing, when its first record is none of theirs (the file is in another format). A later
 * bad record throws, as a bad record of any exclude file does.
 */
async function addEvalSetQuestions(index: NgramIndex, path: string): Promise<boolean> {
  let first = true;
  for await (const q of readEvalSetQuestions(path)) {
    if (q instanceof InputError) {
      if (first) return false;
      throw q;
    }
    first = false;
    index.add(q.id, q.question);
  }
  return !first;
}

/** What to do about a bad record of an exclude file, which no flag skips. */
const EXCLUDE_HINT = "fix or remove that record: every question of an --exclude file is kept " +
  "out of the data, and none of them is skipped";

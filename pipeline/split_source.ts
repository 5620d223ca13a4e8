/**
 * The problems of one split, as the build reads them: the input files in order (each problem
 * followed by its augmented variants when asked, near copies of excluded questions dropped),
 * then the generated records. What the extras did is returned for the manifest.
 *
 * @module
 */
import { Sha256 } from "../base/sha256.ts";
import { AugmentReport } from "./augment.ts";
import { excludeIndex, withVariants } from "./augment_stream.ts";
import type { AugmentInfo, ExcludeInfo, SyntheticInfo } from "./manifest.ts";
import { NEAR_COPY_THRESHOLD, type NgramIndex } from "./overlap.ts";
import { type Format, type InputError, readProblems } from "./read.ts";
import { generate, resolveSyntheticOptions, type SyntheticOptions } from "./synthetic.ts";
import type { Problem } from "./types.ts";

/** What a split adds to its input files. */
export interface SplitExtras {
  /** Generated records, added after the input files. */
  synthetic?: SyntheticOptions;
  /** Variants per input problem (not per generated record), and their seed (default 0). */
  augment?: { variants: number; seed?: number };
  /** Files (any input format) whose questions, and near copies of them, are kept out. */
  exclude?: string[];
}

/** What the extras did, for the split's manifest entry. */
export interface SplitExtrasInfo {
  /** The generated records. */
  synthetic?: SyntheticInfo;
  /** The augmentation outcome. */
  augment?: AugmentInfo;
  /** The decontamination outcome. */
  exclude?: ExcludeInfo;
}

/** An open split source: its problems, then (after they are consumed) what the extras did. */
export interface SplitSource {
  /** Every problem of the split, with the file it came from (`synthetic` for generated ones). */
  problems: AsyncGenerator<{ path: string; problem: Problem }>;
  /** The manifest fields; complete once `problems` is exhausted. */
  info(): SplitExtrasInfo;
}

/** How the readers treat malformed records. */
export interface SourceReadOptions {
  /** Throw or skip a malformed record. */
  onError: "throw" | "skip";
  /** Called for each skipped record, with why it was skipped. */
  onSkip: (e: InputError) => void;
  /** The most UTF-8 bytes a question, chain of thought or answer may have (default 65,536). */
  maxFieldBytes?: number;
}

/**
 * Opens a split's problems: loads the exclusion index and checks the generator's options
 * before anything is read.
 *
 * @throws {SyntheticOptionsError} for bad generator options.
 */
export async function openSplitSource(
  inputs: { path: string; format: Format; idLabel?: string }[],
  extras: SplitExtras,
  read: SourceReadOptions,
): Promise<SplitSource> {
  const synth = extras.synthetic === undefined
    ? undefined
    : resolveSyntheticOptions(extras.synthetic);
  let index: NgramIndex | undefined;
  if (extras.exclude !== undefined && extras.exclude.length > 0) {
    index = await excludeIndex(extras.exclude);
  }
  const variants = extras.augment?.variants ?? 0;
  const seed = extras.augment?.seed ?? 0;
  const report = new AugmentReport();
  const hash = new Sha256();
  let current = "";

  async function* files(): AsyncGenerator<Problem> {
    for (const { path, format, idLabel } of inputs) {
      current = path;
      yield* readProblems(path, {
        format,
        idLabel,
        onError: read.onError,
        onSkip: read.onSkip,
        maxFieldBytes: read.maxFieldBytes,
      });
    }
  }

  async function* problems(): AsyncGenerator<{ path: string; problem: Problem }> {
    const stream = variants > 0 || index !== undefined
      ? withVariants(files(), { variants, seed, exclude: index }, report)
      : files();
    for await (const problem of stream) yield { path: current, problem };
    if (synth !== undefined) {
      // The hash is the generator's output; near copies of excluded questions then go, as
      // they do from the input files (generated records get no variants).
      const generated = function* () {
        for (const p of generate(synth)) {
          hash.update(`${p.id}\u0000${p.question}\u0000${p.rationale}\u0000${p.answer}\n`);
          yield p;
        }
      };
      const kept = index !== undefined
        ? withVariants(generated(), { variants: 0, seed, exclude: index }, report)
        : generated();
      for await (const p of kept) yield { path: "synthetic", problem: p };
    }
  }

  return {
    problems: problems(),
    info() {
      const out: SplitExtrasInfo = {};
      const s = report.summary();
      if (synth !== undefined) {
        out.synthetic = {
          n: synth.n,
          start: synth.start,
          seed: synth.seed,
          minSteps: synth.minSteps,
          maxSteps: synth.maxSteps,
          maxValue: synth.maxValue,
          digits: synth.digits,
          families: [...synth.families],
          sha256: hash.hex(),
        };
      }
      const { near_copy_of_excluded: excluded = 0, ...reasons } = s.reasons;
      if (variants > 0) {
        const problems = s.problems - excluded;
        out.augment = {
          variants,
          seed,
          problems,
          augmented: s.augmented,
          share: problems === 0 ? 0 : s.augmented / problems,
          made: s.variants,
          reasons: reasons as Record<string, number>,
        };
      }
      if (index !== undefined) {
        out.exclude = {
          files: [...extras.exclude!],
          questions: index.size,
          threshold: NEAR_COPY_THRESHOLD,
          dropped: excluded,
        };
      }
      return out;
    },
  };
}

/** Records a split will have at most: input lines × (1 + variants) + generated records. */
export function estimateWithExtras(lines: number | null, extras: SplitExtras): number | null {
  if (lines === null) return null;
  return lines * (1 + (extras.augment?.variants ?? 0)) + (extras.synthetic?.n ?? 0);
}

/**
 * The record types that flow between pipeline stages:
 * read -> {@linkcode Problem} -> segment -> {@linkcode SegmentedRecord} -> validate ->
 * {@linkcode ValidatedRecord} -> tokenize/pack -> tensors.
 *
 * Every reader and every generator yields `Problem`s; nothing downstream re-parses the source
 * text that a reader already structured.
 *
 * @module
 */

/** Where a record came from: a file and a 1-based line (or array index + 1 for JSON arrays). */
export interface SourceRef {
  /** Path of the source file as given on the command line (or a generator name). */
  file: string;
  /** 1-based line number (JSON lines, text, CSV) or 1-based element index (JSON arrays). */
  line: number;
}

/** One problem as a reader yields it, before segmentation. */
export interface Problem {
  /**
   * Stable id, unique within a build: `<file basename>:<line>` unless the data carries one.
   * A build whose input files share a basename starts each one's ids with the end of its path
   * that tells them apart (`d1/x.jsonl:1`); see pipeline/read/record.ts's `idLabels`.
   */
  id: string;
  /** Where the record came from. */
  source: SourceRef;
  /** The question text, trimmed. */
  question: string;
  /**
   * The free-text rationale, if the format has one: the GSM8K answer body before `####`
   * (with its `<<expr=value>>` calculator annotations), or a natural-language CoT. `null` when
   * the format carries only math steps (iCoT, Coconut).
   */
  rationale: string | null;
  /**
   * Math steps given explicitly by the format (iCoT, Coconut), each the text of one
   * calculator annotation such as `<<48/2=24>>`. `null` when they must be extracted from the
   * rationale.
   */
  mathSteps: string[] | null;
  /** The final answer text exactly as given (after `####`), trimmed. */
  answer: string;
}

/** One calculator step `<<expr=value>>`. */
export interface MathStep {
  /** The expression left of the last `=`, e.g. `48/2`. */
  expr: string;
  /** The stated result right of the last `=`, e.g. `24`. */
  value: string;
  /** The canonical step text fed to the tokenizer, e.g. `<<48/2=24>>`. */
  text: string;
}

/** A problem with its gold chain of thought cut into per-latent steps, in both forms. */
export interface SegmentedRecord extends Problem {
  /** Math form: one step per calculator annotation. */
  math: MathStep[];
  /** Natural-language form: one step per reasoning line or sentence, annotations removed. */
  nl: string[];
  /** The final answer as a number (pipeline/numbers.ts `readNumber`), or null if not one. */
  answerValue: number | null;
  /**
   * True when the source had no prose and `nl` was derived from the math steps, one
   * `expr = value` per step. Set by `segment`; absent means false.
   */
  nlDerived?: boolean;
  /**
   * How many `<<` never closed plus how many `>>` never opened. Set by `segment`; absent
   * means 0. Validation reports a non-zero count as `unbalanced_annotation`.
   */
  unbalancedAnnotations?: number;
  /**
   * For each math step, the index of the NL step written on the same rationale line, or null
   * where that is not known (single-paragraph rationales split into sentences, math steps
   * given apart from the prose, derived NL). Set by `segment`; validation's per-step check
   * (`nl_step_mismatch`) uses it. Absent means unknown throughout.
   */
  nlOfMath?: (number | null)[];
}

/** What validation concluded about a record. */
export type ValidationStatus = "ok" | "flagged" | "dropped";

/** The outcome of validation: a status and the reason codes behind it (empty when ok). */
export interface Validation {
  /** `ok`: kept, clean. `flagged`: kept, with reasons. `dropped`: not packed. */
  status: ValidationStatus;
  /** Reason codes, in the order found (see pipeline/validate.ts for the list). */
  reasons: string[];
  /**
   * One line per finding, for people reading records.jsonl, e.g.
   * `step 2 <<10/3=3.5>>: wrong_value, evaluates to 3.3333333333`. Set by `validate`.
   */
  details?: string[];
}

/** A segmented record with its validation result. */
export interface ValidatedRecord extends SegmentedRecord {
  /** The validation outcome. */
  validation: Validation;
}

/**
 * The files of an evaluation, written into one output directory:
 *
 * ```
 * out/
 *   predictions.csv        one row per item and R: gold, prediction, correctness, timings
 *   summary.json           per R: accuracy, latency, accuracy by gold steps, readout figures
 *   accuracy_by_steps.csv  per R and number of gold steps
 *   readout.csv            LOTUS: one row per example, R and block
 *   training_loss.svg      from the run's log, when found
 *   training_accuracy.svg  from the run's log, when it has evaluations
 *   readout.svg            LOTUS: gold against decoded latents for the first examples
 *   report.html            all of the above in one self-contained page
 * ```
 *
 * @module
 */
import { stringify } from "csv-stringify/sync";
import { z } from "zod";
import { writeFileAtomic } from "../base/atomic.ts";
import { fieldIssue } from "../base/json.ts";
import { checkWhole } from "../base/whole.ts";
import { type OptionNames, refuseUnknownOptions } from "../base/options.ts";
import { canWriteIn, DIRECTORY_MARKERS, exists, rethrowIfDenied } from "../base/exists.ts";
import { sweepStale, TempLease } from "../base/staging.ts";
import type { LogRecord } from "../train/run_log.ts";
import { EVAL_OUTPUT_FILES, evalOutputMark, makeRunDir, removeMadeDirs } from "../train/run_dir.ts";
import type { EvalResult, ExampleResult, RunSummary } from "./evaluate.ts";
import {
  escapeXml,
  lineChartSvg,
  type ReadoutExampleView,
  readoutSvg,
  type Series,
} from "./svg.ts";
import { accuracySeries, lossSeries } from "./curves.ts";

/**
 * An evaluation's output directory that cannot take its files (a file, a training run's
 * directory, another's files, no permission to write, a full disk); the message names the
 * directory, why, and what to do.
 */
export class EvalOutputError extends Error {
  /** Create an error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "EvalOutputError";
  }
}

/** What the summary says about where the numbers came from. */
export interface EvalProvenance {
  /** The checkpoint directory evaluated. */
  checkpoint: string;
  /** The evaluation file or dataset directory. */
  data: string;
  /** Its format. */
  format: string;
  /** The split of a dataset directory. */
  split?: string;
  /** The inference backend. */
  backend: string;
  /** The checkpoint's training mode. */
  mode: string;
  /** The model preset. */
  preset: string;
  /** The dataset's CoT form the checkpoint was trained on. */
  cot: string;
  /** The directory whose weights were loaded, when `checkpoint` names a run directory. */
  loaded?: string;
  /** At most this many items were read (`--limit`). */
  limit?: number;
  /** Malformed records skipped while reading the data (`--on-error skip`). */
  skipped?: number;
  /** The generation budget of every answer. */
  maxNewTokens?: number;
  /** Questions answered at a time. */
  batch?: number;
}

/** Options of {@linkcode writeEvalOutputs}. */
export interface ReportOptions {
  /** The run's training log, for the curves. */
  trainLog?: LogRecord[] | null;
  /**
   * Examples shown in the readout picture: a whole number, 0 or more (default 6). With 0 no
   * readout.svg is written (an earlier one in the directory is removed) and report.html shows
   * none; readout.csv and the report's readout table are written as before.
   */
  readoutExamples?: number;
}

/** Every option of {@linkcode ReportOptions}. */
const REPORT_OPTIONS: OptionNames<ReportOptions> = { trainLog: true, readoutExamples: true };

/** The paths written. */
export interface ReportFiles {
  /** predictions.csv. */
  predictions: string;
  /** summary.json. */
  summary: string;
  /** accuracy_by_steps.csv. */
  bySteps: string;
  /** readout.csv (LOTUS checkpoints only). */
  readout?: string;
  /** The SVG files written. */
  pictures: string[];
  /** report.html. */
  html: string;
}

/** The readout picture's view of the first examples of one R. */
export function readoutViews(rows: ExampleResult[], n: number): ReadoutExampleView[] {
  return rows.filter((r) => r.readout?.length).slice(0, n).map((r) => ({
    title: `${r.id} (R=${r.R}): ${
      r.question.length > 70 ? r.question.slice(0, 67) + "..." : r.question
    }`,
    blocks: r.readout!.map((b) => ({
      gold: b.goldTokens,
      readout: b.readoutTokens,
      match: b.readoutTokens.map((_, j) =>
        j >= b.top1.length ? "none" : b.top1[j] ? "top1" : b.top5[j] ? "top5" : "miss"
      ),
      note: b.kind ?? undefined,
    })),
  }));
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const ms = (x: number) => x.toFixed(2);

function table(head: string[], rows: (string | number)[][]): string {
  const th = head.map((h) => `<th>${escapeXml(h)}</th>`).join("");
  const tr = rows.map((r) =>
    `<tr>${r.map((c) => `<td>${escapeXml(String(c))}</td>`).join("")}</tr>`
  );
  return `<table><thead><tr>${th}</tr></thead><tbody>${tr.join("")}</tbody></table>`;
}

function dataUri(svg: string): string {
  const bytes = new TextEncoder().encode(svg);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return `data:image/svg+xml;base64,${btoa(bin)}`;
}

/** The summary table rows, one per R. */
function summaryRows(runs: RunSummary[]): (string | number)[][] {
  return runs.map((r) => [
    r.mode,
    r.K,
    r.R,
    r.n,
    r.tooLong,
    pct(r.accuracy),
    ms(r.latency.prefillMsPerExample),
    ms(r.latency.thoughtMsPerExample),
    ms(r.latency.thoughtMsMedian),
    r.latency.msPerAnswerToken === null ? "n/a" : ms(r.latency.msPerAnswerToken),
    r.latency.tokensMean.toFixed(1),
    r.readout ? pct(r.readout.top1) : "",
    r.readout ? pct(r.readout.top5) : "",
    r.readout ? pct(r.readout.alternativeTop1) : "",
    r.readout ? pct(r.readout.alternativeTop5) : "",
  ]);
}

/** The self-contained HTML report. */
export function reportHtml(
  prov: EvalProvenance,
  result: EvalResult,
  pictures: { title: string; svg: string; inline: boolean }[],
): string {
  const runs = result.runs;
  const head = [
    "mode",
    "K",
    "R",
    "n",
    "too long",
    "accuracy",
    "prefill ms/ex",
    "thought ms/ex",
    "median",
    "ms/answer token",
    "tokens",
    "readout top-1",
    "readout top-5",
    "alt. top-1",
    "alt. top-5",
  ];
  const steps = runs.flatMap((r) =>
    r.byGoldSteps.map((b) => [r.R, b.steps, b.n, b.correct, pct(b.accuracy)])
  );
  // The readout as text, block by block (the picture shows tokens; long NL steps read better
  // as text), for the first examples of the picture's R.
  const withText = result.examples.filter((e) => e.readout?.length);
  const readR = readoutR(withText);
  const readRows = withText.filter((e) => e.R === readR).slice(0, 12).flatMap((e) =>
    e.readout!.map((b) => [e.id, b.block, b.gold, b.text, b.kind ?? ""])
  );
  const first = result.examples.slice(0, 50).map((e) => [
    e.id,
    e.R,
    e.gold,
    e.predicted,
    e.correct ? "yes" : "no",
    e.text.length > 120 ? e.text.slice(0, 117) + "..." : e.text,
  ]);
  const figs = pictures.map((p) =>
    `<figure><figcaption>${escapeXml(p.title)}</figcaption>${
      p.inline ? p.svg : `<img alt="${escapeXml(p.title)}" src="${dataUri(p.svg)}">`
    }</figure>`
  );
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Evaluation: ${escapeXml(prov.checkpoint)}</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; }
td:last-child { text-align: left; }
figure { margin: 1em 0; }
figcaption { font-weight: bold; margin-bottom: 0.3em; }
img, svg { max-width: 100%; height: auto; border: 1px solid #ddd; }
</style></head><body>
<h1>Evaluation</h1>
<p>checkpoint <code>${escapeXml(prov.checkpoint)}</code>${
    prov.loaded && prov.loaded !== prov.checkpoint
      ? `, weights of <code>${escapeXml(prov.loaded)}</code>`
      : ""
  } (${escapeXml(prov.mode)}, ${escapeXml(prov.preset)}, ${escapeXml(prov.cot)} steps) on <code>${
    escapeXml(prov.data)
  }</code> (${escapeXml(prov.format)}${prov.split ? `, split ${escapeXml(prov.split)}` : ""}${
    prov.limit !== undefined ? `, at most ${prov.limit} items` : ""
  }${prov.skipped ? `, ${prov.skipped} malformed records skipped` : ""}), backend ${
    escapeXml(prov.backend)
  }${prov.maxNewTokens !== undefined ? `, ${prov.maxNewTokens} new tokens at most` : ""}</p>
<h2>Summary</h2>
${table(head, summaryRows(runs))}
<h2>Accuracy by number of gold steps</h2>
${table(["R", "gold steps", "n", "correct", "accuracy"], steps)}
${figs.length ? `<h2>Pictures</h2>\n${figs.join("\n")}` : ""}
${
    readRows.length
      ? `<h2>Latent readout as text (R=${readR})</h2>
${table(["id", "block", "gold step", "readout", "kind"], readRows)}`
      : ""
  }
<h2>First predictions</h2>
${table(["id", "R", "gold", "predicted", "correct", "generated"], first)}
</body></html>
`;
}

/** A picture of an evaluation: its file name, its SVG, and whether the report inlines it. */
interface EvalPicture {
  title: string;
  svg: string;
  inline: boolean;
  file: string;
}

/**
 * The files {@linkcode writeEvalOutputs} writes only for some evaluations (a LOTUS readout, a
 * run's log); the others (predictions.csv, summary.json, accuracy_by_steps.csv, report.html)
 * it writes every time.
 */
const OPTIONAL_EVAL_FILES = [
  "readout.csv",
  "readout.svg",
  "training_loss.svg",
  "training_accuracy.svg",
] as const;

/** Every file {@linkcode writeEvalOutputs} may write. */
const EVERY_EVAL_FILE: readonly string[] = [
  "predictions.csv",
  "summary.json",
  "accuracy_by_steps.csv",
  "report.html",
  ...OPTIONAL_EVAL_FILES,
];

/**
 * The R whose readout the report shows: the most loop iterations of a sweep, the latents the
 * model has refined the longest (a sweep such as --r 0,2 lists R = 0, whose latents never went
 * through the loop, first). Undefined without a readout.
 */
function readoutR(withReadout: readonly ExampleResult[]): number | undefined {
  return withReadout.length ? Math.max(...withReadout.map((e) => e.R)) : undefined;
}

/**
 * The pictures of an evaluation: the training curves when the log has values, the readout
 * when there is one and `readoutExamples` is not 0 (then no readout.svg is written).
 */
function evalPictures(withReadout: ExampleResult[], opts: ReportOptions): EvalPicture[] {
  const pictures: EvalPicture[] = [];
  const log = opts.trainLog;
  // A curve needs a value to draw: records of a diverged run hold none (eval/curves.ts).
  if (log && log.some((r) => r.kind === "train" && Number.isFinite(r.loss))) {
    pictures.push({
      title: "Training loss",
      file: "training_loss.svg",
      inline: false,
      svg: lineChartSvg(lossSeries(log), {
        title: "Training loss",
        xLabel: "step",
        yLabel: "loss (log scale)",
        logY: true,
      }),
    });
  }
  if (log && log.some((r) => r.kind === "eval" && Number.isFinite(r.valAccuracy))) {
    const acc: Series = accuracySeries(log);
    pictures.push({
      title: "Validation accuracy during training",
      file: "training_accuracy.svg",
      inline: false,
      svg: lineChartSvg([acc], {
        title: "Validation accuracy",
        xLabel: "step",
        yLabel: "exact match",
        yMin: 0,
        yMax: 1,
      }),
    });
  }
  const shown = opts.readoutExamples ?? 6;
  if (withReadout.length && shown > 0) {
    const shownR = readoutR(withReadout);
    pictures.push({
      title: `Latent readout (R=${shownR})`,
      file: "readout.svg",
      inline: true,
      svg: readoutSvg(
        readoutViews(withReadout.filter((e) => e.R === shownR), shown),
      ),
    });
  }
  return pictures;
}

/** What marks a directory as a training run's, a checkpoint or an export: its files. */
const NOT_EVAL_DIRS = [
  "checkpoint/config.json",
  "config.json",
  "log.jsonl",
  "plan.json",
  "lotus.json",
];

/**
 * Refuses an evaluation output directory that is a file, or holds a training run, a
 * checkpoint or an export (whose summary.json, a run's, an evaluation's would replace), or
 * holds other files but no earlier evaluation: an evaluation writes files of its own names
 * there (report.html, training_loss.svg, readout.csv, ...) and removes those it no longer
 * writes, which in another directory could be a user's own. A missing or empty directory, or
 * an earlier evaluation's, is fine. Callers that evaluate for long call it before they start;
 * {@linkcode writeEvalOutputs} calls it too.
 *
 * @throws {EvalOutputError} naming the directory and what it holds.
 */
export async function checkEvalOut(dir: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw new EvalOutputError(
      `${dir}: cannot be an evaluation's output directory (${(e as Error).message}); give ` +
        `--out another directory (the default is out/eval)`,
    );
  }
  if (!info.isDirectory) {
    throw new EvalOutputError(
      `${dir}: is a file, not an evaluation output directory; give --out another directory ` +
        `(the default is out/eval)`,
    );
  }
  for (const f of NOT_EVAL_DIRS) {
    if (!(await exists(`${dir}/${f}`))) continue;
    throw new EvalOutputError(
      `${dir}: holds ${f}, so it is a training run, checkpoint or export, not an evaluation ` +
        `output directory; give --out another directory (the default is out/eval)`,
    );
  }
  if ((await evalOutputMark(dir)) !== null) return;
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    // An evaluation's own staging entries: a live write's (a dead one's were swept).
    if (!DIRECTORY_MARKERS.has(e.name) && !EVAL_STAGE_ENTRY.test(e.name)) names.push(e.name);
  }
  if (names.length === 0) return;
  names.sort();
  throw new EvalOutputError(
    `${dir}: holds ${names.slice(0, 3).join(", ")}${names.length > 3 ? ", ..." : ""} and no ` +
      `earlier evaluation (no ${EVAL_OUTPUT_FILES.join(", ")}); an evaluation writes files of ` +
      `its own names there and removes those it no longer writes, so give --out an empty or ` +
      `new directory, or an earlier evaluation's (the default is out/eval)`,
  );
}

/** What to do about an `--out` that cannot be written. */
const GIVE_ANOTHER_OUT = "give --out a directory this user can write (the default is out/eval)";

/**
 * The stem of the directory an evaluation writes its new files into, inside its output
 * directory (`.eval-new.tmp-<pid>`, under a lock `.eval-new.lock-<pid>`: base/staging.ts).
 */
const EVAL_STAGE = ".eval-new";
/** The names of {@linkcode EVAL_STAGE}'s entries: its lock and its directory of new files. */
const EVAL_STAGE_ENTRY = /^\.eval-new\.(lock|tmp)-\d+$/;

/**
 * Remove what a killed evaluation left in `dir` (its directory of new files, its lock). A
 * missing permission is thrown; anything else (no such directory, a file) is for
 * {@linkcode checkEvalOut} to name.
 */
async function sweepEvalStage(dir: string): Promise<void> {
  await sweepStale(dir, EVAL_STAGE, ["tmp"], async (paths) => {
    const tmp = paths.get("tmp");
    if (tmp) await finishEvalMoves(dir, tmp);
  }).catch((e) => rethrowIfDenied(e));
}

/**
 * The list of an evaluation's moves, written into its directory of new files once every file
 * is there: the files to move into the output directory, and the earlier evaluation's to
 * remove. A process killed while it moved them leaves it, and the next sweep finishes the
 * moves, so that the output directory never stays a mix of two evaluations.
 */
const EVAL_MOVES = ".eval-moves.json";

/** The moves {@linkcode EVAL_MOVES} lists. */
interface EvalMoves {
  move: string[];
  remove: string[];
}

/** Moves the files of `moves` still in `tmp` into `dir`, then removes those listed. */
async function applyEvalMoves(dir: string, tmp: string, moves: EvalMoves): Promise<void> {
  for (const name of moves.move) {
    await Deno.rename(`${tmp}/${name}`, `${dir}/${name}`).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // moved before the kill
    });
  }
  for (const name of moves.remove) {
    await Deno.remove(`${dir}/${name}`).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
}

/** Finishes the moves a killed evaluation listed in `tmp`, if it got that far. */
async function finishEvalMoves(dir: string, tmp: string): Promise<void> {
  let moves: EvalMoves;
  try {
    moves = JSON.parse(await Deno.readTextFile(`${tmp}/${EVAL_MOVES}`));
  } catch {
    return; // killed while it wrote its files: the earlier evaluation's stay as they were
  }
  // Only an evaluation's own files are moved or removed, whatever the list says.
  const within = (a: unknown, names: readonly string[]) =>
    Array.isArray(a) && a.every((n) => names.includes(n));
  if (!within(moves.move, EVERY_EVAL_FILE) || !within(moves.remove, OPTIONAL_EVAL_FILES)) return;
  await applyEvalMoves(dir, tmp, moves);
}

/**
 * Get `dir` ready for an evaluation before it starts, so that an output directory that
 * cannot be written stops it at once rather than after the whole evaluation: remove what a
 * killed evaluation left in it, check it as {@linkcode checkEvalOut} does, make it and its
 * missing parents, and check that a file can be created in it. Returns the directories made
 * here, outermost first, for {@linkcode removeMadeDirs} when the evaluation ends without
 * writing (a failure, a stop signal); a failure here removes them itself.
 *
 * @throws {EvalOutputError} naming the directory, why it cannot be written, and what to do.
 */
export async function prepareEvalOut(dir: string): Promise<string[]> {
  await sweepEvalStage(dir);
  await checkEvalOut(dir);
  let made: string[];
  try {
    made = await makeRunDir(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new EvalOutputError(
      `${dir}: cannot be made (${(e as Error).message}); ${GIVE_ANOTHER_OUT}`,
    );
  }
  try {
    if (!(await canWriteIn(dir))) {
      throw new EvalOutputError(
        `${dir}: this user cannot create files in it (permissions, or a read-only file ` +
          `system); ${GIVE_ANOTHER_OUT}`,
      );
    }
  } catch (e) {
    await removeMadeDirs(made);
    throw e;
  }
  return made;
}

/** Every field of {@linkcode EvalProvenance}. */
const PROVENANCE_FIELDS: OptionNames<EvalProvenance> = {
  checkpoint: true,
  data: true,
  format: true,
  split: true,
  backend: true,
  mode: true,
  preset: true,
  cot: true,
  loaded: true,
  limit: true,
  skipped: true,
  maxNewTokens: true,
  batch: true,
};

/** {@linkcode EvalProvenance}, as a caller that is not type-checked may get it wrong. */
const ProvenanceSchema = z.object({
  checkpoint: z.string(),
  data: z.string(),
  format: z.string(),
  split: z.string().optional(),
  backend: z.string(),
  mode: z.string(),
  preset: z.string(),
  cot: z.string(),
  loaded: z.string().optional(),
  limit: z.number().optional(),
  skipped: z.number().optional(),
  maxNewTokens: z.number().optional(),
  batch: z.number().optional(),
});

/**
 * Refuses a provenance with a field missing, unknown or of the wrong type, which the report's
 * writing would otherwise fail on part way, as if the files could not be written.
 */
function checkProvenance(prov: unknown): void {
  refuseUnknownOptions("writeEvalOutputs: prov", prov ?? null, PROVENANCE_FIELDS);
  const r = ProvenanceSchema.safeParse(prov);
  if (!r.success) throw new RangeError(`writeEvalOutputs: ${fieldIssue(r.error, "prov.")}`);
}

/**
 * Write every output of an evaluation into `dir`.
 *
 * @throws {RangeError} for an option {@linkcode ReportOptions} does not have, a
 * `readoutExamples` that is not a whole number of at least 0, or a `prov` that lacks a field
 * of {@linkcode EvalProvenance}, has one it does not, or one of the wrong type, before
 * anything is written.
 * @throws {EvalOutputError} when `dir` cannot take the evaluation's files (as
 * {@linkcode checkEvalOut} says, or the files cannot be written), `dir` left as it was.
 * @throws {StagingError} when this process is already writing an evaluation into `dir`: wait
 * for that one.
 *
 * @example
 * ```ts ignore
 * import { openInference } from "../infer/inference.ts";
 * import { readTrainLog } from "../train/run_log.ts";
 * import { runEval } from "./evaluate.ts";
 * import { loadEvalItems } from "./items.ts";
 * import { writeEvalOutputs } from "./report.ts";
 * const s = await openInference("out/runs/default");
 * const result = await runEval(s, await loadEvalItems("out/data/default", { split: "valid" }));
 * const prov = {
 *   checkpoint: "out/runs/default",
 *   data: "out/data/default",
 *   format: "dataset",
 *   split: "valid",
 *   backend: s.backend,
 *   mode: s.meta.train.mode,
 *   preset: s.meta.preset,
 *   cot: s.meta.data.cot,
 * };
 * const trainLog = await readTrainLog("out/runs/default");
 * const files = await writeEvalOutputs("out/eval", prov, result, { trainLog });
 * console.log(files.html);
 * await s.close();
 * ```
 */
export async function writeEvalOutputs(
  dir: string,
  prov: EvalProvenance,
  result: EvalResult,
  opts: ReportOptions = {},
): Promise<ReportFiles> {
  refuseUnknownOptions("writeEvalOutputs", opts, REPORT_OPTIONS);
  checkWhole("writeEvalOutputs: readoutExamples", opts.readoutExamples, 0);
  checkProvenance(prov);
  await sweepEvalStage(dir);
  await checkEvalOut(dir);
  const withReadout = result.examples.filter((e) => e.readout?.length);
  const pictures = evalPictures(withReadout, opts);
  const files: ReportFiles = {
    predictions: `${dir}/predictions.csv`,
    summary: `${dir}/summary.json`,
    bySteps: `${dir}/accuracy_by_steps.csv`,
    pictures: [],
    html: `${dir}/report.html`,
  };
  // The whole set is written into a directory inside `dir`, then moved in by renames (no
  // data written) and the earlier evaluation's files that this one does not write removed,
  // so that a failure part way (a full disk) leaves the earlier evaluation's files all as
  // they were; a process killed among the moves has the next evaluation of `dir` finish
  // them before anything else. No file of an earlier evaluation (another checkpoint, a baseline after a LOTUS
  // model, a run without a log) stays beside this summary; other files in `dir` are kept.
  await Deno.mkdir(dir, { recursive: true });
  const lease = TempLease.acquire(dir, EVAL_STAGE);
  try {
    const tmp = lease.path("tmp");
    const written: string[] = [];
    const put = async (name: string, data: string) => {
      await Deno.writeTextFile(`${tmp}/${name}`, data);
      written.push(name);
    };
    try {
      await Deno.mkdir(tmp);
      await put(
        "predictions.csv",
        stringify(
          result.examples.map((e) => ({
            index: e.index,
            id: e.id,
            K: e.K,
            R: e.R,
            gold: e.gold,
            predicted: e.predicted,
            correct: e.correct ? 1 : 0,
            too_long: e.tooLong ? 1 : 0,
            gold_steps: e.goldSteps ?? "",
            // A question too long for the context was not answered: no tokens, no timings (the
            // summary's means are over the answered rows, as these columns' are then).
            tokens: e.tooLong ? "" : e.tokens,
            thought_tokens: e.tooLong ? "" : e.thoughtTokens,
            prefill_ms: e.tooLong ? "" : e.prefillMs.toFixed(3),
            thought_ms: e.tooLong ? "" : e.thoughtMs.toFixed(3),
            decode_ms: e.tooLong ? "" : e.decodeMs.toFixed(3),
            readout: e.readout ? e.readout.map((b) => b.text).join(" | ") : "",
            question: e.question,
            generated: e.text,
          })),
          {
            header: true,
            columns: [
              "index",
              "id",
              "K",
              "R",
              "gold",
              "predicted",
              "correct",
              "too_long",
              "gold_steps",
              "tokens",
              "thought_tokens",
              "prefill_ms",
              "thought_ms",
              "decode_ms",
              "readout",
              "question",
              "generated",
            ],
          },
        ),
      );
      await put(
        "summary.json",
        JSON.stringify({ ...prov, runs: result.runs }, null, 2) + "\n",
      );
      await put(
        "accuracy_by_steps.csv",
        stringify(
          result.runs.flatMap((r) =>
            r.byGoldSteps.map((b) => [r.R, b.steps, b.n, b.correct, b.accuracy.toFixed(4)])
          ),
          { header: true, columns: ["R", "gold_steps", "n", "correct", "accuracy"] },
        ),
      );
      if (withReadout.length) {
        files.readout = `${dir}/readout.csv`;
        await put(
          "readout.csv",
          stringify(
            withReadout.flatMap((e) =>
              e.readout!.map((b) => [
                e.id,
                e.R,
                b.block,
                b.gold,
                b.text,
                b.top1.filter(Boolean).length,
                b.top5.filter(Boolean).length,
                b.top1.length,
                b.kind ?? "",
                b.alternativeTop5 === null ? "" : b.alternativeTop5 ? 1 : 0,
              ])
            ),
            {
              header: true,
              columns: [
                "id",
                "R",
                "block",
                "gold",
                "readout",
                "top1_hits",
                "top5_hits",
                "positions",
                "kind",
                "alternative_top5",
              ],
            },
          ),
        );
      }
      for (const p of pictures) {
        await put(p.file, p.svg + "\n");
        files.pictures.push(`${dir}/${p.file}`);
      }
      await put("report.html", reportHtml(prov, result, pictures));
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable) throw e;
      throw new EvalOutputError(
        `${dir}: the evaluation's files could not be written (${(e as Error).message}); ` +
          `what ${dir} held is unchanged; make room, or give --out another directory, and ` +
          `run the command again`,
        { cause: e },
      );
    }
    // The moves are listed first: a process killed among them has the next evaluation of
    // this directory finish them (sweepEvalStage).
    const moves: EvalMoves = {
      move: written,
      remove: OPTIONAL_EVAL_FILES.filter((f) => !written.includes(f)),
    };
    await writeFileAtomic(`${tmp}/${EVAL_MOVES}`, JSON.stringify(moves) + "\n");
    await applyEvalMoves(dir, tmp, moves);
  } finally {
    await lease.release();
  }
  return files;
}

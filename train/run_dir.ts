/**
 * A run directory's life around a fresh run: what it holds (the run's entries, whether a run
 * saved weights there, whether it completed), its lock, the run an `--overwrite` sets aside
 * until the new one has saved (and puts back when it saves nothing), what a process killed
 * part way through that left (settled at the next start), and the directories a fresh run
 * makes for its `--out`, removed again when it is stopped before it trained anything: only
 * the ones it made, and each only while it is empty.
 *
 * @module
 */

import { exists, isDirectory, rethrowIfDenied } from "../base/exists.ts";
import { splitPath } from "../base/staging.ts";
import type { World } from "./data_parallel.ts";
import { TrainConfigError } from "./options.ts";

/**
 * Whether `path` is there (a directory or a file). One this process may not read counts as
 * there: it is never taken for one this run made.
 */
async function present(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    return e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
  }
}

/**
 * Make directory `dir` and its missing parents, one at a time. Returns the ones this call made,
 * outermost first (`dir` last): empty when `dir` was there already, or is a file (which the
 * caller refuses). One that another process makes meanwhile is not counted as made here, nor
 * are any when a parent this process may not read was missing too (all are made at once then).
 * When one cannot be made, those made before it are removed again (each only while empty).
 */
export async function makeRunDir(dir: string): Promise<string[]> {
  const missing: string[] = [];
  for (let d = dir.replace(/\/+$/, ""); d !== "" && !(await present(d));) {
    missing.unshift(d);
    const { parent } = splitPath(d);
    if (parent === d) break;
    d = parent;
  }
  const made: string[] = [];
  for (const d of missing) {
    try {
      await Deno.mkdir(d);
      made.push(d);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound && made.length === 0) {
        await Deno.mkdir(dir, { recursive: true });
        return [];
      }
      if (!(e instanceof Deno.errors.AlreadyExists)) {
        await removeMadeDirs(made);
        throw e;
      }
    }
  }
  return made;
}

/**
 * Remove the directories {@linkcode makeRunDir} made, innermost first, each only while empty:
 * at the first that is not (or is gone), the rest are left. Returns whether they all went.
 */
export async function removeMadeDirs(made: readonly string[]): Promise<boolean> {
  for (const d of [...made].reverse()) {
    try {
      await Deno.remove(d);
    } catch (e) {
      rethrowIfDenied(e);
      return false;
    }
  }
  return true;
}

/** What a run directory holds that a fresh run would replace: its files and folders found. */
export const RUN_ENTRIES = [
  "checkpoint",
  "best",
  "cot-start",
  "plan.json",
  "log.jsonl",
  "log.csv",
  "summary.json",
] as const;

/** What only a run that saved weights leaves: what a fresh run would lose by replacing it. */
const SAVED_ENTRIES = [
  "checkpoint/config.json",
  "cot-start/checkpoint/config.json",
  "best",
  "summary.json",
] as const;

/** Whether `dir` holds a run that saved weights (what a fresh run would lose). */
export async function holdsSavedRun(dir: string): Promise<boolean> {
  for (const e of SAVED_ENTRIES) if (await exists(`${dir}/${e}`)) return true;
  return false;
}

/** The run entries found in `dir`. */
export async function runEntries(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const e of RUN_ENTRIES) if (await exists(`${dir}/${e}`)) found.push(e);
  return found;
}

/** Removes `entries` of `dir` (by default, every run entry found there). */
export async function removeRunEntries(
  dir: string,
  entries?: readonly string[],
): Promise<void> {
  for (const e of entries ?? await runEntries(dir)) {
    await Deno.remove(`${dir}/${e}`, { recursive: true });
  }
}

/**
 * Where `--overwrite` keeps the replaced run until the new one has saved. Its entries are
 * moved there inside `.replacing`, which is renamed `.replaced` once all are in, and moved
 * back from `.restoring`, the name `.replaced` takes first: each move is one rename, so that a
 * process killed part way leaves a directory whose name says what it holds.
 */
const REPLACED_DIR = ".replaced";
/** The replaced run's entries while they are being set aside (the rest still in the run). */
const REPLACING_DIR = ".replacing";
/** The replaced run's entries while they are being put back (the rest already in the run). */
const RESTORING_DIR = ".restoring";

/** Moves every entry of `from` into `dir`, then removes `from`. */
async function moveBack(from: string, dir: string): Promise<void> {
  for await (const e of Deno.readDir(from)) {
    if (await exists(`${dir}/${e.name}`)) {
      throw new TrainConfigError(
        "--out",
        `${from}/${e.name} and ${dir}/${e.name} are both there: an interrupted --overwrite ` +
          `left both runs' copies; keep one (move the other elsewhere), then train again`,
      );
    }
    await Deno.rename(`${from}/${e.name}`, `${dir}/${e.name}`);
  }
  await Deno.remove(from, { recursive: true });
}

/**
 * The run set aside in `dir/.replaced` back in place of the new run's leftovers (which go
 * first: while `.replaced` is there, the next start does the same). `.replaced` is renamed
 * `.restoring` before any entry moves, so that a kill part way through is not taken for a new
 * run that saved (the entries already back) beside a run set aside.
 */
async function putBack(dir: string): Promise<void> {
  await removeRunEntries(dir);
  await Deno.rename(`${dir}/${REPLACED_DIR}`, `${dir}/${RESTORING_DIR}`);
  await moveBack(`${dir}/${RESTORING_DIR}`, dir);
}

/**
 * Settle what an `--overwrite` killed part way left in `dir`. A run half set aside
 * (`.replacing`) or half put back (`.restoring`) is put back whole. A run set aside
 * (`.replaced`): when the new run saved something, the old one goes, as it would have; when
 * not, the new run's leftovers go and the old run is put back. Each put-back is said in `log`.
 */
export async function settleReplaced(
  dir: string,
  log: (s: string) => void,
  world: World | null,
): Promise<void> {
  const found: string[] = [];
  for (const d of [REPLACING_DIR, RESTORING_DIR, REPLACED_DIR]) {
    if (await isDirectory(`${dir}/${d}`)) found.push(d);
  }
  if (found.length === 0) return;
  // Every rank sees it (nothing moves it under mpirun), and every rank stops alike.
  if (world !== null && world.size > 1) {
    throw new TrainConfigError(
      "--out",
      `${dir}/${found[0]} holds a run an interrupted --overwrite set aside: train into ` +
        `${dir} once without mpirun (a --resume) to settle it, then start the data-parallel ` +
        `run again`,
    );
  }
  const back = `note: ${dir}: the run an --overwrite had set aside is back in place`;
  // Renamed from one another, so at most one is there; a half move holds the old run's
  // entries only, split between it and the run directory.
  for (const half of [REPLACING_DIR, RESTORING_DIR]) {
    if (!found.includes(half)) continue;
    await moveBack(`${dir}/${half}`, dir);
    log(`${back} (an --overwrite was stopped while it moved the run)`);
    return;
  }
  const aside = `${dir}/${REPLACED_DIR}`;
  if (await holdsSavedRun(dir)) {
    await Deno.remove(aside, { recursive: true });
    return;
  }
  await putBack(dir);
  log(`${back} (an --overwrite stopped before its run saved anything)`);
}

/** A replaced run set aside by {@linkcode claimRunDir}: dropped or put back at the end. */
export interface SetAside {
  /** The new run saved: the old one goes. */
  discard(): Promise<void>;
  /** The new run failed before saving anything: its leftovers go, the old run comes back. */
  restore(): Promise<void>;
}

/**
 * A fresh run into `out`: refused when `out` holds a run that saved weights and `overwrite`
 * is not given. With `overwrite`, that run is set aside in `out/.replaced` and only removed
 * once the new run has saved something: a new run that fails first (a wrong --data, say)
 * puts it back. Leftovers of an earlier run that saved nothing (a plan, a log) are removed, so
 * that nothing of it is taken for the new run's.
 */
export async function claimRunDir(
  out: string,
  overwrite: boolean | undefined,
): Promise<SetAside | null> {
  let info: Deno.FileInfo | null = null;
  try {
    info = await Deno.stat(out);
  } catch (e) {
    rethrowIfDenied(e);
  }
  if (info === null) return null;
  if (!info.isDirectory) {
    throw new TrainConfigError("--out", `--out ${out} is a file; give a run directory`);
  }
  const found = await runEntries(out);
  const saved = await holdsSavedRun(out);
  if (saved && !overwrite) {
    const state = await completedRun(out)
      ? "a complete run"
      : (await completedRun(`${out}/cot-start`))
      ? "a run whose CoT start is complete"
      : "a run";
    // Only a checkpoint or a plan can be resumed: a kept best/ or a summary alone cannot.
    const resumable = await notARun(out) === null;
    throw new TrainConfigError(
      "--out",
      `${out} already holds ${state} (${found.join(", ")}): ` +
        (resumable
          ? `--resume ${out} continues it, --overwrite replaces it, or give another --out`
          : `it has no checkpoint to resume; --overwrite replaces it, --init ${out}/best ` +
            `starts a new run from its kept best where it has one, or give another --out`),
    );
  }
  if (!saved) {
    await removeRunEntries(out, found);
    return null;
  }
  // settleReplaced has run: none of the three is there.
  const aside = `${out}/${REPLACED_DIR}`, replacing = `${out}/${REPLACING_DIR}`;
  await Deno.mkdir(replacing);
  for (const e of found) await Deno.rename(`${out}/${e}`, `${replacing}/${e}`);
  await Deno.rename(replacing, aside);
  return {
    discard: () => Deno.remove(aside, { recursive: true }).catch(rethrowIfDenied),
    restore: () => putBack(out),
  };
}

/**
 * Files an evaluation (`deno task eval --out`, eval/report.ts) writes and a run never does:
 * one of them marks a directory as an evaluation's output, whose summary.json is not a run's.
 */
export const EVAL_OUTPUT_FILES = [
  "predictions.csv",
  "accuracy_by_steps.csv",
  "report.html",
] as const;

/** The file that marks `dir` as an evaluation's output directory, or null when none does. */
export async function evalOutputMark(dir: string): Promise<string | null> {
  for (const f of EVAL_OUTPUT_FILES) if (await exists(`${dir}/${f}`)) return f;
  return null;
}

/**
 * Refuses `--out` that is an evaluation's output directory, a dataset directory, an export or
 * a checkpoint: it holds no run to resume or replace, and a run there would mix its files with
 * the evaluation's (an `--overwrite` would remove the evaluation's summary.json) or the
 * others' (a dataset's manifest.json and shards, which the run may be reading; a config.json
 * that loading would take for the run's checkpoint). Checked before anything is made or
 * locked.
 */
export async function refuseEvalOutput(out: string): Promise<void> {
  const mark = await evalOutputMark(out);
  if (mark !== null) {
    throw new TrainConfigError(
      "--out",
      `--out ${out} is an evaluation's output directory (it holds ${mark}, written by deno ` +
        `task eval --out), not a run: give --out another directory`,
    );
  }
  const others: [string, string][] = [
    [
      "manifest.json",
      "a dataset directory (it holds manifest.json, written by deno task " +
      "build-dataset)",
    ],
    ["lotus.json", "an export (it holds lotus.json, written by deno task export)"],
    [
      "config.json",
      "a checkpoint or model directory (it holds config.json; a run keeps its " +
      "checkpoint in checkpoint/)",
    ],
  ];
  for (const [file, what] of others) {
    if (await exists(`${out}/${file}`)) {
      throw new TrainConfigError(
        "--out",
        `--out ${out} is ${what}, not a run: give --out another directory, such as ` +
          `out/runs/NAME`,
      );
    }
  }
}

/**
 * Why `run` (the directory of `--resume`) holds no run to continue, in a few words of what is
 * there; null when it holds one: a checkpoint (or what an interrupted save left of one), a
 * plan.json (a two-phase run stopped in its CoT start), or a run an interrupted `--overwrite`
 * set aside. Nothing is made or changed.
 */
export async function notARun(run: string): Promise<string | null> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(run);
  } catch (e) {
    rethrowIfDenied(e);
    const { parent } = splitPath(run);
    return parent !== run && (await exists(`${parent}/checkpoint/config.json`))
      ? `nothing is at ${run}; ${parent} is a run, which --resume ${parent} continues`
      : `nothing is at ${run}`;
  }
  if (!info.isDirectory) return `${run} is a file`;
  const names: string[] = [];
  for await (const e of Deno.readDir(run)) names.push(e.name);
  const held = ["checkpoint", "plan.json", REPLACED_DIR, REPLACING_DIR, RESTORING_DIR];
  // A save killed between its two renames leaves the checkpoint as checkpoint.old-<pid>.
  if (names.some((n) => held.includes(n) || n.startsWith("checkpoint.old-"))) return null;
  const mark = await evalOutputMark(run);
  if (mark !== null) return `${run} is an evaluation's output directory, with ${mark}`;
  if (names.includes("manifest.json")) return `${run} is a dataset directory, with manifest.json`;
  const left = RUN_ENTRIES.filter((e) => names.includes(e));
  if (left.length > 0) {
    // A kept best (written before any checkpoint when --save-every is 0) or a summary is a
    // run a fresh training refuses to replace unasked.
    return await holdsSavedRun(run)
      ? `${run} holds ${left.join(", ")} but no checkpoint to resume; --overwrite ` +
        `replaces the run, or --init ${run}/best starts a new run from its kept best where it ` +
        `has one`
      : `${run} holds ${left.join(", ")} but no checkpoint: the run saved nothing; train ` +
        `it again without --resume`;
  }
  const shown = names.filter((n) => n !== RUN_LOCK).sort();
  return shown.length === 0
    ? `${run} is an empty directory`
    : `${run} holds no checkpoint/ or plan.json, only ${shown.slice(0, 4).join(", ")}` +
      (shown.length > 4 ? ` and ${shown.length - 4} more` : "");
}

/** The file a training process holds locked while it writes its run directory. */
export const RUN_LOCK = ".run.lock";

/**
 * Lock run directory `dir` for this process, so that a second training into it (a resume
 * started while the run goes on, say) is refused instead of interleaving its writes. The
 * operating system drops the lock when the process ends, however it ends. Null when `dir` is
 * a file (refused by the caller, naming --out), or missing (a resume of nothing; a fresh run
 * makes its directory first, with {@linkcode makeRunDir}).
 */
export async function lockRunDir(
  dir: string,
  note: (s: string) => void,
): Promise<Deno.FsFile | null> {
  try {
    if (!(await Deno.stat(dir)).isDirectory) return null;
  } catch (e) {
    rethrowIfDenied(e);
    return null; // a resume of nothing: loading its checkpoint says so
  }
  const path = `${dir}/${RUN_LOCK}`;
  const f = await Deno.open(path, { read: true, write: true, create: true });
  let locked: boolean;
  try {
    locked = f.tryLockSync(true);
  } catch (e) {
    // A file system without locks (some network or FUSE mounts): train unguarded, and say so.
    f.close();
    rethrowIfDenied(e);
    note(
      `note: ${path} cannot be locked here (${(e as Error).message}); nothing stops a second ` +
        `training into ${dir} while this one runs`,
    );
    return null;
  }
  if (!locked) {
    f.close();
    throw new TrainConfigError(
      "--out",
      `${dir}: another training process is writing this run (${path} is locked); wait for ` +
        `it to finish or stop it, or train into another --out`,
    );
  }
  return f;
}

/**
 * The summary.json of the run in `dir`, parsed; null when it is missing or unreadable, or,
 * with `step`, when it sums up another step than that (the checkpoint's): an earlier end's,
 * left by a run extended and stopped between its last save and its summary.
 */
export async function readSummary(
  dir: string,
  step?: number,
): Promise<Record<string, unknown> | null> {
  let s;
  try {
    s = JSON.parse(await Deno.readTextFile(`${dir}/summary.json`));
  } catch (e) {
    rethrowIfDenied(e);
    return null;
  }
  return step !== undefined && s?.steps !== step ? null : s;
}

/**
 * Whether the run in `dir` reached its last step (its summary says so), at `step` when given:
 * the step its checkpoint holds.
 */
export async function completedRun(dir: string, step?: number): Promise<boolean> {
  const s = await readSummary(dir, step);
  if (s === null) return false;
  // Summaries written before the "completed" field: all steps taken.
  return typeof s.completed === "boolean"
    ? s.completed
    : typeof s.steps === "number" && s.steps >= (s.total as number);
}

/**
 * The directories a fresh run makes for its `--out`, and their removal when it is stopped
 * before it trained anything: only the ones it made, and each only while it is empty, so that
 * nothing that was there before (or that another process put there since) is removed.
 *
 * @module
 */

import { rethrowIfDenied } from "../base/exists.ts";
import { splitPath } from "../base/staging.ts";

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
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
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

/**
 * Whether a path exists, for the places that branch on it (a checkpoint or an export
 * directory, an optional log file), and whether a directory can be written to.
 *
 * @module
 */

/**
 * Names that only mark a directory (version control's placeholders): a directory that holds
 * nothing else counts as empty where a command refuses to write into another's directory.
 */
export const DIRECTORY_MARKERS: ReadonlySet<string> = new Set([".gitkeep", ".gitignore"]);

/**
 * Rethrows `e` when it says a permission is missing: Deno's (`NotCapable`, whose message
 * names the flag, e.g. "run again with the --allow-read flag") or the operating system's
 * (`PermissionDenied`). For the catch blocks that mean "the file is not there", so that a
 * missing permission is never reported as a missing file.
 */
export function rethrowIfDenied(e: unknown): void {
  if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) throw e;
}

/**
 * True when `path` exists (file or directory), false when it does not. A missing permission
 * is thrown, not read as absence.
 */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    rethrowIfDenied(e);
    return false;
  }
}

/** Whether `path` is a directory: false when it is missing or a file; a missing permission is
 * thrown. */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (e) {
    rethrowIfDenied(e);
    return false;
  }
}

/**
 * Whether this process can create a file in `dir`: false where the operating system refuses
 * it (permissions, a read-only file system). Any other failure (a missing --allow-write, a
 * full disk, a directory gone) is thrown, as the write that follows would meet it too.
 */
export async function canWriteIn(dir: string): Promise<boolean> {
  try {
    await Deno.remove(await Deno.makeTempFile({ dir, prefix: ".lotus-write-check-" }));
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied) return false;
    if (/\(os error 30\)/.test((e as Error).message)) return false; // read-only file system
    throw e;
  }
}

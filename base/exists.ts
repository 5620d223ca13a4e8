/**
 * Whether a path exists, for the places that branch on it (a checkpoint or an export
 * directory, an optional log file).
 *
 * @module
 */

/**
 * True when `path` exists (file or directory); false when it is missing or the system denies
 * access. A read permission Deno was not given (`Deno.errors.NotCapable`) is thrown: it says
 * nothing about the path.
 */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    return false;
  }
}

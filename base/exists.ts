/**
 * Whether a path exists, for the places that branch on it (a checkpoint or an export
 * directory, an optional log file).
 *
 * @module
 */

/** True when `path` exists (file or directory); false on any error (missing, no access). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

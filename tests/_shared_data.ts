/**
 * The real data sets in ../shared/data (../shared/data/README.md), which the tests read in place
 * when they are present and skip, saying so, when they are not.
 *
 * @module
 */

/** The shared data folder, beside the project. */
export const SHARED_DATA = new URL("../../shared/data/", import.meta.url).pathname;

/**
 * Whether `SHARED_DATA + rel` exists. When it does not, prints
 * `<test>: <path> not found; skipping <what>`, so the skip is never silent.
 */
export function haveSharedData(rel: string, test: string, what: string): boolean {
  const path = `${SHARED_DATA}${rel}`;
  try {
    Deno.statSync(path);
    return true;
  } catch {
    console.log(`${test}: ${path} not found; skipping ${what}`);
    return false;
  }
}

/**
 * Temporary directories for tests, removed when the test module's process ends.
 *
 * @module
 */

const dirs: string[] = [];

globalThis.addEventListener("unload", () => {
  for (const d of dirs) {
    try {
      Deno.removeSync(d, { recursive: true });
    } catch { /* already gone */ }
  }
});

/** A fresh temporary directory, deleted at exit. */
export async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "lotus-test-" });
  dirs.push(d);
  return d;
}

// The documentation names only files that exist (tools/doc_paths.ts lists every path in
// docs/, bench/NOTES.md and the comments of bench/ and check/, and exits 1 on a missing one).
import { assertEquals } from "./_assert.ts";
import { runDeno } from "./_run.ts";

Deno.test("docs: every path the documentation names exists", async () => {
  const r = await runDeno(["run", "--allow-read", "tools/doc_paths.ts"]);
  assertEquals(r.code, 0, r.stdout + r.stderr);
});

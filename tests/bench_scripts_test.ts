// The CPU benchmark scripts the docs cite run: each at its smallest, results not saved, so
// that a change to the engine's binding or the trainer that breaks one shows here rather than
// when someone next measures.
import { assert, assertEquals } from "./_assert.ts";
import { runDeno } from "./_run.ts";

for (const mode of ["lotus", "cot"]) {
  Deno.test(`bench scripts: train_bench runs one ${mode} step and reports it`, async () => {
    const r = await runDeno([
      "run",
      "-A",
      "bench/train_bench.ts",
      "--preset",
      "tiny",
      "--mode",
      mode,
      "--steps",
      "1",
      "--batch",
      "2",
      "--threads",
      "1",
      "--no-save",
    ]);
    assertEquals(r.code, 0, r.stderr);
    const row = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    assertEquals(row.mode, mode);
    assert(row.msPerStep > 0 && row.engineCallsPerStep > 0, r.stdout);
  });
}

Deno.test("bench scripts: memory_plan's usage errors are one line, exit 2", async () => {
  for (const args of [["--batch", "abc"], ["--preset", "nope"], ["--bogus"]]) {
    const r = await runDeno(["run", "-A", "bench/memory_plan.ts", ...args]);
    assertEquals(r.code, 2, r.stderr);
    assert(r.stderr.startsWith("memory_plan: ") && !r.stderr.includes("    at "), r.stderr);
  }
});

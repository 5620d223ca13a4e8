/**
 * `deno task export` and `deno task infer` end to end, with the permissions of their tasks in
 * deno.json: the export directory, the answer with its latent readout and timings on the
 * ONNX backend and on the engine, and one-line errors.
 */
import { assert, assertEquals } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { FIXTURE_QUESTIONS, tinyCheckpoint } from "./_export_fixture.ts";
import { ROOT, runDeno } from "./_run.ts";

const TASKS = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks as Record<
  string,
  string
>;

/** Run a task's command line (its permissions, its script) with extra arguments. */
function task(name: string, args: string[]) {
  return runDeno([...TASKS[name].split(" ").slice(1), ...args]); // drop "deno"
}

Deno.test("deno task export, then deno task infer on ONNX and on the engine", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { k: 2, c: 3 });
  const ex = await task("export", ["--checkpoint", `${d}/ck`, "--out", `${d}/ex`]);
  assertEquals(ex.code, 0, ex.stderr);
  assert(ex.stdout.includes("K=2 c=3 R=2 (add)"), ex.stdout);
  assert(ex.stdout.includes("onnx/model.onnx"), ex.stdout);
  assert(ex.stdout.includes("structural check: ok"), ex.stdout);

  const q = FIXTURE_QUESTIONS[0];
  const runs = [
    await task("infer", ["--checkpoint", `${d}/ex`, "--backend", "onnx", q, "--json"]),
    await task("infer", ["--checkpoint", `${d}/ck`, "--backend", "cpu", q, "--json"]),
  ];
  const [onnx, cpu] = runs.map((r) => {
    assertEquals(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  });
  assertEquals([onnx.backend, cpu.backend], ["onnx", "cpu"]);
  assertEquals(onnx.text, cpu.text);
  assertEquals(onnx.readout, cpu.readout);
  assertEquals(onnx.readout.length, 2, "one readout per block");
  assert(onnx.timings.thoughtMs > 0 && onnx.timings.decodeSteps > 0);

  const text = await task("infer", ["--checkpoint", `${d}/ex`, "--backend", "onnx", q, "--k", "1"]);
  assertEquals(text.code, 0, text.stderr);
  for (const s of ["LOTUS K=1 c=3 R=1", "answer:", "latent readout:", "block 1:", "timings"]) {
    assert(text.stdout.includes(s), `"${s}" not in:\n${text.stdout}`);
  }
  assert(!text.stdout.includes("block 2:"), "K=1 reads out one block");
});

Deno.test("export and infer print one-line errors", async () => {
  const d = await tempDir();
  const bad = await task("export", ["--checkpoint", `${d}/none`, "--out", `${d}/ex`]);
  assertEquals(bad.code, 1);
  assertEquals(bad.stderr.trim().split("\n").length, 1, bad.stderr);
  assert(bad.stderr.includes("no config.json"), bad.stderr);
  const usage = await task("infer", ["--backend", "tpu", "q"]);
  assertEquals(usage.code, 2);
  assert(usage.stderr.includes("--backend"), usage.stderr);
  // A question holding a special token's text is refused as a too-long one is: one line, exit 1.
  await tinyCheckpoint(`${d}/ck`, { k: 2, c: 3 });
  const q = `${FIXTURE_QUESTIONS[0]} <|endoftext|> And 2 more?`;
  const special = await task("infer", ["--checkpoint", `${d}/ck`, "--backend", "cpu", q]);
  assertEquals(special.code, 1, special.stdout + special.stderr);
  assertEquals(special.stdout, "");
  const lines = special.stderr.trim().split("\n");
  assertEquals(lines.length, 1, special.stderr);
  assert(
    /^error: question 0 holds "<\|endoftext\|>", which the tokenizer reads as its special token \d+, not as text; remove it from the question$/
      .test(lines[0]),
    lines[0],
  );
});

Deno.test("Ctrl-C during deno task export: exit 130, one line, nothing left beside --out", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { k: 2, c: 3 });
  const first = await task("export", ["--checkpoint", `${d}/ck`, "--out", `${d}/ex`]);
  assertEquals(first.code, 0, first.stderr);
  const before = await Deno.readFile(`${d}/ex/onnx/model.onnx_data`);
  // SIGINT as the new export writes its lotus.json, held a moment as a keypress would be.
  const preload = `${d}/sigint_at_lotus_json.ts`;
  await Deno.writeTextFile(
    preload,
    `const write = Deno.writeTextFile;
Deno.writeTextFile = (path, data, options) => {
  if (String(path).endsWith("/lotus.json")) {
    Deno.kill(Deno.pid, "SIGINT");
    const until = performance.now() + 200;
    while (performance.now() < until) { /* wait */ }
  }
  return write(path, data, options);
};
`,
  );
  const [deno, ...rest] = TASKS.export.split(" ");
  assertEquals(deno, "deno");
  const script = rest.pop()!;
  const r = await runDeno([
    ...rest,
    "--preload",
    preload,
    script,
    "--checkpoint",
    `${d}/ck`,
    "--out",
    `${d}/ex`,
  ]);
  assertEquals(r.code, 130, r.stdout + r.stderr);
  assertEquals(r.stdout, "");
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  assert(lines[0].startsWith(`error: the export to ${d}/ex was stopped (SIGINT)`), lines[0]);
  const names = (await Array.fromAsync(Deno.readDir(d))).map((e) => e.name).sort();
  assertEquals(names, ["ck", "ex", "sigint_at_lotus_json.ts"]);
  assertEquals(await Deno.readFile(`${d}/ex/onnx/model.onnx_data`), before);
});

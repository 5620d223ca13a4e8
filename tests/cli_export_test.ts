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

/**
 * `deno task export` of `${d}/ck` to `${d}/ex` with a preload that wraps Deno's async function
 * `fn` to send SIGINT (`times` of them, each held a moment as a keypress would be) at its first
 * call whose first argument ends with `suffix`.
 */
async function exportSignalled(d: string, fn: string, suffix: string, times = 1) {
  const preload = `${d}/sigint.ts`;
  await Deno.writeTextFile(
    preload,
    `const orig = Deno.${fn};
let sent = false;
Deno.${fn} = async (...args) => {
  if (!sent && String(args[0]).endsWith(${JSON.stringify(suffix)})) {
    sent = true;
    for (let i = 0; i < ${times}; i++) {
      // A pause between two (a second keypress): the first has reached its listener.
      if (i > 0) await new Promise((r) => setTimeout(r, 300));
      Deno.kill(Deno.pid, "SIGINT");
      const until = performance.now() + 200;
      while (performance.now() < until) { /* wait */ }
    }
  }
  return await orig(...args);
};
`,
  );
  const [deno, ...rest] = TASKS.export.split(" ");
  assertEquals(deno, "deno");
  const script = rest.pop()!;
  return await runDeno([
    ...rest,
    "--preload",
    preload,
    script,
    "--checkpoint",
    `${d}/ck`,
    "--out",
    `${d}/ex`,
  ]);
}

Deno.test("Ctrl-C during deno task export: exit 130, one line, nothing left beside --out", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { k: 2, c: 3 });
  const first = await task("export", ["--checkpoint", `${d}/ck`, "--out", `${d}/ex`]);
  assertEquals(first.code, 0, first.stderr);
  const before = await Deno.readFile(`${d}/ex/onnx/model.onnx_data`);
  const names = async () => (await Array.fromAsync(Deno.readDir(d))).map((e) => e.name).sort();
  // SIGINT as the new export writes its lotus.json.
  const r = await exportSignalled(d, "writeTextFile", "/lotus.json");
  assertEquals(r.code, 130, r.stdout + r.stderr);
  assertEquals(r.stdout, "");
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  assert(lines[0].startsWith(`error: the export to ${d}/ex was stopped (SIGINT)`), lines[0]);
  assertEquals(await names(), ["ck", "ex", "sigint.ts"]);
  assertEquals(await Deno.readFile(`${d}/ex/onnx/model.onnx_data`), before);
  // SIGINT as the finished export is renamed into place: complete, and said so, exit 130.
  const late = await exportSignalled(d, "rename", "/ex");
  assertEquals(late.code, 130, late.stdout + late.stderr);
  assertEquals(
    late.stderr.trim(),
    `error: SIGINT came as the export was put in place: it is complete, in ${d}/ex`,
  );
  assertEquals(await names(), ["ck", "ex", "sigint.ts"]);
  assertEquals(await Deno.readFile(`${d}/ex/onnx/model.onnx_data`), before);
  // Twice during the load: the second ends the command at once.
  const twice = await exportSignalled(d, "readFile", "model.safetensors", 2);
  assertEquals(twice.code, 130, twice.stdout + twice.stderr);
  assertEquals([twice.stdout, twice.stderr], ["", ""], "ended before the export looked");
  assertEquals(await Deno.readFile(`${d}/ex/onnx/model.onnx_data`), before);
});

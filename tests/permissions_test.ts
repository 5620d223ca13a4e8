// Least privilege: each command's task grants Deno only what it needs. FFI is scoped to the
// engine's build directory (and onnxruntime's package for eval and infer, and the NVIDIA
// driver's usual paths), processes to the compilers and `cat`, the environment to the
// variables the project reads; and an engine that is already built opens without running
// any compiler.
import { assert, assertEquals } from "./_assert.ts";
import { ROOT, runDeno } from "./_run.ts";
import { tempDir } from "./_tmp.ts";
import { fixtureData } from "./_task.ts";

const TASKS = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks as Record<
  string,
  string
>;
const COMMANDS = ["build-dataset", "train", "eval", "infer", "export", "build-engine"];

/** The value of `--allow-<name>` in a task: null when absent, "" when unscoped. */
function grant(task: string, name: string): string | null {
  const m = new RegExp(`--allow-${name}(=(\\S+))?(\\s|$)`).exec(task);
  return m === null ? null : m[2] ?? "";
}

Deno.test("permissions: no command task grants everything, or FFI, run or env unscoped", () => {
  for (const c of COMMANDS) {
    const t = TASKS[c];
    assert(!/(^|\s)(-A|--allow-all)(\s|$)/.test(t), `${c}: ${t}`);
    for (const name of ["ffi", "run", "env"]) {
      assert(grant(t, name) !== "", `${c} grants --allow-${name} unscoped: ${t}`);
    }
  }
  // Only the commands that load the engine may load native code or run a compiler.
  for (const c of ["build-dataset", "export"]) {
    assertEquals([grant(TASKS[c], "ffi"), grant(TASKS[c], "run")], [null, null], c);
  }
  assert(grant(TASKS.train, "ffi")!.split(",").includes("build"), TASKS.train);
  assert(grant(TASKS.infer, "ffi")!.split(",").includes("node_modules"), TASKS.infer);
});

Deno.test("permissions: a built engine trains with no compiler allowed to run", async () => {
  const data = await fixtureData(), out = await tempDir();
  // Build first (or find it built), as a user's first run does.
  const built = await runDeno(["task", "build-engine", "--quiet"]);
  assertEquals(built.code, 0, built.stderr);
  const r = await runDeno([
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-ffi=build",
    "--allow-run=cat",
    "cli/train.ts",
    "--data",
    data,
    "--out",
    out,
    "--steps",
    "2",
    "--batch",
    "4",
    // The default recipe's CoT start, kept short: both phases write under the task's grants.
    "--cot-start-epochs",
    "1",
    "--threads",
    "1",
    "--quiet",
  ]);
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.includes("CoT start: "), r.stdout);
  assert(r.stdout.includes("done: 2 steps"), r.stdout);
});

Deno.test("permissions: FFI granted elsewhere names the engine's directory to grant, in full", async () => {
  // As from another project: the grant's relative path resolves against that project.
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/deno.json`, '{ "nodeModulesDir": "manual" }\n');
  await Deno.writeTextFile(
    `${dir}/main.ts`,
    `import { openEngine } from "${ROOT}engine/mod.ts";\n` +
      `try { openEngine({ quiet: true }).close(); } catch (e) { console.log(String(e)); }\n`,
  );
  const built = await runDeno(["task", "build-engine", "--quiet"]);
  assertEquals(built.code, 0, built.stderr);
  const r = await runDeno(
    ["run", "--allow-read", "--allow-env", "--allow-run=cat", "--allow-ffi=build", "main.ts"],
    dir,
  );
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.includes("NotCapable"), r.stdout);
  assert(r.stdout.includes(`grant --allow-ffi=${ROOT}build`), r.stdout);
});

Deno.test("permissions: without cat or PATH, the compiler's refusal says which grant finds the built engine", async () => {
  // The library's file name hashes the CPU's identity (cat /proc/cpuinfo) and the compiler
  // (found on PATH); without them the built one is not found and the compiler is asked for.
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/deno.json`, '{ "nodeModulesDir": "manual" }\n');
  await Deno.writeTextFile(
    `${dir}/main.ts`,
    `import { openEngine } from "${ROOT}engine/mod.ts";\n` +
      `try { openEngine({ quiet: true }).close(); console.log("opened"); }\n` +
      `catch (e) { console.log(String(e)); }\n`,
  );
  const built = await runDeno(["task", "build-engine", "--quiet"]);
  assertEquals(built.code, 0, built.stderr);
  const run = async (...grants: string[]) => {
    const r = await runDeno(
      ["run", "--allow-read", `--allow-ffi=${ROOT}build`, ...grants, "main.ts"],
      dir,
    );
    assertEquals(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  assertEquals(await run("--allow-env", "--allow-run=cat"), "opened");
  const tail = (missing: string, it: string) =>
    `; an engine already built in ${ROOT}build is found only with ${missing}: grant ${it}, or ` +
    `grant --allow-run for the compiler to build one`;
  const cat = "--allow-run=cat (the CPU's identity, from /proc/cpuinfo)";
  const path = "--allow-env=PATH (where the compiler is)";
  const noCat = await run("--allow-env", "--allow-write");
  assert(noCat.startsWith("EngineBuildError: could not run g++: Requires run access"), noCat);
  assert(noCat.endsWith(tail(cat, "it")), noCat);
  // Writes granted for the project's own outputs only: the build directory is refused first.
  const scoped = await run("--allow-env", `--allow-write=${dir}`);
  assert(
    scoped.startsWith(`EngineBuildError: cannot build the cpu engine in ${ROOT}build`),
    scoped,
  );
  assert(scoped.endsWith(tail(cat, "it")), scoped);
  const noPath = await run("--allow-run=cat");
  assert(noPath.endsWith(tail(path, "it")), noPath);
  const neither = await run();
  assert(neither.endsWith(tail(`${cat} and ${path}`, "them")), neither);
});

Deno.test("permissions: reads granted elsewhere name the checkout to grant, in full", async () => {
  // As from another project that grants reads for its own data only: the engine's sources,
  // hashed to find the built library, are in lotus-deno's checkout.
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/deno.json`, '{ "nodeModulesDir": "manual" }\n');
  await Deno.writeTextFile(
    `${dir}/main.ts`,
    `import { openEngine } from "${ROOT}engine/mod.ts";\n` +
      `try { openEngine({ quiet: true }).close(); } catch (e) { console.log(String(e)); }\n`,
  );
  const built = await runDeno(["task", "build-engine", "--quiet"]);
  assertEquals(built.code, 0, built.stderr);
  const r = await runDeno(
    ["run", `--allow-read=${dir}`, "--allow-env", "--allow-run=cat", "main.ts"],
    dir,
  );
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.startsWith("NotCapable: Requires read access"), r.stdout);
  const root = ROOT.replace(/\/$/, "");
  assert(
    r.stdout.trim().endsWith(
      `; grant --allow-read=${root} (lotus-deno's checkout: the engine's sources and build/)`,
    ),
    r.stdout,
  );
});

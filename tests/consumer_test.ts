// lotus-deno used as a library by a project outside it, exactly as the README says: a deno.json
// with "nodeModulesDir": "manual" and two import-map entries, nothing else. The project is
// type-checked and then builds a dataset, trains 20 steps and answers a question through the
// library. Nothing is downloaded: the library's npm packages resolve from its own node_modules.
import { assert, assertEquals } from "./_assert.ts";
import { ROOT, runDeno, TASK_PERMISSIONS } from "./_run.ts";
import { tempDir } from "./_tmp.ts";

/** The consumer's deno.json, as the README gives it, for a checkout at `root`. */
export function consumerConfig(root: string): string {
  const lib = root.replace(/\/?$/, "/");
  return JSON.stringify(
    { nodeModulesDir: "manual", imports: { "lotus-deno": `${lib}mod.ts`, "lotus-deno/": lib } },
    null,
    2,
  );
}

Deno.test({
  name: "consumer: an outside project type-checks, builds, trains 20 steps and answers",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await tempDir();
    await Deno.copyFile(`${ROOT}fixtures/consumer/main.ts`, `${dir}/main.ts`);
    await Deno.writeTextFile(`${dir}/deno.json`, consumerConfig(ROOT));
    // The README's snippet is this very configuration.
    const readme = await Deno.readTextFile(`${ROOT}README.md`);
    assert(readme.includes('"nodeModulesDir": "manual"'), "README documents the consumer setup");

    const check = await runDeno(["check", "main.ts"], dir);
    assertEquals(check.code, 0, check.stderr);

    const run = await runDeno(["run", ...TASK_PERMISSIONS, "main.ts", `${dir}/out`], dir);
    assertEquals(run.code, 0, run.stderr);
    const res = JSON.parse(run.stdout.trim().split("\n").at(-1)!);
    assertEquals(res.steps, 20);
    assertEquals(res.stage, 0);
    // 20 steps in all: no explicit-CoT start was trained before them.
    const cotStart = await Deno.stat(`${dir}/out/run/cot-start`).then(() => true, () => false);
    assertEquals(cotStart, false, "the run trained a CoT start");
    assert(typeof res.answer === "string", run.stdout);
    assert(!/Download/.test(run.stderr + check.stderr), "nothing was downloaded");
  },
});

Deno.test("consumer: every entry point the README lists imports by that name; a bare subpath does not", async () => {
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/deno.json`, consumerConfig(ROOT));
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const entries = [...readme.matchAll(/^\| `(lotus-deno(?:\/[a-z]+\/mod\.ts)?)` +\|/gm)].map((m) =>
    m[1]
  );
  assertEquals(entries.length, 9, entries.join());
  await Deno.writeTextFile(
    `${dir}/entries.ts`,
    entries.map((e, i) => `import * as m${i} from "${e}";\nconsole.log(typeof m${i});\n`).join(""),
  );
  const check = await runDeno(["check", "entries.ts"], dir);
  assertEquals(check.code, 0, check.stderr);
  // The bare subpath names a directory, as the README says.
  await Deno.writeTextFile(`${dir}/bare.ts`, `import * as p from "lotus-deno/pipeline";\np;\n`);
  const bare = await runDeno(["check", "bare.ts"], dir);
  assert(bare.code !== 0 && bare.stderr.includes("Cannot find module"), bare.stderr);
  assert(readme.includes("`lotus-deno/pipeline` without `/mod.ts` names a directory"));
});

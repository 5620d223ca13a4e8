// The TypeScript examples of README.md and docs/*.md type-check against the project as it is:
// every ```ts block not marked `ignore` is written to a file of its own, its imports of the
// package ("lotus-deno", as a consumer's import map names it) and of project paths ("./x.ts",
// relative to the root as the docs write them) pointed at the root, and `deno check` runs on
// them all with the project's configuration. An example that names an export the module does
// not have, or calls a function with the wrong options, fails here rather than for a reader.
import { assert, assertEquals } from "./_assert.ts";
import { ROOT } from "./_run.ts";
import { tempDir } from "./_tmp.ts";

/** The ```ts blocks of a markdown text, with the line each starts on (ignored ones left out). */
export function tsBlocks(text: string): { line: number; code: string }[] {
  const out: { line: number; code: string }[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const fence = lines[i].match(/^```(ts|typescript)(\s.*)?$/);
    if (!fence) continue;
    const start = i + 1;
    while (++i < lines.length && !lines[i].startsWith("```"));
    if (!/\bignore\b/.test(fence[2] ?? "")) {
      out.push({ line: start, code: lines.slice(start, i).join("\n") });
    }
  }
  return out;
}

/** `code` with its package and root-relative imports pointed at the project in `root`. */
export function rooted(code: string, root: string): string {
  const url = (p: string) => new URL(p, `file://${root.replace(/\/?$/, "/")}`).href;
  return code.replace(
    /(from\s+|import\s*\(\s*)(["'])(lotus-deno(?:\/[^"']*)?|\.\/[^"']+)\2/g,
    (_m, head: string, q: string, spec: string) => {
      const path = spec === "lotus-deno"
        ? "mod.ts"
        : spec.startsWith("lotus-deno/")
        ? `${spec.slice("lotus-deno/".length)}/mod.ts`
        : spec;
      return `${head}${q}${url(path)}${q}`;
    },
  );
}

Deno.test("doc examples: blocks found, ignored ones skipped, imports pointed at the root", () => {
  // The import lines are built, so that tests/layout_test.ts does not read them as this file's.
  const imp = (names: string, spec: string) => `import { ${names} } ${"from"} "${spec}";`;
  const md = `a\n\`\`\`ts\n${imp("x", "./mod.ts")}\n\`\`\`\n\`\`\`ts ignore\nbad(\n\`\`\`\n` +
    `\`\`\`ts\n${imp("y", "lotus-deno/pipeline")}\n\`\`\`\n`;
  const blocks = tsBlocks(md);
  assertEquals(blocks.map((b) => b.line), [2, 8]);
  assertEquals(
    rooted(blocks[0].code, "/r"),
    imp("x", "file:///r/mod.ts"),
  );
  assertEquals(
    rooted(blocks[1].code, "/r/"),
    imp("y", "file:///r/pipeline/mod.ts"),
  );
});

Deno.test("doc examples: README.md's and docs/*.md's TypeScript type-checks", async () => {
  const files = ["README.md"];
  for (const e of Deno.readDirSync(`${ROOT}/docs`)) {
    if (e.isFile && e.name.endsWith(".md")) files.push(`docs/${e.name}`);
  }
  const dir = await tempDir();
  const written: string[] = [];
  for (const f of files.sort()) {
    for (const b of tsBlocks(Deno.readTextFileSync(`${ROOT}/${f}`))) {
      const name = `${f.replace(/[/.]/g, "_")}_line${b.line}.ts`;
      // A module of its own (top-level await, no clash between examples' names).
      Deno.writeTextFileSync(`${dir}/${name}`, `${rooted(b.code, ROOT)}\nexport {};\n`);
      written.push(name);
    }
  }
  assert(written.length >= 5, `found ${written.length} examples`);
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["check", "--quiet", "--config", `${ROOT}/deno.json`, ...written],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const msg = new TextDecoder().decode(r.stderr).split("\n")
    .filter((l) => !l.includes("Failed resolving types")).join("\n");
  assert(r.success, `an example does not type-check (files named by doc and line):\n${msg}`);
});

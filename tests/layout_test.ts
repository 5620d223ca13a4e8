// The project's layout as rules on its import graph: the layers import downwards only, there is
// no import cycle, the engine imports nothing else of the project, inference and export never
// reach the training loop, product code never imports verification, tests or benchmarks, and
// tests and benchmarks do not import each other. Every import counts: static, type-only,
// re-exports and dynamic import().
import { dirname, join, normalize, relative } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { ROOT } from "./_run.ts";

/** Layers, lowest first. A file may import its own folder and any lower layer. */
const RANK: Record<string, number> = {
  base: 0,
  engine: 0,
  pipeline: 1,
  model: 2,
  train: 3,
  export: 4,
  infer: 5,
  eval: 6,
  cli: 7,
  check: 7,
  "mod.ts": 8,
  tests: 9,
  bench: 9,
};

/** The files of the training loop, which inference and export must never reach. */
const TRAINING_LOOP = [
  "train/recipe.ts",
  "train/trainer.ts",
  "train/step.ts",
  "train/batch.ts",
  "train/dataset.ts",
];

function tsFiles(dir: string, out: string[] = []): string[] {
  for (const e of Deno.readDirSync(join(ROOT, dir))) {
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory) {
      if (
        ["node_modules", "out", "build", ".git", "fixtures", "docs", ".device"].includes(e.name)
      ) {
        continue;
      }
      tsFiles(rel, out);
    } else if (e.name.endsWith(".ts")) out.push(rel);
  }
  return out;
}

/** The relative specifiers a module imports, comments (and the examples in them) removed. */
export function importsOf(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["'](\.{1,2}\/[^"']+)["']/g;
  for (const m of code.matchAll(re)) out.push(m[1]);
  return out;
}

function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  // This file's own examples of import statements are data, not imports.
  for (const f of tsFiles("").filter((f) => f !== "tests/layout_test.ts")) {
    // Modules only: a JSON import (deno.json's tasks) is data.
    const deps = importsOf(Deno.readTextFileSync(join(ROOT, f))).filter((s) => s.endsWith(".ts"))
      .map((s) => relative(ROOT, normalize(join(ROOT, dirname(f), s))));
    g.set(f, deps);
  }
  return g;
}

const layerOf = (f: string) => (f.includes("/") ? f.slice(0, f.indexOf("/")) : f);

Deno.test("layout: the import scanner sees every form of import and skips comments", () => {
  const src = [
    'import { a } from "./a.ts";',
    'import type { B } from "../b.ts";',
    'export { c } from "./c.ts";',
    'import "./d.ts";',
    'const e = await import("./e.ts");',
    '/** ```ts\n * import { x } from "./example.ts";\n * ``` */',
    '// import { y } from "./commented.ts";',
    'import { z } from "zod";',
  ].join("\n");
  assertEquals(importsOf(src), ["./a.ts", "../b.ts", "./c.ts", "./d.ts", "./e.ts"]);
});

Deno.test("layout: every import resolves to a file of the project", () => {
  const g = graph();
  const missing = [...g].flatMap(([f, ds]) =>
    ds.filter((d) => !g.has(d)).map((d) => `${f} -> ${d}`)
  );
  assertEquals(missing, []);
});

Deno.test("layout: layers import downwards only; the engine imports nothing of the project", () => {
  const bad: string[] = [];
  for (const [f, deps] of graph()) {
    const from = layerOf(f);
    if (!(from in RANK)) continue; // tools/ and other scripts
    for (const d of deps) {
      const to = layerOf(d);
      if (from === to) continue;
      const ok = from === "engine"
        ? false
        : from === "tests" || from === "bench"
        ? to !== "tests" && to !== "bench" && RANK[to] !== undefined
        : RANK[to] !== undefined && RANK[to] < RANK[from] &&
          !["check", "tests", "bench"].includes(to);
      if (!ok) bad.push(`${f} -> ${d}`);
    }
  }
  assertEquals(bad, [], "upward or forbidden imports");
});

Deno.test("layout: no import cycle", () => {
  const g = graph();
  const state = new Map<string, 1 | 2>();
  const cycles: string[] = [];
  const visit = (f: string, path: string[]) => {
    state.set(f, 1);
    for (const d of g.get(f) ?? []) {
      if (state.get(d) === 1) cycles.push([...path.slice(path.indexOf(d)), d].join(" -> "));
      else if (!state.has(d)) visit(d, [...path, d]);
    }
    state.set(f, 2);
  };
  for (const f of g.keys()) if (!state.has(f)) visit(f, [f]);
  assertEquals(cycles, []);
});

Deno.test("layout: inference and export never reach the training loop", () => {
  const g = graph();
  const reach = (start: string) => {
    const seen = new Set<string>();
    const stack = [start];
    while (stack.length) {
      const f = stack.pop()!;
      for (const d of g.get(f) ?? []) if (!seen.has(d)) seen.add(d), stack.push(d);
    }
    return seen;
  };
  const bad: string[] = [];
  for (const f of g.keys()) {
    if (!f.startsWith("infer/") && !f.startsWith("export/")) continue;
    for (const loop of TRAINING_LOOP) if (reach(f).has(loop)) bad.push(`${f} reaches ${loop}`);
  }
  assertEquals(bad, []);
  assert(
    g.has("infer/inference.ts") && g.has("train/trainer.ts"),
    "the files the rule names exist",
  );
});

Deno.test("layout: what mod.ts reaches imports no node: built-in (an outside project has no @types/node)", () => {
  const g = graph();
  const seen = new Set(["mod.ts"]), stack = ["mod.ts"];
  while (stack.length) {
    for (const d of g.get(stack.pop()!) ?? []) if (!seen.has(d)) seen.add(d), stack.push(d);
  }
  const nodeImport = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']node:/;
  const bad = [...seen].filter((f) => {
    const code = Deno.readTextFileSync(join(ROOT, f)).replace(/\/\*[\s\S]*?\*\//g, "")
      .replace(/^\s*\/\/.*$/gm, "");
    return nodeImport.test(code);
  });
  assertEquals(bad, [], "import these through a module of the project's own instead");
  assert(seen.has("export/export.ts") && seen.size > 50, `mod.ts reaches ${seen.size} files`);
  assert(nodeImport.test('import { resolve } from "node:path";'), "the pattern finds one");
});

Deno.test("layout: private modules (_name.ts) are imported only within their layer and by tests", () => {
  const bad: string[] = [];
  for (const [f, deps] of graph()) {
    for (const d of deps) {
      const base = d.slice(d.lastIndexOf("/") + 1);
      if (base.startsWith("_") && layerOf(d) !== layerOf(f) && layerOf(f) !== "tests") {
        bad.push(`${f} -> ${d}`);
      }
    }
  }
  assertEquals(bad, []);
});

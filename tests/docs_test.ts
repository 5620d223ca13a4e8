// The documentation names only files that exist (tools/doc_paths.ts lists every path in
// docs/, bench/NOTES.md and the comments of bench/ and check/, and exits 1 on a missing one),
// and docs/architecture.md, which says it lists every file, names each source file.
import { assertEquals } from "./_assert.ts";
import { ROOT, runDeno } from "./_run.ts";

Deno.test("docs: every path the documentation names exists", async () => {
  const r = await runDeno(["run", "--allow-read", "tools/doc_paths.ts"]);
  assertEquals(r.code, 0, r.stdout + r.stderr);
});

/** Source files under `dir` (relative to the root), skipping `skip`'s folders. */
function sources(dir: string, skip: Set<string>): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(`${ROOT}${dir}`)) {
    const path = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory && !skip.has(path) && !e.name.startsWith(".")) {
      out.push(...sources(path, skip));
    } else if (e.isFile && /\.(ts|cpp|cu|cuh|h|sh|py|cjs)$/.test(e.name)) out.push(path);
  }
  return out;
}

Deno.test("docs: architecture.md names every source file of the project", () => {
  const page = Deno.readTextFileSync(`${ROOT}docs/architecture.md`);
  // Tests and fixtures are described by kind; the emulation's and the shim's stand-in headers
  // and modules by their folder; build outputs and packages are not the project's.
  const skip = new Set([
    "node_modules",
    "build",
    "out",
    "tests",
    "fixtures",
    "check/cuda_emu/include",
    "check/torch_shim",
  ]);
  const missing = sources("", skip).filter((p) => {
    const base = p.slice(p.lastIndexOf("/") + 1);
    return !page.includes(p) && !new RegExp(`(^|\\s|/)${base.replace(".", "\\.")}\\b`).test(page);
  });
  assertEquals(missing, [], "files docs/architecture.md does not list");
});

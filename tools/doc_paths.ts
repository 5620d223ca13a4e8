/**
 * Lists every file path that the documentation names, and says which do not exist: paths
 * (in backticks or not) and markdown links in docs/*.md, bench/NOTES.md and
 * check/cuda_emu/README.md, and paths in the comments of bench/ and check/ scripts.
 *
 *   npx deno run --allow-read tools/doc_paths.ts [--all]
 *
 * A markdown link resolves against its file's folder; any other path against the repository
 * root, or, in a script's comment, against the script's folder when it starts with ./ or ../.
 * A bare file name with a source extension (`step.ts`) must name some file of the repository,
 * and so must a path such as `cuda/common.cuh` that starts below the root. Paths that runs
 * write (out/, runs/, build/, bench/results/, a temporary folder), placeholders (NAME,
 * <split>, $OUT), package specifiers and paths outside the repository (../anything) are
 * skipped. Exit status 1 when a path is missing; --all also prints the paths that exist.
 *
 * @module
 */
import { dirname, join, normalize, relative } from "node:path";

const ROOT = normalize(join(dirname(new URL(import.meta.url).pathname), ".."));
const SKIP_DIRS = new Set(["node_modules", ".git", "out", "runs", "build", ".device"]);
const SOURCE_EXT = /\.(ts|md|sh|py|h|cpp|cu|cuh|cjs|map)$/;
/** Names the docs give on purpose that are not files of this repository. */
const EXTERNAL = new Set([
  "configuration_gpt2.py", // Python transformers' sources, read for the export check
  "modeling_gpt2.py",
  "modeling_utils.py",
  "transformer.h", // the prefix of Hugging Face GPT-2 tensor names
]);

function walk(dir: string, out: string[] = []): string[] {
  for (const e of Deno.readDirSync(join(ROOT, dir))) {
    if (SKIP_DIRS.has(e.name)) continue;
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory) walk(rel, out);
    else out.push(rel);
  }
  return out;
}

const files = walk("");
const dirs = new Set(files.flatMap((f) => {
  const parts = f.split("/");
  return parts.slice(1).map((_, i) => parts.slice(0, i + 1).join("/"));
}));
const basenames = new Set(files.map((f) => f.slice(f.lastIndexOf("/") + 1)));
const topLevel = new Set(files.map((f) => f.split("/")[0]));

/** The text of the comments of a script (line comments, block comments, docstrings). */
function comments(text: string, file: string): string {
  if (file.endsWith(".py")) {
    const doc = [...text.matchAll(/"""[\s\S]*?"""/g)].map((m) => m[0]);
    const hash = text.split("\n").filter((l) => /^\s*#/.test(l));
    return [...doc, ...hash].join("\n");
  }
  if (file.endsWith(".sh")) return text.split("\n").filter((l) => /^\s*#/.test(l)).join("\n");
  const block = [...text.matchAll(/\/\*[\s\S]*?\*\//g)].map((m) => m[0]);
  const line = [...text.matchAll(/\/\/.*$/gm)].map((m) => m[0]);
  return [...block, ...line].join("\n");
}

interface Mention {
  file: string;
  path: string;
  link: boolean;
}

function mentions(file: string): Mention[] {
  const raw = Deno.readTextFileSync(join(ROOT, file));
  const text = file.endsWith(".md") ? raw : comments(raw, file);
  const out: Mention[] = [];
  for (const m of text.matchAll(/\]\(([^)\s#]+)(?:#[^)]*)?\)/g)) {
    if (!/^[a-z]+:/.test(m[1])) out.push({ file, path: m[1], link: true });
  }
  // Backticked paths, and paths in plain prose too (a URL's path is skipped below).
  for (const span of [text.replace(/`/g, " ")]) {
    for (
      const m of span.matchAll(/(?:\.{1,2}\/)?\.?[A-Za-z_][\w.-]*(?:\/[\w.*-]+)+\/?|[\w-]+\.\w+/g)
    ) {
      const p = m[0].replace(/[.,;:]+$/, "");
      const before = span[m.index! - 1] ?? "";
      if (/[\w$<>{@:*\/-]/.test(before)) continue; // part of a longer token, a URL or a specifier
      out.push({ file, path: p, link: false });
    }
  }
  return out;
}

/** Why a path is not checked, or null. */
/** The repository's top-level names. */
const TOP = new Set([...Deno.readDirSync(new URL("..", import.meta.url))].map((e) => e.name));

function skipped(p: string): string | null {
  if (/^(out|runs|build|bench\/results|\/tmp|\/usr|\/proc|\/path)\b/.test(p)) {
    return "written by a run, or a system path";
  }
  if (/NAME|RUN|DIR|<|\$|\*|\.\.\.|\{/.test(p)) return "a placeholder";
  // `../x/...` where x is not a folder of the repository: a sibling of the checkout.
  if (p.startsWith("../") && !TOP.has(p.replace(/^(\.\.\/)+/, "").split("/")[0])) {
    return "outside the repository";
  }
  if (/^(npm|jsr|node):/.test(p) || p.startsWith("lotus-deno/")) return "a package specifier";
  return null;
}

const sources = files.filter((f) =>
  (f.startsWith("docs/") && f.endsWith(".md")) || f === "bench/NOTES.md" ||
  f === "check/cuda_emu/README.md" ||
  ((f.startsWith("bench/") || f.startsWith("check/")) && /\.(ts|sh|py|h|cpp)$/.test(f))
);

const all = Deno.args.includes("--all");
let missing = 0;
for (const f of sources) {
  const seen = new Set<string>();
  for (const m of mentions(f)) {
    if (seen.has(m.path) || EXTERNAL.has(m.path) || skipped(m.path)) continue;
    seen.add(m.path);
    const bare = !m.path.includes("/");
    const rooted = m.link || m.path.startsWith("./") || m.path.startsWith("../") ||
      topLevel.has(m.path.split("/")[0]);
    // Not a repository path: a file name without a source extension (config.json), a path
    // inside something else (onnx/model.onnx in an export), or a ratio (examples/s).
    if (!rooted && !SOURCE_EXT.test(m.path)) continue;
    // Code in the docs runs from the repository root: there ./mod.ts is the root's.
    const relTo = m.link || (/^\.\.?\//.test(m.path) && !f.endsWith(".md")) ? dirname(f) : "";
    const target = relative(ROOT, normalize(join(ROOT, relTo, m.path))).replace(/\/$/, "");
    const ok = bare
      ? basenames.has(m.path)
      : rooted
      ? files.includes(target) || dirs.has(target) || target.startsWith("node_modules/")
      : files.some((x) => x.endsWith(`/${m.path}`)); // cuda/common.cuh, beside its reader
    if (!ok) missing++;
    if (!ok || all) console.log(`${ok ? "ok     " : "MISSING"} ${f}: ${m.path}`);
  }
}
if (missing) console.log(`${missing} missing`);
Deno.exit(missing ? 1 : 0);

/**
 * The whole build of a generated training set, as a user runs it: `build-dataset --synthetic N`
 * through the CLI under `/usr/bin/time -v`, twice with the same seed. Prints the wall time and
 * peak RSS of each run and whether the two directories are identical (manifest synthetic hash
 * and every shard's sha256).
 *
 *   npx deno run -A bench/synthetic_build_bench.ts [n] [steps] [extra build-dataset args...]
 *
 * n defaults to 385,000 (GSM8K-Aug's size) and steps to 1..6. Writes only under the system
 * temp directory and removes what it wrote.
 *
 * @module
 */
import { readManifest } from "../pipeline/manifest.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CLI = `${ROOT}cli/build_dataset.ts`;
const n = Deno.args[0] ?? "385000";
const steps = Deno.args[1] ?? "1..6";
const extra = Deno.args.slice(2);

async function once(out: string) {
  const args = [
    "-v",
    Deno.execPath(),
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    CLI,
    "--synthetic",
    n,
    "--steps",
    steps,
    "--seed",
    "1",
    "--out",
    out,
    ...extra,
  ];
  const r = await new Deno.Command("/usr/bin/time", { args, stdout: "piped", stderr: "piped" })
    .output();
  const err = new TextDecoder().decode(r.stderr);
  if (r.code !== 0) throw new Error(`build failed:\n${err}`);
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)/.exec(err)?.[1] ?? "?";
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(err)?.[1] ?? 0);
  const m = await readManifest(out);
  const t = m.splits.train;
  return {
    wall,
    rssMiB: Math.round(rss / 1024),
    records: t.counts.read,
    kept: t.counts.kept,
    digest: [t.synthetic!.sha256, ...t.shards.map((s) => s.sha256)].join(","),
    table: new TextDecoder().decode(r.stdout),
  };
}

const tmp = await Deno.makeTempDir({ prefix: "lotus-synth-bench-" });
try {
  const a = await once(`${tmp}/a`);
  const b = await once(`${tmp}/b`);
  console.log(a.table);
  console.log(`build-dataset --synthetic ${n} --steps ${steps} ${extra.join(" ")}`);
  console.log(
    `  run 1: ${a.wall} wall, peak RSS ${a.rssMiB} MiB, ${a.records} records, ${a.kept} kept`,
  );
  console.log(`  run 2: ${b.wall} wall, peak RSS ${b.rssMiB} MiB`);
  console.log(
    `  identical output (generator hash and every shard's sha256): ${a.digest === b.digest}`,
  );
} finally {
  await Deno.remove(tmp, { recursive: true });
}

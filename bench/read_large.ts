/**
 * Reads a generated 400,000-line iCoT file (the size of GSM8K-Aug's training set) and reports
 * the time and the process's resident memory, to check that reading streams: memory should
 * stay near that of a small file, far below the file's size.
 *
 *   npx deno run --allow-read --allow-write bench/read_large.ts [lines]
 *
 * The file is made of one made-up problem with varying numbers and is deleted afterwards.
 *
 * @module
 */
import { readProblems } from "../pipeline/read.ts";
import { segment } from "../pipeline/segment.ts";
import { validate } from "../pipeline/validate.ts";

const lines = Number(Deno.args[0] ?? 400_000);
const dir = await Deno.makeTempDir();
const path = `${dir}/large.txt`;
const file = await Deno.open(path, { write: true, create: true });
const enc = new TextEncoder();
let batch = "";
for (let i = 0; i < lines; i++) {
  const a = 10 + (i % 90);
  const b = 2 + (i % 7);
  batch += `A crate holds ${a} jars and a van carries ${b} crates. How many jars are in the van?` +
    `||<<${a}*${b}=${a * b}>> <<${a * b}+0=${a * b}>> #### ${a * b}\n`;
  if (batch.length > 1 << 20) {
    await file.write(enc.encode(batch));
    batch = "";
  }
}
await file.write(enc.encode(batch));
file.close();
const size = (await Deno.stat(path)).size;

const mib = (x: number) => `${(x / 2 ** 20).toFixed(0)} MiB`;
const rssBefore = Deno.memoryUsage().rss;
let peak = rssBefore;
let n = 0;
let kept = 0;
const t = performance.now();
for await (const p of readProblems(path)) {
  if (validate(segment(p)).validation.status !== "dropped") kept++;
  if (++n % 20_000 === 0) peak = Math.max(peak, Deno.memoryUsage().rss);
}
const ms = performance.now() - t;
await Deno.remove(dir, { recursive: true });
console.log(
  `${n} records (${kept} kept) from a ${mib(size)} file in ${(ms / 1000).toFixed(2)} s ` +
    `(read + segment + validate); rss ${mib(rssBefore)} before, ${mib(peak)} peak`,
);

/**
 * Build benchmarks (figures go to docs/pipeline.md).
 *
 *   npx deno run -A bench/build_dataset_bench.ts gsm8k
 *     GSM8K train + test (8,792 records) in both CoT forms with GPT-2, through the CLI
 *     (one process per split and form, as a user runs it) and in one process through
 *     buildDataset.
 *
 *   npx deno run -A bench/build_dataset_bench.ts big [copies]
 *     GSM8K train repeated `copies` times (default 54: 403,542 records) into a file under
 *     /tmp, built through the CLI under /usr/bin/time -v: wall time and peak RSS.
 *
 * Reads GSM8K's train.jsonl and test.jsonl from ../shared/data/gsm8k, a folder beside the
 * clone; writes only under the system temp directory.
 *
 * @module
 */

import { buildDataset } from "../pipeline/build.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const GSM8K = `${ROOT}../shared/data/gsm8k`;
const CLI = `${ROOT}cli/build_dataset.ts`;
const PERMS = ["--allow-read", "--allow-write", "--allow-env"];

async function run(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

async function gsm8k(): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "lotus-bench-" });
  let cliTotal = 0;
  for (const cot of ["math", "nl"]) {
    for (const split of ["train", "test"]) {
      const t0 = performance.now();
      const r = await run(Deno.execPath(), [
        "run",
        ...PERMS,
        CLI,
        "--input",
        `${GSM8K}/${split}.jsonl`,
        "--split",
        split,
        "--cot",
        cot,
        "--out",
        `${tmp}/cli-${cot}`,
      ]);
      const s = (performance.now() - t0) / 1000;
      if (r.code !== 0) throw new Error(`CLI failed: ${r.stderr}`);
      cliTotal += s;
      console.log(`cli  ${cot.padEnd(4)} ${split.padEnd(5)} ${s.toFixed(2)} s`);
    }
  }
  console.log(`cli  total (4 processes)  ${cliTotal.toFixed(2)} s`);

  const t0 = performance.now();
  for (const cot of ["math", "nl"] as const) {
    const t1 = performance.now();
    await buildDataset({
      out: `${tmp}/lib-${cot}`,
      cot,
      splits: [
        { name: "train", inputs: [`${GSM8K}/train.jsonl`] },
        { name: "test", inputs: [`${GSM8K}/test.jsonl`] },
      ],
    });
    console.log(
      `lib  ${cot.padEnd(4)} train+test ${((performance.now() - t1) / 1000).toFixed(2)} s`,
    );
  }
  console.log(`lib  total (one process)  ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  await Deno.remove(tmp, { recursive: true });
}

async function big(copies: number): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "lotus-bench-" });
  const input = `${tmp}/gsm8k_train_x${copies}.jsonl`;
  let text = await Deno.readTextFile(`${GSM8K}/train.jsonl`);
  if (!text.endsWith("\n")) text += "\n";
  const f = await Deno.open(input, { write: true, create: true });
  const bytes = new TextEncoder().encode(text);
  for (let i = 0; i < copies; i++) await f.write(bytes);
  f.close();
  const records = text.split("\n").filter(Boolean).length * copies;
  console.log(`input: ${records} records, ${(bytes.length * copies / 1e6).toFixed(0)} MB`);
  const r = await run("/usr/bin/time", [
    "-v",
    Deno.execPath(),
    "run",
    ...PERMS,
    CLI,
    "--input",
    input,
    "--out",
    `${tmp}/out`,
  ]);
  if (r.code !== 0) throw new Error(`CLI failed: ${r.stderr}`);
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)/.exec(r.stderr)?.[1];
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1]);
  console.log(`wall ${wall}, peak RSS ${(rss / 1024).toFixed(0)} MiB`);
  await Deno.remove(tmp, { recursive: true });
}

const [mode, arg] = Deno.args;
if (mode === "gsm8k") await gsm8k();
else if (mode === "big") await big(Number(arg ?? 54));
else console.error("usage: deno run -A bench/build_dataset_bench.ts gsm8k | big [copies]");

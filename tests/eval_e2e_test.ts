/**
 * `deno task eval` end to end: tiny LOTUS and CoT checkpoints trained here on a fixture task,
 * evaluated on the dataset's valid split and on a GSM8K-format file; the CSV, the JSON, the
 * pictures and the report are written and their numbers agree with each other, with the
 * checkpoint's tokenizer and with the trainer's own evaluation.
 */
import { parse } from "csv-parse/sync";
import { assert, assertAlmostEquals, assertEquals, assertRejects } from "./_assert.ts";
import { buildDataset } from "../pipeline/build.ts";
import { readManifest } from "../pipeline/manifest.ts";
import { train } from "../train/recipe.ts";
import { extractAnswer } from "../pipeline/answer.ts";
import { openInference } from "../infer/inference.ts";
import { evalCommand, parseEvalArgs } from "../cli/eval.ts";
import { CliError } from "../cli/_common.ts";
import type { RunSummary } from "../eval/evaluate.ts";
import type { EvalProvenance } from "../eval/report.ts";
import { findChromium, renderPage } from "./_browser.ts";
import { tempDir } from "./_tmp.ts";
import { ROOT, type Run, signalAtPreload, TASK_PERMISSIONS } from "./_run.ts";
import { exists } from "../base/exists.ts";
import { splitPath } from "../base/staging.ts";
import { fixtureTask } from "./_task.ts";
import { FIXTURE_QUESTIONS, tinyCheckpoint } from "./_export_fixture.ts";

interface Setup {
  dir: string;
  data: string;
  validFile: string;
  lotus: string;
  lotusAccuracy: number;
  cot: string;
}

let setup: Setup | null = null;
async function trained(): Promise<Setup> {
  if (setup) return setup;
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/train.jsonl`, fixtureTask(160, 1, "more"));
  await Deno.writeTextFile(`${dir}/valid.jsonl`, fixtureTask(24, 2, "more"));
  await buildDataset({
    out: `${dir}/data`,
    splits: [
      { name: "train", inputs: [`${dir}/train.jsonl`] },
      { name: "valid", inputs: [`${dir}/valid.jsonl`] },
    ],
    tokenizer: "compact",
    k: 2,
    c: 8,
  });
  const common = {
    data: `${dir}/data`,
    preset: "tiny" as const,
    backend: "cpu" as const,
    threads: 2,
    quiet: true,
    recipe: "none" as const,
  };
  const lotus = await train({
    ...common,
    out: `${dir}/lotus`,
    // No curriculum: K = R = 2 from the first step, so the checkpoint is at its final shape.
    train: {
      k: 2,
      c: 8,
      epochsPerStage: 0,
      steps: 40,
      batch: 8,
      lr: 3e-3,
      evalExamples: 0,
      evalEvery: 20,
    },
  });
  await train({
    ...common,
    out: `${dir}/cot`,
    train: { mode: "cot", k: 2, c: 8, steps: 20, batch: 8, lr: 3e-3, evalExamples: 0 },
  });
  setup = {
    dir,
    data: `${dir}/data`,
    validFile: `${dir}/valid.jsonl`,
    lotus: `${dir}/lotus`,
    lotusAccuracy: lotus.valAccuracy!,
    cot: `${dir}/cot`,
  };
  return setup;
}

type Summary = EvalProvenance & { runs: RunSummary[] };
async function runCli(argv: string[]): Promise<{ out: string; summary: Summary }> {
  const a = parseEvalArgs(argv);
  assert(a !== "help");
  const path = await evalCommand(a, () => {});
  return { out: a.out, summary: JSON.parse(await Deno.readTextFile(path)) };
}

type Row = Record<string, string>;
const readCsv = async (p: string) => parse(await Deno.readTextFile(p), { columns: true }) as Row[];

Deno.test("eval end to end: a tiny LOTUS checkpoint on its dataset, swept over R", async () => {
  const s = await trained();
  const out = `${s.dir}/eval-lotus`;
  const { summary } = await runCli([
    "--checkpoint",
    `${s.lotus}/checkpoint`,
    "--data",
    s.data,
    "--out",
    out,
    "--r",
    "0,2",
    "--batch",
    "8",
    "--threads",
    "2",
  ]);
  assertEquals(summary.runs.map((r) => [r.K, r.R]), [[2, 0], [2, 2]]);
  const rows = await readCsv(`${out}/predictions.csv`);
  assertEquals(rows.length, 2 * 24);
  for (const run of summary.runs) {
    const mine = rows.filter((r) => Number(r.R) === run.R);
    assertEquals(run.n, 24);
    assertEquals(mine.filter((r) => r.correct === "1").length, run.correct);
    assertAlmostEquals(run.accuracy, run.correct / run.n, 1e-12);
    // The CSV's prediction is the extraction of its generated text, and "correct" follows.
    for (const r of mine) assertEquals(r.predicted, extractAnswer(r.generated));
    assertEquals(run.byGoldSteps.reduce((a, b) => a + b.n, 0), run.n);
    assertEquals(run.byGoldSteps.map((b) => b.steps), ["2"]);
    assert(run.latency.prefillMsPerExample > 0 && (run.latency.msPerAnswerToken ?? 0) > 0);
    assert(run.readout !== undefined);
  }
  // At the checkpoint's own R, eval reproduces the trainer's final validation accuracy
  // (same examples, same greedy decoding, same batch size).
  assertEquals(summary.runs[1].accuracy, s.lotusAccuracy);
  // (How the thought time grows with R is a timing, measured by the benchmarks and
  // docs/results.md's R sweep, not asserted here: on a loaded machine it is noise.)

  // Readout positions: every gold step, tokenised with the checkpoint's tokenizer as the
  // dataset does, scored up to c slots in each of the K = 2 blocks.
  const session = await openInference(s.lotus, { maxBatch: 1 });
  const validRecords = (await readManifest(s.data)).splits.valid.records;
  const records = (await Deno.readTextFile(`${s.data}/${validRecords}`)).trim().split("\n")
    .map((l) => JSON.parse(l) as { math: { text: string }[] });
  let positions = 0;
  for (const r of records) {
    for (const st of r.math.slice(0, 2)) {
      positions += Math.min(8, session.tokenizer.encode(st.text + "\n").length);
    }
  }
  session.close();
  const ro = summary.runs[1].readout!;
  assertEquals(ro.positions, positions);
  assertEquals(ro.blocks, 2 * 24);
  assert(ro.top5 >= ro.top1 && ro.top1 >= 0 && ro.top5 <= 1);
  assertEquals(ro.blocksExact + ro.blocksDiffering, ro.blocks);
  const kinds = Object.values(ro.kinds).reduce((a, b) => a + b, 0);
  assertEquals(kinds, ro.blocks);
  const readout = await readCsv(`${out}/readout.csv`);
  assertEquals(readout.length, 2 * 2 * 24);
  const r2 = readout.filter((r) => r.R === "2");
  assertEquals(r2.reduce((a, r) => a + Number(r.positions), 0), positions);
  assertAlmostEquals(r2.reduce((a, r) => a + Number(r.top1_hits), 0) / positions, ro.top1, 1e-12);

  const steps = await readCsv(`${out}/accuracy_by_steps.csv`);
  assertEquals(steps.length, 2);
  for (const f of ["training_loss.svg", "training_accuracy.svg", "readout.svg", "report.html"]) {
    assert((await Deno.stat(`${out}/${f}`)).size > 200, f);
  }
  const html = await Deno.readTextFile(`${out}/report.html`);
  assert(html.includes((100 * summary.runs[1].accuracy).toFixed(1) + "%"));
  // The readout picture shows the sweep's most loop iterations, not R = 0's unlooped latents.
  assert(html.includes("Latent readout (R=2)") && !html.includes("Latent readout (R=0)"));
  // The readout as text shows the same R as the picture.
  assert(html.includes("Latent readout as text (R=2)"), "the text table's R");

  const chromium = findChromium();
  if (chromium) {
    const page = await renderPage(chromium, `file://${out}/report.html`);
    assertEquals(page.images.length, 2);
    assert(page.images.every((i) => i.complete && i.width > 0));
    assert(page.svgs.length === 1 && page.svgs[0].height > 0);
  }
});

Deno.test("eval end to end: an --out at a run, a file or another's directory, or --split with a file, is refused before evaluating", async () => {
  const s = await trained();
  const summary = await Deno.readTextFile(`${s.cot}/summary.json`);
  for (const [out, marker] of [[s.cot, "checkpoint/"], [`${s.cot}/checkpoint`, "config.json"]]) {
    await assertRejects(
      () => runCli(["--checkpoint", s.cot, "--data", s.validFile, "--out", out, "--limit", "2"]),
      Error,
      `holds ${marker}`,
    );
  }
  assertEquals(await Deno.readTextFile(`${s.cot}/summary.json`), summary, "the run's summary");
  // --split names a dataset directory's split: with a file it would be ignored, so it is refused.
  await assertRejects(
    () => runCli(["--checkpoint", s.cot, "--data", s.validFile, "--split", "test", "--limit", "2"]),
    Error,
    "--split test",
  );
  // So is --verify-data full, which checks a dataset directory against its manifest.
  await assertRejects(
    () =>
      runCli([
        "--checkpoint",
        s.cot,
        "--data",
        s.validFile,
        "--verify-data",
        "full",
        "--limit",
        "2",
      ]),
    Error,
    "--verify-data full: --data",
  );
  // A file, or a directory of other files with no earlier evaluation, is refused at once:
  // an evaluation writes and removes files of its own names there.
  const file = `${s.dir}/afile`;
  await Deno.writeTextFile(file, "mine");
  await assertRejects(
    () => runCli(["--checkpoint", s.cot, "--data", s.validFile, "--out", file, "--limit", "2"]),
    Error,
    "is a file",
  );
  const figs = `${s.dir}/figs`;
  await Deno.mkdir(figs);
  await Deno.writeTextFile(`${figs}/training_loss.svg`, "mine");
  await assertRejects(
    () => runCli(["--checkpoint", s.cot, "--data", s.validFile, "--out", figs, "--limit", "2"]),
    Error,
    "holds training_loss.svg and no earlier evaluation",
  );
  assertEquals(await Deno.readTextFile(`${figs}/training_loss.svg`), "mine");
  assertEquals(await Deno.readTextFile(file), "mine");
  // A dataset directory read as a file by an explicit --format: the message says so.
  await assertRejects(
    () => runCli(["--checkpoint", s.cot, "--data", s.data, "--format", "gsm8k", "--limit", "2"]),
    CliError,
    `--format gsm8k reads --data ${s.data} as a gsm8k file, and it is a directory; leave out ` +
      "--format (or give --format dataset) for a dataset directory, or give a file",
  );
  await assertRejects(
    () =>
      runCli([
        "--checkpoint",
        s.cot,
        "--data",
        s.data,
        "--format",
        "gsm8k",
        "--split",
        "valid",
        "--limit",
        "2",
      ]),
    Error,
    "--format gsm8k reads --data",
  );
});

Deno.test("eval end to end: a --batch far above the items holds only the items", async () => {
  const s = await trained();
  const { summary } = await runCli([
    "--checkpoint",
    s.cot,
    "--data",
    s.validFile,
    "--out",
    `${s.dir}/eval-big-batch`,
    "--limit",
    "3",
    "--batch",
    "1e9",
  ]);
  assertEquals([summary.batch, summary.runs[0].n], [1e9, 3]);
});

Deno.test("eval end to end: a CoT checkpoint on a GSM8K file; its thought is the text before #", async () => {
  const s = await trained();
  const out = `${s.dir}/eval-cot`;
  const { summary } = await runCli([
    "--checkpoint",
    s.cot,
    "--data",
    s.validFile,
    "--out",
    out,
    "--limit",
    "10",
    "--batch",
    "1",
    "--r",
    "0,2", // ignored: a baseline has no loop
  ]);
  assertEquals(summary.runs.length, 1);
  // Where the numbers came from: the run directory's weights, the first 10 items, batch 1.
  assertEquals(
    [summary.checkpoint, summary.loaded, summary.limit, summary.batch, summary.maxNewTokens],
    [s.cot, `${s.cot}/checkpoint`, 10, 1, 64],
  );
  const run = summary.runs[0];
  assertEquals([run.mode, run.K, run.R, run.n], ["cot", 0, 0, 10]);
  assertEquals(run.readout, undefined);
  const rows = await readCsv(`${out}/predictions.csv`);
  assertEquals(rows.length, 10);
  const session = await openInference(s.cot, { maxBatch: 1 });
  for (const r of rows) {
    // thought_tokens counts the tokens before the first one holding "#".
    const ids = session.tokenizer.encode(r.generated);
    const want = ids.findIndex((id) => session.tokenizer.decode([id]).includes("#"));
    assertEquals(Number(r.thought_tokens), want < 0 ? ids.length : want, r.generated);
    if (Number(r.thought_tokens) > 0) assert(Number(r.thought_ms) > 0);
  }
  session.close();
  assertAlmostEquals(
    run.latency.thoughtTokensMean,
    rows.reduce((a, r) => a + Number(r.thought_tokens), 0) / rows.length,
    1e-9,
  );
  // No readout for a baseline, and the files say so by their absence.
  for (const f of ["readout.csv", "readout.svg"]) {
    let found = true;
    try {
      await Deno.stat(`${out}/${f}`);
    } catch {
      found = false;
    }
    assert(!found, f);
  }
});

/**
 * `deno task eval FLAGS` in a child process, through `bash -c PREFIX` (a ulimit) when given,
 * with `preload` run first when given.
 */
async function evalChild(flags: string[], opts: { preload?: string; bash?: string } = {}) {
  const deno = [
    Deno.execPath(),
    "run",
    ...TASK_PERMISSIONS,
    ...(opts.preload ? [`--preload=${opts.preload}`] : []),
    `${ROOT}cli/eval.ts`,
    "--threads",
    "1",
    ...flags,
  ];
  const [cmd, args] = opts.bash
    ? ["bash", ["-c", `${opts.bash}; exec "$@"`, "bash", ...deno]]
    : [deno[0], deno.slice(1)];
  const child = new Deno.Command(cmd, {
    args,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const guard = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const res = await child.output();
  clearTimeout(guard);
  const dec = new TextDecoder();
  return { code: res.code, stdout: dec.decode(res.stdout), stderr: dec.decode(res.stderr) } as Run;
}

/** Every file under `dir` (relative path -> bytes). */
async function snapshot(dir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) {
      for (const [k, v] of await snapshot(`${dir}/${e.name}`)) files.set(`${e.name}/${k}`, v);
    } else files.set(e.name, await Deno.readFile(`${dir}/${e.name}`));
  }
  return files;
}

const names = async (dir: string) =>
  (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();

/** The flags of a LOTUS evaluation on the valid split, batch 1 by default (lines at 8, 16, 24). */
const lotusFlags = (s: Setup, out: string, batch = 1) => [
  "--checkpoint",
  s.lotus,
  "--data",
  s.data,
  "--out",
  out,
  "--batch",
  String(batch),
];

Deno.test("eval end to end: a question holding a special token's text stops the run in one line naming its file and line", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`, { k: 2, c: 3 });
  const data = `${d}/questions.jsonl`;
  const qs = [FIXTURE_QUESTIONS[0], `${FIXTURE_QUESTIONS[1]} <|latent|>`];
  await Deno.writeTextFile(
    data,
    qs.map((q) => JSON.stringify({ question: q, answer: "#### 24" }) + "\n").join(""),
  );
  const r = await evalChild([
    "--checkpoint",
    `${d}/ck`,
    "--data",
    data,
    "--out",
    `${d}/ev`,
    "--quiet",
  ]);
  assertEquals(r.code, 1, r.stdout + r.stderr);
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  const want = `error: ${data}:2: field "question": holds "<|latent|>", which the tokenizer ` +
    "reads as its special token ";
  assert(lines[0].startsWith(want), lines[0]);
  assert(lines[0].endsWith(", not as text; remove it from the question"), lines[0]);
  assert(!(await exists(`${d}/ev/summary.json`)), "nothing was evaluated");
});

Deno.test("eval end to end: an --out that cannot be written stops before evaluating, naming it", async () => {
  const s = await trained();
  // A read-only file system, and a directory the operating system refuses files in: root is
  // refused neither, so a preload refuses them as the operating system would. The child says
  // so on one line, before loading anything, and removes the directories it made.
  const readOnly = `${s.dir}/read-only/out`, unwritable = `${s.dir}/unwritable/out`;
  const preload = `${await tempDir()}/refuse.ts`;
  await Deno.writeTextFile(
    preload,
    `const { mkdir, makeTempFile } = Deno;
Object.assign(Deno, {
  mkdir(path: string, o?: Deno.MkdirOptions) {
    if (path === ${JSON.stringify(readOnly)}) {
      return Promise.reject(new Error(\`Read-only file system (os error 30): mkdir '\${path}'\`));
    }
    return mkdir(path, o);
  },
  makeTempFile(o?: Deno.MakeTempOptions) {
    if (o?.dir === ${JSON.stringify(unwritable)}) {
      return Promise.reject(new Deno.errors.PermissionDenied("Permission denied (os error 13)"));
    }
    return makeTempFile(o);
  },
});
`,
  );
  const what = "give --out a directory this user can write (the default is out/eval)";
  for (
    const [out, why] of [
      [readOnly, `cannot be made (Read-only file system (os error 30): mkdir '${readOnly}')`],
      [
        unwritable,
        "this user cannot create files in it (permissions, or a read-only file system)",
      ],
    ]
  ) {
    const res = await evalChild(lotusFlags(s, out), { preload });
    assertEquals(res.code, 1, res.stderr);
    assertEquals(res.stderr, `error: ${out}: ${why}; ${what}\n`);
    assert(!(await exists(splitPath(out).parent)), "the directories it made are removed");
  }
});

Deno.test("eval end to end: a write that fails part way leaves the earlier evaluation whole", async () => {
  const s = await trained();
  const out = `${s.dir}/eval-full-disk`;
  await runCli([...lotusFlags(s, out, 8), "--limit", "12"]);
  await Deno.writeTextFile(`${out}/notes.txt`, "mine");
  const before = await snapshot(out);
  const beside = await names(s.dir);
  // A file-size limit stands in for a full disk: the report, the largest file, no longer
  // fits, the files written before it do.
  const size = (f: string) => before.get(f)!.length;
  const others = Math.max(...[...before.keys()].filter((f) => f !== "report.html").map(size));
  const limitKiB = Math.floor((others + size("report.html")) / 2 / 1024);
  assert(others + 2048 < limitKiB * 1024 && limitKiB * 1024 + 2048 < size("report.html"));
  const res = await evalChild([...lotusFlags(s, out, 4), "--limit", "12"], {
    bash: `trap '' XFSZ; ulimit -f ${limitKiB}`,
  });
  assertEquals(res.code, 1, res.stderr);
  assert(
    res.stderr.includes(`error: ${out}: the evaluation's files could not be written (`),
    res.stderr,
  );
  assert(res.stderr.includes(`what ${out} held is unchanged`), res.stderr);
  assertEquals(await snapshot(out), before);
  assertEquals(await names(s.dir), beside, "nothing left beside --out");
});

/**
 * {@linkcode evalChild} sending itself `signal` as it logs a line starting `at`: a preload
 * wraps console.error (the signal comes in a microtask, held a moment as a batch would be).
 */
async function evalSignalledAt(at: string, signal: Deno.Signal, flags: string[], hangUp = false) {
  const preload = await signalAtPreload(await tempDir(), at, signal, hangUp);
  return await evalChild(flags, { preload });
}

Deno.test({
  name: "eval end to end: Ctrl-C, SIGTERM or SIGHUP stops after the batch, writes nothing and " +
    "says so",
  sanitizeResources: false,
  async fn() {
    const s = await trained();
    // Into a new directory: it goes, with the parent made for it.
    const out = `${s.dir}/stopped/eval`;
    const res = await evalSignalledAt("R=2: 8/24", "SIGINT", lotusFlags(s, out));
    assertEquals(res.code, 130, res.stderr);
    const m =
      /^stopped by SIGINT after (\d+) of 24 items at R=2: nothing was written \((.*)\); run the command again\n$/
        .exec(res.stdout);
    assert(m, res.stdout);
    assert(Number(m[1]) >= 8 && Number(m[1]) < 24, m[1]);
    assertEquals(m[2], `${out}, made by this run, is removed`);
    assert(!res.stderr.includes("R=2: 16/24"), res.stderr);
    assert(!(await exists(`${s.dir}/stopped`)));
    // Into an earlier evaluation: it is kept as it was.
    const earlier = `${s.dir}/eval-earlier`;
    await runCli([...lotusFlags(s, earlier, 8), "--limit", "8"]);
    const before = await snapshot(earlier);
    const term = await evalSignalledAt("R=2: 8/24", "SIGTERM", lotusFlags(s, earlier));
    assertEquals(term.code, 143, term.stderr);
    assert(
      term.stdout.includes(`nothing was written (the earlier evaluation in ${earlier} is kept)`),
      term.stdout,
    );
    assertEquals(await snapshot(earlier), before);
    // SIGHUP (a closed terminal) stops it the same way, with its own exit status.
    const hup = await evalSignalledAt("R=2: 8/24", "SIGHUP", lotusFlags(s, earlier));
    assertEquals(hup.code, 129, hup.stderr);
    assert(hup.stdout.startsWith("stopped by SIGHUP after "), hup.stdout);
    assertEquals(await snapshot(earlier), before);
    // From a terminal that went away, whose writes then fail: the same, said by the status.
    const gone = await evalSignalledAt("R=2: 8/24", "SIGHUP", lotusFlags(s, earlier), true);
    assertEquals(gone.code, 129, gone.stderr);
    assertEquals(gone.stdout, "");
    assertEquals(await snapshot(earlier), before);
  },
});

/**
 * The evaluation's output files from a hand-made result: the CSVs and JSON agree with it,
 * and the HTML report renders in a real headless chromium with every picture present and
 * the tables filled.
 */
import { parse } from "csv-parse/sync";
import { assert, assertEquals } from "./_assert.ts";
import { prepareEvalOut, writeEvalOutputs } from "../eval/report.ts";
import { cotResult, fakeResult, LOG, PROV } from "./_eval_result.ts";
import { findChromium, renderPage } from "./_browser.ts";
import { tempDir } from "./_tmp.ts";
import { ROOT, runDeno } from "./_run.ts";

let written: { dir: string; files: Awaited<ReturnType<typeof writeEvalOutputs>> } | null = null;
async function outputs() {
  if (written) return written;
  const dir = await tempDir();
  const files = await writeEvalOutputs(dir, PROV, fakeResult(), { trainLog: LOG });
  written = { dir, files };
  return written;
}

Deno.test("eval outputs: predictions, summary, by-steps and readout files agree with the result", async () => {
  const { files } = await outputs();
  const res = fakeResult();
  const rows = parse(await Deno.readTextFile(files.predictions), { columns: true }) as Record<
    string,
    string
  >[];
  assertEquals(rows.length, 6);
  assertEquals(
    rows[0].question,
    'Question 0 with a comma, and "quotes"?',
    "CSV quoting round-trips",
  );
  for (const R of ["0", "2"]) {
    const mine = rows.filter((r) => r.R === R);
    const run = res.runs.find((r) => String(r.R) === R)!;
    assertEquals(mine.filter((r) => r.correct === "1").length, run.correct);
  }
  const summary = JSON.parse(await Deno.readTextFile(files.summary));
  assertEquals(summary.runs.map((r: { accuracy: number }) => r.accuracy), [2 / 3, 1 / 3]);
  assertEquals(summary.checkpoint, PROV.checkpoint);
  const steps = parse(await Deno.readTextFile(files.bySteps), { columns: true }) as Record<
    string,
    string
  >[];
  assertEquals(steps.map((s) => [s.R, s.gold_steps, s.n, s.correct]), [["0", "2", "3", "2"], [
    "2",
    "2",
    "3",
    "1",
  ]]);
  const readout = parse(await Deno.readTextFile(files.readout!), { columns: true }) as Record<
    string,
    string
  >[];
  assertEquals(readout.length, 12, "2 R x 3 examples x 2 blocks");
  assertEquals(files.pictures.map((p) => p.slice(p.lastIndexOf("/") + 1)), [
    "training_loss.svg",
    "training_accuracy.svg",
    "readout.svg",
  ]);
  for (const p of files.pictures) {
    const svg = await Deno.readTextFile(p);
    assert(svg.startsWith("<svg") && svg.trimEnd().endsWith("</svg>"), p);
  }
  // report.html shows the readout as text, block by block, for the examples of the largest R
  // of the sweep, as the picture does.
  const html = await Deno.readTextFile(files.html);
  const largest = Math.max(...res.examples.filter((e) => e.readout?.length).map((e) => e.R));
  const first = res.examples.filter((e) => e.readout?.length && e.R === largest);
  assert(html.includes(`Latent readout as text (R=${largest})`), "readout text table");
  const esc = (t: string) =>
    t.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
  for (const b of first[0].readout!) {
    assert(html.includes(`<td>${esc(b.gold)}</td><td>${esc(b.text)}</td>`), b.text);
  }
});

Deno.test("eval outputs: a second evaluation into the same --out leaves no file of the first", async () => {
  const dir = await tempDir();
  await writeEvalOutputs(dir, PROV, fakeResult(), { trainLog: LOG });
  const names = async () => (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
  const all = [
    "accuracy_by_steps.csv",
    "predictions.csv",
    "readout.csv",
    "readout.svg",
    "report.html",
    "summary.json",
    "training_accuracy.svg",
    "training_loss.svg",
  ];
  assertEquals(await names(), all);
  // A CoT checkpoint evaluated into the same directory, its run without a log: no readout,
  // no curves. What the LOTUS evaluation wrote must not stay beside its summary.
  await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
  await Deno.mkdir(`${dir}/notes`);
  await Deno.writeTextFile(`${dir}/notes/a.txt`, "also mine");
  const files = await writeEvalOutputs(dir, { ...PROV, mode: "cot" }, cotResult(), {
    trainLog: null,
  });
  assertEquals(files.readout, undefined);
  assertEquals(files.pictures, []);
  assertEquals(await names(), [
    "accuracy_by_steps.csv",
    "notes",
    "notes.txt",
    "predictions.csv",
    "report.html",
    "summary.json",
  ]);
  assertEquals(JSON.parse(await Deno.readTextFile(files.summary)).mode, "cot");
  // And back: everything is written again.
  await writeEvalOutputs(dir, PROV, fakeResult(), { trainLog: LOG });
  assertEquals(await names(), [...all, "notes", "notes.txt"].sort());
  assertEquals(await Deno.readTextFile(`${dir}/notes.txt`), "mine");
  assertEquals(await Deno.readTextFile(`${dir}/notes/a.txt`), "also mine");
});

Deno.test("eval outputs: readoutExamples 0 writes no readout.svg, removes an earlier one, and the report shows none", async () => {
  const dir = await tempDir();
  await writeEvalOutputs(dir, PROV, fakeResult(), { trainLog: null });
  assert((await namesIn(dir)).includes("readout.svg"));
  const files = await writeEvalOutputs(dir, PROV, fakeResult(), {
    trainLog: null,
    readoutExamples: 0,
  });
  assertEquals(files.pictures, []);
  assertEquals(await namesIn(dir), [
    "accuracy_by_steps.csv",
    "predictions.csv",
    "readout.csv",
    "report.html",
    "summary.json",
  ]);
  const html = await Deno.readTextFile(files.html);
  assert(!html.includes("<svg") && !html.includes("Latent readout (R="), "no readout picture");
  assert(!html.includes("<h2>Pictures</h2>"), "no empty Pictures section");
  // The readout as text stays: readout.csv is written, and so is its table.
  assert(html.includes("Latent readout as text (R="), "readout text table");
});

/** The names in `dir`, sorted. */
async function namesIn(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

/**
 * A LOTUS evaluation written into `dir` by another process that SIGKILLs itself at the `at`-th
 * call of `Deno[fn]` on a path in its directory of new files (a write, or a rename: the moves
 * list's own, then the files'). Returns the process's exit status.
 */
async function killedEvaluation(dir: string, fn: "rename" | "writeTextFile", at: number) {
  const tmp = await tempDir();
  await Deno.writeTextFile(
    `${tmp}/kill.ts`,
    `const f = Deno.${fn};
let n = 0;
// deno-lint-ignore no-explicit-any
(Deno as any).${fn} = (p: string, ...a: unknown[]) => {
  if (String(p).includes(".eval-new.tmp-") && ++n === ${at}) Deno.kill(Deno.pid, "SIGKILL");
  // deno-lint-ignore no-explicit-any
  return (f as any)(p, ...a);
};
`,
  );
  await Deno.writeTextFile(
    `${tmp}/write.ts`,
    `import { writeEvalOutputs } from ${JSON.stringify(`${ROOT}eval/report.ts`)};
import { fakeResult, LOG, PROV } from ${JSON.stringify(`${ROOT}tests/_eval_result.ts`)};
await writeEvalOutputs(Deno.args[0], PROV, fakeResult(), { trainLog: LOG });
`,
  );
  const args = ["run", "-A", "--config", `${ROOT}deno.json`, "--preload", `${tmp}/kill.ts`];
  const r = await runDeno([...args, `${tmp}/write.ts`, dir]);
  assertEquals(r.stderr, "");
  return r.code;
}

Deno.test({
  name: "eval outputs: an evaluation killed among its moves is finished before the next one " +
    "starts; one killed while it wrote leaves the earlier evaluation as it was",
  sanitizeResources: false,
  async fn() {
    // What a LOTUS evaluation writes, uninterrupted, and a CoT one's files before it.
    const whole = await tempDir();
    await writeEvalOutputs(whole, PROV, fakeResult(), { trainLog: LOG });
    const cot = async () => {
      const dir = await tempDir();
      await writeEvalOutputs(dir, { ...PROV, mode: "cot" }, cotResult(), { trainLog: null });
      return dir;
    };
    const contents = async (dir: string) =>
      Object.fromEntries(
        await Promise.all(
          (await namesIn(dir)).map(async (n) => [n, await Deno.readTextFile(`${dir}/${n}`)]),
        ),
      );
    const before = await contents(await cot());

    // Killed after the moves list and two of the files' moves: a mix of the two evaluations.
    const moved = await cot();
    assertEquals(await killedEvaluation(moved, "rename", 3), 137);
    const left = await namesIn(moved);
    assert(left.some((n) => n.startsWith(".eval-new.tmp-")), left.join(" "));
    assertEquals(
      JSON.parse(await Deno.readTextFile(`${moved}/summary.json`)).mode,
      "cot",
      "the summary is moved late: still the CoT evaluation's",
    );
    assertEquals(
      await Deno.readTextFile(`${moved}/predictions.csv`),
      await Deno.readTextFile(`${whole}/predictions.csv`),
      "the predictions are moved first: already the LOTUS evaluation's",
    );
    await prepareEvalOut(moved);
    assertEquals(await contents(moved), await contents(whole));

    // Killed while it wrote its new files: the CoT evaluation's stay, the new ones go.
    const writing = await cot();
    assertEquals(await killedEvaluation(writing, "writeTextFile", 3), 137);
    await prepareEvalOut(writing);
    assertEquals(await contents(writing), before);

    // A list naming other files than an evaluation's is not followed; the stage goes anyway.
    const forged = await cot();
    await Deno.writeTextFile(`${forged}/notes.txt`, "mine");
    for (
      const [pid, moves] of [[999991, { move: [], remove: ["notes.txt"] }], [999992, {
        move: [".."],
        remove: ["."],
      }]] as const
    ) {
      await Deno.mkdir(`${forged}/.eval-new.tmp-${pid}`);
      await Deno.writeTextFile(
        `${forged}/.eval-new.tmp-${pid}/.eval-moves.json`,
        JSON.stringify(moves),
      );
    }
    await prepareEvalOut(forged);
    assertEquals(await namesIn(forged), [...Object.keys(before), "notes.txt"].sort());
  },
});

const CHROMIUM = findChromium();
if (!CHROMIUM) {
  console.log(
    "skipping the headless-browser report test: no chromium found (install it with " +
      "apt-get install -y chromium, or set CHROMIUM_PATH)",
  );
}

Deno.test({
  name: "eval report: renders in headless chromium with every image and SVG drawn, tables filled",
  ignore: !CHROMIUM,
  fn: async () => {
    const { files } = await outputs();
    const page = await renderPage(CHROMIUM!, `file://${files.html}`);
    assert(page.title.startsWith("Evaluation"), page.title);
    assertEquals(page.images.length, 2, "the two training curves, as data-URI images");
    for (const img of page.images) {
      assert(img.complete && img.width > 0 && img.height > 0, JSON.stringify(img));
      assert(img.src.startsWith("data:image/svg+xml"), img.src);
    }
    assertEquals(page.svgs.length, 1, "the readout view, inline");
    assert(page.svgs[0].width > 0 && page.svgs[0].height > 0, JSON.stringify(page.svgs));
    assertEquals(
      page.tables.map((t) => t.rows),
      [2, 2, 6, 6],
      "summary, by steps, predictions, the readout as text",
    );
  },
});

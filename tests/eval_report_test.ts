/**
 * The evaluation's output files from a hand-made result: the CSVs and JSON agree with it,
 * and the HTML report renders in a real headless chromium with every picture present and
 * the tables filled.
 */
import { parse } from "csv-parse/sync";
import { assert, assertEquals } from "./_assert.ts";
import { writeEvalOutputs } from "../eval/report.ts";
import type { BlockReadout, EvalResult, ExampleResult } from "../eval/evaluate.ts";
import { summariseReadout } from "../eval/evaluate.ts";
import type { LogRecord } from "../train/run_log.ts";
import { findChromium, renderPage } from "./_browser.ts";
import { tempDir } from "./_tmp.ts";

function block(k: number, gold: string, text: string, hits: boolean[]): BlockReadout {
  return {
    block: k,
    gold,
    text,
    goldTokens: [...gold, "\n"],
    readoutTokens: [...text.padEnd(hits.length + 2, "?")],
    top1: hits,
    top5: hits.map(() => true),
    kind: gold === text ? "gold" : "invalid",
    alternativeTop5: false,
  };
}

function example(i: number, R: number, correct: boolean): ExampleResult {
  return {
    index: i,
    id: `fx:${i + 1}`,
    K: 2,
    R,
    question: `Question ${i} with a comma, and "quotes"?`,
    gold: String(i),
    goldSteps: 2,
    text: `<<${i}+0=${i}>>\n### ${correct ? i : i + 1}`,
    predicted: String(correct ? i : i + 1),
    correct,
    tokens: 9,
    thoughtTokens: 0,
    prefillMs: 1,
    thoughtMs: 2 + R,
    decodeMs: 3,
    readout: [
      block(0, `<<${i}+0=${i}>>`, `<<${i}+0=${i}>>`, [true, true, true]),
      block(1, "<<1*1=1>>", "<<1*2=1>>", [true, false]),
    ],
  };
}

/** Two R values, three examples each, with known accuracies 2/3 and 1/3. */
function fakeResult(): EvalResult {
  const runs = [0, 2].map((R) => {
    const rows = [0, 1, 2].map((i) => example(i, R, R === 0 ? i < 2 : i < 1));
    const correct = rows.filter((r) => r.correct).length;
    return {
      rows,
      summary: {
        mode: "lotus",
        K: 2,
        R,
        c: 4,
        n: 3,
        correct,
        accuracy: correct / 3,
        tooLong: 0,
        latency: {
          batch: 1,
          prefillMsPerExample: 1,
          thoughtMsPerExample: 2 + R,
          thoughtMsMedian: 2 + R,
          decodeMsPerExample: 3,
          msPerDecodeStep: 0.3,
          msPerAnswerToken: 0.3,
          tokensMean: 9,
          thoughtTokensMean: 0,
        },
        byGoldSteps: [{ steps: "2", n: 3, correct, accuracy: correct / 3 }],
        readout: summariseReadout(rows.map((r) => r.readout!)),
      },
    };
  });
  return { examples: runs.flatMap((r) => r.rows), runs: runs.map((r) => r.summary) };
}

const LOG: LogRecord[] = [
  ...Array.from({ length: 20 }, (_, s) => ({
    kind: "train" as const,
    step: s + 1,
    epoch: 0,
    stage: 1,
    K: 1,
    R: 1,
    loss: 4 / (s + 1),
    ansLoss: 3 / (s + 1),
    stepLoss: 10 / (s + 1),
    seconds: s,
  })),
  { kind: "eval", step: 10, epoch: 0, stage: 1, K: 1, R: 1, valAccuracy: 0.1, seconds: 10 },
  { kind: "eval", step: 20, epoch: 0, stage: 1, K: 1, R: 1, valAccuracy: 0.4, seconds: 20 },
];

const PROV = {
  checkpoint: "runs/x/checkpoint",
  data: "fixtures/eval/x.jsonl",
  format: "gsm8k",
  backend: "cpu",
  mode: "lotus",
  preset: "tiny",
  cot: "math",
};

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
  const res = fakeResult();
  const cot: EvalResult = {
    examples: res.examples.map((e) => ({ ...e, K: 0, R: 0, readout: undefined })),
    runs: res.runs.map((r) => ({ ...r, mode: "cot", K: 0, R: 0, readout: undefined })),
  };
  const files = await writeEvalOutputs(dir, { ...PROV, mode: "cot" }, cot, { trainLog: null });
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

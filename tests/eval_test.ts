/**
 * Evaluation pieces on hand-made inputs: answer extraction on tricky outputs, readout
 * scoring on a logits tensor with a known answer, the alternative-intermediate detector,
 * the evaluation readers on fixtures, the training-log reader, the SVG builders and the
 * command-line parser. The real data sets are read only when ../shared/data is present.
 */
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertRejects,
  assertThrows,
} from "./_assert.ts";
import { answersMatch, extractAnswer, parseNumber } from "../pipeline/answer.ts";
import { readNumber } from "../pipeline/numbers.ts";
import { bestReadings, scoreReadout } from "../infer/readout.ts";
import {
  classifyStep,
  operandsOf,
  parseStep,
  sameStep,
  trivialStep,
  validStepValue,
} from "../eval/alternatives.ts";
import { cleanGold, datasetSplit, detectEvalFormat, loadEvalItems } from "../eval/items.ts";
import { buildDataset } from "../pipeline/build.ts";
import { fitsContext, runEval, summariseReadout, thoughtLength } from "../eval/evaluate.ts";
import type { EvalItem } from "../eval/items.ts";
import { type InferenceSession, shapeRequestNotes } from "../infer/session.ts";
import { escapeXml, lineChartSvg, readoutSvg, ticks } from "../eval/svg.ts";
import { readTrainLog, TrainLogError } from "../train/run_log.ts";
import { accuracySeries, lossSeries } from "../eval/curves.ts";
import { evalCommand, parseEvalArgs } from "../cli/eval.ts";
import { CliError } from "../cli/_common.ts";
import { FormatError, InputError } from "../pipeline/read/input_error.ts";
import { tempDir } from "./_tmp.ts";
import { parquetWriteBuffer } from "hyparquet-writer";
import { writeEvalOutputs } from "../eval/report.ts";
import { parse as parseCsv } from "csv-parse/sync";
import { haveSharedData, SHARED_DATA } from "./_shared_data.ts";

const FIX = new URL("../fixtures/eval/", import.meta.url).pathname;
const PIPE = new URL("../fixtures/pipeline/", import.meta.url).pathname;

Deno.test("extractAnswer: the text after the last ###, commas removed, last number as fallback", () => {
  const cases: [string, string][] = [
    ["<<2*3=6>>\n### 6", "6"],
    ["### 5\n### 7\n### 1,234", "1234"], // several markers: the last wins
    ["#### 42", "42"], // GSM8K's four hashes still end in "###"
    ["### -17", "-17"],
    ["### -1,250.75", "-1250.75"],
    ["### 3/4", "3/4"],
    ["### 18.", "18"], // a closing full stop is not part of the number
    ["### 12 apples", "12"], // units after the number are dropped
    ["no marker at all, 3 then 1,500 then 8.5", "8.5"], // fallback: the last number
    ["no number here", "no number here"],
    ["### ", ""], // a marker with nothing after it falls back, and finds nothing
    // An empty answer after the marker is wrong: it does not reach back into the steps.
    ["<<5-9=-4>>\n###", ""],
  ];
  for (const [text, want] of cases) assertEquals(extractAnswer(text), want, JSON.stringify(text));
});

Deno.test("extractAnswer: the fallback without ### reads numbers as the ### path does", () => {
  const cases: [string, string][] = [
    ["The answer is .5", ".5"],
    ["The answer is \u22122", "\u22122"], // U+2212 minus
    ["She needs 1 1/2 cups", "1 1/2"], // a mixed number is one number
    ["The total is 1 234", "1234"], // thousands grouped by a space
    ["The total is 1\u00a0234 apples", "1234"],
    ["so 3 then 1,500", "1500"],
    ["It is 25%.", "25%"],
    ["He owes -$5", "-$5"],
    ["x = -4", "-4"],
    ["3/4 of it", "3/4"],
    ["The answer is 5 6", "6"], // two numbers: the last
    // A sign right after a number is an operator: the number after it is positive.
    ["10 - 4", "4"],
    ["5-3", "3"],
    ["(3+4) - 2", "2"],
    // On a line of its own, a sign begins the number: the line before ends elsewhere.
    ["The total is 12\n-3", "-3"],
    ["25%\n\u22127", "\u22127"],
  ];
  for (const [text, want] of cases) {
    const got = extractAnswer(text);
    assertEquals(got, want, JSON.stringify(text));
    // As read from text after ###, the same number.
    assertEquals(parseNumber(got), parseNumber(extractAnswer(`### ${want}`)), JSON.stringify(text));
  }
  // A wrong read would score a wrong answer right.
  assert(!answersMatch(extractAnswer("The answer is .5"), "5"));
  assert(!answersMatch(extractAnswer("The answer is \u22122"), "2"));
  assert(!answersMatch(extractAnswer("She needs 1 1/2 cups"), "0.5"));
  assert(!answersMatch(extractAnswer("The total is 1 234"), "234"));
  // Whole numbers past 2^53 - 1 are compared by their digits, not as the same double.
  assert(!answersMatch("9007199254740992", "9007199254740993"));
  assert(!answersMatch("100000000000000000000", "100000000000000000001"));
  assert(answersMatch("$100,000,000,000,000,000,001.00", "100000000000000000001"));
  assert(answersMatch("\u2212100000000000000000001", "-100000000000000000001"));
  assert(!answersMatch("-100000000000000000001", "100000000000000000001"));
  // A decimal there keeps the floating-point comparison.
  assert(answersMatch("1000000000000000000000.5", "1000000000000000000000.5"));
  assert(answersMatch(extractAnswer("She needs 1 1/2 cups"), "1.5"));
});

Deno.test("answersMatch: numbers by value, strings exactly", () => {
  assert(answersMatch("1234", "1,234"));
  assert(answersMatch("-1250.75", "-1,250.75"));
  assert(answersMatch("0.75", "3/4"));
  assert(answersMatch("2.50", "2.5"));
  assert(answersMatch("$5", "5"));
  assert(answersMatch(extractAnswer("### 1235567"), cleanGold(1235567.0)));
  assert(!answersMatch("-4", "4"));
  assert(!answersMatch("18", "19"));
  assert(!answersMatch("", "0"));
  assert(answersMatch("yes", "yes"));
  assert(!answersMatch("yes", "no"));
});

Deno.test("answer scoring reads numbers as the pipeline reads gold answers", () => {
  const cases: [string, string][] = [
    ["### 1 1/2", "1 1/2"], // a mixed number is one number, 1.5
    ["### 2 1/2 cups.", "2 1/2"],
    ["### 1 234", "1234"], // thousands grouped by a space
    ["### 1\u00a0234 apples", "1234"], // or a no-break space
    ["### 25%", "25%"],
    ["### \u22122", "\u22122"],
    ["### +5", "+5"],
    ["### 5 6", "5"], // two numbers: the first
    ["### 1 2345", "1"],
  ];
  for (const [text, want] of cases) assertEquals(extractAnswer(text), want, JSON.stringify(text));
  // Every gold answer the pipeline reads as a number matches the same number predicted.
  const golds: [string, string][] = [
    ["1 1/2", "1.5"],
    ["1 234", "1234"],
    ["1\u00a0234", "1234"],
    ["25%", "25"],
    ["\u22122", "-2"],
    ["+5", "5"],
    ["$1,080.50", "1080.5"],
  ];
  for (const [gold, predicted] of golds) {
    assertEquals(readNumber(gold)?.value, Number(predicted), gold);
    assert(answersMatch(predicted, gold), `${predicted} vs gold ${gold}`);
    assert(answersMatch(extractAnswer(`### ${gold}`), gold), `### ${gold}`);
    assert(answersMatch(extractAnswer(`### ${predicted}`), cleanGold(gold)), `${predicted}`);
  }
  assert(!answersMatch("1", "1 1/2"));
  assert(!answersMatch("56", "5 6")); // "5 6" is no number: compared as text
  assertEquals(parseNumber("5 6"), NaN);
  assertEquals(parseNumber("1,5"), NaN);
  assertEquals(parseNumber("1 1/2"), 1.5);
  // Whole numbers are compared exactly, as validation does.
  assert(!answersMatch("1000000000001", "1000000000000"));
});

Deno.test("cleanGold removes only a trailing .0", () => {
  assertEquals(cleanGold(51.0), "51");
  assertEquals(cleanGold("51.0"), "51");
  assertEquals(cleanGold(" 7.05 "), "7.05");
  assertEquals(cleanGold("100"), "100");
  assertEquals(cleanGold(-0.5), "-0.5");
});

/** Logits [rows, V] from rows of values. */
function logitsOf(rows: number[][]): Float32Array {
  return Float32Array.from(rows.flat());
}

Deno.test("scoreReadout: block k's slot j (loop row k*c+j, BOT first) against S_k[j]", () => {
  // V = 6, K = 2, c = 3: 1 + K*c = 7 rows. Gold S_0 = [1, 2], S_1 = [3, 4, 5, 0] (longer than c).
  const V = 6;
  const rows = [
    [0, 9, 0, 0, 0, 0], // row 0 (BOT) = block 0 slot 0: argmax 1 = gold -> top-1
    [0, 0, 1, 0, 0, 3], // block 0 slot 1: argmax 5; gold 2 is second -> top-5 only
    [7, 0, 0, 0, 0, 0], // block 0 slot 2: past |S_0| = 2, not scored
    [0, 0, 0, 8, 0, 0], // block 1 slot 0: gold 3 -> top-1
    [9, 8, 7, 6, 5, 0], // block 1 slot 1: gold 4 ranks 5th -> top-5 only
    [0, 0, 0, 0, 0, -1], // block 1 slot 2: gold 5 is the smallest of 6 -> miss
    [0, 0, 0, 0, 0, 0], // the last latent: never scored
  ];
  const s = scoreReadout(logitsOf(rows), 2, 3, V, [[1, 2], [3, 4, 5, 0], [1]]);
  assertEquals(s.length, 2, "blocks beyond K are not scored even with gold steps");
  assertEquals(s[0].top1, [true, false]);
  assertEquals(s[0].top5, [true, true]);
  assertEquals(s[0].readout, [1, 5, 0]);
  assertEquals(s[1].top1, [true, false, false]);
  assertEquals(s[1].top5, [true, true, false]);
  assertEquals(s[1].gold, [3, 4, 5, 0]);
  // Fewer gold steps than K: only those blocks are scored.
  assertEquals(scoreReadout(logitsOf(rows), 2, 3, V, [[1]]).length, 1);
});

Deno.test("bestReadings: the n most likely slot sequences, cut at the newline, distinct", () => {
  // V = 3 tokens: "a", "b", "\n"; K = 1, c = 2 (rows: slot 0, slot 1, unused).
  const names = ["a", "b", "\n"];
  const decode = (ids: number[]) => ids.map((i) => names[i]).join("");
  const rows = [[2, 1, 0], [0, 0, 3], [0, 0, 0]];
  const best = bestReadings(logitsOf(rows), 0, 2, 3, 3, decode);
  // "\n" dominates slot 1, so the third reading starts with slot 0's weakest token, "\n".
  assertEquals(best.map((b) => b.text), ["a", "b", ""]);
  assert(best[0].logProb > best[1].logProb && best[1].logProb > best[2].logProb);
  // "\n" first gives the empty reading, whatever follows.
  const nl = bestReadings(logitsOf([[0, 0, 9], [5, 0, 0], [0, 0, 0]]), 0, 2, 3, 2, decode);
  assertEquals(nl[0].text, "");
});

Deno.test("alternative intermediates: valid, grounded and different from every gold step", () => {
  const question = "Ann buys 3 boxes with 12 eggs each. She uses 5 eggs. An hour has 60 minutes.";
  const gold = ["<<3*12=36>>", "<<36-5=31>>"];
  const at = (block: number, earlierResults: number[] = []) => ({
    question,
    gold,
    block,
    earlierResults,
  });
  assertEquals(classifyStep("<<3*12=36>>", at(0)).kind, "gold");
  assertEquals(classifyStep(" <<36-5=31>> ", at(0)).kind, "gold-elsewhere");
  assertEquals(classifyStep("<<12*3=36>>", at(0)).kind, "alternative"); // operands swapped
  assertEquals(classifyStep("<<3*60=180>>", at(0)).kind, "alternative"); // a question number
  assertEquals(classifyStep("<<36*5=180>>", at(1)).kind, "alternative"); // an earlier result
  // 36 is step 0's result: it cannot ground block 0 itself.
  const early = classifyStep("<<36+5=41>>", at(0));
  assertEquals(early.kind, "invalid");
  assert(early.reason!.includes("36"));
  assertEquals(classifyStep("<<41*2=82>>", at(1, [41])).kind, "invalid"); // 2 is nowhere
  assertEquals(classifyStep("<<41-5=36>>", at(1, [41])).kind, "alternative"); // earlier readout
  assertEquals(classifyStep("<<3*12=35>>", at(0)).kind, "invalid"); // wrong arithmetic
  assertEquals(classifyStep("<<3*12>>", at(0)).kind, "invalid"); // no value
  assertEquals(classifyStep("3*12=36", at(0)).kind, "invalid"); // no brackets
  assertEquals(classifyStep("<<3*x=36>>", at(0)).kind, "invalid"); // not arithmetic
  assertEquals(classifyStep("", at(0)).kind, "invalid");
  // Rounded values are accepted as the pipeline's validation accepts them.
  assertEquals(
    classifyStep("<<60/12=5>>", at(0)).kind,
    "alternative",
  );
  assertEquals(validStepValue("<<10/3=3.33>>"), 3.33);
  assertEquals(validStepValue("<<10/3=4>>"), 4); // rounded up, as GSM8K writes buses
  assertEquals(validStepValue("<<10/3=5>>"), null);
  assertEquals(parseStep("<<a=b=c>>"), { expr: "a=b", value: "c" });
  assertEquals(operandsOf("3*12-$1,000+0.5"), [3, 12, 1000, 0.5]);
});

Deno.test("alternative intermediates: the gold step by value, and steps that compute nothing", () => {
  const ctx = (block: number) => ({
    question: "Tom has 12 apples and 3 bags.",
    gold: ["<<12/3=4>>", "<<4*2=8>>"],
    block,
  });
  // Numbers compare by value: a restated 4 as 4.0 is still the gold step, or another block's.
  assertEquals(classifyStep("<<12/3=4.0>>", ctx(0)).kind, "gold");
  assertEquals(classifyStep("<<12.0 / 3 = 4>>", ctx(0)).kind, "gold");
  assertEquals(classifyStep("<<4.0*2=8>>", ctx(0)).kind, "gold-elsewhere");
  assert(sameStep("<<$1,200/3=400>>", "<<1200/3=400.00>>"));
  assert(!sameStep("<<3*12=36>>", "<<12*3=36>>")); // another order is another step
  assert(!sameStep("<<12/3=4>>", "<<12/3=4.5>>"));
  // A step with no operator, or whose value is an operand or a number cancelled against
  // itself, computes nothing: it is no alternative intermediate.
  for (const text of ["<<12=12>>", "<<(12)=12>>", "<<3-3=0>>", "<<3/3=1>>", "<<12*1=12>>"]) {
    const v = classifyStep(text, ctx(0));
    assertEquals(v.kind, "invalid", text);
    assert(/computes nothing|restates|cancels/.test(v.reason!), `${text}: ${v.reason}`);
  }
  assertEquals(classifyStep("<<12-3=9>>", ctx(0)).kind, "alternative");
  // A value that equals an operand without an identity is a computation.
  const halves = {
    question: "Ann has 4 pens and 6 cups; she gives 2 and 3 away.",
    gold: [],
    block: 0,
  };
  assertEquals(classifyStep("<<4/2=2>>", halves).kind, "alternative");
  assertEquals(classifyStep("<<6-3=3>>", halves).kind, "alternative");
  assertEquals(classifyStep("<<4+0=4>>", halves).kind, "invalid");
  assertEquals(classifyStep("<<3-12=-9>>", ctx(0)).kind, "alternative");
  assertEquals(classifyStep("<<12*3-36=0>>", ctx(0)).kind, "invalid"); // 36 is nowhere
  assertEquals(trivialStep("50%*12", 6), null);
  assertEquals(trivialStep("12%5", 2), null);
  assertEquals(trivialStep("50%", 0.5), "no arithmetic operator: it computes nothing");
});

Deno.test("summariseReadout: token rates over scored slots; alternatives over differing blocks", () => {
  const block = (
    gold: string,
    text: string,
    hits: boolean[],
    kind: "gold" | "alternative" | "invalid",
    alt5: boolean,
  ) => ({
    block: 0,
    gold,
    text,
    goldTokens: [],
    readoutTokens: [],
    top1: hits,
    top5: hits.map(() => true),
    kind,
    alternativeTop5: alt5,
  });
  const s = summariseReadout([
    [block("<<1+1=2>>", "<<1+1=2>>", [true, true, true], "gold", false)],
    [block("<<2*3=6>>", "<<3*2=6>>", [false, true], "alternative", true)],
    [block("<<4-1=3>>", "<<4-1=2>>", [true, false], "invalid", true)],
    [block("<<4-1=3>>", "<<9", [false], "invalid", false)],
  ]);
  assertEquals(s.blocks, 4);
  assertEquals(s.positions, 8);
  assertAlmostEquals(s.top1, 5 / 8);
  assertEquals(s.top5, 1);
  assertEquals(s.blocksExact, 1);
  assertEquals(s.blocksDiffering, 3);
  assertAlmostEquals(s.alternativeTop1, 1 / 3);
  assertAlmostEquals(s.alternativeTop5, 2 / 3);
  assertEquals(s.kinds, { gold: 1, "gold-elsewhere": 0, alternative: 1, invalid: 2 });
});

Deno.test("thoughtLength: tokens before the first token holding #", () => {
  const names = ["<<", "2", "=", ">>\n", "###", " ", "5", "#"];
  const dec = (ids: number[]) => ids.map((i) => names[i]).join("");
  assertEquals(thoughtLength([0, 1, 2, 1, 3, 4, 5, 6], dec), 5);
  assertEquals(thoughtLength([7, 6], dec), 0);
  assertEquals(thoughtLength([0, 1], dec), 2);
});

Deno.test("detection: an unknown file offers evaluation's formats; an empty one asks for another file", async () => {
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/q.txt`, "just some words\n");
  const e = await assertRejects(() => detectEvalFormat(`${dir}/q.txt`), FormatError);
  assert(
    e.message.endsWith(
      "; pass --format gsm8k|parquet|icot|coconut|nl|csv|gsm-hard|svamp|multiarith",
    ),
    e.message,
  );
  await Deno.writeTextFile(`${dir}/empty.jsonl`, "\n \n");
  const empty = await assertRejects(() => detectEvalFormat(`${dir}/empty.jsonl`), FormatError);
  assertEquals(
    empty.message,
    `${dir}/empty.jsonl: holds no record (the file is empty, or has blank lines only); check ` +
      "the path, or give a file that holds problems",
  );
});

Deno.test("detection: a GSM-Hard or MultiArith file whose first line is damaged is still told by the next", async () => {
  const dir = await tempDir();
  const rec = (q: string, t: number, code?: string) =>
    JSON.stringify({ input: q, ...(code === undefined ? {} : { code }), target: t });
  const hard = `${dir}/hard.jsonl`;
  await Deno.writeTextFile(
    hard,
    rec("Tom has 7 kites and gives 2 away. How many are left?", 5, "x").slice(0, -1) + ",\n" +
      rec("Lea reads 3 pages a day for 4 days. How many pages?", 12, "x") + "\n" +
      rec("A box holds 9 eggs and 4 break. How many are whole?", 5, "x") + "\n",
  );
  assertEquals(await detectEvalFormat(hard), "gsm-hard");
  const e = await assertRejects(() => loadEvalItems(hard), InputError);
  assert(e.message.startsWith(`${hard}:1: invalid JSON`), e.message);
  const skipped: InputError[] = [];
  const items = await loadEvalItems(hard, { onError: "skip", onSkip: (x) => skipped.push(x) });
  assertEquals(items.map((i) => i.answer), ["12", "5"]);
  assertEquals(skipped.map((x) => x.line), [1]);
  // A first line that is not UTF-8 is passed over too; the reader names it.
  const multi = `${dir}/multi.jsonl`;
  const enc = new TextEncoder();
  await Deno.writeFile(
    multi,
    new Uint8Array([
      ...enc.encode('{"input": "Caf'),
      0xe9,
      ...enc.encode(' sells 4 cakes and 3 pies. How many?", "target": 7}\n'),
      ...enc.encode(rec("Sam has 8 cards and buys 2. How many?", 10) + "\n"),
    ]),
  );
  assertEquals(await detectEvalFormat(multi), "multiarith");
  const bad = await assertRejects(() => loadEvalItems(multi), InputError);
  assertEquals([bad.line, bad.reason], [1, "invalid_utf8"]);
  assertEquals((await loadEvalItems(multi, { onError: "skip" })).map((i) => i.answer), ["10"]);
});

Deno.test("eval --on-error skip names the records it skips, and the first when it skips them all", async () => {
  const dir = await tempDir();
  const data = `${dir}/multi.jsonl`;
  await Deno.writeTextFile(
    data,
    '{"input": "Sam has 8 cards and buys 2. How many?", "target": 10}\n' +
      '{"input": "", "target": 1}\n[3]\n',
  );
  const args = (more: string[]) =>
    parseEvalArgs([
      "--checkpoint",
      `${dir}/no-such-run`,
      "--out",
      `${dir}/ev`,
      "--on-error",
      "skip",
      ...more,
    ]);
  // The checkpoint is opened after the items are read: the log holds the skips by then.
  const lines: string[] = [];
  const a = args(["--data", data]);
  if (a === "help") throw new Error("help");
  await assertRejects(() => evalCommand(a, (l) => lines.push(l)));
  assertEquals(lines.slice(0, 3), [
    `1 items from ${data} (multiarith), 2 malformed records skipped`,
    `  skipped ${data}:2: field "input": expected a non-empty string (the question), got an ` +
    "empty string",
    `  skipped ${data}:3: expected a JSON object with fields input, target, got an array`,
  ]);
  // Read as the wrong format, every record is skipped: the error says which and why.
  // A file with no record at all says so.
  await Deno.writeTextFile(`${dir}/empty.json`, "[]\n");
  const none = args(["--data", `${dir}/empty.json`, "--format", "svamp"]);
  if (none === "help") throw new Error("help");
  const n = await assertRejects(() => evalCommand(none, () => {}), CliError);
  assertEquals(
    n.message,
    `${dir}/empty.json: no items to evaluate: it holds no record (a CSV header or an empty ` +
      "JSON array, say); check the path, or give a file that holds problems",
  );
  const wrong = args(["--data", data, "--format", "gsm8k"]);
  if (wrong === "help") throw new Error("help");
  const e = await assertRejects(() => evalCommand(wrong, () => {}), CliError);
  assertEquals(
    e.message,
    `${data}: no items to evaluate: --on-error skip skipped all 3 records (the first, ` +
      `${data}:1: field "question": expected a non-empty string, got nothing (the field is ` +
      "missing)); check that --data is the file meant and that it is read as the right " +
      "format (gsm8k, from --format), or fix the records",
  );
});

Deno.test("readers: a Parquet file given as GSM-Hard, MultiArith or SVAMP says to save it as JSON lines", async () => {
  const dir = await tempDir();
  const path = `${dir}/hard.parquet`;
  await Deno.writeFile(
    path,
    new Uint8Array(parquetWriteBuffer({
      columnData: [
        { name: "input", data: ["Tom has 7 kites and gives 2 away. How many?"], type: "STRING" },
        { name: "target", data: [5], type: "DOUBLE" },
      ],
    })),
  );
  const g = await assertRejects(
    () => loadEvalItems(path, { format: "gsm8k", onError: "skip" }),
    InputError,
  );
  assertEquals(
    g.message,
    `${path}: a Parquet file (it starts with "PAR1"), and --format gsm8k reads text; leave ` +
      "out --format, or pass --format parquet",
  );
  for (const format of ["gsm-hard", "multiarith", "svamp"] as const) {
    const e = await assertRejects(
      () => loadEvalItems(path, { format, onError: "skip" }),
      InputError,
    );
    assert(
      e.message.startsWith(
        `${path}: a Parquet file (it starts with "PAR1"), and --format ${format} reads text; ` +
          `${format} is read from JSON`,
      ),
      e.message,
    );
    assert(e.message.includes("save the table as JSON lines"), e.message);
    assert(!e.message.includes("UTF-8"), e.message);
  }
});

Deno.test("readers: GSM8K JSON lines whose answer is the bare answer are evaluated without gold steps", async () => {
  const dir = await tempDir();
  const path = `${dir}/mine.jsonl`;
  await Deno.writeTextFile(
    path,
    [
      { question: "Tom has 7 kites and gives 2 away. How many are left?", answer: "5" },
      { question: "Lea reads 3 pages a day for 4 days. How many pages?", answer: 12 },
      { question: "A box holds 9 eggs. How many?", answer: "9 + 0 = <<9+0=9>>9\n#### 9" },
      { question: "How many?", answer: "the answer is ####" },
      { question: "", answer: "3" },
    ].map((r) => JSON.stringify(r)).join("\n") + "\n",
  );
  assertEquals(await detectEvalFormat(path), "gsm8k");
  const skipped: InputError[] = [];
  const items = await loadEvalItems(path, { onError: "skip", onSkip: (e) => skipped.push(e) });
  assertEquals(items.map((i) => [i.id, i.answer, i.math]), [
    ["mine.jsonl:1", "5", null],
    ["mine.jsonl:2", "12", null],
    ["mine.jsonl:3", "9", ["<<9+0=9>>"]],
  ]);
  // An answer with "####" and nothing after it, and an empty question, are still errors.
  assertEquals(skipped.map((e) => [e.line, e.field]), [[4, "answer"], [5, "question"]]);
  // A {question, cot, answer} record is nl's: read as GSM8K its chain of thought would be
  // dropped without a word, so it is an error that names --format nl.
  const nl = `${dir}/nl.jsonl`;
  await Deno.writeTextFile(
    nl,
    JSON.stringify({
      question: "Tom has 7 kites and gives 2 away. How many?",
      cot: "7-2=5.",
      answer: "5",
    }) +
      "\n",
  );
  const e = await assertRejects(() => loadEvalItems(nl, { format: "gsm8k" }), InputError);
  assert(e.message.includes("pass --format nl"), e.message);
  assertEquals((await loadEvalItems(nl)).map((i) => i.answer), ["5"]);
});

Deno.test("readers: a target written as a JSON number beyond 2^53 keeps its digits", async () => {
  const dir = await tempDir();
  const q = "A town counts 12345678901234567889 grains of sand and one more. How many?";
  // Written by hand: JSON.stringify would go through a double.
  const line = (extra: string) => `{"input": ${JSON.stringify(q)},${extra} "target": `;
  await Deno.writeTextFile(
    `${dir}/multi.jsonl`,
    `${line("")}12345678901234567890}\n${line("")}-2.5}\n`,
  );
  await Deno.writeTextFile(`${dir}/hard.jsonl`, `${line(' "code": "",')}12345678901234567890}\n`);
  await Deno.writeTextFile(
    `${dir}/svamp.json`,
    `[{"ID": 98765432109876543210, "Body": "", "Question": ${
      JSON.stringify(q)
    }, "Answer": 12345678901234567890}]\n`,
  );
  const multi = await loadEvalItems(`${dir}/multi.jsonl`);
  assertEquals(multi.map((i) => i.answer), ["12345678901234567890", "-2.5"]);
  assertEquals((await loadEvalItems(`${dir}/hard.jsonl`))[0].answer, "12345678901234567890");
  const [sv] = await loadEvalItems(`${dir}/svamp.json`);
  assertEquals([sv.id, sv.answer], ["svamp.json:98765432109876543210", "12345678901234567890"]);
  // So the model's exact answer scores, and a near one does not.
  assert(answersMatch("12345678901234567890", multi[0].answer));
  assert(!answersMatch("12345678901234567000", multi[0].answer));
});

Deno.test("a dataset directory's split: one it lacks is named with those it has", async () => {
  const dir = `${await tempDir()}/ds`;
  await buildDataset({
    out: dir,
    splits: [{ name: "train", inputs: [`${PIPE}gsm8k.jsonl`] }],
    tokenizer: "compact",
    onError: "skip",
  });
  const e = await assertRejects(() => datasetSplit(dir, "nope"), InputError);
  assertEquals(
    e.message,
    `${dir}: has no split "nope" (it has train); pass one of those with --split`,
  );
  const none = await assertRejects(() => datasetSplit(dir), InputError);
  assertEquals(
    none.message,
    `${dir}: has neither a test nor a valid split (it has train); pass one of those with --split`,
  );
});

Deno.test("readers: GSM-Hard, SVAMP (array and JSON lines) and MultiArith fixtures", async () => {
  assertEquals(await detectEvalFormat(`${FIX}gsm_hard.jsonl`), "gsm-hard");
  assertEquals(await detectEvalFormat(`${FIX}svamp.json`), "svamp");
  assertEquals(await detectEvalFormat(`${FIX}multiarith.jsonl`), "multiarith");
  assertEquals(await detectEvalFormat(`${FIX}svamp.jsonl`), "multiarith");
  assertEquals(await detectEvalFormat(`${PIPE}gsm8k.jsonl`), "gsm8k");
  assertEquals(await detectEvalFormat(`${PIPE}icot.txt`), "icot");

  const hard = await loadEvalItems(`${FIX}gsm_hard.jsonl`);
  assertEquals(hard.map((i) => i.answer), ["1235567", "25.5", "2.5"]);
  assertEquals(hard.map((i) => i.source.line), [1, 2, 4]); // the blank line 3 is skipped
  assertEquals(hard[0].id, "gsm_hard.jsonl:1");
  assertEquals(hard[0].math, null);

  const arr = await loadEvalItems(`${FIX}svamp.json`);
  const lines = await loadEvalItems(`${FIX}svamp.jsonl`, { format: "svamp" });
  assertEquals(arr.map((i) => i.question), lines.map((i) => i.question));
  assertEquals(arr.map((i) => i.answer), ["7", "54", "7.5"]);
  assertEquals(arr[0].id, "svamp.json:fx-1");
  assertEquals(
    arr[1].question,
    "A shelf holds 6 rows of books with 9 books in each row. How many books are on the shelf?",
  );

  const ma = await loadEvalItems(`${FIX}multiarith.jsonl`);
  assertEquals(ma.length, 3, "the last line has no newline and is still read");
  assertEquals(ma.map((i) => i.answer), ["10", "21", "22"]);
  assertEquals((await loadEvalItems(`${FIX}multiarith.jsonl`, { limit: 2 })).length, 2);
});

Deno.test("readers: pipeline formats keep their gold steps in both forms", async () => {
  const g = await loadEvalItems(`${PIPE}gsm8k.jsonl`);
  assert(g.length > 0);
  assert(g.every((i) => i.math !== null && i.nl !== null));
  assert(g.some((i) => i.math!.length > 1));
  assert(g[0].math!.every((s) => s.startsWith("<<") && s.endsWith(">>")));
  const ic = await loadEvalItems(`${PIPE}icot.txt`);
  assert(ic.length > 0 && ic[0].math!.length > 0);
});

Deno.test("readers: bad records name file:line and field, or are skipped on request", async () => {
  const d = await tempDir();
  const path = `${d}/bad.jsonl`;
  await Deno.writeTextFile(
    path,
    '{"input": "What is 2+2?", "target": 4}\n{"input": "", "target": 1}\n{"input": "x?"}\nnot json\n',
  );
  const e = await assertRejects(() => loadEvalItems(path, { format: "multiarith" }), InputError);
  assert(e.message.includes(`${path}:2`) && e.message.includes('"input"'), e.message);
  const skipped: InputError[] = [];
  const ok = await loadEvalItems(path, {
    format: "multiarith",
    onError: "skip",
    onSkip: (x) => skipped.push(x),
  });
  assertEquals(ok.length, 1);
  assertEquals(skipped.map((x) => x.line), [2, 3, 4]);
  assert(skipped[1].message.includes('"target"'));
  // SVAMP's IDs name its items: a repeated one is refused at the repeat, naming the first.
  const svamp = (id: string, q: string) => ({ ID: id, Body: "", Question: q, Answer: 1 });
  await Deno.writeTextFile(
    `${d}/dup.json`,
    JSON.stringify([svamp("a-1", "One?"), svamp("a-2", "Two?"), svamp("a-1", "Three?")]),
  );
  const dup = await assertRejects(() => loadEvalItems(`${d}/dup.json`), InputError);
  assertEquals(
    dup.message,
    `${d}/dup.json: element 3: field "ID": the id "dup.json:a-1" is already that of ` +
      `element 1; ids must be unique (predictions.csv and readout.csv name items by id); give ` +
      `each record its own "ID" (or leave "ID" out of every record, so ids number the ` +
      `elements), or pass --on-error skip to drop the repeat`,
  );
  // A bad element is named as such, not as a line of the file.
  await Deno.writeTextFile(
    `${d}/bad.json`,
    JSON.stringify([svamp("b-1", "One?"), { ...svamp("b-2", "Two?"), Question: 5 }]),
  );
  const bad = await assertRejects(() => loadEvalItems(`${d}/bad.json`), InputError);
  assert(bad.message.startsWith(`${d}/bad.json: element 2: field "Question"`), bad.message);
  // A file in no format evaluation reads says so, listing evaluation's formats.
  await Deno.writeTextFile(`${d}/other.jsonl`, '{"prompt": "q?", "label": 1}\n');
  const other = await assertRejects(() => loadEvalItems(`${d}/other.jsonl`), FormatError);
  assert(other.message.includes("not in a format this command reads"), other.message);
  assert(other.message.includes("multiarith (JSON lines {input, target})"), other.message);
  await Deno.writeTextFile(`${d}/obj.json`, '{"Body": "x"}');
  await assertRejects(() => loadEvalItems(`${d}/obj.json`, { format: "svamp" }), InputError);
  await assertRejects(
    () => loadEvalItems(path, { format: "nope" as "gsm8k" }),
    InputError,
    "--format",
  );
});

const SHARED = SHARED_DATA;
const haveShared = haveSharedData("", "eval_test", "the real-data reader test");

Deno.test({
  name: "readers: the real GSM8K test, GSM8K-Aug test, GSM-Hard, SVAMP and MultiArith files",
  ignore: !haveShared,
  fn: async () => {
    const count = async (p: string) => (await loadEvalItems(SHARED + p)).length;
    assertEquals(await count("gsm8k/test.jsonl"), 1319);
    assertEquals(await count("gsm8k_aug/test.txt"), 1319);
    assertEquals(await count("gsm_hard/gsmhardv2.jsonl"), 1319);
    assertEquals(await count("multiarith/mawpsmultiarith.jsonl"), 600);
    const a = await loadEvalItems(SHARED + "svamp/SVAMP.json");
    const b = await loadEvalItems(SHARED + "svamp/svamp.jsonl", { format: "svamp" });
    assertEquals(a.length, 1000);
    assertEquals(a.map((i) => [i.question, i.answer]), b.map((i) => [i.question, i.answer]));
    const hard = await loadEvalItems(SHARED + "gsm_hard/gsmhardv2.jsonl");
    assert(hard.every((i) => !i.answer.endsWith(".0")));
    assert(hard.some((i) => i.answer.startsWith("-")));
  },
});

Deno.test("training log: log.jsonl, else log.csv; both give the same series", async () => {
  const d = await tempDir();
  const recs = [
    {
      kind: "train",
      step: 1,
      epoch: 0,
      stage: 0,
      K: 0,
      R: 0,
      loss: 3,
      ansLoss: 3,
      stepLoss: 0,
      seconds: 1,
    },
    {
      kind: "train",
      step: 2,
      epoch: 0,
      stage: 1,
      K: 1,
      R: 1,
      loss: 2,
      ansLoss: 1.5,
      stepLoss: 10,
      seconds: 2,
    },
    {
      kind: "eval",
      step: 2,
      epoch: 0,
      stage: 1,
      K: 1,
      R: 1,
      valLoss: 2.5,
      valAccuracy: 0.25,
      valExamples: 4,
      seconds: 2,
    },
  ];
  await Deno.writeTextFile(`${d}/log.jsonl`, recs.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const fromJson = await readTrainLog(d);
  assertEquals(fromJson.length, 3);
  const loss = lossSeries(fromJson);
  assertEquals(loss.map((s) => s.name), ["loss", "answer loss", "step loss"]);
  assertEquals(loss[0].points, [[1, 3], [2, 2]]);
  assertEquals(accuracySeries(fromJson).points, [[2, 0.25]]);
  await Deno.remove(`${d}/log.jsonl`);
  const cols = [
    "kind",
    "step",
    "epoch",
    "stage",
    "K",
    "R",
    "loss",
    "ansLoss",
    "stepLoss",
    "valLoss",
    "valAccuracy",
    "valExamples",
    "seconds",
  ];
  const csv = [
    cols.join(","),
    ...recs.map((r) => cols.map((c) => (r as Record<string, unknown>)[c] ?? "").join(",")),
  ];
  await Deno.writeTextFile(`${d}/log.csv`, csv.join("\n") + "\n");
  const fromCsv = await readTrainLog(d);
  assertEquals(lossSeries(fromCsv), loss);
  assertEquals(accuracySeries(fromCsv), accuracySeries(fromJson));
  await Deno.writeTextFile(`${d}/log.jsonl`, '{"kind": "train", "step": "x"}\n');
  await assertRejects(() => readTrainLog(d), TrainLogError, "log.jsonl:1");
  await assertRejects(() => readTrainLog(`${d}/nowhere`), TrainLogError, "neither");
});

Deno.test("SVG builders: ticks, a line chart and the readout view", () => {
  assertEquals(ticks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assertEquals(ticks(0, 95, 5), [0, 20, 40, 60, 80]);
  const chart = lineChartSvg([
    { name: "a <b>", points: [[0, 1], [1, 0.5], [2, NaN], [3, 0.25]] },
    { name: "empty", points: [] },
  ], { title: "T & U", xLabel: "step", yLabel: "loss", logY: true });
  assert(chart.startsWith("<svg") && chart.endsWith("</svg>"));
  assert(chart.includes("a &lt;b&gt;") && chart.includes("T &amp; U"));
  assertEquals(chart.match(/<polyline/g)?.length, 1);
  assertEquals(chart.match(/<circle/g)?.length, 3, "the NaN point is skipped");
  const view = readoutSvg([{
    title: "q",
    blocks: [{
      gold: ["<<", "1\n"],
      readout: ["<<", "2", "x"],
      match: ["top1", "miss", "none"],
      note: "invalid",
    }],
  }]);
  assertEquals(view.match(/fill="#b7e4b0"/g)?.length, 2, "one green cell and its legend");
  assertEquals(view.match(/fill="#f4b6b6"/g)?.length, 2, "one red cell and its legend");
  assert(view.includes("1⏎") && view.includes("invalid"));
});

Deno.test("SVG builders: a token that decodes to a control character leaves the SVG well-formed XML", () => {
  // GPT-2's byte-level vocabulary has 29 tokens that decode to C0 controls (id 188 is U+0000);
  // an undertrained model's readout can land on them, and XML 1.0 allows none of them.
  const view = readoutSvg([{
    title: "q\u0007",
    blocks: [{
      gold: ["<<", "1"],
      readout: ["\u0000", "\u001b[", "\ud800"],
      match: ["miss", "miss", "none"],
      note: "invalid",
    }],
  }]);
  // deno-lint-ignore no-control-regex
  const notXml = /[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])/;
  assert(!notXml.test(view), JSON.stringify(view.match(notXml)));
  assert(view.includes(">\u2400<") && view.includes(">\u241b[<") && view.includes("q\u2407"));
  assert(view.includes(">\ufffd<"));
  // Characters XML does allow pass as they are, a pair of surrogates included.
  assertEquals(escapeXml("tab\there \u{1f600} \u00e9"), "tab\there \u{1f600} \u00e9");
});

Deno.test("eval CLI arguments: R lists, required flags, bad values", () => {
  const a = parseEvalArgs([
    "--checkpoint",
    "c",
    "--data",
    "d",
    "--r",
    "0,1, 2,4,6",
    "--batch",
    "1",
  ]);
  assert(a !== "help");
  assertEquals(a.r, [0, 1, 2, 4, 6]);
  assertEquals(a.batch, 1);
  assertEquals(a.out, "out/eval");
  assertEquals(parseEvalArgs(["--help"]), "help");
  assertThrows(() => parseEvalArgs(["--data", "d"]), CliError, "--checkpoint");
  for (const r of ["1,x", "1,1", "0,,2", "0x10", "1,0x2", " "]) {
    assertThrows(
      () => parseEvalArgs(["--checkpoint", "c", "--data", "d", "--r", r]),
      CliError,
      "--r",
    );
  }
  assertThrows(
    () => parseEvalArgs(["--checkpoint", "c", "--data", "d", "--format", "xml"]),
    CliError,
    "--format",
  );
  assertThrows(() => parseEvalArgs(["--checkpoint", "c", "--data", "d", "--bogus"]), CliError);
});

/**
 * A scripted inference session: a character-level tokenizer, and answers that say "n" for a
 * question "What is n?" when n is even and "n+1" otherwise; each decode step takes step+1 ms.
 */
function scriptedSession(mode: "lotus" | "cot", maxPositions = 200, trainR: number | null = 2) {
  const calls: { n: number; r?: number }[] = [];
  const tokenizer = {
    encode: (s: string) => [...s].map((ch) => ch.charCodeAt(0)),
    decode: (ids: ArrayLike<number>) => String.fromCharCode(...Array.from(ids)),
    specialTokens: new Map([["<|endoftext|>", 127]]),
  };
  const session = {
    meta: {
      train: { mode, r: trainR },
      data: { cot: "math" },
      model: { vocabSize: 128, maxPositions },
    },
    tokenizer,
    backend: "cpu",
    shape: { K: mode === "lotus" ? 2 : 0, R: mode === "lotus" ? 2 : 0, c: 4 },
    answer(questions: string[], o: { r?: number } = {}) {
      return Promise.resolve(this.answerNow(questions, o));
    },
    answerNow(questions: string[], o: { r?: number } = {}) {
      calls.push({ n: questions.length, r: o.r });
      const answers = questions.map((q) => {
        const n = Number(/\d+/.exec(q)![0]);
        const text = `ab### ${n % 2 === 0 ? n : n + 1}`;
        return { text, answer: extractAnswer(text), tokens: tokenizer.encode(text) };
      });
      const steps = Math.max(...answers.map((a) => a.tokens.length)) + 1;
      const stepMs = Array.from({ length: steps }, (_, i) => i + 1);
      const R = o.r ?? 2;
      return {
        answers,
        timings: {
          prefillMs: 4,
          thoughtMs: mode === "lotus" ? 10 * (R + 1) : 0,
          decodeMs: stepMs.reduce((a, b) => a + b, 0),
          decodeSteps: steps,
          stepMs,
        },
        K: mode === "lotus" ? 2 : 0,
        R: mode === "lotus" ? R : 0,
        c: 4,
      };
    },
    close() {},
  };
  return { session: session as unknown as InferenceSession, calls };
}

const items = (ns: number[]): EvalItem[] =>
  ns.map((n, i) => ({
    id: `q${i}`,
    source: { file: "x", line: i + 1 },
    question: n < 0 ? `What is ${"very ".repeat(60)}long ${-n}?` : `What is ${n}?`,
    answer: String(Math.abs(n)),
    math: Array.from({ length: 1 + (i % 2) }, () => "<<1+1=2>>"),
    nl: null,
  }));

Deno.test("runEval: batches, an R sweep, a warm-up, and questions too long for the context", async () => {
  const { session, calls } = scriptedSession("lotus");
  const res = await runEval(session, items([2, 3, 4, -6, 5]), {
    batch: 2,
    r: [0, 3],
    readout: false,
  });
  // One warm-up batch, then 2 batches (4 answerable questions) per R.
  assertEquals(calls.map((c) => [c.n, c.r]), [[2, 0], [2, 0], [2, 0], [2, 3], [2, 3]]);
  assertEquals(res.runs.map((r) => [r.K, r.R, r.n, r.correct, r.tooLong]), [
    [2, 0, 5, 2, 1],
    [2, 3, 5, 2, 1],
  ]);
  assertEquals(res.examples.length, 10);
  assertEquals(res.examples.slice(0, 5).map((e) => e.index), [0, 1, 2, 3, 4]);
  const long = res.examples[3];
  assert(long.tooLong && !long.correct && long.predicted === "");
  // Thought time per example: the batch's pass time over its size; too-long rows excluded.
  assertEquals(res.runs[0].latency.thoughtMsPerExample, 10 / 2);
  assertEquals(res.runs[1].latency.thoughtMsPerExample, 40 / 2);
  assertEquals(res.runs[1].latency.thoughtMsMedian, 40 / 2);
  assertEquals(res.runs[0].latency.prefillMsPerExample, 2);
  assertEquals(res.runs[0].byGoldSteps.map((b) => [b.steps, b.n]), [["1", 3], ["2", 2]]);
  // predictions.csv marks the row, and leaves its tokens and timings empty, so that a column's
  // mean over its values is the summary's.
  const dir = await tempDir();
  const prov = {
    checkpoint: "c",
    data: "d",
    format: "gsm8k",
    backend: "cpu",
    mode: "lotus",
    preset: "tiny",
    cot: "math",
  };
  const files = await writeEvalOutputs(`${dir}/out`, prov, res);
  const rows = parseCsv(await Deno.readTextFile(files.predictions), { columns: true }) as Record<
    string,
    string
  >[];
  assertEquals(rows.map((r) => r.too_long), ["0", "0", "0", "1", "0", "0", "0", "0", "1", "0"]);
  assertEquals([rows[3].tokens, rows[3].prefill_ms, rows[3].thought_ms], ["", "", ""]);
  const answered = rows.slice(0, 5).filter((r) => r.too_long === "0");
  const mean = answered.reduce((a, r) => a + Number(r.prefill_ms), 0) / answered.length;
  assertEquals(mean.toFixed(3), res.runs[0].latency.prefillMsPerExample.toFixed(3));
});

Deno.test("runEval: a CoT checkpoint's thought is the decode time of the tokens before '#'", async () => {
  const { session } = scriptedSession("cot");
  const res = await runEval(session, items([2, 4]), { batch: 1, r: [0, 1] });
  assertEquals(res.runs.length, 1, "a baseline ignores the R sweep");
  const [a] = res.examples;
  assertEquals(a.thoughtTokens, 2); // "a", "b" before "###"
  assertEquals(a.thoughtMs, 1 + 2); // steps 0 and 1
  // "ab### 2": 7 tokens and EOS = 8 steps; the answer steps are 2..7, 3+4+...+8 = 33 ms.
  assertEquals(res.runs[0].latency.msPerAnswerToken, 33 / 6);
  assertEquals(res.runs[0].accuracy, 1);
  assertEquals(fitsContext(session, items([2, -4])), [true, false]);
});

Deno.test("runEval: a run where no question fits the context is refused, naming the options", async () => {
  const { session, calls } = scriptedSession("lotus");
  // "What is 2?\n" is 11 tokens: with BOT, 100 blocks of 4 and 64 new tokens + EOT, 477.
  const e = await assertRejects(() => runEval(session, items([2, 4]), { k: 100 }), RangeError);
  assert(e.message.includes("context of 200 positions"), e.message);
  assert(e.message.includes("needs 477"), e.message);
  assert(e.message.includes("--k") && e.message.includes("--max-new-tokens"), e.message);
  await assertRejects(
    () => runEval(session, items([2]), { maxNewTokens: 500 }),
    RangeError,
    "--max-new-tokens",
  );
  assertEquals(calls.length, 0, "nothing was answered");
  const cot = scriptedSession("cot").session;
  const c = await assertRejects(() => runEval(cot, items([2]), { maxNewTokens: 500 }), RangeError);
  assert(!c.message.includes("--k"), c.message);
  // One question that fits is enough for a run; the others are reported too long.
  const res = await runEval(session, items([2, -4]), { readout: false });
  assertEquals(res.runs[0].tooLong, 1);
});

Deno.test("runEval: a question holding a special token's text is refused, naming its file and line", async () => {
  const { session, calls } = scriptedSession("lotus");
  const typed = items([2, 4, 6]);
  typed[1] = { ...typed[1], source: { file: "data/test.jsonl", line: 17 } };
  typed[1].question = "What is <|endoftext|> 4?";
  const e = await assertRejects(() => runEval(session, typed, { readout: false }), InputError);
  assertEquals(
    e.message,
    'data/test.jsonl:17: field "question": holds "<|endoftext|>", which the tokenizer reads as ' +
      "its special token 127, not as text; remove it from the question",
  );
  assertEquals([e.file, e.line, e.field], ["data/test.jsonl", 17, "question"]);
  assertEquals(calls.length, 0, "nothing was answered");
  // A gold step of the checkpoint's form is encoded when the readout is scored: refused
  // then, and not without the readout (nor a step of the other form, or an answer).
  const gold = items([2]);
  gold[0].math = ["<<1+1=2>>", "<<2+2=4>><|endoftext|>"];
  gold[0].source = { file: "data/test.jsonl", line: 3 };
  const g = await assertRejects(() => runEval(session, gold), InputError);
  assertEquals(
    g.message,
    'data/test.jsonl:3: field "math step 2": holds "<|endoftext|>", which the tokenizer reads ' +
      "as its special token 127, not as text; remove it from the step",
  );
  assertEquals(calls.length, 0, "nothing was answered");
  assertEquals((await runEval(session, gold, { readout: false })).runs[0].n, 1);
  const other = items([2]);
  other[0].nl = ["Add <|endoftext|> them."];
  other[0].answer = "2<|endoftext|>";
  assertEquals((await runEval(session, other)).runs[0].n, 1);
});

Deno.test("runEval: the shape a run reports is the one the session runs (R follows --k)", async () => {
  // With no question answered, the shape is not read off a batch.
  const tied = scriptedSession("lotus", 200, null).session;
  assertEquals((await runEval(tied, [], { k: 100 })).runs.map((r) => [r.K, r.R]), [[100, 100]]);
  assertEquals((await runEval(tied, [], { k: 5, r: [1] })).runs.map((r) => [r.K, r.R]), [[5, 1]]);
  const fixed = scriptedSession("lotus", 200, 2).session;
  assertEquals((await runEval(fixed, [], { k: 100 })).runs.map((r) => [r.K, r.R]), [[100, 2]]);
});

/**
 * A LOTUS session (character tokenizer, c = 16) whose latent logits read out `readings`, block
 * by block: each slot's argmax is the next character of the reading and its newline.
 */
function readoutSession(readings: string[]): InferenceSession {
  const V = 128, c = 16, K = readings.length;
  const tokenizer = {
    encode: (s: string) => [...s].map((ch) => ch.charCodeAt(0)),
    decode: (ids: ArrayLike<number>) => String.fromCharCode(...Array.from(ids)),
    specialTokens: new Map([["<|endoftext|>", 127]]),
  };
  const logits = new Float32Array((K * c + 1) * V);
  readings.forEach((text, k) => {
    const ids = tokenizer.encode((text + "\n").padEnd(c, "\n"));
    ids.forEach((id, j) => (logits[(k * c + j) * V + id] = 10));
  });
  return {
    meta: {
      train: { mode: "lotus", r: null },
      data: { cot: "math" },
      model: { vocabSize: V, maxPositions: 1000 },
    },
    tokenizer,
    backend: "cpu",
    shape: { K, R: K, c },
    answer(questions: string[]) {
      const text = "### 8";
      return Promise.resolve({
        answers: questions.map(() => ({
          text,
          answer: extractAnswer(text),
          tokens: tokenizer.encode(text),
          latentLogits: logits,
        })),
        timings: { prefillMs: 1, thoughtMs: 1, decodeMs: 1, decodeSteps: 1, stepMs: [1] },
        K,
        R: K,
        c,
      });
    },
    close() {},
  } as unknown as InferenceSession;
}

Deno.test("runEval readout: only a valid reading of an earlier block grounds a later one", async () => {
  const item: EvalItem = {
    id: "q0",
    source: { file: "x", line: 1 },
    question: "Tom has 12 apples and 3 bags.",
    answer: "8",
    math: ["<<12/3=4>>", "<<4*2=8>>"],
    nl: null,
  };
  const kinds = async (readings: string[]) =>
    (await runEval(readoutSession(readings), [item])).examples[0].readout!.map((b) => b.kind);
  // 7 is in no question or step: block 0 is invalid, and its 63 grounds nothing after it.
  assertEquals(await kinds(["<<7*9=63>>", "<<63+3=66>>"]), ["invalid", "invalid"]);
  // A valid alternative, or a gold step read in another block, grounds the next block.
  assertEquals(await kinds(["<<12*3=36>>", "<<36+3=39>>"]), ["alternative", "alternative"]);
  assertEquals(await kinds(["<<12/3=4.0>>", "<<4-3=1>>"]), ["gold", "alternative"]);
});

Deno.test("runEval readout: a model with no latent blocks (K = 0) reports no readout", async () => {
  const item: EvalItem = {
    id: "q0",
    source: { file: "x", line: 1 },
    question: "Tom has 12 apples and 3 bags.",
    answer: "8",
    math: ["<<12/3=4>>", "<<4*2=8>>"],
    nl: null,
  };
  const res = await runEval(readoutSession([]), [item]);
  assertEquals(res.runs[0].K, 0);
  assertEquals(res.examples[0].readout, undefined);
  assertEquals(res.runs[0].readout, undefined);
  // With one block, the same item is scored.
  const one = await runEval(readoutSession(["<<12/3=4>>"]), [item]);
  assertEquals(one.runs[0].readout?.blocks, 1);
});

Deno.test("runEval: msPerAnswerToken is null when no answer token was timed", async () => {
  // A CoT model that writes no "#" and runs out of budget: every step is its thought.
  const tokenizer = {
    encode: (s: string) => [...s].map((ch) => ch.charCodeAt(0)),
    decode: (ids: ArrayLike<number>) => String.fromCharCode(...Array.from(ids)),
    specialTokens: new Map([["<|endoftext|>", 127]]),
  };
  const session = {
    meta: {
      train: { mode: "cot", r: null },
      data: { cot: "math" },
      model: { vocabSize: 128, maxPositions: 200 },
    },
    tokenizer,
    backend: "cpu",
    shape: { K: 0, R: 0, c: 4 },
    answer(questions: string[]) {
      const text = "abc";
      return Promise.resolve({
        answers: questions.map(() => ({ text, answer: "", tokens: tokenizer.encode(text) })),
        timings: { prefillMs: 1, thoughtMs: 0, decodeMs: 6, decodeSteps: 3, stepMs: [1, 2, 3] },
        K: 0,
        R: 0,
        c: 4,
      });
    },
    close() {},
  } as unknown as InferenceSession;
  const res = await runEval(session, items([2]));
  assertEquals(res.runs[0].latency.thoughtMsPerExample, 6);
  assertEquals(res.runs[0].latency.msPerAnswerToken, null);
});

Deno.test("shape notes: --k/--r on a baseline are ignored, a --k past the trained K is named", () => {
  const shape = { K: 3, R: 3, c: 16 };
  assertEquals(shapeRequestNotes("lotus", shape, {}), []);
  assertEquals(shapeRequestNotes("lotus", shape, { k: 3, r: [0, 6] }), []);
  const past = shapeRequestNotes("lotus-aux", shape, { k: 4 });
  assertEquals(past.length, 1);
  assert(past[0].startsWith("--k 4: ") && past[0].includes("K = 3"), past[0]);
  assertEquals(shapeRequestNotes("cot", shape, { r: [] }), []);
  assertEquals(shapeRequestNotes("cot", shape, { k: 2, r: [1] }), [
    "--k and --r: a cot checkpoint has no latent loop, so they are ignored",
  ]);
  assertEquals(shapeRequestNotes("nocot", shape, { r: 2 }), [
    "--r: a nocot checkpoint has no latent loop, so it is ignored",
  ]);
});

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { parquetWriteBuffer } from "hyparquet-writer";
import {
  detectFormat,
  type Format,
  FormatError,
  InputError,
  type ReadOptions,
  readProblems,
} from "../pipeline/read.ts";
import type { Problem } from "../pipeline/types.ts";
import { haveSharedData, SHARED_DATA } from "./_shared_data.ts";

const FIX = "fixtures/pipeline";

async function readAll(path: string, opts?: ReadOptions): Promise<Problem[]> {
  const out: Problem[] = [];
  for await (const p of readProblems(path, opts)) out.push(p);
  return out;
}

async function tempFile(name: string, content: string | Uint8Array): Promise<string> {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/${name}`;
  if (typeof content === "string") await Deno.writeTextFile(path, content);
  else await Deno.writeFile(path, content);
  return path;
}

async function inputError(path: string, opts?: ReadOptions): Promise<InputError> {
  return (await assertRejects(() => readAll(path, opts), InputError)) as InputError;
}

// --- gsm8k -------------------------------------------------------------------------------

Deno.test("read gsm8k: rationale before ####, answer after, ids and sources", async () => {
  const path = `${FIX}/gsm8k.jsonl`;
  const ps = await readAll(path);
  assertEquals(ps.length, 3);
  assertEquals(ps[0], {
    id: "gsm8k.jsonl:1",
    source: { file: path, line: 1 },
    question: "A baker makes 12 rolls per tray and bakes 90 trays. How many rolls is that?",
    rationale: "The baker makes 12 * 90 = <<12*90=1080>>1080 rolls.",
    mathSteps: null,
    answer: "1,080",
  });
  // Non-ASCII text survives, and the question is trimmed.
  assertEquals(
    ps[1].question,
    "Zoë buys 3 cafés au lait at €1.50 each and pays with a $10 note. How much change?",
  );
  assertEquals(ps[1].answer, "$5.50");
  assertEquals(ps[2].answer, "-3");
  assertEquals(ps[2].id, "gsm8k.jsonl:3");
});

Deno.test("read gsm8k: invalid JSON names file and line; skip goes on", async () => {
  const path = await tempFile(
    "bad.jsonl",
    '{"question": "q1?", "answer": "x #### 1"}\n{"question": "q2?", "answer": \n\n{"question": "q4?", "answer": "y #### 4"}\n',
  );
  const e = await inputError(path);
  assertEquals(e.line, 2);
  assertEquals(e.file, path);
  assert(e.message.startsWith(`${path}:2: invalid JSON`), e.message);
  assert(e.message.endsWith("fix the record or pass --on-error skip"), e.message);

  const skipped: InputError[] = [];
  const ps = await readAll(path, { onError: "skip", onSkip: (x) => skipped.push(x) });
  assertEquals(ps.map((p) => p.source.line), [1, 4]); // the blank line 3 is not a record
  assertEquals(skipped.map((x) => x.line), [2]);
});

Deno.test("read gsm8k: missing field, wrong type, no #### and empty answer name the field", async () => {
  const cases: [string, string, string][] = [
    ['{"question": "q?"}', "answer", 'expected a string ending in "#### <number>", got nothing'],
    ['{"question": 7, "answer": "a #### 1"}', "question", "got a number"],
    ['{"question": "q?", "answer": "it is 5"}', "answer", '(no "####")'],
    ['{"question": "q?", "answer": "it is 5 ####  "}', "answer", 'nothing after "####"'],
    ['{"question": "  ", "answer": "a #### 1"}', "question", "got an empty string"],
  ];
  for (const [line, field, text] of cases) {
    const path = await tempFile("x.jsonl", `{"question": "ok?", "answer": "#### 1"}\n${line}\n`);
    const e = await inputError(path, { format: "gsm8k" });
    assertEquals(e.field, field, line);
    assertEquals(e.line, 2);
    assert(e.message.includes(`${path}:2: field "${field}": expected`), e.message);
    assert(e.message.includes(text), `${e.message} should include ${text}`);
  }
});

Deno.test("read: a record of the other JSON-lines format says which --format reads it", async () => {
  const gsm8k = '{"question": "Ann has 2 pens and buys 3. How many?", "answer": "2+3=5\\n#### 5"}';
  const nl = '{"question": "Ann has 2 pens and buys 3. How many?", "cot": "2+3=5.", "answer": "5"}';
  const asNl = await inputError(await tempFile("g.jsonl", gsm8k + "\n"), { format: "nl" });
  assertEquals(asNl.field, "cot");
  assert(
    asNl.message.endsWith(
      "the record is one --format gsm8k reads (a file is read in one format, --format's or " +
        "else its first record's): pass --format gsm8k if the file is in it, fix the record, " +
        "or pass --on-error skip",
    ),
    asNl.message,
  );
  const asGsm8k = await inputError(await tempFile("n.jsonl", nl + "\n"), { format: "gsm8k" });
  assertEquals(asGsm8k.field, "answer");
  assert(asGsm8k.message.includes("pass --format nl if the file is in it"), asGsm8k.message);
  // A record that neither format reads keeps the plain advice.
  const neither = await inputError(await tempFile("q.jsonl", '{"question": "q?"}\n'), {
    format: "nl",
  });
  assert(neither.message.endsWith("fix the record or pass --on-error skip"), neither.message);
});

Deno.test("read: a JSON value that is not an object is an InputError", async () => {
  const path = await tempFile("arr.jsonl", '{"question": "q?", "answer": "#### 1"}\n[1, 2]\n');
  const e = await inputError(path);
  assertEquals(e.line, 2);
  assert(e.message.includes("expected a JSON object"), e.message);
});

Deno.test("read: a JSON array read as JSON lines is the wrong --format, even when skipping", async () => {
  const text = '\n[\n  {"question": "q?", "steps": ["<<1+1=2>>"], "answer": "2"}\n]\n';
  const path = await tempFile("array.json", text);
  for (const format of ["gsm8k", "nl"] as const) {
    for (const onError of ["throw", "skip"] as const) {
      let skipped = 0;
      const e = await inputError(path, { format, onError, onSkip: () => skipped++ });
      assertEquals([e.line, skipped], [2, 0], `${format}, ${onError}`);
      assertEquals(
        e.message,
        `${path}:2: the file holds a JSON array, not JSON lines (one JSON object per line); ` +
          "fix the file or pass the right --format",
      );
    }
  }
});

Deno.test("read: CRLF, a byte order mark, no final newline and U+2028 inside a line", async () => {
  const text = '\uFEFF{"question": "a\u2028b?", "answer": "x #### 1"}\r\n' +
    '{"question": "c?", "answer": "y #### 2"}';
  const ps = await readAll(await tempFile("crlf.jsonl", text));
  assertEquals(ps.map((p) => [p.question, p.answer, p.source.line]), [
    ["a\u2028b?", "1", 1],
    ["c?", "2", 2],
  ]);
});

// --- icot --------------------------------------------------------------------------------

Deno.test("read icot: math chain, empty CoT and prose CoT", async () => {
  const ps = await readAll(`${FIX}/icot.txt`);
  assertEquals(ps.length, 3);
  assertEquals(ps[0].mathSteps, ["<<4*25=100>>", "<<100+10=110>>"]);
  assertEquals(ps[0].rationale, null);
  assertEquals(ps[0].answer, "110");
  assertEquals(ps[1].mathSteps, []);
  assertEquals(ps[1].answer, "13");
  assertEquals(ps[2].mathSteps, null);
  assertEquals(ps[2].rationale, "It leaks 2 * 3.5 = 7 litres. So 40 - 7 = 33 litres are left.");
  assertEquals(ps[2].id, "icot.txt:3");
});

Deno.test("read icot: no || and no ## are InputErrors with the field", async () => {
  let e = await inputError(await tempFile("a.txt", "q?||<<1+1=2>> #### 2\nq? <<1+1=2>> #### 2\n"), {
    format: "icot",
  });
  assertEquals([e.line, e.field], [2, "cot"]);
  assert(e.message.includes('(no "||")'), e.message);
  e = await inputError(await tempFile("b.txt", "q?||<<1+1=2>> 2\n"), { format: "icot" });
  assertEquals([e.line, e.field], [1, "answer"]);
  e = await inputError(await tempFile("c.txt", "q?||<<1+1=2>> #### \n"), { format: "icot" });
  assertEquals([e.line, e.field], [1, "answer"]);
});

Deno.test("read icot: the answer is the text after the last ##", async () => {
  const ps = await readAll(await tempFile("d.txt", "q?||<<2*3=6>> ## 6 #### 6\n"));
  assertEquals(ps[0].answer, "6");
  assertEquals(ps[0].mathSteps, ["<<2*3=6>>"]);
});

// --- coconut -----------------------------------------------------------------------------

Deno.test("read coconut: idx ids, math steps, sentence steps, numeric answers", async () => {
  const path = `${FIX}/coconut.json`;
  const ps = await readAll(path);
  // idx when present, else the 1-based element index.
  assertEquals(ps.map((p) => p.id), ["coconut.json:7", "coconut.json:2", "coconut.json:3"]);
  assertEquals(ps[0].mathSteps, ["<<30+12=42>>"]);
  assertEquals(ps[0].source, { file: path, line: 1 });
  assertEquals(ps[1].mathSteps, null);
  assertEquals(ps[1].rationale, "Max is a wug.\nEvery wug is a zorp.");
  assertEquals(ps[2].answer, "4.5");
});

Deno.test("read coconut: a bad element is skippable, a non-array file is not", async () => {
  const path = await tempFile(
    "c.json",
    JSON.stringify([
      { question: "q?", steps: ["<<1+1=2>>"], answer: "2" },
      { question: "q?", steps: "<<1+1=2>>", answer: "2" },
      { question: "q?", steps: [], answer: "2" },
    ]),
  );
  const e = await inputError(path);
  assertEquals([e.line, e.field], [2, "steps"]);
  assert(e.message.includes('field "steps": expected an array of strings, got a string'));
  const skipped: number[] = [];
  const ps = await readAll(path, { onError: "skip", onSkip: (x) => skipped.push(x.line) });
  assertEquals(ps.length, 2);
  assertEquals(skipped, [2]);

  const obj = await tempFile("o.json", '{"question": "q?"}');
  await assertRejects(
    () => readAll(obj, { format: "coconut", onError: "skip" }),
    InputError,
    "expected a JSON array",
  );
  const broken = await tempFile("b.json", '[\n{"question": "q?",\n "steps": [}\n]');
  const e2 = await inputError(broken, { format: "coconut", onError: "skip" });
  assert(e2.message.startsWith(`${broken}`) && e2.message.includes("invalid JSON"), e2.message);
});

Deno.test("read coconut: a repeated id is an error naming both elements, or is skipped", async () => {
  const path = await tempFile(
    "dup.json",
    JSON.stringify([
      { question: "q1?", steps: ["<<1+1=2>>"], answer: "2", idx: 5 },
      { question: "q2?", steps: ["<<2+2=4>>"], answer: "4", idx: 5 },
      { question: "q3?", steps: ["<<3+3=6>>"], answer: "6" },
      { question: "q4?", steps: ["<<4+4=8>>"], answer: "8", idx: 3 }, // element 3's id
    ]),
  );
  const e = await inputError(path);
  assertEquals([e.line, e.field], [2, "idx"]);
  assert(
    e.message.startsWith(
      `${path}: element 2: field "idx": the id "dup.json:5" is already that of element 1; ids must be unique`,
    ),
    e.message,
  );
  assert(e.message.includes('give each record its own "idx"'), e.message);
  const skipped: number[] = [];
  const ps = await readAll(path, { onError: "skip", onSkip: (x) => skipped.push(x.line) });
  assertEquals(ps.map((p) => p.id), ["dup.json:5", "dup.json:3"]);
  assertEquals(skipped, [2, 4]);
});

// --- nl ----------------------------------------------------------------------------------

Deno.test("read nl: prose CoT to rationale, annotation CoT to mathSteps, numeric answer", async () => {
  const ps = await readAll(`${FIX}/nl.jsonl`);
  assertEquals(ps[0].rationale, "Mr. Lee pays 2 * 3.50 = $7.00 in all. The answer is 7.");
  assertEquals(ps[0].mathSteps, null);
  assertEquals(ps[1].mathSteps, ["<<18/6=3>>"]);
  assertEquals(ps[1].rationale, null);
  assertEquals(ps[1].answer, "3");
  const e = await inputError(await tempFile("n.jsonl", '{"question": "q?", "answer": "1"}\n'), {
    format: "nl",
  });
  assertEquals(e.field, "cot");
});

// --- csv ---------------------------------------------------------------------------------

Deno.test("read csv: cot, steps as JSON and as annotations, GSM8K answers, record lines", async () => {
  const path = `${FIX}/problems.csv`;
  const ps = await readAll(path);
  assertEquals(ps.length, 4);
  assertEquals(ps[0].rationale, "There are 24 / 4 = 6 pupils in a row.");
  assertEquals(ps[1].mathSteps, ["<<5*6=30>>"]);
  assertEquals(ps[2].mathSteps, ["<<12/3=4>>"]);
  assertEquals(ps[3].question, "Pia has 7 shells and finds 5, then\nloses 2. How many now?");
  assertEquals(ps[3].rationale, "She has 7 + 5 = <<7+5=12>>12.\nThen 12 - 2 = <<12-2=10>>10.");
  assertEquals(ps[3].answer, "10");
  // Lines are where each record starts; the last record spans lines 5-9.
  assertEquals(ps.map((p) => p.source.line), [2, 3, 4, 5]);
});

Deno.test("read csv: a column the header names twice throws at line 1, even when skipping", async () => {
  const path = await tempFile("d.csv", 'question,cot,question,answer\n"a?",,"b?",#### 2\n');
  const e = await inputError(path, { onError: "skip" });
  assertEquals([e.line, e.field], [1, "question"]);
  assertEquals(
    e.message,
    `${path}:1: field "question": the header names the column "question" 2 times (columns 1, ` +
      "3); keep one; fix the file or pass the right --format",
  );
});

Deno.test("read csv: a missing column throws at line 1; a short row is skippable", async () => {
  const noAnswer = await tempFile("n.csv", "question,solution\nq?,1\n");
  const e = await inputError(noAnswer, { onError: "skip" });
  assertEquals([e.line, e.field], [1, "answer"]);
  assert(e.message.includes('expected a column "answer"'), e.message);

  const short = await tempFile("s.csv", "question,answer\nq1?,1\nq2?\n\nq3?,3\n");
  const e2 = await inputError(short);
  assertEquals(e2.line, 3);
  assert(e2.message.includes("expected 2 fields as in the header, got 1"), e2.message);
  const skipped: number[] = [];
  const ps = await readAll(short, { onError: "skip", onSkip: (x) => skipped.push(x.line) });
  assertEquals(ps.map((p) => p.source.line), [2, 5]);
  assertEquals(skipped, [3]);

  const badSteps = await tempFile("b.csv", 'question,answer,steps\nq?,1,"[1, 2]"\n');
  const e3 = await inputError(badSteps);
  assertEquals([e3.line, e3.field], [2, "steps"]);

  const unclosed = await tempFile("u.csv", 'question,answer\nq?,"1\n');
  await assertRejects(() => readAll(unclosed, { onError: "skip" }), InputError, "malformed CSV");
});

Deno.test("read csv: a .tsv or .tab file is tab-separated, and read as csv", async () => {
  const text = "question\tcot\tanswer\n" +
    "Ann has 3 apples, buys 4. How many?\tShe has 3 + 4 = <<3+4=7>>7.\t7\n" +
    '"A box holds 5 pens, and\nanother holds 6. How many?"\t\t#### 11\n';
  for (const name of ["t.tsv", "t.TAB"]) {
    const path = await tempFile(name, text);
    assertEquals(await detectFormat(path), "csv", name);
    const ps = await readAll(path);
    assertEquals(ps.map((p) => p.question), [
      "Ann has 3 apples, buys 4. How many?",
      "A box holds 5 pens, and\nanother holds 6. How many?",
    ]);
    assertEquals(ps.map((p) => p.answer), ["7", "11"]);
    assertEquals(ps[0].rationale, "She has 3 + 4 = <<3+4=7>>7.");
    assertEquals(ps.map((p) => p.source.line), [2, 3]);
  }
});

Deno.test("read csv: a .csv file whose header holds tabs and no comma is read tab-separated", async () => {
  const tabs = await tempFile("tabs.csv", "\nquestion\tanswer\nHow many, in all?\t#### 9\n");
  const ps = await readAll(tabs);
  assertEquals(ps.map((p) => [p.question, p.answer, p.source.line]), [[
    "How many, in all?",
    "9",
    3,
  ]]);
  // A comma in the header keeps commas, even with a tab in a field.
  const commas = await tempFile("commas.csv", "question,answer\nHow\tmany?,5\n");
  assertEquals((await readAll(commas)).map((p) => p.question), ["How\tmany?"]);
});

Deno.test("read csv: a \\r\\n inside quotes is one line break: lines and ids stay right", async () => {
  const crlf = await tempFile(
    "crlf.csv",
    'question,answer\r\n"Q1?","He has 2*3 = <<2*3=6>>6.\r\n#### 6"\r\n' +
      'Q2?,"He has 2*4 = <<2*4=8>>8.\n#### 8"\r\n\r\n"Q3?","He has\r\n2*5 = <<2*5=10>>10.\r\n' +
      '#### 10"\r\nQ4?,"#### 4"\r\n',
  );
  const ps = await readAll(crlf);
  // Q1 spans lines 2-3, Q2 4-5, a blank line 6, Q3 7-9, Q4 10.
  assertEquals(ps.map((p) => p.source.line), [2, 4, 7, 10]);
  assertEquals(ps.map((p) => p.id), ["crlf.csv:2", "crlf.csv:4", "crlf.csv:7", "crlf.csv:10"]);
  // A bad record after them is named at its own line.
  const bad = await tempFile(
    "crlf_bad.csv",
    'question,answer\r\n"Q1?","a\r\nb\r\n#### 6"\r\n"Q2?","x\r\n#### 2"\r\nQ3?\r\n',
  );
  assertEquals((await inputError(bad)).line, 7); // Q1 spans lines 2-4, Q2 5-6
  // So is a quote left open: the record it opens.
  const open = await tempFile(
    "crlf_open.csv",
    'question,answer\r\n"Q1?","a\r\n#### 1"\r\nQ2?,"2\r\n',
  );
  const e = await inputError(open, { onError: "skip" });
  assertEquals(e.line, 4);
  assert(
    e.message.startsWith(`${open}:4: malformed CSV in the record starting on this line`),
    e.message,
  );
});

Deno.test("read csv: an unclosed quote is named at its record's line, however fast records are taken", async () => {
  const good = (i: number) => `"Q${i} has 2 pens and buys 3. How many?",5,"2 + 3 = 5 pens."\n`;
  const two = await tempFile("two.csv", `question,answer,cot\n${good(1)}${good(2)}"x,y\n`);
  assertEquals((await inputError(two)).line, 4);
  // Twenty good rows, then the quote on line 22, read by a loop that awaits between records:
  // csv-parse has queued more records than the loop has taken when it fails.
  const rows = Array.from({ length: 20 }, (_, i) => good(i + 1)).join("");
  const slow = await tempFile("slow.csv", `question,answer,cot\n${rows}\n"x,y\n`);
  const taken: number[] = [];
  const e = await assertRejects(async () => {
    for await (const p of readProblems(slow)) {
      taken.push(p.source.line);
      await new Promise((r) => setTimeout(r, 2));
    }
  }, InputError) as InputError;
  assertEquals(e.line, 23, e.message); // the blank line 22 is skipped
  assert(e.message.startsWith(`${slow}:23: malformed CSV in the record starting`), e.message);
  assert(taken.length < 20, `the loop took ${taken.length} records first`);
});

// --- parquet -----------------------------------------------------------------------------

function parquet(columns: Record<string, (string | null)[]>, rowGroupSize: number): Uint8Array {
  return new Uint8Array(parquetWriteBuffer({
    columnData: Object.entries(columns).map(([name, data]) => ({ name, data, type: "STRING" })),
    rowGroupSize,
  }));
}

Deno.test("read parquet: GSM8K columns, several row groups, row numbers as lines", async () => {
  const n = 5;
  const path = await tempFile(
    "train-00000-of-00001.parquet",
    parquet({
      question: Array.from({ length: n }, (_, i) => `What is ${i} + 1?`),
      answer: Array.from(
        { length: n },
        (_, i) => `${i} + 1 = <<${i}+1=${i + 1}>>${i + 1}\n#### ${i + 1}`,
      ),
    }, 2),
  );
  const ps = await readAll(path);
  assertEquals(ps.length, n);
  assertEquals(ps.map((p) => p.source.line), [1, 2, 3, 4, 5]);
  assertEquals(ps[4].question, "What is 4 + 1?");
  assertEquals(ps[4].rationale, "4 + 1 = <<4+1=5>>5");
  assertEquals(ps[4].answer, "5");
  assertEquals(ps[0].id, "train-00000-of-00001.parquet:1");
});

Deno.test("read parquet: question/cot/answer layout, a null cell, a missing column", async () => {
  const path = await tempFile(
    "aug.parquet",
    parquet({
      question: ["Half of 8?", "Café for 2 at €3?", "q?"],
      cot: ["<<8/2=4>>", "2 * 3 = 6 euros.", null],
      answer: ["4", "6", "1"],
    }, 10),
  );
  const e = await inputError(path);
  assertEquals([e.line, e.field], [3, "cot"]);
  assert(e.message.includes("got null"), e.message);
  const ps = await readAll(path, { onError: "skip" });
  assertEquals(ps[0].mathSteps, ["<<8/2=4>>"]);
  assertEquals(ps[1].rationale, "2 * 3 = 6 euros.");
  assertEquals(ps[1].question, "Café for 2 at €3?");

  const noAnswer = await tempFile("q.parquet", parquet({ question: ["q?"], solution: ["1"] }, 10));
  const e2 = await inputError(noAnswer, { onError: "skip" });
  assertEquals([e2.line, e2.field], [0, "answer"]);
  assert(e2.message.startsWith(`${noAnswer}: field "answer": expected a column`), e2.message);
});

Deno.test("read parquet: an INT64 answer column (as pandas writes integers) reads as its digits", async () => {
  const path = await tempFile(
    "ints.parquet",
    new Uint8Array(parquetWriteBuffer({
      columnData: [
        { name: "question", data: ["Half of 8?", "A big sum?"], type: "STRING" },
        { name: "cot", data: ["<<8/2=4>>", "<<1+2=3>>"], type: "STRING" },
        { name: "answer", data: [4n, 9007199254740993n], type: "INT64" },
      ],
    })),
  );
  const ps = await readAll(path);
  assertEquals(ps.map((p) => p.answer), ["4", "9007199254740993"]);
  assertEquals(ps[0].mathSteps, ["<<8/2=4>>"]);
});

Deno.test("read: a Parquet file given to a text format is named as Parquet, not as bad UTF-8", async () => {
  const path = await tempFile(
    "train.parquet",
    parquet({ question: ["Half of 8?"], answer: ["8/2 = <<8/2=4>>4\n#### 4"] }, 10),
  );
  for (const format of ["gsm8k", "nl", "icot", "coconut", "csv"] as const) {
    const e = await inputError(path, { format, onError: "skip" });
    assertEquals(
      e.message,
      `${path}: a Parquet file (it starts with "PAR1"), and --format ${format} reads text; ` +
        "leave out --format, or pass --format parquet",
    );
    assertEquals(e.line, 0);
  }
  assertEquals((await readAll(path, { format: "parquet" })).length, 1);
});

Deno.test("read icot: two records on one line (CR line endings, a lost newline) are an error, not one mixed record", async () => {
  const a = "Ann has 2 pens and buys 3. How many?||<<2+3=5>> #### 5";
  const b = "Bo has 4 cups and breaks 1. How many?||<<4-1=3>> #### 3";
  // Lines ending in CR alone: only \n ends a line, so the file is one line.
  const cr = await tempFile("cr.txt", `${a}\r${b}\r`);
  const e = await inputError(cr);
  assertEquals(
    e.message,
    `${cr}:1: holds a second "||" at character ${a.length + 1 + b.indexOf("||") + 1}, so two ` +
      "records run together on one line (the line holds a carriage return (CR) not followed " +
      `by a newline, at character ${a.length + 1}: if the file's lines end in CR alone, they ` +
      "are read as one line; convert them to newlines, as tr '\\r' '\\n' does); put each " +
      "record on a line of its own, or pass --on-error skip",
  );
  const joined = await tempFile("joined.txt", `${a}${b}\n${a}\n`);
  const skipped: InputError[] = [];
  const ps = await readAll(joined, { onError: "skip", onSkip: (x) => skipped.push(x) });
  assertEquals(skipped.map((x) => x.line), [1]);
  assertEquals(ps.map((p) => [p.source.line, p.answer]), [[2, "5"]]);
  // CRLF stays fine.
  assertEquals((await readAll(await tempFile("crlf.txt", `${a}\r\n${b}\r\n`))).length, 2);
});

Deno.test("read gsm8k: JSON lines ending in CR alone say so in the JSON error", async () => {
  const rec = (q: string, n: number) =>
    JSON.stringify({ question: q, answer: `It is ${n}.\n#### ${n}` });
  const path = await tempFile("cr.jsonl", `${rec("One?", 1)}\r${rec("Two?", 2)}\r`);
  const e = await inputError(path, { format: "gsm8k" });
  assert(e.message.startsWith(`${path}:1: invalid JSON (`), e.message);
  assert(e.message.includes("(the line holds a carriage return (CR) not followed by"), e.message);
  // Detection throws the same note when no record parses.
  const d = await assertRejects(() => detectFormat(path), InputError);
  assert(d.message.includes("carriage return"), d.message);
});

Deno.test("read: a compressed file or an archive says to unpack it, not to re-encode it as UTF-8", async () => {
  const rec = JSON.stringify({ question: "Half of 8?", answer: "8/2 = <<8/2=4>>4\n#### 4" });
  const gz = new Uint8Array(
    await new Response(
      new Blob([rec + "\n"]).stream().pipeThrough(new CompressionStream("gzip")),
    ).arrayBuffer(),
  );
  const cases: [string, Uint8Array, string][] = [
    [
      "train.jsonl.gz",
      gz,
      "a gzip-compressed file (it starts with 0x1F 0x8B), not text; " +
      "unpack it first (gunzip -k FILE)",
    ],
    ["train.csv", gz, "a gzip-compressed file (it starts with 0x1F 0x8B)"],
    [
      "train.zip",
      new Uint8Array([0x50, 0x4b, 0x03, 0x04, 20, 0, 0x87, 0xff]),
      "a zip archive (it starts with 0x50 0x4B 0x03 0x04), not text; unpack it first (unzip FILE)",
    ],
    [
      "train.jsonl.zst",
      new Uint8Array([0x28, 0xb5, 0x2f, 0xfd, 0, 0x88]),
      "a zstd-compressed file",
    ],
    [
      "train.txt.xz",
      new Uint8Array([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0, 0, 4]),
      "an xz-compressed file",
    ],
  ];
  for (const [name, bytes, want] of cases) {
    const path = await tempFile(name, bytes);
    for (const format of ["auto", "gsm8k", "icot"] as const) {
      const e = await inputError(path, { format, onError: "skip" });
      assert(e.message.startsWith(`${path}: ${want}`), `${format}: ${e.message}`);
      assert(!e.message.includes("UTF-8"), e.message);
      assertEquals(e.line, 0);
    }
  }
});

Deno.test("read nl and coconut: an answer written as a JSON number beyond 2^53 keeps its digits", async () => {
  const nl = await tempFile(
    "big.jsonl",
    '{"question": "Big?", "cot": "It is large.", "answer": 12345678901234567890}\n',
  );
  assertEquals((await readAll(nl))[0].answer, "12345678901234567890");
  const co = await tempFile(
    "big.json",
    '[{"question": "Big?", "steps": ["<<1+1=2>>"], "answer": 12345678901234567890, "idx": 7}]\n',
  );
  const [p] = await readAll(co);
  assertEquals([p.id, p.answer], ["big.json:7", "12345678901234567890"]);
});

Deno.test("read: a named pipe is refused at once, naming it, rather than read twice or waited on", async () => {
  const dir = await Deno.makeTempDir();
  const fifo = `${dir}/in.jsonl`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert(made.success, new TextDecoder().decode(made.stderr));
  // A reader that opened it would wait for a writer: one comes every second, so that such a
  // reader fails this test rather than hanging it (the refusal comes before the first).
  const writer = setInterval(async () => {
    const w = await Deno.open(fifo, { write: true });
    await w.write(new TextEncoder().encode('{"question": "q?", "answer": "#### 1"}\n'));
    w.close();
  }, 1000);
  try {
    for (const format of ["auto", "gsm8k"] as const) {
      const e = await inputError(fifo, { format });
      assertEquals(
        e.message,
        `${fifo}: is not a regular file (a pipe such as /dev/stdin, a device or a socket), and ` +
          "an input is read more than once (its format, then its records); save the data to a " +
          "file first, and give that file",
      );
    }
  } finally {
    clearInterval(writer);
  }
  await Deno.remove(dir, { recursive: true });
});

// --- detection ---------------------------------------------------------------------------

Deno.test("detectFormat: every fixture by extension and first record", async () => {
  const cases: [string, Format][] = [
    [`${FIX}/gsm8k.jsonl`, "gsm8k"],
    [`${FIX}/gsm8k_socratic.jsonl`, "gsm8k"],
    [`${FIX}/icot.txt`, "icot"],
    [`${FIX}/coconut.json`, "coconut"],
    [`${FIX}/nl.jsonl`, "nl"],
    [`${FIX}/problems.csv`, "csv"],
  ];
  for (const [path, format] of cases) assertEquals(await detectFormat(path), format, path);
  const pq = await tempFile("x.parquet", parquet({ question: ["q?"], answer: ["#### 1"] }, 10));
  assertEquals(await detectFormat(pq), "parquet");
  // Parquet without the extension is found by its magic bytes; JSON lines saved as .json too.
  assertEquals(await detectFormat(await tempFile("noext", await Deno.readFile(pq))), "parquet");
  const jsonLines = await tempFile("hf.json", '{"question": "q?", "cot": "c", "answer": "1"}\n');
  assertEquals(await detectFormat(jsonLines), "nl");
});

Deno.test("detectFormat: unknown content asks for --format; an empty file for another file", async () => {
  const path = await tempFile("a.txt", "just some words\n");
  const e = await assertRejects(() => detectFormat(path), FormatError, "pass --format");
  assert(e.message.startsWith(path), e.message);
  const empty = await tempFile("c.dat", "\n\n");
  const none = await assertRejects(() => detectFormat(empty), FormatError, "holds no record");
  assert(none.empty && !none.message.includes("--format"), none.message);
  assert(none.message.startsWith(empty), none.message);
});

Deno.test("detectFormat: a first record that is not JSON is named at its line with its error", async () => {
  // A trailing comma on line 1: the next record tells the format, the reader names line 1.
  const comma = await tempFile(
    "comma.jsonl",
    '\n{"question": "Q?", "answer": "#### 1",}\n{"question": "Q2?", "answer": "#### 2"}\n',
  );
  assertEquals(await detectFormat(comma), "gsm8k");
  const e = await inputError(comma);
  assertEquals(e.line, 2);
  assert(e.message.startsWith(`${comma}:2: invalid JSON (`), e.message);
  assert(e.message.endsWith("fix the record or pass --on-error skip"), e.message);
  // With no record that parses, detection itself names the first one and its JSON error.
  const broken = await tempFile("d.jsonl", '{"question": "Q?",}\n{not json\n');
  const e2 = await assertRejects(() => detectFormat(broken), InputError);
  assertEquals(e2.line, 1);
  assert(e2.message.startsWith(`${broken}:1: invalid JSON (`), e2.message);
  assert(e2.message.endsWith("fix that line (the first record tells the format)"), e2.message);
});

Deno.test("detectFormat: a UTF-16 file is invalid UTF-8, with the iconv hint", async () => {
  const rec = '{"question": "Q?", "answer": "#### 1"}\n';
  const le = new Uint8Array(rec.length * 2);
  for (let i = 0; i < rec.length; i++) le[2 * i] = rec.charCodeAt(i);
  for (
    const [name, bytes, what] of [
      ["bom.jsonl", new Uint8Array([0xff, 0xfe, ...le]), "byte order mark 0xFF 0xFE"],
      ["be.jsonl", new Uint8Array([0xfe, 0xff, 0, ...le.subarray(0, -1)]), "0xFE 0xFF"],
      ["nobom.jsonl", le, "NUL bytes between its characters"],
    ] as const
  ) {
    const path = await tempFile(name, bytes);
    const e = await assertRejects(() => detectFormat(path), InputError);
    assertEquals([e.reason, e.line], ["invalid_utf8", 1]);
    assert(e.message.startsWith(`${path}:1: invalid UTF-8: `), e.message);
    assert(e.message.includes(what), e.message);
    assert(e.message.includes("iconv -f UTF-16 -t utf-8"), e.message);
  }
});

Deno.test("detectFormat: records of no supported format are named so, with the formats listed", async () => {
  const svamp = await tempFile(
    "SVAMP.json",
    JSON.stringify(
      [{ ID: "a-1", Body: "Ann has 3 pens.", Question: "How many?", Equation: "( 3 )", Answer: 3 }],
      null,
      1,
    ),
  );
  const hard = await tempFile("b.jsonl", '{"input": "q?", "target": 1}\n');
  for (const path of [svamp, hard]) {
    const e = await assertRejects(() => detectFormat(path), FormatError);
    assert(e.unsupported, e.message);
    assert(e.message.startsWith(`${path}: not in a format this command reads (`), e.message);
    assert(e.message.includes("coconut (a JSON array of {question, steps, answer})"), e.message);
    assert(!e.message.includes("pass --format"), e.message);
  }
  const e = await assertRejects(() => detectFormat(svamp), FormatError);
  assert(e.why.includes("first element has keys ID, Body, Question, Equation, Answer"), e.why);
  // A Coconut array still is one, even when its first element is too long to see whole.
  const long = await tempFile(
    "long.json",
    JSON.stringify([{ question: "x".repeat(70_000), steps: [], answer: "1" }]),
  );
  assertEquals(await detectFormat(long), "coconut");
  assertEquals(await detectFormat(await tempFile("empty.json", "[]")), "coconut");
});

Deno.test("read: stopping early closes the file (the test's resource check would fail)", async () => {
  const pq = await tempFile(
    "x.parquet",
    parquet({ question: ["q?", "r?"], answer: ["#### 1", "#### 2"] }, 1),
  );
  for (const path of [`${FIX}/gsm8k.jsonl`, `${FIX}/icot.txt`, `${FIX}/problems.csv`, pq]) {
    for await (const p of readProblems(path)) {
      assert(p.question.length > 0);
      break;
    }
  }
});

// --- the real data, when present ---------------------------------------------------------

const DATA = SHARED_DATA;
const HAVE_DATA = haveSharedData("gsm8k/", "read_test", "the real-data tests");

Deno.test({
  name: "read parquet (real): the Hugging Face copy equals the JSON lines, record by record",
  ignore: !HAVE_DATA,
  fn: async () => {
    for (const [variant, jsonl] of [["main", "train"], ["socratic", "test_socratic"]]) {
      const split = jsonl.split("_")[0];
      const pq = await readAll(
        `${DATA}gsm8k/hf_parquet_copy/${variant}/${split}-00000-of-00001.parquet`,
      );
      const js = await readAll(`${DATA}gsm8k/${jsonl}.jsonl`);
      assertEquals(pq.length, split === "train" ? 7473 : 1319);
      assertEquals(pq.length, js.length);
      for (let i = 0; i < pq.length; i++) {
        assertEquals([pq[i].question, pq[i].rationale, pq[i].answer], [
          js[i].question,
          js[i].rationale,
          js[i].answer,
        ]);
        assertEquals(pq[i].source.line, i + 1);
      }
    }
  },
});

Deno.test({
  name: "read (real): every gsm8k_aug file, with its format and counts",
  ignore: !HAVE_DATA,
  fn: async () => {
    // [file, format, records, with mathSteps, with prose rationale, with no CoT at all]
    const expected: [string, Format, number, number, number, number][] = [
      ["test.txt", "icot", 1319, 1319, 0, 18],
      ["valid.txt", "icot", 500, 500, 0, 6],
      ["train_no_aug.txt", "icot", 6973, 0, 6973, 0],
      ["subset_coconut_format/gsm_train_7500.json", "coconut", 7500, 7500, 0, 0],
      ["subset_coconut_format/gsm_valid.json", "coconut", 500, 500, 0, 6],
    ];
    for (const [file, format, n, math, prose, empty] of expected) {
      const path = `${DATA}gsm8k_aug/${file}`;
      assertEquals(await detectFormat(path), format, file);
      let skipped = 0;
      const ps = await readAll(path, { onError: "skip", onSkip: () => skipped++ });
      assertEquals(skipped, 0, file);
      assertEquals(
        [
          ps.length,
          ps.filter((p) => p.mathSteps !== null).length,
          ps.filter((p) => (p.rationale ?? "") !== "").length,
          ps.filter((p) => (p.mathSteps?.length ?? 0) === 0 && !p.rationale).length,
        ],
        [n, math, prose, empty],
        file,
      );
    }
  },
});

/**
 * Bad input gets a clear error naming the file and the line, never a silent change: invalid
 * UTF-8 in every reader, large integers in calculator annotations, a damaged Parquet page, an
 * oversized record, and the list of the records skipped under `--on-error skip`.
 *
 * @module
 */
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { crc32 } from "node:zlib";
import { crc32 as crc32Of } from "../base/crc32.ts";
import { parse as parseCsv } from "csv-parse/sync";
import { parquetMetadata } from "hyparquet";
import { parquetHeader } from "hyparquet/src/column.js";
import { ByteWriter, parquetWriteBuffer } from "hyparquet-writer";
import { writePageHeader } from "hyparquet-writer/src/datapage.js";
import { writeMetadata } from "hyparquet-writer/src/metadata.js";
import { detectFormat, InputError, type ReadOptions, readProblems } from "../pipeline/read.ts";
import type { Problem } from "../pipeline/types.ts";
import { segment } from "../pipeline/segment.ts";
import { validate } from "../pipeline/validate.ts";
import { compareStated } from "../pipeline/arith.ts";
import { readNumber } from "../pipeline/numbers.ts";
import { buildDataset } from "../pipeline/build.ts";
import { formatSummary } from "../pipeline/summary.ts";
import { parseCli } from "../cli/build_dataset.ts";
import { runDeno, TASK_PERMISSIONS } from "./_run.ts";

const enc = new TextEncoder();

/** A file made of text and raw bytes, in order. */
async function bytesFile(name: string, parts: (string | number[])[]): Promise<string> {
  const chunks = parts.map((p) => (typeof p === "string" ? enc.encode(p) : new Uint8Array(p)));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  const path = `${await tempDir()}/${name}`;
  await Deno.writeFile(path, out);
  return path;
}

/** UTF-8 length of text parts. */
function bytesOf(...parts: string[]): number {
  return parts.reduce((n, p) => n + enc.encode(p).length, 0);
}

async function readAll(path: string, opts?: ReadOptions): Promise<Problem[]> {
  const out: Problem[] = [];
  for await (const p of readProblems(path, opts)) out.push(p);
  return out;
}

async function readSkipping(
  path: string,
  opts: ReadOptions = {},
): Promise<{ problems: Problem[]; skipped: InputError[] }> {
  const skipped: InputError[] = [];
  const problems = await readAll(path, {
    ...opts,
    onError: "skip",
    onSkip: (e) => skipped.push(e),
  });
  return { problems, skipped };
}

async function inputError(path: string, opts?: ReadOptions): Promise<InputError> {
  return (await assertRejects(() => readAll(path, opts), InputError)) as InputError;
}

const gsm8k = (q: string, n: number) =>
  JSON.stringify({ question: q, answer: `${n} = <<${n}*1=${n}>>${n}\n#### ${n}` }) + "\n";

// --- invalid UTF-8 -----------------------------------------------------------------------

Deno.test("invalid UTF-8, JSON lines: file, line and byte offset named; skip goes on", async () => {
  const line1 = gsm8k("q1?", 1);
  const before = '{"question": "caf';
  const path = await bytesFile("latin1.jsonl", [
    line1,
    before,
    [0xe9], // "é" in Latin-1
    '?", "answer": "x #### 2"}\n',
    gsm8k("q3?", 3),
  ]);
  const offset = bytesOf(line1, before);
  const e = await inputError(path);
  assertEquals([e.file, e.line, e.offset, e.reason], [path, 2, offset, "invalid_utf8"]);
  assert(
    e.message.startsWith(`${path}:2: invalid UTF-8: byte 0xE9 at byte offset ${offset}`),
    e.message,
  );
  assert(e.message.endsWith("or pass --on-error skip"), e.message);

  const { problems, skipped } = await readSkipping(path);
  assertEquals(problems.map((p) => p.source.line), [1, 3]);
  assertEquals(skipped.map((x) => [x.line, x.offset]), [[2, offset]]);
});

Deno.test("invalid UTF-8: characters across 64 KiB reads are fine; far bytes found", async () => {
  // Line 1 puts a 2-byte and a 4-byte character across the first two 64 KiB read boundaries.
  const head = '{"question": "';
  const pad1 = "a".repeat(65536 - bytesOf(head) - 1);
  const pad2 = "b".repeat(65536 - 2 - 2);
  const question = `${pad1}é${pad2}😀 and more?`;
  const line1 = JSON.stringify({ question, answer: "#### 1" }) + "\n";
  assertEquals(bytesOf(head, pad1), 65535);
  const line2 = gsm8k("q2?", 2);
  const before3 = '{"question": "x';
  const line3rest = '", "answer": "#### 3"}\n';
  const before4 = '{"question": "y';
  const path = await bytesFile("far.jsonl", [
    line1,
    line2,
    before3,
    [0x80], // a continuation byte with no lead byte
    line3rest,
    before4,
    [0xe2, 0x82], // "€" cut short by the end of the file
  ]);
  const off3 = bytesOf(line1, line2, before3);
  const off4 = off3 + 1 + bytesOf(line3rest, before4);
  assert(off3 > 2 * 65536);
  const { problems, skipped } = await readSkipping(path, { maxFieldBytes: 1 << 20 });
  assertEquals(problems.map((p) => p.source.line), [1, 2]);
  assertEquals(problems[0].question, question);
  assertEquals(skipped.map((x) => [x.line, x.offset, x.reason]), [
    [3, off3, "invalid_utf8"],
    [4, off4, "invalid_utf8"],
  ]);
  assert(skipped[0].message.includes("byte 0x80"), skipped[0].message);
});

Deno.test("invalid UTF-8, iCoT: the line is an error; a byte order mark goes", async () => {
  const path = await bytesFile("aug.txt", [
    [0xef, 0xbb, 0xbf],
    "Half of 8?||<<8/2=4>> #### 4\n",
    "Ten ",
    [0xff],
    "||<<10-1=9>> #### 9\n",
    "Two and two?||<<2+2=4>> #### 4",
  ]);
  const e = await inputError(path);
  assertEquals([e.line, e.offset], [2, bytesOf("\ufeffHalf of 8?||<<8/2=4>> #### 4\n", "Ten ")]);
  const { problems, skipped } = await readSkipping(path);
  assertEquals(problems.map((p) => p.question), ["Half of 8?", "Two and two?"]);
  assertEquals(skipped.map((x) => x.line), [2]);
});

Deno.test("invalid UTF-8, CSV: the record is an error at the byte's line", async () => {
  const head = "question,answer\nq1?,#### 1\n";
  const before = '"Line one\nline ';
  const path = await bytesFile("x.csv", [head, before, [0xc3, 0x28], 'two?",#### 2\nq3?,#### 3\n']);
  const e = await inputError(path);
  const offset = bytesOf(head, before);
  assertEquals([e.line, e.offset, e.reason], [4, offset, "invalid_utf8"]);
  assert(e.message.includes("byte 0xC3"), e.message);
  const { problems, skipped } = await readSkipping(path);
  assertEquals(problems.map((p) => p.source.line), [2, 5]);
  assertEquals(skipped.map((x) => x.line), [4]);

  const badHeader = await bytesFile("h.csv", ["quest", [0xff], "ion,answer\nq?,#### 1\n"]);
  const h = await inputError(badHeader, { onError: "skip" });
  assertEquals([h.line, h.offset], [1, 5]);
});

Deno.test("invalid UTF-8, Coconut: the whole file is refused, naming line and offset", async () => {
  const before =
    '[\n  {"question": "q1?", "steps": ["<<1+1=2>>"], "answer": "2"},\n  {"question": "q';
  const path = await bytesFile("c.json", [
    before,
    [0xfe],
    '?", "steps": [], "answer": "3"}\n]\n',
  ]);
  const e = await inputError(path, { onError: "skip" });
  assertEquals([e.line, e.offset, e.reason], [3, bytesOf(before), "invalid_utf8"]);
  assert(e.message.includes("byte 0xFE"), e.message);
});

function parquet(
  columns: Record<string, string[]>,
  opts: { codec?: "UNCOMPRESSED" | "SNAPPY"; rowGroupSize?: number } = {},
): Uint8Array {
  return new Uint8Array(parquetWriteBuffer({
    columnData: Object.entries(columns).map(([name, data]) => ({ name, data, type: "STRING" })),
    rowGroupSize: opts.rowGroupSize ?? 100,
    codec: opts.codec ?? "SNAPPY",
    statistics: false,
  }));
}

/** The offset of the first occurrence of `text`'s bytes in `bytes`. */
function find(bytes: Uint8Array, text: string): number {
  const t = enc.encode(text);
  outer: for (let i = 0; i + t.length <= bytes.length; i++) {
    for (let j = 0; j < t.length; j++) if (bytes[i + j] !== t[j]) continue outer;
    return i;
  }
  throw new Error(`${text} not found`);
}

const QUESTIONS = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"];
const ANSWERS = ["1 + 1 = <<1+1=2>>2\n#### 2", "2 + 2 = <<2+2=4>>4\n#### 4", "#### 6"];

Deno.test("invalid UTF-8, Parquet: the cell is an error naming row and field", async () => {
  const bytes = parquet({ question: QUESTIONS, answer: ANSWERS }, { codec: "UNCOMPRESSED" });
  bytes[find(bytes, "What is 2")] = 0xff;
  const path = await bytesFile("bad.parquet", [[...bytes]]);
  const e = await inputError(path);
  assertEquals([e.line, e.field, e.reason], [2, "question", "invalid_utf8"]);
  assert(e.message.includes("byte 0xFF at byte 0 of the value"), e.message);
  const { problems, skipped } = await readSkipping(path);
  assertEquals(problems.map((p) => p.source.line), [1, 3]);
  assertEquals(skipped.map((x) => x.line), [2]);
});

Deno.test("invalid UTF-8 on the first line: detection looks on, the reader reports", async () => {
  const path = await bytesFile("first.jsonl", [
    '{"question": "',
    [0xff],
    '", "answer": "#### 1"}\n',
    gsm8k("q2?", 2),
  ]);
  assertEquals(await detectFormat(path), "gsm8k");
  const { problems, skipped } = await readSkipping(path);
  assertEquals(problems.map((p) => p.source.line), [2]);
  assertEquals(skipped.map((x) => [x.line, x.offset]), [[1, 14]]);
});

Deno.test("no readable line: the UTF-8 error, not an empty file; a directory is named", async () => {
  const path = await bytesFile("latin1.jsonl", [
    '{"question": "caf',
    [0xe9],
    '", "answer": "#### 1"}\n',
  ]);
  const err = await assertRejects(() => detectFormat(path), InputError);
  assert(err.message.startsWith(`${path}:1: invalid UTF-8`), err.message);
  assert(err.message.includes("no line of the file is readable"), err.message);
  // A directory where a file belongs, in detection and in every reader.
  const dir = `${await tempDir()}/data.jsonl`;
  await Deno.mkdir(dir);
  await assertRejects(() => detectFormat(dir), InputError, `${dir}: is a directory`);
  for (const format of ["gsm8k", "csv", "parquet", "coconut"] as const) {
    await assertRejects(
      () => Array.fromAsync(readProblems(dir, { format })),
      InputError,
      `${dir}: is a directory`,
    );
  }
});

Deno.test("a split that keeps no record is an error naming its counts; nothing is written", async () => {
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/empty.jsonl`, "");
  // One record whose calculator annotation is wrong (dropped), one unreadable (skipped).
  const wrong = JSON.stringify({ question: "q?", answer: "It is <<2*1=3>>3.\n#### 3" });
  await Deno.writeTextFile(`${dir}/bad.jsonl`, `${wrong}\n{"q": 1}\n`);
  for (const [input, want] of [["empty.jsonl", "hold no record"], ["bad.jsonl", "dropped"]]) {
    const out = `${dir}/out-${input}`;
    await assertRejects(
      () =>
        buildDataset({
          out,
          splits: [{ name: "train", inputs: [`${dir}/${input}`] }],
          format: "gsm8k",
          onError: "skip",
          tokenizer: "compact",
        }),
      Error,
      want,
    );
    await assertRejects(() => Deno.stat(out), Deno.errors.NotFound);
  }
});

// --- integers are compared exactly -------------------------------------------------------

function check(rationale: string, answer: string, cot: "math" | "nl" = "math") {
  const p: Problem = {
    id: "x:1",
    source: { file: "x", line: 1 },
    question: "q?",
    rationale,
    mathSteps: null,
    answer,
  };
  return validate(segment(p), { cot }).validation;
}

Deno.test("validate: an integer result off by 499 in 10^12 is wrong, not equal", () => {
  const wrong = check(
    "1000000000000 + 1 = <<1000000000000+1=1000000000500>>1000000000500",
    "1000000000500",
  );
  assertEquals([wrong.status, wrong.reasons], ["dropped", ["wrong_value"]]);
  const detail = wrong.details?.[0] ?? "";
  assert(detail.includes("evaluates to 1000000000001"), detail);
  const right = check(
    "1000000000000 + 1 = <<1000000000000+1=1000000000001>>1000000000001",
    "1000000000001",
  );
  assertEquals([right.status, right.reasons], ["ok", []]);
  // The final answer is compared exactly too.
  const mismatch = check(
    "1000000000000 + 1 = <<1000000000000+1=1000000000001>>1000000000001",
    "1000000000500",
  );
  assertEquals(mismatch.reasons, ["final_mismatch"]);
  assertEquals(compareStated(1000000000001, readNumber("1,000,000,000,500")!), "wrong");
  assertEquals(compareStated(7, readNumber("7")!), "equal");
  assertEquals(compareStated(7, readNumber("8")!), "wrong");
});

Deno.test("validate: decimals keep the rounding rule, without the large-number loophole", () => {
  assertEquals(check("<<0.1+0.2=0.3>>0.3", "0.3").status, "ok");
  assertEquals(check("<<1.1*3=3.3>>3.3", "3.3").status, "ok");
  // 0.1*3*10 is 3.0000000000000004 in floating point: still equal to a stated 3.
  assertEquals(check("<<0.1*3*10=3>>3", "3").status, "ok");
  assertEquals(check("<<10/3=3.33>>3.33", "3.33").reasons, ["rounded_value"]);
  assertEquals(check("<<100/30=4>>4", "4").reasons, ["rounded_value"]);
  assertEquals(check("<<10/3=3.5>>3.5", "3.5").reasons, ["wrong_value"]);
  const big = check("<<1000000000000.5+1=1000000000500.5>>1000000000500.5", "1000000000500.5");
  assertEquals(big.reasons, ["wrong_value"]);
});

Deno.test("validate: numbers beyond 2^53 are refused with number_too_large", () => {
  for (
    const rationale of [
      "<<9007199254740993-1=9007199254740992>>9007199254740992", // the operand
      "<<9007199254740990+10=9007199254741000>>9007199254741000", // the result
      "<<99999999999*99999999999/99999999999=99999999999>>99999999999", // a partial result
    ]
  ) {
    const answer = rationale.slice(rationale.lastIndexOf(">") + 1);
    const math = check(rationale, answer, "math");
    assertEquals([math.status, math.reasons], ["dropped", ["number_too_large"]], rationale);
    const detail = math.details?.[0] ?? "";
    assert(detail.includes("2^53"), detail);
    assertEquals(check(rationale, answer, "nl").status, "flagged", rationale);
  }
  // A stated value beyond 2^53 is still compared: 3*3 is not 10000000000000000001.
  const stated = "<<3*3=10000000000000000001>>10000000000000000001";
  const math = check(stated, "10000000000000000001", "math");
  assertEquals([math.status, math.reasons], ["dropped", ["number_too_large", "wrong_value"]]);
  assert((math.details?.[0] ?? "").includes("2^53"), math.details?.[0]);
  assertEquals(check(stated, "10000000000000000001", "nl").status, "dropped");
});

// --- Parquet page checksums --------------------------------------------------------------

Deno.test("crc32: zlib's CRC-32", () => {
  assertEquals(crc32Of(enc.encode("hello")), 0x3610a686);
  assertEquals(crc32Of(new Uint8Array(0)), 0);
  const bytes = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7919) & 0xff);
  assertEquals(crc32Of(bytes), crc32(bytes));
});

/** The same Parquet file with a CRC-32 in every page header, as parquet-mr and Arrow can write. */
function withPageChecksums(file: Uint8Array): Uint8Array {
  const md = parquetMetadata(file.slice().buffer);
  const w = new ByteWriter();
  w.appendBytes(enc.encode("PAR1"));
  for (const rg of md.row_groups) {
    const groupStart = w.offset;
    for (const col of rg.columns) {
      const m = col.meta_data!;
      const start = Number(m.dictionary_page_offset || m.data_page_offset);
      const end = start + Number(m.total_compressed_size);
      const reader = { view: new DataView(file.buffer, file.byteOffset), offset: start };
      const chunkStart = w.offset;
      let dictionary: number | undefined;
      let data: number | undefined;
      while (reader.offset < end) {
        const header = parquetHeader(reader);
        const body = file.subarray(reader.offset, reader.offset + header.compressed_page_size);
        reader.offset += header.compressed_page_size;
        if (header.type === "DICTIONARY_PAGE") dictionary ??= w.offset;
        else data ??= w.offset;
        // hyparquet-writer has its own copy of hyparquet's types.
        writePageHeader(w, { ...header, crc: crc32(body) | 0 } as never);
        w.appendBytes(body);
      }
      const size = BigInt(w.offset - chunkStart);
      m.total_uncompressed_size += size - m.total_compressed_size;
      m.total_compressed_size = size;
      m.data_page_offset = BigInt(data!);
      m.dictionary_page_offset = dictionary === undefined ? undefined : BigInt(dictionary);
      col.file_offset = BigInt(chunkStart);
      col.offset_index_offset = col.column_index_offset = undefined;
      col.offset_index_length = col.column_index_length = undefined;
    }
    rg.file_offset = BigInt(groupStart);
    rg.total_compressed_size = BigInt(w.offset - groupStart);
  }
  writeMetadata(w, md as never);
  w.appendBytes(enc.encode("PAR1"));
  return w.getBytes();
}

Deno.test("parquet: page CRC-32s are verified; a flipped bit is an error, not text", async () => {
  // Compressed, with dictionary pages and two row groups: read as written.
  const snappy = withPageChecksums(
    parquet({ question: QUESTIONS, answer: ANSWERS }, { rowGroupSize: 2 }),
  );
  const ok = await readAll(await bytesFile("ok.parquet", [[...snappy]]));
  assertEquals(ok.map((p) => p.question), QUESTIONS);

  const plain = withPageChecksums(
    parquet({ question: QUESTIONS, answer: ANSWERS }, { codec: "UNCOMPRESSED" }),
  );
  const at = find(plain, "What is 2") + 8;
  plain[at] ^= 0x01; // "2" becomes "3": still valid text
  const path = await bytesFile("flipped.parquet", [[...plain]]);
  const e = await inputError(path, { onError: "skip" });
  assertEquals([e.file, e.field, e.reason], [path, "question", "checksum_mismatch"]);
  assert(e.message.includes("CRC-32"), e.message);
  assert(e.message.includes("rows 1-3"), e.message);
});

// --- record size limits ------------------------------------------------------------------

Deno.test("size limits: a field over --max-field-bytes is an error", async () => {
  const huge = "How many? ".repeat(20_000); // 200,000 bytes
  const path = await bytesFile("big.jsonl", [gsm8k("q1?", 1), gsm8k(huge, 2), gsm8k("q3?", 3)]);
  const e = await inputError(path);
  assertEquals([e.line, e.field, e.reason], [2, "question", "too_large"]);
  assert(e.message.includes("199,999 bytes"), e.message);
  assert(e.message.includes("65,536 (--max-field-bytes)"), e.message);
  const { problems, skipped } = await readSkipping(path);
  assertEquals(problems.map((p) => p.source.line), [1, 3]);
  assertEquals(skipped.map((x) => x.line), [2]);
  assertEquals((await readAll(path, { maxFieldBytes: 1 << 20 })).length, 3);

  // The chain of thought counts as a field too.
  const longCot = await bytesFile("cot.jsonl", [gsm8k("q?", 1).replace("1 = ", "x".repeat(70000))]);
  const c = await inputError(longCot);
  assert(c.message.includes(": the chain of thought is 70,0"), c.message);
});

Deno.test("size limits: a line far too long for any record is refused unread", async () => {
  const before = gsm8k("q1?", 1);
  const long = gsm8k("w".repeat(2_500_000), 2);
  const path = await bytesFile("long.jsonl", [before, long, gsm8k("q3?", 3)]);
  const e = await inputError(path);
  assertEquals([e.line, e.offset, e.reason], [2, bytesOf(before), "too_large"]);
  assert(
    e.message.includes(
      `the line is ${(bytesOf(long) - 1).toLocaleString("en-US")} bytes, over the limit of ` +
        "2,097,152 (32 × --max-field-bytes)",
    ),
    e.message,
  );
  const { problems, skipped } = await readSkipping(path);
  assertEquals(problems.map((p) => p.source.line), [1, 3]);
  assertEquals(skipped.map((x) => x.line), [2]);
  // The same in iCoT, at the end of a file with no final newline.
  const icot = await bytesFile("long.txt", ["q?||<<1+1=2>> #### 2\n", "x".repeat(3_000_000)]);
  const t = await readSkipping(icot);
  assertEquals([t.problems.length, t.skipped.map((x) => [x.line, x.reason])], [1, [[
    2,
    "too_large",
  ]]]);
});

Deno.test("size limits: more steps than --max-cot-steps: an error, or skipped", async () => {
  const dir = await tempDir();
  const steps = Array.from({ length: 300 }, (_, i) => `Add one: <<${i}+1=${i + 1}>>${i + 1}.`);
  const rec = JSON.stringify({
    question: "Count to 300?",
    answer: `${steps.join("\n")}\n#### 300`,
  });
  const path = await bytesFile("long.jsonl", [gsm8k("q1?", 1), rec + "\n"]);
  const splits = [{ name: "train", inputs: [path] }];
  const e = await assertRejects(
    () => buildDataset({ out: `${dir}/a`, splits, k: 2, c: 8 }),
    InputError,
    `${path}:2: 300 math steps, over the limit of 256 (--max-cot-steps)`,
  );
  assertEquals((e as InputError).reason, "too_large");
  const s = await buildDataset({ out: `${dir}/b`, splits, k: 2, c: 8, onError: "skip" });
  assertEquals([s.manifest.splits.train.counts.read, s.manifest.splits.train.counts.skipped], [
    1,
    1,
  ]);
  const more = await buildDataset({ out: `${dir}/c`, splits, k: 2, c: 8, maxCotSteps: 300 });
  assertEquals(more.manifest.splits.train.counts.read, 2);
  const small = buildDataset({ out: `${dir}/d`, splits, k: 2, c: 8, maxFieldBytes: 10 });
  await assertRejects(() => small, InputError, "over the limit of 10 (--max-field-bytes)");
});

Deno.test("size limits: --max-field-bytes and --max-cot-steps on the command line", () => {
  const o = parseCli([
    "--input",
    "x.jsonl",
    "--out",
    "o",
    "--max-field-bytes",
    "1000",
    "--max-cot-steps",
    "12",
  ]);
  assert(o !== "help");
  assertEquals([o.maxFieldBytes, o.maxCotSteps], [1000, 12]);
  const d = parseCli(["--input", "x.jsonl", "--out", "o"]);
  assert(d !== "help");
  assertEquals([d.maxFieldBytes, d.maxCotSteps], [undefined, undefined]);
});

// --- skipped records are listed ----------------------------------------------------------

Deno.test("skipped records: each one is a report.csv row and a line of the summary", async () => {
  const dir = await tempDir();
  const path = await bytesFile("mixed.jsonl", [
    gsm8k("q1?", 1),
    '{"question": "q2?", "answer": \n',
    '{"question": "q',
    [0xff],
    '3?", "answer": "#### 3"}\n',
    gsm8k("z".repeat(70_000), 4),
    gsm8k("q5?", 5),
  ]);
  const s = await buildDataset({
    out: dir,
    splits: [{ name: "train", inputs: [path] }],
    onError: "skip",
  });
  const counts = s.manifest.splits.train.counts;
  assertEquals([counts.read, counts.skipped], [2, 3]);
  assertEquals(s.skipped.map((x) => [x.split, x.file, x.line, x.reason]), [
    ["train", path, 2, "malformed"],
    ["train", path, 3, "invalid_utf8"],
    ["train", path, 4, "too_large"],
  ]);

  const rows: Record<string, string>[] = parseCsv(
    await Deno.readTextFile(`${dir}/${s.manifest.splits.train.report}`),
    { columns: true },
  );
  const skippedRows = rows.filter((r) => r.status === "skipped");
  assertEquals(
    skippedRows.map((r) => [r.index, r.id, r.file, r.line, r.reasons]),
    [
      ["", "mixed.jsonl:2", path, "2", "malformed"],
      ["", "mixed.jsonl:3", path, "3", "invalid_utf8"],
      ["", "mixed.jsonl:4", path, "4", "too_large"],
    ],
  );
  assert(skippedRows[0].error.startsWith("invalid JSON"), skippedRows[0].error);
  assert(skippedRows[1].error.includes("byte 0xFF"), skippedRows[1].error);
  assert(skippedRows[2].error.startsWith('field "question": 70,000 bytes'), skippedRows[2].error);
  // In input order, between the records read.
  assertEquals(rows.map((r) => r.line), ["1", "2", "3", "4", "5"]);

  const table = formatSummary(s.manifest, s.built, s.skipped);
  assert(table.includes(`${path}:3  invalid_utf8  invalid UTF-8: byte 0xFF`), table);
});

Deno.test("skipped records: the command's summary lists them", async () => {
  const dir = await tempDir();
  const path = await bytesFile("bad.jsonl", [gsm8k("q1?", 1), '{"question": "q2?"}\n']);
  const r = await runDeno([
    "run",
    ...TASK_PERMISSIONS,
    "cli/build_dataset.ts",
    "--input",
    path,
    "--out",
    `${dir}/ds`,
    "--on-error",
    "skip",
  ]);
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.includes(`${path}:2  malformed  field "answer": expected`), r.stdout);
});

import { tempDir } from "./_tmp.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { buildDataset, BuildError } from "../pipeline/build.ts";
import { WriteError } from "../pipeline/writer.ts";
import { defaultSplits } from "../pipeline/default_data.ts";
import { manifestFiles, readManifest } from "../pipeline/manifest.ts";
import { getTensor, readSafetensors } from "../base/safetensors.ts";
import { IGNORE } from "../pipeline/pack.ts";
import { gpt2Tokenizer } from "../pipeline/tokenizer.ts";
import { InputError } from "../pipeline/read.ts";
import { haveSharedData, SHARED_DATA } from "./_shared_data.ts";
import { exists } from "../base/exists.ts";
import { parseCli } from "../cli/build_dataset.ts";
import { CliError } from "../cli/_common.ts";
import { formatSummary } from "../pipeline/summary.ts";

const FIX = new URL("../fixtures/default/", import.meta.url).pathname;
const TRAIN = `${FIX}train.jsonl`;
const VALID = `${FIX}valid.jsonl`;

/** Every file under `dir` (recursively) with its bytes, sorted by path. */
async function snapshot(dir: string): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  const walk = async (d: string, rel: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`, `${rel}${e.name}/`);
      else out.set(`${rel}${e.name}`, await Deno.readFile(`${d}/${e.name}`));
    }
  };
  await walk(dir, "");
  return new Map([...out].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function assertSameTree(a: Map<string, Uint8Array>, b: Map<string, Uint8Array>) {
  assertEquals([...a.keys()], [...b.keys()]);
  for (const [k, v] of a) assert(sameBytes(v, b.get(k)!), `${k} differs`);
}

Deno.test("build: default splits give a complete directory and a valid manifest", async () => {
  const out = `${await tempDir()}/ds`;
  const s = await buildDataset({ out, splits: defaultSplits() });
  assertEquals(s.built, ["train", "valid"]);
  const m = await readManifest(out);
  assertEquals(m.options, { k: 6, c: 13, cot: "math" });
  assertEquals(m.tokenizer.kind, "gpt2");
  assertEquals(m.tokenizer.special.lat, 50259);
  // the hand-written fixtures (81 + 20) and the seeded synthetic problems (4,000 + 200)
  assertEquals(m.splits.train.counts.read, 4081);
  assertEquals(m.splits.valid.counts.read, 220);
  for (const split of ["train", "valid"]) {
    const info = m.splits[split];
    const c = info.counts;
    assertEquals(c.kept + c.dropped, c.read);
    assertEquals(c.ok + c.flagged, c.kept);
    assertEquals(Object.values(info.stepHistogram).reduce((a, b) => a + b, 0), c.kept);
    assertEquals(info.shards.reduce((a, x) => a + x.records, 0), c.kept);
    assertEquals(info.sources[0].format, "gsm8k");
    assertEquals(info.sources[0].sha256.length, 64);
  }
  // Exactly the files the manifest names, each named by its split and build id.
  const names = [...Deno.readDirSync(out)].map((e) => e.name).sort();
  assertEquals(names, ["manifest.json", ...manifestFiles(m)].sort());
  for (const split of ["train", "valid"]) {
    const id = m.splits[split].records.slice(split.length + 1, -".records.jsonl".length);
    assert(/^[0-9a-f]{12}$/.test(id), m.splits[split].records);
    assertEquals(m.splits[split].report, `${split}-${id}.report.csv`);
    assertEquals(m.splits[split].shards.map((s) => s.file), [`${split}-${id}-00000.safetensors`]);
  }
  const shard = m.splits.train.shards[0];
  const t = shard.tensors.find((x) => x.name === "lotus_step_targets")!;
  assertEquals(t.shape, [m.splits.train.counts.kept, 6, 13]);
  assertEquals(t.dtype, "I32");
});

Deno.test("build: a record's latent slots decode to its step text from records.jsonl", async () => {
  const out = `${await tempDir()}/ds`;
  const { manifest: m } = await buildDataset({ out, splits: [{ name: "train", inputs: [TRAIN] }] });
  const tok = await gpt2Tokenizer();
  const f = await readSafetensors(`${out}/${m.splits.train.shards[0].file}`);
  const lines = (await Deno.readTextFile(`${out}/${m.splits.train.records}`)).trimEnd().split("\n");
  const recIndex = getTensor(f, "record_index", "I32");
  const n = recIndex.length;
  const targets = getTensor(f, "lotus_step_targets", "I32", [n, 6, 13]);
  const x = f.tensors.lotus_input_ids;
  const T = x.shape[1];
  const lens = getTensor(f, "lotus_lengths", "I32");
  const bots = getTensor(f, "lotus_bot", "I32");
  let checked = 0;
  for (let i = 0; i < n; i++) {
    const rec = JSON.parse(lines[recIndex[i]]);
    if (rec.validation.reasons.includes("step_truncated")) continue;
    const steps: string[] = rec.math.map((s: { text: string }) => s.text);
    for (let k = 0; k < Math.min(6, steps.length); k++) {
      const slot = Array.from(targets.subarray((i * 6 + k) * 13, (i * 6 + k + 1) * 13))
        .filter((v) => v !== IGNORE);
      assertEquals(tok.decode(slot), steps[k] + "\n");
    }
    // The input row around the latents: BOT, K*c LATs, EOT.
    const row = Array.from((x.data as Int32Array).subarray(i * T, i * T + lens[i]));
    assertEquals(row[bots[i]], 50257);
    assertEquals(row[bots[i] + 1 + 78], 50258);
    assertEquals(tok.decode(row.slice(0, bots[i])), rec.question + "\n");
    checked++;
  }
  assert(checked > 70);
});

Deno.test("build: two builds give byte-identical directories (gpt2 and compact)", async () => {
  for (const tokenizer of ["gpt2", "compact"]) {
    const base = await tempDir();
    const opts = { splits: defaultSplits(), tokenizer, shardSize: 32 };
    await buildDataset({ out: `${base}/a`, ...opts });
    await buildDataset({ out: `${base}/b`, ...opts });
    const a = await snapshot(`${base}/a`);
    assertSameTree(a, await snapshot(`${base}/b`));
    const shards = [...a.keys()].filter((n) => /^train-[0-9a-f]{12}-\d{5}\.safetensors$/.test(n));
    assert(shards.length > 2, `${tokenizer}: 4,081 records in shards of 32`);
  }
});

Deno.test("build: a second split reuses the directory's tokenizer and keeps the first", async () => {
  const out = `${await tempDir()}/ds`;
  await buildDataset({ out, splits: [{ name: "train", inputs: [TRAIN] }], tokenizer: "compact" });
  const before = await snapshot(out);
  // A copy of the directory's tokenizer given by path is the same tokenizer, not another.
  const copy = `${await tempDir()}/tokenizer.json`;
  await Deno.copyFile(`${out}/tokenizer.json`, copy);
  const s = await buildDataset({
    out,
    splits: [{ name: "valid", inputs: [VALID] }],
    tokenizer: copy,
  });
  assert(s.reusedTokenizer);
  const after = await snapshot(out);
  for (const [k, v] of before) {
    if (k === "manifest.json") continue;
    assert(sameBytes(v, after.get(k)!), `${k} changed`);
  }
  const m = await readManifest(out);
  assertEquals(Object.keys(m.splits), ["train", "valid"]);
  assertEquals(m.tokenizer.kind, "compact");
  assert(after.has(m.splits.valid.shards[0].file));

  // The same two splits built together give the same bytes.
  const together = `${await tempDir()}/ds`;
  await buildDataset({
    out: together,
    splits: [{ name: "train", inputs: [TRAIN] }, { name: "valid", inputs: [VALID] }],
    tokenizer: "compact",
  });
  assertSameTree(after, await snapshot(together));
});

Deno.test("build: other K, c, CoT form or tokenizer in an existing directory fail and change nothing", async () => {
  const out = `${await tempDir()}/ds`;
  await buildDataset({ out, splits: [{ name: "train", inputs: [TRAIN] }] });
  const before = await snapshot(out);
  const valid = [{ name: "valid", inputs: [VALID] }];
  await assertRejects(
    () => buildDataset({ out, splits: valid, k: 4 }),
    BuildError,
    "k = 6 there, 4 here",
  );
  await assertRejects(() => buildDataset({ out, splits: valid, c: 5 }), BuildError, "c = 13 there");
  await assertRejects(
    () => buildDataset({ out, splits: valid, cot: "nl" }),
    BuildError,
    "cot = math there",
  );
  await assertRejects(
    () => buildDataset({ out, splits: valid, tokenizer: "compact" }),
    BuildError,
    "--tokenizer compact differs",
  );
  assertSameTree(before, await snapshot(out));
  // Left out, K, c and the form follow the directory.
  const nl = `${await tempDir()}/nl`;
  await buildDataset({ out: nl, splits: [{ name: "train", inputs: [TRAIN] }], cot: "nl", k: 3 });
  const s = await buildDataset({ out: nl, splits: valid });
  assertEquals(s.manifest.options, { k: 3, c: 13, cot: "nl" });
});

Deno.test("build: a directory's tokenizer.json cut short is refused as edited, before it is parsed", async () => {
  const out = `${await tempDir()}/ds`;
  await buildDataset({ out, splits: [{ name: "train", inputs: [TRAIN] }], tokenizer: "compact" });
  const path = `${out}/tokenizer.json`;
  await Deno.writeTextFile(path, (await Deno.readTextFile(path)).slice(0, 100));
  const before = await snapshot(out);
  await assertRejects(
    () => buildDataset({ out, splits: [{ name: "valid", inputs: [VALID] }] }),
    BuildError,
    `${path}: its sha256 does not match ${out}/manifest.json; the directory was edited. ` +
      "Rebuild all splits into a fresh --out",
  );
  assertSameTree(before, await snapshot(out));
});

Deno.test("build: rebuilding a split replaces its shards and removes stale ones", async () => {
  const out = `${await tempDir()}/ds`;
  const train = [{ name: "train", inputs: [TRAIN] }];
  const first = await buildDataset({ out, splits: train, shardSize: 10 });
  assertEquals(first.manifest.splits.train.shards.length, 9);
  await buildDataset({ out, splits: train, shardSize: 100 });
  const names = [...(await snapshot(out)).keys()].filter((n) => n.endsWith(".safetensors"));
  const m = await readManifest(out);
  assertEquals(names, [m.splits.train.shards[0].file]);
  assertEquals(m.splits.train.shards.length, 1);
  // The records and report of the first build went with its shards.
  assertEquals(
    [...(await snapshot(out)).keys()].sort(),
    ["manifest.json", ...manifestFiles(m)].sort(),
  );
});

Deno.test("build: bad input fails with file:line and leaves no files in --out", async () => {
  const dir = await tempDir();
  const bad = `${dir}/bad.jsonl`;
  const good = (await Deno.readTextFile(TRAIN)).split("\n").slice(0, 3).join("\n");
  await Deno.writeTextFile(bad, `${good}\n{"question": "No answer here?"}\n`);
  const out = `${dir}/out`;
  const e = await assertRejects(
    () => buildDataset({ out, splits: [{ name: "train", inputs: [bad] }] }),
    InputError,
    `${bad}:4`,
  );
  assert(e.message.includes("answer"));
  await assertRejects(() => Deno.stat(out), Deno.errors.NotFound);

  // Into an existing dataset: it stays exactly as it was.
  const ds = `${dir}/ds`;
  await buildDataset({ out: ds, splits: [{ name: "train", inputs: [TRAIN] }] });
  const before = await snapshot(ds);
  await assertRejects(
    () => buildDataset({ out: ds, splits: [{ name: "train", inputs: [bad] }] }),
    InputError,
  );
  assertSameTree(before, await snapshot(ds));

  // --on-error skip: the bad record is counted as skipped.
  const s = await buildDataset({
    out,
    splits: [{ name: "train", inputs: [bad] }],
    onError: "skip",
  });
  assertEquals(s.manifest.splits.train.counts.read, 3);
  assertEquals(s.manifest.splits.train.counts.skipped, 1);
});

Deno.test("build: a split whose chains are all prose drops every record under math and says to build with --cot nl", async () => {
  const dir = await tempDir();
  const prose = `${dir}/prose.txt`;
  // iCoT lines with a prose chain of thought, as GSM8K-Aug's train_no_aug.txt writes them.
  await Deno.writeTextFile(
    prose,
    "Nia has 4 bags of 6 shells. How many shells?||She has 4 * 6 = 24 shells. #### 24\n" +
      "Omar walks 3 km a day for 5 days. How far?||He walks 3 * 5 = 15 km. #### 15\n",
  );
  const out = `${dir}/out`;
  const e = await assertRejects(
    () => buildDataset({ out, splits: [{ name: "train", inputs: [prose] }], tokenizer: "compact" }),
    BuildError,
  );
  assertEquals(
    e.message,
    "split train kept no record: 2 records read, 0 skipped as unreadable, 2 dropped " +
      "(no_annotation 2); nothing was written. Every record's chain of thought is prose " +
      "without <<expr=value>> calculator annotations, which the math CoT form needs: build it " +
      "with --cot nl (into a new --out, or one whose splits are nl) to supervise the latents " +
      "with its sentences",
  );
  await assertRejects(() => Deno.stat(out), Deno.errors.NotFound);
  // As the message says, the nl form keeps them.
  const s = await buildDataset({
    out,
    splits: [{ name: "train", inputs: [prose] }],
    tokenizer: "compact",
    cot: "nl",
  });
  assertEquals(s.manifest.splits.train.counts.kept, 2);
  // Other causes keep the general advice.
  const wrong = `${dir}/wrong.txt`;
  await Deno.writeTextFile(wrong, "Pia has 2 cats and 3 dogs. How many pets?||<<2+3=6>> #### 6\n");
  const w = await assertRejects(
    () => buildDataset({ out: `${dir}/o2`, splits: [{ name: "train", inputs: [wrong] }] }),
    BuildError,
  );
  assert(
    w.message.includes("(wrong_value 1)") && w.message.includes("Check its --input"),
    w.message,
  );
});

Deno.test("build: a split whose every record is skipped as unreadable names the first and the format it was read as", async () => {
  const dir = await tempDir();
  const lines = `${dir}/lines.txt`;
  // iCoT lines given as GSM8K JSON lines: with --on-error skip, every line is skipped.
  await Deno.writeTextFile(
    lines,
    "Nia has 4 bags of 6 shells. How many shells?||<<4*6=24>> #### 24\n" +
      "Omar walks 3 km a day for 5 days. How far?||<<3*5=15>> #### 15\n",
  );
  const e = await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/out`,
        splits: [{ name: "train", inputs: [lines] }],
        format: "gsm8k",
        onError: "skip",
        tokenizer: "compact",
      }),
    BuildError,
  );
  assert(
    e.message.startsWith(
      "split train kept no record: 0 records read, 2 skipped as unreadable, 0 dropped; " +
        `nothing was written. The first, read as gsm8k: ${lines}:1: invalid JSON (`,
    ) &&
      e.message.endsWith(
        "check --format (leave it out to detect the format) and the --input files",
      ),
    e.message,
  );
});

Deno.test("build: a record holding a special token's text is dropped as special_token_text and reported, not encoded", async () => {
  const dir = await tempDir();
  const input = `${dir}/typed.jsonl`;
  const good = (await Deno.readTextFile(TRAIN)).split("\n").slice(0, 3);
  const typed = [
    {
      question: "Ann has 3 pens and <|latent|> 2 cups. How many?",
      answer: "3+2 = <<3+2=5>>5\n#### 5",
    },
    { question: "Bob has 4 cups. How many?", answer: "He has <<4=4>>4 cups.<|endoftext|>\n#### 4" },
  ];
  await Deno.writeTextFile(
    input,
    [...good, ...typed.map((r) => JSON.stringify(r))].join("\n") + "\n",
  );
  const out = `${dir}/ds`;
  const s = await buildDataset({ out, splits: [{ name: "train", inputs: [input] }] });
  const info = s.manifest.splits.train, c = info.counts;
  assertEquals([c.read, c.kept, c.dropped], [5, 3, 2]);
  assertEquals(c.droppedByReason, { special_token_text: 2 });
  // The summary lists the reason like the others; report.csv and records.jsonl name the record.
  const table = formatSummary(s.manifest, s.built, s.skipped);
  assert(/^ {4}special_token_text +2$/m.test(table), table);
  const report = (await Deno.readTextFile(`${out}/${info.report}`)).trim().split("\n");
  const rows = report.slice(1).map((l) => l.split(","));
  assertEquals(
    rows.filter((r) => r[5] === "special_token_text").map((r) => r.slice(1, 5)),
    [
      ["typed.jsonl:4", input, "4", "dropped"],
      ["typed.jsonl:5", input, "5", "dropped"],
    ],
  );
  const records = (await Deno.readTextFile(`${out}/${info.records}`)).trim().split("\n")
    .map((l) => JSON.parse(l));
  assertEquals(records[3].validation.details, [
    'question holds "<|latent|>", which the tokenizer reads as its special token 50259, not as text',
  ]);
  assert(records[4].validation.details[0].startsWith('NL step 1 holds "<|endoftext|>"'));
  assertEquals([records[3].tokens, records[4].tokens], [null, null]);
  // Only the three good records are packed: no latent slot or EOS in a question's tokens.
  const shard = await readSafetensors(`${out}/${info.shards[0].file}`);
  assertEquals(Array.from(getTensor(shard, "record_index", "I32")), [0, 1, 2]);
  const x = shard.tensors.lotus_input_ids, T = x.shape[1];
  const bots = getTensor(shard, "lotus_bot", "I32");
  for (let i = 0; i < 3; i++) {
    const q = Array.from((x.data as Int32Array).subarray(i * T, i * T + bots[i]));
    assert(q.every((id) => id < 50256), `record ${i}: a special id in its question`);
  }
});

Deno.test("build: --cot nl drops Coconut chains with bad math, counted by the reason that drops", async () => {
  const dir = await tempDir();
  const input = `${dir}/chains.json`;
  await Deno.writeTextFile(
    input,
    JSON.stringify([
      { question: "Split 36 five ways?", steps: ["<<36*1/5=7.2=7>>"], answer: "8" },
      { question: "Twice 4?", steps: ["<<2*4=8>>"], answer: "8" },
    ]),
  );
  await buildDataset({ out: `${dir}/ds`, cot: "nl", splits: [{ name: "train", inputs: [input] }] });
  const c = (await readManifest(`${dir}/ds`)).splits.train.counts;
  assertEquals([c.kept, c.dropped], [1, 1]);
  // final_mismatch (7 is not 8) only flags: bad_expression is what dropped the record.
  assertEquals(c.droppedByReason, { bad_expression: 1 });
});

Deno.test("build: ids stay unique: files sharing a name are told apart by their folders", async () => {
  const dir = await tempDir();
  const rec = (q: string, n: number) =>
    JSON.stringify({
      question: q,
      answer: `He has 2*${n} = <<2*${n}=${2 * n}>>${2 * n}.\n#### ${2 * n}`,
    });
  for (const d of ["d1", "d2"]) {
    await Deno.mkdir(`${dir}/${d}`);
    await Deno.writeTextFile(`${dir}/${d}/x.jsonl`, `${rec(`${d} Q1?`, 3)}\n{"question": "q?"}\n`);
  }
  await Deno.writeTextFile(`${dir}/y.jsonl`, `${rec("Y?", 4)}\n`);
  const inputs = [`${dir}/d1/x.jsonl`, `${dir}/d2/x.jsonl`, `${dir}/y.jsonl`];
  await buildDataset({
    out: `${dir}/ds`,
    onError: "skip",
    splits: [{ name: "train", inputs }],
  });
  const m = await readManifest(`${dir}/ds`);
  const ids = (await Deno.readTextFile(`${dir}/ds/${m.splits.train.records}`)).trim().split("\n")
    .map((l) => JSON.parse(l).id);
  assertEquals(ids, ["d1/x.jsonl:1", "d2/x.jsonl:1", "y.jsonl:1"]);
  // Skipped records' report rows carry the same names.
  const report = await Deno.readTextFile(`${dir}/ds/${m.splits.train.report}`);
  for (const id of ["d1/x.jsonl:2", "d2/x.jsonl:2"]) assert(report.includes(`\n,${id},`), report);

  // The same file twice, in one split or two, would repeat its records and ids.
  await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/ds2`,
        splits: [{ name: "train", inputs: [inputs[2], inputs[2]] }],
      }),
    BuildError,
    "the same file as",
  );
  const e = await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/ds2`,
        splits: [
          { name: "train", inputs: [inputs[0]] },
          { name: "test", inputs: [`${dir}/d1/../d1/x.jsonl`] },
        ],
      }),
    BuildError,
  );
  assert(
    e.message.includes("(for splits train and test); its records would be read twice"),
    e.message,
  );
  // So would two splits generating from one seed.
  await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/ds2`,
        splits: [
          { name: "train", inputs: [], synthetic: { n: 10, seed: 4 } },
          { name: "valid", inputs: [], synthetic: { n: 5, seed: 4, start: 8 } },
        ],
      }),
    BuildError,
    "splits train and valid both generate records 8 to 10 with seed 4",
  );
  assertEquals(
    await Array.fromAsync(Deno.readDir(dir)).then((es) => es.some((x) => x.name === "ds2")),
    false,
  );
});

Deno.test("build: options are validated with the field named", async () => {
  const splits = [{ name: "train", inputs: [TRAIN] }];
  await assertRejects(() => buildDataset({ out: "x", splits, k: -1 }), BuildError, "option k");
  await assertRejects(() => buildDataset({ out: "x", splits, c: 1.5 }), BuildError, "option c");
  await assertRejects(
    () => buildDataset({ out: "x", splits: [{ name: ".hidden", inputs: [TRAIN] }] }),
    BuildError,
    "option splits.0.name",
  );
  // A name too long for the split's files (<split>-<hash>-00000.safetensors) is refused by name.
  const out = `${await tempDir()}/ds`;
  await assertRejects(
    () => buildDataset({ out, splits: [{ name: "s".repeat(230), inputs: [TRAIN] }] }),
    BuildError,
    "option splits.0.name: a split name has at most 100 characters",
  );
  assertEquals(await exists(out), false);
  assertThrows(
    () => parseCli(["--input", TRAIN, "--out", out, "--split", "s".repeat(101)]),
    CliError,
    "--split must have at most 100 characters",
  );
  await assertRejects(
    () => buildDataset({ out: "x", splits: [...splits, ...splits] }),
    BuildError,
    'split "train" is given twice',
  );
  await assertRejects(
    () => buildDataset({ out: "x", splits: [{ name: "train", inputs: ["/nope.jsonl"] }] }),
    BuildError,
    "/nope.jsonl: input file not found",
  );
});

const GSM8K = `${SHARED_DATA}gsm8k/`;
const HAS_GSM8K = haveSharedData("gsm8k/train.jsonl", "build_test", "the GSM8K integration test");

Deno.test({
  name: "build: GSM8K train and test with GPT-2 (../shared/data/gsm8k)",
  ignore: !HAS_GSM8K,
}, async () => {
  const out = `${await tempDir()}/gsm8k`;
  await buildDataset({
    out,
    splits: [
      { name: "train", inputs: [`${GSM8K}train.jsonl`] },
      { name: "test", inputs: [`${GSM8K}test.jsonl`] },
    ],
  });
  const m = await readManifest(out);
  const expected: Record<string, number> = { train: 7473, test: 1319 };
  for (const [split, read] of Object.entries(expected)) {
    const c = m.splits[split].counts;
    assertEquals(c.read, read);
    assertEquals(c.skipped, 0);
    assertEquals(c.kept + c.dropped, read);
    assertEquals(c.ok + c.flagged, c.kept);
    assert(c.kept > 0.9 * read, `${split}: kept ${c.kept} of ${read}`);
    assertEquals(m.splits[split].shards.reduce((a, s) => a + s.records, 0), c.kept);
    const dropSum = Object.values(c.droppedByReason).reduce((a, b) => a + b, 0);
    assert(dropSum >= c.dropped, "every dropped record has a reason");
  }
});

Deno.test("build: an --out that is a file, or lies under one, is refused naming it; the file is kept", async () => {
  const file = `${await tempDir()}/notes.txt`;
  await Deno.writeTextFile(file, "mine");
  const train = [{ name: "train", inputs: [TRAIN] }];
  await assertRejects(
    () => buildDataset({ out: file, splits: train }),
    WriteError,
    `--out ${file} is a file; give a dataset directory`,
  );
  await assertRejects(
    () => buildDataset({ out: `${file}/ds`, splits: train }),
    WriteError,
    `--out ${file}/ds: a part of the path is a file, not a directory`,
  );
  assertEquals(await Deno.readTextFile(file), "mine");
});

Deno.test("build: an --out with other files and no manifest is refused; a killed first build's leftovers are not", async () => {
  const out = await tempDir();
  await Deno.writeTextFile(`${out}/model.safetensors`, "weights");
  await Deno.writeTextFile(`${out}/tokenizer.json`, "{}");
  const train = [{ name: "train", inputs: [TRAIN] }];
  await assertRejects(
    () => buildDataset({ out, splits: train }),
    BuildError,
    "choose an empty or new directory for --out",
  );
  assertEquals([...(await snapshot(out)).keys()].sort(), ["model.safetensors", "tokenizer.json"]);
  // Files that only mark a directory are no reason to refuse it.
  const marked = await tempDir();
  await Deno.writeTextFile(`${marked}/.gitkeep`, "");
  await buildDataset({ out: marked, splits: train });
  // What a first build killed in its commit leaves: its staging directory and lock, files
  // moved into place, tokenizer.json (moved after them); the rerun builds and removes them.
  const killed = `${await tempDir()}/ds`;
  await Deno.mkdir(`${killed}/.staging-4000001`, { recursive: true });
  await Deno.writeTextFile(`${killed}/.staging-4000001/part`, "x");
  await Deno.writeTextFile(`${killed}/.lock-4000001`, "");
  await Deno.writeTextFile(`${killed}/train-0123456789ab-00000.safetensors`, "half");
  await Deno.writeTextFile(`${killed}/train-0123456789ab.records.jsonl`, "half");
  await Deno.writeTextFile(`${killed}/tokenizer.json`, "{}");
  const s = await buildDataset({ out: killed, splits: train });
  assertEquals(
    (await Array.fromAsync(Deno.readDir(killed))).map((e) => e.name).sort(),
    ["manifest.json", ...manifestFiles(s.manifest)].sort(),
  );
  // A rebuild removes the files of the split it replaces, not files it did not write.
  await Deno.writeTextFile(`${killed}/notes.safetensors`, "mine");
  await Deno.writeTextFile(`${killed}/notes.records.jsonl`, "mine");
  const again = await buildDataset({ out: killed, splits: train, shardSize: 10 });
  assertEquals(
    (await Array.fromAsync(Deno.readDir(killed))).map((e) => e.name).sort(),
    ["manifest.json", "notes.records.jsonl", "notes.safetensors", ...manifestFiles(again.manifest)]
      .sort(),
  );
});

Deno.test("build: a split repeating a kept split's source or generated records is refused", async () => {
  const out = `${await tempDir()}/ds`;
  await buildDataset({
    out,
    splits: [{ name: "train", inputs: [TRAIN], synthetic: { n: 200 } }],
    tokenizer: "compact",
  });
  const before = await snapshot(out);
  await assertRejects(
    () => buildDataset({ out, splits: [{ name: "test", inputs: [], synthetic: { n: 50 } }] }),
    BuildError,
    "split test would generate records 1 to 50 with seed 0, which split train already in",
  );
  await assertRejects(
    () =>
      buildDataset({
        out,
        splits: [{ name: "test", inputs: [], synthetic: { n: 50, start: 150, seed: 0 } }],
      }),
    BuildError,
    "records 150 to 199 with seed 0",
  );
  // The same content under another name is the same source.
  const copy = `${await tempDir()}/copy.jsonl`;
  await Deno.copyFile(TRAIN, copy);
  await assertRejects(
    () => buildDataset({ out, splits: [{ name: "test", inputs: [copy] }] }),
    BuildError,
    `${copy}: the same content (sha256) as ${TRAIN}, a source of split train already in`,
  );
  assertSameTree(before, await snapshot(out));
  // Other seeds, numbers past the kept ones, and a rebuild of the split itself are fine.
  await buildDataset({
    out,
    splits: [{ name: "test", inputs: [], synthetic: { n: 50, seed: 1 } }],
  });
  await buildDataset({
    out,
    splits: [{ name: "valid", inputs: [VALID], synthetic: { n: 5, start: 201 } }],
  });
  const m = await buildDataset({
    out,
    splits: [{ name: "train", inputs: [TRAIN], synthetic: { n: 100 } }],
  });
  assertEquals(Object.keys(m.manifest.splits).sort(), ["test", "train", "valid"]);
  assertEquals(m.manifest.splits.train.synthetic?.start, 1);
  // A manifest written before it recorded where a split's generator started: the split's
  // records say (valid's generated records are numbers 201 to 205).
  const path = `${out}/manifest.json`;
  const raw = JSON.parse(await Deno.readTextFile(path));
  delete raw.splits.valid.synthetic.start;
  await Deno.writeTextFile(path, JSON.stringify(raw, null, 2));
  await buildDataset({ out, splits: [{ name: "train", inputs: [TRAIN], synthetic: { n: 200 } }] });
  await assertRejects(
    () =>
      buildDataset({ out, splits: [{ name: "train", inputs: [TRAIN], synthetic: { n: 203 } }] }),
    BuildError,
    "records 201 to 203 with seed 0, which split valid",
  );
});

Deno.test("build: a split rebuilt from a file it had may keep an overlap an older build made", async () => {
  const out = `${await tempDir()}/ds`;
  await buildDataset({
    out,
    splits: [{ name: "valid", inputs: [VALID] }, { name: "test", inputs: [], synthetic: { n: 3 } }],
    tokenizer: "compact",
  });
  // As an older version allowed: test built from valid's file too.
  const path = `${out}/manifest.json`;
  const raw = JSON.parse(await Deno.readTextFile(path));
  raw.splits.test.sources = raw.splits.valid.sources;
  await Deno.writeTextFile(path, JSON.stringify(raw, null, 2));
  await buildDataset({ out, splits: [{ name: "test", inputs: [VALID] }] });
  // A split that did not have it is refused, with advice the command line can follow.
  await assertRejects(
    () => buildDataset({ out, splits: [{ name: "other", inputs: [VALID] }] }),
    BuildError,
    "give split other another file, or build into a new --out",
  );
  // The same for generated records: test's seed made valid's (as an older version allowed).
  await buildDataset({ out, splits: [{ name: "valid", inputs: [], synthetic: { n: 4 } }] });
  await buildDataset({ out, splits: [{ name: "test", inputs: [], synthetic: { n: 3, seed: 0 } }] })
    .then(() => {
      throw new Error("test's records repeat valid's: refused");
    }, (e) => assert(e instanceof BuildError, String(e)));
  await buildDataset({ out, splits: [{ name: "test", inputs: [], synthetic: { n: 3, seed: 1 } }] });
  const again = JSON.parse(await Deno.readTextFile(path));
  again.splits.test.synthetic.seed = 0;
  await Deno.writeTextFile(path, JSON.stringify(again, null, 2));
  await buildDataset({ out, splits: [{ name: "test", inputs: [], synthetic: { n: 3, seed: 0 } }] });
  await assertRejects(
    () => buildDataset({ out, splits: [{ name: "other", inputs: [], synthetic: { n: 2 } }] }),
    BuildError,
    "pass another --seed for split other, or build into a new --out",
  );
});

import { tempDir } from "./_tmp.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { buildDataset, BuildError, type BuildOptions } from "../pipeline/build.ts";
import { InputError } from "../pipeline/read.ts";
import { readManifest } from "../pipeline/manifest.ts";
import { formatSummary } from "../pipeline/summary.ts";
import { parseCli } from "../cli/build_dataset.ts";
import { generate } from "../pipeline/synthetic.ts";
import { ROOT, runDeno } from "./_run.ts";

const CLI = `${ROOT}cli/build_dataset.ts`;

function cli(args: string[]) {
  return runDeno(["run", "--allow-read", "--allow-write", "--allow-env", CLI, ...args]);
}

/** The build options of a command line (not --help). */
function options(args: string[]): BuildOptions {
  const o = parseCli(args);
  assert(o !== "help");
  return o;
}

async function ids(dir: string, split: string): Promise<string[]> {
  const m = await readManifest(dir);
  const text = await Deno.readTextFile(`${dir}/${m.splits[split].records}`);
  return text.trimEnd().split("\n").map((l) => JSON.parse(l).id as string);
}

/** Made-up GSM8K lines: two that augment, one near copy of the "evaluation" question. */
const TRAIN = [
  {
    question: "Ana buys 4 notebooks for $3 each and a pen for $2. How much does she spend?",
    answer:
      "The notebooks cost 4 * 3 = $<<4*3=12>>12.\nIn all she spends 12 + 2 = $<<12+2=14>>14.\n#### 14",
  },
  {
    question:
      "Dana has 36 plums. She gives a third of them to her cousin and eats 5. How many plums are left?",
    answer:
      "She gives 36/3 = <<36/3=12>>12 plums.\nShe has 36 - 12 - 5 = <<36-12-5=19>>19 left.\n#### 19",
  },
  {
    question:
      "A farm has 12 cows. Each cow eats 25 kilograms of hay a day. How much hay do the cows eat?",
    answer: "The cows eat 12 * 25 = <<12*25=300>>300 kilograms of hay.\n#### 300",
  },
];
const EVAL = [{
  question:
    "Dana has 24 plums. She gives a third of them to her cousin and eats 2. How many plums are left?",
  answer:
    "She gives 24/3 = <<24/3=8>>8 plums.\nShe has 24 - 8 - 2 = <<24-8-2=14>>14 left.\n#### 14",
}];

async function files(dir: string) {
  const train = `${dir}/train.jsonl`;
  const evalFile = `${dir}/eval.jsonl`;
  await Deno.writeTextFile(train, TRAIN.map((r) => JSON.stringify(r)).join("\n") + "\n");
  await Deno.writeTextFile(evalFile, EVAL.map((r) => JSON.stringify(r)).join("\n") + "\n");
  return { train, evalFile };
}

Deno.test("cli options: --synthetic, --steps, --families, --exclude-families, --augment, --exclude", () => {
  const o = options([
    "--synthetic",
    "500",
    "--steps",
    "2..5",
    "--seed",
    "9",
    "--max-value",
    "500",
    "--digits",
    "3",
    "--families",
    "ages,travel",
    "--out",
    "/tmp/x",
  ]);
  assertEquals(o.splits, [{
    name: "train",
    inputs: [],
    synthetic: {
      n: 500,
      seed: 9,
      minSteps: 2,
      maxSteps: 5,
      maxValue: 500,
      digits: 3,
      families: ["ages", "travel"],
    },
  }]);
  const held = options([
    "--synthetic",
    "10",
    "--exclude-families",
    "ages,travel",
    "--steps",
    "7",
    "--split",
    "test",
    "--out",
    "/tmp/x",
  ]);
  assertEquals(held.splits[0].name, "test");
  assertEquals(held.splits[0].synthetic!.families, [
    "shopping",
    "sharing",
    "earnings",
    "cooking",
    "schedule",
  ]);
  assertEquals([held.splits[0].synthetic!.minSteps, held.splits[0].synthetic!.maxSteps], [7, 7]);
  const aug = options([
    "--input",
    "a.jsonl",
    "--augment",
    "4",
    "--exclude",
    "t.jsonl",
    "--out",
    "o",
  ]);
  assertEquals(aug.splits, [{
    name: "train",
    inputs: ["a.jsonl"],
    augment: { variants: 4, seed: 0 },
    exclude: ["t.jsonl"],
  }]);
  // --seed seeds --augment without --synthetic.
  const seeded = options(["--input", "a.jsonl", "--augment", "2", "--seed", "3", "--out", "o"]);
  assertEquals(seeded.splits[0].augment, { variants: 2, seed: 3 });
  const bad: [string[], string][] = [
    [["--steps", "2..4", "--input", "a", "--out", "o"], "--steps needs --synthetic N"],
    [["--synthetic", "5", "--steps", "5..2", "--out", "o"], "--steps must be A..B with"],
    [["--synthetic", "5", "--steps", "1..30", "--out", "o"], "--steps must be A..B with"],
    [["--synthetic", "5", "--steps", "a", "--out", "o"], "--steps must be A..B"],
    [
      ["--synthetic", "5", "--families", "pirates", "--out", "o"],
      '--families has no family "pirates": takes families',
    ],
    [
      ["--synthetic", "5", "--families", "ages", "--exclude-families", "travel", "--out", "o"],
      "not both",
    ],
    [[
      "--synthetic",
      "5",
      "--exclude-families",
      "shopping,travel,sharing,ages,earnings,cooking,schedule",
      "--out",
      "o",
    ], "leaves no family"],
    [["--synthetic", "5"], "--out DIR is required with --synthetic"],
    [["--seed", "5", "--out", "o"], "--seed needs --synthetic N or --augment N"],
    [["--seed", "5", "--input", "a", "--out", "o"], "--seed needs --synthetic N or --augment N"],
    [["--augment", "2", "--out", "o"], "--augment needs --input"],
    [["--augment", "0", "--input", "a", "--out", "o"], "--augment must be at least 1"],
    [["--exclude", "t.jsonl"], "--exclude needs --input or --synthetic"],
    [["--synthetic", "0", "--out", "o"], "--synthetic must be at least 1"],
  ];
  for (const [args, msg] of bad) {
    const e = assertThrows(() => parseCli(args));
    assert(e.message.includes(msg), `${args.join(" ")}: ${e.message}`);
  }
});

Deno.test("build: a tab-separated .tsv file builds into problems", async () => {
  const dir = await tempDir();
  const tsv = `${dir}/train.tsv`;
  await Deno.writeTextFile(
    tsv,
    "question\tanswer\n" +
      "Tom has 4 cards, and gets 5 more. How many now?\tHe has 4 + 5 = <<4+5=9>>9. #### 9\n" +
      "Mia reads 6 pages a day for 2 days. How many pages?\t6 * 2 = <<6*2=12>>12 #### 12\n",
  );
  const s = await buildDataset({ out: `${dir}/out`, splits: [{ name: "train", inputs: [tsv] }] });
  assertEquals(s.manifest.splits.train.counts.read, 2);
  assertEquals(s.manifest.splits.train.counts.kept, 2);
  assertEquals(await ids(`${dir}/out`, "train"), ["train.tsv:2", "train.tsv:3"]);
});

Deno.test("build: a synthetic-only split, recorded in the manifest, the same bytes twice", async () => {
  const dir = await tempDir();
  const opts = {
    splits: [{
      name: "train",
      inputs: [],
      synthetic: { n: 300, seed: 4, minSteps: 2, maxSteps: 4 },
    }],
    tokenizer: "compact",
  };
  const a = await buildDataset({ out: `${dir}/a`, ...opts });
  const b = await buildDataset({ out: `${dir}/b`, ...opts });
  const info = a.manifest.splits.train;
  assertEquals(info.counts.read, 300);
  assertEquals(info.counts.dropped, 0);
  assertEquals(info.sources, []);
  assertEquals(Object.keys(info.stepHistogram).sort(), ["2", "3", "4"]);
  assertEquals(info.synthetic!.n, 300);
  assertEquals(info.synthetic!.families.length, 7);
  assertEquals(info.synthetic!.sha256, b.manifest.splits.train.synthetic!.sha256);
  assertEquals(info.shards[0].sha256, b.manifest.splits.train.shards[0].sha256);
  assertEquals((await ids(`${dir}/a`, "train"))[0], "synthetic:4:1");
  // The manifest reads back with the new fields.
  assertEquals((await readManifest(`${dir}/a`)).splits.train.synthetic, info.synthetic);
  assert(formatSummary(a.manifest).includes("synthetic records"));
  // Another seed: other records.
  const c = await buildDataset({
    out: `${dir}/c`,
    splits: [{ name: "train", inputs: [], synthetic: { n: 300, seed: 5 } }],
  });
  assert(c.manifest.splits.train.synthetic!.sha256 !== info.synthetic!.sha256);
});

Deno.test("build: input problems with variants, near copies of excluded questions dropped", async () => {
  const dir = await tempDir();
  const { train, evalFile } = await files(dir);
  const s = await buildDataset({
    out: `${dir}/out`,
    splits: [{
      name: "train",
      inputs: [train],
      augment: { variants: 3, seed: 2 },
      exclude: [evalFile],
      synthetic: { n: 5, seed: 1 },
    }],
  });
  const info = s.manifest.splits.train;
  const got = await ids(`${dir}/out`, "train");
  // Line 2 (the plums) is a near copy of the evaluation question: neither it nor variants.
  assertEquals(got.filter((id) => id.startsWith("train.jsonl:2")), []);
  assertEquals(got.filter((id) => /^train\.jsonl:1(#|$)/.test(id)).length, 4);
  assertEquals(got.filter((id) => id.startsWith("synthetic:")).length, 5);
  assertEquals(got[0], "train.jsonl:1");
  assertEquals(got[1], "train.jsonl:1#aug1");
  assertEquals(info.augment!.problems, 2);
  assertEquals(info.augment!.augmented, 2);
  assertEquals(info.augment!.share, 1);
  assertEquals(info.augment!.made, got.filter((id) => id.includes("#aug")).length);
  const evalSum = await crypto.subtle.digest("SHA-256", await Deno.readFile(evalFile));
  assertEquals(info.exclude, {
    files: [evalFile],
    sha256: [Array.from(new Uint8Array(evalSum), (b) => b.toString(16).padStart(2, "0")).join("")],
    questions: 1,
    threshold: 0.3,
    dropped: 1,
  });
  assertEquals(info.counts.read, got.length);
  assertEquals(info.counts.dropped, 0);
  const table = formatSummary(s.manifest);
  assert(table.includes("augmented problems") && table.includes("2/2 (100.0%)"), table);
  assert(table.includes("excluded near copies"), table);
});

Deno.test("build: --exclude takes a built dataset directory and keeps out the questions of all its splits", async () => {
  const dir = await tempDir();
  const { train, evalFile } = await files(dir);
  const cows = `${dir}/cows.jsonl`;
  await Deno.writeTextFile(
    cows,
    JSON.stringify({
      question:
        "A farm has 15 cows. Each cow eats 20 kilograms of hay a day. How much hay do the cows eat?",
      answer: "The cows eat 15 * 20 = <<15*20=300>>300 kilograms of hay.\n#### 300",
    }) + "\n",
  );
  // An earlier build: the plums in its test split, the cows in its valid split.
  const held = `${dir}/held`;
  await buildDataset({
    out: held,
    splits: [{ name: "test", inputs: [evalFile] }, { name: "valid", inputs: [cows] }],
    tokenizer: "compact",
  });
  const s = await buildDataset({
    out: `${dir}/out`,
    splits: [{ name: "train", inputs: [train], exclude: [held] }],
    tokenizer: "compact",
  });
  assertEquals(await ids(`${dir}/out`, "train"), ["train.jsonl:1"]);
  const info = s.manifest.splits.train.exclude!;
  const sum = await crypto.subtle.digest("SHA-256", await Deno.readFile(`${held}/manifest.json`));
  assertEquals(info, {
    files: [held],
    sha256: [Array.from(new Uint8Array(sum), (b) => b.toString(16).padStart(2, "0")).join("")],
    questions: 2,
    threshold: 0.3,
    dropped: 2,
  });
  const excluding = (path: string) =>
    buildDataset({
      out: `${dir}/out2`,
      splits: [{ name: "train", inputs: [train], exclude: [path] }],
      tokenizer: "compact",
    });
  // A directory that is no dataset, and a dataset whose records file is damaged, are named.
  await Deno.mkdir(`${dir}/notes`);
  await assertRejects(
    () => excluding(`${dir}/notes`),
    InputError,
    `${dir}/notes: is a directory but not a dataset (it has no manifest.json); give a file of ` +
      "questions, or a dataset directory that deno task build-dataset wrote",
  );
  const records = `${held}/${(await readManifest(held)).splits.valid.records}`;
  await Deno.writeTextFile(records, '{"index": 0, "id": "cows.jsonl:1"}\n');
  const e = await assertRejects(() => excluding(held), InputError);
  assertEquals([e.file, e.line, e.field], [records, 1, "question"]);
  assert(e.message.includes("the records file is damaged"), e.message);
  // The advice is the command that rebuilds that split, and what else to do; it ended in
  // "or give another" before.
  assert(
    e.message.endsWith(
      `rebuild split valid with deno task build-dataset --out ${held} --split valid --input ` +
        `${cows}, or give another --exclude`,
    ),
    e.message,
  );
  await Deno.remove(`${held}/manifest.json`);
  await Deno.writeTextFile(`${held}/manifest.json`, "{");
  const m = await assertRejects(() => excluding(held), InputError);
  assert(
    m.message.startsWith(`${held}: a dataset directory whose manifest cannot be read`) &&
      m.message.endsWith("or give another --exclude"),
    m.message,
  );
});

Deno.test("build: generated records that are near copies of excluded questions go too", async () => {
  const dir = await tempDir();
  // Half of the generator's own questions, as an evaluation file would hold them.
  const made = [...generate({ n: 40, seed: 7 })];
  const held = made.slice(0, 20).map((p) =>
    JSON.stringify({ question: p.question, answer: `${p.rationale}\n#### ${p.answer}` })
  );
  await Deno.writeTextFile(`${dir}/held.jsonl`, held.join("\n") + "\n");
  const s = await buildDataset({
    out: `${dir}/out`,
    splits: [{
      name: "train",
      inputs: [],
      synthetic: { n: 40, seed: 7 },
      exclude: [`${dir}/held.jsonl`],
    }],
    tokenizer: "compact",
  });
  const info = s.manifest.splits.train;
  assert(info.exclude!.dropped >= 20, `dropped ${info.exclude!.dropped}`);
  assertEquals(info.counts.read, 40 - info.exclude!.dropped);
  const kept = new Set(await ids(`${dir}/out`, "train"));
  for (const p of made.slice(0, 20)) assert(!kept.has(p.id), `${p.id} was excluded`);
  // A bad record of an exclude file names it as one; --on-error does not apply to it.
  await Deno.writeTextFile(`${dir}/bad.jsonl`, `${held[0]}\n{"question": "How many?"}\n`);
  await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/out2`,
        splits: [{ name: "train", inputs: [], synthetic: { n: 5 }, exclude: [`${dir}/bad.jsonl`] }],
        onError: "skip",
      }),
    Error,
    `${dir}/bad.jsonl:2: in an --exclude file`,
  );
  // An exclude file in no format the build reads is named so, not a bad record.
  await Deno.writeTextFile(
    `${dir}/other.json`,
    JSON.stringify([{ prompt: "Ann has 3 pens. How many?", label: 3 }]),
  );
  const e = await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/out3`,
        splits: [{
          name: "train",
          inputs: [],
          synthetic: { n: 5 },
          exclude: [`${dir}/other.json`],
        }],
      }),
    Error,
  );
  assert(
    e.message.startsWith(
      `${dir}/other.json: an --exclude file in a format the build does not read`,
    ),
    e.message,
  );
  assert(e.message.includes("convert the file to one of them"), e.message);
  assert(e.message.includes("and SVAMP (a JSON array of {Body, Question})"), e.message);
  assert(!e.message.includes("fix or remove that record"), e.message);
});

Deno.test("build: a split whose every problem an --exclude file holds says to check the --exclude files", async () => {
  const dir = await tempDir();
  const { train } = await files(dir);
  const e = await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/out`,
        splits: [{ name: "train", inputs: [train], exclude: [train] }],
        tokenizer: "compact",
      }),
    BuildError,
  );
  assertEquals(
    e.message,
    "split train kept no record: 0 records read, 0 skipped as unreadable, 0 dropped, 3 left " +
      "out as near copies of --exclude questions; nothing was written. Every problem of the " +
      "split is a near copy of an --exclude question: check that no --exclude file is one of " +
      "its --input files or a copy of one (--exclude names the evaluation sets to keep out)",
  );
});

Deno.test("build: --exclude reads the evaluation sets without a CoT: SVAMP, MultiArith and GSM-Hard", async () => {
  const dir = await tempDir();
  const { train } = await files(dir);
  // The plums question of TRAIN, as each evaluation set would hold a near copy of it.
  const body = "Dana has 48 plums. She gives a third of them to her cousin and eats 7";
  const question = "How many plums are left?";
  const sets: Record<string, string> = {
    "svamp.json": JSON.stringify([
      { ID: "x-1", Body: "Omar has 3 kites", Question: "How many kites?", Answer: 3 },
      { ID: "x-2", Body: body, Question: question, Equation: "", Answer: 9 },
    ]),
    "multi.jsonl": JSON.stringify({ input: `${body}. ${question}`, target: 9 }) + "\n",
    "hard.jsonl": JSON.stringify({ input: `${body}. ${question}`, code: "", target: 9.0 }) + "\n",
  };
  for (const [name, text] of Object.entries(sets)) {
    await Deno.writeTextFile(`${dir}/${name}`, text);
    const out = `${dir}/out-${name}`;
    const s = await buildDataset({
      out,
      splits: [{ name: "train", inputs: [train], exclude: [`${dir}/${name}`] }],
      tokenizer: "compact",
    });
    const info = s.manifest.splits.train;
    assertEquals(info.exclude!.questions, name === "svamp.json" ? 2 : 1, name);
    assertEquals(info.exclude!.dropped, 1, name);
    assertEquals(await ids(out, "train"), ["train.jsonl:1", "train.jsonl:3"], name);
  }
  // A later bad record of such a file is named as a bad record of an exclude file.
  await Deno.writeTextFile(
    `${dir}/bad.jsonl`,
    JSON.stringify({ input: `${body}. ${question}`, target: 9 }) + '\n{"target": 1}\n',
  );
  await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/out-bad`,
        splits: [{ name: "train", inputs: [train], exclude: [`${dir}/bad.jsonl`] }],
      }),
    Error,
    `${dir}/bad.jsonl:2: in an --exclude file: field "input"`,
  );
});

Deno.test("build: a dropped record counts only the reasons that drop under the CoT form", async () => {
  const dir = await tempDir();
  // No annotation (flags under --cot nl), and steps longer than c (drops with --long-step drop).
  const prose = "She buys four boxes of twelve pens and then she counts every one of them " +
    "slowly on the table by the window, so she has forty eight pens in all of the boxes.";
  const rec = { question: "How many pens?", answer: `${prose}\nShe keeps them all.\n#### 48` };
  const ok = { question: "How many?", answer: "It is 2+3 = <<2+3=5>>5.\n#### 5" };
  await Deno.writeTextFile(`${dir}/t.jsonl`, `${JSON.stringify(rec)}\n${JSON.stringify(ok)}\n`);
  const s = await buildDataset({
    out: `${dir}/out`,
    splits: [{ name: "train", inputs: [`${dir}/t.jsonl`] }],
    cot: "nl",
    k: 2,
    c: 24,
    longStep: "drop",
    tokenizer: "compact",
  });
  const counts = s.manifest.splits.train.counts;
  assertEquals(counts.dropped, 1);
  assertEquals(counts.droppedByReason, { step_too_long: 1 });
});

Deno.test("build: bad generator options and missing exclude files fail before anything is written", async () => {
  const dir = await tempDir();
  await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/x`,
        splits: [{ name: "train", inputs: [], synthetic: { n: 5, minSteps: 4, maxSteps: 2 } }],
      }),
    BuildError,
    "option splits.0.synthetic.minSteps",
  );
  await assertRejects(
    () => buildDataset({ out: `${dir}/x`, splits: [{ name: "train", inputs: [] }] }),
    BuildError,
    "give at least one input file or synthetic records",
  );
  await assertRejects(
    () =>
      buildDataset({
        out: `${dir}/x`,
        splits: [{ name: "train", inputs: [], synthetic: { n: 5 }, exclude: [`${dir}/nope`] }],
      }),
    BuildError,
    "file of questions to exclude not found",
  );
  assertEquals([...Deno.readDirSync(dir)], []);
});

Deno.test("cli: --synthetic with held-out families and steps, and --augment, end to end", async () => {
  const dir = await tempDir();
  const { train, evalFile } = await files(dir);
  const a = await cli([
    "--synthetic",
    "200",
    "--steps",
    "1..3",
    "--families",
    "shopping,ages",
    "--seed",
    "3",
    "--tokenizer",
    "compact",
    "--out",
    `${dir}/d`,
  ]);
  assertEquals(a.code, 0, a.stderr);
  assert(a.stdout.includes("synthetic records"), a.stdout);
  const b = await cli([
    "--synthetic",
    "100",
    "--steps",
    "4..6",
    "--exclude-families",
    "shopping,ages",
    "--seed",
    "4", // the same seed as train's would repeat its ids (synthetic:3:1 ...): refused
    "--split",
    "test",
    "--out",
    `${dir}/d`,
  ]);
  assertEquals(b.code, 0, b.stderr);
  const m = await readManifest(`${dir}/d`);
  assertEquals(Object.keys(m.splits.train.stepHistogram).sort(), ["1", "2", "3"]);
  assertEquals(Object.keys(m.splits.test.stepHistogram).sort(), ["4", "5", "6"]);
  assertEquals(m.splits.test.synthetic!.families, [
    "travel",
    "sharing",
    "earnings",
    "cooking",
    "schedule",
  ]);
  // The questions of the two splits do not overlap.
  const q = (o: { n: number; seed: number }, fam: string[], steps: [number, number]) =>
    new Set(
      [...generate({ ...o, families: fam as never, minSteps: steps[0], maxSteps: steps[1] })].map((
        p,
      ) => p.question),
    );
  const trainQ = q({ n: 200, seed: 3 }, ["shopping", "ages"], [1, 3]);
  const testQ = q({ n: 100, seed: 4 }, m.splits.test.synthetic!.families, [4, 6]);
  assert([...testQ].every((x) => !trainQ.has(x)));

  const c = await cli([
    "--input",
    train,
    "--augment",
    "2",
    "--exclude",
    evalFile,
    "--out",
    `${dir}/e`,
  ]);
  assertEquals(c.code, 0, c.stderr);
  assert(c.stdout.includes("variants added"), c.stdout);
  assert(c.stdout.includes("excluded near copies"), c.stdout);
  const me = await readManifest(`${dir}/e`);
  assertEquals(me.splits.train.augment!.variants, 2);
  assertEquals(me.splits.train.exclude!.dropped, 1);
});

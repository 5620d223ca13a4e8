import { tempDir } from "./_tmp.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { parse } from "csv-parse/sync";
import { IGNORE, packRecord } from "../pipeline/pack.ts";
import { getTensor, readSafetensors } from "../base/safetensors.ts";
import { buildId, REPORT_COLUMNS, SplitWriter, StagedDir } from "../pipeline/writer.ts";
import {
  type Manifest,
  ManifestError,
  manifestText,
  parseManifest,
  readManifest,
} from "../pipeline/manifest.ts";
import { SHARD_TENSORS } from "../pipeline/shard.ts";
import { charTokenizer, ids, record } from "./_fake_tokenizer.ts";

const tok = charTokenizer();
const opts = { k: 2, c: 3, cot: "math" as const, longStep: "truncate" as const };

/** Five records: ok, ok with 3 steps, truncated, dropped by validation, ok with 1 step. */
function records() {
  return [
    record({ line: 1, question: "A?", math: ["ab", "c"], answer: "1" }),
    record({ line: 2, question: "Bee?", math: ["d", "e", "fg"], answer: "22" }),
    record({ line: 3, question: "C", math: ["hijk"], answer: "3" }),
    record({ line: 4, question: "D?", status: "dropped", reasons: ["bad_arithmetic"] }),
    record({ line: 5, question: "Eeee?", math: ["x"], answer: "5" }),
  ];
}

async function writeSplit(dir: string, shardSize: number) {
  const w = await SplitWriter.open(dir, "train", { k: 2, c: 3, pad: 1000, cot: "math", shardSize });
  for (const r of records()) await w.add(r, packRecord(r, tok, opts));
  return await w.finish(2);
}

Deno.test("writer: shards hold the ragged and padded tensors of the kept records", async () => {
  const dir = await tempDir();
  const res = await writeSplit(dir, 3);
  // Final names carry the build id, a hash of the content; the provisional ones are gone.
  const id = buildId(res.shards.map((s) => s.sha256), res.recordsSha256!, res.reportSha256!);
  assertEquals(res.shards.map((s) => [s.file, s.records]), [
    [`train-${id}-00000.safetensors`, 3],
    [`train-${id}-00001.safetensors`, 1],
  ]);
  assertEquals([res.records, res.report], [`train-${id}.records.jsonl`, `train-${id}.report.csv`]);
  assertEquals(
    [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
    SplitWriter.files(res).sort(),
  );
  const f = await readSafetensors(`${dir}/${res.shards[0].file}`);
  assertEquals(Object.keys(f.tensors), [...SHARD_TENSORS]);
  assertEquals(Array.from(getTensor(f, "record_index", "I32", [3])), [0, 1, 2]);
  assertEquals(Array.from(getTensor(f, "question_offsets", "I32", [4])), [0, 3, 8, 10]);
  assertEquals(Array.from(getTensor(f, "question_ids", "I32")), ids("A?\nBee?\nC\n"));
  assertEquals(Array.from(getTensor(f, "record_step_offsets", "I32", [4])), [0, 2, 5, 6]);
  const stepOff = getTensor(f, "step_offsets", "I32", [7]);
  const stepIds = getTensor(f, "step_ids", "I32");
  const step = (s: number) => Array.from(stepIds.subarray(stepOff[s], stepOff[s + 1]));
  assertEquals(step(4), ids("fg\n"));
  assertEquals(step(5), ids("hijk\n")); // the ragged steps keep the whole step
  assertEquals(Array.from(getTensor(f, "answer_offsets", "I32")), [0, 6, 13, 19]);

  // Padded lotus layout: rows right-padded with PAD, labels with -100.
  const lens = Array.from(getTensor(f, "lotus_lengths", "I32", [3]));
  const T = Math.max(...lens);
  const x = getTensor(f, "lotus_input_ids", "I32", [3, T]);
  const y = getTensor(f, "lotus_labels", "I32", [3, T]);
  const p0 = packRecord(records()[0], tok, opts).packed!;
  assertEquals(Array.from(x.subarray(0, T)), [...p0.lotusIds, ...Array(T - lens[0]).fill(1000)]);
  assertEquals(Array.from(y.subarray(0, T)), [
    ...p0.lotusLabels,
    ...Array(T - lens[0]).fill(IGNORE),
  ]);
  assertEquals(Array.from(getTensor(f, "lotus_bot", "I32")), [3, 5, 2]);

  // Step targets [N, K, c]: decode record 1's slots back to its step text.
  const tg = getTensor(f, "lotus_step_targets", "I32", [3, 2, 3]);
  const slots = (i: number, k: number) =>
    tok.decode(
      Array.from(tg.subarray(i * 6 + k * 3, i * 6 + k * 3 + 3)).filter((t) => t !== IGNORE),
    );
  assertEquals([slots(1, 0), slots(1, 1)], ["d\n", "e\n"]);
  assertEquals([slots(2, 0), slots(2, 1)], ["hij", ""]); // truncated to c; no block 1

  // cot and nocot rows.
  const cl = getTensor(f, "cot_lengths", "I32", [3]);
  assertEquals(cl[0], p0.cotIds.length);
  const nx = f.tensors.nocot_input_ids;
  assertEquals(Array.from(nx.data.subarray(0, p0.nocotIds.length) as Int32Array), p0.nocotIds);

  // The second shard holds record 4 (record 3 was dropped).
  const g = await readSafetensors(`${dir}/${res.shards[1].file}`);
  assertEquals(Array.from(getTensor(g, "record_index", "I32", [1])), [4]);
});

Deno.test("writer: records.jsonl, report.csv and counts", async () => {
  const dir = await tempDir();
  const res = await writeSplit(dir, 100);
  const lines = (await Deno.readTextFile(`${dir}/${res.records}`)).trimEnd().split("\n")
    .map((l) => JSON.parse(l));
  assertEquals(lines.length, 5);
  assertEquals(lines.map((l) => l.index), [0, 1, 2, 3, 4]);
  assertEquals(lines[2].validation, {
    status: "flagged",
    reasons: ["step_truncated"],
    details: ["step 1: 5 tokens, c = 3"],
  });
  assertEquals(lines[3].validation, {
    status: "dropped",
    reasons: ["bad_arithmetic"],
    details: [],
  });
  assertEquals(lines[3].tokens, null);
  assertEquals(lines[1].tokens, { question: 5, steps: [2, 2, 3], answer: 7 });
  assertEquals(lines[1].math.map((s: { text: string }) => s.text), ["d", "e", "fg"]);
  assertEquals(lines[0].source, { file: "fixture.jsonl", line: 1 });

  const rows = parse(await Deno.readTextFile(`${dir}/${res.report}`)) as string[][];
  assertEquals(rows[0], [...REPORT_COLUMNS]);
  assertEquals(rows.length, 6);
  assertEquals(rows[4].slice(0, 6), [
    "3",
    "fixture:4",
    "fixture.jsonl",
    "4",
    "dropped",
    "bad_arithmetic",
  ]);
  assertEquals(rows[3][4], "flagged");
  assertEquals(rows[3][REPORT_COLUMNS.indexOf("truncated_steps")], "1");
  assertEquals(rows[3].at(-1), ""); // error: only skipped input records have one

  assertEquals(res.counts, {
    read: 5,
    skipped: 2,
    kept: 4,
    ok: 3,
    flagged: 1,
    dropped: 1,
    droppedByReason: { bad_arithmetic: 1 },
    flaggedByReason: { step_truncated: 1 },
  });
  assertEquals(res.stepHistogram, { "1": 2, "2": 1, "3": 1 });
  assertEquals(res.tokens.truncatedSteps, 1);
  assertEquals(res.tokens.question, 3 + 5 + 2 + 6);
  assertEquals(res.tokens.maxStep, 5);
});

function hasNumpy(): boolean {
  try {
    return new Deno.Command("python3", { args: ["-c", "import numpy"], stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}
const HAS_NUMPY = hasNumpy();
if (!HAS_NUMPY) console.log("writer_test: python3 with numpy not found; skipping the numpy check");

Deno.test({
  name: "writer: numpy reads a shard's tensor from the header offsets",
  ignore: !HAS_NUMPY,
}, async (t) => {
  const dir = await tempDir();
  const res = await writeSplit(dir, 100);
  const script = `
import json, struct, sys, numpy as np
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
e = h["lotus_step_targets"]
b, end = e["data_offsets"]
a = np.frombuffer(raw[8 + n + b:8 + n + end], dtype="<i4").reshape(e["shape"])
print(json.dumps({"shape": list(a.shape), "row1": a[1].tolist()}))
`;
  await t.step("python", () => {
    const out = new Deno.Command("python3", {
      args: ["-c", script, `${dir}/${res.shards[0].file}`],
    }).outputSync();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const got = JSON.parse(new TextDecoder().decode(out.stdout));
    assertEquals(got.shape, [4, 2, 3]);
    assertEquals(got.row1, [ids("d\n").concat([IGNORE]), ids("e\n").concat([IGNORE])]);
  });
});

Deno.test("staging: commit moves files in order, removes the unnamed files a build wrote", async () => {
  const out = await tempDir();
  await Deno.writeTextFile(`${out}/t-0123456789ab-00001.safetensors`, "stale, a build's name");
  await Deno.writeTextFile(`${out}/old.records.jsonl`, "stale, the old manifest's");
  await Deno.writeTextFile(`${out}/t-00112233aabb-00000.safetensors`, "named by the manifest");
  await Deno.writeTextFile(`${out}/notes.txt`, "not a dataset file: left alone");
  await Deno.writeTextFile(`${out}/model.safetensors`, "no build's: left alone");
  const st = await StagedDir.open(out);
  await Deno.writeTextFile(`${st.path}/a.report.csv`, "a");
  await Deno.writeTextFile(`${st.path}/manifest.json`, "{}");
  const steps: string[] = [];
  await st.commit(
    ["a.report.csv", "manifest.json"],
    ["a.report.csv", "t-00112233aabb-00000.safetensors"],
    (s) => steps.push(s),
    ["old.records.jsonl", "t-00112233aabb-00000.safetensors"],
  );
  assertEquals(steps, [
    "rename a.report.csv",
    "rename manifest.json",
    "remove old.records.jsonl",
    "remove t-0123456789ab-00001.safetensors",
  ]);
  const names = [...Deno.readDirSync(out)].map((e) => e.name).sort();
  assertEquals(names, [
    "a.report.csv",
    "manifest.json",
    "model.safetensors",
    "notes.txt",
    "t-00112233aabb-00000.safetensors",
  ]);
});

Deno.test("staging: abort leaves the output directory untouched", async () => {
  const out = await tempDir();
  await Deno.writeTextFile(`${out}/keep.txt`, "k");
  const st = await StagedDir.open(out);
  await Deno.writeTextFile(`${st.path}/half.safetensors`, "xx");
  await st.abort();
  assertEquals([...Deno.readDirSync(out)].map((e) => e.name), ["keep.txt"]);
});

function sampleManifest(): Manifest {
  return {
    format: "lotus-dataset",
    version: 1,
    options: { k: 6, c: 13, cot: "math" },
    tokenizer: {
      kind: "gpt2",
      file: "tokenizer.json",
      sha256: "a".repeat(64),
      vocabSize: 50260,
      special: { eos: 50256, pad: 50256, bot: 50257, eot: 50258, lat: 50259 },
    },
    splits: {},
  };
}

Deno.test("manifest: text is stable and parses back; errors name the field", async () => {
  const m = sampleManifest();
  const text = manifestText(m);
  assertEquals(parseManifest(text), m);
  assertEquals(manifestText(parseManifest(text)), text);
  const bad = JSON.parse(text);
  bad.options.c = 0;
  assertThrows(
    () => parseManifest(JSON.stringify(bad), "m.json"),
    ManifestError,
    'field "options.c"',
  );
  bad.version = 9;
  assertThrows(() => parseManifest(JSON.stringify(bad), "m.json"), ManifestError, "version");
  assertThrows(() => parseManifest("{", "m.json"), ManifestError, "m.json: not valid JSON");
  const dir = await tempDir();
  await assertRejects(() => readManifest(dir), ManifestError, "build the dataset first");
  // A training run, a checkpoint or a file given for a dataset: each is named for what it is.
  const run = await tempDir(), ck = await tempDir(), file = `${run}/plan.json`;
  await Deno.writeTextFile(file, "{}");
  await Deno.writeTextFile(`${ck}/config.json`, '{"lotus": {}}');
  const hf = await tempDir(), ex = await tempDir();
  await Deno.writeTextFile(`${hf}/config.json`, '{"model_type": "gpt2"}');
  await Deno.writeTextFile(`${ex}/lotus.json`, "{}");
  for (
    const [dir, what] of [
      [run, "but a training run: give the dataset it was trained on (the checkpoint's"],
      [ck, "but a checkpoint: give the dataset it was trained on"],
      [ex, "but an export: give the dataset it was trained on"],
      [hf, "but a model directory: give a dataset directory"],
    ]
  ) {
    await assertRejects(() => readManifest(dir), ManifestError, `${dir} is not a dataset`);
    await assertRejects(() => readManifest(dir), ManifestError, what);
  }
  await assertRejects(() => readManifest(file), ManifestError, `${file} is a file, not a`);
  await Deno.writeTextFile(`${dir}/manifest.json`, text);
  await assertRejects(() => readManifest(dir), ManifestError, "tokenizer.json, which is missing");
  await Deno.writeTextFile(`${dir}/tokenizer.json`, "{}");
  assertEquals((await readManifest(dir)).options.k, 6);
});

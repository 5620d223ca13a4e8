import { tempDir } from "./_tmp.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { buildDataset } from "../pipeline/build.ts";
import { type Manifest, MANIFEST_FILE, readManifest } from "../pipeline/manifest.ts";
import { rebuildCommand } from "../pipeline/rebuild_command.ts";
import { parseCli } from "../cli/build_dataset.ts";
import { encodeSafetensors, readSafetensors, type Tensor } from "../base/safetensors.ts";
import { DatasetError, loadSplit, type SplitData } from "../train/dataset.ts";
import { loadEvalItems } from "../eval/items.ts";
import { fixtureTask } from "./_task.ts";
import { ROOT } from "./_run.ts";
import { train } from "../train/recipe.ts";
import { parseTrainArgs } from "../cli/train.ts";
import { evalCommand, parseEvalArgs } from "../cli/eval.ts";
import { CliError } from "../cli/_common.ts";

const load = loadSplit;

/** Input files of the task, written once. */
const inputs = (async () => {
  const d = await tempDir();
  const files = { small: `${d}/small.jsonl`, big: `${d}/big.jsonl`, valid: `${d}/valid.jsonl` };
  await Deno.writeTextFile(files.small, fixtureTask(40, 1));
  await Deno.writeTextFile(files.big, fixtureTask(120, 2));
  await Deno.writeTextFile(files.valid, fixtureTask(12, 3));
  return files;
})();

/** A dataset of the task in `out`: train from `train`, valid, shards of 16 records. */
async function build(out: string, train: "small" | "big", hooks = {}) {
  const f = await inputs;
  return await buildDataset({
    out,
    splits: [{ name: "train", inputs: [f[train]] }, { name: "valid", inputs: [f.valid] }],
    tokenizer: "compact",
    k: 2,
    c: 10,
    shardSize: 16,
  }, hooks);
}

/** A fresh copy of the small dataset. */
async function fresh(): Promise<string> {
  const out = `${await tempDir()}/ds`;
  await build(out, "small");
  return out;
}

/** Rewrite a shard with tensor `name` edited (a valid safetensors file with other content). */
async function tamper(path: string, name: string, edit: (a: Int32Array) => void) {
  const f = await readSafetensors(path);
  const tensors: Record<string, Tensor> = {};
  for (const [n, t] of Object.entries(f.tensors)) {
    tensors[n] = { dtype: t.dtype, shape: t.shape, data: (t.data as Int32Array).slice() };
  }
  edit(tensors[name].data as Int32Array);
  await Deno.writeFile(path, encodeSafetensors(tensors));
}

async function editManifest(dir: string, edit: (m: Manifest) => void) {
  const m = JSON.parse(await Deno.readTextFile(`${dir}/${MANIFEST_FILE}`));
  edit(m);
  await Deno.writeTextFile(`${dir}/${MANIFEST_FILE}`, JSON.stringify(m, null, 2) + "\n");
}

async function firstShard(dir: string): Promise<string> {
  return `${dir}/${(await readManifest(dir)).splits.train.shards[0].file}`;
}

/** Loading fails with a DatasetError whose message has every part. */
async function assertBad(dir: string, parts: string[], verify?: "basic" | "full") {
  const e = await assertRejects(() => load(dir, "train", { verify }), DatasetError);
  for (const p of [...parts, "rebuild"]) {
    assert(e.message.includes(p), `"${p}" not in: ${e.message}`);
  }
}

Deno.test("integrity: a damaged split's advice is the command that rebuilds that split, and it does", async () => {
  const dir = await fresh();
  const f = await inputs;
  await tamper(await firstShard(dir), "question_ids", (a) => a[3] = 1 << 20);
  const command = `deno task build-dataset --out ${dir} --split train --input ${f.small} ` +
    `--shard-size 16`;
  const e = await assertRejects(() => load(dir, "train"), DatasetError);
  assert(e.message.endsWith(`: rebuild split train with ${command}`), e.message);
  // The command as the CLI parses it rebuilds the split as it was, and leaves valid alone. (Run
  // bare, build-dataset --out would have built the default data over train and valid.)
  const built = (await readManifest(dir)).splits.train;
  const opts = parseCli(command.split(" ").slice(3));
  assert(opts !== "help");
  await buildDataset(opts);
  const m = await readManifest(dir);
  assertEquals(m.splits.train.shards.map((s) => s.sha256), built.shards.map((s) => s.sha256));
  assertEquals(m.splits.train.recordsSha256, built.recordsSha256);
  assertEquals(Object.keys(m.splits).sort(), ["train", "valid"]);
  assertEquals(m.splits.valid.sources.map((s) => s.path), [f.valid]);
});

Deno.test("integrity: rebuildCommand gives the options, generated problems and exclusions a split was built with", () => {
  const info = {
    sources: [{ path: "data/my file.jsonl", format: "gsm8k", bytes: 1, sha256: "" }],
    options: {
      format: "gsm8k",
      socratic: "keep" as const,
      longStep: "spill" as const,
      onError: "skip" as const,
      shardSize: 16,
    },
    synthetic: {
      n: 50,
      start: 1,
      seed: 7,
      minSteps: 2,
      maxSteps: 4,
      maxValue: 500,
      digits: 3,
      families: ["ages", "travel"],
      sha256: "",
    },
    exclude: { files: ["t.jsonl"], questions: 1, threshold: 0.3, dropped: 0 },
  } as unknown as Manifest["splits"][string];
  assertEquals(
    rebuildCommand("out/d", "train", info),
    "deno task build-dataset --out out/d --split train --input 'data/my file.jsonl' " +
      "--format gsm8k --socratic keep --long-step spill --on-error skip --synthetic 50 " +
      "--steps 2..4 --max-value 500 --digits 3 --families ages,travel --seed 7 --exclude t.jsonl " +
      "--shard-size 16",
  );
  // What the command line cannot give is said after the command.
  const library = { ...info, synthetic: { ...info.synthetic!, start: 51 } };
  assert(
    rebuildCommand("out/d", "train", library).endsWith(
      "--shard-size 16 (the command line cannot give generated problems numbered from 51: " +
        "build the split through buildDataset with the manifest's options)",
    ),
  );
});

Deno.test("integrity: a token id outside [0, vocabSize) is refused, tensor named", async () => {
  const dir = await fresh();
  const shard = await firstShard(dir);
  const vocab = (await readManifest(dir)).tokenizer.vocabSize;
  await tamper(shard, "question_ids", (a) => a[3] = vocab);
  await assertBad(dir, [shard, "question_ids", `${vocab}`]);
  await tamper(shard, "question_ids", (a) => a[3] = 1);
  await tamper(shard, "step_ids", (a) => a[0] = -7);
  await assertBad(dir, [shard, "step_ids", "-7"]);
  await tamper(shard, "step_ids", (a) => a[0] = 1);
  await tamper(shard, "lotus_input_ids", (a) => a[5] = vocab + 100);
  await assertBad(dir, [shard, "lotus_input_ids"]);
});

Deno.test("integrity: corrupted offsets are refused instead of emptying examples", async () => {
  for (
    const [name, edit] of [
      ["question_offsets", (a: Int32Array) => a[2] = a[1] - 1], // decreasing
      ["answer_offsets", (a: Int32Array) => a[0] = 1], // not starting at 0
      ["step_offsets", (a: Int32Array) => a[a.length - 1] -= 1], // not ending at the length
      ["record_step_offsets", (a: Int32Array) => a[1] = -3],
    ] as const
  ) {
    const dir = await fresh();
    const shard = await firstShard(dir);
    await tamper(shard, name, edit);
    await assertBad(dir, [shard, name]);
  }
});

Deno.test("integrity: counts, record_index, shapes and sizes must match the manifest", async () => {
  let dir = await fresh();
  await editManifest(dir, (m) => m.splits.train.counts.kept += 1);
  await assertBad(dir, ["train", "records"]);

  dir = await fresh();
  await editManifest(dir, (m) => {
    m.splits.train.shards[0].records -= 1; // the split's total stays right
    m.splits.train.shards[1].records += 1;
  });
  await assertBad(dir, [(await readManifest(dir)).splits.train.shards[0].file, "records"]);

  dir = await fresh();
  let shard = await firstShard(dir);
  await tamper(shard, "record_index", (a) => a[1] = 100_000);
  await assertBad(dir, [shard, "record_index"]);

  dir = await fresh();
  await editManifest(dir, (m) => {
    const t = m.splits.train.shards[0].tensors.find((t) => t.name === "cot_input_ids")!;
    t.shape[1] += 1;
  });
  await assertBad(dir, ["cot_input_ids", "shape"]);

  dir = await fresh();
  shard = await firstShard(dir);
  const f = await Deno.open(shard, { append: true });
  await f.write(new Uint8Array(4));
  f.close();
  await assertBad(dir, [shard, "bytes"]);
});

Deno.test("integrity: verify full compares every shard's sha256 and the tokenizer's", async () => {
  const dir = await fresh();
  const shard = await firstShard(dir);
  // In range and consistent: only the hash can tell.
  await tamper(shard, "question_ids", (a) => [a[0], a[1]] = [a[1], a[0]]);
  assertEquals((await load(dir, "train")).examples.length, 40);
  await assertBad(dir, [shard, "sha256"], "full");

  const other = await fresh();
  await Deno.writeTextFile(`${other}/tokenizer.json`, " ", { append: true });
  await assertBad(other, ["tokenizer.json", "sha256"], "full");
});

Deno.test("integrity: eval refuses a records file that disagrees with the manifest", async () => {
  const dir = await fresh();
  const m = await readManifest(dir);
  const path = `${dir}/${m.splits.valid.records}`;
  const lines = (await Deno.readTextFile(path)).trimEnd().split("\n");
  await Deno.writeTextFile(path, lines.slice(0, -2).join("\n") + "\n");
  const e = await assertRejects(() => loadEvalItems(dir, { format: "dataset", split: "valid" }));
  assert(e instanceof Error && e.message.includes(path), String(e));
  assert(e.message.includes("rebuild"), e.message);
  // A last record cut short, as a full disk leaves it: damage to rebuild, not a record to skip.
  await Deno.writeTextFile(path, lines.join("\n").slice(0, -20) + "\n");
  for (const onError of ["throw", "skip"] as const) {
    const cut = await assertRejects(
      () => loadEvalItems(dir, { format: "dataset", split: "valid", onError }),
      DatasetError,
    );
    assert(cut.message.includes(`${path}:${lines.length}: `), cut.message);
    assert(cut.message.includes("the records file is damaged"), cut.message);
    assert(!cut.message.includes("--on-error skip"), cut.message);
  }
});

class Killed extends Error {}

/** Examples as plain arrays, for comparison. */
function plain(d: SplitData) {
  return d.examples.map((e) => [Array.from(e.q), e.steps.map((s) => Array.from(s)), e.index]);
}

Deno.test("commit: a kill before any step of the commit leaves old or new dataset", async () => {
  const refOld = await fresh();
  const refNew = await fresh(); // the same rebuild, not interrupted
  await build(refNew, "big");
  const want = {
    old: plain(await load(refOld, "train")),
    new: plain(await load(refNew, "train")),
  };
  const items = async (dir: string) =>
    (await loadEvalItems(dir, { format: "dataset", split: "train" })).map((i) => i.id);
  const wantItems = { old: await items(refOld), new: await items(refNew) };
  let points = 0;
  for (let kill = 0;; kill++) {
    const out = await fresh();
    let step = 0;
    let finished = false;
    try {
      await build(out, "big", {
        onCommitStep: () => {
          if (step++ === kill) throw new Killed();
        },
      });
      finished = true;
    } catch (e) {
      if (!(e instanceof Killed)) throw e;
    }
    const d = await load(out, "train", { verify: "full" });
    const which = d.examples.length === want.old.length ? "old" : "new";
    assertEquals(d.manifest.splits.train.counts.kept, d.examples.length, `kill at ${kill}`);
    assertEquals(plain(d), want[which], `kill at ${kill}: the ${which} examples`);
    assertEquals(await items(out), wantItems[which], `kill at ${kill}: the ${which} records`);
    if (finished) {
      assertEquals(which, "new");
      break;
    }
    points++;
  }
  assert(points >= 3, `the commit has ${points} steps`);
});

Deno.test("commit: after a SIGKILLed build, the next build cleans up", async () => {
  const kept = { old: (await load(await fresh(), "train")).examples.length };
  const huge = `${await tempDir()}/huge.jsonl`;
  await Deno.writeTextFile(huge, fixtureTask(3000, 4));
  let killed = 0;
  for (const delayMs of [0, 100, 250, 500]) {
    const out = await fresh();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        `${ROOT}cli/build_dataset.ts`,
        ...["--input", huge, "--split", "train", "--shard-size", "256", "--out", out],
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let seen = false;
    for (let i = 0; i < 4000 && !seen; i++) {
      seen = (await Array.fromAsync(Deno.readDir(out))).some((e) => e.name.startsWith(".staging-"));
      if (!seen) await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, delayMs));
    try {
      child.kill("SIGKILL");
    } catch { /* it finished first */ }
    if (!(await child.status).success) killed++;
    const d = await load(out, "train", { verify: "full" });
    assert([kept.old, 3000].includes(d.examples.length), `${d.examples.length} examples`);
    assertEquals(d.examples.length, d.manifest.splits.train.counts.kept);
    await loadEvalItems(out, { format: "dataset", split: "train" }); // the records agree too
    await build(out, "big");
    const extra = (await Array.fromAsync(Deno.readDir(out))).map((e) => e.name)
      .filter((n) =>
        n.startsWith(".") || (n !== "manifest.json" && !n.startsWith("t") &&
          !n.startsWith("valid"))
      );
    assertEquals(extra, [], `after a kill ${delayMs} ms in`);
    const m = await readManifest(out);
    const named = new Set([MANIFEST_FILE, m.tokenizer.file]);
    for (const s of Object.values(m.splits)) {
      for (const x of [s.records, s.report, ...s.shards.map((x) => x.file)]) named.add(x);
    }
    const all = (await Array.fromAsync(Deno.readDir(out))).map((e) => e.name);
    assertEquals(all.filter((n) => !named.has(n)), [], "only the files the manifest names");
  }
  assert(killed > 0, "at least one build was killed before it finished");
});

Deno.test("integrity: train refuses a tokenizer.json replaced or cut short, in basic mode too", async () => {
  const other = `${await tempDir()}/other`;
  await buildDataset({
    out: other,
    splits: [{ name: "train", inputs: [(await inputs).big] }],
    tokenizer: "compact",
  });
  const otherTokenizer = await Deno.readTextFile(`${other}/tokenizer.json`);
  for (
    const [what, edit] of [
      ["another dataset's", () => otherTokenizer],
      ["cut short", (text: string) => text.slice(0, 100)],
    ] as const
  ) {
    const dir = await fresh();
    const path = `${dir}/tokenizer.json`;
    await Deno.writeTextFile(path, edit(await Deno.readTextFile(path)));
    const out = `${await tempDir()}/run`;
    const e = await assertRejects(
      () => train({ data: dir, out, quiet: true, train: { steps: 1, batch: 2, mode: "cot" } }),
      DatasetError,
    );
    const m = await readManifest(dir);
    const first = `deno task build-dataset --out NEW --tokenizer ${m.tokenizer.kind} ` +
      `--k ${m.options.k} --c ${m.options.c} --cot ${m.options.cot} --split train --input`;
    for (const part of [path, "sha256", `rebuild it into a new directory NEW`, first]) {
      assert(e.message.includes(part), `${what}: "${part}" not in: ${e.message}`);
    }
  }
});

Deno.test("integrity: train refuses a manifest whose tokenizer ids disagree with tokenizer.json", async () => {
  for (
    const [field, edit] of [
      ["special.bot", (m: Manifest) => m.tokenizer.special.bot = 5],
      ["vocabSize", (m: Manifest) => m.tokenizer.vocabSize += 100],
    ] as const
  ) {
    const dir = await fresh(), out = `${await tempDir()}/run`;
    await editManifest(dir, edit);
    const e = await assertRejects(
      () => train({ data: dir, out, quiet: true, train: { steps: 1, batch: 2, mode: "cot" } }),
      DatasetError,
    );
    for (const part of [`${dir}/manifest.json: field "tokenizer.${field}" is `, "rebuild it"]) {
      assert(e.message.includes(part), `"${part}" not in: ${e.message}`);
    }
  }
});

Deno.test("integrity: train and eval refuse a damaged dataset; full adds hashes", async () => {
  const dir = await fresh();
  const shard = await firstShard(dir);
  await tamper(shard, "question_ids", (a) => [a[0], a[1]] = [a[1], a[0]]); // only a hash tells
  const out = `${await tempDir()}/run`;
  const args = (verify: string) => {
    const a = parseTrainArgs(["--data", dir, "--out", out, "--verify-data", verify, "--quiet"]);
    assert(a !== "help");
    return a;
  };
  assertEquals(args("basic").verifyData, "basic");
  assertThrows(() => args("some"), CliError, "--verify-data must be one of basic|full");
  const e = await assertRejects(
    () => train({ data: dir, out, quiet: true, verifyData: args("full").verifyData }),
    DatasetError,
  );
  assert(e.message.includes(shard) && e.message.includes("sha256"), e.message);

  const ev = parseEvalArgs(["--checkpoint", out, "--data", dir, "--split", "train"]);
  assert(ev !== "help");
  assertEquals(ev.verifyData, "basic");
  await assertRejects(
    () => evalCommand({ ...ev, verifyData: "full" }, () => {}),
    DatasetError,
    "sha256",
  );
  await tamper(shard, "answer_ids", (a) => a[0] = 1 << 20); // basic catches this one
  await assertRejects(() => train({ data: dir, out, quiet: true }), DatasetError, "answer_ids");
  await assertRejects(() => evalCommand(ev, () => {}), DatasetError, "answer_ids");
});

/**
 * Loading verifies a checkpoint, so eval, infer, export and resume never accept an
 * inconsistent one: damaged safetensors offsets, a config.json whose GPT-2 fields, "lotus"
 * section and weights disagree, special ids outside the vocabulary or not distinct, a
 * tokenizer.json from another checkpoint, non-finite weights, an optimizer file of another
 * model. Each damage is refused by loadCheckpoint, by both inference backends, by export and
 * by the command lines, with a CheckpointError naming the file and the field.
 */
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { tempDir } from "./_tmp.ts";
import { FIXTURE_QUESTIONS, recordChecksums, tinyCheckpoint } from "./_export_fixture.ts";
import { ROOT, runDeno } from "./_run.ts";
import {
  CheckpointError,
  CHECKSUMS_FILE,
  loadCheckpoint,
  saveCheckpoint,
} from "../model/checkpoint.ts";
import { exportCheckpoint, ExportError } from "../export/export.ts";
import { checkExport } from "../export/export_check.ts";
import { openInference } from "../infer/inference.ts";
import { readSafetensors, writeSafetensors } from "../base/safetensors.ts";
import { fitCompactTokenizer, gpt2Tokenizer } from "../pipeline/tokenizer.ts";
import { evalCommand, parseEvalArgs } from "../cli/eval.ts";

type Json = Record<string, unknown>;

let good: Promise<string> | null = null;
/** One sound tiny checkpoint per test process. */
function goodCheckpoint(): Promise<string> {
  good ??= (async () => {
    const d = await tempDir();
    await tinyCheckpoint(`${d}/ck`, { k: 2, c: 3 });
    return `${d}/ck`;
  })();
  return good;
}

/**
 * A copy of the sound checkpoint, damaged by `damage`. Its checksums.json is written again
 * for the damaged files unless `keepSums`: the checks behind the save's record are tested on
 * files the record agrees with.
 */
async function damaged(
  damage: (dir: string) => Promise<void>,
  keepSums = false,
): Promise<string> {
  const src = await goodCheckpoint(), dir = `${await tempDir()}/ck`;
  await Deno.mkdir(dir);
  for (const e of Deno.readDirSync(src)) {
    if (e.isFile) await Deno.copyFile(`${src}/${e.name}`, `${dir}/${e.name}`);
  }
  await damage(dir);
  if (!keepSums) await recordChecksums(dir);
  return dir;
}

async function editConfig(dir: string, edit: (cfg: Json, lotus: Json) => void): Promise<void> {
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`)) as Json;
  edit(cfg, cfg.lotus as Json);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(cfg, null, 2));
}

/** Rewrite the JSON header of a safetensors file, keeping its data bytes. */
async function editHeader(path: string, edit: (h: Record<string, Json>) => void): Promise<void> {
  const bytes = await Deno.readFile(path);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  edit(header);
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const h = new TextEncoder().encode(json), data = bytes.subarray(8 + n);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  await Deno.writeFile(path, out);
}

/** Every tensor of model.safetensors mapped through `f` (same names, shapes, metadata). */
async function mapWeights(dir: string, f: (x: Float32Array, name: string) => void) {
  const st = await readSafetensors(`${dir}/model.safetensors`);
  const tensors = { ...st.tensors };
  for (const [name, t] of Object.entries(tensors)) {
    const data = (t.data as Float32Array).slice();
    f(data, name);
    tensors[name] = { ...t, data };
  }
  await writeSafetensors(`${dir}/model.safetensors`, tensors, st.metadata);
}

/** The damages, each with the parts its error message must hold. */
const CASES: [string, (dir: string) => Promise<void>, string[]][] = [
  [
    "overlapping tensor offsets in model.safetensors",
    (dir) =>
      editHeader(`${dir}/model.safetensors`, (h) => {
        h["transformer.ln_f.bias"].data_offsets = h["transformer.ln_f.weight"].data_offsets;
      }),
    ["model.safetensors", `"transformer.ln_f`, "overlap"],
  ],
  [
    "a config.json without its lotus section (a Hugging Face directory)",
    (dir) => editConfig(dir, (cfg) => delete cfg.lotus),
    ["config.json", `no "lotus" section`, "not a checkpoint", "--init"],
  ],
  [
    "n_head of config.json contradicts lotus.model.nHead",
    (dir) => editConfig(dir, (cfg) => cfg.n_head = 4),
    ["config.json", `"n_head" is 4`, `"lotus.model.nHead" is 2`],
  ],
  [
    "n_layer of config.json contradicts lotus.model.nLayer",
    (dir) => editConfig(dir, (cfg) => cfg.n_layer = 3),
    ["config.json", `"n_layer" is 3`, `"lotus.model.nLayer" is 2`],
  ],
  [
    "fewer layers in config.json than in the weights",
    (dir) =>
      editConfig(dir, (cfg, lotus) => {
        cfg.n_layer = 1;
        (lotus.model as Json).nLayer = 1;
      }),
    ["model.safetensors", `tensor "transformer.h.1.`, "lotus.model.nLayer"],
  ],
  [
    "more layers in config.json than in the weights",
    (dir) =>
      editConfig(dir, (cfg, lotus) => {
        cfg.n_layer = 3;
        (lotus.model as Json).nLayer = 3;
      }),
    ["model.safetensors", `tensor "transformer.h.2.`, "missing"],
  ],
  [
    "vocab_size of config.json contradicts the lotus section",
    (dir) => editConfig(dir, (cfg) => cfg.vocab_size = 50260),
    ["config.json", `"vocab_size" is 50260`, `"lotus.model.vocabSize"`],
  ],
  [
    "n_positions of config.json contradicts the lotus section",
    (dir) => editConfig(dir, (cfg) => cfg.n_positions = 1024),
    ["config.json", `"n_positions" is 1024`, `"lotus.model.maxPositions" is 128`],
  ],
  [
    "a negative EOS id",
    (dir) =>
      editConfig(dir, (cfg, lotus) => {
        const sp = lotus.special as Json;
        sp.eos =
          sp.pad =
          cfg.eos_token_id =
          cfg.bos_token_id =
          cfg.pad_token_id =
            -1;
      }),
    ["config.json", `"lotus.special.eos" is -1`, "[0, "],
  ],
  [
    "LAT and BOT share an id",
    (dir) =>
      editConfig(dir, (_cfg, lotus) => {
        const sp = lotus.special as Json;
        sp.lat = sp.bot;
      }),
    ["config.json", `"lotus.special.lat"`, `"lotus.special.bot"`, "distinct"],
  ],
  [
    "a tokenizer.json from another checkpoint",
    (dir) =>
      Deno.writeTextFile(
        `${dir}/tokenizer.json`,
        fitCompactTokenizer(["Other words entirely, 12 + 30 = 42.\n"]).toJSON(),
      ),
    ["tokenizer.json", `"lotus.model.vocabSize"`, "does not belong"],
  ],
  [
    "all weights NaN",
    (dir) => mapWeights(dir, (x) => x.fill(NaN)),
    ["model.safetensors", `tensor "transformer.wte.weight"`, "NaN", "non-finite"],
  ],
  [
    "one infinite weight deep in the last layer",
    (dir) => mapWeights(dir, (x, name) => name.endsWith("h.1.mlp.c_proj.weight") && (x[5] = -1e39)),
    ["model.safetensors", `"transformer.h.1.mlp.c_proj.weight"`, "[5]", "-Infinity"],
  ],
  [
    "an optimizer.safetensors of another model",
    (dir) =>
      writeSafetensors(`${dir}/optimizer.safetensors`, {
        m: { dtype: "F32", shape: [10], data: new Float32Array(10) },
        v: { dtype: "F32", shape: [10], data: new Float32Array(10) },
      }),
    ["optimizer.safetensors", "[10]", "parameters"],
  ],
];

for (const [what, damage, parts] of CASES) {
  Deno.test(`a checkpoint with ${what} is refused by load, infer, eval and export`, async () => {
    const dir = await damaged(damage);
    const has = (e: Error, where: string) => {
      for (const p of parts) {
        assert(e.message.includes(p), `${where}: "${e.message}" lacks ${JSON.stringify(p)}`);
      }
    };
    has(await assertRejects(() => loadCheckpoint(dir), CheckpointError), "loadCheckpoint");
    has(await assertRejects(() => openInference(dir, { backend: "cpu" })), "infer (cpu)");
    has(
      await assertRejects(() => exportCheckpoint(dir, `${dir}-export`), ExportError),
      "export",
    );
    await assertRejects(() => Deno.stat(`${dir}-export`));
  });
}

Deno.test("a save records each file's sha256: a file changed since, even to finite values, is refused", async () => {
  // Every damage above, with the record kept: the record names the changed file first.
  for (const [what, damage] of CASES) {
    if (what.includes("optimizer")) continue; // the sound checkpoint has none: no record
    const dir = await damaged(damage, true);
    const e = await assertRejects(() => loadCheckpoint(dir), CheckpointError);
    assert(e.message.includes("changed since it was saved"), `${what}: ${e.message}`);
  }
  // One byte of a weight flipped: finite, consistent, and caught by its sha256 alone.
  const flip = (name: string) => async (d: string) => {
    const bytes = await Deno.readFile(`${d}/${name}`);
    bytes[bytes.length - 3] ^= 0x01;
    await Deno.writeFile(`${d}/${name}`, bytes);
  };
  const model = await damaged(flip("model.safetensors"), true);
  const e = await assertRejects(() => openInference(model, { backend: "cpu" }), CheckpointError);
  assert(e.message.startsWith(`${model}/model.safetensors: changed since it was saved`), e.message);
  // The moments are checked whole when a resume reads them, by size otherwise.
  const ck = await loadCheckpoint(await goodCheckpoint());
  const withMoments = `${await tempDir()}/ck`;
  const zeros = () => new Float32Array(ck.params.length);
  await saveCheckpoint(withMoments, { ...ck, moments: { m: zeros(), v: zeros() } });
  const moments = `${await tempDir()}/ck`;
  await Deno.mkdir(moments);
  for (const e of Deno.readDirSync(withMoments)) {
    await Deno.copyFile(`${withMoments}/${e.name}`, `${moments}/${e.name}`);
  }
  await flip("optimizer.safetensors")(moments);
  await loadCheckpoint(moments);
  await assertRejects(
    () => loadCheckpoint(moments, { withOptimizer: true }),
    CheckpointError,
    "optimizer.safetensors: changed since it was saved",
  );
  // A checkpoint without the record (put together by hand, or copied in part) is refused,
  // saying what to do; loaded on request, and saved again with a record.
  const noSums = await damaged((d) => Deno.remove(`${d}/${CHECKSUMS_FILE}`), true);
  for (
    const e of [
      await assertRejects(() => loadCheckpoint(noSums), CheckpointError),
      await assertRejects(() => openInference(noSums, { backend: "cpu" }), CheckpointError),
      await assertRejects(() => exportCheckpoint(noSums, `${noSums}-export`), ExportError),
    ]
  ) {
    for (
      const p of [
        `${noSums}/${CHECKSUMS_FILE}: missing; `,
        "copy the whole checkpoint directory",
        "saved by a version from before saves recorded checksums",
        `checksums: "optional"`,
        '"Verification on load", has the command',
      ]
    ) {
      assert(e.message.includes(p), `"${e.message}" lacks ${JSON.stringify(p)}`);
    }
  }
  const unchecked = await loadCheckpoint(noSums, { checksums: "optional" });
  await saveCheckpoint(noSums, unchecked);
  assertEquals((await loadCheckpoint(noSums)).params, unchecked.params);
  // A damaged record is named, with what to do.
  const sums = await damaged((d) => Deno.writeTextFile(`${d}/${CHECKSUMS_FILE}`, "{"), true);
  await assertRejects(() => loadCheckpoint(sums), CheckpointError, `${CHECKSUMS_FILE}: not valid`);
});

Deno.test("the ONNX backend and the eval command refuse a damaged checkpoint too", async () => {
  const dir = await damaged((d) => mapWeights(d, (x) => x.fill(NaN)));
  const e = await assertRejects(() => openInference(dir, { backend: "onnx" }));
  assert(e.message.includes("non-finite"), e.message);
  // An ONNX cache made while the checkpoint was sound is no way around the check.
  const sound = await damaged(async () => {});
  await (await openInference(sound, { backend: "onnx" })).close();
  await Deno.writeTextFile(
    `${sound}/tokenizer.json`,
    fitCompactTokenizer(["Other words entirely, 12 + 30 = 42.\n"]).toJSON(),
  );
  const e2 = await assertRejects(() => openInference(sound, { backend: "onnx" }));
  assert(e2.message.includes("tokenizer.json"), e2.message);

  const data = `${await tempDir()}/q.jsonl`;
  await Deno.writeTextFile(
    data,
    FIXTURE_QUESTIONS.map((q) => JSON.stringify({ question: q, answer: "#### 1" })).join("\n"),
  );
  const a = parseEvalArgs(["--checkpoint", dir, "--data", data, "--out", `${dir}-eval`]);
  assert(a !== "help");
  const e3 = await assertRejects(() => evalCommand(a, () => {}), CheckpointError);
  assert(e3.message.includes("non-finite"), e3.message);
});

Deno.test("an export's tokenizer.json is checked against its lotus.json by the ONNX backend", async () => {
  const src = await goodCheckpoint(), x = `${await tempDir()}/x`;
  await exportCheckpoint(src, x, { format: "onnx" });
  const sound = await Deno.readTextFile(`${x}/tokenizer.json`);
  const V = JSON.parse(await Deno.readTextFile(`${x}/lotus.json`)).lotus.model.vocabSize;
  const refused = async (text: string | null, parts: string[]) => {
    if (text === null) await Deno.remove(`${x}/tokenizer.json`);
    else await Deno.writeTextFile(`${x}/tokenizer.json`, text);
    const e = await assertRejects(() => openInference(x, { backend: "onnx" }), ExportError);
    for (const p of [`${x}/tokenizer.json: `, ...parts, "export the checkpoint again"]) {
      assert(e.message.includes(p), `"${e.message}" lacks ${JSON.stringify(p)}`);
    }
  };
  // A larger vocabulary (onnxruntime would fail on an id past the embeddings), a smaller one
  // (it would answer garbage), special ids elsewhere, no file, a damaged file.
  const big = (await gpt2Tokenizer()).toJSON(), small = fitCompactTokenizer(["12 + 30 = 42.\n"]);
  assert(JSON.parse(big).model.vocab && small.vocabSize < V);
  await refused(big, ["50260 tokens", `lotus.json field "lotus.model.vocabSize" is ${V}`]);
  await refused(small.toJSON(), [`${small.vocabSize} tokens`, "does not belong to this export"]);
  const swapped = JSON.parse(sound);
  for (const t of swapped.added_tokens) {
    if (t.content === "<|latent|>") t.content = "<|end-latent|>";
    else if (t.content === "<|end-latent|>") t.content = "<|latent|>";
  }
  await refused(JSON.stringify(swapped), [`lotus.json field "special.`, "does not belong"]);
  await refused(null, ["missing"]);
  await refused("{", ["not valid JSON"]);
  await Deno.writeTextFile(`${x}/tokenizer.json`, sound);
  await (await openInference(x, { backend: "onnx", threads: 1 })).close();
});

Deno.test("a run still in its CoT start is named as such by load, export and both backends", async () => {
  const run = `${await tempDir()}/run`;
  await Deno.mkdir(`${run}/cot-start/checkpoint`, { recursive: true });
  const src = await goodCheckpoint();
  for (const e of Deno.readDirSync(src)) {
    if (e.isFile) await Deno.copyFile(`${src}/${e.name}`, `${run}/cot-start/checkpoint/${e.name}`);
  }
  await Deno.writeTextFile(`${run}/plan.json`, JSON.stringify({ phase: "cot-start" }));
  const errors = [
    await assertRejects(() => loadCheckpoint(run), CheckpointError),
    await assertRejects(() => exportCheckpoint(run, `${run}-x`), ExportError),
    await assertRejects(() => openInference(run, { backend: "cpu" })),
    await assertRejects(() => openInference(run, { backend: "onnx" }), ExportError),
  ];
  for (const e of errors) {
    assert(e.message.includes(`${run}: no checkpoint yet`), e.message);
    assert(e.message.includes("explicit-CoT start"), e.message);
    assert(e.message.includes(`--resume ${run}`), e.message);
  }
});

Deno.test("a checkpoint whose tokenizer.json is gone says so, and what to do", async () => {
  for (const keepSums of [true, false]) {
    const dir = await damaged((d) => Deno.remove(`${d}/tokenizer.json`), keepSums);
    const e = await assertRejects(() => loadCheckpoint(dir), CheckpointError);
    assert(e.message.startsWith(`${dir}/tokenizer.json: missing; `), e.message);
    assert(e.message.includes("restore the checkpoint from a copy"), e.message);
  }
});

Deno.test("deno task export and infer exit 1 with one line on a NaN checkpoint", async () => {
  const dir = await damaged((d) => mapWeights(d, (x) => x.fill(NaN)));
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks;
  const task = (name: string, args: string[]) =>
    runDeno([...tasks[name].split(" ").slice(1), ...args]);
  for (
    const r of [
      await task("export", ["--checkpoint", dir, "--out", `${dir}-ex`]),
      await task("infer", ["--checkpoint", dir, "--backend", "cpu", FIXTURE_QUESTIONS[0]]),
    ]
  ) {
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert(r.stderr.includes("non-finite"), r.stderr);
    assert(!r.stdout.includes("structural check: ok"), r.stdout);
  }
});

Deno.test("a sound checkpoint loads with its tokenizer; a resume checks the moments", async () => {
  const dir = await goodCheckpoint();
  const ck = await loadCheckpoint(dir);
  assertEquals(ck.tokenizer.vocabSize, ck.meta.model.vocabSize);
  assertEquals(ck.tokenizer.special, ck.meta.special);
  // Moments of the right size but not finite: a resume would carry the NaN into training.
  const bad = await damaged(async (d) => {
    const n = ck.params.length, m = new Float32Array(n), v = new Float32Array(n);
    v[n - 1] = NaN;
    await writeSafetensors(`${d}/optimizer.safetensors`, {
      m: { dtype: "F32", shape: [n], data: m },
      v: { dtype: "F32", shape: [n], data: v },
    });
  });
  await loadCheckpoint(bad); // eval and export do not read the moments
  const e = await assertRejects(
    () => loadCheckpoint(bad, { withOptimizer: true }),
    CheckpointError,
  );
  for (const p of ["optimizer.safetensors", `tensor "v"`, "NaN"]) {
    assert(e.message.includes(p), `"${e.message}" lacks ${p}`);
  }
});

Deno.test("a checkpoint missing a file says it is missing and what to do", async () => {
  const noModel = await damaged((d) => Deno.remove(`${d}/model.safetensors`));
  const e = await assertRejects(() => loadCheckpoint(noModel), CheckpointError);
  for (const p of ["model.safetensors: missing", "restore the checkpoint from a copy"]) {
    assert(e.message.includes(p), `"${e.message}" lacks ${p}`);
  }
  // A resume needs the moments; eval, infer and export do not read them.
  const noMoments = await damaged(async (d) => {
    await Deno.remove(`${d}/optimizer.safetensors`).catch(() => {});
  });
  await loadCheckpoint(noMoments);
  const r = await assertRejects(
    () => loadCheckpoint(noMoments, { withOptimizer: true }),
    CheckpointError,
  );
  for (const p of ["optimizer.safetensors: missing", "AdamW moments", "--init"]) {
    assert(r.message.includes(p), `"${r.message}" lacks ${p}`);
  }
});

Deno.test("a checkpoint path at nothing, at a file or at another directory is named as such", async () => {
  const d = await tempDir();
  const load = (path: string) => assertRejects(() => loadCheckpoint(path), CheckpointError);
  assertEquals(
    (await load(`${d}/nowhere`)).message,
    `${d}/nowhere: no such checkpoint (nothing is there); give a checkpoint or run directory ` +
      "written by deno task train",
  );
  const good = await goodCheckpoint();
  assertEquals(
    (await load(`${good}/model.safetensors`)).message,
    `${good}/model.safetensors is a file, not a checkpoint; give the checkpoint or run ` +
      "directory (written by deno task train) that holds it",
  );
  await Deno.writeTextFile(`${d}/notes.txt`, "mine");
  assertEquals(
    (await load(d)).message,
    `${d}: no config.json here or in ${d}/checkpoint; give a checkpoint or run directory ` +
      "written by deno task train",
  );
  // One whose save recorded config.json lost it since: missing, and what to do.
  const gone = await damaged((dir) => Deno.remove(`${dir}/config.json`), true);
  const e = await load(gone);
  assert(e.message.startsWith(`${gone}/config.json: missing; a save writes`), e.message);
});

/** `path` cut to half its length, as a full disk or a copy stopped midway leaves it. */
async function truncate(path: string): Promise<void> {
  const t = await Deno.readTextFile(path);
  await Deno.writeTextFile(path, t.slice(0, t.length >> 1));
}

Deno.test("a truncated config.json is refused, saying the file is damaged and what to do", async () => {
  const dir = await damaged((d) => truncate(`${d}/config.json`));
  for (
    const e of [
      await assertRejects(() => loadCheckpoint(dir), CheckpointError),
      await assertRejects(() => openInference(dir, { backend: "cpu" })),
      await assertRejects(() => exportCheckpoint(dir, `${dir}-export`), ExportError),
    ]
  ) {
    for (
      const p of [
        `${dir}/config.json`,
        "not valid JSON",
        "damaged",
        "restore it",
        "best/",
        "--init",
      ]
    ) {
      assert(e.message.includes(p), `"${e.message}" lacks ${JSON.stringify(p)}`);
    }
  }
});

Deno.test("without a readable train_state.json, eval, infer and export go on at the final stage, with a note; a resume refuses", async () => {
  const sound = await goodCheckpoint();
  const q = [FIXTURE_QUESTIONS[0]];
  const ref = await openInference(sound, { backend: "cpu", threads: 1 });
  const want = await ref.answer(q, { maxNewTokens: 6, latentLogits: true });
  assertEquals(ref.notes, []);
  await ref.close();
  const data = `${await tempDir()}/q.jsonl`;
  await Deno.writeTextFile(
    data,
    FIXTURE_QUESTIONS.map((q) => JSON.stringify({ question: q, answer: "#### 1" })).join("\n"),
  );
  for (
    const [what, damage, problem] of [
      ["missing", (d: string) => Deno.remove(`${d}/train_state.json`), "cannot read"],
      ["truncated", (d: string) => truncate(`${d}/train_state.json`), "not valid JSON"],
      [
        "without a field",
        (d: string) => Deno.writeTextFile(`${d}/train_state.json`, `{"step": 10}`),
        `field "epoch"`,
      ],
    ] as const
  ) {
    const dir = await damaged(damage);
    // A resume needs the file: refused, saying what to do.
    const e = await assertRejects(() => loadCheckpoint(dir), CheckpointError);
    for (const p of [`${dir}/train_state.json`, problem, "--resume", "restore it", "--init"]) {
      assert(e.message.includes(p), `${what}: "${e.message}" lacks ${JSON.stringify(p)}`);
    }
    const ck = await loadCheckpoint(dir, { trainState: "optional" });
    assertEquals(ck.state, null);
    assert(ck.stateProblem?.includes(problem), `${what}: ${ck.stateProblem}`);

    // infer (the CPU engine): the final stage, K = R = 2, the same answers, one note.
    const s = await openInference(dir, { backend: "cpu", threads: 1 });
    assertEquals(s.shape, { K: 2, R: 2, c: 3 });
    assertEquals(s.notes?.length, 1, what);
    for (
      const p of [`${dir}/train_state.json`, problem, "final curriculum stage", "K = 2, R = 2"]
    ) {
      assert(s.notes![0].includes(p), `${what}: "${s.notes![0]}" lacks ${JSON.stringify(p)}`);
    }
    const got = await s.answer(q, { maxNewTokens: 6, latentLogits: true });
    await s.close();
    assertEquals(got.answers, want.answers, what);

    // export: lotus.json has the final stage and no epoch; the export is sound.
    const ex = await exportCheckpoint(dir, `${dir}-export`, { format: "onnx" });
    assertEquals([ex.lotus.K, ex.lotus.R, ex.lotus.epoch, ex.lotus.step], [
      2,
      2,
      undefined,
      undefined,
    ]);
    assertEquals(ex.notes.length, 1, what);
    assert(ex.notes[0].includes("train_state.json"), ex.notes[0]);
    assertEquals(await checkExport(`${dir}-export`), []);
    // The ONNX backend, on that export and on the checkpoint (its cache), answers alike.
    for (const path of [`${dir}-export`, dir]) {
      const o = await openInference(path, { backend: "onnx", threads: 1 });
      assertEquals(o.shape, { K: 2, R: 2, c: 3 });
      assertEquals(o.notes?.length, 1, `${what}, onnx on ${path}`);
      assert(o.notes![0].includes("final curriculum stage"), o.notes![0]);
      const a = await o.answer(q, { maxNewTokens: 6 });
      await o.close();
      assertEquals(a.answers[0].tokens, want.answers[0].tokens, `${what}, onnx on ${path}`);
    }

    // eval: the evaluation is written, and the note is in its log.
    const a = parseEvalArgs([
      "--checkpoint",
      dir,
      "--data",
      data,
      "--out",
      `${dir}-eval`,
      "--max-new-tokens",
      "6",
      "--threads",
      "1",
    ]);
    assert(a !== "help");
    const lines: string[] = [];
    await evalCommand(a, (l) => lines.push(l));
    const notes = lines.filter((l) => l.includes("train_state.json"));
    assertEquals(notes.length, 1, lines.join("\n"));
    assert(notes[0].startsWith("note: "), notes[0]);
  }
  // A cache exported while train_state.json was unreadable is exported again once it is back.
  const dir = await damaged(async () => {});
  await Deno.rename(`${dir}/train_state.json`, `${dir}/train_state.json.away`);
  await (await openInference(dir, { backend: "onnx", threads: 1 })).close();
  await Deno.rename(`${dir}/train_state.json.away`, `${dir}/train_state.json`);
  const o = await openInference(dir, { backend: "onnx", threads: 1 });
  assertEquals(o.notes, []);
  await o.close();
});

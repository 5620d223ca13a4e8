// What a project importing mod.ts meets when it gets something wrong: error classes it can
// catch by name from the root, and option errors that name the option, never an internal.
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import * as lib from "../mod.ts";
import { WriteError } from "../pipeline/writer.ts";
import { NonFiniteError } from "../train/trainer.ts";
import { saveCheckpoint } from "../model/checkpoint.ts";
import { SESSION_CLOSED } from "../infer/session.ts";
import { fixtureData, fixtureTask } from "./_task.ts";
import { tinyCheckpoint } from "./_export_fixture.ts";
import { tempDir } from "./_tmp.ts";
import { ROOT, runDeno } from "./_run.ts";
import { TempLease } from "../base/staging.ts";
import { exists } from "../base/exists.ts";
import { Engine, warnIfMmaProbeFailed } from "../engine/ffi.ts";
import { buildEngine, planEngineBuild, probeCuda } from "../engine/mod.ts";
import { readEvalItems } from "../eval/mod.ts";
import { loadSplit } from "../train/mod.ts";

Deno.test("library: the root exports the error classes its stages throw", async () => {
  for (
    const name of [
      "InputError",
      "FormatError",
      "BuildError",
      "BuildStopped",
      "ManifestError",
      "DatasetError",
      "TokenizerError",
      "WriteError",
      "CheckpointError",
      "TrainConfigError",
      "NonFiniteError",
      "ExportError",
      "EngineError",
      "EngineBuildError",
      "EvalStopped",
      "HfLlamaError",
      "TrainLogError",
      "StagingError",
      "EvalOutputError",
      "SessionClosedError",
      "OnnxRuntimeError",
      "EnvPermissionError",
    ] as const
  ) {
    const cls = lib[name] as unknown;
    assert(typeof cls === "function", `mod.ts exports ${name}`);
    assertEquals((cls as { name: string }).name, name);
  }
  assert(lib.WriteError === WriteError && lib.NonFiniteError === NonFiniteError);
  // A build whose --out is a file throws the root's WriteError.
  const d = await tempDir();
  await Deno.writeTextFile(`${d}/train.jsonl`, fixtureTask(8, 1));
  await Deno.writeTextFile(`${d}/file`, "");
  await assertRejects(
    () =>
      lib.buildDataset({
        out: `${d}/file`,
        splits: [{ name: "train", inputs: [`${d}/train.jsonl`] }],
        tokenizer: "compact",
      }),
    lib.WriteError,
  );
  // A file in no format readProblems reads: the root's FormatError.
  await Deno.writeTextFile(`${d}/odd.jsonl`, '{"title": "x"}\n');
  await assertRejects(() => Array.fromAsync(lib.readProblems(`${d}/odd.jsonl`)), lib.FormatError);
});

Deno.test("library: train() names the option at fault, with its value as given", async () => {
  const data = await fixtureData(), out = `${await tempDir()}/run`;
  const run = (train: Partial<lib.TrainConfig>, recipe = "none") =>
    lib.train({
      data,
      out,
      preset: "tiny",
      backend: "cpu",
      threads: 1,
      quiet: true,
      recipe: recipe as lib.TrainOptions["recipe"],
      train: { steps: 1, ...train },
    });
  let e = await assertRejects(() => run({ batch: 601 }), lib.TrainConfigError);
  assertEquals(e.flag, "--batch");
  assert(e.message.includes("600 usable examples, fewer than --batch 601"), e.message);
  assert(e.message.includes("at most 600"), e.message);
  e = await assertRejects(() => run({ lr: NaN }), lib.TrainConfigError);
  assert(e.message.startsWith("--lr NaN:"), e.message);
  e = await assertRejects(() => run({ lr: Infinity }), lib.TrainConfigError);
  assert(e.message.startsWith("--lr Infinity:"), e.message);
  e = await assertRejects(() => run({}, "bogus"), lib.TrainConfigError);
  assertEquals(e.flag, "--recipe");
  assert(e.message.includes("none, paper, from-cot"), e.message);
  e = await assertRejects(
    () => run({ mode: "lotus-aux", auxWeight: 0 }),
    lib.TrainConfigError,
  );
  assertEquals(e.flag, "--aux-weight");
  // Nothing was made for the refused runs.
  await assertRejects(() => Deno.stat(`${out}/checkpoint`));
});

Deno.test("library: openInference checks its sizes; a closed session says so", async () => {
  const ck = `${await tempDir()}/ck`;
  await tinyCheckpoint(ck);
  for (
    const [opts, text] of [
      [{ maxNewTokens: 0 }, "maxNewTokens = 0: must be a whole number, at least 1"],
      [{ maxNewTokens: 2.5 }, "maxNewTokens = 2.5: must be a whole number, at least 1"],
      [{ maxBatch: -2 }, "maxBatch = -2: must be a whole number, at least 1"],
      [{ maxQuestionTokens: 0 }, "maxQuestionTokens = 0: must be a whole number, at least 1"],
      [{ threads: -1 }, "threads = -1: must be a whole number, at least 0"],
    ] as const
  ) {
    for (const backend of ["cpu", "onnx"] as const) {
      const e = await assertRejects(() => lib.openInference(ck, { backend, ...opts }), RangeError);
      assertEquals(e.message, `openInference: ${text}`);
    }
  }
  const bogus = { backend: "bogus" as "cpu" };
  const wrong = await assertRejects(() => lib.openInference(ck, bogus), RangeError);
  assertEquals(wrong.message, 'openInference: backend "bogus": use cpu, cuda, auto, onnx');
  for (const backend of ["cpu", "onnx"] as const) {
    const p = await assertRejects(
      () => lib.openInference(ck, { backend, precision: "fp8" as lib.Precision }),
      RangeError,
    );
    assertEquals(p.message, 'openInference: precision "fp8": use fp32, tf32 or bf16');
  }
  const s = await lib.openInference(ck, { backend: "cpu", threads: 1 });
  assertEquals((await s.answer(["Ann has 2 pens."])).answers.length, 1);
  // An empty or blank question (a wrong field read, say) is refused, as the readers refuse it.
  for (const blank of ["", "  \n"]) {
    const b = await assertRejects(() => s.answer(["Ann has 2 pens.", blank]), RangeError);
    assertEquals(b.message, "question 1 is empty; give the question's text");
  }
  await s.close();
  await s.close(); // a second close does nothing
  const e = await assertRejects(() => s.answer(["Ann has 2 pens."]), lib.SessionClosedError);
  assertEquals(e.message, SESSION_CLOSED);
});

Deno.test("library: readProblems refuses a maxFieldBytes that is no size, naming it", async () => {
  const f = `${await tempDir()}/train.jsonl`;
  await Deno.writeTextFile(f, fixtureTask(2, 1));
  for (const bad of [-1, 0, NaN, 1.5]) {
    const e = await assertRejects(
      () => Array.fromAsync(lib.readProblems(f, { maxFieldBytes: bad })),
      RangeError,
    );
    assertEquals(
      e.message,
      `readProblems: maxFieldBytes = ${bad}: must be a whole number of bytes, at least 1`,
    );
  }
  assertEquals((await Array.fromAsync(lib.readProblems(f, { maxFieldBytes: 1000 }))).length, 2);
});

Deno.test("library: train() checks its run options, naming the flag, before writing", async () => {
  const data = await fixtureData(), out = `${await tempDir()}/run`;
  for (
    const [opts, message] of [
      [{ threads: 1.5 }, "--threads 1.5: give a whole number, at least 0 (0: all cores)"],
      [{ threads: -1 }, "--threads -1: give a whole number, at least 0 (0: all cores)"],
      [{ stopAfter: 0 }, "--stop-after 0: give a whole number of steps, at least 1"],
      [
        { commTimeout: -1 },
        "--comm-timeout -1: give a whole number of seconds, at least 0 (0: no limit)",
      ],
      [{ arch: "gpt3" }, '--arch "gpt3": give gpt2 or llama'],
      [{ backend: "tpu" }, '--backend "tpu": give cpu, cuda, auto'],
      [{ precision: "fp8", backend: "cuda" }, '--precision "fp8": give fp32, tf32 or bf16'],
      [{ verifyData: "some" }, '--verify-data "some": give basic or full'],
      [{ commOverlap: "yes" }, '--comm-overlap "yes": give on or off'],
    ] as const
  ) {
    const e = await assertRejects(
      () =>
        lib.train({
          data,
          out,
          preset: "tiny",
          quiet: true,
          recipe: "none",
          train: { steps: 1 },
          ...(opts as Partial<lib.TrainOptions>),
        }),
      lib.TrainConfigError,
    );
    assertEquals(e.message, message);
    assertEquals(e.flag, message.split(" ")[0]);
  }
  await assertRejects(() => Deno.stat(out));
});

Deno.test("library: the engine refuses a fractional thread count in words", () => {
  const e = assertThrows(() => lib.openEngine({ threads: 1.5, quiet: true }), RangeError);
  assertEquals(e.message, "threads = 1.5: must be a whole number (0: all cores)");
});

Deno.test("library: runEval checks its batch, naming it", async () => {
  const ck = `${await tempDir()}/ck`;
  await tinyCheckpoint(ck);
  const s = await lib.openInference(ck, { backend: "cpu", threads: 1 });
  try {
    const source = { file: "x.jsonl", line: 1 };
    const items: lib.EvalItem[] = [
      { id: "x:1", source, question: "Ann has 2 pens.", answer: "2", math: null, nl: null },
    ];
    for (const batch of [0, -1, 1.5]) {
      const e = await assertRejects(() => lib.runEval(s, items, { batch }), RangeError);
      assertEquals(e.message, `runEval: batch = ${batch}: must be a whole number, at least 1`);
    }
  } finally {
    await s.close();
  }
});

Deno.test({
  name: "library: quiet train() and openInference print nothing, an engine build included",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const data = await fixtureData(), dir = await tempDir();
    // A compiler of its own version, so that the engine is "built" again, under another name:
    // it copies the library already built.
    const built = buildEngine({ quiet: true });
    const cxx = `${dir}/cxx`;
    await Deno.writeTextFile(
      cxx,
      `#!/bin/sh\ncase "$*" in *--version*) echo "cxx ${dir}"; exit 0;; esac\n` +
        `while [ $# -gt 0 ]; do [ "$1" = -o ] && cp '${built}' "$2"; shift; done\n`,
    );
    await Deno.chmod(cxx, 0o755);
    const compilers = `${ROOT}build/compilers.json`;
    // Absent when no process has asked the compiler since the build directory was made.
    const known = await Deno.readTextFile(compilers).catch((e) => {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    });
    const printed: string[] = [], error = console.error, oldCxx = Deno.env.get("CXX");
    let libPath = "";
    console.error = (...a: unknown[]) => printed.push(a.join(" "));
    Deno.env.set("CXX", cxx);
    try {
      libPath = planEngineBuild().outPath;
      assert(libPath !== built);
      await lib.train({
        data,
        out: `${dir}/run`,
        preset: "tiny",
        threads: 1,
        quiet: true,
        recipe: "none",
        train: { steps: 1, evalExamples: 1 },
      });
      assert(await Deno.stat(libPath).then(() => true), "the engine was built");
      const s = await lib.openInference(`${dir}/run`, { backend: "auto", threads: 1, quiet: true });
      if (!probeCuda().available) {
        assert(s.notes?.[0]?.startsWith("backend auto: "), JSON.stringify(s.notes));
      }
      await s.close();
    } finally {
      console.error = error;
      if (oldCxx === undefined) Deno.env.delete("CXX");
      else Deno.env.set("CXX", oldCxx);
      if (libPath !== "") await Deno.remove(libPath).catch(() => {});
      if (known === null) await Deno.remove(compilers).catch(() => {});
      else await Deno.writeTextFile(compilers, known);
    }
    assertEquals(printed, []);
  },
});

Deno.test({
  name: "library: a signal stops buildDataset with a BuildStopped, and the process goes on",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const d = await tempDir();
    await Deno.writeTextFile(`${d}/train.jsonl`, fixtureTask(2500, 1));
    // The caller handles SIGTERM itself (SIGINT is the test runner's): the build must not end the process.
    let seen = 0;
    const mine = () => seen++;
    Deno.addSignalListener("SIGTERM", mine);
    try {
      for (const phase of ["fit", "build"] as const) {
        const out = `${d}/out-${phase}`;
        let sent = false;
        const e = await assertRejects(
          () =>
            lib.buildDataset(
              {
                out,
                splits: [{ name: "train", inputs: [`${d}/train.jsonl`] }],
                tokenizer: "compact",
              },
              {
                onProgress: (p) => {
                  if (p.phase !== phase || sent) return;
                  sent = true;
                  Deno.kill(Deno.pid, "SIGTERM");
                },
              },
            ),
          lib.BuildStopped,
        );
        assertEquals(e.signal, "SIGTERM");
        assertEquals(e.written, false);
        assertEquals(
          e.message,
          `stopped by SIGTERM: nothing was changed in ${out} (what the build had written is ` +
            `removed); rerun the same command`,
        );
        await assertRejects(() => Deno.stat(out));
      }
    } finally {
      Deno.removeSignalListener("SIGTERM", mine);
    }
    assertEquals(seen, 2);
  },
});

Deno.test("library: loadEvalItems checks its limit, verify and split, naming them", async () => {
  const f = `${await tempDir()}/test.jsonl`;
  await Deno.writeTextFile(f, fixtureTask(3, 1));
  for (const limit of [-1, 1.5, NaN]) {
    const e = await assertRejects(() => lib.loadEvalItems(f, { limit }), RangeError);
    assertEquals(e.message, `loadEvalItems: limit = ${limit}: must be a whole number, at least 0`);
  }
  const e = await assertRejects(
    () => lib.loadEvalItems(f, { verify: "some" as lib.VerifyMode }),
    RangeError,
  );
  assertEquals(e.message, 'loadEvalItems: verify "some": use basic or full');
  const s = await assertRejects(() => lib.loadEvalItems(f, { split: "valid" }), RangeError);
  assertEquals(
    s.message,
    `loadEvalItems: split "valid": ${f} is read as a gsm8k file, and a split applies only to a ` +
      "dataset directory; leave out split, or give the dataset directory",
  );
  assertEquals((await lib.loadEvalItems(f, { limit: 0 })).length, 0);
  assertEquals((await lib.loadEvalItems(f, { limit: 2 })).length, 2);
  // The errors name the function called: eval/mod.ts's readEvalItems, which the root does
  // not export, names itself.
  const r = await assertRejects(() => Array.fromAsync(readEvalItems(f, { limit: -1 })));
  assertEquals(r.message, "readEvalItems: limit = -1: must be a whole number, at least 0");
});

Deno.test("library: an unknown onError, cot or socratic (plain JavaScript) is a RangeError naming it", async () => {
  const f = `${await tempDir()}/test.jsonl`;
  await Deno.writeTextFile(f, fixtureTask(2, 1));
  // What a caller without TypeScript's checks can pass.
  const loose = (o: Record<string, unknown>) => o as never;
  const e = await assertRejects(
    () => lib.loadEvalItems(f, loose({ onError: "ignore" })),
    RangeError,
  );
  assertEquals(e.message, 'loadEvalItems: onError "ignore": use throw or skip');
  const r = await assertRejects(
    () => Array.fromAsync(lib.readProblems(f, loose({ onError: "Skip" }))),
    RangeError,
  );
  assertEquals(r.message, 'readProblems: onError "Skip": use throw or skip');
  // A format no reader has (the file's kind rather than its format) is an option error too,
  // not "cannot tell the input format".
  const fmt = await assertRejects(
    () => Array.fromAsync(lib.readProblems(f, loose({ format: "jsonl" }))),
    RangeError,
  );
  assertEquals(
    fmt.message,
    'readProblems: format "jsonl": use auto or gsm8k or parquet or icot or coconut or nl or csv',
  );
  const [p] = await Array.fromAsync(lib.readProblems(f));
  const seg = assertThrows(() => lib.segment(p, loose({ socratic: "drop" })), RangeError);
  assertEquals(seg.message, 'segment: socratic "drop": use strip or keep');
  const val = assertThrows(() => lib.validate(lib.segment(p), loose({ cot: "prose" })), RangeError);
  assertEquals(val.message, 'validate: cot "prose": use math or nl');
  // The allowed values, and none at all, still work.
  assertEquals((await lib.loadEvalItems(f, { onError: "skip" })).length, 2);
  assertEquals(lib.segment(p, { socratic: "keep" }).id, p.id);
  assertEquals(lib.validate(lib.segment(p), { cot: "nl" }).id, p.id);
  assertEquals(lib.validate(lib.segment(p)).id, p.id);
});

Deno.test("library: saveCheckpoint refuses what loadCheckpoint would, writing nothing", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`);
  const ck = await lib.loadCheckpoint(`${d}/ck`);
  const n = ck.params.length;
  for (
    const [change, problem] of [
      [{ params: ck.params.subarray(1) }, `params holds ${n - 1} values; the model of meta.model`],
      [
        { moments: { m: new Float32Array(3), v: new Float32Array(n) } },
        `moments.m holds 3 values; the model of meta.model has ${n} parameters`,
      ],
      [{ tokenizerJson: "nope" }, "tokenizerJson: not valid JSON"],
      [{ state: { ...ck.state, step: -1 } }, 'field "state.step"'],
      [{ meta: { ...ck.meta, preset: 3 as unknown as string } }, 'field "meta.preset"'],
    ] as const
  ) {
    const out = `${d}/saved`;
    const e = await assertRejects(
      () => saveCheckpoint(out, { ...ck, ...change } as lib.CheckpointData),
      lib.CheckpointError,
    );
    assert(e.message.startsWith(`${out}: refusing to write a checkpoint`), e.message);
    assert(e.message.includes(problem), e.message);
    await assertRejects(() => Deno.stat(out));
  }
  // What it takes, it writes, and loadCheckpoint reads back.
  await saveCheckpoint(`${d}/saved`, ck);
  assertEquals((await lib.loadCheckpoint(`${d}/saved`)).params, ck.params);
});

Deno.test("library: onnx sessions opened at once on one checkpoint share its cache export", async () => {
  const ck = `${await tempDir()}/ck`;
  await tinyCheckpoint(ck);
  const open = () => lib.openInference(ck, { backend: "onnx", threads: 1, quiet: true });
  const sessions = await Promise.all([open(), open(), open()]);
  try {
    // One exported the checkpoint and says so; the others waited for it and found the cache.
    const notes = sessions.map((s) => s.notes ?? []);
    assertEquals(notes.filter((n) => n.some((l) => l.startsWith("onnx: exporting"))).length, 1);
    for (const s of sessions) {
      assertEquals((await s.answer(["Ann has 2 pens."])).answers.length, 1);
    }
  } finally {
    for (const s of sessions) await s.close();
  }
});

Deno.test("library: what train() and openInference throw for a bad input is the root's", async () => {
  const data = await fixtureData(), d = await tempDir();
  const run = (o: Partial<lib.TrainOptions>) =>
    lib.train({
      data,
      out: `${d}/run`,
      preset: "tiny",
      threads: 1,
      quiet: true,
      recipe: "none",
      train: { steps: 2, evalExamples: 2 },
      ...o,
    });
  // A Hugging Face Llama directory whose config.json lacks a field.
  await Deno.mkdir(`${d}/llama`);
  await Deno.writeTextFile(
    `${d}/llama/config.json`,
    JSON.stringify({ model_type: "llama", hidden_size: 64, num_attention_heads: 4 }),
  );
  const llama = await assertRejects(() => run({ init: `${d}/llama` }), lib.HfLlamaError);
  assert(llama.message.includes('field "vocab_size"'), llama.message);
  // A run whose log.jsonl is damaged, resumed.
  await run({});
  await Deno.writeTextFile(`${d}/run/log.jsonl`, "{not json\n");
  const log = await assertRejects(
    () => run({ resume: `${d}/run`, train: { steps: 4, evalExamples: 2 } }),
    lib.TrainLogError,
  );
  assert(log.message.startsWith(`${d}/run/log.jsonl:1: invalid JSON`), log.message);
  // An export given to a native backend.
  const ck = `${d}/ck`;
  await tinyCheckpoint(ck);
  await lib.exportCheckpoint(ck, `${d}/export`, { format: "hf" });
  const ex = await assertRejects(
    () => lib.openInference(`${d}/export`, { backend: "cpu", threads: 1 }),
    lib.CheckpointError,
  );
  assert(ex.message.includes("is an export directory"), ex.message);
});

Deno.test("library: writeEvalOutputs checks readoutExamples, naming it, writing nothing", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/ck`);
  const s = await lib.openInference(`${d}/ck`, { backend: "cpu", threads: 1 });
  try {
    const source = { file: "x.jsonl", line: 1 };
    const items: lib.EvalItem[] = [
      { id: "x:1", source, question: "Ann has 2 pens.", answer: "2", math: ["<<2=2>>"], nl: null },
    ];
    const result = await lib.runEval(s, items, { batch: 1 });
    const prov: lib.EvalProvenance = {
      checkpoint: `${d}/ck`,
      data: "x.jsonl",
      format: "gsm8k",
      backend: s.backend,
      mode: s.meta.train.mode,
      preset: s.meta.preset,
      cot: s.meta.data.cot,
    };
    for (const n of [-1, 1.5, NaN]) {
      const e = await assertRejects(
        () => lib.writeEvalOutputs(`${d}/eval`, prov, result, { readoutExamples: n }),
        RangeError,
      );
      assertEquals(
        e.message,
        `writeEvalOutputs: readoutExamples = ${n}: must be a whole number, at least 0`,
      );
      await assertRejects(() => Deno.stat(`${d}/eval`));
    }
    const files = await lib.writeEvalOutputs(`${d}/eval`, prov, result, { readoutExamples: 0 });
    assertEquals(files.summary, `${d}/eval/summary.json`);
    // A directory that is no evaluation's: an EvalOutputError that names it.
    for (const bad of [`${d}/ck`, `${d}/ck/config.json`]) {
      const e = await assertRejects(
        () => lib.writeEvalOutputs(bad, prov, result),
        lib.EvalOutputError,
      );
      assert(e.message.startsWith(`${bad}: `), e.message);
    }
    // A write into `dir` under way in this process (its lock and staging directory there):
    // another meets its lock, and says so, rather than taking its entries for a user's files.
    await Deno.mkdir(`${d}/eval2`);
    const lease = TempLease.acquire(`${d}/eval2`, ".eval-new");
    try {
      await Deno.mkdir(lease.path("tmp"));
      const e = await assertRejects(
        () => lib.writeEvalOutputs(`${d}/eval2`, prov, result),
        lib.StagingError,
      );
      assert(e.message.endsWith("wait for it to finish"), e.message);
    } finally {
      await lease.release();
    }
  } finally {
    await s.close();
  }
});

Deno.test("library: train()'s onLog tells the CoT start's records from LOTUS's", async () => {
  const data = await fixtureData(), out = `${await tempDir()}/run`;
  const seen: [lib.TrainPhase, string, number][] = [];
  const r = await lib.train({
    data,
    out,
    preset: "tiny",
    threads: 1,
    quiet: true,
    train: { steps: 2, cotStartEpochs: 1, batch: 100, evalExamples: 2 },
    onLog: (rec, phase) => seen.push([phase, rec.kind, rec.step]),
  });
  assertEquals(r.cotStart?.steps, 6);
  const cot = seen.filter(([p]) => p === "cot-start"), main = seen.filter(([p]) => p === "main");
  // The CoT start's records come first, as its log holds them; then LOTUS's, from step 1.
  assertEquals(seen, [...cot, ...main]);
  assertEquals(
    cot.map(([, k, s]) => `${k}${s}`),
    [1, 2, 3, 4, 5, 6].map((s) => `train${s}`).concat("eval6"),
  );
  assertEquals(main.map(([, k, s]) => `${k}${s}`), ["train1", "train2", "eval2"]);
  const lines = (p: string) => Deno.readTextFileSync(p).trim().split("\n").length;
  assertEquals(lines(`${out}/cot-start/log.jsonl`), cot.length);
  assertEquals(lines(`${out}/log.jsonl`), main.length);
});

Deno.test("library: sessions and engines close when a using block ends", async () => {
  const ck = `${await tempDir()}/ck`;
  await tinyCheckpoint(ck);
  for (const backend of ["cpu", "onnx"] as const) {
    let outer: lib.InferenceSession;
    {
      await using s = await lib.openInference(ck, { backend, threads: 1, quiet: true });
      outer = s;
      assertEquals((await s.answer(["Ann has 2 pens."])).answers.length, 1);
    }
    const e = await assertRejects(() => outer.answer(["Ann has 2 pens."]), lib.SessionClosedError);
    assertEquals(e.message, SESSION_CLOSED);
  }
  let eng: lib.Engine;
  {
    using e = lib.openEngine({ threads: 1, quiet: true });
    eng = e;
    eng.deviceInfo();
  }
  assertThrows(() => eng.deviceInfo(), lib.EngineError);
});

Deno.test("library: the CUDA engine's probe note follows quiet and log", () => {
  const eng = { deviceInfo: () => ({ mmaProbe: 3 }) };
  const printed: string[] = [], error = console.error;
  console.error = (...a: unknown[]) => printed.push(a.join(" "));
  try {
    warnIfMmaProbeFailed(eng, { quiet: true });
    assertEquals(printed, []);
    const logged: string[] = [];
    warnIfMmaProbeFailed(eng, { quiet: true, log: (l) => logged.push(l) });
    assertEquals(printed, []);
    assertEquals(logged.length, 1);
    assert(logged[0].includes("found 3 of 128 elements wrong"), logged[0]);
    warnIfMmaProbeFailed(eng);
    assertEquals(printed, logged);
    warnIfMmaProbeFailed({ deviceInfo: () => ({ mmaProbe: 0 }) });
    assertEquals(printed.length, 1);
  } finally {
    console.error = error;
  }
});

Deno.test("library: train() resumes a run without out, and names out when a fresh run lacks it", async () => {
  const data = await fixtureData(), run = `${await tempDir()}/run`;
  const common = { preset: "tiny", threads: 1, quiet: true } as const;
  const e = await assertRejects(
    () => lib.train({ ...common, data, recipe: "none", train: { steps: 2 } }),
    lib.TrainConfigError,
  );
  assertEquals(e.flag, "--out");
  await lib.train({
    ...common,
    data,
    out: run,
    recipe: "none",
    train: { steps: 2, evalExamples: 2 },
  });
  // A resume writes to the run it continues: out may be left out.
  const r = await lib.train({ ...common, resume: run, train: { steps: 4, evalExamples: 2 } });
  assertEquals([r.steps, r.checkpoint], [4, `${run}/checkpoint`]);
  const r2 = await lib.train({
    ...common,
    resume: `${run}/checkpoint`,
    train: { steps: 5, evalExamples: 2 },
  });
  assertEquals([r2.steps, r2.checkpoint], [5, `${run}/checkpoint`]);
});

Deno.test("library: an answer() whose buffers cannot be had leaves its session sound", async () => {
  const ck = `${await tempDir()}/ck`;
  await tinyCheckpoint(ck);
  // Engine memory that runs out on demand: the fourth allocation after `fail` is set fails.
  const proto = Engine.prototype, alloc = proto.alloc;
  let fail = false, made = 0, eng = null as Engine | null;
  proto.alloc = function (this: Engine, bytes: number): lib.Ptr {
    eng = this;
    if (fail && ++made > 3) throw new lib.EngineError("le_alloc", "out of engine memory");
    return alloc.call(this, bytes);
  };
  try {
    const s = await lib.openInference(ck, { backend: "cpu", threads: 1, maxNewTokens: 4 });
    try {
      const q = "Ann has 2 pens.";
      const first = (await s.answer([q])).answers[0].tokens;
      const inUse = eng!.bytesInUse();
      // A longer question needs larger buffers, which cannot be had.
      fail = true;
      await assertRejects(() => s.answer([`${q} She buys 3 more, then 4 more.`]), lib.EngineError);
      fail = false;
      // The session answers as before, on buffers of its own: none freed in use, none left
      // over from the failed call.
      assertEquals((await s.answer([q])).answers[0].tokens, first);
      assertEquals(eng!.bytesInUse(), inUse);
    } finally {
      await s.close();
    }
  } finally {
    proto.alloc = alloc;
  }
});

Deno.test("library: engine memory that runs out in train() or openInference is all given back", async () => {
  const data = await fixtureData(), d = await tempDir();
  await tinyCheckpoint(`${d}/ck`);
  const probe = lib.openEngine({ threads: 1, quiet: true });
  // Engine memory that runs out at the `failAt`-th allocation; engines closed, counted.
  const proto = Engine.prototype, alloc = proto.alloc, close = proto.close;
  let made = 0, failAt = 0, closed = 0;
  proto.alloc = function (this: Engine, bytes: number): lib.Ptr {
    if (++made === failAt) throw new lib.EngineError("le_alloc", "out of engine memory");
    return alloc.call(this, bytes);
  };
  proto.close = function (this: Engine) {
    closed++;
    close.call(this);
  };
  const run = (mode: lib.Mode) =>
    lib.train({
      data,
      out: `${d}/run`,
      overwrite: true,
      preset: "tiny",
      threads: 1,
      quiet: true,
      recipe: "none",
      train: { mode, steps: 2, evalExamples: 2 },
    });
  try {
    for (const mode of ["lotus", "cot"] as const) {
      made = 0, failAt = 0;
      await run(mode);
      const total = made;
      // The model, the step's buffers, the heads' and the evaluation's, at every stage.
      for (let at = 1; at <= total; at += Math.ceil(total / 25)) {
        made = 0, failAt = at;
        const before = probe.bytesInUse();
        await assertRejects(() => run(mode), lib.EngineError);
        assertEquals(probe.bytesInUse() - before, 0, `${mode}: allocation ${at} of ${total}`);
      }
    }
    for (const at of [1, 2]) {
      made = 0, failAt = at, closed = 0;
      const before = probe.bytesInUse();
      await assertRejects(() => lib.openInference(`${d}/ck`, { backend: "cpu" }), lib.EngineError);
      assertEquals([probe.bytesInUse() - before, closed], [0, 1]);
    }
  } finally {
    proto.alloc = alloc;
    proto.close = close;
    probe.close();
  }
});

Deno.test("library: each entry point exports the error classes its functions throw", async () => {
  const mods: Record<string, Record<string, unknown>> = {
    "eval/mod.ts": await import("../eval/mod.ts"),
    "infer/mod.ts": await import("../infer/mod.ts"),
  };
  for (
    const [mod, names] of [
      ["eval/mod.ts", [
        "InputError",
        "DatasetError",
        "ManifestError",
        "StagingError",
        "EvalStopped",
      ]],
      ["infer/mod.ts", ["CheckpointError", "EngineError", "ExportError", "StagingError"]],
    ] as const
  ) {
    for (const name of names) {
      assert(mods[mod][name] === lib[name], `${mod} exports ${name}, the root's class`);
    }
  }
});

Deno.test("library: of two builds into one directory at once, one is refused, the other kept", async () => {
  const d = await tempDir();
  await Deno.writeTextFile(`${d}/train.jsonl`, fixtureTask(50, 1));
  const build = () =>
    lib.buildDataset({
      out: `${d}/data`,
      splits: [{ name: "train", inputs: [`${d}/train.jsonl`] }],
      tokenizer: "compact",
    });
  const both = await Promise.allSettled([build(), build()]);
  // Whichever takes the lock first builds; the other meets its lock and leaves its staging
  // directory alone (which one wins depends on the order the file system answers in).
  const kept = both.filter((r) => r.status === "fulfilled");
  const refused = both.filter((r) => r.status === "rejected");
  assertEquals([kept.length, refused.length], [1, 1], JSON.stringify(both.map((r) => r.status)));
  const reason = (refused[0] as PromiseRejectedResult).reason;
  assert(reason instanceof lib.WriteError, String(reason));
  assert(reason.message.includes("locked by another write"), reason.message);
  assertEquals((await lib.readManifest(`${d}/data`)).splits.train.counts.read, 50);
});

Deno.test("library: a session's buffers stop at the model's context, whatever its defaults", async () => {
  const ck = `${await tempDir()}/ck`;
  await tinyCheckpoint(ck);
  const probe = lib.openEngine({ threads: 1, quiet: true });
  // Engine memory a session holds once it has answered a short question with a short budget.
  const held = async (o: lib.OpenInferenceOptions) => {
    const before = probe.bytesInUse();
    await using s = await lib.openInference(ck, { backend: "cpu", threads: 1, maxBatch: 4, ...o });
    await s.answer(["Ann has 2 pens."], { maxNewTokens: 4 });
    return probe.bytesInUse() - before;
  };
  try {
    const maxPos = (await lib.loadCheckpoint(ck)).meta.model.maxPositions;
    const atContext = await held({ maxNewTokens: maxPos, maxQuestionTokens: maxPos });
    assertEquals(
      await held({ maxNewTokens: 20 * maxPos, maxQuestionTokens: 8 * maxPos }),
      atContext,
    );
  } finally {
    probe.close();
  }
});

Deno.test("library: exportCheckpoint never replaces the checkpoint it exports", async () => {
  const d = await tempDir();
  await tinyCheckpoint(`${d}/run/checkpoint`);
  for (const out of [`${d}/run/checkpoint`, `${d}/run`, `${d}/run/checkpoint/`, `${d}/run/.`]) {
    for (const replaceAny of [false, true]) {
      const e = await assertRejects(
        () => lib.exportCheckpoint(`${d}/run`, out, { format: "hf", replaceAny }),
        lib.ExportError,
      );
      assert(e.message.includes("the checkpoint being exported"), e.message);
    }
  }
  // The checkpoint is as it was; an export beside it, or in it (the onnx cache's place), goes.
  await lib.loadCheckpoint(`${d}/run`);
  await lib.exportCheckpoint(`${d}/run`, `${d}/run/export`, { format: "hf" });
  await lib.exportCheckpoint(`${d}/run`, `${d}/run/checkpoint/x`, { format: "hf" });
  await lib.loadCheckpoint(`${d}/run`);
});

Deno.test("library: an AbortSignal stops train() as SIGTERM does, saved and resumable", async () => {
  const data = await fixtureData(), d = await tempDir();
  const common = {
    data,
    preset: "tiny",
    threads: 1,
    quiet: true,
    recipe: "none",
    train: { steps: 6, evalExamples: 2 },
  } as const;
  // Aborted at step 3: the run saves there and says so; a resume finishes it.
  const ac = new AbortController();
  const r = await lib.train({
    ...common,
    out: `${d}/run`,
    signal: ac.signal,
    onLog: (rec) => {
      if (rec.kind === "train" && rec.step === 3) ac.abort();
    },
  });
  assertEquals([r.interrupted, r.steps, r.completed], ["SIGTERM", 3, false]);
  assertEquals((await lib.loadCheckpoint(`${d}/run`)).state.step, 3);
  const rest = await lib.train({ ...common, resume: `${d}/run` });
  assertEquals([rest.interrupted, rest.steps, rest.completed], [null, 6, true]);
  // Aborted before it starts: a fresh run saves nothing and leaves nothing.
  const r0 = await lib.train({ ...common, out: `${d}/none`, signal: AbortSignal.abort() });
  assertEquals([r0.interrupted, r0.steps, r0.nothingSaved], ["SIGTERM", 0, true]);
  await assertRejects(() => Deno.stat(`${d}/none`));
});

Deno.test("library: an AbortSignal stops runEval with an EvalStopped", async () => {
  const ck = `${await tempDir()}/ck`;
  await tinyCheckpoint(ck);
  await using s = await lib.openInference(ck, { backend: "cpu", threads: 1, maxBatch: 1 });
  const source = { file: "x.jsonl", line: 1 };
  const items: lib.EvalItem[] = [1, 2, 3, 4].map((i) => ({
    id: `x:${i}`,
    source,
    question: `Ann has ${i} pens.`,
    answer: String(i),
    math: null,
    nl: null,
  }));
  const ac = new AbortController();
  let batches = 0;
  const e = await assertRejects(
    () =>
      lib.runEval(s, items, {
        batch: 1,
        signal: ac.signal,
        onBatch: () => ++batches === 2 && ac.abort(),
      }),
    lib.EvalStopped,
  );
  assertEquals([e.signal, batches], ["SIGTERM", 2]);
  assert(e.message.startsWith("stopped by SIGTERM after 2 of 4 items"), e.message);
});

Deno.test("library: an AbortSignal stops buildDataset with a BuildStopped", async () => {
  const d = await tempDir();
  await Deno.writeTextFile(`${d}/train.jsonl`, fixtureTask(2500, 1));
  const spec = {
    splits: [{ name: "train", inputs: [`${d}/train.jsonl`] }],
    tokenizer: "compact",
  };
  for (const when of ["before", "build"] as const) {
    const out = `${d}/out-${when}`, ac = new AbortController();
    if (when === "before") ac.abort();
    const e = await assertRejects(
      () =>
        lib.buildDataset({ out, ...spec }, {
          signal: ac.signal,
          onProgress: (p) => p.phase === "build" && ac.abort(),
        }),
      lib.BuildStopped,
    );
    assertEquals([e.signal, e.written], ["SIGTERM", false]);
    await assertRejects(() => Deno.stat(out));
  }
});

Deno.test("library: the ONNX backend without onnxruntime or without --allow-env throws errors named for each", async () => {
  const d = await tempDir();
  const script = `${d}/open.ts`;
  await Deno.writeTextFile(
    script,
    `import { openInference } from "${ROOT}mod.ts";
try {
  await openInference("${d}/ck", { backend: "onnx" });
} catch (e) {
  console.log(\`\${(e as Error).name}: \${(e as Error).message}\`);
}
`,
  );
  const run = async (permissions: string[]) => {
    const r = await runDeno(["run", "--config", `${ROOT}deno.json`, ...permissions, script]);
    assertEquals(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  // Deno may not load onnxruntime-node's native code: it cannot be loaded.
  const load = await run(["--allow-read", "--allow-write", "--allow-env"]);
  assert(load.startsWith("OnnxRuntimeError: backend onnx: cannot load onnxruntime-node"), load);
  assert(load.includes("--allow-ffi") && load.endsWith("or use --backend cpu"), load);
  // It says to grant that permission for the node_modules onnxruntime-node loads from (a
  // linked one's target), not to install the packages again.
  const modules = Deno.realPathSync(`${ROOT}node_modules`);
  assert(
    load.endsWith(
      `; grant --allow-ffi=${modules} (onnxruntime-node's native library), or use --backend cpu`,
    ),
    load,
  );
  // The process may not switch its telemetry off: the variable and the permission are named.
  const env = await run(["--allow-read", "--allow-write", "--allow-ffi", "--allow-env=HOME"]);
  assertEquals(
    env,
    "EnvPermissionError: backend onnx: cannot set ORT_DISABLE_TELEMETRY=1, which keeps " +
      "onnxruntime-node off the network (its telemetry); grant --allow-env=ORT_DISABLE_TELEMETRY",
  );
});

Deno.test("library: train() refuses an option it does not have, as plain JavaScript can pass one", async () => {
  const data = await fixtureData(), out = `${await tempDir()}/run`;
  // A training setting beside train rather than in it would be ignored, and the default
  // recipe's whole length trained.
  const setting = await assertRejects(
    () => lib.train({ data, out, quiet: true, steps: 4 } as lib.TrainOptions),
    lib.TrainConfigError,
    'train(): "steps" is a training setting: give it in train, as train: { steps: ... }',
  );
  assertEquals(setting.flag, "--steps");
  await assertRejects(
    () => lib.train({ data, out, quiet: true, trheads: 1 } as lib.TrainOptions),
    lib.TrainConfigError,
    'train(): "trheads" is not an option (did you mean "threads"?)',
  );
  assert(!(await exists(out)), "nothing is written");
});

Deno.test("library: each stage refuses an option it does not have, naming it and the nearest", async () => {
  const d = await tempDir(), f = `${d}/test.jsonl`;
  await Deno.writeTextFile(f, fixtureTask(2, 1));
  // What a caller without TypeScript's checks can pass.
  const loose = (o: unknown) => o as never;
  const read = await assertRejects(
    () => Array.fromAsync(lib.readProblems(f, loose({ maxFieldByte: 100 }))),
    RangeError,
  );
  assertEquals(
    read.message,
    'readProblems: "maxFieldByte" is not an option (did you mean "maxFieldBytes"?)',
  );
  const notObject = await assertRejects(
    () => Array.fromAsync(lib.readProblems(f, loose("gsm8k"))),
    RangeError,
  );
  assertEquals(notObject.message, "readProblems: the options must be an object, not a string");
  const [p] = await Array.fromAsync(lib.readProblems(f));
  const seg = assertThrows(() => lib.segment(p, loose({ socractic: "keep" })), RangeError);
  assertEquals(seg.message, 'segment: "socractic" is not an option (did you mean "socratic"?)');
  // No name near: none suggested.
  const val = assertThrows(() => lib.validate(lib.segment(p), loose({ form: "nl" })), RangeError);
  assertEquals(val.message, 'validate: "form" is not an option');
  const items = await assertRejects(() => lib.loadEvalItems(f, loose({ limt: 1 })), RangeError);
  assertEquals(items.message, 'loadEvalItems: "limt" is not an option (did you mean "limit"?)');
  const tok = assertThrows(
    () => lib.fitCompactTokenizer(["12 + 30 = 42.\n"], loose({ maxVocabulary: 300 })),
    lib.TokenizerError,
  );
  assertEquals(
    tok.message,
    'fitCompactTokenizer: "maxVocabulary" is not an option (did you mean "maxVocab"?)',
  );

  // buildDataset: its options, a split's fields, a split's augment and synthetic, its hooks.
  const out = `${d}/data`;
  const split = { name: "train", inputs: [f] };
  for (
    const [opts, text] of [
      [
        { out, splits: [split], tokenizr: "compact" },
        'buildDataset: "tokenizr" is not an option (did you mean "tokenizer"?)',
      ],
      [
        { out, splits: [{ name: "train", input: [f] }] },
        'buildDataset: splits.0: "input" is not an option (did you mean "inputs"?)',
      ],
      // A split's field beside splits rather than in one.
      [
        { out, splits: [split], inputs: [f] },
        `buildDataset: "inputs" is a split's field: give it in splits, as splits: [{ name: ` +
        `"train", inputs: ... }]`,
      ],
      [
        { out, splits: [split], input: [f] },
        'buildDataset: "input" is not an option (did you mean "inputs"?)',
      ],
      [
        { out, splits: [{ ...split, augment: { variants: 1, sed: 3 } }] },
        'buildDataset: splits.0.augment: "sed" is not an option (did you mean "seed"?)',
      ],
      [
        { out, splits: [{ ...split, synthetic: { n: 4, maxstep: 3 } }] },
        'option splits.0.synthetic.maxstep: not an option (did you mean "maxSteps"?)',
      ],
    ] as const
  ) {
    const e = await assertRejects(() => lib.buildDataset(loose(opts)), lib.BuildError);
    assertEquals(e.message, text);
  }
  const hooks = await assertRejects(
    () => lib.buildDataset({ out, splits: [split] }, loose({ onProgres: () => {} })),
    lib.BuildError,
  );
  assertEquals(
    hooks.message,
    'buildDataset: hooks: "onProgres" is not an option (did you mean "onProgress"?)',
  );
  assert(!(await exists(out)), "nothing is built");

  // The checkpoint's stages: load, export, open, answer, evaluate, report.
  const ck = `${d}/ck`;
  await tinyCheckpoint(ck);
  const load = await assertRejects(
    () => lib.loadCheckpoint(ck, loose({ trainstate: "optional" })),
    RangeError,
  );
  assertEquals(
    load.message,
    'loadCheckpoint: "trainstate" is not an option (did you mean "trainState"?)',
  );
  const ex = await assertRejects(
    () => lib.exportCheckpoint(ck, `${d}/export`, loose({ formt: "hf" })),
    lib.ExportError,
  );
  assertEquals(ex.message, 'exportCheckpoint: "formt" is not an option (did you mean "format"?)');
  assert(!(await exists(`${d}/export`)), "nothing is exported");
  for (const backend of ["cpu", "onnx"] as const) {
    const open = await assertRejects(
      () => lib.openInference(ck, loose({ backend, maxBatchSize: 2 })),
      RangeError,
    );
    assertEquals(
      open.message,
      'openInference: "maxBatchSize" is not an option (did you mean "maxBatch"?)',
    );
  }
  const s = await lib.openInference(ck, { backend: "cpu", threads: 1 });
  try {
    const q = "Ann has 2 pens.";
    const answer = await assertRejects(() => s.answer([q], loose({ maxTokens: 4 })), RangeError);
    assertEquals(
      answer.message,
      'answer(): "maxTokens" is not an option (did you mean "maxNewTokens"?)',
    );
    const source = { file: "x.jsonl", line: 1 };
    const evalItems: lib.EvalItem[] = [
      { id: "x:1", source, question: q, answer: "2", math: ["<<2=2>>"], nl: null },
    ];
    const run = await assertRejects(
      () => lib.runEval(s, evalItems, loose({ batchSize: 1 })),
      RangeError,
    );
    assertEquals(run.message, 'runEval: "batchSize" is not an option (did you mean "batch"?)');
    const result = await lib.runEval(s, evalItems, { batch: 1 });
    const prov: lib.EvalProvenance = {
      checkpoint: ck,
      data: "x.jsonl",
      format: "gsm8k",
      backend: s.backend,
      mode: s.meta.train.mode,
      preset: s.meta.preset,
      cot: s.meta.data.cot,
    };
    const report = await assertRejects(
      () => lib.writeEvalOutputs(`${d}/eval`, prov, result, loose({ readoutExample: 2 })),
      RangeError,
    );
    assertEquals(
      report.message,
      'writeEvalOutputs: "readoutExample" is not an option (did you mean "readoutExamples"?)',
    );
    assert(!(await exists(`${d}/eval`)), "nothing is written");
    // A provenance missing a field, with one misspelt, or of the wrong type names the field
    // (it failed part way, as if the files could not be written).
    const { mode: _, ...noMode } = prov;
    for (
      const [bad, text] of [
        [noMode, 'field "prov.mode": Invalid input: expected string, received undefined'],
        [
          { ...prov, batch: "1" },
          'field "prov.batch": Invalid input: expected number, received string',
        ],
        [
          { ...prov, chekpoint: ck },
          'prov: "chekpoint" is not an option (did you mean "checkpoint"?)',
        ],
        [null, "prov: the options must be an object, not null"],
      ] as const
    ) {
      const e = await assertRejects(
        () => lib.writeEvalOutputs(`${d}/eval`, loose(bad), result),
        RangeError,
      );
      assertEquals(e.message, `writeEvalOutputs: ${text}`);
    }
    assert(!(await exists(`${d}/eval`)), "nothing is written");
    // Items that are not an array (readEvalItems' stream, a path) are named as such.
    const items = await assertRejects(() => lib.runEval(s, loose("test.jsonl")), RangeError);
    assert(items.message.startsWith("runEval: items must be an array of EvalItem"), items.message);
    // answer()'s single r given to the sweep was passed over, and the default R run.
    const r = await assertRejects(() => lib.runEval(s, evalItems, loose({ r: 2 })), RangeError);
    assertEquals(r.message, "runEval: r = 2: give a list of loop counts to sweep, as r: [2]");
    const readout = await assertRejects(
      () => lib.runEval(s, evalItems, loose({ readout: "no" })),
      RangeError,
    );
    assertEquals(readout.message, 'runEval: readout = "no": must be a boolean');
  } finally {
    await s.close();
  }
});

Deno.test("library: a misspelt split is named with the split meant; loadSplit checks its options", async () => {
  const data = await fixtureData();
  const missing = await assertRejects(() => loadSplit(data, "trian"), lib.DatasetError);
  assertEquals(
    missing.message,
    `${data}: has no split "trian" (it has: train, valid); did you mean "train"?`,
  );
  // No split near: only the build is suggested.
  const other = await assertRejects(() => loadSplit(data, "test"), lib.DatasetError);
  assert(
    other.message.endsWith(
      "(it has: train, valid); build it with deno task " +
        `build-dataset --input FILE --split test --out ${data}`,
    ),
    other.message,
  );
  const items = await assertRejects(() => lib.loadEvalItems(data, { split: "vaild" }));
  assert(
    items.message.endsWith('did you mean "valid"? Pass one of those with --split'),
    items.message,
  );
  // An unknown verify mode would have verified less than asked, without a word.
  const verify = await assertRejects(
    () => loadSplit(data, "train", { verify: "ful" as lib.VerifyMode }),
    RangeError,
  );
  assertEquals(verify.message, 'loadSplit: verify "ful": use basic or full');
  const key = await assertRejects(
    () => loadSplit(data, "train", { verfy: "full" } as never),
    RangeError,
  );
  assertEquals(key.message, 'loadSplit: "verfy" is not an option (did you mean "verify"?)');
  const runDir = `${await tempDir()}/run`;
  const val = await assertRejects(
    () =>
      lib.train({
        data,
        out: runDir,
        recipe: "none",
        valSplit: "vaild",
        train: { steps: 1 },
        threads: 1,
        quiet: true,
      }),
    lib.TrainConfigError,
  );
  assert(
    val.message.endsWith('(it has train, valid); did you mean "valid"? Or name one of those'),
    val.message,
  );
});

Deno.test("library: a boolean, string or function option of another kind is refused, naming it", async () => {
  // What plain JavaScript can pass: a truthy "off" switched recompute on, a truthy "no"
  // replaced whatever the export's out held, a string onLog failed part way.
  const data = await fixtureData(), d = await tempDir();
  const loose = (o: unknown) => o as never;
  const run = (extra: Record<string, unknown>) =>
    lib.train(loose({
      data,
      out: `${d}/run`,
      recipe: "none",
      train: { steps: 1 },
      threads: 1,
      quiet: true,
      ...extra,
    }));
  for (
    const [extra, flag, text] of [
      [{ recompute: "off" }, "--recompute", 'recompute = "off": must be a boolean'],
      [{ quiet: "no" }, "--quiet", 'quiet = "no": must be a boolean'],
      [{ overwrite: 1 }, "--overwrite", "overwrite = 1: must be a boolean"],
      [{ onLog: "log" }, "--on-log", 'onLog = "log": must be a function'],
      [{ valSplit: 2 }, "--val-split", "valSplit = 2: must be a string"],
      [{ signal: "stop" }, "--signal", 'signal = "stop": must be an AbortSignal'],
      // null read as no settings: the default recipe's whole length.
      [{ train: null }, "--train", "train = null: must be an object"],
      [{ train: [] }, "--train", "train = []: must be an object"],
    ] as const
  ) {
    const e = await assertRejects(() => run(extra), lib.TrainConfigError);
    assertEquals([e.flag, e.message], [flag, `train(): ${text}`]);
  }
  assert(!(await exists(`${d}/run`)), "nothing is written");
  const ck = `${d}/ck`;
  await tinyCheckpoint(ck);
  const open = await assertRejects(() => lib.openInference(ck, loose({ quiet: "no" })), RangeError);
  assertEquals(open.message, 'openInference: quiet = "no": must be a boolean');
  const s = await lib.openInference(ck, { backend: "cpu", threads: 1 });
  try {
    const a = await assertRejects(() =>
      s.answer(["Ann has 2 pens."], loose({ latentLogits: "yes" }))
    );
    assertEquals(a.message, 'answer(): latentLogits = "yes": must be a boolean');
  } finally {
    await s.close();
  }
  await Deno.mkdir(`${d}/mine`);
  await Deno.writeTextFile(`${d}/mine/notes.txt`, "keep me");
  const ex = await assertRejects(
    () => lib.exportCheckpoint(ck, `${d}/mine`, loose({ replaceAny: "no" })),
    lib.ExportError,
  );
  assertEquals(ex.message, 'exportCheckpoint: replaceAny = "no": must be a boolean');
  assertEquals(await Deno.readTextFile(`${d}/mine/notes.txt`), "keep me");
  const f = `${d}/test.jsonl`;
  await Deno.writeTextFile(f, fixtureTask(2, 1));
  const read = await assertRejects(
    () => Array.fromAsync(lib.readProblems(f, loose({ onSkip: "warn" }))),
    RangeError,
  );
  assertEquals(read.message, 'readProblems: onSkip = "warn": must be a function');
  const items = await assertRejects(
    () => lib.loadEvalItems(f, loose({ onSkip: true })),
    RangeError,
  );
  assertEquals(items.message, "loadEvalItems: onSkip = true: must be a function");
  const build = await assertRejects(
    () =>
      lib.buildDataset(
        { out: `${d}/data`, splits: [{ name: "train", inputs: [f] }], tokenizer: "compact" },
        loose({ onProgress: "bar" }),
      ),
    lib.BuildError,
  );
  assertEquals(build.message, 'buildDataset: hooks: onProgress = "bar": must be a function');
});

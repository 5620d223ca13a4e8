/**
 * The trainer end to end on the CPU engine: a tiny model learns a small task; checkpoints
 * round-trip; an interrupted and resumed run is bit-identical to an uninterrupted one; bad
 * configurations and bad safetensors files are rejected with clear errors.
 */
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertRejects,
  assertThrows,
} from "./_assert.ts";
import { train } from "../train/recipe.ts";
import {
  CheckpointError,
  loadCheckpoint,
  loadHfInit,
  saveCheckpoint,
} from "../model/checkpoint.ts";
import { ModelConfigSchema, presetConfig, TrainConfigSchema } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { getTensor, readSafetensors, writeSafetensors } from "../base/safetensors.ts";
import { parseTrainArgs } from "../cli/train.ts";
import { tempDir } from "./_tmp.ts";
import { exists } from "../base/exists.ts";
import { readTrainLog } from "../train/run_log.ts";
import { fixtureData } from "./_task.ts";
import { tinySpecials, tinyTokenizerJson } from "./_tiny.ts";

const tmp = tempDir;

/** The options every small training here shares: the tiny preset on the CPU engine, quietly. */
const TINY_CPU = { preset: "tiny", backend: "cpu", quiet: true } as const;

Deno.test("a tiny LOTUS model learns a two-step task on the CPU: loss falls 10x, accuracy far above chance", async () => {
  const data = await fixtureData();
  const out = await tmp();
  const losses: number[] = [];
  const res = await train({
    data,
    out,
    preset: "tiny",
    backend: "cpu",
    quiet: true,
    recipe: "none",
    train: { k: 2, c: 10, epochs: 24, batch: 16, lr: 3e-3, evalExamples: 60, seed: 0 },
    onLog: (r) => {
      if (r.kind === "train") losses.push(r.loss!);
    },
  });
  const first = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
  const last = losses.slice(-5).reduce((a, b) => a + b) / 5;
  assert(first / last > 10, `loss fell only from ${first} to ${last}`);
  console.log(
    `fixture task: loss ${first.toFixed(3)} -> ${last.toFixed(3)}, accuracy ${res.valAccuracy}`,
  );
  assert(res.valAccuracy! >= 0.5, `validation accuracy ${res.valAccuracy} (chance < 3%)`);
  // the run directory holds logs and a loadable checkpoint
  const log = await Deno.readTextFile(`${out}/log.csv`);
  assert(log.split("\n")[0].startsWith("kind,step,epoch"), "log.csv header");
  const ck = await loadCheckpoint(out);
  assertEquals(ck.state.step, res.steps);
});

Deno.test("checkpoint round trip, with Hugging Face names and Conv1D layout", async () => {
  const dir = await tmp();
  const cfg = ModelConfigSchema.parse({
    vocabSize: 20,
    maxPositions: 16,
    dModel: 8,
    nHead: 2,
    nLayer: 1,
  });
  const layout = paramLayout(cfg);
  const params = initParams(layout, cfg, 3);
  const sp = tinySpecials(20);
  const state = {
    step: 7,
    epoch: 1,
    batchInEpoch: 2,
    rng: 5,
    bestAccuracy: 0.5,
    bestStep: -1,
    tokens: 100,
    seconds: 3,
  };
  const m = new Float32Array(layout.total).fill(0.25), v = new Float32Array(layout.total).fill(0.5);
  await saveCheckpoint(`${dir}/ck`, {
    meta: {
      model: cfg,
      train: TrainConfigSchema.parse({}),
      special: sp,
      data: { dir: "d", cot: "math", k: 6, c: 13 },
      preset: "tiny",
    },
    params,
    moments: { m, v },
    state,
    tokenizerJson: tinyTokenizerJson(20),
  });
  const back = await loadCheckpoint(`${dir}/ck`, { withOptimizer: true });
  assertEquals(Array.from(back.params), Array.from(params));
  assertEquals(back.state, state);
  assertEquals(back.moments!.m[3], 0.25);
  const st = await readSafetensors(`${dir}/ck/model.safetensors`);
  const w = getTensor(st, "transformer.h.0.attn.c_attn.weight", "F32", [8, 24]);
  const t = layout.tensors.find((x) => x.name === "transformer.h.0.attn.c_attn.weight")!;
  // ours is [out=24, in=8]; Hugging Face's Conv1D is [in, out]
  assertEquals(w[1 * 24 + 5], params[t.offset + 5 * 8 + 1]);
  const hf = JSON.parse(await Deno.readTextFile(`${dir}/ck/config.json`));
  assertEquals([hf.model_type, hf.n_embd, hf.n_layer, hf.vocab_size], ["gpt2", 8, 1, 20]);
  // saving again replaces the checkpoint atomically and leaves no temporary directories
  await saveCheckpoint(`${dir}/ck`, { ...back, state: { ...state, step: 8 } });
  assertEquals((await loadCheckpoint(`${dir}/ck`)).state.step, 8);
  const names = [...Deno.readDirSync(dir)].map((e) => e.name);
  assertEquals(names, ["ck"]);
});

Deno.test("an interrupted and resumed run ends bit-identical to an uninterrupted one", async () => {
  const data = await fixtureData();
  const a = await tmp(), b = await tmp();
  const t = {
    k: 2,
    c: 10,
    steps: 24,
    batch: 8,
    lr: 2e-3,
    evalExamples: 4,
    epochsPerStage: 0,
    seed: 4,
  };
  await train({
    data,
    out: a,
    preset: "tiny",
    backend: "cpu",
    quiet: true,
    recipe: "none",
    train: t,
  });
  await train({
    data,
    out: b,
    preset: "tiny",
    backend: "cpu",
    quiet: true,
    recipe: "none",
    train: t,
    stopAfter: 10,
  });
  assertEquals((await loadCheckpoint(b)).state.step, 10);
  await train({ data, out: b, preset: "tiny", backend: "cpu", quiet: true, train: {}, resume: b });
  const pa = (await loadCheckpoint(a)).params, pb = (await loadCheckpoint(b)).params;
  assertEquals(pa.length, pb.length);
  let diff = 0;
  for (let i = 0; i < pa.length; i++) if (pa[i] !== pb[i]) diff++;
  assertEquals(diff, 0, `${diff} parameters differ after resume`);
  // the resumed log has exactly one record per step
  const steps = (await Deno.readTextFile(`${b}/log.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  )
    .filter((r) => r.kind === "train").map((r) => r.step);
  assertEquals(steps, Array.from({ length: 24 }, (_, i) => i + 1));
});

Deno.test("bad configurations are rejected with the field named", () => {
  assertThrows(() => TrainConfigSchema.parse({ lr: -1 }));
  assertThrows(
    () =>
      ModelConfigSchema.parse({
        vocabSize: 100,
        maxPositions: 64,
        dModel: 30,
        nHead: 4,
        nLayer: 1,
      }),
    Error,
    "nHead",
  );
  assertThrows(() => parseTrainArgs(["--preset", "huge"]), Error, "--preset");
  assertThrows(() => parseTrainArgs(["--lr", "fast"]), Error, "--lr");
  assertThrows(() => parseTrainArgs(["--bogus", "1"]), Error, "bogus");
  assertEquals(parseTrainArgs(["--help"]), "help");
  assertEquals(presetConfig("small", 4096).dModel, 256);
});

Deno.test("a safetensors file with wrong names or shapes is rejected by --init and by checkpoint loading", async () => {
  const dir = await tmp();
  const cfg = ModelConfigSchema.parse({
    vocabSize: 20,
    maxPositions: 16,
    dModel: 8,
    nHead: 2,
    nLayer: 1,
  });
  const base = initParams(paramLayout(cfg), cfg, 1);
  await writeSafetensors(`${dir}/wrong_name.safetensors`, {
    "transformer.wte.weight": { dtype: "F32", shape: [20, 8], data: new Float32Array(160) },
  });
  await assertRejects(
    () => loadHfInit(`${dir}/wrong_name.safetensors`, cfg, base),
    CheckpointError,
    "transformer.wpe.weight",
  );
  // a real GPT-2 layout but the wrong width
  const other = ModelConfigSchema.parse({
    vocabSize: 20,
    maxPositions: 16,
    dModel: 4,
    nHead: 2,
    nLayer: 1,
  });
  const { toHfTensors } = await import("../model/checkpoint.ts");
  await writeSafetensors(
    `${dir}/narrow.safetensors`,
    toHfTensors(initParams(paramLayout(other), other, 1), paramLayout(other), "transformer."),
  );
  await assertRejects(
    () => loadHfInit(`${dir}/narrow.safetensors`, cfg, base),
    CheckpointError,
    "has shape",
  );
  // names without the "transformer." prefix (the original GPT-2 layout) are accepted, and a
  // smaller vocabulary leaves the new rows for the caller
  const t = toHfTensors(base, paramLayout(cfg), "transformer.");
  const short: Record<string, (typeof t)[string]> = {};
  for (const [k, v] of Object.entries(t)) short[k.replace(/^transformer\./, "")] = v;
  short["wte.weight"] = {
    dtype: "F32",
    shape: [17, 8],
    data: (t["transformer.wte.weight"].data as Float32Array).slice(0, 136),
  };
  await writeSafetensors(`${dir}/short.safetensors`, short);
  const r = await loadHfInit(`${dir}/short.safetensors`, cfg, new Float32Array(base.length));
  assertEquals(r.vocabRows, 17);
  await assertRejects(
    () => loadCheckpoint(`${dir}/nowhere`),
    CheckpointError,
    `${dir}/nowhere: no such checkpoint (nothing is there)`,
  );
});

Deno.test("with dropout, an interrupted and resumed run still ends bit-identical", async () => {
  const data = await fixtureData();
  const a = await tmp(), b = await tmp();
  const t = { steps: 12, batch: 8, lr: 2e-3, evalExamples: 4, seed: 5, dropout: 0.1 };
  const common = {
    data,
    ...TINY_CPU,
    recipe: "none" as const,
  };
  await train({ ...common, out: a, train: t });
  await train({ ...common, out: b, train: t, stopAfter: 5 });
  await train({ ...common, out: b, resume: b });
  const pa = (await loadCheckpoint(a)).params, pb = (await loadCheckpoint(b)).params;
  let diff = 0;
  for (let i = 0; i < pa.length; i++) if (pa[i] !== pb[i]) diff++;
  assertEquals(diff, 0, `${diff} parameters differ after resume`);
  // And dropout changed the run: without it the weights differ.
  const c = await tmp();
  await train({ ...common, out: c, train: { ...t, dropout: 0 } });
  const pc = (await loadCheckpoint(c)).params;
  assert(pc.some((v, i) => v !== pa[i]), "dropout 0.1 trains differently from none");
});

Deno.test("a LOTUS run starts from a CoT run's directory and keeps the final stage's best", async () => {
  const data = await fixtureData();
  const cot = await tmp(), lotus = await tmp();
  const common = {
    data,
    ...TINY_CPU,
    recipe: "none" as const,
  };
  await train({
    ...common,
    out: cot,
    train: { mode: "cot", epochs: 3, batch: 32, lr: 3e-3, keepBest: true, evalExamples: 8 },
  });
  // A baseline has one stage: every epoch ends in an evaluation.
  const cotEvals = (await readTrainLog(cot)).filter((r) => r.kind === "eval");
  assertEquals(cotEvals.length, 3);
  const res = await train({
    ...common,
    out: lotus,
    init: cot,
    train: {
      batch: 16,
      epochs: 4,
      epochsPerStage: 1,
      keepBest: true,
      evalExamples: 8,
      lr: 1e-3,
    },
  });
  // k = 2: stages 0 and 1, then the final stage 2 from epoch 2: its two epochs end in an eval.
  const best = await loadCheckpoint(`${lotus}/best`);
  const stepsPerEpoch = res.steps / 4;
  assert(best.state.bestStep >= 2 * stepsPerEpoch, `best at step ${best.state.bestStep}`);
  const summary = JSON.parse(await Deno.readTextFile(`${lotus}/summary.json`));
  assertEquals(summary.best.step, best.state.step);
  const evals = (await readTrainLog(lotus)).filter((r) => r.kind === "eval");
  assert(evals.filter((r) => r.stage === 2).length >= 2, JSON.stringify(evals));
  // The LOTUS run started from the CoT weights, not from a fresh initialisation.
  const fresh = await tmp();
  await train({ ...common, out: fresh, train: { batch: 16, steps: 1, lr: 1e-9, evalExamples: 1 } });
  const started = await tmp();
  await train({
    ...common,
    out: started,
    init: `${cot}/checkpoint`,
    train: { batch: 16, steps: 1, lr: 1e-9, evalExamples: 1 },
  });
  const c = (await loadCheckpoint(cot)).params, s = (await loadCheckpoint(started)).params;
  const f = (await loadCheckpoint(fresh)).params;
  const near = (a: Float32Array, b: Float32Array) => a.every((v, i) => Math.abs(v - b[i]) < 1e-3);
  assert(near(s.subarray(0, 1000), c.subarray(0, 1000)), "starts from the CoT weights");
  assert(!near(s.subarray(0, 1000), f.subarray(0, 1000)), "not from a fresh initialisation");
});

Deno.test("--init at a run of this project reads the run's settings once", async () => {
  const data = await fixtureData();
  const common = {
    data,
    ...TINY_CPU,
    threads: 1,
    recipe: "none" as const,
  };
  const cot = await tmp(), out = await tmp();
  await train({ ...common, out: cot, train: { mode: "cot", steps: 1, batch: 8, evalExamples: 1 } });
  // The settings --init's run trained with are in its checkpoint's config.json.
  const config = `${cot}/checkpoint/config.json`;
  const read: string[] = [];
  const d = Deno as { readTextFile: typeof Deno.readTextFile };
  const readTextFile = d.readTextFile;
  d.readTextFile = (path, o) => (read.push(String(path)), readTextFile(path, o));
  try {
    await train({ ...common, out, init: cot, train: { steps: 1, batch: 8, evalExamples: 1 } });
  } finally {
    d.readTextFile = readTextFile;
  }
  assertEquals(read.filter((p) => p === config).length, 1, read.join("\n"));
  assertEquals((await loadCheckpoint(out)).meta.preset, "tiny");
});

Deno.test("LOTUS by default trains its CoT start first; a stop in it resumes both phases exactly", async () => {
  const data = await fixtureData();
  const common = {
    data,
    ...TINY_CPU,
    threads: 1,
  };
  const t = { k: 2, cotStartEpochs: 2, epochs: 3, batch: 32, evalExamples: 4, seed: 3 };
  const a = await tmp();
  const res = await train({ ...common, out: a, train: t });
  assert(res.completed && res.cotStart?.completed, "both phases complete");
  const cot = await loadCheckpoint(`${a}/cot-start/best`);
  assertEquals([cot.meta.train.mode, cot.meta.train.lr, cot.meta.train.epochs], ["cot", 3e-3, 2]);
  const lotus = await loadCheckpoint(a);
  // The from-cot recipe: a third of the preset's rate, one epoch per stage, the best kept.
  assertEquals(lotus.meta.train.mode, "lotus");
  assertAlmostEquals(lotus.meta.train.lr, 1e-3, 1e-12);
  assertEquals([lotus.meta.train.epochsPerStage, lotus.meta.train.keepBest], [1, true]);
  const plan = JSON.parse(await Deno.readTextFile(`${a}/plan.json`));
  assertEquals(plan.phase, "lotus");

  // Stopped in the CoT start, then resumed from the run directory: the same weights.
  const b = await tmp();
  const stopped = await train({ ...common, out: b, train: t, stopAfter: 3 });
  assertEquals([stopped.completed, stopped.steps], [false, 3]);
  assertEquals(JSON.parse(await Deno.readTextFile(`${b}/plan.json`)).phase, "cot-start");
  const resumed = await train({ ...common, resume: b, out: b });
  assert(resumed.completed, "the resumed run completes");
  const pa = lotus.params, pb = (await loadCheckpoint(b)).params;
  let diff = 0;
  for (let i = 0; i < pa.length; i++) if (pa[i] !== pb[i]) diff++;
  assertEquals(diff, 0, `${diff} parameters differ after a resume in the CoT start`);

  // stopAfter counts the steps of both phases in one process: stopped as the CoT start ends,
  // LOTUS has not started (its first step comes with the resume), and the result says so.
  const cotSteps = res.cotStart!.steps, e = await tmp();
  const atEnd = await train({ ...common, out: e, train: t, stopAfter: cotSteps });
  assertEquals([atEnd.completed, atEnd.steps, atEnd.cotStart], [false, cotSteps, undefined]);
  assertEquals(JSON.parse(await Deno.readTextFile(`${e}/plan.json`)).phase, "lotus");
  assertEquals(await exists(`${e}/checkpoint/config.json`), false);
  const two = await train({ ...common, resume: e, out: e, stopAfter: 2 });
  assertEquals([two.completed, two.steps], [false, 2]);
  const f = await tmp();
  const across = await train({ ...common, out: f, train: t, stopAfter: cotSteps + 2 });
  assertEquals([across.completed, across.steps, across.cotStart?.steps], [false, 2, cotSteps]);

  // A baseline, an explicit recipe "none", or an --init run directory trains one phase.
  const c = await tmp();
  const one = await train({
    ...common,
    out: c,
    init: `${a}/cot-start`,
    train: { ...t, epochs: 1 },
  });
  assertEquals(one.cotStart, undefined);
  assertEquals(await exists(`${c}/cot-start`), false);
});

/** max |a[i] - b[i]|. */
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assertEquals(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

// Micro-batches: LOTUS across stage 0 -> 1, LOTUS-aux with the in-loop step loss and reads
// (denominators of every head), and explicit CoT; batches of 7 in parts of 3, 3 and 1.
for (
  const t of [
    { mode: "lotus", stepsPerStage: 2 },
    { mode: "lotus-aux", stepsPerStage: 2, stepLoss: "in-loop", auxReads: "in-loop" },
    { mode: "cot" },
  ] as const
) {
  Deno.test(`${t.mode}: a step in micro-batches is the whole batch's step, to float rounding`, async () => {
    const data = await fixtureData();
    const cfg = { ...t, steps: 4, batch: 7, evalExamples: 5, seed: 2 };
    const run = async (microBatch?: number, steps = cfg.steps) => {
      const out = await tmp();
      const res = await train({
        ...TINY_CPU,
        data,
        out,
        recipe: "none",
        threads: 1,
        microBatch,
        train: { ...cfg, steps },
      });
      const recs = (await readTrainLog(out)).filter((r) => r.kind === "train");
      return {
        res,
        loss: recs.map((r) => r.loss as number),
        params: (await loadCheckpoint(out)).params,
      };
    };
    const whole = await run(), parts = await run(3), wide = await run(7);
    // A micro-batch of the whole batch is the step as it was, to the bit.
    assertEquals(wide.loss, whole.loss);
    assertEquals(maxAbsDiff(wide.params, whole.params), 0);
    const dl = maxAbsDiff(parts.loss, whole.loss), dw = maxAbsDiff(parts.params, whole.params);
    console.log(
      `${t.mode}, micro-batches of 3 against batches of 7: max |loss diff| ` +
        `${dl.toExponential(2)}, max |weight diff| ${dw.toExponential(2)} over 4 steps`,
    );
    assert(dl <= 1e-5, `loss differs by ${dl}`);
    // AdamW's update is at most lr (3e-3) a step: summation order moves it by a small part.
    const tol = 0.02 * 3e-3;
    assert(dw <= tol, `weights differ by ${dw}`);
    // The steps moved the weights far more than that.
    assert(maxAbsDiff((await run(undefined, 1)).params, whole.params) > 100 * tol);
    assertEquals(parts.res.valAccuracy, whole.res.valAccuracy);
  });
}

Deno.test("--micro-batch takes a whole number of examples, at least 1", async () => {
  for (const bad of [0, 1.5]) {
    const e = await assertRejects(
      () => train({ ...TINY_CPU, data: "unused", out: "unused", microBatch: bad }),
    );
    assertEquals(
      (e as Error).message,
      `--micro-batch ${bad}: give a whole number of examples, at least 1`,
    );
  }
  assertEquals((parseTrainArgs(["--micro-batch", "4"]) as { microBatch: number }).microBatch, 4);
  assertThrows(() => parseTrainArgs(["--micro-batch", "0"]), Error, "--micro-batch");
});

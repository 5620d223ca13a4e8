// Training under faults: a diverging run stops before it updates the weights and never saves a
// non-finite one; SIGINT and SIGTERM stop `deno task train` within a step, with a resumable
// checkpoint (before a fresh run's first step, with nothing saved and no run left behind to
// block the same command); a resume that contradicts the saved run or its dataset is refused,
// naming the flag; a log line cut short by a kill does not block a resume; the library
// resolves K, c and the learning rate from the dataset and the preset, and says when a run
// cannot leave stage 0.
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { train } from "../train/recipe.ts";
import { NonFiniteError } from "../train/trainer.ts";
import { curriculumNotes, TrainConfigError, unusedSettingNotes } from "../train/options.ts";
import { parseTrainConfig, type TrainConfig } from "../model/config.ts";
import { parseTrainArgs, trainSettings } from "../cli/train.ts";
import {
  CheckpointError,
  loadCheckpoint,
  readSavedTrainState,
  saveCheckpoint,
} from "../model/checkpoint.ts";
import { readTrainLog } from "../train/run_log.ts";
import {
  loggedRecords,
  ROOT,
  runDeno,
  signalAtPreload,
  signalInEvalPreload,
  TASK_PERMISSIONS,
} from "./_run.ts";
import { probeCuda } from "../engine/cuda_probe.ts";
import { tempDir } from "./_tmp.ts";
import { exists } from "../base/exists.ts";
import { fixtureData, fixtureTask } from "./_task.ts";
import { ManifestError } from "../pipeline/manifest.ts";
import { DatasetError } from "../pipeline/shard.ts";
import { buildDataset } from "../pipeline/build.ts";
import { makeRunDir, removeMadeDirs } from "../train/run_dir.ts";
import { exportCheckpoint } from "../export/export.ts";

const base = {
  preset: "tiny" as const,
  backend: "cpu" as const,
  quiet: true,
  threads: 1,
  recipe: "none" as const,
};
const short = { steps: 6, batch: 8, evalExamples: 4, epochsPerStage: 0 };

function allFinite(a: Float32Array): boolean {
  return a.every((x) => Number.isFinite(x));
}

/** The lines `f` prints on stderr (console.error) while it runs. */
async function stderrOf(f: () => Promise<unknown>): Promise<string[]> {
  const said: string[] = [], error = console.error;
  console.error = (...a: unknown[]) => void said.push(a.join(" "));
  try {
    await f();
  } finally {
    console.error = error;
  }
  return said;
}

Deno.test("faults: a huge learning rate stops the run before a non-finite update", async () => {
  const data = await fixtureData(), out = await tempDir();
  const err = await assertRejects(
    () => train({ ...base, data, out, train: { ...short, steps: 40, lr: 1e6, clip: 0 } }),
    NonFiniteError,
  );
  assert(/step \d+: the loss is .* and the gradient norm/.test(err.message), err.message);
  const ck = await loadCheckpoint(out);
  assert(allFinite(ck.params), "the saved weights are finite");
  assertEquals(ck.state.step, err.step - 1, "the checkpoint is the last good step");
});

Deno.test("faults: a --max-new-tokens past the context ends the evaluation's answers at its end", async () => {
  const data = await fixtureData();
  for (const mode of ["cot", "lotus"] as const) {
    const out = await tempDir();
    const r = await train({
      ...base,
      data,
      out,
      train: { ...short, steps: 1, mode, k: 1, maxNewTokens: 1e6 },
    });
    assert(r.completed && r.valAccuracy !== undefined, `${mode}: evaluated`);
    assert(await exists(`${out}/checkpoint/config.json`), `${mode}: saved`);
  }
});

Deno.test("faults: without a validation split, the command says the accuracy is the training set's", async () => {
  const d = await tempDir();
  await Deno.writeTextFile(`${d}/train.jsonl`, fixtureTask(40, 1));
  await buildDataset({
    out: `${d}/data`,
    splits: [{ name: "train", inputs: [`${d}/train.jsonl`] }],
    tokenizer: "compact",
  });
  const r = await train({ ...base, data: `${d}/data`, out: `${d}/run`, train: short });
  assertEquals([r.evalOnTraining, r.valAccuracy !== undefined], [true, true]);
  const withValid = await train({
    ...base,
    data: await fixtureData(),
    out: `${d}/run2`,
    train: short,
  });
  assertEquals(withValid.evalOnTraining, undefined);
  const cli = await runDeno([
    "run",
    ...TASK_PERMISSIONS,
    "cli/train.ts",
    "--data",
    `${d}/data`,
    "--out",
    `${d}/run3`,
    "--steps",
    "1",
    "--batch",
    "8",
    "--eval-examples",
    "4",
    "--recipe",
    "none",
    "--threads",
    "1",
    "--quiet",
  ]);
  assertEquals(cli.code, 0, cli.stderr);
  assert(cli.stdout.includes(", training-set accuracy (no usable validation split) "), cli.stdout);
});

Deno.test("faults: an infinite gradient (lambda 1e30) stops at its first step", async () => {
  const data = await fixtureData(), out = await tempDir();
  const err = await assertRejects(
    () => train({ ...base, data, out, train: { ...short, lambda: 1e30 } }),
    NonFiniteError,
  );
  assertEquals(err.step, 1);
  assert(allFinite((await loadCheckpoint(out)).params));
  // The flag the message suggests is one `deno task train` takes.
  const flag = err.message.match(/pass (--[a-z-]+) (\w+)/);
  assert(flag, err.message);
  const args = parseTrainArgs(["--data", "d", flag[1], flag[2]]);
  assert(args !== "help");
  assertEquals(trainSettings(args).onNonFinite, "skip");
});

Deno.test("faults: --on-non-finite skip steps over bad updates, then stops after ten", async () => {
  const data = await fixtureData(), out = await tempDir();
  const err = await assertRejects(
    () =>
      train({
        ...base,
        data,
        out,
        train: { ...short, steps: 30, lambda: 1e30, onNonFinite: "skip" },
      }),
    NonFiniteError,
  );
  assertEquals(err.step, 11);
  assert(err.message.includes("11 such steps in a row"), err.message);
  assert(!err.message.includes("pass --on-non-finite"), "the run already skips: " + err.message);
  // The skipped steps are in the log, their NaN loss written as null and read back as NaN.
  const log = await readTrainLog(out);
  const trainRecs = log.filter((r) => r.kind === "train");
  assertEquals(trainRecs.length, 10);
  assert(trainRecs.every((r) => !Number.isFinite(r.gradNorm!)), "gradient norms read as NaN");
  // The checkpoint records that no update was applied, so that a resume's AdamW bias
  // correction counts the updates, not the steps.
  const ck = await loadCheckpoint(out);
  assertEquals([ck.state.step, ck.state.updates], [10, 0]);
});

Deno.test("faults: a checkpoint with a non-finite weight or moment is never written", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: short });
  const ck = await loadCheckpoint(out, { withOptimizer: true });
  const before = await Deno.readFile(`${out}/checkpoint/model.safetensors`);
  const bad = ck.params.slice();
  bad[7] = NaN;
  const err = await assertRejects(
    () => saveCheckpoint(`${out}/checkpoint`, { ...ck, params: bad }),
    CheckpointError,
  );
  assert(err.message.includes("[7] = NaN"), err.message);
  const v = ck.moments!.v.slice();
  v[3] = Infinity;
  await assertRejects(
    () => saveCheckpoint(`${out}/checkpoint`, { ...ck, moments: { m: ck.moments!.m, v } }),
    CheckpointError,
  );
  assertEquals(await Deno.readFile(`${out}/checkpoint/model.safetensors`), before);
});

Deno.test("faults: a resume that contradicts the saved run names the flag", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: { ...short, lr: 2e-3 } });
  for (
    const [given, flag] of [
      [{ lr: 1e-3 }, "--lr"],
      [{ batch: 4 }, "--batch"],
      [{ mode: "cot" }, "--mode"],
      [{ warmupSteps: 3 }, "--warmup"],
    ] as const
  ) {
    const err = await assertRejects(
      () => train({ ...base, data, out, resume: out, train: given }),
      TrainConfigError,
    );
    assertEquals(err.flag, flag);
    assert(err.message.startsWith(flag), err.message);
  }
  await assertRejects(
    () => train({ ...base, preset: "small", data, out, resume: out }),
    TrainConfigError,
    "--preset",
  );
  // --steps may change: the run goes on to the new total.
  const r = await train({ ...base, data, out, resume: out, train: { steps: 8 } });
  assertEquals(r.steps, 8);
  // A resume with nothing left to train reports the loss of the last step, from the log.
  await Deno.remove(`${out}/summary.json`);
  const log = await readTrainLog(out);
  const lastLoss = log.findLast((x) => x.kind === "train")!.loss!;
  const text = await Deno.readTextFile(`${out}/log.jsonl`);
  // As if killed after the last step's save, before its final evaluation.
  await Deno.writeTextFile(
    `${out}/log.jsonl`,
    text.trimEnd().split("\n").filter((l) => !l.includes('"kind":"eval"')).join("\n") + "\n",
  );
  const evaluated = await train({ ...base, data, out, resume: out });
  assertEquals(evaluated.steps, 8);
  assertEquals(evaluated.finalLoss, lastLoss);
  const summary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`));
  assertEquals(summary.finalLoss, lastLoss);
  // Extended to 10 steps and killed between the save and the summary: the summary of 8
  // steps is an earlier end's. The final evaluation of step 10 is in the log, so the next
  // resume writes the summary from it, and evaluates nothing again.
  await train({ ...base, data, out, resume: out, train: { steps: 10 } });
  await Deno.writeTextFile(`${out}/summary.json`, JSON.stringify(summary));
  const ended = await train({ ...base, data, out, resume: out });
  const evals = (await readTrainLog(out)).filter((x) => x.kind === "eval" && x.step === 10);
  assertEquals(evals.length, 1, "step 10 was evaluated once");
  assertEquals([ended.steps, ended.valAccuracy], [10, evals[0].valAccuracy]);
  assertEquals(JSON.parse(await Deno.readTextFile(`${out}/summary.json`)).steps, 10);
});

Deno.test("faults: a resume with a length below the steps taken is refused, naming the flag; the run is untouched", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: short, stopAfter: 4 });
  const before = await Deno.readFile(`${out}/checkpoint/model.safetensors`);
  const log = await Deno.readTextFile(`${out}/log.jsonl`);
  const summary = await Deno.readTextFile(`${out}/summary.json`);
  const err = await assertRejects(
    () => train({ ...base, data, out, resume: out, train: { steps: 2 } }),
    TrainConfigError,
  );
  assertEquals(err.flag, "--steps");
  assertEquals(
    err.message,
    `--steps gives ${out} 2 steps, fewer than the 4 it has taken: give --steps 4 or more ` +
      "(steps), or leave --steps out to go on to the run's own length",
  );
  assertEquals(await Deno.readFile(`${out}/checkpoint/model.safetensors`), before);
  assertEquals(await Deno.readTextFile(`${out}/log.jsonl`), log);
  assertEquals(await Deno.readTextFile(`${out}/summary.json`), summary, "not marked complete");
  // At the steps taken, the run ends there: its final evaluation, then complete.
  const r = await train({ ...base, data, out, resume: out, train: { steps: 4 } });
  assertEquals([r.steps, r.completed], [4, true]);
  // --final-stage-steps counts from the final stage's start: the least value the message
  // gives ends the run where it stands.
  const staged = await tempDir(), stages = { ...short, steps: undefined, stepsPerStage: 1 };
  await train({
    ...base,
    data,
    out: staged,
    train: { ...stages, finalStageSteps: 4 },
    stopAfter: 4,
  });
  const fin = await assertRejects(
    () => train({ ...base, data, out: staged, resume: staged, train: { finalStageSteps: 1 } }),
    TrainConfigError,
  );
  assertEquals(fin.flag, "--final-stage-steps");
  const least = Number(
    /give --final-stage-steps (\d+) or more \(steps after the final stage starts\)/
      .exec(fin.message)?.[1],
  );
  assert(least > 1, fin.message);
  const ended = await train({
    ...base,
    data,
    out: staged,
    resume: staged,
    train: { finalStageSteps: least },
  });
  assertEquals([ended.steps, ended.completed], [4, true]);
});

Deno.test("faults: a resume takes --preset with --arch as the run did (tiny with llama: llama-tiny)", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, arch: "llama", data, out, train: short });
  assertEquals((await loadCheckpoint(out)).meta.preset, "llama-tiny");
  // The command that started it, resumed: the same preset.
  const r = await train({ ...base, arch: "llama", data, out, resume: out, train: { steps: 8 } });
  assertEquals(r.steps, 8);
  for (
    const [opts, flag] of [[{}, "--preset"], [
      { preset: undefined, arch: "gpt2" },
      "--arch",
    ]] as const
  ) {
    const err = await assertRejects(
      () => train({ ...base, ...opts, data, out, resume: out }),
      TrainConfigError,
    );
    assertEquals(err.flag, flag, err.message);
  }
});

Deno.test("faults: a run whose length is its final stage's steps is extended by them, not by --steps", async () => {
  const data = await fixtureData(), out = await tempDir();
  const t = { batch: 8, evalExamples: 4, k: 1, stepsPerStage: 2, finalStageSteps: 3 };
  const first = await train({ ...base, data, out, train: { ...t, mode: "lotus" } });
  assertEquals(first.steps, 5);
  for (const [given, flag] of [[{ steps: 10 }, "--steps"], [{ epochs: 2 }, "--epochs"]] as const) {
    const err = await assertRejects(
      () => train({ ...base, data, out, resume: out, train: given }),
      TrainConfigError,
    );
    assertEquals(err.flag, flag);
    assert(err.message.includes("give a larger --final-stage-steps"), err.message);
  }
  const more = await train({ ...base, data, out, resume: out, train: { finalStageSteps: 6 } });
  assertEquals([more.steps, more.completed], [8, true]);
});

Deno.test("faults: a resume on another dataset is refused", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: short });
  // The same files with one shard changed: another training split.
  const other = await tempDir();
  for await (const e of Deno.readDir(data)) {
    await Deno.copyFile(`${data}/${e.name}`, `${other}/${e.name}`);
  }
  const m = JSON.parse(await Deno.readTextFile(`${other}/manifest.json`));
  m.splits.train.shards[0].sha256 = "0".repeat(64);
  await Deno.writeTextFile(`${other}/manifest.json`, JSON.stringify(m));
  const err = await assertRejects(
    () => train({ ...base, data: other, out, resume: out }),
    TrainConfigError,
  );
  assertEquals(err.flag, "--data");
  // Without --data, a resume uses the dataset the run trained on.
  const r = await train({ ...base, out, resume: out, train: { steps: 7 } });
  assertEquals(r.steps, 7);
  // That dataset rebuilt in place: the error says it changed, not "resume with --data" itself.
  const moved = await tempDir();
  await train({ ...base, data: other, out: moved, train: short, stopAfter: 2 });
  m.splits.train.shards[0].sha256 = "1".repeat(64);
  await Deno.writeTextFile(`${other}/manifest.json`, JSON.stringify(m));
  const rebuilt = await assertRejects(() => train({ ...base, out: moved, resume: moved }));
  assert((rebuilt as Error).message.startsWith(`${other} changed since`), `${rebuilt}`);
});

/**
 * `deno task train` with `flags` in a child process whose files may not grow past `kib` KiB
 * (512 by default), a stand-in for a full disk (a write past it fails with EFBIG; SIGXFSZ is
 * ignored). The limit holds from the start or, with `after`, from the moment the run logs a line
 * starting `after`: a preload wraps console.error and lowers the process's limit (setrlimit)
 * there, to 512 KiB.
 */
async function trainFileLimited(
  flags: string[],
  after?: string,
  kib = 512,
): Promise<{ code: number; stderr: string }> {
  const preload: string[] = [];
  if (after !== undefined) {
    const path = `${await tempDir()}/file_limit_at.ts`;
    await Deno.writeTextFile(
      path,
      `const libc = Deno.dlopen("libc.so.6", {
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
});
const RLIMIT_FSIZE = 1;
const error = console.error;
console.error = (...a: unknown[]) => {
  error(...a);
  if (String(a[0]).startsWith(${JSON.stringify(after)})) {
    const limit = BigUint64Array.of(512n * 1024n, 0xffffffffffffffffn);
    if (libc.symbols.setrlimit(RLIMIT_FSIZE, limit) !== 0) throw new Error("setrlimit failed");
  }
};
`,
    );
    preload.push("--preload", path);
  }
  const train_ = [Deno.execPath(), "run", ...TASK_PERMISSIONS, ...preload, `${ROOT}cli/train.ts`];
  const ulimit = after === undefined ? `ulimit -f ${kib}; ` : "";
  const res = await new Deno.Command("bash", {
    args: ["-c", `trap '' XFSZ; ${ulimit}exec "$@"`, "bash", ...train_, ...flags],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: res.code, stderr: new TextDecoder().decode(res.stderr) };
}

Deno.test("faults: a damaged plan.json and a failed save are errors that say what to do", async () => {
  const data = await fixtureData(), out = await tempDir();
  const twoPhase = { ...base, recipe: undefined, data, out };
  await train({
    ...twoPhase,
    train: { batch: 8, evalExamples: 4, cotStartEpochs: 1 },
    stopAfter: 1,
  });
  // A preset (or --arch) other than the plan's is refused, as a resumed checkpoint's is.
  for (
    const [opts, flag] of [[{ preset: "small" }, "--preset"], [
      { arch: "llama" },
      "--arch",
    ]] as const
  ) {
    const err = await assertRejects(
      () => train({ ...base, recipe: undefined, out, resume: out, ...opts }),
      TrainConfigError,
    );
    assertEquals(err.flag, flag);
    assert(err.message.includes("contradicts the run being resumed (preset tiny)"), err.message);
  }
  const plan = JSON.parse(await Deno.readTextFile(`${out}/plan.json`));
  await Deno.writeTextFile(
    `${out}/plan.json`,
    JSON.stringify({ ...plan, train: { ...plan.train, batch: "8" } }),
  );
  const damaged = await assertRejects(
    () => train({ ...base, recipe: undefined, out, resume: out }),
    TrainConfigError,
  );
  assert(damaged.message.includes('field "train.batch"'), damaged.message);
  assert(damaged.message.includes("--overwrite"), damaged.message);
  // One cut short (or mistyped in an edit) is not JSON: the same advice.
  await Deno.writeTextFile(`${out}/plan.json`, JSON.stringify(plan).slice(0, 40));
  const cut = await assertRejects(
    () => train({ ...base, recipe: undefined, out, resume: out }),
    TrainConfigError,
  );
  assert(cut.message.startsWith(`${out}/plan.json: not valid JSON (`), cut.message);
  assert(cut.message.includes("fix it, or start the run again with --overwrite"), cut.message);
  // A save that cannot be written (a file-size limit stands in for a full disk: writes past
  // 512 KiB fail with EFBIG) names the checkpoint and the step, and keeps the last save.
  const run = await tempDir();
  await train({ ...base, data, out: run, train: short, stopAfter: 2 });
  const before = await Deno.readFile(`${run}/checkpoint/model.safetensors`);
  assert(before.length > 1 << 19, `${before.length} bytes`);
  const { code, stderr } = await trainFileLimited(["--resume", run]);
  assertEquals(code, 1, stderr);
  assert(stderr.includes(`error: cannot save the checkpoint ${run}/checkpoint at step`), stderr);
  assert(stderr.includes(`--resume ${run}`), stderr);
  assertEquals(await Deno.readFile(`${run}/checkpoint/model.safetensors`), before);
  // A fresh run whose first save fails has nothing to resume: it says to run it again.
  const fresh = `${await tempDir()}/run`;
  const flags = ["--data", data, "--out", fresh, "--recipe", "none", "--steps", "2"];
  const first = await trainFileLimited(flags);
  const firstErr = first.stderr;
  assertEquals(first.code, 1, firstErr);
  assert(
    firstErr.includes(
      "nothing of this run was saved before: fix the cause (free disk space, say) and run the " +
        "same command again",
    ),
    firstErr,
  );
  assert(!firstErr.includes("--resume"), firstErr);
});

Deno.test("faults: a resume whose log cannot be rewritten (a full disk) leaves no temporary file", async () => {
  const data = await fixtureData(), run = await tempDir();
  await train({ ...base, data, out: run, train: { ...short, evalEvery: 1 }, stopAfter: 4 });
  const log = await Deno.readTextFile(`${run}/log.jsonl`);
  assert(log.length > 1024, `${log.length} bytes`);
  // Files may not grow past 1 KiB: the resume's rewrite of log.jsonl fails part way.
  const { code, stderr } = await trainFileLimited(["--resume", run, "--quiet"], undefined, 1);
  assertEquals(code, 1, stderr);
  assert(stderr.includes(`${run}/log.jsonl.tmp-`), stderr);
  const names: string[] = [];
  for await (const e of Deno.readDir(run)) names.push(e.name);
  assertEquals(names.filter((n) => n.includes(".tmp-")), [], names.join(", "));
  assertEquals(await Deno.readTextFile(`${run}/log.jsonl`), log);
  // Room again: the resume goes on.
  const res = await train({ ...base, out: run, resume: run });
  assert(res.completed);
});

Deno.test("faults: a fresh run whose final save fails after a kept best names best/ and --overwrite", async () => {
  // The final evaluation keeps a best (the first evaluation always does), then the file-size
  // limit comes down and the checkpoint's save fails: best/ is all there is of the run.
  const data = await fixtureData(), out = `${await tempDir()}/run`;
  const flags = ["--data", data, "--out", out, "--recipe", "none", "--epochs-per-stage", "0"];
  const small = ["--steps", "2", "--batch", "8", "--eval-examples", "4", "--threads", "1"];
  const { code, stderr } = await trainFileLimited(
    [...flags, ...small, "--keep-best"],
    "best of the final stage:",
  );
  assertEquals(code, 1, stderr);
  const line = stderr.split("\n").find((l) => l.startsWith("error: ")) ?? "";
  // The cause in parentheses is the operating system's (EFBIG), in its words.
  const cause = /^error: cannot save the checkpoint \S+ at step 2 \((.+)\); there is/.exec(line);
  assert(cause !== null, stderr);
  assertEquals(
    line,
    `error: cannot save the checkpoint ${out}/checkpoint at step 2 (${cause[1]}); there is no ` +
      `checkpoint to resume, only ${out}/best (the best weights so far): fix the cause (free ` +
      `disk space, say) and run the command again with --overwrite, after moving ${out}/best ` +
      `aside to keep it`,
  );
  assert(await exists(`${out}/best/model.safetensors`), `${out}/best`);
  assert(!(await exists(`${out}/checkpoint/model.safetensors`)), `${out}/checkpoint`);
});

Deno.test("faults: a fresh run into a run directory is refused unless told to overwrite", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: short });
  const weights = `${out}/checkpoint/model.safetensors`;
  const before = await Deno.readFile(weights), log = await Deno.readTextFile(`${out}/log.jsonl`);
  const err = await assertRejects(
    () => train({ ...base, data, out, train: { ...short, steps: 3 } }),
    TrainConfigError,
  );
  assertEquals(err.flag, "--out");
  assert(err.message.includes("a complete run") && err.message.includes("--resume"), err.message);
  assertEquals(await Deno.readFile(weights), before, "the run is untouched");
  assertEquals(await Deno.readTextFile(`${out}/log.jsonl`), log);
  // Both at once contradict each other; --init inside the directory would be emptied first.
  await assertRejects(
    () => train({ ...base, data, out, resume: out, overwrite: true }),
    TrainConfigError,
    "--resume continues a run",
  );
  await assertRejects(
    () => train({ ...base, data, out, init: `${out}/checkpoint`, overwrite: true }),
    TrainConfigError,
    "which --overwrite replaces",
  );
  // An --overwrite whose new run fails before saving (here a split the dataset lacks) puts
  // the old run back as it was.
  await assertRejects(
    () => train({ ...base, data, out, overwrite: true, valSplit: "nope", train: short }),
    TrainConfigError,
    "--val-split nope",
  );
  assertEquals(await Deno.readFile(weights), before, "the old run is back");
  assertEquals(await Deno.readTextFile(`${out}/log.jsonl`), log);
  await assertRejects(() => Deno.stat(`${out}/.replaced`), Deno.errors.NotFound);
  // With overwrite, what the old run left is gone, a stale best and CoT start included.
  await Deno.mkdir(`${out}/best`), await Deno.mkdir(`${out}/cot-start`);
  const r = await train({ ...base, data, out, overwrite: true, train: { ...short, steps: 3 } });
  assertEquals(r.steps, 3);
  assertEquals((await loadCheckpoint(out)).state.step, 3);
  for (const gone of ["best", "cot-start", ".replaced"]) {
    await assertRejects(() => Deno.stat(`${out}/${gone}`), Deno.errors.NotFound);
  }
  const steps = (await readTrainLog(out)).filter((x) => x.kind === "train").map((x) => x.step);
  assertEquals(steps, [1, 2, 3]);
  // What a run that saved nothing left (a plan, a log) blocks nothing; a file is no --out.
  const left = await tempDir();
  await Deno.writeTextFile(`${left}/plan.json`, "{}"),
    await Deno.writeTextFile(`${left}/log.jsonl`, "");
  assertEquals((await train({ ...base, data, out: left, train: { ...short, steps: 2 } })).steps, 2);
  await assertRejects(
    () => train({ ...base, data, out: `${left}/log.jsonl`, train: short }),
    TrainConfigError,
    "is a file",
  );
  const fresh = await tempDir();
  await assertRejects(
    () => train({ ...base, data, out: fresh, valSplit: "nope", train: short }),
    TrainConfigError,
    "--val-split nope",
  );
});

Deno.test("faults: a CoT start's LOTUS phase too short for its curriculum is noted before the CoT start trains", async () => {
  const data = await fixtureData(), out = await tempDir();
  const said = await stderrOf(() =>
    train({
      ...base,
      quiet: false,
      recipe: undefined,
      data,
      out,
      stopAfter: 1,
      train: { batch: 8, cotStartEpochs: 1, epochs: 1, evalExamples: 2 },
    })
  );
  const note = said.findIndex((s) => s.startsWith("note: LOTUS phase: this run of"));
  const phase1 = said.findIndex((s) => s.startsWith("phase 1 of 2"));
  assert(note >= 0 && phase1 > note, said.join("\n"));
  assert(said[note].includes("never leaves curriculum stage 0"), said[note]);
});

Deno.test("faults: --steps given with --final-stage-steps gets one note, that the run ignores it", async () => {
  const data = await fixtureData(), out = await tempDir();
  const said = await stderrOf(() =>
    train({
      ...base,
      quiet: false,
      recipe: undefined,
      data,
      out,
      stopAfter: 1,
      train: { batch: 8, cotStartEpochs: 1, steps: 5, finalStageSteps: 3, evalExamples: 2 },
    })
  );
  assert(said.some((s) => s.includes("the run ignores --steps")), said.join("\n"));
  // Not also the note that --steps is the LOTUS phase's length, which it is not here.
  assertEquals(said.filter((s) => s.includes("is the LOTUS phase's length")), []);
});

Deno.test("faults: a dataset without a train split is refused before the CoT start says it trains, with the command that builds one", async () => {
  const d = await tempDir();
  await Deno.writeTextFile(`${d}/test.jsonl`, fixtureTask(12, 4));
  await buildDataset({
    out: `${d}/data`,
    splits: [{ name: "test", inputs: [`${d}/test.jsonl`] }],
    tokenizer: "compact",
    k: 2,
    c: 10,
  });
  const said = await stderrOf(() =>
    assertRejects(
      () =>
        train({
          ...base,
          quiet: false,
          recipe: undefined,
          data: `${d}/data`,
          out: `${d}/run`,
          train: { batch: 2, cotStartEpochs: 1 },
        }),
      DatasetError,
      `has no split "train" (it has: test); build it with deno task build-dataset --input ` +
        `FILE --split train --out ${d}/data`,
    )
  );
  assertEquals(said.filter((s) => s.includes("phase 1 of 2")), []);
  await assertRejects(() => Deno.stat(`${d}/run`), Deno.errors.NotFound);
});

Deno.test("faults: --init from a run on another tokenizer is refused, naming both", async () => {
  const data = await fixtureData(), run = await tempDir();
  await train({ ...base, data, out: run, train: short });
  // The same kind of problems, fewer of them: a compact tokenizer fitted on other text.
  const d = await tempDir();
  await Deno.writeTextFile(`${d}/train.jsonl`, fixtureTask(40, 9));
  await buildDataset({
    out: `${d}/data`,
    splits: [{ name: "train", inputs: [`${d}/train.jsonl`] }],
    tokenizer: "compact",
    k: 2,
    c: 10,
  });
  const err = await assertRejects(
    () => train({ ...base, data: `${d}/data`, out: `${d}/run`, init: run, train: short }),
    TrainConfigError,
  );
  assertEquals(err.flag, "--init");
  assert(err.message.includes("another tokenizer") && err.message.includes(run), err.message);
  // Two compact tokenizers have the same number of ids: the message names a token they differ
  // in rather than giving the same count twice as the difference.
  assert(
    /both have \d+ ids, but id \d+ is ".*" there and ".*" in --data.s/.test(err.message),
    err.message,
  );
  // A run on the same dataset is a start, whichever file of it --init names, and with its
  // tokenizer.json written another way (the same token under every id).
  const tj = `${run}/checkpoint/tokenizer.json`;
  await Deno.writeTextFile(tj, JSON.stringify(JSON.parse(await Deno.readTextFile(tj)), null, 1));
  for (const init of [run, `${run}/checkpoint/model.safetensors`]) {
    const out = await tempDir();
    const r = await train({ ...base, data, out, init, train: { ...short, steps: 1 } });
    assertEquals(r.steps, 1);
  }
});

Deno.test("faults: a run stopped in its CoT start says so when loaded, and where its model is", async () => {
  const data = await fixtureData(), out = await tempDir();
  const r = await train({
    ...base,
    recipe: "from-cot",
    data,
    out,
    stopAfter: 2,
    train: { ...short, cotStartEpochs: 1 },
  });
  assert(!r.completed);
  const err = await assertRejects(() => loadCheckpoint(out), CheckpointError);
  assert(err.message.includes("stopped in, its explicit-CoT start"), err.message);
  assert(err.message.includes(`--resume ${out}`) && err.message.includes("cot-start"), err.message);
  // In its LOTUS phase, before LOTUS's first save, the message says that instead.
  const plan = JSON.parse(await Deno.readTextFile(`${out}/plan.json`));
  await Deno.writeTextFile(`${out}/plan.json`, JSON.stringify({ ...plan, phase: "lotus" }));
  await assertRejects(() => loadCheckpoint(out), CheckpointError, "LOTUS phase has not saved yet");
});

Deno.test("faults: a run saved at its last step but not finished evaluates on resume", async () => {
  const data = await fixtureData(), out = await tempDir();
  // A run stopped by a signal during its last step is saved at its total, without its final
  // evaluation, and its summary says it did not finish: made here from a finished run.
  await train({ ...base, data, out, train: short });
  const summaryPath = `${out}/summary.json`;
  const done = JSON.parse(await Deno.readTextFile(summaryPath));
  assertEquals(done.completed, true);
  await Deno.writeTextFile(summaryPath, JSON.stringify({ ...done, completed: false }));
  const lines = (await Deno.readTextFile(`${out}/log.jsonl`)).split("\n").filter((l) => l);
  const kept = lines.filter((l) => JSON.parse(l).kind === "train");
  await Deno.writeTextFile(`${out}/log.jsonl`, kept.join("\n") + "\n");
  const r = await train({ ...base, out, resume: out });
  assert(r.completed && r.valAccuracy !== undefined, JSON.stringify(r));
  const summary = JSON.parse(await Deno.readTextFile(summaryPath));
  assertEquals([summary.steps, summary.total, summary.completed], [6, 6, true]);
  const evals = (await readTrainLog(out)).filter((x) => x.kind === "eval");
  assertEquals(evals.length, 1, "the resume's final evaluation");
});

Deno.test("faults: a run stopped after a periodic evaluation at its last step still gets its final one", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: { ...short, evalEvery: 3 }, stopAfter: 3 });
  const r = await train({ ...base, out, resume: out, train: { steps: 3 } });
  assert(r.completed && r.valAccuracy !== undefined, JSON.stringify(r));
  const evals = (await readTrainLog(out)).filter((x) => x.kind === "eval").map((x) => x.step);
  assertEquals(evals, [3, 3], "the periodic evaluation, then the final one");
  assertEquals(JSON.parse(await Deno.readTextFile(`${out}/summary.json`)).completed, true);
});

Deno.test("faults: a finished run whose summary was lost is not evaluated again on resume", async () => {
  const data = await fixtureData(), out = await tempDir();
  // A kill between the final evaluation and the summary's write.
  const done = await train({ ...base, data, out, train: short });
  await Deno.remove(`${out}/summary.json`);
  const r = await train({ ...base, out, resume: out });
  assert(r.completed, JSON.stringify(r));
  assertEquals([r.steps, r.finalLoss, r.valAccuracy], [6, done.finalLoss, done.valAccuracy]);
  const evals = (await readTrainLog(out)).filter((x) => x.kind === "eval");
  assertEquals(evals.length, 1, "no second final evaluation");
  const summary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`));
  assertEquals([summary.steps, summary.finalLoss, summary.completed], [6, done.finalLoss, true]);
});

Deno.test("faults: a resume writes only into its own run, and takes no recipe", async () => {
  const data = await fixtureData(), out = await tempDir(), other = await tempDir();
  await train({ ...base, data, out, train: { ...short, keepBest: true, evalEvery: 3 } });
  const refused = async (opts: Partial<Parameters<typeof train>[0]>, starts: string) => {
    const e = await assertRejects(() => train({ ...base, out, resume: out, ...opts }));
    assert((e as Error).message.startsWith(starts), (e as Error).message);
  };
  await refused({ out: other }, `--out ${other}: --resume`);
  await refused({ resume: `${out}/best`, out: `${out}/best` }, `--resume ${out}/best is a saved`);
  await refused({ recipe: "paper" }, "--recipe paper");
  // The run directory's checkpoint names the same run.
  const r = await train({ ...base, out, resume: `${out}/checkpoint`, train: { steps: 7 } });
  assertEquals(r.steps, 7);
  assertEquals([...Deno.readDirSync(other)].length, 0, "nothing written into --out");
});

Deno.test("faults: a best saved after the checkpoint a run resumes from (a kill between the two) stays the run's best", async () => {
  const data = await fixtureData(), out = await tempDir();
  const settings = { ...short, keepBest: true, evalEvery: 2 };
  await train({ ...base, data, out, train: settings, stopAfter: 3 });
  const ck = await loadCheckpoint(`${out}/checkpoint`, { withOptimizer: true });
  assertEquals([ck.state.step, ck.state.bestStep], [3, 2]);
  // What a run killed after saving best/ at step 5, before its next checkpoint, leaves: best/
  // newer than checkpoint/ (its accuracy 1, which no evaluation beats: the comparison is >).
  await saveCheckpoint(`${out}/best`, {
    meta: ck.meta,
    params: ck.params,
    moments: ck.moments,
    state: { ...ck.state, step: 5, bestStep: 5, bestAccuracy: 1 },
    tokenizerJson: ck.tokenizerJson,
  });
  // A length that stops before that best would name a best after the run's last step: refused,
  // before anything is trained or written.
  const e = await assertRejects(
    () => train({ ...base, out, resume: out, train: { steps: 4 } }),
    TrainConfigError,
  );
  for (
    const p of [
      `--steps gives ${out} 4 steps, fewer than step 5, which ${out}/best holds`,
      "after the checkpoint's step 3",
      "give --steps 5 or more",
    ]
  ) {
    assert(e.message.includes(p), `"${e.message}" lacks ${JSON.stringify(p)}`);
  }
  assertEquals((await loadCheckpoint(out)).state.step, 3, "the checkpoint is left as it was");
  assertEquals((await readSavedTrainState(`${out}/best`))?.step, 5);
  const r = await train({ ...base, out, resume: out });
  assertEquals([r.steps, r.best?.step, r.best?.valAccuracy], [6, 5, 1]);
  const summary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`));
  assertEquals([summary.best.step, summary.best.valAccuracy], [5, 1]);
  assertEquals((await readSavedTrainState(`${out}/best`))?.step, 5, "best/ is left as it was");
  assertEquals((await loadCheckpoint(out)).state.bestStep, 5);
});

Deno.test("faults: a second training into a run that is being written is refused", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: short, stopAfter: 2 });
  // What a training process holds while it writes the run (another process, here this one).
  const held = await Deno.open(`${out}/.run.lock`, { read: true, write: true, create: true });
  assert(held.tryLockSync(true));
  try {
    for (const opts of [{ resume: out }, { data, overwrite: true }]) {
      await assertRejects(
        () => train({ ...base, out, train: short, ...opts }),
        TrainConfigError,
        "another training process is writing this run",
      );
    }
  } finally {
    held.close();
  }
  const r = await train({ ...base, out, resume: out });
  assertEquals(r.steps, 6);
});

Deno.test("faults: a resume during the CoT start refuses contradicting settings and applies the others", async () => {
  const data = await fixtureData(), out = await tempDir();
  const twoPhase = { ...base, recipe: undefined, data, out };
  const first = await train({
    ...twoPhase,
    train: { batch: 8, evalExamples: 4, cotStartEpochs: 1, steps: 4 },
    stopAfter: 2,
  });
  assert(!first.completed);
  const again = { ...base, recipe: undefined, out, resume: out };
  await assertRejects(() => train({ ...again, train: { lr: 0.5 } }), TrainConfigError, "--lr 0.5");
  await assertRejects(() => train({ ...again, train: { batch: 4 } }), TrainConfigError, "--batch");
  await assertRejects(
    () => train({ ...again, data: `${data}-elsewhere` }),
    TrainConfigError,
    "--data",
  );
  // A setting given with the value the run already trains with is no contradiction.
  await train({ ...again, train: { mode: "lotus", k: 2, c: 10 }, stopAfter: 1 });
  // Its CoT start is resumed through the whole run, which goes on to LOTUS after it.
  await assertRejects(
    () =>
      train({ ...base, recipe: undefined, out: `${out}/cot-start`, resume: `${out}/cot-start` }),
    TrainConfigError,
    `--resume ${out}`,
  );
  // What a resume may change reaches the CoT start: an evaluation every step from here.
  const r = await train({ ...again, train: { evalEvery: 1 }, stopAfter: 2 });
  assert(!r.completed);
  const evals = (await readTrainLog(`${out}/cot-start`)).filter((x) => x.kind === "eval");
  assertEquals(evals.map((x) => x.step), [4, 5]);
});

Deno.test("faults: resuming a complete run trains nothing and keeps its summary", async () => {
  const data = await fixtureData(), out = await tempDir();
  const done = await train({ ...base, data, out, train: short });
  const files = ["summary.json", "log.jsonl", "checkpoint/model.safetensors"];
  const before = await Promise.all(files.map((f) => Deno.readFile(`${out}/${f}`)));
  const r = await train({ ...base, out, resume: out });
  assert(r.completed && r.interrupted === null);
  assertEquals([r.steps, r.finalLoss, r.valAccuracy], [6, done.finalLoss, done.valAccuracy]);
  const after = await Promise.all(files.map((f) => Deno.readFile(`${out}/${f}`)));
  files.forEach((f, i) => assertEquals(after[i], before[i], `${f} unchanged`));
});

Deno.test("faults: a log line cut short by a kill does not block a resume", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: short, stopAfter: 3 });
  await Deno.writeTextFile(`${out}/log.jsonl`, '{"kind":"train","step":4,"ep', { append: true });
  const r = await train({ ...base, data, out, resume: out });
  assertEquals(r.steps, 6);
  const steps = (await readTrainLog(out)).filter((x) => x.kind === "train").map((x) => x.step);
  assertEquals(steps, [1, 2, 3, 4, 5, 6]);
});

Deno.test("faults: a resume whose log.jsonl was cut keeps the records log.csv still has", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: short, stopAfter: 4 });
  const jsonl = await Deno.readTextFile(`${out}/log.jsonl`);
  const csvBefore = await Deno.readTextFile(`${out}/log.csv`);
  // Half of log.jsonl lost: log.csv still holds steps 1 to 4.
  await Deno.writeTextFile(`${out}/log.jsonl`, jsonl.slice(0, jsonl.length / 2));
  await train({ ...base, data, out, resume: out });
  const steps = (await readTrainLog(out)).filter((x) => x.kind === "train").map((x) => x.step);
  assertEquals(steps, [1, 2, 3, 4, 5, 6]);
  assert((await Deno.readTextFile(`${out}/log.csv`)).startsWith(csvBefore), "log.csv kept");
  // Both gone: the run goes on and says which steps have no record.
  const again = await tempDir();
  await train({ ...base, data, out: again, train: short, stopAfter: 3 });
  await Deno.remove(`${again}/log.jsonl`);
  await Deno.remove(`${again}/log.csv`);
  const r = await train({ ...base, quiet: false, data, out: again, resume: again });
  assertEquals(r.steps, 6);
  const left = (await readTrainLog(again)).filter((x) => x.kind === "train").map((x) => x.step);
  assertEquals(left, [4, 5, 6]);
});

Deno.test("faults: the run an --overwrite killed before saving set aside comes back", async () => {
  const data = await fixtureData(), out = await tempDir();
  const done = await train({ ...base, data, out, train: short });
  const model = await Deno.readFile(`${out}/checkpoint/model.safetensors`);
  // What a kill leaves: the old run in .replaced, the new run's first log lines, no checkpoint.
  await Deno.mkdir(`${out}/.replaced`);
  for (const e of ["checkpoint", "summary.json", "log.jsonl", "log.csv"]) {
    await Deno.rename(`${out}/${e}`, `${out}/.replaced/${e}`);
  }
  await Deno.writeTextFile(`${out}/log.jsonl`, "");
  // A resume finds the old run back in place (complete: nothing to train).
  const r = await train({ ...base, out, resume: out });
  assertEquals([r.steps, r.finalLoss], [6, done.finalLoss]);
  assertEquals(await Deno.readFile(`${out}/checkpoint/model.safetensors`), model);
  assert(!(await exists(`${out}/.replaced`)));
  // Once the new run has saved, the set-aside run goes, as --overwrite would have done.
  await Deno.mkdir(`${out}/.replaced`);
  await train({ ...base, out, resume: out });
  assert(!(await exists(`${out}/.replaced`)));
});

Deno.test("faults: a run an --overwrite was killed while moving comes back whole", async () => {
  const data = await fixtureData(), out = await tempDir();
  const done = await train({ ...base, data, out, train: short });
  const model = await Deno.readFile(`${out}/checkpoint/model.safetensors`);
  const csv = await Deno.readTextFile(`${out}/log.csv`);
  // Killed while setting it aside (.replacing), then while putting it back (.restoring): each
  // time part of the old run is in the half-moved directory, the rest in the run's.
  for (const half of [".replacing", ".restoring"]) {
    await Deno.mkdir(`${out}/${half}`);
    for (const e of ["checkpoint", "summary.json"]) {
      await Deno.rename(`${out}/${e}`, `${out}/${half}/${e}`);
    }
    const r = await train({ ...base, out, resume: out });
    assertEquals([r.steps, r.finalLoss], [6, done.finalLoss], half);
    assertEquals(await Deno.readFile(`${out}/checkpoint/model.safetensors`), model);
    assertEquals(await Deno.readTextFile(`${out}/log.csv`), csv);
    assert(!(await exists(`${out}/${half}`)), half);
  }
  // Both copies of an entry: neither is dropped, and the error says what to do.
  await Deno.mkdir(`${out}/.replacing`);
  await Deno.copyFile(`${out}/log.csv`, `${out}/.replacing/log.csv`);
  const e = await assertRejects(() => train({ ...base, out, resume: out }), TrainConfigError);
  assert(
    e.message.includes(`${out}/.replacing/log.csv and ${out}/log.csv are both there`),
    e.message,
  );
  assertEquals(await Deno.readTextFile(`${out}/.replacing/log.csv`), csv);
});

Deno.test("defaults: K and c come from the dataset, the learning rate from the preset", async () => {
  const data = await fixtureData(), out = await tempDir();
  await train({ ...base, data, out, train: { steps: 2, batch: 8, evalExamples: 2 } });
  const t = (await loadCheckpoint(out)).meta.train;
  assertEquals([t.k, t.c, t.lr], [2, 10, 3e-3]);
  await assertRejects(
    async () => train({ ...base, data, out: await tempDir(), train: { ...short, c: 12 } }),
    TrainConfigError,
    "--c 12 contradicts",
  );
  await assertRejects(
    async () => train({ ...base, data, out: await tempDir(), train: { ...short, k: 5 } }),
    TrainConfigError,
    "--k 5 exceeds",
  );
});

Deno.test("library: a mistyped or out-of-range setting is an error naming it, before any work", async () => {
  const data = await fixtureData(), out = await tempDir();
  const cases: [Record<string, unknown>, string, string][] = [
    [{ batch: 0 }, "--batch", "--batch 0: too small"],
    [{ stepz: 2 }, "--stepz", 'did you mean "steps"'],
    [{ mode: "lotsu" }, "--mode", "expected one of"],
    [{ warmupSteps: -1 }, "--warmup", "--warmup -1"],
  ];
  for (const [given, flag, text] of cases) {
    const err = await assertRejects(
      () => train({ ...base, data, out, train: given as never }),
      TrainConfigError,
    );
    assertEquals(err.flag, flag);
    assert(err.message.includes(text), err.message);
  }
  assertEquals([...Deno.readDirSync(out)].length, 0, "nothing written");
  // With the default recipe (a CoT start, then LOTUS) too: no plan is left to block a retry.
  await assertRejects(
    () => train({ ...base, recipe: undefined, data, out, train: { batch: 0 } }),
    TrainConfigError,
  );
  assertEquals([...Deno.readDirSync(out)].length, 0, "nothing written");
});

Deno.test("notes: settings a mode does not read, and losses R = 0 switches off, are named", async () => {
  assertEquals(unusedSettingNotes({ lambda: 0.5, auxReads: "in-loop", lr: 1e-3 }, "cot", null), [
    "--mode cot does not use --lambda, --aux-reads: the run ignores them",
  ]);
  assertEquals(unusedSettingNotes({ k: 3, auxWeight: 2 }, "lotus-aux", null), []);
  assert(unusedSettingNotes({ auxWeight: 2 }, "lotus", null)[0].includes("--aux-weight"));
  assert(unusedSettingNotes({ stepLoss: "in-loop" }, "lotus", 0)[0].includes("step loss is 0"));
  assert(unusedSettingNotes({ auxReads: "in-loop" }, "lotus-aux", 0)[0].includes("not trained"));
  assertEquals(unusedSettingNotes({ stepLoss: "in-loop" }, "lotus", 2), []);
  // A length or curriculum flag that another one given with it overrides is named.
  assertEquals(unusedSettingNotes({ steps: 5, finalStageSteps: 3 }, "lotus", null), [
    "--final-stage-steps sets the run's length: the run ignores --steps",
  ]);
  assertEquals(unusedSettingNotes({ epochsPerStage: 3, stepsPerStage: 2 }, "lotus-aux", null), [
    "--steps-per-stage sets the curriculum's stages: the run ignores --epochs-per-stage",
  ]);
  assertEquals(unusedSettingNotes({ epochsPerStage: 3, stepsPerStage: 0 }, "lotus", null), []);
  assertEquals(unusedSettingNotes({ finalStageSteps: 3 }, "lotus", null), []);
  // The from-cot recipe is a LOTUS protocol: a baseline mode with it is refused.
  const data = await fixtureData(), out = await tempDir();
  const err = await assertRejects(
    () => train({ ...base, recipe: "from-cot", data, out, train: { ...short, mode: "nocot" } }),
    TrainConfigError,
  );
  assertEquals(err.flag, "--recipe");
});

Deno.test("defaults: a run too short to leave curriculum stage 0 says so", () => {
  const cfg = parseTrainConfig({ k: 3, c: 8 });
  assert(curriculumNotes(cfg, 100, 50)[0].includes("never leaves curriculum stage 0"));
  assert(curriculumNotes(cfg, 100, 250)[0].includes("stops at curriculum stage 2 of 3"));
  assertEquals(curriculumNotes(cfg, 100, 400), []);
  assertEquals(curriculumNotes({ ...cfg, mode: "cot" }, 100, 50), []);
  assertEquals(curriculumNotes({ ...cfg, epochsPerStage: 0 }, 100, 50), []);
  assert(curriculumNotes({ ...cfg, k: 0 }, 100, 400)[0].includes("no latent blocks"));
});

/** Start `deno task train`-like training in a child process; resolves once step `n` is logged. */
async function trainChild(data: string, out: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...TASK_PERMISSIONS,
      `${ROOT}cli/train.ts`,
      "--data",
      data,
      "--out",
      out,
      "--steps",
      "100000",
      "--batch",
      "8",
      "--epochs-per-stage",
      "0",
      "--recipe",
      "none",
      "--threads",
      "1",
      "--quiet",
    ],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stepsLogged = async () => {
    try {
      return (await Deno.readTextFile(`${out}/log.jsonl`)).split("\n").filter((l) => l).length;
    } catch {
      return 0;
    }
  };
  const deadline = Date.now() + 60_000;
  while ((await stepsLogged()) < 5) {
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error("training did not start");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return child;
}

for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
  Deno.test({
    name: `faults: ${signal} stops training within a step, saves, and the run resumes`,
    sanitizeResources: false,
    async fn() {
      const data = await fixtureData(), out = await tempDir();
      const child = await trainChild(data, out);
      // Whatever happens below, the child does not outlive the test.
      globalThis.addEventListener("unload", () => {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      });
      const sent = Date.now();
      child.kill(signal);
      // A child that ignores the signal is killed after 20 s, and the test fails.
      const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const res = await child.output();
      clearTimeout(guard);
      const waited = Date.now() - sent;
      const stdout = new TextDecoder().decode(res.stdout);
      assertEquals(res.code, code, new TextDecoder().decode(res.stderr));
      assert(stdout.includes(`stopped by ${signal}`), stdout);
      // A step of this model takes milliseconds; saving takes well under a second.
      assert(waited < 10_000, `stopped after ${waited} ms`);
      const ck = await loadCheckpoint(out);
      assert(ck.state.step >= 5, `checkpoint at step ${ck.state.step}`);
      const r = await train({ ...base, out, resume: out, train: { steps: ck.state.step + 2 } });
      assertEquals(r.steps, ck.state.step + 2);
    },
  });
}

Deno.test({
  name: "faults: SIGHUP from a closed terminal, whose writes then fail, still saves and exits 129",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), dir = await tempDir(), out = `${dir}/run`;
    const first = await trainCommand([...oneRunFlags(data, out), "--stop-after", "2"]);
    assertEquals(first.code, 0, first.stderr);
    // A terminal that went away: SIGHUP, then every write to stdout or stderr fails, as a
    // write to a hung-up terminal does (EIO). The signal comes as step 3's line is printed.
    const preload = `${dir}/hangup.ts`;
    await Deno.writeTextFile(
      preload,
      `const error = console.error, print = console.log;
let gone = false;
const fail = () => {
  throw new Error("Input/output error (os error 5)");
};
Deno.addSignalListener("SIGHUP", () => {
  gone = true;
});
console.error = (...a: unknown[]) => {
  if (gone) fail();
  error(...a);
  if (String(a[0]).startsWith("step 3/")) queueMicrotask(() => Deno.kill(Deno.pid, "SIGHUP"));
};
console.log = (...a: unknown[]) => {
  if (gone) fail();
  print(...a);
};
`,
    );
    const res = await trainCommand(["--resume", out], preload);
    assertEquals(res.code, 129, res.stderr);
    assertEquals((await loadCheckpoint(out)).state.step, 3, res.stderr);
  },
});

/** How a `deno task train` child process ended, and what it printed. */
interface TrainCommandResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** The fixture's two-phase run (a CoT start of 1 epoch, then 4 LOTUS steps) into `out`. */
function twoPhaseFlags(data: string, out: string): string[] {
  return ["--data", data, "--out", out, "--cot-start-epochs", "1", "--steps", "4", "--batch", "32"];
}

/** `deno task train --threads 1 FLAGS` in a child process, with `preload` run first if given. */
async function trainCommand(flags: string[], preload?: string): Promise<TrainCommandResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...TASK_PERMISSIONS,
      ...(preload ? [`--preload=${preload}`] : []),
      `${ROOT}cli/train.ts`,
      "--threads",
      "1",
      ...flags,
    ],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const guard = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const res = await child.output();
  clearTimeout(guard);
  const dec = new TextDecoder();
  return {
    code: res.code,
    signal: res.signal,
    stdout: dec.decode(res.stdout),
    stderr: dec.decode(res.stderr),
  };
}

/**
 * {@linkcode trainCommand} in a child process that sends itself `signal` as it logs a line
 * starting `at`: a preload wraps console.error, so the signal comes at that exact point of the
 * run (sent in a microtask: at the run's next await, as a signal from outside would come).
 */
async function trainSignalledAt(
  at: string,
  signal: Deno.Signal,
  flags: string[],
): Promise<TrainCommandResult> {
  const preload = await signalAtPreload(await tempDir(), at, signal);
  return await trainCommand(flags, preload);
}

/**
 * {@linkcode trainCommand} in a child process that sends itself SIGINT during its first
 * evaluation, as the evaluation's first batch decodes.
 */
async function trainSignalledInEval(flags: string[]): Promise<TrainCommandResult> {
  return await trainCommand(flags, await signalInEvalPreload(await tempDir(), "SIGINT"));
}

Deno.test({
  name: "faults: Ctrl-C during a periodic evaluation stops before its next batch and saves it " +
    "as due; the resume evaluates first, then trains on",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), out = `${await tempDir()}/run`;
    // 60 validation examples in batches of 32: the signal comes in the first of two.
    const flags = [...oneRunFlags(data, out), "--eval-every", "2"];
    const res = await trainSignalledInEval(flags);
    assertEquals(res.code, 130, res.stderr);
    assert(
      res.stderr.includes(
        `SIGINT during the evaluation at step 2: saving; resume with --resume ${out}`,
      ),
      res.stderr,
    );
    assert(!res.stderr.includes("eval @2:"), res.stderr);
    const ck = await loadCheckpoint(out);
    assertEquals([ck.state.step, ck.state.evalDue], [2, true]);
    assertEquals(await loggedRecords(out), ["train@1", "train@2"]);
    const resumed = await trainCommand(["--resume", out]);
    assertEquals(resumed.code, 0, resumed.stderr);
    assertEquals(await loggedRecords(out), [
      "train@1",
      "train@2",
      "eval@2",
      "train@3",
      "train@4",
      "eval@4",
    ]);
    assertEquals((await loadCheckpoint(out)).state.evalDue, undefined);
  },
});

Deno.test({
  name: "faults: Ctrl-C during the final evaluation stops before its next batch; the resume " +
    "evaluates only",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), out = `${await tempDir()}/run`;
    const res = await trainSignalledInEval(oneRunFlags(data, out));
    assertEquals(res.code, 130, res.stderr);
    assert(
      res.stderr.includes(
        `SIGINT during the evaluation at step 4: saving; resume with --resume ${out}`,
      ),
      res.stderr,
    );
    assertEquals((await loadCheckpoint(out)).state.evalDue, undefined);
    const summary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`));
    assertEquals([summary.steps, summary.completed], [4, false]);
    const resumed = await trainCommand(["--resume", out]);
    assertEquals(resumed.code, 0, resumed.stderr);
    assertEquals((await loggedRecords(out)).slice(-2), ["train@4", "eval@4"]);
    assertEquals(JSON.parse(await Deno.readTextFile(`${out}/summary.json`)).completed, true);
  },
});

Deno.test({
  name: "faults: a log write that fails (a full disk) stops the run after its step, saved, with " +
    "an error that says so; the resume goes on",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), out = `${await tempDir()}/run`;
    // The third record appended to log.csv meets a full disk.
    const preload = `${await tempDir()}/full_disk.ts`;
    await Deno.writeTextFile(
      preload,
      `const write = Deno.writeTextFileSync;
let appends = 0;
Deno.writeTextFileSync = (path, text, opts) => {
  if (String(path).endsWith("log.csv") && opts?.append && ++appends === 3) {
    throw new Error(\`No space left on device (os error 28): writefile '\${path}'\`);
  }
  return write(path, text, opts);
};
`,
    );
    const res = await trainCommand(oneRunFlags(data, out), preload);
    assertEquals(res.code, 1, res.stderr);
    assert(
      res.stderr.includes(
        `cannot write the run's log (No space left on device (os error 28): writefile ` +
          `'${out}/log.csv'); training stopped at step 3 and saved its checkpoint: fix the cause ` +
          `(free disk space, say) and resume with --resume ${out}`,
      ),
      res.stderr,
    );
    assertEquals((await loadCheckpoint(out)).state.step, 3);
    const resumed = await trainCommand(["--resume", out]);
    assertEquals(resumed.code, 0, resumed.stderr);
    assert(resumed.stdout.includes("done: 4 steps"), resumed.stdout);
    // With an evaluation at step 2, the third record is its: the run stops at step 2 and the
    // evaluation, unlogged, is due on resume, which runs it first.
    const evaluated = `${await tempDir()}/run`;
    const flags = [...oneRunFlags(data, evaluated), "--eval-every", "2"];
    const cut = await trainCommand(flags, preload);
    assertEquals(cut.code, 1, cut.stderr);
    assert(cut.stderr.includes("training stopped at step 2 and saved"), cut.stderr);
    const ck = await loadCheckpoint(evaluated);
    assertEquals([ck.state.step, ck.state.evalDue], [2, true]);
    const again = await trainCommand(["--resume", evaluated]);
    assertEquals(again.code, 0, again.stderr);
    assertEquals((await loggedRecords(evaluated)).slice(1), [
      "train@2",
      "eval@2",
      "train@3",
      "train@4",
      "eval@4",
    ]);
  },
});

Deno.test({
  name: "faults: SIGTERM between the CoT start and LOTUS stops with the resume hint, and resumes",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), out = await tempDir();
    // Sent as the run logs the start of LOTUS: after the CoT start has returned and before
    // LOTUS listens itself; the CoT start's watch, still listening, hands it to LOTUS.
    const { code, stdout, stderr } = await trainSignalledAt(
      "phase 2 of 2",
      "SIGTERM",
      twoPhaseFlags(data, out),
    );
    assert(stderr.includes("phase 2 of 2"), stderr);
    assertEquals(code, 143, stderr);
    assert(stderr.includes(`SIGTERM at step 0: saving; resume with --resume ${out}`), stderr);
    assert(stdout.includes("stopped by SIGTERM"), stdout);
    // The resume trains LOTUS from the CoT start, which it does not train again.
    const r = await train({ ...base, out, resume: out });
    assert(r.completed, "the resumed run completes");
    assertEquals(r.steps, 4);
    assertEquals(r.cotStart, undefined, "the CoT start is not trained again");
    assertEquals((await loadCheckpoint(out)).meta.train.mode, "lotus");
  },
});

Deno.test({
  name: "faults: Ctrl-C while the CoT start sets up ends at once, saving nothing, and a fresh " +
    "run in the same directory is not refused",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), out = await tempDir();
    // Sent as the run logs the start of its first phase, before the CoT start's first step:
    // the usual moment to stop a mistyped command.
    const res = await trainSignalledAt("phase 1 of 2", "SIGINT", twoPhaseFlags(data, out));
    assert(res.stderr.includes("phase 1 of 2"), res.stderr);
    assert(res.code === 130 || res.signal === "SIGINT", `${res.code} ${res.signal}: ${res.stderr}`);
    assert(!res.stderr.includes("failed to compile"), res.stderr);
    const saved = await Deno.stat(`${out}/cot-start/checkpoint`).then(() => true, () => false);
    assertEquals(saved, false, "nothing saved");
    // The corrected command starts the run over in the same directory.
    const r = await train({
      ...base,
      recipe: "from-cot",
      data,
      out,
      train: { cotStartEpochs: 1, steps: 4, batch: 32 },
    });
    assert(r.completed && r.cotStart?.completed, "the fresh run trains both phases");
  },
});

/** The fixture's run of LOTUS alone (no CoT start), 4 steps, into `out`. */
function oneRunFlags(data: string, out: string): string[] {
  return ["--data", data, "--out", out, "--recipe", "none", "--steps", "4", "--batch", "32"];
}

/** The names in `dir`, its run lock left out, sorted. */
function namesIn(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== ".run.lock").sort();
}

Deno.test({
  name: "faults: SIGTERM before a fresh run's first step saves nothing, removes the directories " +
    "it made, and the same command then trains",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), parent = await tempDir();
    const out = `${parent}/runs/fresh`;
    const flags = oneRunFlags(data, out);
    // Sent as the run logs its `training …` line: set up and listening, no step taken.
    const res = await trainSignalledAt("training ", "SIGTERM", flags);
    assertEquals(res.code, 143, res.stderr);
    assert(
      res.stdout.includes(
        "stopped by SIGTERM before the first step: nothing was trained or saved; rerun the " +
          "same command",
      ),
      res.stdout,
    );
    assert(res.stderr.includes(`${out}, made by this run, is removed`), res.stderr);
    assert(!res.stderr.includes("resume with --resume"), res.stderr);
    assertEquals(namesIn(parent), [], "the directories the run made are gone");
    const again = await trainCommand(flags);
    assertEquals(again.code, 0, again.stderr);
    assert(again.stdout.includes("done: 4 steps"), again.stdout);
  },
});

Deno.test({
  name: "faults: Ctrl-C in a fresh run's first step saves nothing either; in its second it saves",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), out = `${await tempDir()}/run`;
    const flags = oneRunFlags(data, out);
    // Sent as the run logs its first step's line: the loop sees it at that step's end.
    const res = await trainSignalledAt("step 1/", "SIGINT", flags);
    assertEquals(res.code, 130, res.stderr);
    assert(
      res.stdout.includes(
        "stopped by SIGINT in the first step: nothing was saved; rerun the same command",
      ),
      res.stdout,
    );
    assert(res.stderr.includes(`${out}, made by this run, is removed`), res.stderr);
    assertEquals(await exists(out), false);
    // A step later there is a run to keep: it saves and says how to go on (sent as the run
    // logs step 2's evaluation).
    const later = await trainSignalledAt("eval @2", "SIGINT", [...flags, "--eval-every", "2"]);
    assertEquals(later.code, 130, later.stderr);
    assert(later.stderr.includes(`SIGINT at step 2: saving; resume with --resume ${out}`));
    assertEquals((await loadCheckpoint(out)).state.step, 2);
    // A first step that saved (--save-every 1) keeps what it saved.
    const kept = `${await tempDir()}/run`;
    const saved = await trainSignalledAt("step 1/", "SIGINT", [
      ...oneRunFlags(data, kept),
      "--save-every",
      "1",
    ]);
    assertEquals(saved.code, 130, saved.stderr);
    assert(saved.stderr.includes(`SIGINT at step 1: saving; resume with --resume ${kept}`));
    assertEquals((await loadCheckpoint(kept)).state.step, 1);
  },
});

Deno.test({
  name: "faults: Ctrl-C before the CoT start's first step leaves the directory as it was, and " +
    "the same command then trains both phases",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), out = await tempDir();
    await Deno.writeTextFile(`${out}/notes.txt`, "mine\n");
    const flags = twoPhaseFlags(data, out);
    // The CoT start's `training cot …` line: the fresh run's first phase, no step taken.
    const res = await trainSignalledAt("training cot", "SIGINT", flags);
    assertEquals(res.code, 130, res.stderr);
    assert(res.stdout.includes("stopped by SIGINT before the first step"), res.stdout);
    // The directory was there before: it stays with what it held, and nothing of the run.
    assertEquals(namesIn(out), ["notes.txt"]);
    assertEquals(await Deno.readTextFile(`${out}/notes.txt`), "mine\n");
    const again = await trainCommand(flags);
    assertEquals(again.code, 0, again.stderr);
    assert(again.stdout.includes("CoT start:"), again.stdout);
    assert(again.stdout.includes("done: 4 steps"), again.stdout);
  },
});

Deno.test({
  name: "faults: an --overwrite stopped before its first step puts the old run back; a --resume " +
    "stopped at once saves and keeps everything",
  sanitizeResources: false,
  async fn() {
    const data = await fixtureData(), out = await tempDir();
    await train({ ...base, data, out, train: short, stopAfter: 2 });
    const files = ["checkpoint/model.safetensors", "log.jsonl", "summary.json"];
    const read = () => Promise.all(files.map((f) => Deno.readFile(`${out}/${f}`)));
    const before = await read();
    const flags = [...oneRunFlags(data, out), "--overwrite"];
    const res = await trainSignalledAt("training ", "SIGTERM", flags);
    assertEquals(res.code, 143, res.stderr);
    assert(res.stdout.includes("stopped by SIGTERM before the first step"), res.stdout);
    assert(res.stderr.includes("the run --overwrite set aside is back in place"), res.stderr);
    assertEquals(await read(), before, "the old run is back as it was");
    assert(!(await exists(`${out}/.replaced`)));
    // A resume stopped before its first step has a run to keep: it saves and says how to go on.
    const resumed = await trainSignalledAt("training ", "SIGINT", ["--resume", out]);
    assertEquals(resumed.code, 130, resumed.stderr);
    assert(resumed.stderr.includes(`SIGINT at step 2: saving; resume with --resume ${out}`));
    assert(resumed.stdout.includes("stopped by SIGINT at step 2"), resumed.stdout);
    assertEquals((await loadCheckpoint(out)).state.step, 2);
    assertEquals(namesIn(out), ["checkpoint", "log.csv", "log.jsonl", "summary.json"]);
    // The --overwrite, not stopped, replaces the run.
    const replaced = await trainCommand(flags);
    assertEquals(replaced.code, 0, replaced.stderr);
    assertEquals((await loadCheckpoint(out)).meta.train.batch, 32);
  },
});

Deno.test("faults: a stopped run removes only the directories it made, and only while empty", async () => {
  const root = await tempDir();
  assertEquals(await makeRunDir(root), [], "there already");
  const made = await makeRunDir(`${root}/a/b/c/`);
  assertEquals(made, [`${root}/a`, `${root}/a/b`, `${root}/a/b/c`]);
  assert(await removeMadeDirs(made));
  assertEquals(namesIn(root), []);
  // Something put in one of them since (another run's files, say) keeps it and its parents.
  const again = await makeRunDir(`${root}/a/b/c`);
  await Deno.writeTextFile(`${root}/a/b/theirs.txt`, "");
  assertEquals(await removeMadeDirs(again), false);
  assertEquals(namesIn(`${root}/a/b`), ["theirs.txt"]);
});

Deno.test("faults: --resume of what is not a run says so, and makes, locks or changes nothing", async () => {
  const data = await fixtureData(), parent = await tempDir();
  const refused = async (dir: string, found: string) => {
    const e = await assertRejects(
      () => train({ ...base, out: dir, resume: dir }),
      TrainConfigError,
    );
    assertEquals(e.flag, "--resume");
    assert(e.message.startsWith(`--resume ${dir}: no such run (${found}`), e.message);
    assert(e.message.endsWith("; give the run directory that train --out wrote"), e.message);
  };
  await refused(`${parent}/typo/run`, `nothing is at ${parent}/typo/run`);
  assertEquals(namesIn(parent), [], "no directory made");
  await Deno.writeTextFile(`${parent}/bad.jsonl`, fixtureTask(2, 1));
  await refused(`${parent}/bad.jsonl`, `${parent}/bad.jsonl is a file`);
  await refused(data, `${data} is a dataset directory`);
  assert(!(await exists(`${data}/.run.lock`)), "no lock left in the dataset");
  // The best/ of a run that kept none is not made inside the run.
  const run = await tempDir();
  await train({ ...base, data, out: run, train: { ...short, steps: 2 } });
  await refused(`${run}/best`, `nothing is at ${run}/best; ${run} is a run, which --resume ${run}`);
  assert(!(await exists(`${run}/best`)));
  const ev = await tempDir();
  for (const f of ["summary.json", "predictions.csv"]) await Deno.writeTextFile(`${ev}/${f}`, "");
  await refused(ev, `${ev} is an evaluation's output directory`);
  assert(!(await exists(`${ev}/.run.lock`)));
  // A run that kept a best/ before any checkpoint (--save-every 0), then was killed: the
  // resume and the fresh run it refuses both point at --overwrite, neither at the other.
  const killed = await tempDir();
  await Deno.mkdir(`${killed}/best`);
  await Deno.writeTextFile(`${killed}/log.jsonl`, "");
  await refused(killed, `${killed} holds best, log.jsonl but no checkpoint to resume; --overwrite`);
  const fresh = await assertRejects(
    () => train({ ...base, data, out: killed, train: short }),
    TrainConfigError,
  );
  assert(fresh.message.includes("it has no checkpoint to resume; --overwrite"), fresh.message);
  assert(!fresh.message.includes("--resume"), fresh.message);
});

/** `to` as a path relative to the directory `from` (both absolute). */
function relativePath(from: string, to: string): string {
  const a = from.split("/").filter((s) => s), b = to.split("/").filter((s) => s);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...a.slice(i).map(() => ".."), ...b.slice(i)].join("/");
}

Deno.test("faults: a resume from another directory of a run on a relative --data says to pass --data", async () => {
  const data = await fixtureData();
  // The runs are trained from this directory with --data relative to it; resumed from one
  // deeper elsewhere, where that path holds nothing.
  const rel = relativePath(Deno.cwd(), data), elsewhere = `${await tempDir()}/a/b/c`;
  await Deno.mkdir(elsewhere, { recursive: true });
  const resume = (flags: string[]) =>
    runDeno(
      ["run", ...TASK_PERMISSIONS, `${ROOT}cli/train.ts`, "--threads", "1", ...flags],
      elsewhere,
    );
  const one = await tempDir(), two = await tempDir();
  await train({ ...base, data: rel, out: one, train: short, stopAfter: 2 });
  // A two-phase run stopped in its CoT start: its plan.json records the path.
  await train({
    ...base,
    recipe: undefined,
    data: rel,
    out: two,
    train: { batch: 8, evalExamples: 4, cotStartEpochs: 1, steps: 2 },
    stopAfter: 1,
  });
  for (const run of [one, two]) {
    const res = await resume(["--resume", run]);
    assertEquals(res.code, 1, res.stderr);
    assert(
      res.stderr.includes(
        `error: --resume ${run}: the run trained on the dataset ${rel}, a path relative to the ` +
          `directory the run was started in`,
      ) && res.stderr.includes("pass --data <that dataset>"),
      res.stderr,
    );
    // No advice to build a dataset at the relative path from here (the wrong place).
    assert(!res.stderr.includes("build the dataset first"), res.stderr);
    assert(res.stderr.includes("If it was removed, rebuild it as it was built"), res.stderr);
    assertEquals(namesIn(elsewhere), []);
    // --data with that dataset resumes it from there; the hint to go on keeps the micro-batch
    // this process ran (a resume does not take it from the run).
    const ok = await resume([
      "--resume",
      run,
      "--data",
      data,
      "--stop-after",
      "1",
      "--micro-batch",
      "4",
      "--quiet",
    ]);
    assertEquals(ok.code, 0, ok.stderr);
    assert(
      /^stopped by --stop-after 1 at step \d+; checkpoint in .*; go on with --resume \S+ --micro-batch 4$/m
        .test(ok.stdout),
      ok.stdout,
    );
  }
});

Deno.test("faults: an --init that is not weights is refused before the dataset loads, naming what --init takes", async () => {
  const parent = await tempDir();
  await Deno.writeTextFile(`${parent}/bad.jsonl`, fixtureTask(2, 1));
  const out = `${parent}/run`, data = `${parent}/no-data`;
  for (
    const [init, what] of [
      [`${parent}/bad.jsonl`, "not a safetensors file"],
      [parent, `${parent} is a directory without checkpoint/model.safetensors`],
    ]
  ) {
    const e = await assertRejects(() => train({ ...base, data, out, init, train: short }));
    assert(e instanceof TrainConfigError && e.flag === "--init", `${e}`);
    assert(e.message.startsWith(`--init ${init}: ${what}`), e.message);
    assert(e.message.includes("--init takes a Hugging Face GPT-2 model.safetensors"), e.message);
  }
  assertEquals(namesIn(parent), ["bad.jsonl"]);
});

Deno.test("faults: --precision other than fp32 on the CPU is refused as the options resolve", async () => {
  const data = await fixtureData(), parent = await tempDir();
  for (const [precision, backend] of [["bf16", undefined], ["tf32", "cpu"]] as const) {
    const e = await assertRejects(() =>
      train({ ...base, backend, data, out: `${parent}/run`, precision, train: short })
    );
    assert(e instanceof TrainConfigError && e.flag === "--precision", `${e}`);
    assert(e.message.startsWith(`--precision ${precision} needs the CUDA engine`), e.message);
    assert(e.message.includes("--backend cpu"), e.message);
  }
  assertEquals(namesIn(parent), []);
});

Deno.test("faults: a fresh run that fails before its first step leaves nothing of itself", async () => {
  const data = await fixtureData(), parent = await tempDir();
  const out = `${parent}/runs/new`;
  const cases: [Partial<Parameters<typeof train>[0]>, string][] = [
    [{ train: { ...short, k: 9 } }, "--k 9"],
    [{ valSplit: "nope", train: short }, "--val-split nope"],
    // A two-phase run has written its plan.json by then.
    [{ recipe: undefined, valSplit: "nope", train: { batch: 8, cotStartEpochs: 1 } }, "nope"],
  ];
  if (!probeCuda().available) cases.push([{ backend: "cuda", train: short }, ""]);
  for (const [opts, says] of cases) {
    await assertRejects(() => train({ ...base, data, out, ...opts }), Error, says);
    assertEquals(namesIn(parent), [], says);
  }
  // A directory that was there keeps what it held, and nothing of the run.
  const mine = await tempDir();
  await Deno.writeTextFile(`${mine}/notes.txt`, "mine\n");
  await assertRejects(() => train({ ...base, data, out: mine, train: { ...short, k: 9 } }));
  assertEquals(namesIn(mine), ["notes.txt"]);
  // The default command without the default dataset leaves no out/runs/default.
  const cwd = await tempDir();
  const res = await runDeno(["run", ...TASK_PERMISSIONS, `${ROOT}cli/train.ts`], cwd);
  assertEquals(res.code, 1, res.stderr);
  assert(res.stderr.includes("out/data/default"), res.stderr);
  assertEquals(namesIn(cwd), []);
});

Deno.test("faults: LOTUS settings that contradict the dataset are refused before a CoT start trains", async () => {
  const data = await fixtureData(), parent = await tempDir();
  const out = `${parent}/run`;
  // The default recipe (from-cot): an epoch of explicit CoT, then LOTUS.
  const twoPhase = { batch: 8, evalExamples: 4, cotStartEpochs: 1 };
  const cases: [Partial<TrainConfig>, string][] = [
    [{ k: 9 }, "--k"],
    [{ c: 8 }, "--c"],
    [{ mode: "lotus-aux", auxWeight: 0 }, "--aux-weight"],
  ];
  for (const [set, flag] of cases) {
    // The error LOTUS alone gives.
    const alone = await assertRejects(
      () => train({ ...base, data, out, train: { ...short, ...set } }),
      TrainConfigError,
    );
    const e = await assertRejects(
      () => train({ ...base, recipe: undefined, data, out, train: { ...twoPhase, ...set } }),
      TrainConfigError,
    );
    assertEquals([e.flag, e.message], [flag, alone.message]);
    assertEquals(namesIn(parent), [], `${flag}: no CoT start, no plan`);
  }
});

Deno.test("faults: a --batch above LOTUS's usable examples is refused before a CoT start trains", async () => {
  // Half the questions carry 150 digits more: at c = 200 their LOTUS rows (K·c latents) exceed
  // tiny's 512 positions from stage 2 on, while every explicit-CoT row fits.
  const d = await tempDir();
  const lines = fixtureTask(40, 1).trim().split("\n").map((line, i) => {
    if (i % 2 === 0) return line;
    const r = JSON.parse(line);
    const tag = Array.from({ length: 150 }, (_, j) => (i * 7 + j * 3) % 10).join("");
    r.question = r.question.replace(" How many", ` Tag ${tag}. How many`);
    return JSON.stringify(r);
  });
  await Deno.writeTextFile(`${d}/train.jsonl`, lines.join("\n") + "\n");
  const long = `${d}/data`;
  await buildDataset({
    out: long,
    splits: [{ name: "train", inputs: [`${d}/train.jsonl`] }],
    tokenizer: "compact",
    k: 2,
    c: 200,
  });
  const parent = await tempDir();
  const out = `${parent}/run`;
  // The CoT start alone would train on all 40 at --batch 30; LOTUS after it has 20 usable. Then
  // the fixture's 600, where the manifest tells that every record fits without the split read.
  for (const [data, batch, usable] of [[long, 30, 20], [await fixtureData(), 601, 600]] as const) {
    // The error LOTUS alone gives.
    const alone = await assertRejects(
      () => train({ ...base, data, out, train: { ...short, batch } }),
      TrainConfigError,
    );
    assert(
      alone.message.startsWith(`the training split has ${usable} usable examples`),
      alone.message,
    );
    const e = await assertRejects(
      () =>
        train({
          ...base,
          recipe: undefined,
          data,
          out,
          train: { batch, evalExamples: 4, cotStartEpochs: 1 },
        }),
      TrainConfigError,
    );
    assertEquals([e.flag, e.message], ["--batch", alone.message]);
    assertEquals(namesIn(parent), [], `--batch ${batch}: no CoT start, no plan`);
  }
});

Deno.test("faults: --out at an evaluation's output is refused as such, --overwrite too", async () => {
  const data = await fixtureData(), ev = await tempDir();
  const files = ["accuracy_by_steps.csv", "predictions.csv", "report.html", "summary.json"];
  for (const f of files) await Deno.writeTextFile(`${ev}/${f}`, `${f}\n`);
  for (const overwrite of [false, true]) {
    const e = await assertRejects(
      () => train({ ...base, data, out: ev, overwrite, train: short }),
      TrainConfigError,
    );
    assertEquals(e.flag, "--out");
    assert(e.message.includes(`--out ${ev} is an evaluation's output directory`), e.message);
    assert(!e.message.includes("--resume"), e.message);
  }
  assertEquals([...Deno.readDirSync(ev)].map((e) => e.name).sort(), files, "no lock either");
  assertEquals(await Deno.readTextFile(`${ev}/summary.json`), "summary.json\n");
});

Deno.test("faults: --out at a dataset directory, its --data's too, is refused as such", async () => {
  const data = await fixtureData();
  const before = [...Deno.readDirSync(data)].map((e) => e.name).sort();
  for (const overwrite of [false, true]) {
    const e = await assertRejects(
      () => train({ ...base, data, out: data, overwrite, train: short }),
      TrainConfigError,
    );
    assertEquals(e.flag, "--out");
    assert(e.message.includes(`--out ${data} is a dataset directory`), e.message);
  }
  assertEquals([...Deno.readDirSync(data)].map((e) => e.name).sort(), before, "no lock either");
});

Deno.test("faults: --out at a checkpoint or an export is refused as such; nothing is written", async () => {
  const data = await fixtureData(), run = await tempDir();
  await train({ ...base, data, out: run, train: { ...short, steps: 1, mode: "cot" } });
  const ex = `${await tempDir()}/ex`;
  await exportCheckpoint(run, ex, { format: "hf" });
  for (
    const [out, what] of [
      [`${run}/checkpoint`, "is a checkpoint or model directory (it holds config.json"],
      [ex, "is an export (it holds lotus.json"],
    ]
  ) {
    const before = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    const e = await assertRejects(
      () => train({ ...base, data, out, overwrite: true, train: short }),
      TrainConfigError,
    );
    assertEquals(e.flag, "--out");
    assert(e.message.includes(`--out ${out} ${what}`), e.message);
    assertEquals([...Deno.readDirSync(out)].map((e) => e.name).sort(), before);
  }
});

Deno.test("train: a LOTUS run (CoT start first) on a directory that is no dataset says so before it says it starts", async () => {
  const d = await tempDir();
  await Deno.mkdir(`${d}/empty`);
  await Deno.writeTextFile(`${d}/train.jsonl`, fixtureTask(4, 1));
  for (const data of [`${d}/missing`, `${d}/empty`, `${d}/train.jsonl`]) {
    let e: Error | undefined;
    const said = await stderrOf(async () => {
      e = await assertRejects(
        () => train({ data, out: `${d}/run`, threads: 1, train: { steps: 2 } }),
        ManifestError,
      );
    });
    assert(e?.message.startsWith(`${data}`), e?.message);
    if (data.endsWith(".jsonl")) assert(e?.message.includes("is a file, not a dataset directory"));
    // No "phase 1 of 2: explicit CoT ..." line before the error, and no run directory.
    assertEquals(said.filter((l) => l.includes("phase")), []);
    await assertRejects(() => Deno.stat(`${d}/run`));
  }
});

/**
 * The training-protocol study of docs/results.md: many runs of `deno task train` and
 * `deno task eval`, each on one thread, each bounded in time, resumable (a run whose result file
 * exists is skipped), in the order of the plan below. Every run leaves its config, a thinned log
 * and its test result under bench/results/study/<name>/; checkpoints go under out/study/.
 *
 *   npx deno run -A bench/study.ts [--jobs 2] [--only PREFIX] [--minutes 40] [--list]
 *
 * Then `npx deno run -A bench/study_table.ts` writes the table (bench/results/study/table.md).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { writeFileAtomic } from "../base/atomic.ts";
import { exists } from "../base/exists.ts";
import { denoLogged, PERMS, trainArgs } from "./_child.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const OUT = `${ROOT}out/study`;
const RESULTS = `${ROOT}bench/results/study`;

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    jobs: { type: "string", default: "1" },
    only: { type: "string", default: "" },
    minutes: { type: "string", default: "40" },
    list: { type: "boolean", default: false },
  },
});

/** A synthetic dataset of the study: train, valid and test splits from three seeds. */
interface DataSpec {
  name: string;
  /** bench/synth_data.ts flags. */
  synth: string[];
  k: number;
  c: number;
}

const DATA: DataSpec[] = [
  {
    // The main table's task: the "ages" family, 2-3 steps, one-digit operands.
    name: "ages23",
    synth: ["--families", "ages", "--min-steps", "2", "--max-steps", "3", "--digits", "1"],
    k: 3,
    c: 12,
  },
  {
    // The same problems with K = R = 6: spare blocks and passes, as the reference's GSM8K has.
    name: "ages23k6",
    synth: ["--families", "ages", "--min-steps", "2", "--max-steps", "3", "--digits", "1"],
    k: 6,
    c: 12,
  },
  {
    // 1 to 6 steps, every family, K = R = 6.
    name: "mix16",
    synth: ["--min-steps", "1", "--max-steps", "6", "--digits", "1"],
    k: 6,
    c: 16,
  },
];

/** One training run and its evaluation. */
interface RunSpec {
  name: string;
  data: string;
  preset: "tiny" | "small";
  seed: number;
  /** deno task train flags beyond data, out, preset and seed. */
  flags: string[];
  /** The run whose checkpoint this one starts from (a CoT run), when any. */
  from?: string;
}

const SEEDS = [0, 1, 2];
// Every setting is given: no recipe stands under them (LOTUS runs default to "from-cot").
const COMMON = [
  "--recipe",
  "none",
  "--batch",
  "32",
  "--eval-examples",
  "300",
  "--threads",
  "1",
  "--quiet",
];

function runs(): RunSpec[] {
  const out: RunSpec[] = [];
  const add = (
    name: string,
    data: string,
    preset: "tiny" | "small",
    flags: string[],
    from?: (seed: number) => string,
  ) => {
    for (const seed of SEEDS) {
      out.push({
        name: `${name}-s${seed}`,
        data,
        preset,
        seed,
        flags: [...COMMON, ...flags],
        from: from?.(seed),
      });
    }
  };
  // 8 epochs of 200 steps: 1,600 steps, the main table's budget.
  const cot = (lr: string, epochs = "8") => [
    "--mode",
    "cot",
    "--epochs",
    epochs,
    "--lr",
    lr,
    "--keep-best",
  ];
  // LOTUS from the CoT model: the reference's curriculum (one epoch per stage, K = R = 3 from
  // epoch 3), 8 epochs, best of the final stage kept.
  const fromCot = (lr: string, extra: string[] = [], epochsPerStage = "1") => [
    "--mode",
    "lotus",
    "--epochs",
    "8",
    "--epochs-per-stage",
    epochsPerStage,
    "--lr",
    lr,
    "--keep-best",
    ...extra,
  ];
  const scratch = (lr: string, extra: string[] = []) => [
    "--mode",
    "lotus",
    "--epochs",
    "8",
    "--lr",
    lr,
    "--keep-best",
    ...extra,
  ];
  const cotOf = (prefix: string) => (seed: number) => `${prefix}-s${seed}`;
  // The same flags with another --epochs.
  const epochs = (flags: string[], n: string) =>
    flags.map((f, i, all) => (all[i - 1] === "--epochs" ? n : f));

  // 1. tiny, the 2-3-step task: the CoT model, then LOTUS from it at three learning rates.
  add("tiny-ages23-cot-lr3e-3", "ages23", "tiny", cot("3e-3"));
  for (const lr of ["1e-4", "3e-4", "1e-3", "3e-3"]) {
    add(
      `tiny-ages23-fromcot-lr${lr}`,
      "ages23",
      "tiny",
      fromCot(lr),
      cotOf("tiny-ages23-cot-lr3e-3"),
    );
  }
  // 4. small, the size the goal is set at: CoT at its best rate of the main table (3e-4), LOTUS
  //    from it at that rate and at a third of it (the ratio that won at tiny), then CoT at 1e-3.
  add("small-ages23-cot-lr3e-4", "ages23", "small", cot("3e-4"));
  //    Seed by seed, so that both rates have results early (a small LOTUS run takes most of an
  //    hour on one thread).
  const first = out.length;
  for (const lr of ["3e-4", "1e-4"]) {
    add(
      `small-ages23-fromcot-lr${lr}`,
      "ages23",
      "small",
      fromCot(lr),
      cotOf("small-ages23-cot-lr3e-4"),
    );
  }
  out.splice(first, out.length - first, ...out.slice(first).sort((x, y) => x.seed - y.seed));
  // 2. LOTUS from scratch at three learning rates; CoT at two more; CoT with the same total
  //    compute as CoT + LOTUS (16 epochs).
  for (const lr of ["1e-3", "3e-3", "1e-2"]) {
    add(`tiny-ages23-scratch-lr${lr}`, "ages23", "tiny", scratch(lr));
  }
  for (const lr of ["1e-3", "1e-2"]) add(`tiny-ages23-cot-lr${lr}`, "ages23", "tiny", cot(lr));
  add("tiny-ages23-cot16-lr3e-3", "ages23", "tiny", cot("3e-3", "16"));
  // 3. Around the best LOTUS-from-CoT rate of the first rows (1e-3 at tiny: 1e-4 and 3e-4 trail
  //    it by 27 and 13 points): dropout, λ, stage length, and K = R = 6 above the step count.
  const best = "1e-3";
  add(
    `tiny-ages23-fromcot-lr${best}-drop0.1`,
    "ages23",
    "tiny",
    fromCot(best, ["--dropout", "0.1"]),
    cotOf("tiny-ages23-cot-lr3e-3"),
  );
  add(
    `tiny-ages23-fromcot-lr${best}-lambda0.5`,
    "ages23",
    "tiny",
    fromCot(best, ["--lambda", "0.5"]),
    cotOf("tiny-ages23-cot-lr3e-3"),
  );
  add(
    `tiny-ages23-fromcot-lr${best}-stage2ep`,
    "ages23",
    "tiny",
    fromCot(best, [], "2"),
    cotOf("tiny-ages23-cot-lr3e-3"),
  );
  add("tiny-ages23k6-cot-lr3e-3", "ages23k6", "tiny", cot("3e-3"));
  add(
    `tiny-ages23k6-fromcot-lr${best}`,
    "ages23k6",
    "tiny",
    fromCot(best),
    cotOf("tiny-ages23k6-cot-lr3e-3"),
  );
  // A final stage twice as long (16 epochs in all): the best step of every 8-epoch LOTUS run above
  // is its last, so the model is still learning when it stops.
  add(
    `tiny-ages23-fromcot-lr${best}-ep16`,
    "ages23",
    "tiny",
    epochs(fromCot(best), "16"),
    cotOf("tiny-ages23-cot-lr3e-3"),
  );
  // LOTUS from the CoT models trained twice as long (the cot16 row, 3,200 steps), 8 epochs: the
  //    same total compute as the ep16 row (4,800 steps) with the compute moved to the CoT start.
  add(
    `tiny-ages23-fromcot16-lr${best}`,
    "ages23",
    "tiny",
    fromCot(best),
    cotOf("tiny-ages23-cot16-lr3e-3"),
  );
  //    And with the longer final stage too (16 epochs): does LOTUS keep a strong start?
  add(
    `tiny-ages23-fromcot16-lr${best}-ep16`,
    "ages23",
    "tiny",
    epochs(fromCot(best), "16"),
    cotOf("tiny-ages23-cot16-lr3e-3"),
  );
  // The same longer final stage at small, from the small CoT models (3e-4, the rate of the
  // 8-epoch small row).
  add(
    "small-ages23-fromcot-lr3e-4-ep16",
    "ages23",
    "small",
    epochs(fromCot("3e-4"), "16"),
    cotOf("small-ages23-cot-lr3e-4"),
  );
  add("small-ages23-cot-lr1e-3", "ages23", "small", cot("1e-3"));
  // A third rate for CoT at small, below the main table's, and for LOTUS above it (1e-3, the
  // rate that won for LOTUS at tiny).
  add("small-ages23-cot-lr1e-4", "ages23", "small", cot("1e-4"));
  add(
    "small-ages23-fromcot-lr1e-3",
    "ages23",
    "small",
    fromCot("1e-3"),
    cotOf("small-ages23-cot-lr3e-4"),
  );
  // 5. 1-6 steps, K = R = 6.
  add("tiny-mix16-cot-lr3e-3", "mix16", "tiny", cot("3e-3"));
  add(
    `tiny-mix16-fromcot-lr${best}`,
    "mix16",
    "tiny",
    fromCot(best),
    cotOf("tiny-mix16-cot-lr3e-3"),
  );
  // 6. The tiny baseline again (LOTUS from CoT at 1e-3, 8 epochs), from the retrained CoT starts
  //    that the dropout, λ and stage-length rows used: the control those rows compare with.
  add(
    `tiny-ages23-fromcot-lr${best}-again`,
    "ages23",
    "tiny",
    fromCot(best),
    cotOf("tiny-ages23-cot-lr3e-3"),
  );
  //    And no curriculum: all 8 epochs at the final K = R = 3 (a longer final stage helped, a
  //    shorter one hurt; is the curriculum needed at all from a CoT start?).
  add(
    `tiny-ages23-fromcot-lr${best}-nocurr`,
    "ages23",
    "tiny",
    fromCot(best, [], "0"),
    cotOf("tiny-ages23-cot-lr3e-3"),
  );
  return out;
}

function deno(args: string[], log: string, timeoutMs: number): Promise<number> {
  return denoLogged(ROOT, args, log, timeoutMs);
}

async function buildData(d: DataSpec): Promise<void> {
  const dir = `${OUT}/data/${d.name}`;
  if (await exists(`${dir}/test.records.jsonl`)) return;
  await Deno.mkdir(`${OUT}/data`, { recursive: true });
  const src = `${OUT}/data/${d.name}-src`;
  await Deno.mkdir(src, { recursive: true });
  const log = `${OUT}/data/${d.name}.log`;
  for (const [split, n, seed] of [["train", 6400, 1], ["valid", 300, 2], ["test", 1000, 3]]) {
    await deno(
      [
        "run",
        ...PERMS,
        "bench/synth_data.ts",
        ...d.synth,
        "--max-value",
        "100",
        "--n",
        String(n),
        "--seed",
        String(seed),
        "--out",
        `${src}/${split}.jsonl`,
      ],
      log,
      600_000,
    );
  }
  const build = (split: string, extra: string[]) =>
    deno(
      [
        "run",
        ...PERMS,
        "cli/build_dataset.ts",
        "--out",
        dir,
        "--split",
        split,
        "--input",
        `${src}/${split}.jsonl`,
        ...extra,
      ],
      log,
      600_000,
    );
  await build("train", ["--tokenizer", "compact", "--k", String(d.k), "--c", String(d.c)]);
  await build("valid", []);
  await build("test", []);
}

/** Keep every eval record and every 20th training record of a run's log. */
async function thinLog(runDir: string): Promise<string> {
  const lines = (await Deno.readTextFile(`${runDir}/log.jsonl`)).split("\n").filter((l) => l);
  return lines.filter((l) => {
    const r = JSON.parse(l);
    return r.kind === "eval" || r.step % 20 === 0;
  }).join("\n") + "\n";
}

/** Whether the training run in `dir` ran all its steps (its summary.json says so). */
async function trainedFully(dir: string): Promise<boolean> {
  try {
    const s = JSON.parse(await Deno.readTextFile(`${dir}/summary.json`));
    return typeof s.steps === "number" && typeof s.total === "number" && s.steps >= s.total;
  } catch {
    return false;
  }
}

async function runOne(r: RunSpec, minutes: number): Promise<void> {
  const res = `${RESULTS}/${r.name}`;
  // A retraining of this run that an earlier invocation left unfinished: go on with it.
  if (!(await exists(`${res}/result.json`)) && (await exists(`${res}/result.prev.json`))) {
    return await retrain(r, minutes);
  }
  if (await exists(`${res}/result.json`)) return;
  if (r.from && !(await exists(`${RESULTS}/${r.from}/result.json`))) {
    console.error(`${r.name}: waiting for ${r.from}`);
    return;
  }
  const start = `${OUT}/runs/${r.from}`;
  if (r.from && !((await exists(`${start}/best/config.json`)) && (await trainedFully(start)))) {
    // A fresh clone has the CoT run's result but not its checkpoint: train it again (resuming
    // what an earlier invocation began). A start is used only once it ran all its steps.
    await retrain(runs().find((x) => x.name === r.from)!, minutes);
    if (!(await trainedFully(start)) || !(await exists(`${start}/best/config.json`))) {
      console.error(`${r.name}: waiting for ${r.from} to be trained again`);
      return;
    }
  }
  await trainAndEval(r, minutes);
}

/**
 * Trains run `r` again for its checkpoint. It is deterministic on one engine version, but a
 * change of summation order since (the LM head's row chunks, say) gives another model: the
 * table keeps the first result (result.prev.json meanwhile), and the retrained one goes to
 * rerun.json, which the runs started from it record as their start.
 */
async function retrain(r: RunSpec, minutes: number): Promise<void> {
  const dir = `${RESULTS}/${r.name}`;
  if (await exists(`${dir}/result.json`)) {
    await Deno.rename(`${dir}/result.json`, `${dir}/result.prev.json`);
  }
  await trainAndEval(r, minutes);
  if (await exists(`${dir}/result.json`)) {
    await Deno.rename(`${dir}/result.json`, `${dir}/rerun.json`);
  }
  await Deno.rename(`${dir}/result.prev.json`, `${dir}/result.json`);
}

/** Trains run `r` (resuming its checkpoint when there is one) and evaluates it on test. */
async function trainAndEval(r: RunSpec, minutes: number): Promise<void> {
  const res = `${RESULTS}/${r.name}`;
  await Deno.mkdir(res, { recursive: true });
  const run = `${OUT}/runs/${r.name}`, data = `${OUT}/data/${r.data}`;
  const log = `${res}/console.log`;
  const t0 = performance.now();
  const resume = await exists(`${run}/checkpoint/config.json`);
  const args = trainArgs(
    {
      run,
      data,
      preset: r.preset,
      seed: r.seed,
      flags: r.flags,
      init: r.from ? `${OUT}/runs/${r.from}/best` : undefined,
    },
    resume,
  );
  console.error(`${r.name}: training${resume ? " (resumed)" : ""}`);
  const code = await deno(args, log, minutes * 60_000);
  if (code !== 0) {
    console.error(`${r.name}: train exited ${code}; see ${log}`);
    return;
  }
  const trainSeconds = (performance.now() - t0) / 1000;
  // The kept best of the final stage when there is one, else the final weights.
  const ck = (await exists(`${run}/best/config.json`)) ? `${run}/best` : `${run}/checkpoint`;
  const evalDir = `${run}/eval-test`;
  const ecode = await deno(
    [
      "run",
      ...PERMS,
      "cli/eval.ts",
      "--checkpoint",
      ck,
      "--data",
      data,
      "--split",
      "test",
      "--batch",
      "32",
      "--threads",
      "1",
      "--quiet",
      "--out",
      evalDir,
    ],
    log,
    30 * 60_000,
  );
  if (ecode !== 0) {
    console.error(`${r.name}: eval exited ${ecode}; see ${log}`);
    return;
  }
  const summary = JSON.parse(await Deno.readTextFile(`${run}/summary.json`));
  const test = JSON.parse(await Deno.readTextFile(`${evalDir}/summary.json`));
  const config = JSON.parse(await Deno.readTextFile(`${ck}/config.json`)).lotus;
  await Deno.writeTextFile(`${res}/log.jsonl`, await thinLog(run));
  await writeFileAtomic(`${res}/config.json`, JSON.stringify({ spec: r, lotus: config }, null, 2));
  // The CoT model this run started from, as it was then: a start retrained on a fresh clone
  // may differ from the one an earlier result was measured against.
  const startFile = r.from && (await exists(`${RESULTS}/${r.from}/rerun.json`))
    ? `${RESULTS}/${r.from}/rerun.json`
    : `${RESULTS}/${r.from}/result.json`;
  const start = r.from ? JSON.parse(await Deno.readTextFile(startFile)) : null;
  await writeFileAtomic(
    `${res}/result.json`,
    JSON.stringify(
      {
        spec: r,
        summary,
        test: test.runs[0],
        checkpoint: ck,
        trainSeconds,
        start: start && { test: start.test, summary: start.summary },
      },
      null,
      2,
    ),
  );
  console.error(
    `${r.name}: test accuracy ${(100 * test.runs[0].accuracy).toFixed(1)}% (${ck})`,
  );
}

if (import.meta.main) {
  const plan = runs().filter((r) => r.name.startsWith(a.only!));
  if (a.list) {
    for (const r of plan) console.log(r.name, r.from ?? "");
    Deno.exit(0);
  }
  for (const d of DATA) await buildData(d);
  const minutes = Number(a.minutes), jobs = Math.max(1, Number(a.jobs));
  // Runs wait for the run they start from: go round the plan until nothing changes.
  for (let pass = 0; pass < 4; pass++) {
    const todo: RunSpec[] = [];
    for (const r of plan) {
      if (!(await exists(`${RESULTS}/${r.name}/result.json`))) todo.push(r);
    }
    if (todo.length === 0) break;
    let next = 0;
    await Promise.all(Array.from({ length: jobs }, async () => {
      while (next < todo.length) await runOne(todo[next++], minutes);
    }));
  }
}

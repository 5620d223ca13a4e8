/**
 * The natural-language experiment at CPU scale: explicit CoT, LOTUS (from the CoT model) and
 * no-CoT on the synthetic "ages" task (2-3 steps) written with NL steps, three seeds, at the
 * `tiny` preset; and the same CoT and LOTUS with math steps, for the math-form speed ratio from
 * the same script. The paper reports LOTUS's thought 2.5x faster than CoT's with compact math
 * steps and 6.9x with NL steps: an NL chain has more tokens to decode, LOTUS's thought is the
 * same R + 1 passes over its K*c slots whatever the form (its NL blocks are wider: a larger c,
 * and steps longer than c spill, `--long-step spill`).
 *
 * Each run trains with `deno task train` on one thread, bounded in time (a run past it is
 * stopped like Ctrl-C and resumed on the next call), then `deno task eval` twice: the test
 * split at batch 32 (accuracy, readout) and the first 100 test questions at batch 1 on one
 * thread (thought latency, as docs/results.md measures it: LOTUS's pass 0 plus R loop passes
 * against the decoding of the CoT model's written chain, the tokens before its first `#`).
 * A run whose result file exists is skipped. Results go to bench/results/nl/<run>/result.json,
 * the table to bench/results/nl/table.md; data and checkpoints to out/nl/.
 *
 *   npx deno run -A bench/nl_study.ts [--seeds 0,1,2] [--forms nl,math] [--minutes 40] [--list]
 *   npx deno run -A bench/nl_study.ts --smoke     # a few steps per run, under out/nl-smoke/
 *   npx deno run -A bench/nl_study.ts --table     # the table only, from the results there
 *   npx deno run -A bench/nl_study.ts --relatency 3   # latency again, on an idle machine
 *
 * The latency measured right after each run shares the machine with whatever else runs then
 * (on two cores, the other study's training: a decode step was seen to take from 0.05 to 0.2
 * ms). `--relatency N` measures every finished run's batch-1 latency again, N rounds with the
 * runs interleaved in each, and keeps the median of the rounds as `latencyIdle` in its result,
 * which the table then uses. Run it with nothing else on the machine.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { writeFileAtomic } from "../base/atomic.ts";
import { exists } from "../base/exists.ts";
import { denoLogged, PERMS, trainArgs } from "./_child.ts";
import type { SyntheticOptions } from "../pipeline/synthetic.ts";
import type { RunSummary } from "../eval/evaluate.ts";
import { wilson } from "./experiment_table.ts";

/** The generator options of the task (bench/synth_data.ts flags below say the same). */
export const NL_SYNTH: Omit<SyntheticOptions, "n" | "seed"> = {
  families: ["ages"],
  minSteps: 2,
  maxSteps: 3,
  digits: 1,
  maxValue: 100,
};
/** Problems in the training split. */
export const NL_TRAIN_N = 6400;

const SYNTH_FLAGS = [
  "--families",
  "ages",
  "--min-steps",
  "2",
  "--max-steps",
  "3",
  "--digits",
  "1",
  "--max-value",
  "100",
];

const ROOT = new URL("..", import.meta.url).pathname;

/** One dataset: a CoT form, its c and its long-step policy (K = 3 for both). */
interface DataSpec {
  name: string;
  cot: "math" | "nl";
  c: number;
  longStep: "truncate" | "spill";
}

/**
 * c = 12 for math steps, as bench/study.ts. For NL, c = 22, the c the build suggests: the p90
 * of the task's NL step lengths under the compact tokenizer (bench/step_lengths.ts); the
 * longer steps spill into the next block.
 */
const DATA: DataSpec[] = [
  { name: "ages23-math", cot: "math", c: 12, longStep: "truncate" },
  { name: "ages23-nl", cot: "nl", c: 22, longStep: "spill" },
];

/** One training run and its evaluations. */
interface RunSpec {
  name: string;
  /** The row of the table it belongs to. */
  model: string;
  data: string;
  seed: number;
  flags: string[];
  /** The run whose checkpoint this one starts from. */
  from?: string;
}

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    seeds: { type: "string", default: "0,1,2" },
    forms: { type: "string", default: "nl,math" },
    minutes: { type: "string", default: "40" },
    smoke: { type: "boolean", default: false },
    list: { type: "boolean", default: false },
    table: { type: "boolean", default: false },
    relatency: { type: "string", default: "0" },
  },
});
const SMOKE = a.smoke!;
const OUT = `${ROOT}out/${SMOKE ? "nl-smoke" : "nl"}`;
const RESULTS = SMOKE ? `${OUT}/results` : `${ROOT}bench/results/nl`;
/** Split sizes: train, valid, test; and the batch-1 latency questions. */
const SIZES = SMOKE ? { train: 64, valid: 16, test: 16, latency: 4 } : {
  train: NL_TRAIN_N,
  valid: 300,
  test: 1000,
  latency: 100,
};

function runs(): RunSpec[] {
  const seeds = a.seeds!.split(",").map(Number);
  const forms = a.forms!.split(",");
  const common = SMOKE
    ? ["--batch", "8", "--eval-examples", "8", "--threads", "1", "--quiet"]
    : ["--batch", "32", "--eval-examples", "300", "--threads", "1", "--quiet"];
  // bench/study.ts's best recipe at tiny: CoT 8 epochs at 3e-3; LOTUS from the CoT model, one
  // epoch per stage, 16 epochs at 1e-3 (the `ep16` row); the best of the final stage kept.
  const cot = SMOKE
    ? ["--mode", "cot", "--steps", "3"]
    : ["--mode", "cot", "--epochs", "8", "--lr", "3e-3", "--keep-best"];
  const nocot = SMOKE
    ? ["--mode", "nocot", "--steps", "3"]
    : ["--mode", "nocot", "--epochs", "8", "--lr", "3e-3", "--keep-best"];
  const lotus = SMOKE
    ? ["--mode", "lotus", "--steps", "8", "--steps-per-stage", "2", "--lr", "1e-3"]
    : [
      "--mode",
      "lotus",
      "--epochs",
      "16",
      "--epochs-per-stage",
      "1",
      "--lr",
      "1e-3",
      "--keep-best",
    ];
  const out: RunSpec[] = [];
  for (const form of forms) {
    for (const seed of seeds) {
      const data = `ages23-${form}`;
      const cotName = `${form}-cot-s${seed}`;
      out.push({ name: cotName, model: `${form}-cot`, data, seed, flags: [...common, ...cot] });
      out.push({
        name: `${form}-lotus-s${seed}`,
        model: `${form}-lotus`,
        data,
        seed,
        flags: [...common, ...lotus],
        from: cotName,
      });
      // No-CoT reads no steps: one form is enough (its data has the NL form's answers).
      if (form === "nl") {
        out.push({
          name: `nocot-s${seed}`,
          model: "nocot",
          data,
          seed,
          flags: [...common, ...nocot],
        });
      }
    }
  }
  return out;
}

function deno(args: string[], log: string, timeoutMs: number): Promise<number> {
  return denoLogged(ROOT, args, log, timeoutMs);
}

/** The three splits' problems, once, shared by both forms. */
async function writeSources(): Promise<string> {
  const src = `${OUT}/data/src`;
  await Deno.mkdir(src, { recursive: true });
  const sizes: [string, number, number][] = [
    ["train", SIZES.train, 1],
    ["valid", SIZES.valid, 2],
    ["test", SIZES.test, 3],
  ];
  for (const [split, n, seed] of sizes) {
    if (await exists(`${src}/${split}.jsonl`)) continue;
    const code = await deno(
      [
        "run",
        ...PERMS,
        "bench/synth_data.ts",
        ...SYNTH_FLAGS,
        "--n",
        String(n),
        "--seed",
        String(seed),
        "--out",
        `${src}/${split}.jsonl`,
      ],
      `${OUT}/data/src.log`,
      600_000,
    );
    if (code !== 0) throw new Error(`synth_data.ts exited ${code}; see ${OUT}/data/src.log`);
  }
  return src;
}

async function buildData(d: DataSpec, src: string): Promise<void> {
  const dir = `${OUT}/data/${d.name}`;
  if (await exists(`${dir}/manifest.json`)) {
    const m = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
    if (m.splits?.test) return;
  }
  const log = `${OUT}/data/${d.name}.log`;
  for (const split of ["train", "valid", "test"]) {
    const first = split === "train"
      ? ["--tokenizer", "compact", "--k", "3", "--c", String(d.c), "--cot", d.cot]
      : [];
    const code = await deno(
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
        "--long-step",
        d.longStep,
        ...first,
      ],
      log,
      600_000,
    );
    if (code !== 0) throw new Error(`build-dataset exited ${code}; see ${log}`);
  }
}

function evalArgs(ck: string, data: string, out: string, batch: number, extra: string[]) {
  return [
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
    String(batch),
    "--threads",
    "1",
    "--quiet",
    "--out",
    out,
    ...extra,
  ];
}

/** The checkpoint a run leaves: the kept best of its final stage, else its last weights. */
async function checkpointOf(run: string): Promise<string> {
  return (await exists(`${run}/best/config.json`)) ? `${run}/best` : `${run}/checkpoint`;
}

async function runOne(r: RunSpec, minutes: number): Promise<void> {
  const res = `${RESULTS}/${r.name}`;
  if (await exists(`${res}/result.json`)) return;
  if (r.from && !(await exists(`${RESULTS}/${r.from}/result.json`))) {
    console.error(`${r.name}: waiting for ${r.from}`);
    return;
  }
  await Deno.mkdir(res, { recursive: true });
  const run = `${OUT}/runs/${r.name}`, data = `${OUT}/data/${r.data}`;
  const log = `${res}/console.log`;
  const t0 = performance.now();
  const resume = await exists(`${run}/checkpoint/config.json`);
  const args = trainArgs(
    {
      run,
      data,
      preset: "tiny",
      seed: r.seed,
      flags: r.flags,
      init: r.from ? await checkpointOf(`${OUT}/runs/${r.from}`) : undefined,
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
  const ck = await checkpointOf(run);
  const testDir = `${run}/eval-test`, latDir = `${run}/eval-latency`;
  if (await deno(evalArgs(ck, data, testDir, 32, []), log, 30 * 60_000) !== 0) {
    console.error(`${r.name}: eval exited non-zero; see ${log}`);
    return;
  }
  const latArgs = evalArgs(ck, data, latDir, 1, ["--limit", String(SIZES.latency)]);
  if (await deno(latArgs, log, 30 * 60_000) !== 0) {
    console.error(`${r.name}: latency eval exited non-zero; see ${log}`);
    return;
  }
  const summary = JSON.parse(await Deno.readTextFile(`${run}/summary.json`));
  const test = JSON.parse(await Deno.readTextFile(`${testDir}/summary.json`)).runs[0];
  const latency = JSON.parse(await Deno.readTextFile(`${latDir}/summary.json`)).runs[0];
  await writeFileAtomic(
    `${res}/result.json`,
    JSON.stringify({ spec: r, summary, test, latency, checkpoint: ck, trainSeconds }, null, 2),
  );
  console.error(
    `${r.name}: test accuracy ${(100 * test.accuracy).toFixed(1)}%, thought ` +
      `${latency.latency.thoughtMsMedian.toFixed(2)} ms (batch 1, median)`,
  );
}

interface Result {
  spec: RunSpec;
  test: RunSummary;
  latency: RunSummary;
  checkpoint: string;
  /** `--relatency`: the median over rounds, measured with nothing else running. */
  latencyIdle?: {
    rounds: number;
    thoughtMsMedian: number[];
    /** Per round; null where no answer token was timed. */
    msPerAnswerToken: (number | null)[];
  };
}

/** The thought latency a result reports: the idle re-measurement's median when there is one. */
function thoughtMs(r: Result): number {
  return r.latencyIdle ? median(r.latencyIdle.thoughtMsMedian) : r.latency.latency.thoughtMsMedian;
}

/** Every finished result of `dir`, by run name. */
async function resultsIn(dir: string): Promise<Map<string, Result>> {
  const out = new Map<string, Result>();
  for await (const e of Deno.readDir(dir)) {
    if (!e.isDirectory || !(await exists(`${dir}/${e.name}/result.json`))) continue;
    out.set(e.name, JSON.parse(await Deno.readTextFile(`${dir}/${e.name}/result.json`)));
  }
  return out;
}

/**
 * Measure every finished run's batch-1 latency `rounds` times, the runs interleaved within a
 * round, and store the per-round figures as `latencyIdle` in each result.
 */
async function relatency(rounds: number): Promise<void> {
  const all = [...(await resultsIn(RESULTS))].sort(([x], [y]) => x.localeCompare(y));
  const got = new Map<string, { t: number[]; a: (number | null)[] }>();
  for (let round = 1; round <= rounds; round++) {
    for (const [name, r] of all) {
      const run = `${OUT}/runs/${name}`, out = `${run}/eval-latency-idle-${round}`;
      const args = evalArgs(r.checkpoint, `${OUT}/data/${r.spec.data}`, out, 1, [
        "--limit",
        String(SIZES.latency),
      ]);
      if (await deno(args, `${RESULTS}/${name}/console.log`, 30 * 60_000) !== 0) {
        throw new Error(`${name}: latency eval exited non-zero; see its console.log`);
      }
      const lat = JSON.parse(await Deno.readTextFile(`${out}/summary.json`)).runs[0].latency;
      const g = got.get(name) ?? { t: [], a: [] };
      g.t.push(lat.thoughtMsMedian), g.a.push(lat.msPerAnswerToken);
      got.set(name, g);
      console.error(`${name}: round ${round}, thought ${lat.thoughtMsMedian.toFixed(2)} ms`);
    }
  }
  for (const [name, r] of all) {
    const g = got.get(name)!;
    r.latencyIdle = { rounds, thoughtMsMedian: g.t, msPerAnswerToken: g.a };
    await writeFileAtomic(`${RESULTS}/${name}/result.json`, JSON.stringify(r, null, 2));
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y), m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** The table: accuracy pooled over seeds with Wilson's interval, thought latency, the ratios. */
export async function nlTable(dir: string): Promise<string> {
  const by = new Map<string, Result[]>();
  for (const r of (await resultsIn(dir)).values()) {
    by.set(r.spec.model, [...(by.get(r.spec.model) ?? []), r]);
  }
  const lines = [
    "| model | seeds | test acc % | 95% CI | thought ms (batch 1, median) | thought tokens | readout top-1 % |",
    "| --- | --: | --: | --: | --: | --: | --: |",
  ];
  const thought = new Map<string, number>();
  for (const model of ["nl-cot", "nl-lotus", "nocot", "math-cot", "math-lotus"]) {
    const rs = by.get(model);
    if (!rs?.length) continue;
    const correct = rs.reduce((s, r) => s + r.test.correct, 0);
    const n = rs.reduce((s, r) => s + r.test.n, 0);
    const [lo, hi] = wilson(correct, n);
    const ms = median(rs.map(thoughtMs));
    thought.set(model, ms);
    const toks = median(rs.map((r) => r.latency.latency.thoughtTokensMean));
    const top1 = rs.every((r) => r.test.readout)
      ? (100 * median(rs.map((r) => r.test.readout!.top1))).toFixed(1)
      : "–";
    lines.push(
      `| ${model} | ${rs.length} | ${(100 * correct / n).toFixed(1)} | ` +
        `${(100 * lo).toFixed(1)}–${(100 * hi).toFixed(1)} | ${ms.toFixed(2)} | ` +
        `${toks.toFixed(1)} | ${top1} |`,
    );
  }
  const ratio = (form: string, paper: string) => {
    const c = thought.get(`${form}-cot`), l = thought.get(`${form}-lotus`);
    return c !== undefined && l !== undefined && l > 0
      ? `- ${form}: CoT thought / LOTUS thought = ${(c / l).toFixed(2)}x (paper: ${paper})`
      : `- ${form}: not measured`;
  };
  lines.push("", ratio("nl", "6.9x"), ratio("math", "2.5x"));
  return lines.join("\n");
}

if (import.meta.main) {
  if (a.table) {
    console.log(await nlTable(RESULTS));
    Deno.exit(0);
  }
  if (Number(a.relatency) > 0) {
    await relatency(Number(a.relatency));
    const table = await nlTable(RESULTS);
    await writeFileAtomic(`${RESULTS}/table.md`, table + "\n");
    console.log(table);
    Deno.exit(0);
  }
  const plan = runs();
  if (a.list) {
    for (const r of plan) console.log(r.name, r.from ?? "");
    Deno.exit(0);
  }
  await Deno.mkdir(RESULTS, { recursive: true });
  const src = await writeSources();
  const forms = a.forms!.split(",");
  for (const d of DATA) if (forms.includes(d.cot)) await buildData(d, src);
  const minutes = Number(a.minutes);
  // Runs wait for the run they start from: go round the plan until nothing changes.
  for (let pass = 0; pass < 2; pass++) {
    for (const r of plan) await runOne(r, minutes);
  }
  const table = await nlTable(RESULTS);
  await writeFileAtomic(`${RESULTS}/table.md`, table + "\n");
  console.log(table);
}

/**
 * Where a training step's time goes, op by op: the reference step of bench/gpu_bench.ts
 * (GPT-2 small, K = R = 6, c = 13, a 60-token question, an 8-token answer, batch 64, bf16 on a
 * GPU), then a batch-1 LOTUS generation of one token. Without a GPU it is a dry run on the CPU
 * engine at a small shape (tiny, batch 4).
 *
 *   npx deno run --allow-all bench/gpu_profile.ts [--backend auto|cuda|cpu] [--precision bf16]
 *       [--preset gpt2] [--batch 64] [--steps 2] [--vocab 50260] [--engine-lib PATH] [--out DIR]
 *
 * --engine-lib loads that CUDA engine library (another build, or the host emulation's for a
 * dry run of the CUDA graphs' profile at a small --preset, --batch and --vocab).
 *
 * In order, each the mean of --steps steps after warm-ups: the step time with CUDA graphs (as
 * training runs); the step's ops on the device's clock (`timeOpsOnDevice`: timing marks before
 * and after each op, recorded into the step's CUDA graphs, so that each op is timed as training
 * runs it, with nothing waiting around it, and the time between ops, launch gaps and work
 * outside ops, given apart), by op and by op and shape; the step launched op by op, then
 * profiled from the host (`profileOps`: a synchronisation around each op, so the total exceeds
 * the op-by-op time by about 10 µs an op on a GPU, and an op's bf16 output copy no longer
 * reaches the matmul after it, which then rounds its input itself); the generation from the
 * host, then on the device's clock, and an answer token's ops on the device's clock (a
 * generation of 8 tokens less one of 1, by op, over 7). The device-clock parts need an engine
 * library with marks.
 * It prints, and writes profile.txt and profile.json to --out (default $OUT, else
 * bench/results/gpu_profile) after each part, so that a time limit keeps what was done.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Precision, PRECISIONS, PRECISIONS_TEXT } from "../engine/ffi.ts";
import { selectEngine } from "../engine/backend.ts";
import { probeCuda } from "../engine/cuda_probe.ts";
import { presetConfig, type PresetName } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Model } from "../model/model.ts";
import { Generator } from "../model/generate.ts";
import { Rng } from "../base/rng.ts";
import { specialsOf } from "../check/measure.ts";
import { referenceStep } from "../check/reference_step.ts";
import { formatProfile, profileOps, timeOpsOnDevice } from "../check/op_profile.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    backend: { type: "string", default: "auto" },
    precision: { type: "string" },
    preset: { type: "string" },
    batch: { type: "string" },
    steps: { type: "string", default: "2" },
    vocab: { type: "string", default: "50260" },
    "engine-lib": { type: "string" },
    out: { type: "string" },
  },
  strict: true,
});
const fail = (m: string): never => {
  console.error(`gpu-profile: ${m}`);
  Deno.exit(2);
};
if (!["auto", "cuda", "cpu"].includes(a.backend!)) {
  fail(`--backend ${a.backend}: auto, cuda or cpu`);
}
const lib = a["engine-lib"];
if (lib !== undefined && a.backend === "cpu") {
  fail("--engine-lib loads a CUDA engine: not with --backend cpu");
}
const gpu = lib !== undefined || a.backend === "cuda" ||
  (a.backend === "auto" && probeCuda().available);
const precision = (a.precision ?? (gpu ? "bf16" : "fp32")) as Precision;
if (!PRECISIONS.includes(precision)) {
  fail(`--precision ${precision}: ${PRECISIONS_TEXT}`);
}
const preset = (a.preset ?? (gpu ? "gpt2" : "tiny")) as PresetName;
const B = Number(a.batch ?? (gpu ? 64 : 4)), steps = Number(a.steps);
if (!(B > 0 && Number.isInteger(B))) fail(`--batch ${a.batch}: a positive integer`);
if (!(steps > 0 && Number.isInteger(steps))) fail(`--steps ${a.steps}: a positive integer`);
const outDir = a.out ?? Deno.env.get("OUT") ??
  new URL("./results/gpu_profile", import.meta.url).pathname;
Deno.mkdirSync(outDir, { recursive: true });

const V = Number(a.vocab), Q = 60, A = 8, K = 6, c = 13;
if (!(V >= 16 && Number.isInteger(V))) fail(`--vocab ${a.vocab}: an integer of at least 16`);
const eng = (() => {
  try {
    return selectEngine(gpu ? "cuda" : "cpu", { precision, quiet: true, cudaLibPath: lib });
  } catch (e) {
    return fail(`the engine did not open: ${(e as Error).message}`);
  }
})();
const out: string[] = [];
const report: Record<string, unknown> = {};
/** Prints a line and rewrites both files, so that a run stopped by a time limit keeps its parts. */
const say = (s: string) => {
  console.log(s);
  out.push(s);
  Deno.writeTextFileSync(`${outDir}/profile.txt`, out.join("\n") + "\n");
  Deno.writeTextFileSync(`${outDir}/profile.json`, JSON.stringify(report, null, 1) + "\n");
};
say(`gpu-profile: ${eng.backend} engine, ${precision}, ${preset}, B=${B}, K=R=${K}, c=${c}`);

/** Mean ms of `n` calls of `f` after two warm-ups, the engine synchronised around. */
const timeIt = (f: () => unknown, n: number) => {
  for (let i = 0; i < 2; i++) f();
  eng.sync();
  const t = performance.now();
  for (let i = 0; i < n; i++) f();
  eng.sync();
  return (performance.now() - t) / n;
};

const shape = { preset, V, B, Q, A, K, c };
const mcfg = presetConfig(preset, V);
const params = initParams(paramLayout(mcfg), mcfg, 0); // one set of weights for every run
Object.assign(report, { precision, shape, steps });
{
  const ref = referenceStep(eng, shape, new Rng(1), { params });
  report.stepGraphsMs = timeIt(ref.step, steps);
  ref.free();
  const how = eng.backend === "cuda" ? "with CUDA graphs" : "(the CPU engine has no graphs)";
  say(`training step: ${(report.stepGraphsMs as number).toFixed(1)} ms ${how}`);
}
// The step timed on the device's clock: marks between the ops, recorded into the step's
// CUDA graphs, so that each op is timed as training runs it, with no wait around it.
if (eng.hasMarks) {
  const dev = timeOpsOnDevice(eng);
  const ref = referenceStep(eng, shape, new Rng(1), { params });
  for (let i = 0; i < 3; i++) ref.step(); // op by op, then recorded, then replayed
  dev.reset();
  for (let i = 0; i < steps; i++) ref.step();
  report.stepDeviceOpsMs = dev.totalMs() / steps;
  report.stepDeviceBetweenMs = dev.betweenMs() / steps;
  report.stepDeviceByName = dev.byName();
  report.stepDeviceByShape = dev.byShape();
  ref.free();
  dev.restore();
  say(
    `\ntraining step on the device's clock${eng.backend === "cuda" ? ", from CUDA graphs" : ""}: ${
      (report.stepDeviceOpsMs as number).toFixed(1)
    } ms in ops, ${(report.stepDeviceBetweenMs as number).toFixed(1)} ms between them\n` +
      formatProfile(dev.byName(), steps),
  );
  say("\nby op and shape, on the device's clock\n" + formatProfile(dev.byShape(), steps, 40));
} else {
  say(`\n(${eng.libPath} has no timing marks: no profile on the device's clock)`);
}
{
  const ref = referenceStep(eng, shape, new Rng(1), { maxGraphs: 0, params });
  report.stepEagerMs = timeIt(ref.step, steps);
  const prof = profileOps(eng);
  for (let i = 0; i < steps; i++) ref.step();
  prof.restore();
  report.stepProfiledMs = prof.totalMs() / steps;
  report.stepByName = prof.byName();
  report.stepByShape = prof.byShape();
  ref.free();
  say(
    `\ntraining step op by op: ${(report.stepEagerMs as number).toFixed(1)} ms, ${
      (report.stepProfiledMs as number).toFixed(1)
    } ms profiled from the host (a synchronisation around each op)`,
  );
  say("\nby op (ms and calls a step)\n" + formatProfile(prof.byName(), steps));
  say("\nby op and shape\n" + formatProfile(prof.byShape(), steps, 40));
}
{
  const model = new Model(eng, mcfg, params, false);
  const gen = new Generator(model, { B: 1, P: Q, K, c, maxNewTokens: A });
  const draw = new Rng(2);
  const q = [Int32Array.from({ length: Q }, () => draw.below(V - 4))];
  const noEos = { ...specialsOf(V), eos: -1 };
  const run = () =>
    gen.generate(q, noEos, { mode: "lotus", K, c, R: K, maxNewTokens: 1, graphs: false });
  for (let i = 0; i < 3; i++) run();
  const prof = profileOps(eng);
  const runs = 5;
  for (let i = 0; i < runs; i++) run();
  prof.restore();
  report.thoughtByName = prof.byName();
  say(
    `\nbatch-1 LOTUS generation of one token (prefill, thought phase, one token), op by op, ` +
      `profiled\n` + formatProfile(prof.byName(), runs),
  );
  if (eng.hasMarks) {
    // Generations of 1 and of A tokens from their CUDA graphs, on the device's clock: the
    // first as a whole, and their difference by op over A - 1 tokens, an answer token's ops.
    // One profile for both, so that the graphs the first records are timed in the second.
    const dev = timeOpsOnDevice(eng);
    const timed = (tokens: number) => {
      const graphed = () =>
        gen.generate(q, noEos, { mode: "lotus", K, c, R: K, maxNewTokens: tokens });
      for (let i = 0; i < 3; i++) graphed(); // op by op, then recorded, then replayed
      dev.reset();
      for (let i = 0; i < runs; i++) graphed();
      return { ms: dev.totalMs() / runs, between: dev.betweenMs() / runs, rows: dev.byName() };
    };
    let one, many;
    try {
      one = timed(1);
      many = timed(A);
    } finally {
      dev.restore();
    }
    report.thoughtDeviceOpsMs = one.ms;
    report.thoughtDeviceBetweenMs = one.between;
    report.thoughtDeviceByName = one.rows;
    const graphs = eng.backend === "cuda" ? ", from CUDA graphs" : "";
    say(
      `\nthe same generation on the device's clock${graphs}: ${one.ms.toFixed(2)} ms in ops, ${
        one.between.toFixed(2)
      } ms between them\n` + formatProfile(one.rows, runs),
    );
    const base = new Map(one.rows.map((t) => [t.key, t]));
    const perToken = many.rows.map((t) => {
      const b = base.get(t.key);
      return {
        key: t.key,
        calls: t.calls - (b?.calls ?? 0),
        ms: Math.max(0, t.ms - (b?.ms ?? 0)),
        flops: t.flops - (b?.flops ?? 0),
      };
    }).filter((t) => t.calls > 0).sort((x, y) => y.ms - x.ms);
    const n = runs * (A - 1);
    report.tokenDeviceOpsMs = (many.ms - one.ms) / (A - 1);
    report.tokenDeviceByName = perToken;
    say(
      `\nan answer token on the device's clock${graphs} (a generation of ${A} tokens less one ` +
        `of 1, over ${A - 1}): ${(report.tokenDeviceOpsMs as number).toFixed(3)} ms in ops ` +
        `(by op, a difference below 0 shows as 0)\n` +
        formatProfile(perToken, n),
    );
  }
  gen.free();
  model.free();
}
eng.close();

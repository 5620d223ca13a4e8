/**
 * The GPU benchmark (docs/gpu-bench.md: its targets and how to run it), in one run. The one
 * command is `npx deno task bench:gpu` (bash bench/gpu_bench.sh, which adds a time limit);
 * without a GPU it is a dry run on the CPU engine at a small shape.
 *
 *   npx deno run --allow-all bench/gpu_bench.ts [--backend auto|cuda|cpu] [--precision bf16]
 *       [--preset gpt2] [--batch 64] [--steps 10] [--question 60] [--answer 8] [--k 6]
 *       [--c 13] [--runs 20] [--eval-questions 1319] [--eval-batch 64] [--skip-check]
 *       [--skip-torch] [--torch-modes eager,compile-blocks] [--python python3]
 *       [--engine-lib PATH] [--out DIR]
 *
 * In order:
 *  1. The correctness checks of the CUDA engine (check/gpu_check.ts); a failure stops here.
 *  2. Training at the reference's shape (GPT-2 small, c = 13, K = R = 6, a 60-token question,
 *     an 8-token answer, batch 64, random tokens): examples/s, token positions/s, MFU and peak
 *     device memory of this project's engine, then check/torch_reference.py eager and with
 *     torch.compile at the same shape (`--torch-modes eager` runs the eager one only, for a
 *     card whose reference figures are not in docs/gpu-bench.md and a short run).
 *  3. Batch-1 inference: the thought phase (pass 0 + R loop passes, after the prefill), the
 *     time per answer token, and explicit-CoT decoding of 30 and 90 tokens after the same
 *     question on this engine; the speed-up ratios.
 *  4. Evaluation throughput: batched greedy LOTUS decoding of 1,319 questions (GSM8K test's
 *     count) at the same shape.
 * --engine-lib PATH loads that CUDA engine library for steps 2-4 instead of building one: a
 * library built from an earlier commit of the same ABI gives a before/after in one session.
 * It prints a table last (targets judged only on a GPU) and writes gpu_bench.json and
 * table.txt and rows.jsonl (each row as it is measured) to --out (default $OUT when set, else
 * bench/results/gpu_bench), and on a GPU a copy of the JSON to bench/results/gpu_bench.json.
 *
 * Weights are random (seeded): speed does not depend on them, and no trained GPT-2 is
 * needed. So that every run does the same work, EOS is ignored: LOTUS decodes exactly
 * `--answer` tokens and CoT exactly 30 or 90. Question ids are random, with lengths drawn
 * from 40..80 for the evaluation (mean 60) and exactly `--question` elsewhere.
 *
 * MFU counts 6 * parameters * token positions per example (forward and backward, the usual
 * approximation, attention excluded), against the measured bf16 peak of 790 TFLOP/s; by that
 * count the reference's 229 examples/s is 13.5%.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Engine, type Precision, PRECISIONS, PRECISIONS_TEXT } from "../engine/ffi.ts";
import { selectEngine } from "../engine/backend.ts";
import type { BackendName } from "../engine/types.ts";
import { cudaMemInfo, probeCuda } from "../engine/cuda_probe.ts";
import { PRESET_NAMES, presetConfig, type PresetName } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Model } from "../model/model.ts";
import { type ReferenceShape, referenceStep } from "../check/reference_step.ts";
import { Generator } from "../model/generate.ts";
import { Rng } from "../base/rng.ts";
import {
  type BenchRow,
  formatBenchTable,
  judge,
  median,
  mfu,
  specialsOf,
  TARGETS,
} from "../check/measure.ts";

// ---- the run (started at the end of the module, once its constants are defined) --------------

async function main(): Promise<void> {
  const { values: a } = parseOrExit(() =>
    parseArgs({
      args: Deno.args,
      options: {
        backend: { type: "string", default: "auto" },
        precision: { type: "string" },
        preset: { type: "string" },
        batch: { type: "string" },
        steps: { type: "string" },
        question: { type: "string", default: "60" },
        answer: { type: "string", default: "8" },
        k: { type: "string", default: "6" },
        c: { type: "string", default: "13" },
        vocab: { type: "string", default: "50260" },
        runs: { type: "string" },
        "eval-questions": { type: "string" },
        "eval-batch": { type: "string" },
        "skip-check": { type: "boolean", default: false },
        "skip-torch": { type: "boolean", default: false },
        "torch-modes": { type: "string", default: TORCH_MODES.join(",") },
        python: { type: "string", default: "python3" },
        "engine-lib": { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    })
  );
  if (a.help) {
    console.log(Deno.readTextFileSync(new URL(import.meta.url)).split("*/")[0]);
    return;
  }
  const log = (s: string) => console.error(`gpu-bench: ${s}`);
  const t0 = performance.now();
  const secs = (since: number) => ((performance.now() - since) / 1000).toFixed(1);

  const torchModes = a["torch-modes"]!.split(",").filter(Boolean);
  for (const m of torchModes) {
    if (!(TORCH_MODES as readonly string[]).includes(m)) {
      fatal(`--torch-modes ${a["torch-modes"]}: ${m} is not one of ${TORCH_MODES.join(", ")}`);
    }
  }
  if (torchModes.length === 0) fatal("--torch-modes: name at least one mode, or --skip-torch");

  const backend = a.backend as BackendName;
  if (!["auto", "cuda", "cpu"].includes(backend)) {
    fatal(`--backend ${backend}: use auto, cuda or cpu`);
  }
  const gpu = backend === "cuda" || (backend === "auto" && probeCuda().available);
  const dry = !gpu;
  if (dry) {
    log(
      `DRY RUN on the CPU engine (${
        backend === "cpu" ? "--backend cpu" : probeCuda().reason
      }): small defaults, no target is judged`,
    );
  }
  const num = (v: string | undefined, name: string, gpuDefault: number, dryDefault: number) => {
    const n = v === undefined ? (dry ? dryDefault : gpuDefault) : Number(v);
    if (!Number.isInteger(n) || n <= 0) fatal(`--${name} ${v}: must be a positive integer`);
    return n;
  };
  const preset = (a.preset ?? (dry ? "tiny" : "gpt2")) as PresetName;
  if (!PRESET_NAMES.includes(preset)) fatal(`--preset ${preset}: use ${PRESET_NAMES.join(", ")}`);
  const precision = (a.precision ?? (dry ? "fp32" : "bf16")) as Precision;
  if (!PRECISIONS.includes(precision)) {
    fatal(`--precision ${precision}: use ${PRECISIONS_TEXT}`);
  }
  const B = num(a.batch, "batch", 64, 4);
  const steps = num(a.steps, "steps", 10, 2);
  const runs = num(a.runs, "runs", 20, 3);
  const evalN = num(a["eval-questions"], "eval-questions", 1319, 16);
  const evalB = num(a["eval-batch"], "eval-batch", 64, 8);
  const Q = num(a.question, "question", 60, 60), A = num(a.answer, "answer", 8, 8);
  const K = num(a.k, "k", 6, 6), c = num(a.c, "c", 13, 13), R = K;
  const V = num(a.vocab, "vocab", 50260, 50260);
  const outDir = a.out ?? Deno.env.get("OUT") ??
    new URL("./results/gpu_bench", import.meta.url).pathname;
  Deno.mkdirSync(outDir, { recursive: true });

  // The wrapper's time limit (bench/gpu_bench.sh), so that the torch step can fit in what is left.
  const limitS = Number(Deno.env.get("GPU_BENCH_TIMEOUT") ?? "0") || Infinity;
  const torchBudget = () =>
    Math.max(30, Math.min(300, limitS - (performance.now() - t0) / 1000 - 20)) * 1000;
  const rowsFile = `${outDir}/rows.jsonl`;
  Deno.writeTextFileSync(rowsFile, "");
  const rows: BenchRow[] = [];
  const detail: Record<string, unknown> = {};
  const push = (r: Omit<BenchRow, "met">) => {
    const row = { ...r, met: dry ? null : judge(r.value, r.target) };
    rows.push(row);
    // As they come, so that a run cut short still leaves what it measured.
    Deno.writeTextFileSync(rowsFile, JSON.stringify(row) + "\n", { append: true });
    log(
      `${r.section}: ${r.name}: ${r.value === null ? "-" : +r.value.toPrecision(4)} ${r.unit} ${
        r.note ?? ""
      }`,
    );
  };

  /** Writes the results, prints the table last, and exits. */
  const finish = (code: number, stopped?: string): never => {
    const table = formatBenchTable(rows);
    const met = rows.filter((r) => r.met === true).length;
    const missed = rows.filter((r) => r.met === false).length;
    const summary = stopped
      ? `gpu bench STOPPED: ${stopped}`
      : `gpu bench: ${met} targets met, ${missed} missed in ${secs(t0)} s` +
        (dry ? " (DRY RUN on the CPU: no GPU figure, no target judged)" : "");
    const report = {
      date: new Date().toISOString(),
      dry,
      backend: gpu ? "cuda" : "cpu",
      precision,
      shape: { preset, V, B, Q, A, K, c, R, evalN, evalB, steps, runs },
      rows,
      detail,
      stopped: stopped ?? null,
    };
    try {
      Deno.writeTextFileSync(`${outDir}/table.txt`, `${table}\n${summary}\n`);
      writeJson(`${outDir}/gpu_bench.json`, report);
      const results = new URL("./results/", import.meta.url).pathname;
      if (!dry && !outDir.startsWith(results)) {
        Deno.mkdirSync(results, { recursive: true });
        writeJson(`${results}gpu_bench.json`, report);
      }
    } catch (e) {
      log(`could not write the results to ${outDir}: ${(e as Error).message}`);
    }
    console.log(table);
    console.log(summary);
    Deno.exit(code);
  };

  // 1. Correctness first.
  if (a["skip-check"]) log("--skip-check: the correctness checks were not run");
  else {
    const t = performance.now();
    log("running the correctness checks (check/gpu_check.ts)");
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        new URL("../check/gpu_check.ts", import.meta.url).pathname,
        "--out",
        `${outDir}/gpu_check`,
        ...(dry ? ["--cpu-only"] : []),
        ...(a["skip-torch"] ? ["--skip-torch"] : ["--python", a.python!]),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    detail.check = text.trim().split("\n").pop();
    push({
      section: "check",
      name: "CUDA correctness checks (gpu_check)",
      value: out.code,
      unit: "exit",
      target: "",
      note: `${detail.check}; ${secs(t)} s`,
    });
    if (!out.success) {
      console.error(text);
      finish(1, `the correctness checks failed (${outDir}/gpu_check/table.txt)`);
    }
  }

  // 2. Training at the reference shape.
  const mcfg = presetConfig(preset, V);
  const nParams = paramLayout(mcfg).mainTotal;
  const sp = specialsOf(V);
  const used = () => {
    const m = gpu ? cudaMemInfo() : null;
    return m ? m.total - m.free : null;
  };
  const eng: Engine = (() => {
    try {
      const cudaLibPath = a["engine-lib"];
      return selectEngine(gpu ? "cuda" : "cpu", { precision, quiet: true, cudaLibPath });
    } catch (e) {
      return finish(1, `the engine did not open: ${(e as Error).message}`);
    }
  })();
  // Only now: the driver reports memory for the current context, which the engine creates.
  const base = used();
  log(
    `${eng.backend} engine, ${precision}, preset ${preset} (${(nParams / 1e6).toFixed(1)} M)` +
      (a["engine-lib"] ? `, library ${eng.libPath}` : ""),
  );
  const params = initParams(paramLayout(mcfg), mcfg, 0);
  const draw = new Rng(1);
  {
    const t = performance.now();
    const ref = referenceStep(eng, { preset, V, B, Q, A, K, c }, draw, { params });
    const { step, positions } = ref;
    let peakUsed = 0, peakEngine = 0;
    const sample = () => {
      const u = used();
      if (u !== null && base !== null) peakUsed = Math.max(peakUsed, u - base);
      peakEngine = Math.max(peakEngine, eng.bytesInUse());
    };
    for (let i = 0; i < 2; i++) step(), sample(); // warm-up
    eng.sync();
    const ts = performance.now();
    let last;
    for (let i = 0; i < steps; i++) last = step();
    eng.sync();
    const ms = (performance.now() - ts) / steps;
    sample();
    const exPerSec = B / (ms / 1000);
    detail.train = {
      msPerStep: ms,
      positionsPerExample: positions,
      params: nParams,
      lastLoss: last,
      peakEngineBytes: peakEngine,
      peakDeviceBytes: base === null ? null : peakUsed,
      seconds: +secs(t),
    };
    const shape = `${preset}, B=${B}, K=R=${K}, c=${c}, Q=${Q}, A=${A}, ${positions} pos/ex`;
    push({
      section: "train",
      name: `engine ${precision}: examples/s`,
      value: exPerSec,
      unit: "ex/s",
      target: `>= ${TARGETS.trainExamplesPerSec}`,
      note: `${ms.toFixed(1)} ms/step; ${shape}`,
    });
    push({
      section: "train",
      name: "engine: token positions/s",
      value: exPerSec * positions,
      unit: "pos/s",
      target: "",
    });
    push({
      section: "train",
      name: "engine: MFU (6*N*positions vs 790 TFLOP/s)",
      value: 100 * mfu(nParams, exPerSec * positions),
      unit: "%",
      target: "",
    });
    const info = eng.deviceInfo();
    if (info.gemmTuneShapes !== undefined) {
      // What timing the heuristic's candidate GEMM algorithms (matmul.cuh) changed: one call
      // of every timed shape of the step, with the heuristic's first and with the one kept.
      const heur = Number(info.gemmTuneHeuristicUs), chosen = Number(info.gemmTuneChosenUs);
      push({
        section: "train",
        name: "engine: GEMM shapes where timing changed the algorithm",
        value: Number(info.gemmTuneChanged),
        unit: "shapes",
        target: "",
        note: `of ${info.gemmTuneShapes} timed (${info.gemmTuneCandidates} candidates each); ` +
          `one call of each: ${heur.toFixed(0)} us with the heuristic's first, ` +
          `${chosen.toFixed(0)} us with the kept`,
      });
    }
    push({
      section: "train",
      name: "engine: peak device memory",
      value: (gpu && base !== null ? peakUsed : peakEngine) / 2 ** 30,
      unit: "GiB",
      target: `<= ${TARGETS.peakGiB}`,
      note: gpu && base !== null
        ? `device-wide, CUDA context included; engine blocks ${
          (peakEngine / 2 ** 30).toFixed(2)
        } GiB`
        : "engine blocks (host memory in a dry run)",
    });
    ref.free();
  }

  // 3. Batch-1 inference.
  const imodel = new Model(eng, mcfg, params, false);
  const noEos = { ...sp, eos: -1 };
  {
    const gen = new Generator(imodel, { B: 1, P: Q, K, c, maxNewTokens: 90 });
    const q = [Int32Array.from({ length: Q }, () => draw.below(V - 4))];
    const lotus = { th: [] as number[], tok: [] as number[], thNoGraphs: [] as number[] };
    const cot: Record<number, number[]> = { 30: [], 90: [] };
    for (let i = 0; i < runs + 3; i++) {
      const g = gen.generate(q, noEos, { mode: "lotus", K, c, R, maxNewTokens: A });
      // The same thought phase launched op by op (CUDA graphs off; the CPU has none).
      const ng = gen.generate(q, noEos, { mode: "lotus", K, c, R, maxNewTokens: 1, graphs: false });
      const g30 = gen.generate(q, noEos, { mode: "cot", maxNewTokens: 30 });
      const g90 = gen.generate(q, noEos, { mode: "cot", maxNewTokens: 90 });
      if (i < 3) continue; // warm-up
      lotus.th.push(g.timings.thoughtMs);
      lotus.thNoGraphs.push(ng.timings.thoughtMs);
      lotus.tok.push(g.timings.decodeMs / g.timings.decodeSteps);
      cot[30].push(g30.timings.decodeMs);
      cot[90].push(g90.timings.decodeMs);
    }
    gen.free();
    const th = median(lotus.th), tok = median(lotus.tok);
    detail.inference = { lotus, cot };
    push({
      section: "infer",
      name: `thought phase (pass 0 + ${R} loops, batch 1)`,
      value: th,
      unit: "ms",
      target: `<= ${TARGETS.thoughtMs}`,
      note: `median of ${runs}; ${1 + K * c} positions a pass after a ${Q}-token prefill`,
    });
    push({
      section: "infer",
      name: "thought phase without CUDA graphs (batch 1)",
      value: median(lotus.thNoGraphs),
      unit: "ms",
      target: "",
      note: "every op launched from the host: the change's before",
    });
    push({
      section: "infer",
      name: "LOTUS answer token (batch 1)",
      value: tok,
      unit: "ms",
      target: `<= ${TARGETS.answerTokenMs}`,
    });
    for (const n of [30, 90] as const) {
      const m = median(cot[n]);
      push({
        section: "infer",
        name: `explicit CoT, ${n} tokens (batch 1)`,
        value: m,
        unit: "ms",
        target: "",
        note: `${(m / n).toFixed(3)} ms/token`,
      });
      push({
        section: "infer",
        name: `thought speed-up over CoT ${n}`,
        value: m / th,
        unit: "x",
        target: `>= ${n === 30 ? TARGETS.speedup30 : TARGETS.speedup90}`,
      });
    }
    const info = eng.deviceInfo();
    if (info.skinnyShapes !== undefined) {
      // Where the split-K kernel for 9 to 128 rows (skinny.cuh) beat cuBLAS when timed: one
      // call of every timed shape (a loop pass's four, the prefill's) by each.
      push({
        section: "infer",
        name: "engine: forward shapes of 9 to 128 rows kept on the split-K kernel",
        value: Number(info.skinnyChosen),
        unit: "shapes",
        target: "",
        note: `of ${info.skinnyShapes} timed (LOTUS_SKINNY=${info.skinny}); one call of each: ${
          Number(info.skinnyCublasUs).toFixed(0)
        } us by cuBLAS, ${Number(info.skinnyKernelUs).toFixed(0)} us by the kernel`,
      });
      // Where forming a deferred GELU in the few-row kernels beat GELU's own kernel.
      push({
        section: "infer",
        name: "engine: few-row shapes kept forming GELU's output",
        value: Number(info.geluFwdFused),
        unit: "shapes",
        target: "",
        note: `of ${info.geluFwdShapes} timed (LOTUS_DEFER_GELU_FWD=${info.deferGeluFwd})`,
      });
    }
  }

  // 4. Evaluation throughput: 1,319 questions, batched greedy LOTUS decoding.
  {
    const gen = new Generator(imodel, { B: evalB, P: 80, K, c, maxNewTokens: A });
    const qs = Array.from(
      { length: evalN },
      () => Int32Array.from({ length: 40 + draw.below(41) }, () => draw.below(V - 4)),
    );
    // One warm-up batch, untimed.
    gen.generate(qs.slice(0, evalB), noEos, { mode: "lotus", K, c, R, maxNewTokens: A });
    const t = performance.now();
    let answered = 0;
    for (let i = 0; i < evalN; i += evalB) {
      const g = gen.generate(qs.slice(i, i + evalB), noEos, {
        mode: "lotus",
        K,
        c,
        R,
        maxNewTokens: A,
      });
      answered += g.tokens.length;
    }
    eng.sync();
    const s = (performance.now() - t) / 1000;
    gen.free();
    detail.eval = { seconds: s, questions: answered };
    push({
      section: "eval",
      name: `${evalN} questions, batch ${evalB}, ${A} answer tokens`,
      value: s,
      unit: "s",
      target: evalN === 1319 ? `<= ${TARGETS.evalSeconds}` : "",
      note: `${(answered / s).toFixed(1)} questions/s`,
    });
  }
  imodel.free();
  eng.close();

  // 5. The PyTorch reference, eager and compiled, at the same shape: last, so that its
  // compilation cannot cost this engine's figures the run's time limit. Each mode runs in a
  // process of its own, eager first, so that a compilation cut short by the time limit still
  // leaves the eager figure. "compile-blocks" compiles each transformer block (one compiled
  // block serves every layer and chunk of a shape); compiling the whole 7-pass step did not
  // finish within 240 s on an H200 (check/torch_reference.py --modes compile runs it).
  const torchSkipped = (note: string, mode = "reference") =>
    push({ section: "torch", name: `torch ${mode}`, value: null, unit: "", target: "", note });
  if (a["skip-torch"]) torchSkipped("--skip-torch");
  else {
    const t = performance.now();
    const shape = { preset, V, B, Q, A, K, c, steps: Math.max(steps, 5), dtype: precision };
    const results: Record<string, TorchResult> = {};
    const runs: Record<string, unknown> = {};
    for (const mode of torchModes) {
      // Eager gets at most 120 s of what is left; the compiled mode the rest.
      const budget = mode === "eager" ? Math.min(torchBudget(), 120_000) : torchBudget();
      const run = await torchBench(a.python!, shape, mode, budget);
      runs[mode] = run;
      if ("skipped" in run) torchSkipped(run.skipped, mode);
      else if (run.results[mode]) results[mode] = run.results[mode]!;
    }
    detail.torch = runs;
    const ours = rows.find((r) => r.name.endsWith("examples/s"))!.value!;
    for (const mode of torchModes) {
      const r = results[mode];
      if (!r) continue;
      if (r.error !== undefined) {
        push({
          section: "torch",
          name: `torch ${mode} ${precision}: examples/s`,
          value: null,
          unit: "",
          target: "",
          note: `failed: ${r.error}`,
        });
        continue;
      }
      push({
        section: "torch",
        name: `torch ${mode} ${precision}: examples/s`,
        value: r.examples_per_s,
        unit: "ex/s",
        target: "",
        note: `${r.ms_per_step.toFixed(1)} ms/step; peak ${
          r.peak_gib === null ? "-" : r.peak_gib.toFixed(1)
        } GiB`,
      });
    }
    const ok = (r?: TorchResult) => r && r.error === undefined ? r : undefined;
    const best = ok(results["compile-blocks"]) ? "compile-blocks" : "eager";
    const comp = ok(results[best]);
    if (comp) {
      push({
        section: "torch",
        name: `engine / torch ${best}`,
        value: ours / comp.examples_per_s,
        unit: "x",
        target: ">= 1",
        note: `${secs(t)} s`,
      });
    }
  }
  finish(0);
}

/** The arguments, or a one-line usage error (exit 2) for an unknown flag or a missing value. */
function parseOrExit<T>(parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    return fatal(`${(e as Error).message}; see --help`);
  }
}

function fatal(msg: string): never {
  console.error(`gpu-bench: ${msg}`);
  Deno.exit(2);
}

function writeJson(path: string, v: unknown): void {
  const tmp = `${path}.tmp`;
  Deno.writeTextFileSync(tmp, JSON.stringify(v, null, 1) + "\n");
  Deno.renameSync(tmp, path);
}

interface TorchResult {
  ms_per_step: number;
  examples_per_s: number;
  positions_per_s: number;
  peak_gib: number | null;
  /** Set instead of the figures when this section failed. */
  error?: string;
}

/** The reference's modes this benchmark runs, in order (torch_reference.py bench --modes). */
const TORCH_MODES = ["eager", "compile-blocks"] as const;

/** Runs `torch_reference.py bench --modes MODE` at the shape; `{skipped}` when torch is
 * missing, the run fails or it runs out of time. */
async function torchBench(
  python: string,
  s: ReferenceShape & { steps: number; dtype: string },
  mode: string,
  timeoutMs: number,
): Promise<{ results: Partial<Record<string, TorchResult>> } | { skipped: string }> {
  const script = new URL("../check/torch_reference.py", import.meta.url).pathname;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const out = await new Deno.Command(python, {
      // offline: the benchmark builds its model from scratch and must never download
      env: { HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
      args: [
        script,
        "bench",
        "--preset",
        s.preset,
        "--vocab",
        String(s.V),
        "--batch",
        String(s.B),
        "--question",
        String(s.Q),
        "--answer",
        String(s.A),
        "--k",
        String(s.K),
        "--c",
        String(s.c),
        "--dtype",
        s.dtype,
        "--steps",
        String(s.steps),
        "--modes",
        mode,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: ac.signal,
    }).output();
    const err = new TextDecoder().decode(out.stderr).trim().split("\n");
    if (out.code === 3) return { skipped: err.pop() ?? "no torch" };
    if (!out.success) return { skipped: `torch bench failed (exit ${out.code}): ${err.pop()}` };
    const last = new TextDecoder().decode(out.stdout).trim().split("\n").pop()!;
    return JSON.parse(last);
  } catch (e) {
    if (ac.signal.aborted) {
      return { skipped: `torch bench stopped after ${Math.round(timeoutMs / 1000)} s` };
    }
    return { skipped: `cannot run ${python}: ${(e as Error).message}` };
  } finally {
    clearTimeout(timer);
  }
}

if (import.meta.main) await main();

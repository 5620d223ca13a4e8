/**
 * The GPU check: builds the CUDA engine and compares it with the CPU engine, loaded in the
 * same process, then with the PyTorch reference (bench/torch_reference.py) and Hugging Face's
 * GPT2LMHeadModel. docs/gpu-check.md says what each check does and how to run it; on the GPU
 * machine the one command is `bash .device/run.sh bash bench/gpu_check.sh`.
 *
 *   deno run --allow-all bench/gpu_check.ts [--out DIR] [--steps 50] [--cycles 100]
 *                                          [--cpu-only] [--skip-torch] [--python python3]
 *
 * Without a usable GPU (or with --cpu-only) it is a dry run: the CPU engine stands in for the
 * CUDA engine in fp32, so every piece of the check's own logic still runs, and the CUDA rows
 * say SKIPPED. It prints a table last and writes report.json and table.txt to --out (default
 * $OUT when set, else out/gpu_check). Exit status 1 when any check failed.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { buildEngine, EngineBuildError } from "../train/engine/build.ts";
import { type Engine, openEngine, type Precision } from "../train/engine/ffi.ts";
import { cudaMemInfo, probeCuda } from "../train/engine/cuda_probe.ts";
import {
  type CheckRow,
  checkRow,
  compareLotusStep,
  compareOps,
  compareTraining,
  type Curve,
  formatTable,
  memoryCycles,
  perturbedParams,
  randomExamples,
  skippedRow,
  specialsFor,
  STEP_SPECS,
  summarizeOps,
  tally,
  trainCurve,
} from "../train/engine/parity.ts";
import { lotusBatch } from "../train/batch.ts";
import { LotusRunner } from "../train/lotus.ts";
import { Model } from "../train/model.ts";
import { Arena, Chunk, Scratch } from "../train/stack.ts";
import { Rng } from "../train/params.ts";
import { TrainConfigSchema } from "../train/config.ts";
import { saveCheckpoint } from "../train/checkpoint.ts";
import { type Tensor, writeSafetensors } from "../pipeline/safetensors.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    out: { type: "string" },
    steps: { type: "string", default: "50" },
    cycles: { type: "string", default: "100" },
    "cpu-only": { type: "boolean", default: false },
    "skip-torch": { type: "boolean", default: false },
    python: { type: "string", default: "python3" },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});
if (a.help) {
  console.log(
    "deno run --allow-all bench/gpu_check.ts [--out DIR] [--steps 50] [--cycles 100] " +
      "[--cpu-only] [--skip-torch] [--python python3]",
  );
  Deno.exit(0);
}

const t0 = performance.now();
const secs = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`;
const rows: CheckRow[] = [];
const detail: Record<string, unknown> = {};
const outDir = a.out ?? (Deno.env.get("OUT") ? Deno.env.get("OUT")! : "out/gpu_check");
const steps = Number(a.steps), cycles = Number(a.cycles);
const log = (s: string) => console.error(`gpu-check: ${s}`);

function failure(section: string, name: string, e: unknown): CheckRow {
  const msg = e instanceof Error ? e.message : String(e);
  log(`${section}: ${name}: ${msg}`);
  return { ...checkRow(section, name, "-", Infinity, 0), note: msg.split("\n")[0].slice(0, 160) };
}

/** The le_* names declared in the header. */
function headerSymbols(): string[] {
  const h = Deno.readTextFileSync(new URL("../train/engine/lotus_engine.h", import.meta.url));
  return [...h.matchAll(/\b(le_[a-z0-9_]+)\s*\(/g)].map((m) => m[1]).filter((v, i, all) =>
    all.indexOf(v) === i
  ).sort();
}

/** Dynamic symbols a library defines, from nm -D. */
function exportedSymbols(lib: string): string[] {
  const out = new Deno.Command("nm", { args: ["-D", "--defined-only", lib], stdout: "piped" })
    .outputSync();
  if (!out.success) throw new Error(`nm -D ${lib} failed`);
  return new TextDecoder().decode(out.stdout).split("\n").map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length === 3).map((f) => f[2]).sort();
}

// ---- environment and build ------------------------------------------------------------------

const probe = probeCuda();
const dry = a["cpu-only"] || !probe.available;
rows.push(
  probe.available
    ? checkRow("env", "NVIDIA driver", "-", 0, 0, `${probe.devices} GPU(s)`)
    : skippedRow("env", "NVIDIA driver", probe.reason),
);

let t = performance.now();
const ref = openEngine({ backend: "cpu", quiet: true });
rows.push(checkRow("build", "CPU engine builds and loads", "-", 0, 0, secs(t)));

let cudaLib: string | null = null;
t = performance.now();
try {
  cudaLib = buildEngine({ backend: "cuda", quiet: true });
  rows.push(checkRow("build", "CUDA engine compiles (nvcc)", "-", 0, 0, secs(t)));
  const want = headerSymbols(), got = exportedSymbols(cudaLib);
  const extra = got.filter((s) => !want.includes(s)),
    missing = want.filter((s) => !got.includes(s));
  rows.push(
    checkRow(
      "build",
      "exports exactly the header's symbols",
      "-",
      extra.length + missing.length,
      0,
      extra.length + missing.length === 0
        ? `${got.length} symbols`
        : `missing ${missing.join(",")}; extra ${extra.slice(0, 5).join(",")}`,
    ),
  );
} catch (e) {
  rows.push(
    e instanceof EngineBuildError && e.message.startsWith("compiler not found")
      ? skippedRow("build", "CUDA engine compiles (nvcc)", e.message.split(";")[0])
      : failure("build", "CUDA engine compiles (nvcc)", e),
  );
}

let test: Engine = ref;
let precisions: Precision[] = ["fp32"];
if (!dry && cudaLib) {
  try {
    test = openEngine({ backend: "cuda", libPath: cudaLib });
    precisions = ["fp32", "tf32", "bf16"];
    rows.push(checkRow("build", "CUDA engine initialises (le_init)", "-", 0, 0));
  } catch (e) {
    rows.push(failure("build", "CUDA engine initialises (le_init)", e));
  }
}
const standIn = test === ref;
if (standIn) {
  rows.push(
    skippedRow(
      "cuda",
      "CUDA vs CPU",
      a["cpu-only"]
        ? "--cpu-only: the CPU engine stands in for CUDA below (fp32 only)"
        : "no usable GPU: the CPU engine stands in for CUDA below (fp32 only)",
    ),
  );
}
const mark = (rs: CheckRow[]) =>
  standIn ? rs.map((r) => ({ ...r, note: `cpu stand-in${r.note ? "; " + r.note : ""}` })) : rs;

// ---- ops, the LOTUS step, a training run -----------------------------------------------------

const opRows: CheckRow[] = [];
for (const p of precisions) {
  t = performance.now();
  try {
    opRows.push(...compareOps(test, ref, p));
  } catch (e) {
    opRows.push({ ...failure("ops", "ops", e), precision: p });
  }
  log(`ops ${p}: ${secs(t)}`);
}
rows.push(...mark(summarizeOps(opRows)));
detail.ops = opRows;

for (const p of precisions) {
  for (const spec of STEP_SPECS) {
    try {
      rows.push(...mark(compareLotusStep(test, ref, p, spec)));
    } catch (e) {
      rows.push({ ...failure("lotus step", spec.name, e), precision: p });
    }
  }
}

let refCurve: Curve | undefined;
detail.curves = {} as Record<string, number[]>;
for (const p of precisions) {
  t = performance.now();
  try {
    refCurve ??= trainCurve(ref, steps);
    const r = compareTraining(test, ref, p, steps, refCurve);
    rows.push(...mark(r.rows.map((x) => ({ ...x, note: `${x.note}; ${secs(t)}` }))));
    (detail.curves as Record<string, number[]>)[`test ${p}`] = r.test.losses;
    (detail.curves as Record<string, number[]>).ref = r.ref.losses;
  } catch (e) {
    rows.push({ ...failure("training", `tiny, ${steps} steps`, e), precision: p });
  }
}

// ---- device memory over create/destroy cycles ------------------------------------------------

t = performance.now();
try {
  const open = standIn
    ? () => openEngine({ backend: "cpu", quiet: true })
    : () => openEngine({ backend: "cuda", libPath: cudaLib! });
  rows.push(...mark(memoryCycles(open, { cycles, memInfo: standIn ? undefined : cudaMemInfo })));
  log(`memory: ${secs(t)}`);
} catch (e) {
  rows.push(failure("memory", `${cycles} cycles`, e));
}

// ---- PyTorch reference and Hugging Face GPT2LMHeadModel --------------------------------------

/** A plain (non-looped) forward's logits [B*T, V], positions 0..T-1, no padding. */
function plainLogits(model: Model, ids: Int32Array, B: number, T: number): Float32Array {
  const eng = model.eng, C = model.cfg.dModel, V = model.cfg.vocabSize;
  const arena = new Arena(eng);
  try {
    const sc = new Scratch(arena, B * T, C, false);
    const ch = new Chunk(arena, model.main.shape, B, T, 0, false);
    const pid = arena.i32(B * T), ppos = arena.i32(B * T), logits = arena.f32(B * T * V);
    eng.upload(pid, ids);
    eng.upload(ppos, Int32Array.from({ length: B * T }, (_, i) => i % T));
    eng.embedFwd(ch.x[0], pid, ppos, model.wte, model.wpe, B * T, C);
    model.main.forward(ch, sc, B, T, null, null);
    eng.matmulFwd(logits, ch.h, model.wte, null, B * T, C, V);
    const out = new Float32Array(B * T * V);
    eng.download(out, logits);
    return out;
  } finally {
    arena.free();
  }
}

/** Writes the torch case: a checkpoint, the batch, and each engine's losses and logits. */
async function writeTorchCase(dir: string, engines: [string, Engine][]): Promise<void> {
  const spec = STEP_SPECS[0], cfg = spec.model, V = cfg.vocabSize;
  const sp = specialsFor(V);
  const params = perturbedParams(cfg, 21);
  const exs = randomExamples(spec.B, V, 21);
  const b = lotusBatch(exs, sp, spec);
  const train = TrainConfigSchema.parse({
    k: spec.K,
    c: spec.c,
    r: spec.R,
    lambda: spec.opts.lambda,
    injection: spec.opts.injection,
    stepLoss: spec.opts.stepLoss,
  });
  await saveCheckpoint(`${dir}/checkpoint`, {
    meta: {
      model: cfg,
      train,
      special: sp,
      data: { dir: "", cot: "math", k: spec.K, c: spec.c },
      preset: "gpu-check",
    },
    params,
    state: { step: 0, epoch: 0, batchInEpoch: 0, rng: 0, bestAccuracy: -1, tokens: 0, seconds: 0 },
    tokenizerJson: '{"note": "random-token test case: no tokenizer"}\n',
  });
  const PB = 3, PT = 20;
  const rng = new Rng(5);
  const plainIds = Int32Array.from({ length: PB * PT }, () => rng.int(V - 4));
  const i32 = (data: Int32Array, shape: number[]): Tensor => ({ dtype: "I32", shape, data });
  const u8 = (data: Uint8Array, shape: number[]): Tensor => ({ dtype: "U8", shape, data });
  const { B, P, L, S } = b;
  const tensors: Record<string, Tensor> = {
    prefix_ids: i32(b.prefixIds, [B, P]),
    prefix_pos: i32(b.prefixPos, [B, P]),
    prefix_valid: u8(b.prefixValid, [B, P]),
    loop_ids: i32(b.loopIds, [B, L]),
    loop_ids_replace: i32(b.loopIdsReplace, [B, L]),
    loop_pos: i32(b.loopPos, [B, L]),
    loop_valid: u8(b.loopValid, [B, P + L]),
    suffix_ids: i32(b.suffixIds, [B, S]),
    suffix_pos: i32(b.suffixPos, [B, S]),
    suffix_valid: u8(b.suffixValid, [B, P + L + S]),
    suffix_targets: i32(b.suffixTargets, [B, S]),
    step_targets: i32(b.stepTargets, [B, L]),
    step_block: i32(b.stepBlock, [B, L]),
    plain_ids: i32(plainIds, [PB, PT]),
  };
  for (const [name, eng] of engines) {
    const model = new Model(eng, cfg, params, false);
    const runner = new LotusRunner(
      model,
      { B, P, K: spec.K, c: spec.c, R: spec.R, S, auxT: 0 },
      false,
    );
    try {
      const l = runner.step(b, spec.opts, exs);
      const logits = new Float32Array(B * S * V);
      eng.download(logits, runner.logits);
      tensors[`deno.${name}.losses`] = {
        dtype: "F64",
        shape: [3],
        data: Float64Array.of(l.loss, l.ans, l.step),
      };
      tensors[`deno.${name}.suffix_logits`] = { dtype: "F32", shape: [B, S, V], data: logits };
      tensors[`deno.${name}.plain_logits`] = {
        dtype: "F32",
        shape: [PB, PT, V],
        data: plainLogits(model, plainIds, PB, PT),
      };
    } finally {
      runner.free();
      model.free();
    }
  }
  await writeSafetensors(`${dir}/batch.safetensors`, tensors, {
    K: String(spec.K),
    R: String(spec.R),
    c: String(spec.c),
    lambda: String(spec.opts.lambda),
    injection: spec.opts.injection,
    step_loss: spec.opts.stepLoss,
    engines: engines.map(([n]) => n).join(","),
  });
}

interface TorchRow {
  name: string;
  err: number | null;
  tol: number;
  pass: boolean;
  note?: string;
}

async function torchChecks(): Promise<CheckRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "lotus-gpu-check-torch-" });
  try {
    const testName = standIn ? "cpu-standin" : "cuda-fp32";
    await writeTorchCase(dir, [[testName, test], ["cpu", ref]]);
    const script = new URL("./torch_reference.py", import.meta.url).pathname;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 240_000);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(a.python!, {
        args: [script, "compare", dir, "--json", `${dir}/torch.json`],
        stdout: "piped",
        stderr: "piped",
        signal: ac.signal,
        env: { PYTHONUNBUFFERED: "1" },
      }).output();
    } catch (e) {
      return [
        skippedRow("torch", "PyTorch reference", `cannot run ${a.python}: ${(e as Error).message}`),
      ];
    } finally {
      clearTimeout(timer);
    }
    const stderr = new TextDecoder().decode(out.stderr).trim();
    if (out.code === 3) {
      return [skippedRow("torch", "PyTorch reference", stderr.split("\n").pop() ?? "no torch")];
    }
    let parsed: TorchRow[];
    try {
      parsed = JSON.parse(await Deno.readTextFile(`${dir}/torch.json`));
    } catch {
      return [
        failure(
          "torch",
          "PyTorch reference",
          new Error(`exit ${out.code}: ${stderr.split("\n").slice(-3).join(" | ")}`),
        ),
      ];
    }
    detail.torchStdout = new TextDecoder().decode(out.stdout);
    return parsed.map((r) => ({
      section: "torch",
      name: r.name,
      precision: "fp32" as const,
      err: r.err ?? Infinity,
      tol: r.tol,
      pass: r.pass && r.err !== null,
      note: r.note,
    }));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (a["skip-torch"]) rows.push(skippedRow("torch", "PyTorch reference", "--skip-torch"));
else {
  t = performance.now();
  try {
    rows.push(...mark(await torchChecks()));
  } catch (e) {
    rows.push(failure("torch", "PyTorch reference", e));
  }
  log(`torch: ${secs(t)}`);
}

if (test !== ref) test.close();
ref.close();

// ---- report ----------------------------------------------------------------------------------

const { passed, failed, skipped } = tally(rows);
const table = formatTable(rows);
const summary = `gpu check: ${passed} passed, ${failed} failed, ${skipped} skipped in ${secs(t0)}` +
  (standIn ? " (DRY RUN: the CUDA engine was not tested)" : "");
try {
  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(`${outDir}/table.txt`, `${table}\n${summary}\n`);
  await Deno.writeTextFile(
    `${outDir}/report.json`,
    JSON.stringify({ rows, detail, dry: standIn, probe }, null, 1) + "\n",
  );
} catch (e) {
  log(`could not write the report to ${outDir}: ${(e as Error).message}`);
}
console.log(table);
console.log(summary);
Deno.exit(failed > 0 ? 1 : 0);
